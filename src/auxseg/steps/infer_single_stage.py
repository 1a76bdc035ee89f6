"""Step ``infer_single_stage``: val predictions and train pseudo labels of the single-stage model (the heavy part).

Writes, under ``single_stage.out_dir`` (replaced as a whole, see :func:`~auxseg.steps.common.staged_directory`):

- ``val/plain/<id>.png``, ``val/crf/<id>.png``: val predictions without / with the dense CRF. The class
  probabilities are the mean over ``inference.scales`` (and flips) of the softmax of the segmentation logits taken
  on the network's stride-4 grid and then resized bilinearly, the order of 1-Stage's ``infer_val.py`` (``evaluate``
  upsamples DeepLab's logits before the softmax, as AuxSegNet's released code does; same CRF,
  :func:`auxseg.steps.evaluate.predict_split`); then, as in 1-Stage,
  classes whose sigmoid class score (scale 1) is below ``inference.min_class_score`` are dropped and the background
  probability is raised to ``inference.bg_power`` (renormalised; both off by default);
- ``train/seg/<id>.png``, ``train/conf/<id>.png``: pseudo labels of every train image and their confidence, made as
  in training (:func:`auxseg.steps.train_single_stage.refine_and_cut`): the multi-scale probabilities at the stride-4
  grid, PAMR with the image, absent classes zeroed (the image-level labels are known on train), cut per class;
  confidence = per-pixel max of the refined masks. The same layout as a round's ``seg``/``conf``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from auxseg.config import DatasetParams, RuntimeSection, SingleStageParams
from auxseg.io import save_gray_png, save_label_png
from auxseg.steps.common import open_split, staged_directory


def adjust_probs(probs: torch.Tensor, class_scores: torch.Tensor | None, min_class_score: float,
                 bg_power: float) -> torch.Tensor:
    """1-Stage's test-time adjustments of class probabilities (C, H, W) (C = K+1, channel 0 background).

    Foreground classes whose score in ``class_scores`` (K,) (sigmoid of the class logits) is below ``min_class_score``
    get probability 0; the background probability is raised to ``bg_power``; the result is renormalised to sum 1.
    """
    if min_class_score <= 0 and bg_power == 1.0:
        return probs
    probs = probs.clone()
    if min_class_score > 0 and class_scores is not None:
        dropped = torch.cat((class_scores.new_zeros(1, dtype=torch.bool), class_scores < min_class_score))
        probs[dropped] = 0.0
    if bg_power != 1.0:
        probs[0] = probs[0].clamp(min=0.0).pow(bg_power)
    return probs / probs.sum(dim=0, keepdim=True).clamp(min=1e-12)


def _write_train_labels(task: dict) -> None:
    save_label_png(task["out_dir"] / "seg" / f"{task['id']}.png", task["seg"])
    save_gray_png(task["out_dir"] / "conf" / f"{task['id']}.png", task["conf"])


def run(dataset: DatasetParams, single_stage: SingleStageParams, runtime: RuntimeSection) -> None:
    from auxseg.data.training import normalize_image
    from auxseg.engine import resolve_device
    from auxseg.inference import forward_then_pool
    from auxseg.losses import present_classes
    from auxseg.runtime import inference_autocast, inference_model
    from auxseg.steps.evaluate import multiscale_probs_fn, predict_split
    from auxseg.steps.common import model_normalization
    from auxseg.steps.train_single_stage import load_single_stage, refine_and_cut

    params, inference = single_stage, single_stage.inference
    device = resolve_device(runtime)
    model, meta = load_single_stage(params.model_out)
    normalization = model_normalization(meta, params.model_out)
    model = inference_model(model, runtime, device)
    # 1-Stage order: softmax on the stride-4 grid, then the probabilities are resized (infer_val.py)
    seg_probs = multiscale_probs_fn(lambda x: model(x).seg_logits, inference.scales, inference.flip, device,
                                    normalization, softmax_on_grid=True)

    def val_probs(rgb: np.ndarray) -> torch.Tensor:
        probs = seg_probs(rgb)
        scores = None
        if inference.min_class_score > 0:
            scores = torch.sigmoid(model(normalize_image(rgb, normalization).unsqueeze(0).to(device)).cls_logits[0].float())
        return adjust_probs(probs, scores, inference.min_class_score, inference.bg_power)

    with staged_directory(params.out_dir) as staging, inference_autocast(runtime, device):
        val = open_split(dataset, "val")
        predictions = predict_split("single-stage val", val_probs, val, inference.crf_iterations, runtime)
        for image_id, (plain, refined) in zip(val.ids, predictions):
            save_label_png(staging / "val" / "plain" / f"{image_id}.png", plain)
            save_label_png(staging / "val" / "crf" / f"{image_id}.png", refined)

        train = open_split(dataset, "train")

        def forward(image_id: str) -> dict:
            rgb = train.load_image(image_id)
            height, width = rgb.shape[:2]
            image = normalize_image(rgb, normalization).unsqueeze(0).to(device)
            labels = torch.as_tensor(np.asarray(train.image_labels[image_id]), dtype=torch.float32, device=device)[None]
            with torch.inference_mode():
                probs = seg_probs(rgb)[None]
                grid = (math.ceil(height / 4), math.ceil(width / 4))
                masks = F.interpolate(probs, size=grid, mode="bilinear", align_corners=False)
                refined, seg, _ = refine_and_cut(image, masks, labels, params.pamr, params.pseudo_labels, (height, width))
                present = present_classes(labels)[0]
                full = F.interpolate(refined, size=(height, width), mode="bilinear", align_corners=False)[0]
                confidence = full[present].amax(dim=0).clamp(0.0, 1.0)
            return {"id": image_id, "out_dir": staging / "train", "seg": seg[0].cpu().numpy().astype(np.uint8),
                    "conf": confidence.cpu().numpy()}

        forward_then_pool(train.ids, forward, _write_train_labels, workers=runtime.crf_workers,
                          desc="single-stage train labels")
    print(f"single-stage: {len(val.ids)} val predictions and {len(train.ids)} train label maps -> {params.out_dir}")


__all__ = ["adjust_probs", "run"]
