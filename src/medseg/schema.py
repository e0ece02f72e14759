"""The one schema mechanism of medseg: frozen dataclasses validated by pydantic v2.

A file format (``medseg.json``, an engine sidecar, a network report, bench results) is a
frozen standard-library dataclass with type hints; :func:`parse` validates a JSON-decoded
value against it with ``pydantic.TypeAdapter`` (types, nested dataclasses, lists -> tuples,
unknown keys refused) and runs the dataclasses' ``__post_init__`` cross-field rules. A
:class:`~medseg.errors.ConfigError` raised there is a ``ValueError``, so pydantic records
where it happened. Every failure becomes ONE line naming the file and the key path as the
user would write it::

    medseg.json: input.height.min must be an integer, got '1'
    medseg.json: preprocessing: percentiles (99.5, 0.5) must satisfy 0 <= lo < hi <= 100

How to add a field to a format: add it to the dataclass with a type and a default (old files
lack it); use :data:`StrictInt` / :data:`StrictStr` / :data:`StrictFloat` / :data:`StrictBool`
for scalars a user may mistype; a rule on one value is :class:`After` (or :class:`Before`, to
see the raw value first) on its type, raising ``ValueError("must be ...")`` (the key path and
the value are added); put rules that span fields in ``__post_init__`` (raise ConfigError);
``to_dict`` usually needs nothing (``dataclasses.asdict`` + :func:`json_ready`). A file whose
every problem should be reported at once (``dataset.json`` for ``medseg data check``) is read
with :func:`collect` instead of :func:`parse`.

Messages: an unknown key lists the accepted ones; a dict key refused by a rule is named with
its table (``latency.max_p95_ms: key 'tflite.fp32' ...``); missing keys of one object are one
problem listing them with every required key.

pydantic is imported on first use only (``import medseg.runtime`` does not pay for it), and a
format's validator is built once per process. Dataclasses opt in to refusing unknown keys with
``__pydantic_config__ = FORBID_EXTRA`` (a plain dict: no pydantic import at class definition).
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Callable
from dataclasses import MISSING, asdict, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union, cast, get_args, get_origin

from medseg.atomic import atomic_file
from medseg.config_io import json_ready
from medseg.errors import ConfigError

if TYPE_CHECKING:
    from typing import Self

    from pydantic import GetCoreSchemaHandler, ValidationError
    from pydantic_core import CoreSchema

__all__ = [
    "FORBID_EXTRA",
    "After",
    "Before",
    "JsonRecord",
    "NanFloat",
    "StrictBool",
    "StrictFloat",
    "StrictInt",
    "StrictStr",
    "Via",
    "check",
    "collect",
    "describe_error",
    "load_json",
    "parse",
    "save_json",
]

T = TypeVar("T")

#: ``__pydantic_config__`` of a format dataclass: unknown keys are an error naming them.
FORBID_EXTRA: dict[str, Any] = {"extra": "forbid"}


class _Strict:
    """Annotation marker: no lax conversion (``"3"`` or ``True`` is not an int)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema: dict[str, Any] = {**handler(source), "strict": True}
        return cast("CoreSchema", schema)

    def __repr__(self) -> str:
        return "Strict"


class Via:
    """Annotation marker: the field is parsed by ``fn(value, fields)`` instead of its type.

    ``fields`` holds the fields validated before this one (a rule that needs another field,
    e.g. post-processing rules naming the manifest's classes). ``fn`` raises ConfigError.
    """

    def __init__(self, fn: Callable[[Any, dict[str, Any]], Any]) -> None:
        self.fn = fn

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        fn = self.fn
        return core_schema.with_info_plain_validator_function(
            lambda value, info: fn(value, info.data or {})
        )


