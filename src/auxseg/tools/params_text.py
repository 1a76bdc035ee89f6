"""Helpers of the tools that rewrite ``params.yaml`` in place: flow-style rendering and a validated atomic write.

The tools edit the file's *text* (so comments, key order and the hand-wrapped flow mappings survive), then check
that the edited text parses to exactly the intended data and passes :func:`auxseg.params.validate_params_file`
before it replaces the file. On any error the file is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from auxseg.params import ParamError, validate_params_file


def flow(value: Any) -> str:
    """``value`` as one line of flow-style YAML (``24``, ``[1.0]``, ``{prev: r0}``, ``null``, ``1.0e-05``)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=float("inf")).strip()
    if text.endswith("\n..."):  # PyYAML ends a bare scalar document with an explicit end marker
        text = text[: -len("\n...")].rstrip()
    if "\n" in text:
        raise ValueError(f"cannot render {value!r} on one line")
    return text


def write_params_text(path: str | os.PathLike, text: str, expected: dict,
                      check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Replace ``path`` with ``text`` atomically, once ``text`` parses to ``expected`` and validates.

    ``check`` gets the parsed sections (:func:`validate_params_file`) for extra checks (it raises
    :class:`ParamError`). Returns the parsed sections. The file keeps its permission bits.
    """
    path = Path(path)
    if yaml.safe_load(text) != expected:
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
