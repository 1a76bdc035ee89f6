"""Apply a named params profile (``src/auxseg/profiles/<name>.yaml``) to ``params.yaml``.

Usage::

    python -m auxseg.tools.apply_profile tiny [--params params.yaml]     # deep-merge the profile into the file
    python -m auxseg.tools.apply_profile tiny --print-set-args           # the same as `dvc exp run -S` overrides
    python -m auxseg.tools.apply_profile --list                          # the available profiles

A profile holds only keys that already exist in ``params.yaml``: every leaf it names (a scalar or a list) replaces
that key's value; mappings are merged key by key. The file is edited through ruamel.yaml's round trip, so its
comments, key order and quotes survive and untouched sections keep their text (:mod:`auxseg.params_file`); the
result is validated and written atomically.
An unknown profile, a profile key that ``params.yaml`` lacks or an invalid result prints ``error: ...`` naming it,
exits with status 2 and leaves the file untouched.

``--print-set-args`` prints the profile as ``-S key=value`` arguments on one line (shell-quoted), e.g. for
``python -m auxseg.tools.apply_profile tiny --print-set-args | xargs dvc exp run``.
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from auxseg.params_file import Leaf, edit_params_file, load_yaml, read_params, set_leaves, set_values
from auxseg.schema import ParamError

splice = set_values
"""``text`` with every profile leaf set (:func:`auxseg.params_file.set_values`)."""

PROFILE_PACKAGE = "auxseg.profiles"


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(item.name[: -len(".yaml")] for item in resources.files(PROFILE_PACKAGE).iterdir()
                  if item.name.endswith(".yaml"))


def load_profile(name: str) -> dict:
    """The mapping of profile ``name``; an unknown name raises :class:`ParamError` listing the known ones."""
    known = available_profiles()
    if name not in known:
        raise ParamError(f"profile '{name}': no such profile (available: {', '.join(known) or 'none'})")
    data = load_yaml(resources.files(PROFILE_PACKAGE).joinpath(f"{name}.yaml").read_text(), f"profile '{name}'")
    if not isinstance(data, dict) or not data:
        raise ParamError(f"profile '{name}': expected a non-empty mapping of params sections")
    return data


def profile_leaves(profile: dict, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """(key path, value) of every leaf of the profile: scalars and lists; mappings are walked into."""
    leaves: list[Leaf] = []
    for key, value in profile.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and not value:
            raise ParamError(f"{'.'.join(path)}: empty mapping in the profile")
        leaves.extend(profile_leaves(value, path) if isinstance(value, dict) else [(path, value)])
    return leaves


def merge(params: dict, leaves: list[Leaf], params_name: str = "params.yaml") -> dict:
    """A deep copy of ``params`` with every leaf replaced; a leaf ``params`` lacks raises :class:`ParamError`."""
    return set_leaves(copy.deepcopy(params), leaves, params_name)


def apply_profile(name: str, params_path: str | Path = "params.yaml") -> list[Leaf]:
    """Merge profile ``name`` into ``params_path`` (validated, atomic); returns the leaves it set."""
    leaves = profile_leaves(load_profile(name))
    edit_params_file(params_path, lambda document: set_leaves(document, leaves, Path(params_path).name))
    return leaves


def set_args(name: str, params_path: str | Path | None = "params.yaml") -> list[str]:
    """The profile as ``dvc exp run`` overrides: ``["-S", "synthetic.n_train=24", ...]``.

    With ``params_path`` the keys are first checked against that file (as :func:`apply_profile` does).
    """
    leaves = profile_leaves(load_profile(name))
    if params_path is not None:
        merge(read_params(params_path)[1], leaves, Path(params_path).name)
    return [arg for path, value in leaves for arg in ("-S", f"{'.'.join(path)}={_hydra_value(value)}")]


def _hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (what ``dvc exp run -S`` parses)."""
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_./-]*", value)
        if plain and value.lower() not in {"true", "false", "null", "nan", "inf"}:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_hydra_value(item)}" for key, item in value.items()) + "}"
    return yaml.safe_dump(value).splitlines()[0]  # a scalar: true, null, 3, 1.0e-05


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m auxseg.tools.apply_profile",
        description="Deep-merge a named params profile into params.yaml (validated, atomic, comments kept).",
    )
    parser.add_argument("profile", nargs="?", help="profile name, e.g. tiny")
    parser.add_argument("--params", default="params.yaml", help="params file to edit (default: params.yaml)")
    parser.add_argument("--print-set-args", action="store_true",
                        help="print the profile as `dvc exp run -S key=value` arguments instead of editing the file")
    parser.add_argument("--list", action="store_true", help="list the available profiles")
    args = parser.parse_args(argv)
    if not args.profile and not args.list:
        parser.error("a profile name is required (see --list)")
    try:
        if args.list or args.print_set_args:
            print("\n".join(available_profiles()) if args.list else shlex.join(set_args(args.profile, args.params)))
        else:
            print(f"applied profile '{args.profile}' to {args.params} ({len(apply_profile(args.profile, args.params))} keys)")
    except ParamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
