"""Typed params of the stages: :func:`load_stage_params` reads a stage's sections.

The schemas are the pydantic dataclasses of :mod:`auxseg.config` (machinery in :mod:`auxseg.schema`); the file is
read by :mod:`auxseg.params_file`. Outside DVC the values come from ``params.yaml``; inside a DVC stage (``DVC_STAGE``
is set) they come from the stage's *declared* params through ``dvc.api.params_show``, so reading a section that
``dvc.yaml`` does not list fails loudly instead of silently going stale. Every error is a :class:`ParamError` whose
message starts with the full key (``synthetic.n_trian: unknown key ...``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from auxseg.config import SECTIONS, TOP_LEVEL_SCALARS
from auxseg.params_file import parse_entry, read_params_file, validate_params_file
from auxseg.schema import ParamError, check_identifier, parse_section, to_dict

__all__ = ["ParamError", "check_identifier", "load_stage_params", "parse_section", "read_params_file", "to_dict",
           "validate_params_file"]


def _declared_view(stage: str, params_file: Path) -> dict:
    """The params a DVC stage declares (``dvc.api.params_show(stages=stage)``), nested by section."""
    import dvc.api  # slow to import: only under DVC

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
    source = read_params_file(params_file)
    stage = stage or os.environ.get("DVC_STAGE")
    if stage:
        # Check the top-level entries (round names) on the file itself first: DVC's view nests a name with a dot.
        for name in names:
            if name in TOP_LEVEL_SCALARS and name in source:
                parse_entry(name, source[name])
        source = _declared_view(stage, params_file)
    result: dict[str, Any] = {}
    for name in names:
        if name not in SECTIONS and name not in TOP_LEVEL_SCALARS:
            raise ParamError(f"{name}: no such params section")
        if name not in source and stage:
            raise ParamError(
                f"{name}: DVC stage '{stage}' reads params '{name}' but dvc.yaml does not declare it under params:"
            )
        default = TOP_LEVEL_SCALARS[name][1] if name in TOP_LEVEL_SCALARS else {}
        result[name] = parse_entry(name, source.get(name, default))
    return result
