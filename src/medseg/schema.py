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
for scalars a user may mistype; put rules that span fields in ``__post_init__`` (raise
ConfigError); ``to_dict`` usually needs nothing (``dataclasses.asdict`` + :func:`json_ready`).

pydantic is imported on first use only (``import medseg.runtime`` does not pay for it), and a
format's validator is built once per process. Dataclasses opt in to refusing unknown keys with
``__pydantic_config__ = FORBID_EXTRA`` (a plain dict: no pydantic import at class definition).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

from medseg.atomic import atomic_file
from medseg.config_io import json_ready
from medseg.errors import ConfigError

if TYPE_CHECKING:
    from typing import Self

    from pydantic import GetCoreSchemaHandler, ValidationError
    from pydantic_core import CoreSchema

__all__ = [
    "FORBID_EXTRA",
    "JsonRecord",
    "NanFloat",
    "StrictBool",
    "StrictFloat",
    "StrictInt",
    "StrictStr",
    "Via",
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
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_error(error: ValidationError) -> str:
    """The first error of a pydantic ``ValidationError`` as ``KEY.PATH what, got VALUE``."""
    first = error.errors(include_url=False)[0]
    kind, key = first["type"], _path(tuple(first["loc"]))
    if kind == "missing":
        return f"missing key {key}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key {key}"
    if kind in ("value_error", "assertion_error"):
        cause = first.get("ctx", {}).get("error")
        message = str(cause) if cause is not None else first["msg"]
        if not key or message.startswith(key):
            return message
        return f"{key}: {message}"
    words = _TYPE_WORDS.get(kind) or first["msg"].replace("Input should be", "must be", 1)
    got = first["input"]
    got_text = f"{type(got).__name__} {got!r}" if kind in _TYPE_WORDS else repr(got)
    return f"{key or 'the value'} {words}, got {got_text}"


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
        message = describe_error(exc)
        if not message.startswith(where):
            message = f"{where}: {message}"
        raise ConfigError(message) from None
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
