"""AuxSegNet training losses (spec §3, ``train_AuxAff.py``) and the shared classification / segmentation terms.

Every logit map is first upsampled bilinearly (align_corners=False) to its target's size (the crop), then:
- ``cls``: multilabel soft margin loss of the image logits (B, K) against the multi-hot labels (B, K);
- ``sal_init``, ``sal_refined``: BCE with logits against the saliency map binarised at 0.5 (> 0.5 is foreground),
  averaged over all pixels (padding included, with target 0);
- ``seg_init``, ``seg_refined``: cross-entropy with ignore index 255, averaged over the non-ignored pixels;
- ``loss`` = w_cls · cls + w_sal · (sal_init + sal_refined) + w_seg · (seg_init + seg_refined).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch
import torch.nn.functional as F

from auxseg import IGNORE_INDEX
from auxseg.models.auxsegnet import AuxSegNetOutput
from auxseg.params import ParamError, field

SALIENCY_BINARY_THRESHOLD = 0.5
"""Saliency targets above this value are foreground (released code: ``sal[sal > 0.5] = 1``)."""


from auxseg.config import LossWeights as AuxSegNetLossWeights  # noqa: E402  (the params dataclass)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) → (B, C, *size), bilinear with align_corners=False; returned unchanged when already that size."""
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, C, h, w), got shape {tuple(logits.shape)}")
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def classification_loss(logits: torch.Tensor, image_labels: torch.Tensor) -> torch.Tensor:
    """Multilabel soft margin loss: logits (B, K), image_labels (B, K) in {0, 1} → scalar, mean over B and K."""
    if logits.dim() != 2 or tuple(image_labels.shape) != tuple(logits.shape):
        raise ValueError(
            f"classification logits {tuple(logits.shape)} and image_labels {tuple(image_labels.shape)} "
            "must both be (B, K)"
        )
    return F.multilabel_soft_margin_loss(logits, image_labels.to(device=logits.device, dtype=logits.dtype))


def segmentation_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy averaged over the non-ignored pixels; 0 (with a zero gradient) when every pixel is ignored.

    logits (B, C, h, w) are upsampled to the target's (H, W) first; target (B, H, W) int in 0..C-1 or ``ignore_index``.
    """
    if target.dim() != 3 or logits.dim() != 4 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"expected logits (B, C, h, w) and target (B, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    target = target.to(device=logits.device, dtype=torch.long)
    logits = upsample_logits(logits, tuple(target.shape[-2:]))
    num_classes = logits.shape[1]
    valid = target != ignore_index
    if bool(((target < 0) | (target >= num_classes))[valid].any()):
        bad = torch.unique(target[valid & ((target < 0) | (target >= num_classes))])[:10].tolist()
        raise ValueError(f"segmentation target holds labels {bad} outside 0..{num_classes - 1} and {ignore_index}")
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / valid.sum().clamp(min=1).to(total.dtype)


def saliency_bce(logits: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """BCE with logits against the saliency target binarised at 0.5, mean over every pixel.

    logits (B, 1, h, w) are upsampled to the target's (H, W); saliency (B, H, W) or (B, 1, H, W) in [0, 1].
    """
    if saliency.dim() == 3:
        saliency = saliency.unsqueeze(1)
    if logits.dim() != 4 or logits.shape[1] != 1 or saliency.dim() != 4 or saliency.shape[:2] != logits.shape[:2]:
        raise ValueError(
            f"expected saliency logits (B, 1, h, w) and target (B, H, W), "
            f"got {tuple(logits.shape)} and {tuple(saliency.shape)}"
        )
    saliency = saliency.to(logits.device)
    logits = upsample_logits(logits, tuple(saliency.shape[-2:]))
    target = (saliency > SALIENCY_BINARY_THRESHOLD).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target)


def _require(batch: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"batch has no '{key}' entry (keys: {sorted(batch)})")
    return batch[key]


def auxsegnet_losses(
    output: AuxSegNetOutput,
    batch: Mapping[str, torch.Tensor],
    weights: AuxSegNetLossWeights = AuxSegNetLossWeights(),
) -> dict[str, torch.Tensor]:
    """The five AuxSegNet loss terms and their weighted total.

    batch: ``image_labels`` (B, K) multi-hot, ``saliency`` (B, S, S) in [0, 1] (binarised here), ``seg`` (B, S, S)
    int labels 0..K or 255. Returns scalars ``loss``, ``cls``, ``sal_init``, ``sal_refined``, ``seg_init``,
    ``seg_refined`` (the unweighted terms plus the weighted total).
    """
    saliency = _require(batch, "saliency")
    segmentation = _require(batch, "seg")
    terms = {
        "cls": classification_loss(output.cls_logits, _require(batch, "image_labels")),
        "sal_init": saliency_bce(output.sal_init, saliency),
        "sal_refined": saliency_bce(output.sal_refined, saliency),
        "seg_init": segmentation_ce(output.seg_init, segmentation),
        "seg_refined": segmentation_ce(output.seg_refined, segmentation),
    }
    total = (
        weights.cls * terms["cls"]
        + weights.sal * (terms["sal_init"] + terms["sal_refined"])
        + weights.seg * (terms["seg_init"] + terms["seg_refined"])
    )
    return {"loss": total, **terms}


__all__ = [
    "AuxSegNetLossWeights",
    "SALIENCY_BINARY_THRESHOLD",
    "auxsegnet_losses",
    "classification_loss",
    "saliency_bce",
    "segmentation_ce",
    "upsample_logits",
]
