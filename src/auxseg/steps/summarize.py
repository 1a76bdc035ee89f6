"""Step ``summarize``: the per-round table (CSV for ``dvc plots``) and a summary of the chain of rounds."""

from __future__ import annotations

import json
from pathlib import Path

from auxseg.config import CamParams, EvaluateParams, PseudoLabelParams, RoundParams, round_chain
from auxseg.io import atomic_write, save_json

COLUMNS = ("round", "index", "miou", "precision", "recall", "labelled_fraction", "sal_mae", "sal_max_f")


def run(rounds: dict[str, RoundParams], final_round: str, cams: CamParams, pseudo_labels: PseudoLabelParams,
        evaluate: EvaluateParams) -> dict:
    chain = round_chain(rounds, final_round)
    rows = []
    cam_seeds = json.loads(Path(cams.metrics_out).read_text())
    rows.append({"round": "cam_seeds", "index": -1, "miou": cam_seeds["miou"], "precision": cam_seeds["precision"],
                 "recall": cam_seeds["recall"], "labelled_fraction": 1.0, "sal_mae": "", "sal_max_f": ""})
    for index, name in enumerate(chain):
        path = Path(pseudo_labels.metrics_root) / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: metrics of round {name} not found (run eval_round for it)")
        metrics = json.loads(path.read_text())
        rows.append({"round": name, "index": index, **{c: metrics[c] for c in COLUMNS[2:]}})
    lines = [",".join(COLUMNS)] + [",".join(f"{row[c]:.6f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS) for row in rows]
    with atomic_write(evaluate.summary_csv, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    first, last = rows[1], rows[-1]
    summary = {
        "n_rounds": len(chain) - 1,
        "final_round": final_round,
        "cam_seed_miou": cam_seeds["miou"],
        "r0_miou": first["miou"],
        "final_round_miou": last["miou"],
        "gain_over_r0": last["miou"] - first["miou"],
    }
    save_json(Path(pseudo_labels.metrics_root).parent / "summary.json", summary)
    for row in rows:
        print(f"{row['round']:>10}: mIoU {row['miou']:.4f} precision {row['precision']:.4f} recall {row['recall']:.4f}")
    return summary
