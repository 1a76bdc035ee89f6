"""Step ``eval_single_stage``: metrics of the single-stage model from the files ``infer_single_stage`` wrote (cheap).

Keys parallel to the multi-stage metrics, so that ``dvc exp show`` lines them up:
- val, as ``metrics/final.json``: ``single_stage_miou``, ``single_stage_miou_crf``, ``num_images``;
- train pseudo labels, as ``metrics/rounds/<round>.json`` (255 counts as not predicted) with a ``pseudo_`` prefix:
  ``pseudo_miou``, ``pseudo_precision``, ``pseudo_recall``, ``pseudo_labelled_fraction``, and ``num_train_images``.
Per-class IoU (``single_stage_per_class_iou_crf``, ``pseudo_per_class_iou``) and ``pseudo_pixel_accuracy`` go to
``single_stage.details_out`` (versioned, not a DVC metric).

Only images with a ground-truth mask are scored: ``ground_truth``, ``images_scored``, ``images_total`` for val and
the same with a ``pseudo_`` prefix for train; a split without any mask gets those counts and no scores.
"""

from __future__ import annotations

from pathlib import Path

from auxseg.config import DatasetParams, SingleStageParams
from auxseg.io import load_label_png, save_metrics
from auxseg.steps.common import no_ground_truth_note, open_split, scored_split
from auxseg.steps.eval_round import label_scores
from auxseg.steps.evaluate import report_keys, score_predictions

PSEUDO_KEYS = ("miou", "precision", "recall", "pixel_accuracy", "labelled_fraction", "per_class_iou")


def run(dataset: DatasetParams, single_stage: SingleStageParams) -> dict:
    out_dir = Path(single_stage.out_dir)
    val, coverage = scored_split(open_split(dataset, "val"))
    report: dict = {"num_images": coverage["images_total"], **coverage}
    if val is None:
        print(no_ground_truth_note("single-stage val predictions", open_split(dataset, "val")))
    else:
        predictions = [
            (load_label_png(out_dir / "val" / "plain" / f"{i}.png"), load_label_png(out_dir / "val" / "crf" / f"{i}.png"))
            for i in val.ids
        ]
        report.update(report_keys("single_stage", *score_predictions(val, predictions)))
    train, train_coverage = scored_split(open_split(dataset, "train"))
    report.update({f"pseudo_{key}": value for key, value in train_coverage.items()})
    report["num_train_images"] = train_coverage["images_total"]
    if train is None:
        print(no_ground_truth_note("single-stage train pseudo labels", open_split(dataset, "train")))
    else:
        seg, _ = label_scores(train, out_dir / "train" / "seg")
        report.update({f"pseudo_{key}": seg[key] for key in PSEUDO_KEYS})
        print(f"single-stage train pseudo labels: mIoU {seg['miou']:.4f} precision {seg['precision']:.4f} "
              f"recall {seg['recall']:.4f} labelled {seg['labelled_fraction']:.3f}")
    save_metrics(single_stage.metrics_out, report, single_stage.details_out,
                 ("single_stage_per_class_iou_crf", "pseudo_per_class_iou", "pseudo_pixel_accuracy"))
    return report
