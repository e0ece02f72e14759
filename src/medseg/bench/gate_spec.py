"""The budgets of ``medseg bench`` gates, from a TOML gates file and/or command-line flags.

The file format and the gate semantics are documented in :mod:`medseg.bench.gates`. The file
and the flags are validated by one schema (:mod:`medseg.schema`: the dataclasses below and the
rules on their fields); every error names the file (or the flag), the key path and what is
accepted, e.g. ``gates.toml: accuracy.min_dice must be a Dice in [0, 1], got 1.5``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from medseg.bench.results import BACKENDS, PRECISIONS
from medseg.errors import ConfigError
from medseg.schema import FORBID_EXTRA, Before, StrictFloat, StrictStr, check, parse

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    from medseg.deps import require

    tomllib = require("tomli", "reading gates files on Python 3.10")

__all__ = ["DROP_PRECISIONS", "FLAG_NAMES", "GateSpec", "parse_flag_pairs"]

#: (section, key) -> the ``medseg bench`` flag that sets it (named in flag errors).
FLAG_NAMES = {
    ("accuracy", "min_dice"): "--min-dice",
    ("accuracy", "max_dice_drop_pts"): "--max-dice-drop",
    ("latency", "max_p95_ms"): "--max-p95-ms",
    ("baseline", "max_latency_regression_pct"): "--max-latency-regression",
    ("baseline", "max_dice_regression_pts"): "--max-dice-regression",
}
_SECTION = {key: section for section, key in FLAG_NAMES}
#: Precisions a dice-drop budget may name (fp32 is the reference of the drop).
DROP_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp32")


def _non_empty_table(what: str) -> Before:
    def rule(value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise ValueError(f"must be a non-empty table of {what}")
        return value

    return Before(rule)


def _is_target(target: str) -> bool:
    parts = target.split(".")
    batch = parts[2][1:] if len(parts) == 3 and parts[2].startswith("b") else None
    return (
        len(parts) in (2, 3)
        and parts[0] in BACKENDS
        and parts[1] in PRECISIONS
        and (len(parts) == 2 or bool(batch and batch.isdigit() and int(batch) >= 1))
    )


_Number = Annotated[StrictFloat, check(math.isfinite, "a finite number")]
_Dice = Annotated[_Number, check(lambda v: 0 <= v <= 1, "a Dice in [0, 1]")]
_NonNegative = Annotated[_Number, check(lambda v: v >= 0, ">= 0")]
_DropPrecision = Annotated[
    StrictStr,
    check(
        lambda p: p in DROP_PRECISIONS,
        f"one of {', '.join(DROP_PRECISIONS)} (fp32 is the reference)",
    ),
]
_Target = Annotated[
    StrictStr,
    check(
        _is_target,
        '"backend.precision" or "backend.precision.bN" with backend in '
        f"{', '.join(BACKENDS)}, precision in {', '.join(PRECISIONS)}, N >= 1",
    ),
]
_DropTable = Annotated[dict[_DropPrecision, _Number], _non_empty_table("precision = pts")]
_P95Table = Annotated[
    dict[_Target, Annotated[_Number, check(lambda v: v > 0, "ms > 0")]],
    _non_empty_table('"backend.precision[.bN]" = ms'),
]
#: GateSpec field -> its schema (the same for the file and for the flags).
_FIELD_TYPES: dict[str, Any] = {
    "min_dice": _Dice,
    "max_dice_drop_pts": _DropTable,
    "max_p95_ms": _P95Table,
    "max_latency_regression_pct": _NonNegative,
    "max_dice_regression_pts": _NonNegative,
}


@dataclass(frozen=True)
class _Accuracy:
    __pydantic_config__ = FORBID_EXTRA
    min_dice: _Dice | None = None
    max_dice_drop_pts: _DropTable | None = None


@dataclass(frozen=True)
class _Latency:
    __pydantic_config__ = FORBID_EXTRA
    max_p95_ms: _P95Table | None = None


@dataclass(frozen=True)
class _Baseline:
    __pydantic_config__ = FORBID_EXTRA
    max_latency_regression_pct: _NonNegative | None = None
    max_dice_regression_pts: _NonNegative | None = None


@dataclass(frozen=True)
class _GatesFile:
    """The gates file: one table per section (see :mod:`medseg.bench.gates`)."""

    __pydantic_config__ = FORBID_EXTRA
    accuracy: _Accuracy | None = None
    latency: _Latency | None = None
    baseline: _Baseline | None = None


@dataclass(frozen=True)
class GateSpec:
    """Budgets (see the module docstring); None / empty = that gate is off."""

    min_dice: float | None = None
    max_dice_drop_pts: dict[str, float] = field(default_factory=dict)
    max_p95_ms: dict[str, float] = field(default_factory=dict)
    max_latency_regression_pct: float | None = None
    max_dice_regression_pts: float | None = None

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) not in (None, {}) for f in fields(self))

    @property
    def uses_baseline(self) -> bool:
        return (
            self.max_latency_regression_pct is not None or self.max_dice_regression_pts is not None
        )

    @classmethod
    def from_toml(cls, path: Path) -> GateSpec:
        """Read a gates file; ConfigError names the file, the key and what is accepted."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"gates file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "gates") -> GateSpec:
        """Validate the parsed TOML structure (``{"accuracy": {...}, ...}``)."""
        gates = parse(_GatesFile, data, source)
        values: dict[str, Any] = {}
        for section in fields(gates):
            table = getattr(gates, section.name)
            if table is not None:
                values.update({f.name: getattr(table, f.name) for f in fields(table)})
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_flags(
        cls,
        max_dice_drop: Mapping[str, float] | None = None,
        min_dice: float | None = None,
        max_p95_ms: Mapping[str, float] | None = None,
        max_latency_regression_pct: float | None = None,
        max_dice_regression_pts: float | None = None,
    ) -> GateSpec:
        """Budgets given on the command line; None / empty = not given."""
        given = {
            "min_dice": min_dice,
            "max_dice_drop_pts": dict(max_dice_drop or {}) or None,
            "max_p95_ms": dict(max_p95_ms or {}) or None,
            "max_latency_regression_pct": max_latency_regression_pct,
            "max_dice_regression_pts": max_dice_regression_pts,
        }
        return cls(
            **{
                k: parse(_FIELD_TYPES[k], v, f"command line: {FLAG_NAMES[_SECTION[k], k]}")
                for k, v in given.items()
                if v is not None
            }
        )

    def merge(self, other: GateSpec) -> GateSpec:
        """``other`` overrides ``self`` (flags over file); tables merge key by key."""
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                values[f.name] = {**mine, **theirs}
            else:
                values[f.name] = mine if theirs is None else theirs
        return GateSpec(**values)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The TOML structure, only the gates that are on (for recording in results)."""
        out: dict[str, dict[str, Any]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in (None, {}):
                out.setdefault(_SECTION[f.name], {})[f.name] = value
        return out


#: The form each KEY=NUMBER flag takes, with an example, for its error message.
FLAG_FORMS = {
    "--max-dice-drop": "PRECISION=PTS (e.g. --max-dice-drop int8=1.0)",
    "--max-p95-ms": "BACKEND.PRECISION[.bN]=MS (e.g. --max-p95-ms onnxruntime.fp32=900)",
}


def parse_flag_pairs(values: Sequence[str], flag: str) -> dict[str, float]:
    """``["int8=1.5", "fp16=0.5"]`` (repeated or comma-separated) -> ``{"int8": 1.5, ...}``.

    Only the ``KEY=NUMBER`` syntax is checked here; :meth:`GateSpec.from_flags` checks keys
    and values. Raises ConfigError naming ``flag`` (e.g. ``"--max-dice-drop"``).
    """
    out: dict[str, float] = {}
    for item in (part.strip() for value in values for part in value.split(",")):
        key, sep, number = item.partition("=")
        try:
            out[key.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            form = FLAG_FORMS.get(flag, f"KEY=NUMBER (e.g. {flag} int8=1.5)")
            raise ConfigError(f"{flag} takes {form}, got {item!r}")
    return out
