"""Step ``eval_round``: quality of one round's pseudo labels on the train split, and coloured overlays.

Segmentation labels: precision, recall and mIoU with unlabelled (255) pixels counted as not predicted (as
AuxSegNet's Fig. 6 reads them), pixel accuracy and the labelled fraction. Saliency labels: MAE and max-F against
the class foreground and, on the synthetic set, against all salient objects. Overlays of a fixed set of sample
images go to ``<overlay_root>/<round>/<id>.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from auxseg.config import DatasetParams, PseudoLabelParams
from auxseg.io import atomic_write, load_label_png, save_json
from auxseg.metrics import SegmentationMetric
from auxseg.steps.common import open_split, overlay, select_sample_ids, staged_directory
from auxseg.steps.eval_saliency import saliency_scores


def label_scores(split, seg_dir: Path) -> tuple[dict, SegmentationMetric]:
    metric = SegmentationMetric(split.num_classes, class_names=split.class_names)
    for image_id in split.ids:
        metric.update(load_label_png(seg_dir / f"{image_id}.png"), split.load_mask(image_id))
    return metric.compute(), metric


def run(dataset: DatasetParams, pseudo_labels: PseudoLabelParams, round_name: str) -> dict:
    split = open_split(dataset, "train")
    labels_dir = Path(pseudo_labels.out_root) / round_name
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
    }
    if "vs_salient_objects" in sal:
        report["sal_objects_max_f"] = sal["vs_salient_objects"]["max_f"]
    save_json(Path(pseudo_labels.metrics_root) / f"{round_name}.json", report)
    with staged_directory(Path(pseudo_labels.overlay_root) / round_name) as staging:
        for image_id in select_sample_ids(split.ids, pseudo_labels.num_overlays):
            picture = overlay(split.load_image(image_id), load_label_png(labels_dir / "seg" / f"{image_id}.png"))
            with atomic_write(staging / f"{image_id}.png") as handle:
                Image.fromarray(picture).save(handle, format="PNG")
    print(f"round {round_name}: mIoU {report['miou']:.4f} precision {report['precision']:.4f} "
          f"recall {report['recall']:.4f} labelled {report['labelled_fraction']:.3f} sal max-F {report['sal_max_f']:.4f}")
    return report
