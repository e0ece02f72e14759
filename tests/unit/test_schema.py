"""medseg.schema's rules and messages: After/Before, unknown keys listing the accepted ones,
dict keys named with their table, and collect() reporting every problem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pytest

from medseg.errors import ConfigError
from medseg.schema import FORBID_EXTRA, After, Before, StrictInt, StrictStr, collect, parse


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _upper(value: str) -> str:
    if not value.isupper():
        raise ValueError("must be upper case")
    return value


def _object(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError("must be a table of NAME = count")
    return value


@dataclass(frozen=True)
class _Inner:
    __pydantic_config__ = FORBID_EXTRA
    size: Annotated[StrictInt, After(_positive)]
    colour: StrictStr = "red"


@dataclass(frozen=True)
class _Outer:
    __pydantic_config__ = FORBID_EXTRA
    name: StrictStr
    inner: _Inner
    counts: Annotated[dict[Annotated[StrictStr, After(_upper)], StrictInt], Before(_object)] = None  # type: ignore[assignment]
    items: tuple[_Inner, ...] = ()


GOOD = {"name": "a", "inner": {"size": 2}, "counts": {"A": 1}}


def _error(data: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(_Outer, data, "f.json")
    return str(exc.value)


def test_rules_and_messages() -> None:
    assert parse(_Outer, GOOD, "f.json").inner == _Inner(2)
    assert _error({**GOOD, "inner": {"size": 0}}) == "f.json: inner.size must be > 0, got 0"
    assert _error({**GOOD, "counts": {"a": 1}}) == ("f.json: counts: key 'a' must be upper case")
    assert _error({**GOOD, "counts": [1]}) == (
        "f.json: counts must be a table of NAME = count, got [1]"
    )
    assert _error({**GOOD, "inner": {"size": 1, "shape": 2}}) == (
        "f.json: unknown key inner.shape; accepted: size, colour"
    )
    assert _error({**GOOD, "items": [{"size": 1, "x": 0}]}) == (
        "f.json: unknown key items[0].x; accepted: size, colour"
    )
    assert _error({**GOOD, "bogus": 1}) == (
        "f.json: unknown key bogus; accepted: name, inner, counts, items"
    )
    assert _error([1]) == "f.json must be an object, got list [1]"


def test_collect_reports_every_problem_and_groups_missing_keys() -> None:
    assert collect(_Outer, GOOD) == (parse(_Outer, GOOD, "f"), [])
    built, problems = collect(_Outer, {"inner": {"colour": 3}, "counts": {"a": "x"}})
    assert built is None
    assert problems == [
        "is missing name; required: name, inner",
        "inner is missing size; required: size",
        "inner.colour must be a string, got int 3",
        "counts: key 'a' must be upper case",
        "counts.a must be an integer, got str 'x'",
    ]
