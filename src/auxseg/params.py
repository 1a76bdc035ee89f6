"""Typed, validated params: one dataclass per ``params.yaml`` section.

Every section is a frozen dataclass registered with :func:`section`. :func:`parse_section` builds it from a
mapping and fails with :class:`ParamError` naming the full key (``synthetic.n_train``) on an unknown or
misspelt key, a missing required key, a wrong type or an out-of-range value. :func:`load_stage_params`
reads ``params.yaml``; inside a DVC stage (``DVC_STAGE`` is set) it reads the stage's *declared* params
through ``dvc.api.params_show``, so reading a section that ``dvc.yaml`` does not list fails loudly instead
of silently going stale.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

import yaml


class ParamError(ValueError):
    """Invalid params: the message starts with the offending key."""


T = TypeVar("T")

SECTIONS: dict[str, type] = {}
"""Registry of top-level params.yaml sections: name → dataclass (scalars such as ``seed`` included)."""

TOP_LEVEL_SCALARS: dict[str, tuple[Any, Any]] = {"seed": (int, 0)}
"""Top-level entries that are not dataclass sections: name → (type hint, default).

Extended by :mod:`auxseg.config` (e.g. ``rounds: dict[str, RoundParams]``, ``final_round: str``).
"""


def section(name: str):
    """Class decorator: register a dataclass as the schema of top-level section ``name``."""

    def register(cls):
        if "__dataclass_fields__" not in cls.__dict__:  # also re-process subclasses of dataclasses
            cls = dataclasses.dataclass(frozen=True)(cls)
        SECTIONS[name] = cls
        cls.__section__ = name
        return cls

    return register


def field(default: Any = dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None, help: str = "", **kwargs):
    """A dataclass field with range bounds checked by :func:`parse_section`."""
    metadata = {"ge": ge, "gt": gt, "le": le, "lt": lt, "help": help}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type hint ``tp``; return the (possibly converted) value."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ParamError(f"{key}: must not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ParamError as error:
                errors.append(str(error))
        raise ParamError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ParamError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ParamError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        key_type, value_type = get_args(tp) or (str, Any)
        return {
            _coerce(k, key_type, f"{key}.{k}"): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ParamError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    raise TypeError(f"unsupported param type {tp!r} for {key}")


def _check_bounds(value: Any, metadata: Mapping[str, Any], key: str) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        for bound, test, word in (
            ("ge", lambda v, b: v >= b, ">="),
            ("gt", lambda v, b: v > b, ">"),
            ("le", lambda v, b: v <= b, "<="),
            ("lt", lambda v, b: v < b, "<"),
        ):
            limit = metadata.get(bound)
            if limit is not None and not test(item, limit):
                raise ParamError(f"{key}: {item!r} is out of range (must be {word} {limit})")


def parse_section(cls: type[T], data: Any, name: str) -> T:
    """Build dataclass ``cls`` from mapping ``data``; errors name keys as ``name.key``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ParamError(f"{name}: expected a mapping of keys, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamError(
            f"{name}.{unknown[0]}: unknown key (known keys of '{name}': {', '.join(sorted(fields))})"
        )
    values = {}
    for field_name, spec in fields.items():
        key = f"{name}.{field_name}"
        if field_name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ParamError(f"{key}: required key is missing")
            continue
        value = _coerce(data[field_name], hints[field_name], key)
        _check_bounds(value, spec.metadata, key)
        values[field_name] = value
    try:
        instance = cls(**values)
    except ParamError:
        raise
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate(name)
    return instance


def to_dict(instance: Any) -> dict:
    """Dataclass → plain dict (tuples as lists), e.g. for writing back to YAML."""

    def convert(value):
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(instance)


def read_params_file(path: str | os.PathLike = "params.yaml") -> dict:
    """Read ``params.yaml`` and reject unknown top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: params file not found")
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ParamError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections")
    _import_all_sections()
    known = set(SECTIONS) | set(TOP_LEVEL_SCALARS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamError(f"{unknown[0]}: unknown top-level key in {path} (known: {', '.join(sorted(known))})")
    return data


def validate_params_file(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Parse every section of a params file; return name → parsed section."""
    data = read_params_file(path)
    parsed: dict[str, Any] = {}
    for name, value in data.items():
        if name in TOP_LEVEL_SCALARS:
            tp, _ = TOP_LEVEL_SCALARS[name]
            parsed[name] = _coerce(value, tp, name)
        else:
            parsed[name] = parse_section(SECTIONS[name], value, name)
    return parsed


def _declared_view(stage: str, params_file: Path) -> dict:
    """The params a DVC stage declares (``dvc.api.params_show(stages=stage)``), nested by section."""
    import dvc.api

    root = params_file.resolve().parent
    try:
        view = dvc.api.params_show(stages=stage, repo=str(root))
    except Exception as error:  # dvc raises its own exception types
        raise ParamError(f"could not read the params declared by DVC stage '{stage}': {error}") from error
    # With a single params file the view is nested {section: {...}}; strip a "params.yaml:" prefix if present.
    prefix = f"{params_file.name}:"
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in view.items()}


def load_stage_params(
    names: list[str], params_file: str | os.PathLike = "params.yaml", stage: str | None = None
) -> dict[str, Any]:
    """Parse the sections/scalars ``names`` for a stage.

    Outside DVC the values come from ``params_file``. Under DVC (``DVC_STAGE`` set, or ``stage`` given) they
    come from the stage's declared params, so a section the stage reads but does not declare is an error.
    A section declared only in part (``train.lr``) is parsed from its declared keys and defaults.
    """
    params_file = Path(params_file)
    raw = read_params_file(params_file)
    stage = stage or os.environ.get("DVC_STAGE")
    source = raw
    if stage:
        source = _declared_view(stage, params_file)
    result: dict[str, Any] = {}
    for name in names:
        _import_all_sections()
        if name not in SECTIONS and name not in TOP_LEVEL_SCALARS:
            raise ParamError(f"{name}: no such params section")
        if name not in source:
            if stage:
                raise ParamError(
                    f"{name}: DVC stage '{stage}' reads params '{name}' but dvc.yaml does not declare it under params:"
                )
            if name in TOP_LEVEL_SCALARS:
                result[name] = TOP_LEVEL_SCALARS[name][1]
                continue
            result[name] = parse_section(SECTIONS[name], {}, name)
            continue
        value = source[name]
        if name in TOP_LEVEL_SCALARS:
            result[name] = _coerce(value, TOP_LEVEL_SCALARS[name][0], name)
        else:
            result[name] = parse_section(SECTIONS[name], value, name)
    return result


def _import_all_sections() -> None:
    """Import the module that defines every section schema (kept separate to avoid import cycles)."""
    import auxseg.config  # noqa: F401  (registers sections)
