"""Inference helpers: multi-scale + flip class probabilities, and forward-then-pool processing of images."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from auxseg.parallel import process_map


def multiscale_probs(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Mean softmax over scales (and horizontal flips) of a segmentation network.

    logits_fn: (1, 3, h, w) → (1, C, h', w') logits; image (1, 3, H, W) normalised → (C, H, W) probabilities in
    [0, 1] summing to 1 over C. Each scale's logits are upsampled (bilinear) to (H, W) before the softmax.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    total = None
    count = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = image if size == (height, width) else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        variants = [scaled, scaled.flip(-1)] if flip else [scaled]
        for index, variant in enumerate(variants):
            logits = logits_fn(variant).float()
            if index == 1:
                logits = logits.flip(-1)
            probs = F.softmax(F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False), dim=1)
            total = probs if total is None else total + probs
            count += 1
    return (total / count)[0]


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
