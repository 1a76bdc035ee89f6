"""Step ``eval_classifier``: multi-label classification quality on the val split (single scale).

Reports mean average precision over classes (mAP, as VOC classification) and the per-image exact-match and
micro-F1 at probability 0.5.
"""

from __future__ import annotations

import numpy as np
import torch

from auxseg.config import ClassifierParams, DatasetParams, RuntimeSection
from auxseg.io import save_metrics
from auxseg.steps.common import open_split
from auxseg.steps.make_cams import load_classifier


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of every positive (scores (N,), targets (N,) in {0,1})."""
    if not np.isfinite(scores).all():
        raise ValueError("average_precision: scores hold NaN or infinity")
    order = np.argsort(-scores, kind="stable")
    hits = targets[order] > 0
    if not hits.any():
        return float("nan")
    precision_at_hit = np.cumsum(hits)[hits] / (np.nonzero(hits)[0] + 1)
    return float(precision_at_hit.mean())


def run(dataset: DatasetParams, classifier: ClassifierParams, runtime: RuntimeSection) -> dict:
    from auxseg.data.training import normalize_image
    from auxseg.engine import resolve_device
    from auxseg.runtime import inference_autocast, inference_model

    split = open_split(dataset, "val")
    device = resolve_device(runtime)
    model, normalization = load_classifier(classifier)
    model = inference_model(model, runtime, device)
    scores, targets = [], []
    with torch.inference_mode(), inference_autocast(runtime, device):
        for image_id in split.ids:
            image = normalize_image(split.load_image(image_id), normalization).unsqueeze(0).to(device)
            scores.append(torch.sigmoid(model(image).float())[0].cpu().numpy())
            targets.append(split.image_labels[image_id])
    scores_array, targets_array = np.stack(scores), np.stack(targets)
    per_class = [average_precision(scores_array[:, c], targets_array[:, c]) for c in range(targets_array.shape[1])]
    predicted = scores_array > 0.5
    true_positive = float((predicted & (targets_array > 0)).sum())
    report = {
        "map": float(np.nanmean(per_class)),
        "ap_per_class": {name: ap for name, ap in zip(split.class_names[1:], per_class)},
        "exact_match": float((predicted == (targets_array > 0)).all(axis=1).mean()),
        "f1": 2 * true_positive / max(float(predicted.sum() + (targets_array > 0).sum()), 1.0),
        "num_images": len(split.ids),
    }
    save_metrics(classifier.metrics_out, report, classifier.details_out, ("ap_per_class", "exact_match", "f1"))
    print(f"classifier on val: mAP {report['map']:.4f}, F1 {report['f1']:.4f}")
    return report
