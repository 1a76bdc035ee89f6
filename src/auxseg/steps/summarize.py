"""Step ``summarize``: the per-round table (CSV for ``dvc plots``) and a summary of the chain of rounds."""

from __future__ import annotations

from pathlib import Path

from auxseg.config import CamParams, EvaluateParams, PseudoLabelParams, RoundParams, round_chain
from auxseg.io import atomic_write, load_json, save_json

COLUMNS = ("round", "index", "miou", "precision", "recall", "labelled_fraction", "sal_mae", "sal_max_f")


def _cell(value, digits: int = 6) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _read_metrics(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics of {what} not found (run the stage that writes them)")
    return load_json(path, f"metrics of {what}")


def run(rounds: dict[str, RoundParams], final_round: str, cams: CamParams, pseudo_labels: PseudoLabelParams,
        evaluate: EvaluateParams) -> dict:
    """Rows: the CAM seeds, then each round of the chain. Metrics files without ground truth (``"ground_truth":
    "none"``, custom datasets) give no row; the summary then says so instead of carrying numbers."""
    chain = round_chain(rounds, final_round)
    rows = []
    cam_seeds = _read_metrics(Path(cams.metrics_out), "the CAM seeds (eval_cams)")
    if "miou" in cam_seeds:
        rows.append({"round": "cam_seeds", "index": -1, "miou": cam_seeds["miou"], "precision": cam_seeds["precision"],
                     "recall": cam_seeds["recall"], "labelled_fraction": 1.0, "sal_mae": "", "sal_max_f": ""})
    round_rows = []
    for index, name in enumerate(chain):
        metrics = _read_metrics(Path(pseudo_labels.metrics_root) / f"{name}.json", f"round {name} (eval_round)")
        if "miou" in metrics:
            round_rows.append({"round": name, "index": index, **{c: metrics[c] for c in COLUMNS[2:]}})
    rows += round_rows
    # null (an undefined metric, e.g. no labelled pixel) is an empty CSV cell
    lines = [",".join(COLUMNS)] + [",".join(_cell(row[c]) for c in COLUMNS) for row in rows]
    with atomic_write(evaluate.summary_csv, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    summary: dict = {"n_rounds": len(chain) - 1, "final_round": final_round}
    if "miou" in cam_seeds:
        summary["cam_seed_miou"] = cam_seeds["miou"]
    scored = {row["round"] for row in round_rows}
    if chain[0] in scored and chain[-1] in scored:
        first, last = round_rows[0], round_rows[-1]
        gain = None if last["miou"] is None or first["miou"] is None else last["miou"] - first["miou"]
        summary.update(r0_miou=first["miou"], final_round_miou=last["miou"], gain_over_r0=gain)
    if not rows:
        summary["ground_truth"] = "none"
        print("summary: no ground-truth masks on the train split, so neither the CAM seeds nor any round was scored")
    save_json(Path(pseudo_labels.metrics_root).parent / "summary.json", summary)
    for row in rows:
        print(f"{row['round']:>10}: mIoU {_cell(row['miou'], 4)} precision {_cell(row['precision'], 4)} "
              f"recall {_cell(row['recall'], 4)}")
    return summary
