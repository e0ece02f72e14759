"""JSON round trips of frozen option dataclasses (recipes, training options).

Tuples become lists on the way out and lists become tuples on the way in (for fields
annotated as tuples); unknown keys are an error naming them, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any, TypeVar

from medseg.errors import ConfigError

__all__ = ["from_json_dict", "json_ready", "to_json_dict"]


def json_ready(value: Any) -> Any:
    """``value`` for strict JSON: NaN/Inf -> ``None`` (``null``), tuples -> lists, numpy
    scalars -> Python numbers, dict keys -> ``str``; nested dicts and lists alike.

    The one NaN-to-null helper of medseg (manifest, engine sidecar, results, metrics).
    """
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


T = TypeVar("T")


def to_json_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance as a JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


def from_json_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """Build ``cls`` from :func:`to_json_dict` output; ``what`` names it in errors."""
    known = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {what} keys {unknown}; known: {sorted(known)}")
    values = {
        k: tuple(v) if isinstance(v, list) and "tuple" in known[k] else v for k, v in data.items()
    }
    return cls(**values)
