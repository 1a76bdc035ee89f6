"""The machinery of typed params on pydantic: frozen, validated dataclasses whose errors name the full key.

Every params class is a pydantic dataclass made with :func:`schema` (frozen, unknown keys forbidden). Scalars use the
strict aliases :data:`Int`, :data:`Float` (an int is accepted and becomes a float), :data:`Str` and :data:`Bool`, so
``"6"``, ``6.5`` or ``true`` is no integer; bounds come from the bounded aliases (:data:`PositiveInt`,
:data:`Fraction`, ...) or ``Field(ge=..., le=...)``, choices from ``Literal``. Cross-field checks are
``validate(self, name)`` methods, run as a pydantic model validator. :func:`parse_section` builds a class from a
mapping and turns pydantic's ``ValidationError`` into one :class:`ParamError` whose message starts with the full key
(``synthetic.n_train: 0 is out of range (must be >= 1)``); so does direct construction.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ArgsKwargs


class ParamError(ValueError):
    """Invalid params: the message starts with the offending key."""


Int, Float, Str, Bool = StrictInt, StrictFloat, StrictStr, StrictBool
Finite = Annotated[Float, Field(allow_inf_nan=False)]
"""A float that is neither NaN nor infinite."""
PositiveInt = Annotated[Int, Field(ge=1)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0.0)]
NonNegativeFloat = Annotated[Float, Field(ge=0.0)]
NonNegativeFinite = Annotated[Finite, Field(ge=0.0)]
Fraction = Annotated[Float, Field(ge=0.0, le=1.0)]
"""A float in [0, 1] (rates, thresholds)."""

Identifier = Annotated[Str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
"""A name that DVC stage names and output paths are built from (round names): ``[A-Za-z_][A-Za-z0-9_]*``. DVC reads a
dot as nesting (``train_round@r1.5`` would never get its params) and '/' or '..' would leave the output folders."""


def field(default: Any = ..., *, help: str = "", **constraints: Any) -> Any:
    """``pydantic.Field`` with ``help`` as its description (pydantic copies a list default for every instance)."""
    return Field(default, description=help, **constraints)


def items(tp: Any, *, non_empty: bool = False, **bounds: Any) -> Any:
    """Type of a list of ``tp`` each within ``bounds`` (bounds on the list itself would bound its length)."""
    return Annotated[list[Annotated[tp, Field(**bounds)]], Field(min_length=1 if non_empty else None)]


_HERE = "\x00"
"""Stand-in for the model's key in the messages raised by its validators; :func:`_message` puts the full key there."""

T = TypeVar("T")


def _known_keys(cls, data: Any) -> Any:
    """Before validation: null (an empty YAML section such as ``synthetic:``) means all defaults; an unknown key is
    an error listing the known ones."""
    keys = (data.kwargs or {}) if isinstance(data, ArgsKwargs) else data if isinstance(data, dict) else {}
    unknown = [key for key in keys if key not in cls.__dataclass_fields__]
    if unknown:
        known = ", ".join(sorted(cls.__dataclass_fields__))
        raise ParamError(f"{_HERE}.{unknown[0]}: unknown key (known keys of '{_HERE}': {known})")
    return {} if data is None else data


def _raise_param_errors(init):
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except ValidationError as error:
            raise ParamError(_message(error, "")) from None

    return __init__


def schema(cls: type[T]) -> type[T]:
    """Class decorator: ``cls`` as a frozen pydantic dataclass that forbids unknown keys, runs ``cls.validate(name)``
    after the field checks and raises :class:`ParamError` (naming the key) when constructed with bad values."""
    if hasattr(cls, "validate") and not hasattr(cls, "_run_validate"):
        cls._run_validate = pydantic.model_validator(mode="after")(lambda self: (self.validate(_HERE), self)[1])
    if not hasattr(cls, "_known_keys"):
        cls._known_keys = pydantic.model_validator(mode="before")(classmethod(_known_keys))
    cls = pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
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
        SECTIONS[name] = cls = schema(cls)
        return cls

    return register


# ------------------------------------------------------------------------------------------------- error messages
_TEXT = {
    "int_type": "expected an integer, got {input!r}", "float_type": "expected a number, got {input!r}",
    "bool_type": "expected true or false, got {input!r}", "string_type": "expected a string, got {input!r}",
    "list_type": "expected a list, got {kind} {input!r}", "tuple_type": "expected a list, got {kind} {input!r}",
    "dict_type": "expected a mapping, got {kind} {input!r}", "missing": "required key is missing",
    "dataclass_type": "expected a mapping of keys, got {kind} {input!r}", "empty": "must not be empty",
    "too_short": "expected {min_length} items, got {actual_length}",
    "too_long": "expected {max_length} items, got {actual_length}",
    "literal_error": "{input!r} is not one of {choices}", "finite_number": "must be a finite number, got {input!r}",
    "string_pattern_mismatch": "{input!r} is not a plain identifier (letters, digits and '_', not starting with a "
                               "digit); DVC stage names and output paths are built from it",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _message(error: ValidationError, name: str) -> str:
    """One message for the first of pydantic's errors (unknown keys first), starting with the full key."""
    item = sorted(error.errors(), key=lambda item: "unknown key (known keys" not in item["msg"])[0]
    kind, value, ctx = item["type"], item["input"], item.get("ctx") or {}
    loc = [part for part in item["loc"] if part != "[key]"]
    while kind in _BOUNDS and loc and isinstance(loc[-1], int):
        loc.pop()  # a bound on list items names the list
    key = name
    for part in loc:
        key = f"{key}[{part}]" if isinstance(part, int) else (f"{key}.{part}" if key else str(part))
    if isinstance(ctx.get("error"), ParamError):  # raised by a validator, with _HERE for the model's key
        text = str(ctx["error"])
        return text.replace(_HERE, key) if key else text.replace(_HERE + ".", "").replace(_HERE, "")
    if kind in _BOUNDS:
        (limit,) = ctx.values()
        value = float(value) if isinstance(limit, float) and type(value) is int else value
        return f"{key}: {value!r} is out of range (must be {_BOUNDS[kind]} {limit})"
    kind = "empty" if kind == "too_short" and ctx.get("min_length") == 1 else kind
    choices = re.findall(r"'(.*?)'", ctx.get("expected", ""))  # the Literal choices, all strings
    text = _TEXT.get(kind, "{msg}").format(input=value, kind=type(value).__name__, choices=choices, msg=item["msg"], **ctx)
    return f"{key}: {text}"


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def parse_value(tp: Any, value: Any, name: str) -> Any:
    """``value`` validated as type ``tp`` (a schema class, ``dict[Identifier, RoundParams]``, ``Int``, ...)."""
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as error:
        raise ParamError(_message(error, name)) from None


def parse_section(cls: type[T], data: Any, name: str) -> T:
    """Build schema class ``cls`` from mapping ``data`` (None: all defaults); errors name keys as ``name.key``."""
    return parse_value(cls, data, name)


def check_identifier(value: Any, key: str) -> str:
    """``value`` if it is a plain identifier (see :data:`Identifier`), else ParamError naming ``key``."""
    return parse_value(Identifier, value, key)


def to_dict(instance: Any) -> dict:
    """Params dataclass → plain dict in field order (tuples as lists), e.g. for fingerprints or writing YAML."""
    return _adapter(type(instance)).dump_python(instance, mode="json")
