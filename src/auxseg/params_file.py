"""Reading, validating and rewriting ``params.yaml``: the one place that parses the file or edits it.

Reading goes through ruamel.yaml (YAML 1.2, as DVC reads the same file), so a duplicate key is an error naming it
instead of silently keeping the last value. Rewriting keeps comments, key order and the hand-wrapped flow mappings:
:func:`splice` replaces values in the text at the positions ruamel's round-trip parser reports (a value that is not
on one line falls back to :func:`edit_entries`); :func:`write_params_text` checks that the edited text parses to
exactly the intended data and validates before it atomically replaces the file. On any error the file is untouched.
Structural edits (rounds added or removed) go through :func:`edit_entries`: ruamel re-renders only the top-level entries
that changed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from auxseg.config import SECTIONS, TOP_LEVEL_SCALARS
from auxseg.io import DataError, read_text_file
from auxseg.schema import ParamError, parse_section, parse_value

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
    except DuplicateKeyError as error:
        key = re.search(r'found duplicate key "(.*?)"', str(error.problem))
        line = error.problem_mark.line + 1 if error.problem_mark else "?"
        raise ParamError(f"{where}: duplicate key '{key.group(1) if key else '?'}' (line {line})") from None
    except YAMLError as error:
        raise ParamError(f"{where}: not valid YAML ({error})") from None


def read_params_file(path: str | os.PathLike = "params.yaml") -> dict:
    """The mapping in ``path``; ParamError for a missing file, bad YAML, a duplicate or an unknown top-level key."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: params file not found")
    data = load_yaml(read_params_text(path), path) or {}
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections")
    known = set(SECTIONS) | set(TOP_LEVEL_SCALARS)
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise ParamError(f"{unknown[0]}: unknown top-level key in {path} (known: {', '.join(sorted(known))})")
    return data


def parse_entry(name: str, value: Any) -> Any:
    """Top-level entry ``name`` (a section or a scalar such as ``seed``) parsed from its raw ``value``."""
    if name in TOP_LEVEL_SCALARS:
        return parse_value(TOP_LEVEL_SCALARS[name][0], value, name)
    return parse_section(SECTIONS[name], value, name)


def validate_params_file(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Parse every entry of a params file; return name → parsed section or value."""
    return {name: parse_entry(name, value) for name, value in read_params_file(path).items()}


# ------------------------------------------------------------------------------------------------------- editing
def flow(value: Any) -> str:
    """``value`` as one line of flow-style YAML (``24``, ``[1.0]``, ``{prev: r0}``, ``null``, ``1.0e-05``)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=float("inf")).strip()
    if text.endswith("\n..."):  # PyYAML ends a bare scalar document with an explicit end marker
        text = text[: -len("\n...")].rstrip()
    if "\n" in text:
        raise ValueError(f"cannot render {value!r} on one line")
    return text


def value_spans(text: str) -> dict[tuple[str, ...], tuple[int, int] | None]:
    """Key path → [start, end) character offsets of its value in ``text``, from ruamel's parser events; None for a
    value that cannot be replaced by a one-line flow value in place (a block collection, block scalar, empty value,
    anchor, alias or tag)."""
    spans: dict[tuple[str, ...], tuple[int, int] | None] = {}
    stack: list[list] = []  # open collections: [path, is a mapping, key awaiting its value, start offset or None]
    for event in YAML(typ="rt").parse(text):
        kind = type(event).__name__
        if kind in ("MappingEndEvent", "SequenceEndEvent"):
            path, _, _, start = stack.pop()
            span = None if start is None else (start, event.end_mark.index)
        elif kind in ("ScalarEvent", "AliasEvent", "MappingStartEvent", "SequenceStartEvent"):
            top = stack[-1] if stack else None
            if top and top[1] and top[2] is None:
                top[2] = getattr(event, "value", None)  # a mapping key
                continue
            path = () if top is None else (*top[0], str(top[2]) if top[1] else "-")
            plain = getattr(event, "anchor", None) is None and getattr(event, "tag", None) is None
            if kind.endswith("StartEvent"):
                stack.append([path, kind == "MappingStartEvent", None,
                              event.start_mark.index if plain and event.flow_style else None])
                continue
            one_line = kind == "ScalarEvent" and plain and event.style in (None, "'", '"')
            span = (event.start_mark.index, event.end_mark.index) if one_line and event.end_mark.index > event.start_mark.index else None
        else:
            continue
        spans[path] = span
        if stack and stack[-1][1]:
            stack[-1][2] = None
    return spans


