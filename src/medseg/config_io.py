"""JSON round trips of frozen option dataclasses (recipes, training options).

Tuples become lists on the way out and lists become tuples on the way in (for fields
annotated as tuples); unknown keys are an error naming them, never silently dropped.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from medseg.errors import ConfigError

__all__ = ["from_json_dict", "to_json_dict"]

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
