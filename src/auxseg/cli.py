"""Shared entry point of the stage scripts in ``stages/``: parse params, run one step, report errors cleanly."""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, Callable, Sequence

from auxseg.io import DataError
from auxseg.params import ParamError, load_stage_params


def run_stage(step: Callable[..., Any], sections: Sequence[str], argv: Sequence[str] | None = None,
              *, per_round: bool = False) -> int:
    """Parse ``sections`` of params.yaml (the declared view under DVC) and call ``step(**sections)``.

    With ``per_round`` the script takes ``--round NAME``; the step also gets ``round_name`` and ``round_params``
    (the entry ``rounds.NAME``, which the stage must declare). Bad params or bad data print one ``error: ...``
    line naming the key or file and exit with status 2.
    """
    parser = argparse.ArgumentParser(description=step.__module__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if per_round:
        parser.add_argument("--round", required=True, help="round name, a key of 'rounds' in params.yaml (or r0)")
    args = parser.parse_args(argv)
    try:
        names = list(sections)
        wants_round_params = per_round and "round_params" in inspect.signature(step).parameters
        if wants_round_params:
            names.append("rounds")
        params = load_stage_params(names, args.params)
        if per_round:
            params["round_name"] = args.round
        if wants_round_params:
            rounds = params.pop("rounds")
            if args.round not in rounds:
                raise ParamError(f"rounds.{args.round}: no such round in params")
            params["round_params"] = rounds[args.round]
        step(**params)
    except (ParamError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = ["run_stage"]
