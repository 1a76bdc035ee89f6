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
from auxseg.steps.common import load_auxsegnet, load_model_file, open_split


def _crf_predictions(task: dict) -> tuple[np.ndarray, np.ndarray]:
    from auxseg.crf import dense_crf_present

    probs = task["probs"].astype(np.float32)
    plain = probs.argmax(0).astype(np.uint8)
    present = sorted(set(np.unique(plain).tolist()) | {0})
    refined = dense_crf_present(task["rgb"], probs, present, iterations=task["iterations"])
    return plain, refined.argmax(0).astype(np.uint8)


def _evaluate_network(name: str, logits_fn, split, evaluate: EvaluateParams, runtime: RuntimeSection, device):
    from auxseg.data.training import normalize_image
    from auxseg.inference import forward_then_pool, multiscale_probs

    def forward(image_id: str) -> dict:
        rgb = split.load_image(image_id)
        with torch.inference_mode():
            probs = multiscale_probs(logits_fn, normalize_image(rgb).unsqueeze(0).to(device), evaluate.scales, evaluate.flip)
        return {"rgb": rgb, "probs": probs.cpu().numpy().astype(np.float16), "iterations": evaluate.crf_iterations}

    predictions = forward_then_pool(split.ids, forward, _crf_predictions, workers=runtime.crf_workers, desc=f"eval {name}")
    plain = SegmentationMetric(split.num_classes, class_names=split.class_names)
    with_crf = SegmentationMetric(split.num_classes, class_names=split.class_names)
    for image_id, (prediction, refined) in zip(split.ids, predictions):
        gt = split.load_mask(image_id)
        plain.update(prediction, gt)
        with_crf.update(refined, gt)
    return plain, with_crf


def run(final_round: str, dataset: DatasetParams, deeplab: DeepLabParams, pseudo_labels: PseudoLabelParams,
        evaluate: EvaluateParams, runtime: RuntimeSection) -> dict:
    from auxseg.engine import resolve_device
    from auxseg.steps.train_deeplab import build_deeplab

    split = open_split(dataset, "val")
    device = resolve_device(runtime)
    payload = load_model_file(deeplab.model_out)
    deeplab_model = build_deeplab(deeplab, int(payload["meta"]["num_classes"]))
    deeplab_model.load_state_dict(payload["state_dict"], strict=True)
    deeplab_model.eval().to(device)
    auxsegnet_model, _ = load_auxsegnet(Path(pseudo_labels.models_root) / f"{final_round}.pt")
    auxsegnet_model.to(device)

    report: dict = {"final_round": final_round, "num_images": len(split.ids)}
    confusion = None
    for name, logits_fn in (
        ("deeplab", deeplab_model),
        ("auxsegnet", lambda x: auxsegnet_model(x).seg_refined),
    ):
        plain, with_crf = _evaluate_network(name, logits_fn, split, evaluate, runtime, device)
        plain_result, crf_result = plain.compute(), with_crf.compute()
        report[f"{name}_miou"] = plain_result["miou"]
        report[f"{name}_miou_crf"] = crf_result["miou"]
        report[f"{name}_per_class_iou_crf"] = crf_result["per_class_iou"]
        if name == "deeplab":
            confusion = with_crf
        print(f"{name}: val mIoU {plain_result['miou']:.4f}, with CRF {crf_result['miou']:.4f}")
    save_json(evaluate.metrics_out, report)
    rows = confusion.confusion_table()
    with atomic_write(evaluate.confusion_out, "w") as handle:
        handle.write("actual,predicted,count\n")
        handle.writelines(f"{r['actual']},{r['predicted']},{r['count']}\n" for r in rows if r["predicted"] != "unlabelled")
    return report
