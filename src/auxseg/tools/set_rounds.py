"""Set the chain of rounds in ``params.yaml`` to r1..rN (each round refining the one before, r1 refining r0).

Usage::

    python -m auxseg.tools.set_rounds N [--params params.yaml]

Only the ``rounds:`` block and the ``final_round:`` value are rewritten (ruamel.yaml's round trip through
:func:`auxseg.params_file.edit_entries`): the rest of the file is kept byte for byte, and comments inside the block
stay with their rounds (a removed round's comments go with it). A round that stays keeps its per-round overrides
(``loss_weights``, ``epochs``, ...); new rounds are ``rK: {prev: r(K-1)}``; ``final_round`` becomes ``rN``. The result is validated (every section, and the chain with
:func:`auxseg.config.round_chain`) and written atomically. N < 1 or an invalid result prints ``error: ...`` and
exits with status 2, leaving the file untouched.

Removing rounds does not remove what they produced: their ``dvc.lock`` entries, ``data/rounds/rK``,
``models/rounds/rK.pt`` and the git-tracked ``metrics/rounds/rK.json`` stay until deleted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ruamel.yaml.comments import CommentedMap

from auxseg.config import INITIAL_ROUND, round_chain
from auxseg.params_file import edit_params_file
from auxseg.schema import ParamError


def set_chain(document: CommentedMap, n: int) -> list[str]:
    """Set ``rounds`` of a round-trip document to r1..rN (each refining the one before) and ``final_round`` to rN;
    returns the names of the rounds removed."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParamError(f"number of rounds: must be an integer >= 1, got {n!r}")
    rounds = document.get("rounds")
    if rounds and not isinstance(rounds, dict):
        raise ParamError(f"rounds: expected a mapping of rounds, got {type(rounds).__name__}")
    if not isinstance(rounds, CommentedMap):
        rounds = document["rounds"] = CommentedMap()
    rounds.fa.set_block_style()
    names = [f"r{k}" for k in range(1, n + 1)]
    removed = [name for name in rounds if name not in names]
    for name in removed:
        del rounds[name]
    for prev, name in zip([INITIAL_ROUND, *names], names):
        if not isinstance(rounds.get(name), CommentedMap):
            rounds[name] = CommentedMap(prev=prev)  # written in flow style: {prev: rK}
        elif rounds[name].get("prev") != prev:
            rounds[name]["prev"] = prev
    if "final_round" in document:
        document["final_round"] = names[-1]
    else:
        document.insert(list(document).index("rounds") + 1, "final_round", names[-1])
    return removed


def set_rounds(n: int, params_path: str | Path = "params.yaml") -> list[str]:
    """Rewrite the rounds chain of ``params_path`` to r1..rN (validated, atomic); returns the removed rounds."""
    removed: list[str] = []
    edit_params_file(params_path, lambda document: removed.extend(set_chain(document, n)),
                     check=lambda parsed: round_chain(parsed["rounds"], parsed["final_round"]))
    return removed


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m auxseg.tools.set_rounds",
        description="Set the chain of rounds in params.yaml to r1..rN and final_round to rN (comments kept).",
    )
    parser.add_argument("n", type=int, help="number of rounds (>= 1)")
    parser.add_argument("--params", default="params.yaml", help="params file to edit (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        removed = set_rounds(args.n, args.params)
    except ParamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.params}: rounds r1..r{args.n}, final_round r{args.n}")
    if removed:
        print(
            f"note: removed round(s) {', '.join(removed)}; their dvc.lock entries and outputs stay until deleted "
            "(dvc.lock, data/rounds/<r>, models/rounds/<r>.pt, metrics/rounds/<r>.json)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
