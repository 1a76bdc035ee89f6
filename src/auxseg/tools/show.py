"""``auxseg show``: print a run's metrics (the files the pipeline's eval stages write) as small tables.

Targets: ``rK`` (round K's pseudo labels, ``<pseudo_labels.metrics_root>/rK.json``), ``final`` (``evaluate``'s
val mIoU, ``evaluate.metrics_out``), ``cams`` (CAM seeds), ``classifier`` (classification mAP), ``saliency``
(the saliency prior), ``single-stage`` and ``summary``. The file locations come from ``params.yaml`` (``--params``).
Scalars are printed as ``key value`` rows; per-class values (keys holding ``per_class``) as one table with a row per
class; lists of records (the CAM threshold sweep) as a table with a row per record.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Sequence

TARGETS = ("rK", "final", "cams", "classifier", "saliency", "single-stage", "summary")
_ROUND = re.compile(r"^r\d+$")


def metrics_path(target: str, params_file: str | Path = "params.yaml") -> Path:
    """The metrics file of ``target`` (one of :data:`TARGETS`, ``rK`` being r0, r1, ...) under ``params_file``.

    ValueError for an unknown target; :class:`auxseg.params.ParamError` for a bad params file.
    """
    from auxseg.params import load_stage_params

    sections = ("pseudo_labels", "evaluate", "cams", "classifier", "saliency", "single_stage")
    params = load_stage_params(list(sections), params_file)
    if _ROUND.match(target):
        return Path(params["pseudo_labels"].metrics_root) / f"{target}.json"
    paths = {
        "final": params["evaluate"].metrics_out,
        "cams": params["cams"].metrics_out,
        "classifier": params["classifier"].metrics_out,
        "saliency": params["saliency"].metrics_out,
        "single-stage": params["single_stage"].metrics_out,
        "summary": Path(params["pseudo_labels"].metrics_root).parent / "summary.json",
    }
    if target not in paths:
        raise ValueError(f"unknown target {target!r} (expected rK such as r1, or one of {', '.join(TARGETS[1:])})")
    return Path(paths[target])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [list(map(str, header))] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _flatten(data: dict, prefix: str = "") -> tuple[dict, dict, dict]:
    """(scalars, per-class dicts, record lists) of a metrics dict; nested groups become dotted scalar keys."""
    scalars: dict = {}
    per_class: dict = {}
    records: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "per_class" in key:
            per_class[name] = value
        elif isinstance(value, dict):
            inner = _flatten(value, f"{name}.")
            scalars.update(inner[0])
            per_class.update(inner[1])
            records.update(inner[2])
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            records[name] = value
        else:
            scalars[name] = value
    return scalars, per_class, records


def format_metrics(data: dict) -> str:
    """The tables of one metrics dict (see the module docstring)."""
    scalars, per_class, records = _flatten(data)
    lines = _table(("metric", "value"), sorted(scalars.items()))
    if per_class:
        classes = list(dict.fromkeys(name for table in per_class.values() for name in table))
        lines += [""] + _table(("class", *per_class), [(name, *(t.get(name) for t in per_class.values())) for name in classes])
    for name, rows in records.items():
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines += ["", f"{name}:"] + _table(columns, [[row.get(c) for c in columns] for row in rows])
    return "\n".join(lines)


def run(target: str, params_file: str | Path = "params.yaml") -> str:
    """The formatted metrics of ``target``; FileNotFoundError naming the file when the stage has not run."""
    path = metrics_path(target, params_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics yet for '{target}' (run the pipeline: dvc repro)")
    from auxseg.io import load_json

    data = load_json(path, "metrics file")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics")
    return f"{path}\n" + format_metrics(data)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help=f"what to show: {', '.join(TARGETS)} (rK: a round, e.g. r0, r2)")
    parser.add_argument("--params", default="params.yaml", help="params file naming the metrics files (default: params.yaml)")


def run_from_args(args: argparse.Namespace) -> int:
    from auxseg.params import ParamError

    try:
        print(run(args.target, args.params))
    except (ParamError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "auxseg show", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
