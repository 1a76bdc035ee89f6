"""Inference helpers shared by ``evaluate``, ``infer_single_stage`` and ``auxseg predict``: batched input
normalisation (with the model file's :class:`~auxseg.normalization.Normalization`), multi-scale + flip class probabilities (batched), label maps with an optional dense CRF,
and forward-then-pool processing of images."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from auxseg.normalization import Normalization
from auxseg.parallel import process_map
from auxseg.runtime import full_precision


def normalize_batch(images: Sequence[np.ndarray], normalization: Normalization) -> torch.Tensor:
    """uint8 RGB images (H, W, 3) of one size → float32 (B, 3, H, W), each through
    :func:`auxseg.data.training.normalize_image` with ``normalization`` (the model file's)."""
    from auxseg.data.training import normalize_image

    shapes = {tuple(np.shape(image)) for image in images}
    if len(shapes) != 1:
        raise ValueError(f"expected uint8 RGB images (H, W, 3) of one size, got shapes {sorted(shapes)}")
    return torch.stack([normalize_image(image, normalization) for image in images])


def multiscale_probs(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    *,
    softmax_on_grid: bool = False,
) -> torch.Tensor:
    """Mean softmax over scales (and horizontal flips) of a segmentation network, for one image.

    image (1, 3, H, W) normalised → (C, H, W) probabilities; see :func:`multiscale_probs_batch`.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got {tuple(image.shape)}")
    return multiscale_probs_batch(logits_fn, image, scales, flip, softmax_on_grid=softmax_on_grid)[0]


def multiscale_probs_batch(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    *,
    softmax_on_grid: bool = False,
) -> torch.Tensor:
    """Mean softmax over scales (and horizontal flips) of a segmentation network.

    logits_fn: (B, 3, h, w) → (B, C, h', w') logits; image (B, 3, H, W) normalised → (B, C, H, W) probabilities in
    [0, 1] summing to 1 over C. The order of softmax and bilinear resampling (align_corners=False) follows the
    published code of each method: by default each scale's logits are upsampled to (H, W) and then softmaxed
    (AuxSegNet ``infer_AuxAff.py``, spec §5; DeepLab); with ``softmax_on_grid`` the softmax runs on the network's
    grid and the probabilities are resized (1-Stage ``infer_val.py``: masks resized, then averaged).
    ``logits_fn`` runs in the caller's autocast state (bf16 under :func:`auxseg.runtime.inference_autocast`); the
    resampling, softmax and mean run in fp32 regardless.
    """
    if image.dim() != 4:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    total = None
    count = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = image if size == (height, width) else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        variants = [scaled, scaled.flip(-1)] if flip else [scaled]
        for index, variant in enumerate(variants):
            logits = logits_fn(variant).float()
            with full_precision(logits.device):  # fp32 also when logits_fn ran under bf16 autocast
                if index == 1:
                    logits = logits.flip(-1)
                if softmax_on_grid:
                    probs = F.interpolate(F.softmax(logits, dim=1), size=(height, width), mode="bilinear",
                                          align_corners=False)
                else:
                    probs = F.softmax(F.interpolate(logits, size=(height, width), mode="bilinear",
                                                    align_corners=False), dim=1)
                total = probs if total is None else total + probs
            count += 1
    return total / count


class ProbabilityFn:
    """rgb → class probabilities of a segmentation network: :func:`normalize_batch` with the model's
    ``normalization`` (:class:`auxseg.normalization.Normalization`, the model file's), then :func:`multiscale_probs_batch` at ``scales``
    (and flips) on ``device``. Calling it on one uint8 RGB (H, W, 3) gives (C, H, W); :meth:`batch` on images
    of one size gives (B, C, H, W). The single code path of ``evaluate``, ``infer_single_stage`` and ``predict``;
    ``softmax_on_grid`` as in :func:`multiscale_probs_batch` (True for the single-stage model)."""

    def __init__(self, logits_fn: Callable[[torch.Tensor], torch.Tensor], scales: Sequence[float], flip: bool,
                 device: torch.device | str, normalization: Normalization, *, softmax_on_grid: bool = False):
        self.logits_fn = logits_fn
        self.softmax_on_grid = bool(softmax_on_grid)
        self.scales = tuple(scales)
        self.flip = bool(flip)
        self.device = torch.device(device)
        self.normalization = normalization

    def batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        inputs = normalize_batch(images, self.normalization).to(self.device)
        return multiscale_probs_batch(self.logits_fn, inputs, self.scales, self.flip,
                                      softmax_on_grid=self.softmax_on_grid)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        return self.batch([rgb])[0]


def label_task(rgb: np.ndarray, probs: torch.Tensor, crf_iterations: int) -> dict:
    """The input of :func:`label_maps` for one image: rgb (H, W, 3), probabilities (C, H, W) kept as float16
    (what both the argmax and the CRF read, so that every caller gets the same labels)."""
    return {"rgb": rgb, "probs": probs.float().cpu().numpy().astype(np.float16), "iterations": int(crf_iterations)}


def label_maps(task: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool worker: ``{"rgb", "probs" (C, H, W), "iterations"}`` → (argmax, argmax after the dense CRF) as uint8
    (H, W); the CRF (spec §4.4 final-CRF parameters) runs over the predicted classes + background, and is skipped
    (``None``) when ``iterations`` is 0."""
    probs = task["probs"].astype(np.float32)
    plain = probs.argmax(0).astype(np.uint8)
    if not task["iterations"]:
        return plain, None
    from auxseg.crf import dense_crf_present

    present = sorted(set(np.unique(plain).tolist()) | {0})
    refined = dense_crf_present(task["rgb"], probs, present, iterations=task["iterations"])
    return plain, refined.argmax(0).astype(np.uint8)


def forward_then_pool(
    items: Iterable[Any],
    forward: Callable[[Any], Any],
    worker: Callable[[Any], Any],
    *,
    workers: int,
    chunk_size: int = 32,
    desc: str | None = None,
) -> list:
    """For each chunk of items: run ``forward`` in this process (the network), then ``worker`` on its results in
    a process pool (CRF, fusion, writing). Keeps memory bounded by the chunk; results in input order."""
    from tqdm import tqdm

    items = list(items)
    results: list = []
    with tqdm(total=len(items), desc=desc, mininterval=2.0, disable=desc is None) as progress:
        for start in range(0, len(items), chunk_size):
            chunk = items[start : start + chunk_size]
            prepared = [forward(item) for item in chunk]
            results.extend(process_map(worker, prepared, workers=workers))
            progress.update(len(chunk))
    return results
