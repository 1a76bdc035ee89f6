"""Reading, validating and rewriting ``params.yaml``: the one place that parses the file or edits it.

Reading goes through ruamel.yaml (YAML 1.2, as DVC reads the same file), so a duplicate key is an error naming it
instead of silently keeping the last value. Rewriting goes through ruamel's round trip (:func:`edit_entries`), which
keeps comments, key order and quotes; top-level entries that did not change are kept byte for byte, and the edited
text is checked to parse to exactly the edited data. :func:`write_params_text` validates the text before it
atomically replaces the file (:func:`edit_params_file` does both). On any error the file is untouched.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from auxseg.config import SECTIONS, TOP_LEVEL_SCALARS
from auxseg.io import DataError, atomic_write, read_text_file
from auxseg.schema import ParamError, parse_value

Leaf = tuple[tuple[str, ...], Any]
"""(key path, new value) of one edit, e.g. ``(("synthetic", "n_train"), 24)``."""


def read_params_text(path: str | os.PathLike) -> str:
    """Text of a params file: UTF-8 (a byte-order mark is accepted); ParamError naming the file otherwise."""
    try:
        return read_text_file(path, "params file")
    except DataError as error:
        raise ParamError(str(error)) from None


def load_yaml(text: str, where: str | os.PathLike) -> Any:
    """Plain data of YAML ``text``; ParamError naming ``where`` for invalid YAML or a duplicate key."""
    try:
        return YAML(typ="safe", pure=True).load(text)
    except DuplicateKeyError as error:  # problem: found duplicate key "epochs" with value ...
        key, line = re.search(r'"(.*?)"', error.problem).group(1), error.problem_mark.line + 1
        raise ParamError(f"{where}: duplicate key '{key}' (line {line})") from None
    except YAMLError as error:
        raise ParamError(f"{where}: not valid YAML ({error})") from None


def _params_data(text: str, path: Path) -> dict:
    """The mapping of params text ``text`` read from ``path``; ParamError for bad YAML, a duplicate key, no mapping
    or an unknown top-level key."""
    data = load_yaml(text, path) or {}
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections")
    known = set(SECTIONS) | set(TOP_LEVEL_SCALARS)
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise ParamError(f"{unknown[0]}: unknown top-level key in {path} (known: {', '.join(sorted(known))})")
    return data


def read_params(path: str | os.PathLike = "params.yaml") -> tuple[str, dict]:
    """Text and mapping of a params file; ParamError for a missing file, bad YAML, a duplicate or an unknown
    top-level key."""
    text = read_params_text(path := Path(path))
    return text, _params_data(text, path)


def read_params_file(path: str | os.PathLike = "params.yaml") -> dict:
    """The mapping in ``path``; ParamError for a missing file, bad YAML, a duplicate or an unknown top-level key."""
    return read_params(path)[1]


def parse_entry(name: str, value: Any) -> Any:
    """Top-level entry ``name`` (a section or a scalar such as ``seed``) parsed from its raw ``value``."""
    return parse_value(TOP_LEVEL_SCALARS[name][0] if name in TOP_LEVEL_SCALARS else SECTIONS[name], value, name)


def validate_params(data: dict) -> dict[str, Any]:
    """Parse every entry of a params mapping; return name → parsed section or value."""
    return {name: parse_entry(name, value) for name, value in data.items()}


def validate_params_file(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Parse every entry of a params file; return name → parsed section or value."""
    return validate_params(read_params_file(path))


# ------------------------------------------------------------------------------------------------------- editing
def _roundtrip() -> YAML:
    """ruamel's round-trip loader/dumper: quotes kept, ``null`` written (not an empty value), lines never re-wrapped,
    a list set by an edit written in flow style (``[1.0, 0.5]``)."""
    handler = YAML(typ="rt")
    handler.width, handler.preserve_quotes, handler.default_flow_style = 4096, True, None
    handler.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return handler


