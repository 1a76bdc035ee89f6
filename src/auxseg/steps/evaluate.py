"""Step ``evaluate``: val mIoU of the final DeepLab and of AuxSegNet's refined segmentation head, with and
without the dense CRF (spec §4.4 final-CRF parameters, run over the predicted classes + background only).

Both networks are evaluated at ``evaluate.scales`` with optional flips (mean of the softmax over scales), through
the code path ``auxseg predict`` uses (:class:`auxseg.inference.ProbabilityFn`, :func:`auxseg.inference.label_maps`).
Only val images with a ground-truth mask are predicted and scored (``images_scored`` of ``images_total``); without
any, ``metrics/final.json`` holds just those counts and ``"ground_truth": "none"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from auxseg.config import DatasetParams, DeepLabParams, EvaluateParams, PseudoLabelParams, RuntimeSection
from auxseg.io import atomic_write, save_metrics
from auxseg.metrics import SegmentationMetric
from auxseg.normalization import Normalization
from auxseg.steps.common import load_auxsegnet, model_normalization, no_ground_truth_note, open_split, scored_split


def multiscale_probs_fn(logits_fn, scales, flip: bool, device, normalization: Normalization, *,
                        softmax_on_grid: bool = False):
    """rgb uint8 (H, W, 3) → mean softmax (C, H, W) of ``logits_fn`` over ``scales`` (and flips), on ``device``
    (a :class:`auxseg.inference.ProbabilityFn`; the image is normalised with ``normalization``, the model file's;
    ``softmax_on_grid``: see :func:`auxseg.inference.multiscale_probs_batch`)."""
    from auxseg.inference import ProbabilityFn

    return ProbabilityFn(logits_fn, scales, flip, device, normalization, softmax_on_grid=softmax_on_grid)


def predict_split(name: str, probs_fn, split, crf_iterations: int, runtime: RuntimeSection) -> list:
    """(prediction, prediction after the dense CRF) of every image of ``split``, in order.

    ``probs_fn(rgb)`` → class probabilities (C, H, W) (e.g. :func:`multiscale_probs_fn`); the label maps come from
    :func:`auxseg.inference.label_maps` (as in ``auxseg predict``), the CRF over the predicted classes + background
    in a process pool (``runtime.crf_workers``).
    """
    from auxseg.inference import forward_then_pool, label_maps, label_task

    def forward(image_id: str) -> dict:
        rgb = split.load_image(image_id)
        with torch.inference_mode():
            probs = probs_fn(rgb)
        return label_task(rgb, probs, crf_iterations)

    return forward_then_pool(split.ids, forward, label_maps, workers=runtime.crf_workers, desc=f"eval {name}")


def score_predictions(split, predictions) -> tuple[SegmentationMetric, SegmentationMetric]:
    """Metrics (without CRF, with CRF) of ``predictions`` [(plain, crf) per image of ``split``] against its masks."""
    plain = SegmentationMetric(split.num_classes, class_names=split.class_names)
    with_crf = SegmentationMetric(split.num_classes, class_names=split.class_names)
    for image_id, (prediction, refined) in zip(split.ids, predictions):
        gt = split.load_mask(image_id)
        plain.update(prediction, gt)
        with_crf.update(refined, gt)
    return plain, with_crf


def report_keys(name: str, plain: SegmentationMetric, with_crf: SegmentationMetric) -> dict:
    """``{name}_miou``, ``{name}_miou_crf``, ``{name}_per_class_iou_crf`` (the key names of metrics/final.json)."""
    plain_result, crf_result = plain.compute(), with_crf.compute()
    print(f"{name}: val mIoU {plain_result['miou']:.4f}, with CRF {crf_result['miou']:.4f}")
    return {
        f"{name}_miou": plain_result["miou"],
        f"{name}_miou_crf": crf_result["miou"],
        f"{name}_per_class_iou_crf": crf_result["per_class_iou"],
    }


def evaluate_network(name: str, logits_fn, normalization: Normalization, split, evaluate: EvaluateParams,
                     runtime: RuntimeSection, device) -> tuple[SegmentationMetric, SegmentationMetric]:
    """Metrics (without CRF, with CRF) of ``logits_fn`` (images normalised with ``normalization``) on every image of
    ``split``, at ``evaluate.scales`` / ``flip`` / ``crf_iterations``; the caller sets the autocast context."""
    probs_fn = multiscale_probs_fn(logits_fn, evaluate.scales, evaluate.flip, device, normalization)
    return score_predictions(split, predict_split(name, probs_fn, split, evaluate.crf_iterations, runtime))


def run(final_round: str, dataset: DatasetParams, deeplab: DeepLabParams, pseudo_labels: PseudoLabelParams,
        evaluate: EvaluateParams, runtime: RuntimeSection) -> dict:
    from auxseg.engine import resolve_device
    from auxseg.runtime import inference_autocast, inference_model
    from auxseg.steps.train_deeplab import load_deeplab

    split, coverage = scored_split(open_split(dataset, "val"))
    report: dict = {"final_round": final_round, "num_images": coverage["images_total"], **coverage}
    confusion = None
    if split is None:
        print(no_ground_truth_note("evaluate", open_split(dataset, "val")))
    else:
        device = resolve_device(runtime)
        deeplab_model, deeplab_meta = load_deeplab(deeplab.model_out)
        deeplab_model = inference_model(deeplab_model, runtime, device)
        auxsegnet_path = Path(pseudo_labels.models_root) / f"{final_round}.pt"
        auxsegnet_model, auxsegnet_meta = load_auxsegnet(auxsegnet_path)
        auxsegnet_model = inference_model(auxsegnet_model, runtime, device)
        for name, logits_fn, normalization in (
            ("deeplab", deeplab_model, model_normalization(deeplab_meta, deeplab.model_out)),
            ("auxsegnet", lambda x: auxsegnet_model(x).seg_refined, model_normalization(auxsegnet_meta, auxsegnet_path)),
        ):
            with inference_autocast(runtime, device):
                plain, with_crf = evaluate_network(name, logits_fn, normalization, split, evaluate, runtime, device)
            report.update(report_keys(name, plain, with_crf))
            if name == "deeplab":
                confusion = with_crf
    save_metrics(evaluate.metrics_out, report, evaluate.details_out, [k for k in report if k.endswith("_per_class_iou_crf")])
    rows = confusion.confusion_table() if confusion is not None else []
    with atomic_write(evaluate.confusion_out, "w") as handle:
        handle.write("actual,predicted,count\n")
        handle.writelines(f"{r['actual']},{r['predicted']},{r['count']}\n" for r in rows if r["predicted"] != "unlabelled")
    return report
