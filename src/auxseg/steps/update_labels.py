"""Step ``update_labels``: new pseudo labels from a round's AuxSegNet (spec §4.3), per train image at full size.

1. forward once (single scale, eval mode; the image resized by ``pseudo_labels.label_scale``, 1.0 as published) → raw
   CAMs, refined saliency logit and the cross-task affinity A_CT;
2. CAMs: ReLU, each class divided by its max + 1e-5, absent classes zero; propagated ONCE with A_CT (identity in the
   ablation), not renormalised; upsampled bilinearly to (H, W);
3. saliency labels = saliency CRF (one mean-field step) of ½(sigmoid(refined saliency) + the original prior), the
   sigmoid taken on the network's grid and then upsampled bilinearly (as ``gen_pgt.py`` lines 81-82);
4. segmentation labels = fusion of the propagated CAMs and the new saliency labels (CAM > t_cam, saliency > t_sal);
5. confidence = per-pixel max of the propagated CAMs of the image's classes, clipped to [0, 1].
The forward pass runs here; CRF, fusion and writing run in a process pool (``runtime.crf_workers``).
Each phase is its own function (forward_label_outputs, label_inputs_from_output, saliency_labels, fuse_labels,
write_labels), so ``python -m auxseg.tools.bench_label_update`` times the code this step runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from auxseg.config import DatasetParams, PseudoLabelParams, RoundParams, RuntimeSection, SaliencyParams
from auxseg.io import load_gray_png, save_gray_png, save_label_png
from auxseg.steps.common import load_auxsegnet, model_normalization, open_split, staged_directory


def forward_label_outputs(model, image: torch.Tensor, scale: float = 1.0):
    """The model call of the label update: image (1, 3, H, W) normalised → ``AuxSegNetOutput`` with A_CT.

    ``scale`` (> 0, ``pseudo_labels.label_scale``) resizes the image bilinearly to (round(H·scale), round(W·scale))
    before the call (1.0: the image as it is, the published setting). The network's grid, and so the N of the N × N
    affinity each A_CT row is a softmax over, shrinks with it; the caller upsamples the outputs to (H, W).
    """
    from auxseg.cam import resize_by_scale

    return model(resize_by_scale(image, scale), return_affinity=True)


def label_inputs_from_output(output, image_labels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Model output → (propagated normalised CAMs (K, H, W), refined saliency (H, W) in [0, 1]) as float32 numpy.

    CAMs: normalised, propagated once with ``output.affinity`` (skipped when None: the identity), upsampled
    bilinearly to ``size`` = (H, W); saliency: sigmoid of the refined logit on the (h, w) grid, then upsampled
    bilinearly (align_corners=False) to (H, W): the published order (``gen_pgt.py`` lines 81-82, spec §4.3 step 4).
    Every nonlinearity runs on the network's grid, before the upsampling, as in the published code. All of it in
    fp32, also inside a bf16 autocast region (a bf16 output is upcast first).
    """
    from auxseg.affinity import propagate
    from auxseg.cam import normalize_cams
    from auxseg.runtime import full_precision

    height, width = size
    labels = torch.as_tensor(image_labels, dtype=torch.float32, device=output.cam.device)
    with full_precision(output.cam.device):  # fp32 even when the forward ran under bf16 autocast
        cams = normalize_cams(output.cam.float(), labels.unsqueeze(0))
        if output.affinity is not None:
            cams = propagate(output.affinity.float(), cams)
        cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)[0]
        saliency = F.interpolate(
            torch.sigmoid(output.sal_refined.float()), size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
    return cams.cpu().numpy(), saliency.cpu().numpy()


def predict_label_inputs(model, image: torch.Tensor, image_labels: np.ndarray,
                         scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """image (1, 3, H, W) normalised → (propagated normalised CAMs (K, H, W), refined saliency (H, W) in [0, 1]).

    The forward pass runs on the image resized by ``scale`` (:func:`forward_label_outputs`); the outputs are (H, W).
    """
    output = forward_label_outputs(model, image, scale)
    return label_inputs_from_output(output, image_labels, tuple(image.shape[-2:]))


def saliency_labels(task: dict) -> np.ndarray:
    """Saliency label of one image: saliency CRF of ½(refined saliency + prior) (no CRF with 0 iterations), clipped."""
    from auxseg.crf import saliency_crf

    fused = 0.5 * (task["refined_saliency"] + task["prior"])
    saliency = saliency_crf(task["rgb"], fused, iterations=task["crf_iterations"]) if task["crf_iterations"] else fused
    return np.clip(saliency, 0.0, 1.0)


def fuse_labels(task: dict, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segmentation label map, confidence) of one image from its propagated CAMs and saliency label."""
    from auxseg.pseudo_labels import fuse_cam_saliency, label_confidence

    cams = task["cams"]
    seg = fuse_cam_saliency(
        cams, saliency, task["labels"], cam_threshold=task["cam_threshold"], saliency_threshold=task["saliency_threshold"]
    )
    return seg, label_confidence(cams, task["labels"])


def write_labels(task: dict, seg: np.ndarray, saliency: np.ndarray, confidence: np.ndarray) -> None:
    """Write <out_dir>/{seg,sal,conf}/<id>.png."""
    out_dir: Path = task["out_dir"]
    save_label_png(out_dir / "seg" / f"{task['id']}.png", seg)
    save_gray_png(out_dir / "sal" / f"{task['id']}.png", saliency)
    save_gray_png(out_dir / "conf" / f"{task['id']}.png", confidence)


def labels_of_task(task: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segmentation label map, saliency label, confidence) of one image's task (see :func:`label_task`)."""
    saliency = saliency_labels(task)
    seg, confidence = fuse_labels(task, saliency)
    return seg, saliency, confidence


def _finish(task: dict) -> None:
    seg, saliency, confidence = labels_of_task(task)
    write_labels(task, seg, saliency, confidence)


def label_thresholds(pseudo_labels: PseudoLabelParams, round_params: RoundParams) -> tuple[float, float]:
    """(CAM threshold, saliency threshold) of a round: its own values, else the ``pseudo_labels`` defaults."""
    cam_threshold = pseudo_labels.cam_threshold if round_params.cam_threshold is None else round_params.cam_threshold
    saliency_threshold = (
        pseudo_labels.saliency_threshold if round_params.saliency_threshold is None else round_params.saliency_threshold
    )
    return cam_threshold, saliency_threshold


def label_task(split, image_id: str, model, normalization, device, saliency: SaliencyParams,
               pseudo_labels: PseudoLabelParams, thresholds: tuple[float, float], out_dir: Path) -> dict:
    """Forward pass of one train image (in the caller's autocast state; input normalised with the model's
    ``normalization``) → the task the pool finishes (CRF, fusion, writing to ``out_dir``)."""
    from auxseg.data.training import normalize_image

    rgb = split.load_image(image_id)
    labels = split.image_labels[image_id]
    with torch.inference_mode():
        image = normalize_image(rgb, normalization).unsqueeze(0).to(device)
        cams, refined = predict_label_inputs(model, image, labels, pseudo_labels.label_scale)
    return {
        "id": image_id, "rgb": rgb, "labels": labels, "cams": cams, "refined_saliency": refined,
        "prior": load_gray_png(Path(saliency.out_dir) / f"{image_id}.png"), "out_dir": out_dir,
        "cam_threshold": thresholds[0], "saliency_threshold": thresholds[1],
        "crf_iterations": pseudo_labels.saliency_crf_iterations,
    }


def run(dataset: DatasetParams, saliency: SaliencyParams, pseudo_labels: PseudoLabelParams, runtime: RuntimeSection,
        round_name: str, round_params: RoundParams) -> None:
    from auxseg.engine import resolve_device
    from auxseg.inference import forward_then_pool
    from auxseg.runtime import inference_autocast, inference_model

    split = open_split(dataset, "train")
    device = resolve_device(runtime)
    model_path = Path(pseudo_labels.models_root) / f"{round_name}.pt"
    model, meta = load_auxsegnet(model_path)
    normalization = model_normalization(meta, model_path)
    model = inference_model(model, runtime, device)
    thresholds = label_thresholds(pseudo_labels, round_params)
    with staged_directory(Path(pseudo_labels.out_root) / round_name) as staging:

        def forward(image_id: str) -> dict:
            with inference_autocast(runtime, device):
                return label_task(split, image_id, model, normalization, device, saliency, pseudo_labels, thresholds,
                                  staging)

        forward_then_pool(split.ids, forward, _finish, workers=runtime.crf_workers, desc=f"labels {round_name}")
    print(f"round {round_name}: {len(split.ids)} label maps -> {pseudo_labels.out_root}/{round_name}")
