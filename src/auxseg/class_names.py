"""Class-name lists (dataset class names, ``dataset.class_names``): the check that params and datasets share."""

from __future__ import annotations

from typing import Any

from auxseg import IGNORE_INDEX
from auxseg.io import DataError


def normalise_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def check_class_names(names: Any, where: str, error: type[Exception] = DataError) -> tuple[str, ...]:
    """Validate a class-name list: K+1 non-empty unique strings (case and '_' vs ' ' ignored), 'background'
    first, at most 255 (mask value 255 is the ignore label). Raises ``error`` with a message starting with
    ``where`` (a params key such as ``dataset.class_names`` or a file path); returns the names as a tuple."""
    if not isinstance(names, (list, tuple)):
        raise error(f"{where}: expected a list of class names, got {type(names).__name__}")
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise error(f"{where}[{index}]: class names must be non-empty strings, got {name!r}")
    if len(names) < 2 or names[0] != "background":
        raise error(f"{where}: expected 'background' followed by at least one class, got {list(names)!r}")
    normalised = [normalise_name(name) for name in names]
    duplicates = sorted({name for name in normalised if normalised.count(name) > 1})
    if duplicates:
        raise error(f"{where}: duplicate class names {duplicates} (names are compared ignoring case and '_')")
    if len(names) > IGNORE_INDEX:
        raise error(f"{where}: {len(names)} classes do not fit below the ignore value {IGNORE_INDEX}")
    return tuple(names)


__all__ = ["check_class_names", "normalise_name"]
