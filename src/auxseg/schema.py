"""The machinery of typed params on pydantic: frozen, validated dataclasses whose errors name the full key.

Every params class is a pydantic dataclass made with :func:`schema` (frozen, unknown keys forbidden). Scalars use the
strict aliases :data:`Int`, :data:`Float` (an int is accepted and becomes a float), :data:`Str` and :data:`Bool`, so
``"6"``, ``6.5`` or ``true`` is no integer; bounds come from ``Field(ge=..., le=...)``, choices from ``Literal``.
Cross-field checks are ``validate(self, name)`` methods, run as a pydantic model validator. :func:`parse_section`
builds a class from a mapping and turns pydantic's ``ValidationError`` into one :class:`ParamError` whose message
starts with the full key (``synthetic.n_train: 0 is out of range (must be >= 1)``); so does direct construction.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass


class ParamError(ValueError):
    """Invalid params: the message starts with the offending key."""


Int = StrictInt
Float = StrictFloat
Str = StrictStr
Bool = StrictBool
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
"""A float that is neither NaN nor infinite."""

IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Identifier = Annotated[StrictStr, Field(pattern=IDENTIFIER_PATTERN)]
"""A name that DVC stage names and output paths are built from (round names): ``[A-Za-z_][A-Za-z0-9_]*``. DVC reads a
dot as nesting (``train_round@r1.5`` would never get its params) and '/' or '..' would leave the output folders."""


def _identifier_message(value: Any) -> str:
    return (f"{value!r} is not a plain identifier (letters, digits and '_', not starting with a digit); "
            "DVC stage names and output paths are built from it")


def check_identifier(value: Any, key: str) -> str:
    """``value`` if it is a plain identifier (see :data:`Identifier`), else ParamError naming ``key``."""
    if not isinstance(value, str) or not re.fullmatch(IDENTIFIER_PATTERN, value):
        raise ParamError(f"{key}: {_identifier_message(value)}")
    return value


def field(default: Any = ..., *, help: str = "", **constraints: Any) -> Any:
    """``pydantic.Field`` with ``help`` as its description; a list default is copied for every instance."""
    if isinstance(default, list):
        return Field(default_factory=lambda: list(default), description=help, **constraints)
    return Field(default, description=help, **constraints)


def items(tp: Any, *, non_empty: bool = False, **bounds: Any) -> Any:
    """Type of a list of ``tp`` each within ``bounds`` (bounds on the list itself would bound its length)."""
    return Annotated[list[Annotated[tp, Field(**bounds)]], Field(min_length=1 if non_empty else None)]


_HERE = "\x00"
"""Stand-in for the section's key in the messages of ``validate(name)``; :func:`_message` puts the full key there."""

T = TypeVar("T")
_CONFIG = ConfigDict(extra="forbid")


def _raise_param_errors(init):
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except ValidationError as error:
            raise ParamError(_message(error, "", type(self))) from None

    return __init__


def schema(cls: type[T]) -> type[T]:
    """Class decorator: ``cls`` as a frozen pydantic dataclass that forbids unknown keys, runs ``cls.validate(name)``
    after the field checks and raises :class:`ParamError` (naming the key) when constructed with bad values."""
    validate = getattr(cls, "validate", None)
    if validate is not None and not hasattr(cls, "_run_validate"):
        cls._run_validate = pydantic.model_validator(mode="after")(lambda self: (self.validate(_HERE), self)[1])
    if not hasattr(cls, "_none_is_empty"):  # an empty YAML section (``synthetic:``) reads as null: all defaults
        cls._none_is_empty = pydantic.model_validator(mode="before")(classmethod(lambda _, data: {} if data is None else data))
    cls = pydantic_dataclass(frozen=True, config=_CONFIG)(cls)
    cls.__init__ = _raise_param_errors(cls.__init__)
    return cls


SECTIONS: dict[str, type] = {}
"""Registry of the top-level params.yaml sections: name → class (filled by :func:`section`)."""

TOP_LEVEL_SCALARS: dict[str, tuple[Any, Any]] = {"seed": (Int, 0)}
"""Top-level entries that are not sections: name → (type, default); :mod:`auxseg.config` adds ``rounds`` and
``final_round``."""


def section(name: str):
    """Class decorator: :func:`schema`, registered as the schema of top-level section ``name``."""

    def register(cls):
        cls = schema(cls)
        SECTIONS[name] = cls
        cls.__section__ = name
        return cls

    return register