class After:
    """Annotation marker: ``fn(value)`` runs after the type is validated and returns the value.

    ``fn`` raises ``ValueError`` (ConfigError is one) to refuse it: a message starting with
    ``must`` becomes ``KEY.PATH must ..., got VALUE``; any other message is kept whole after
    ``KEY.PATH:`` (unless it starts with the key). Several ``After`` markers run in the order
    listed; several :class:`Before` markers in the reverse order (each wraps the ones listed
    before it, as pydantic's validators do).
    """

    before = False

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        make = (
            core_schema.no_info_before_validator_function
            if self.before
            else core_schema.no_info_after_validator_function
        )
        return make(self.fn, handler(source))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self.fn, '__name__', self.fn)})"


class Before(After):
    """:class:`After`, run on the raw value before the type is validated (a hint for a value
    of the wrong shape: e.g. nnU-Net v1 labels in a v2 file)."""

    before = True


def check(ok: Callable[[Any], bool], accepted: str) -> After:
    """A rule refusing values for which ``ok`` is false: ``KEY must be <accepted>, got V``."""

    def rule(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"must be {accepted}")
        return value

    return After(rule)


def _nan_for_null(value: Any) -> Any:
    return math.nan if value is None else value


class _NullIsNan:
    """Annotation marker: JSON ``null`` reads as NaN (:func:`json_ready` writes NaN as null)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(_nan_for_null, handler(source))

    def __repr__(self) -> str:
        return "NullIsNan"


class JsonRecord:
    """``to_dict`` / ``from_dict`` of a format dataclass (the schema: its type hints)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: NaN/Inf -> ``None``, tuples -> lists."""
        data: dict[str, Any] = json_ready(asdict(self))  # type: ignore[call-overload]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> Self:
        """Validate and build; errors name ``source`` (the file) and the key path."""
        return parse(cls, data, source)


StrictInt = Annotated[int, _Strict()]
StrictStr = Annotated[str, _Strict()]
StrictFloat = Annotated[float, _Strict()]  # an int is still accepted (JSON has one number)
StrictBool = Annotated[bool, _Strict()]
#: A number where ``null`` means NaN (a metric that is undefined, e.g. Dice of empty masks).
NanFloat = Annotated[float, _Strict(), _NullIsNan()]

_TYPE_WORDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be an object",
    "dataclass_type": "must be an object",
    "dataclass_args_type": "must be an object",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "finite_number": "must be a finite number",
}


@cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    if loc and loc[-1] == "[key]":  # a dict key refused: the path is its table's
        loc = loc[:-2]
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(tp: Any) -> list[Any]:
    """The types a hint may hold a value of: ``Annotated`` stripped, unions and ``| None`` split."""
    if get_origin(tp) is Annotated:
        return _unwrap(get_args(tp)[0])
    if get_origin(tp) in (Union, types.UnionType):
        return [t for arg in get_args(tp) for t in _unwrap(arg)]
    return [tp]


def _dataclasses_at(cls: Any, loc: tuple[int | str, ...]) -> list[Any]:
    """The dataclasses a value at ``loc`` inside ``cls`` may be (empty when unknown)."""
    from typing import get_type_hints

    current: list[Any] = [cls]
    for part in loc:
        found: list[Any] = []
        for tp in current:
            if is_dataclass(tp) and isinstance(part, str):
                hint = get_type_hints(tp, include_extras=True).get(part)
                found += [] if hint is None else _unwrap(hint)
            elif get_origin(tp) in (list, tuple, dict) and get_args(tp):
                found += [u for a in get_args(tp) if a is not Ellipsis for u in _unwrap(a)]
        current = [t for t in found if t is not type(None)]
    return [tp for tp in current if is_dataclass(tp)]


def _accepted_keys(cls: Any, loc: tuple[int | str, ...], required: bool = False) -> list[str]:
    """Field names of the dataclass at ``loc`` inside ``cls``; ``required``: those without
    a default."""
    names = [
        f.name
        for tp in _dataclasses_at(cls, loc)
        for f in fields(tp)
        if not required or (f.default is MISSING and f.default_factory is MISSING)
    ]
    return list(dict.fromkeys(names))


def _describe(error: Any, cls: Any = None) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as one phrase."""
    kind, loc = error["type"], tuple(error["loc"])
    key = _path(loc)
    if kind == "missing":
        return f"missing key {key}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        accepted = _accepted_keys(cls, loc[:-1]) if cls is not None else []
        return f"unknown key {key}" + (f"; accepted: {', '.join(accepted)}" if accepted else "")
    got = error["input"]
    if kind in ("value_error", "assertion_error"):
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if cause is not None else error["msg"]
        if loc and loc[-1] == "[key]" and message.startswith("must"):
            return f"{key}: key {got!r} {message}" if key else f"key {got!r} {message}"
        if message.startswith("must"):
            return f"{key} {message}, got {got!r}".lstrip()
        if not key or message.startswith(key):
            return message
        return f"{key}: {message}"
    words = _TYPE_WORDS.get(kind) or error["msg"].replace("Input should be", "must be", 1)
    got_text = f"{type(got).__name__} {got!r}" if kind in _TYPE_WORDS else repr(got)
    return f"{key} {words}, got {got_text}".lstrip()