def edit_entries(text: str, edit: Callable[[CommentedMap], None]) -> str:
    """``text`` after ``edit`` changed ruamel's round-trip document of it (comments and key order travel with the
    data). The top-level entries that ``edit`` added or changed are rendered by ruamel; every other line of ``text``
    is kept byte for byte. The result is checked to parse to exactly the edited document."""
    if text and not text.endswith("\n"):
        text += "\n"
    before, after = _roundtrip().load(text) or CommentedMap(), _roundtrip().load(text) or CommentedMap()
    edit(after)
    buffer = io.StringIO()
    _roundtrip().dump(after, buffer)
    rendered = "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))

    def entry_lines(source: str) -> dict[str, list[str]]:
        document, lines = _roundtrip().load(source) or CommentedMap(), source.splitlines(keepends=True)
        starts = [document.lc.key(key)[0] for key in document][1:] + [len(lines)]
        return {key: lines[start:end] for key, start, end in zip(document, [0] + starts[:-1], starts)}

    old, new = entry_lines(text), entry_lines(rendered)
    result = "".join(line for key in after for line in (old if key in before and before[key] == after[key] else new)[key])
    if load_yaml(result, "the edited params") != after:
        raise RuntimeError("the edited params text does not parse to the intended params (please report this)")
    return result


def set_leaves(params: dict, leaves: list[Leaf], params_name: str = "params.yaml") -> dict:
    """``params`` (a mapping, edited in place and returned) with every leaf replaced; ParamError for a leaf that
    ``params`` lacks or that is a mapping there (an edit only changes existing values)."""
    for path, value in leaves:
        parent, dotted = params, ".".join(path)
        for depth, key in enumerate(path[:-1]):
            if not isinstance(parent, dict) or key not in parent:
                missing = ".".join(path[: depth + 1])
                raise ParamError(f"{missing}: not in {params_name} (a profile only changes existing keys)")
            parent = parent[key]
        if not isinstance(parent, dict):
            raise ParamError(f"{'.'.join(path[:-1])}: is not a mapping in {params_name}, cannot set {dotted}")
        if path[-1] not in parent:
            raise ParamError(f"{dotted}: not in {params_name} (a profile only changes existing keys)")
        if isinstance(parent[path[-1]], dict):
            raise ParamError(f"{dotted}: is a mapping in {params_name}; the profile must set its keys, not {value!r}")
        parent[path[-1]] = value
    return params


def set_values(text: str, leaves: list[Leaf]) -> str:
    """``text`` with every leaf (key path, value) of existing keys set; a list is written in flow style."""
    return edit_entries(text, lambda document: set_leaves(document, leaves))


def write_params_text(path: str | os.PathLike, text: str, expected: dict | None = None,
                      check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Replace ``path`` with ``text`` atomically, once ``text`` parses to ``expected`` (when given) and validates (in
    memory: nothing is written on an error).

    ``check`` gets the parsed entries (:func:`validate_params_file`) for extra checks (it raises :class:`ParamError`).
    Returns the parsed entries. The file keeps its permission bits.
    """
    path = Path(path)
    if expected is not None and load_yaml(text, path) != expected:
        raise RuntimeError(f"{path}: the edited text does not parse to the intended params (please report this)")
    parsed = validate_params(_params_data(text, path))
    if check is not None:
        check(parsed)
    with atomic_write(path, "w") as handle:
        with contextlib.suppress(OSError):  # the file keeps its permission bits
            os.fchmod(handle.fileno(), path.stat().st_mode & 0o7777)
        handle.write(text)
    return parsed


def edit_params_file(path: str | os.PathLike, edit: Callable[[CommentedMap], Any],
                     check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Apply ``edit`` to the round-trip document of params file ``path`` (:func:`edit_entries`), then validate the
    result and write it atomically (:func:`write_params_text`); returns the parsed entries."""
    return write_params_text(path, edit_entries(read_params(path)[0], edit), check=check)
