"""The budgets of ``medseg bench`` gates, from a TOML gates file and/or command-line flags.

The file format and the gate semantics are documented in :mod:`medseg.bench.gates`. Every
error names the file (or the flag), the key and what is accepted.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medseg.bench.results import BACKENDS, PRECISIONS
from medseg.errors import ConfigError

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
        sections = sorted({s for s, _ in FLAG_NAMES})
        values: dict[str, Any] = {}
        for section, table in data.items():
            if section not in sections:
                raise ConfigError(
                    f"{source}: unknown section [{section}]; accepted: "
                    f"{', '.join(f'[{s}]' for s in sections)}"
                )
            keys = sorted(k for s, k in FLAG_NAMES if s == section)
            if not isinstance(table, Mapping):
                raise ConfigError(f"{source}: [{section}] must be a table of {', '.join(keys)}")
            for key, value in table.items():
                if key not in keys:
                    raise ConfigError(
                        f"{source}: unknown key [{section}] {key}; accepted in "
                        f"[{section}]: {', '.join(keys)}"
                    )
                values[key] = _parse(key, value, f"{source}: [{section}] {key}")
        return cls(**values)

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
                k: _parse(k, v, f"command line: {FLAG_NAMES[_SECTION[k], k]}")
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


def _number(value: Any, where: str, accepted: str, ok: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number ({accepted}), got {value!r}")
    if not ok(value):
        raise ConfigError(f"{where} must be {accepted}, got {value!r}")
    return float(value)


def _table(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{where} must be a non-empty table of {what}, got {value!r}")
    return value


def _parse(key: str, value: Any, where: str) -> Any:
    if key == "min_dice":
        return _number(value, where, "a Dice in [0, 1]", lambda v: 0 <= v <= 1)
    if key in ("max_latency_regression_pct", "max_dice_regression_pts"):
        return _number(value, where, ">= 0", lambda v: v >= 0)
    if key == "max_dice_drop_pts":
        out = {}
        for prec, pts in _table(value, where, "precision = pts").items():
            if prec not in DROP_PRECISIONS:
                raise ConfigError(
                    f"{where}: precision {prec!r} is not accepted; accepted: "
                    f"{', '.join(DROP_PRECISIONS)} (fp32 is the reference)"
                )
            out[prec] = _number(pts, f"{where}.{prec}", "pts, any sign", lambda v: True)
        return out
    out = {}
    for target, ms in _table(value, where, '"backend.precision[.bN]" = ms').items():
        _parse_target(target, where)
        out[target] = _number(ms, f"{where}.{target}", "ms > 0", lambda v: v > 0)
    return out


def _parse_target(target: Any, where: str) -> None:
    parts = str(target).split(".")
    batch = parts[2][1:] if len(parts) == 3 and parts[2].startswith("b") else None
    if (
        len(parts) not in (2, 3)
        or parts[0] not in BACKENDS
        or parts[1] not in PRECISIONS
        or (len(parts) == 3 and not (batch and batch.isdigit() and int(batch) >= 1))
    ):
        raise ConfigError(
            f'{where}: target {target!r} is not accepted; write "backend.precision" or '
            f'"backend.precision.bN" with backend in {", ".join(BACKENDS)}, precision in '
            f"{', '.join(PRECISIONS)}, N >= 1"
        )


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
