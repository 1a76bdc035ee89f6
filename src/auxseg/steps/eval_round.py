"""Step ``eval_round``: quality of one round's pseudo labels on the train split.

Segmentation labels: precision, recall and mIoU with unlabelled (255) pixels counted as not predicted (as
AuxSegNet's Fig. 6 reads them) and the labelled fraction. Saliency labels: MAE and max-F against the class
foreground and, on the synthetic set, against all salient objects. These headline figures go to
``<metrics_root>/<round>.json`` (a DVC metric); per-class IoU and pixel accuracy to ``<details_root>/<round>.json``.
The pictures of sample images are the ``samples`` step's. Only images with a ground-truth mask are scored (``images_scored``
of ``images_total``); without any, the metrics file holds the round, those counts and ``"ground_truth": "none"``.
"""

from __future__ import annotations

from pathlib import Path

from auxseg.config import DatasetParams, PseudoLabelParams
from auxseg.io import load_label_png, save_metrics
from auxseg.metrics import SegmentationMetric
from auxseg.steps.common import no_ground_truth_note, open_split, scored_split
from auxseg.steps.eval_saliency import saliency_scores


def label_scores(split, seg_dir: Path) -> tuple[dict, SegmentationMetric]:
    metric = SegmentationMetric(split.num_classes, class_names=split.class_names)
    for image_id in split.ids:
        metric.update(load_label_png(seg_dir / f"{image_id}.png"), split.load_mask(image_id))
    return metric.compute(), metric


def run(dataset: DatasetParams, pseudo_labels: PseudoLabelParams, round_name: str) -> dict:
    split = open_split(dataset, "train")
    labels_dir = Path(pseudo_labels.out_root) / round_name
    scored, coverage = scored_split(split)
    report = _scores(scored, labels_dir, round_name, coverage)
    save_metrics(Path(pseudo_labels.metrics_root) / f"{round_name}.json", report,
                 Path(pseudo_labels.details_root) / f"{round_name}.json", ("pixel_accuracy", "per_class_iou"))
    if scored is None:
        print(no_ground_truth_note(f"round {round_name}", split))
    else:
        print(f"round {round_name}: mIoU {report['miou']:.4f} precision {report['precision']:.4f} "
              f"recall {report['recall']:.4f} labelled {report['labelled_fraction']:.3f} "
              f"sal max-F {report['sal_max_f']:.4f} ({coverage['images_scored']} images scored)")
    return report


def _scores(split, labels_dir: Path, round_name: str, coverage: dict) -> dict:
    """The metrics of one round's labels over ``split`` (the images with masks; None: just the coverage)."""
    if split is None:
        return {"round": round_name, **coverage}
    seg, _ = label_scores(split, labels_dir / "seg")
    sal = saliency_scores(split, labels_dir / "sal")
    report = {
        "round": round_name,
        "miou": seg["miou"],
        "precision": seg["precision"],
        "recall": seg["recall"],
        "pixel_accuracy": seg["pixel_accuracy"],
        "labelled_fraction": seg["labelled_fraction"],
        "sal_mae": sal["vs_class_foreground"]["mae"],
        "sal_max_f": sal["vs_class_foreground"]["max_f"],
        "per_class_iou": seg["per_class_iou"],
        **coverage,
    }
    if "vs_salient_objects" in sal:
        report["sal_objects_max_f"] = sal["vs_salient_objects"]["max_f"]
    return report