def splice(text: str, leaves: list[Leaf]) -> str | None:
    """``text`` with each leaf's value replaced in place by its one-line flow form, or None where a value cannot be
    (see :func:`value_spans`)."""
    spans = value_spans(text)
    edits = [spans.get(path) for path, _ in leaves]
    if any(span is None for span in edits):
        return None
    for (start, end), (_, value) in sorted(zip(edits, leaves), key=lambda item: item[0][0], reverse=True):
        text = text[:start] + flow(value) + text[end:]
    return text


def _roundtrip() -> YAML:
    """ruamel's round-trip loader/dumper, writing ``null`` (not an empty value) and never re-wrapping lines."""
    handler = YAML(typ="rt")
    handler.width = 4096
    handler.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return handler


def _dump(document: Any) -> str:
    buffer = io.StringIO()
    _roundtrip().dump(document, buffer)
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))


def edit_entries(text: str, edit: Callable[[CommentedMap], None]) -> str:
    """``text`` after ``edit`` changed ruamel's round-trip document of it (comments and key order travel with the
    data). The top-level entries that ``edit`` added or changed come from ruamel's rendering; every other line of
    ``text`` (comments and hand-wrapped flow mappings included) is kept byte for byte."""
    if text and not text.endswith("\n"):
        text += "\n"
    before, after = _roundtrip().load(text) or CommentedMap(), _roundtrip().load(text) or CommentedMap()
    edit(after)
    rendered = _dump(after)

    def entry_lines(source: str) -> dict[str, list[str]]:
        document, lines = _roundtrip().load(source) or CommentedMap(), source.splitlines(keepends=True)
        starts = [document.lc.key(key)[0] for key in document][1:] + [len(lines)]
        return {key: lines[start:end] for key, start, end in zip(document, [0] + starts[:-1], starts)}

    old, new = entry_lines(text), entry_lines(rendered)
    lines = [old[key] if key in before and before[key] == after[key] else new[key] for key in after]
    return "".join(line for entry in lines for line in entry)


def set_values(text: str, leaves: list[Leaf]) -> str:
    """``text`` with the leaves set: spliced in place, else (a block value) through :func:`edit_entries`."""
    new_text = splice(text, leaves)
    if new_text is not None:
        return new_text

    def assign(document: CommentedMap) -> None:
        for path, value in leaves:
            parent = document
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(value, list):
                value = CommentedSeq(value)
                value.fa.set_flow_style()
            parent[path[-1]] = value

    return edit_entries(text, assign)


def write_params_text(path: str | os.PathLike, text: str, expected: dict,
                      check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Replace ``path`` with ``text`` atomically, once ``text`` parses to ``expected`` and validates.

    ``check`` gets the parsed entries (:func:`validate_params_file`) for extra checks (it raises :class:`ParamError`).
    Returns the parsed entries. The file keeps its permission bits.
    """
    path = Path(path)
    if load_yaml(text, path) != expected:
        raise RuntimeError(f"{path}: the edited text does not parse to the intended params (please report this)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        with contextlib.suppress(OSError):
            shutil.copymode(path, tmp)
        try:
            parsed = validate_params_file(tmp)
        except ParamError as error:
            raise ParamError(str(error).replace(tmp, str(path))) from error
        if check is not None:
            check(parsed)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return parsed
