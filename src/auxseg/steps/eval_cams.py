"""Step ``eval_cams``: quality of the CAM seeds on the train split.

Seeds = argmax over [constant background score t, CAMs of the image's classes]. The threshold t is swept over
``cams.thresholds``; the best one is reported and marked as oracle-tuned (it was chosen with the ground truth).
Precision and recall follow :class:`auxseg.metrics.SegmentationMetric` (every pixel gets a label here).
Only images with a ground-truth mask are scored (``images_scored`` of ``images_total``); without any, the metrics
file holds just those counts and ``"ground_truth": "none"``.
"""

from __future__ import annotations

from pathlib import Path

from auxseg.config import CamParams, DatasetParams
from auxseg.io import save_metrics
from auxseg.metrics import SegmentationMetric
from auxseg.steps.common import no_ground_truth_note, open_split, scored_split


def run(dataset: DatasetParams, cams: CamParams) -> dict:
    from auxseg.cam import cam_seed_labels, load_cams

    split, coverage = scored_split(open_split(dataset, "train"))
    if split is None:
        save_metrics(cams.metrics_out, coverage, cams.details_out, ("sweep",))  # details: {} (nothing swept)
        print(no_ground_truth_note("CAM seeds", open_split(dataset, "train")))
        return coverage
    metrics = {t: SegmentationMetric(split.num_classes, class_names=split.class_names) for t in cams.thresholds}
    for image_id in split.ids:
        maps, labels = load_cams(Path(cams.out_dir) / f"{image_id}.npz")
        gt = split.load_mask(image_id)
        for threshold, metric in metrics.items():
            metric.update(cam_seed_labels(maps, labels, threshold), gt)
    sweep = []
    for threshold, metric in metrics.items():
        result = metric.compute()
        sweep.append(
            {"threshold": threshold, "miou": result["miou"], "precision": result["precision"], "recall": result["recall"]}
        )
    best = max(sweep, key=lambda row: row["miou"])
    report = {
        "best_threshold_oracle_tuned": best["threshold"],
        "miou": best["miou"],
        "precision": best["precision"],
        "recall": best["recall"],
        "sweep": sweep,
        **coverage,
    }
    save_metrics(cams.metrics_out, report, cams.details_out, ("sweep",))
    print(f"CAM seeds: best (oracle-tuned) threshold {best['threshold']}: mIoU {best['miou']:.4f} "
          f"precision {best['precision']:.4f} recall {best['recall']:.4f}")
    return report
