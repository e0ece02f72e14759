"""Strict JSON round trips of frozen dataclasses, the schema being their field annotations.

Supported annotations (as strings, ``from __future__ import annotations``): ``int``,
``float``, ``str``, ``bool``, ``dict[...]``, ``dict[str, float]`` / ``dict[str, float | None]``,
``tuple[X, ...]`` and dataclasses of the same module, each optionally ``| None``. Every field
is required in the JSON, except fields added later whose default is ``None`` (results written
before them still load), unknown keys are refused, and each error names the source (file)
and the key path. NaN/Inf are written as ``null``; ``null`` in a ``float`` field reads as NaN.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, fields, is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from medseg.config_io import json_ready
from medseg.errors import ConfigError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["JsonMixin", "dataclass_from_json", "json_ready"]

_T = TypeVar("_T")


def _fail(source: str, where: str, expected: str, value: Any) -> ConfigError:
    got = "null" if value is None else f"{type(value).__name__} {value!r}"
    return ConfigError(f"{source}: {where} must be {expected}, got {got}")


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _value(v: Any, kind: str, source: str, where: str, module: str) -> Any:
    """Check one JSON value against a field annotation (a string); ``null`` floats are NaN.

    A dataclass named in the annotation is looked up in ``module`` and built recursively.
    """
    optional, kind = kind.endswith(" | None"), kind.removesuffix(" | None")
    if v is None and (optional or kind == "float"):
        return None if optional else math.nan
    if kind == "float" and _is_num(v):
        return float(v)
    simple = {"int": _is_num(v) and isinstance(v, int), "str": isinstance(v, str)}
    if simple.get(kind) or (kind == "bool" and isinstance(v, bool)):
        return v
    if kind.startswith("dict[str, float") and isinstance(v, dict):
        inner = "float | None" if "None" in kind else "float"
        return {k: _value(x, inner, source, f"{where}.{k}", module) for k, x in v.items()}
    if kind.startswith("dict") and isinstance(v, dict):
        return v
    if kind.startswith("tuple[") and isinstance(v, list):
        inner = kind[6:].split(",")[0].rstrip("]")
        return tuple(_value(x, inner, source, f"{where}[{i}]", module) for i, x in enumerate(v))
    nested = getattr(sys.modules[module], kind, None)
    if is_dataclass(nested) and isinstance(nested, type):
        return dataclass_from_json(nested, v, source, where)
    expected = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true/false"}
    what = expected.get(kind, "a list" if kind.startswith("tuple") else "an object")
    raise _fail(source, where, what + (" or null" if optional else ""), v)


def dataclass_from_json(cls: type[_T], data: Any, source: str, where: str) -> _T:
    """Build dataclass ``cls`` from JSON: every field required, unknown keys refused."""
    path = (lambda k: f"{where}.{k}") if where else (lambda k: k)
    if not isinstance(data, dict):
        raise _fail(source, where or "the top level", "an object", data)
    kinds = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
    later = {f.name for f in fields(cls) if f.default is None}  # type: ignore[arg-type]
    missing = [k for k in kinds if k not in data and k not in later]
    if missing:
        raise ConfigError(f"{source}: missing key {path(missing[0])}")
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise ConfigError(f"{source}: unknown key {path(unknown[0])}; known: {', '.join(kinds)}")
    values = {
        k: _value(data[k], kind, source, path(k), cls.__module__)
        for k, kind in kinds.items()
        if k in data
    }
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {where or 'the top level'}: {exc}") from exc


class JsonMixin:
    """``to_dict`` / ``from_dict`` of the result dataclasses (schema: the field annotations)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: NaN/Inf -> ``None``, tuples -> lists."""
        return json_ready(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Any, source: str = "results", where: str = "") -> Self:
        """Validate and build; errors name ``source`` (the file) and the key path."""
        return dataclass_from_json(cls, data, source, where)
