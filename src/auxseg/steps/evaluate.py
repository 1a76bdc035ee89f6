"""Step ``evaluate``: val mIoU of the final DeepLab and of AuxSegNet's refined segmentation head, with and
without the dense CRF (spec §4.4 final-CRF parameters, run over the predicted classes + background only).

Both networks are evaluated at ``evaluate.scales`` with optional flips (mean of the softmax over scales).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from auxseg.config import DatasetParams, DeepLabParams, EvaluateParams, PseudoLabelParams, RuntimeSection
from auxseg.io import atomic_write, save_json
from auxseg.metrics import SegmentationMetric
from auxseg.steps.common import load_auxsegnet, open_split


def crf_predictions(task: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pool worker: ``{"rgb", "probs" (C, H, W), "iterations"}`` → (argmax, argmax after the dense CRF) as uint8."""
    from auxseg.crf import dense_crf_present

    probs = task["probs"].astype(np.float32)
    plain = probs.argmax(0).astype(np.uint8)
    present = sorted(set(np.unique(plain).tolist()) | {0})
    refined = dense_crf_present(task["rgb"], probs, present, iterations=task["iterations"])
    return plain, refined.argmax(0).astype(np.uint8)


def multiscale_probs_fn(logits_fn, scales, flip: bool, device):
    """rgb uint8 (H, W, 3) → mean softmax (C, H, W) of ``logits_fn`` over ``scales`` (and flips), on ``device``."""
    from auxseg.data.training import normalize_image
    from auxseg.inference import multiscale_probs

    def probs_fn(rgb: np.ndarray) -> torch.Tensor:
        return multiscale_probs(logits_fn, normalize_image(rgb).unsqueeze(0).to(device), scales, flip)

    return probs_fn


def predict_split(name: str, probs_fn, split, crf_iterations: int, runtime: RuntimeSection) -> list:
    """(prediction, prediction after the dense CRF) of every image of ``split``, in order.

    ``probs_fn(rgb)`` → class probabilities (C, H, W) (e.g. :func:`multiscale_probs_fn`); the CRF runs over the
    predicted classes + background in a process pool (``runtime.crf_workers``).
    """
    from auxseg.inference import forward_then_pool

    def forward(image_id: str) -> dict:
        rgb = split.load_image(image_id)
        with torch.inference_mode():
            probs = probs_fn(rgb)
        return {"rgb": rgb, "probs": probs.cpu().numpy().astype(np.float16), "iterations": crf_iterations}

    return forward_then_pool(split.ids, forward, crf_predictions, workers=runtime.crf_workers, desc=f"eval {name}")


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


def _evaluate_network(name: str, logits_fn, split, evaluate: EvaluateParams, runtime: RuntimeSection, device):
    probs_fn = multiscale_probs_fn(logits_fn, evaluate.scales, evaluate.flip, device)
    return score_predictions(split, predict_split(name, probs_fn, split, evaluate.crf_iterations, runtime))


def run(final_round: str, dataset: DatasetParams, deeplab: DeepLabParams, pseudo_labels: PseudoLabelParams,
        evaluate: EvaluateParams, runtime: RuntimeSection) -> dict:
    from auxseg.engine import resolve_device
    from auxseg.steps.train_deeplab import load_deeplab

    split = open_split(dataset, "val")
    device = resolve_device(runtime)
    deeplab_model, _ = load_deeplab(deeplab)
    deeplab_model.to(device)
    auxsegnet_model, _ = load_auxsegnet(Path(pseudo_labels.models_root) / f"{final_round}.pt")
    auxsegnet_model.to(device)

    report: dict = {"final_round": final_round, "num_images": len(split.ids)}
    confusion = None
    for name, logits_fn in (
        ("deeplab", deeplab_model),
        ("auxsegnet", lambda x: auxsegnet_model(x).seg_refined),
    ):
        plain, with_crf = _evaluate_network(name, logits_fn, split, evaluate, runtime, device)
        report.update(report_keys(name, plain, with_crf))
        if name == "deeplab":
            confusion = with_crf
    save_json(evaluate.metrics_out, report)
    rows = confusion.confusion_table()
    with atomic_write(evaluate.confusion_out, "w") as handle:
        handle.write("actual,predicted,count\n")
        handle.writelines(f"{r['actual']},{r['predicted']},{r['count']}\n" for r in rows if r["predicted"] != "unlabelled")
    return report
