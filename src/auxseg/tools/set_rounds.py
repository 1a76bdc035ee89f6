"""Set the chain of rounds in ``params.yaml`` to r1..rN (each round refining the one before, r1 refining r0).

Usage::

    python -m auxseg.tools.set_rounds N [--params params.yaml]

Only the ``rounds:`` block and the ``final_round:`` value are rewritten, as text: the rest of the file (comments
included) is kept byte for byte. A round that stays keeps its per-round overrides (``loss_weights``, ``epochs``,
...) and, when its ``prev`` was already right, its exact lines; new rounds are ``rK: {prev: r(K-1)}``;
``final_round`` becomes ``rN``. The result is validated (every section, and the chain with
:func:`auxseg.config.round_chain`) and written atomically. N < 1 or an invalid result prints ``error: ...`` and
exits with status 2, leaving the file untouched.

Removing rounds does not remove what they produced: their ``dvc.lock`` entries, ``data/rounds/rK``,
``models/rounds/rK.pt`` and the git-tracked ``metrics/rounds/rK.json`` stay until deleted.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from auxseg.config import INITIAL_ROUND, round_chain
from auxseg.params import ParamError
from auxseg.tools.params_text import flow, write_params_text

_TOP_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w.-]*)\s*:(?P<rest>.*)$")
_ENTRY = re.compile(r"^(?P<indent>[ \t]+)(?P<key>[^\s#:'\"][^:#]*?|'[^']*'|\"[^\"]*\")\s*:(?:\s|$)")
_FINAL = re.compile(r"^final_round\s*:[ \t]*(?P<value>[^#\n]*?)(?P<tail>[ \t]*(#.*)?)$")


def chain_rounds(n: int, existing: dict[str, Any] | None = None) -> dict[str, dict]:
    """The rounds mapping r1..rN; rounds already in ``existing`` keep their other keys (``prev`` first)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParamError(f"number of rounds: must be an integer >= 1, got {n!r}")
    existing = existing or {}
    rounds: dict[str, dict] = {}
    for k in range(1, n + 1):
        name, prev = f"r{k}", (INITIAL_ROUND if k == 1 else f"r{k - 1}")
        old = existing.get(name)
        extra = {key: value for key, value in old.items() if key != "prev"} if isinstance(old, dict) else {}
        rounds[name] = {"prev": prev, **extra}
    return rounds


def _block_span(lines: list[str]) -> tuple[int, int] | None:
    """[start, end) of the top-level ``rounds:`` block (header line included, trailing blank lines excluded)."""
    start = next((i for i, line in enumerate(lines) if (m := _TOP_KEY.match(line)) and m["key"] == "rounds"), None)
    if start is None:
        return None
    end = start + 1  # one past the block's last indented line; blank lines and column-0 comments in between belong to it
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if line.strip() and line[0] not in " \t#":
            break  # the next top-level key
        if line.strip() and line[0] in " \t":
            end = index + 1
    return start, end


def _entries(body: list[str]) -> tuple[str, dict[str, list[str]]] | None:
    """Indent and lines of every entry of a block-style ``rounds:`` body; comment lines go with the next entry."""
    indent = None
    entries: dict[str, list[str]] = {}
    pending: list[str] = []
    current: list[str] | None = None
    for line in body:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            deeper = indent is not None and line.startswith(indent) and line[len(indent):len(indent) + 1] in (" ", "\t")
            if current is not None and deeper and stripped:
                current.append(line)  # a comment indented deeper than the entries: inside the current entry
            else:
                pending.append(line)  # blank lines and comments at entry level go with the next entry
            continue
        match = _ENTRY.match(line)
        this_indent = line[: len(line) - len(line.lstrip())]
        if indent is None:
            if match is None:
                return None
            indent = this_indent
        if this_indent == indent:
            if match is None:
                return None
            key = yaml.safe_load(match["key"])
            current = entries[str(key)] = [*pending, line]
            pending = []
        elif len(this_indent) > len(indent) and this_indent.startswith(indent) and current is not None:
            current.extend([*pending, line])
            pending = []
        else:
            return None
    if indent is None:
        return None
    if pending:  # trailing comments of the block: keep them with the last entry
        current = current if current is not None else []
        current.extend(pending)
    return indent, entries


def _leading_comments(lines: list[str]) -> list[str]:
    """The comment and blank lines before an entry's first line."""
    count = 0
    while count < len(lines) and (not lines[count].strip() or lines[count].lstrip().startswith("#")):
        count += 1
    return lines[:count]


def rewrite(text: str, n: int) -> tuple[str, dict, list[str]]:
    """``text`` with the rounds chain set to r1..rN: (new text, new parsed params, names of removed rounds)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ParamError("params file: expected a mapping of sections")
    existing = data.get("rounds") or {}
    if not isinstance(existing, dict):
        raise ParamError(f"rounds: expected a mapping of rounds, got {existing!r}")
    rounds = chain_rounds(n, existing)
    final = f"r{n}"
    removed = [name for name in existing if name not in rounds]

    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    span = _block_span(lines)
    indent, old_entries = "  ", {}
    if span is not None:
        start, end = span
        header_rest = _TOP_KEY.match(lines[start])["rest"]
        parsed = _entries(lines[start + 1:end]) if header_rest.split("#")[0].strip() == "" else None
        if parsed is not None:
            indent, old_entries = parsed
            header = lines[start]
        else:  # flow style or unusual layout: regenerate the whole block
            comment = re.search(r"\s#.*$", header_rest.rstrip("\n"))
            header = "rounds:" + (comment.group(0) if comment else "") + "\n"
    block = [header if span is not None else "rounds:\n"]
    for name, spec in rounds.items():
        old_lines = old_entries.get(name)
        unchanged = isinstance(existing.get(name), dict) and existing[name].get("prev") == spec["prev"]
        if old_lines is not None and unchanged:
            block.extend(old_lines)
        else:
            block.extend(_leading_comments(old_lines or []))
            block.append(f"{indent}{name}: {flow(spec)}\n")
    if span is not None:
        lines[span[0]:span[1]] = block
        block_end = span[0] + len(block)
    else:
        lines.extend(block)
        block_end = len(lines)

    final_lines = [i for i, line in enumerate(lines) if _FINAL.match(line)]
    if final_lines:
        for i in final_lines:
            match = _FINAL.match(lines[i].rstrip("\n"))
            lines[i] = f"final_round: {final}{match['tail']}\n"
    else:
        lines.insert(block_end, f"final_round: {final}\n")

    new_data = dict(data)
    new_data["rounds"] = rounds
    new_data["final_round"] = final
    return "".join(lines), new_data, removed


def set_rounds(n: int, params_path: str | Path = "params.yaml") -> list[str]:
    """Rewrite the rounds chain of ``params_path`` to r1..rN (validated, atomic); returns the removed rounds."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise ParamError(f"{params_path}: params file not found")
    new_text, expected, removed = rewrite(params_path.read_text(), n)

    def check(parsed: dict[str, Any]) -> None:
        round_chain(parsed["rounds"], parsed["final_round"])

    write_params_text(params_path, new_text, expected, check)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m auxseg.tools.set_rounds",
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
