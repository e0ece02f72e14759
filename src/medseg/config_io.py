"""JSON-ready values: the one NaN-to-null helper, and dataclasses as JSON dicts.

Reading JSON back into dataclasses is :mod:`medseg.schema` (pydantic).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

__all__ = ["json_ready", "to_json_dict"]


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


def to_json_dict(obj: Any) -> dict[str, Any]:
    """A dataclass instance as a JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}