def describe_error(error: ValidationError, cls: Any = None) -> str:
    """The first error of a pydantic ``ValidationError`` as ``KEY.PATH what, got VALUE``.

    ``cls``, the validated dataclass, lets an unknown key list the accepted ones.
    """
    return _describe(error.errors(include_url=False)[0], cls)


def _join(where: str, message: str) -> str:
    if message.startswith(where):
        return message
    return f"{where} {message}" if message.startswith("must") else f"{where}: {message}"


def collect(cls: type[T], data: Any) -> tuple[T | None, list[str]]:
    """Validate ``data`` as ``cls`` and describe EVERY problem (not only the first).

    The missing keys of one object are one problem: ``is missing a, b; required: a, b, c``
    (prefixed with the object's key path). Unlike :func:`parse`, the messages do not name the
    file: the caller adds it.

    Returns:
        The built dataclass and ``[]``, or ``None`` and one phrase per problem, in key order.
    """
    from pydantic import ValidationError

    try:
        return _adapter(cast(Any, cls)).validate_python(data), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    # a missing key's problem is its object's: one entry per object, in order of appearance
    entries: list[str | tuple[int | str, ...]] = []
    missing: dict[tuple[int | str, ...], list[str]] = {}
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "missing" and loc:
            if loc[:-1] not in missing:
                entries.append(loc[:-1])
            missing.setdefault(loc[:-1], []).append(str(loc[-1]))
        else:
            entries.append(_describe(error, cls))
    problems = []
    for entry in entries:
        if isinstance(entry, str):
            problems.append(entry)
            continue
        required = _accepted_keys(cls, entry, required=True)
        text = f"is missing {', '.join(missing[entry])}"
        text += f"; required: {', '.join(required)}" if required else ""
        problems.append(f"{_path(entry)} {text}".lstrip())
    return None, problems


def parse(cls: type[T], data: Any, where: str) -> T:
    """Validate JSON-decoded ``data`` as the dataclass ``cls``.

    Args:
        cls: a (frozen) dataclass whose type hints are the schema.
        data: the decoded JSON value.
        where: names the file or section in errors (``"medseg.json"``, a path).

    Raises:
        ConfigError: one line, ``WHERE: KEY.PATH what is wrong, got VALUE``.
    """
    from pydantic import ValidationError

    try:
        result: T = _adapter(cast(Any, cls)).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_join(where, describe_error(exc, cls))) from None
    return result


def load_json(path: Path, what: str = "") -> Any:
    """Read a JSON file; ConfigError naming it when missing or not JSON (``what``: its role)."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise ConfigError(f"{label} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label} is not valid JSON: {exc}") from None


def save_json(path: Path, data: Any) -> Path:
    """Write strict JSON atomically (temp file then rename); NaN/Inf become ``null``."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(
            json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
    return path
