"""Step ``eval_single_stage``: metrics of the single-stage model from the files ``infer_single_stage`` wrote (cheap).

Keys parallel to the multi-stage metrics, so that ``dvc exp show`` lines them up:
- val, as ``metrics/final.json``: ``single_stage_miou``, ``single_stage_miou_crf``, ``single_stage_per_class_iou_crf``,
  ``num_images``;
- train pseudo labels, as ``metrics/rounds/<round>.json`` (255 counts as not predicted) with a ``pseudo_`` prefix:
  ``pseudo_miou``, ``pseudo_precision``, ``pseudo_recall``, ``pseudo_pixel_accuracy``, ``pseudo_labelled_fraction``,
  ``pseudo_per_class_iou``, and ``num_train_images``.
"""

from __future__ import annotations

from pathlib import Path

from auxseg.config import DatasetParams, SingleStageParams
from auxseg.io import load_label_png, save_json
from auxseg.steps.common import open_split
from auxseg.steps.eval_round import label_scores
from auxseg.steps.evaluate import report_keys, score_predictions

PSEUDO_KEYS = ("miou", "precision", "recall", "pixel_accuracy", "labelled_fraction", "per_class_iou")


def run(dataset: DatasetParams, single_stage: SingleStageParams) -> dict:
    out_dir = Path(single_stage.out_dir)
    val = open_split(dataset, "val")
    predictions = [
        (load_label_png(out_dir / "val" / "plain" / f"{i}.png"), load_label_png(out_dir / "val" / "crf" / f"{i}.png"))
        for i in val.ids
    ]
    report: dict = {"num_images": len(val.ids)}
    report.update(report_keys("single_stage", *score_predictions(val, predictions)))
    train = open_split(dataset, "train")
    seg, _ = label_scores(train, out_dir / "train" / "seg")
    report.update({f"pseudo_{key}": seg[key] for key in PSEUDO_KEYS})
    report["num_train_images"] = len(train.ids)
    save_json(single_stage.metrics_out, report)
    print(f"single-stage train pseudo labels: mIoU {seg['miou']:.4f} precision {seg['precision']:.4f} "
          f"recall {seg['recall']:.4f} labelled {seg['labelled_fraction']:.3f}")
    return report