# ------------------------------------------------------------------------------------------------- error messages
_EXPECTED = {
    "int_type": "expected an integer", "int_parsing": "expected an integer", "int_from_float": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number", "bool_type": "expected true or false",
    "bool_parsing": "expected true or false", "string_type": "expected a string", "list_type": "expected a list",
    "tuple_type": "expected a list", "dict_type": "expected a mapping", "dataclass_type": "expected a mapping of keys",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}


def _strip(tp: Any) -> Any:
    """The class inside ``Optional[...]`` / ``Annotated[...]``."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(arg for arg in typing.get_args(tp) if arg is not type(None))
        else:
            return tp


def _type_at(tp: Any, loc: tuple) -> Any:
    """The type found at ``loc`` inside type ``tp`` (through fields, dict values and list items)."""
    for part in loc:
        tp = _strip(tp)
        if dataclasses.is_dataclass(tp):
            tp = tp.__pydantic_fields__[part].annotation
        elif typing.get_origin(tp) in (dict, list, tuple):
            tp = typing.get_args(tp)[-1]
    return _strip(tp)


def _message(error: ValidationError, name: str, root: Any) -> str:
    """One message for the first of pydantic's errors (unknown keys first), starting with the full key."""
    errors = sorted(error.errors(), key=lambda item: item["type"] != "unexpected_keyword_argument")
    item = errors[0]
    kind, value, ctx = item["type"], item["input"], item.get("ctx") or {}
    loc = [part for part in item["loc"] if part != "[key]"]
    while kind in _BOUNDS and loc and isinstance(loc[-1], int):
        loc.pop()  # a bound on list items names the list
    key = ".".join([name] if name else [])
    for part in loc:
        key = f"{key}[{part}]" if isinstance(part, int) else (f"{key}.{part}" if key else str(part))
    if kind == "unexpected_keyword_argument":
        known = sorted(_type_at(root, loc[:-1]).__pydantic_fields__)
        where = key.rpartition(".")[0]
        return f"{key}: unknown key (known keys of '{where}': {', '.join(known)})"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"{key}: must not be empty"
    if kind in ("too_short", "too_long"):
        return f"{key}: expected {ctx.get('min_length', ctx.get('max_length'))} items, got {ctx.get('actual_length')}"
    if kind in _BOUNDS:
        bound, word = _BOUNDS[kind]
        limit = ctx[bound]
        if isinstance(limit, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return f"{key}: {value!r} is out of range (must be {word} {limit})"
    if kind == "literal_error":
        return f"{key}: {value!r} is not one of {list(typing.get_args(_type_at(root, loc)))}"
    if kind == "finite_number":
        return f"{key}: must be a finite number, got {value!r}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == IDENTIFIER_PATTERN:
        return f"{key}: {_identifier_message(value)}"
    if kind in _EXPECTED:
        got = f"{type(value).__name__} {value!r}" if kind in ("list_type", "tuple_type", "dict_type", "dataclass_type") else repr(value)
        return f"{key}: {_EXPECTED[kind]}, got {got}"
    cause = ctx.get("error")
    if isinstance(cause, ParamError):  # raised by validate(_HERE)
        text = str(cause)
        return text.replace(_HERE, key) if key else text.replace(_HERE + ".", "").replace(_HERE, "")
    return f"{key}: {item['msg']}"


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def parse_value(tp: Any, value: Any, name: str) -> Any:
    """``value`` validated as type ``tp`` (a schema class, ``dict[Identifier, RoundParams]``, ``Int``, ...)."""
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as error:
        raise ParamError(_message(error, name, tp)) from None


def parse_section(cls: type[T], data: Any, name: str) -> T:
    """Build schema class ``cls`` from mapping ``data`` (None: all defaults); errors name keys as ``name.key``."""
    if data is not None and not isinstance(data, typing.Mapping):
        raise ParamError(f"{name}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    return parse_value(cls, dict(data or {}), name)


def to_dict(instance: Any) -> dict:
    """Params dataclass → plain dict in field order (tuples as lists), e.g. for fingerprints or writing YAML."""
    return _adapter(type(instance)).dump_python(instance, mode="json")


__all__ = ["Bool", "Field", "Finite", "Float", "Identifier", "Int", "ParamError", "SECTIONS", "Str", "TOP_LEVEL_SCALARS",
           "check_identifier", "field", "items", "parse_section", "parse_value", "schema", "section", "to_dict"]
