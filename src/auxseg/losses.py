"""AuxSegNet training losses (spec §3, ``train_AuxAff.py``) and the shared classification / segmentation terms.

Every logit map is first upsampled bilinearly (align_corners=False) to its target's size (the crop), then:
- ``cls``: multilabel soft margin loss of the image logits (B, K) against the multi-hot labels (B, K);
- ``sal_init``, ``sal_refined``: BCE with logits against the saliency map binarised at 0.5 (> 0.5 is foreground),
  averaged over all pixels (padding included, with target 0);
- ``seg_init``, ``seg_refined``: cross-entropy with ignore index 255, averaged over the non-ignored pixels;
- ``loss`` = w_cls · cls + w_sal · (sal_init + sal_refined) + w_seg · (seg_init + seg_refined).
Every loss is computed in fp32, also under bf16 autocast (``runtime.amp_bf16`` / ``cpu_bf16_train``): the logits
are upcast before the upsampling, and the AA / LR similarity products switch autocast off.

It also holds the two AALR losses of Zhang et al. (ACM MM 2021), see ``docs/aa-lr-losses-spec.md``:
- ``adaptive_affinity_loss``: the adaptive affinity (AA) loss, exact form of the released code (spec §2);
- ``ProjectionHead``, ``class_centres``, ``reassign_labels``, ``label_reassign_loss``: the label reassign (LR) loss,
  RECONSTRUCTED (spec §3; the paper's formula was not retrieved).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from auxseg import IGNORE_INDEX
from auxseg.config import LossWeights as AuxSegNetLossWeights  # the params dataclass
from auxseg.models.auxsegnet import AuxSegNetOutput
from auxseg.models.heads import ProjectionHead

SALIENCY_BINARY_THRESHOLD = 0.5
"""Saliency targets above this value are foreground (released code: ``sal[sal > 0.5] = 1``)."""


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) → (B, C, *size), bilinear with align_corners=False; returned unchanged when already that size."""
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, C, h, w), got shape {tuple(logits.shape)}")
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def present_classes(image_labels: torch.Tensor) -> torch.Tensor:
    """(B, K) multi-hot foreground labels → (B, K+1) bool: background (always) and the image's classes (> 0.5)."""
    foreground = image_labels > 0.5
    return torch.cat((torch.ones_like(foreground[:, :1]), foreground), dim=1)


def classification_loss(logits: torch.Tensor, image_labels: torch.Tensor) -> torch.Tensor:
    """Multilabel soft margin loss: logits (B, K), image_labels (B, K) in {0, 1} → scalar, mean over B and K."""
    if logits.dim() != 2 or tuple(image_labels.shape) != tuple(logits.shape):
        raise ValueError(
            f"classification logits {tuple(logits.shape)} and image_labels {tuple(image_labels.shape)} "
            "must both be (B, K)"
        )
    logits = logits.float()  # fp32 also under bf16 autocast
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
    logits = upsample_logits(logits.float(), tuple(target.shape[-2:]))  # upsampled in fp32 also under bf16 autocast
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
    logits = upsample_logits(logits.float(), tuple(saliency.shape[-2:]))  # fp32 also under bf16 autocast
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


# --------------------------------------------------------------------------------------------------------------------
# Adaptive affinity (AA) loss — spec §2 (exact form of ``affinity_loss_confidence`` in godlin-xdu/AALEPL)

AA_PROB_CLAMP = 1e-4
"""Probabilities p and their complements 1 − p are clamped to [1e-4, 1] before the logs (spec §2, §6.1)."""

AA_NEGATIVE_WEIGHT = 2.0
"""Weight of the different-label (push) group (spec §2: ``loss = not_edge_loss + 2 * edge_loss``)."""

_EIGHT_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _binary_kl(neighbour: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Per-class binary KL(q ‖ p) summed over classes: (B, C, h, w) twice → (B, h, w).

    q = neighbour, p = centre; q, p, 1 − q and 1 − p are each clamped to [1e-4, 1] (as the released code does).
    """
    q = neighbour.clamp(AA_PROB_CLAMP, 1.0)
    p = centre.clamp(AA_PROB_CLAMP, 1.0)
    not_q = (1.0 - neighbour).clamp(AA_PROB_CLAMP, 1.0)
    not_p = (1.0 - centre).clamp(AA_PROB_CLAMP, 1.0)
    return (q * (q.log() - p.log()) + not_q * (not_q.log() - not_p.log())).sum(dim=1)


def _check_dense_labels(labels: torch.Tensor, num_classes: int, ignore_index: int, name: str) -> None:
    valid = labels != ignore_index
    out_of_range = valid & ((labels < 0) | (labels >= num_classes))
    if bool(out_of_range.any()):
        bad = torch.unique(labels[out_of_range])[:10].tolist()
        raise ValueError(f"{name} hold labels {bad} outside 0..{num_classes - 1} and {ignore_index}")


def adaptive_affinity_loss(
    probs: torch.Tensor,
    labels: torch.Tensor,
    confidence: torch.Tensor,
    dilation: int = 4,
    margin: float = 3.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Adaptive affinity (AA) loss of AALR (spec §2) → scalar fp32 tensor, differentiable w.r.t. ``probs``.

    probs (B, C, H, W) softmax probabilities; labels (B, H, W) int in 0..C-1 (0 = background) or ``ignore_index``;
    confidence (B, H, W) in [0, 1] (e.g. the max class score of the soft map the pseudo label came from).

    Every pixel i is paired with its 8 neighbours j = i + d·(δy, δx), δ ∈ {-1, 0, 1}² \\ {0} (ordered pairs, so
    each unordered pair appears once in each direction); pairs with j outside the image or either label ignored
    are dropped. With D_ij = Σ_c [q_c log(q_c/p_c) + (1-q_c) log((1-q_c)/(1-p_c))], q = P_j, p = P_i, and
    w_ij = max(c_i, c_j):

        L = mean_{bg+} w·D + mean_{obj+} w·D + 2 · mean_{-} max(0, m·w − D)

    bg+: Y_i = Y_j = 0; obj+: Y_i = Y_j ≠ 0; −: Y_i ≠ Y_j. Means pool all pairs of the batch; an empty group
    contributes 0 (masked sum / max(count, 1)). Computed in fp32 even under autocast.
    """
    if probs.dim() != 4:
        raise ValueError(f"probs must be (B, C, H, W), got shape {tuple(probs.shape)}")
    batch, num_classes, height, width = probs.shape
    if tuple(labels.shape) != (batch, height, width):
        raise ValueError(f"labels {tuple(labels.shape)} must be (B, H, W) = {(batch, height, width)} to match probs")
    if tuple(confidence.shape) != (batch, height, width):
        raise ValueError(
            f"confidence {tuple(confidence.shape)} must be (B, H, W) = {(batch, height, width)} to match probs"
        )
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an integer >= 1, got {dilation!r}")
    if dilation >= max(height, width):
        raise ValueError(f"dilation {dilation} leaves no neighbour pair inside a {height}x{width} image")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    labels = labels.to(device=probs.device, dtype=torch.long)
    _check_dense_labels(labels, num_classes, ignore_index, "AA labels")

    with torch.autocast(device_type=probs.device.type, enabled=False):
        prob = probs.float()
        conf = confidence.to(device=probs.device, dtype=torch.float32)
        valid = labels != ignore_index
        sums = {group: prob.new_zeros(()) for group in ("bg", "obj", "neg")}
        counts = {group: torch.zeros((), dtype=torch.long, device=probs.device) for group in ("bg", "obj", "neg")}
        for dir_y, dir_x in _EIGHT_DIRECTIONS:
            off_y, off_x = dir_y * dilation, dir_x * dilation
            if abs(off_y) >= height or abs(off_x) >= width:
                continue  # this offset has no pair inside the image (a shape check, not a count check)
            # centre pixels whose neighbour (y + off_y, x + off_x) lies inside the image, and those neighbours
            centre = (slice(max(0, -off_y), height - max(0, off_y)), slice(max(0, -off_x), width - max(0, off_x)))
            neighbour = (slice(max(0, off_y), height + min(0, off_y)), slice(max(0, off_x), width + min(0, off_x)))
            divergence = _binary_kl(prob[:, :, neighbour[0], neighbour[1]], prob[:, :, centre[0], centre[1]])
            weight = torch.maximum(conf[:, centre[0], centre[1]], conf[:, neighbour[0], neighbour[1]])
            label_c, label_n = labels[:, centre[0], centre[1]], labels[:, neighbour[0], neighbour[1]]
            pair_valid = valid[:, centre[0], centre[1]] & valid[:, neighbour[0], neighbour[1]]
            same = pair_valid & (label_c == label_n)
            masks = {
                "bg": same & (label_c == 0),
                "obj": same & (label_c != 0),
                "neg": pair_valid & (label_c != label_n),
            }
            pull = weight * divergence
            push = F.relu(margin * weight - divergence)
            zero = prob.new_zeros(())
            sums["bg"] = sums["bg"] + torch.where(masks["bg"], pull, zero).sum()
            sums["obj"] = sums["obj"] + torch.where(masks["obj"], pull, zero).sum()
            sums["neg"] = sums["neg"] + torch.where(masks["neg"], push, zero).sum()
            for group, mask in masks.items():
                counts[group] = counts[group] + mask.sum()
        means = {group: sums[group] / counts[group].clamp(min=1).to(torch.float32) for group in sums}
        return means["bg"] + means["obj"] + AA_NEGATIVE_WEIGHT * means["neg"]


# --------------------------------------------------------------------------------------------------------------------
# Label reassign (LR) loss — spec §3, RECONSTRUCTED (the paper's formula was not retrieved)

LR_VARIANTS = ("prototype", "correction")
"""``prototype``: spec §3 4(a), prototype cross-entropy on the reassigned targets; ``correction``: §3 4(b)."""

LR_TEMPERATURE = 0.1
"""τ of the prototype cross-entropy (spec §3 4(a), §6.3: τ ≈ 0.1)."""

LR_CORRECTION_MARGIN = 0.1
"""Cosine margin cos(e, μ_r) − cos(e, μ_Y) a correction needs (spec §6.3: reassign only when the margin > 0.1)."""

_MASKED_LOGIT = -1e9  # finite stand-in for −∞ on non-candidate classes (keeps log-softmax finite when none is left)


def _check_lr_inputs(
    embeddings: torch.Tensor, labels: torch.Tensor, image_labels: torch.Tensor, ignore_index: int
) -> int:
    """Validates the LR inputs and returns C = K + 1 (background + the K foreground classes of ``image_labels``)."""
    if embeddings.dim() != 4:
        raise ValueError(f"embeddings must be (B, D, h, w), got shape {tuple(embeddings.shape)}")
    batch, _, height, width = embeddings.shape
    if tuple(labels.shape) != (batch, height, width):
        raise ValueError(
            f"labels {tuple(labels.shape)} must be (B, h, w) = {(batch, height, width)} to match the embeddings "
            "(resize them with nearest neighbour first)"
        )
    if image_labels.dim() != 2 or image_labels.shape[0] != batch:
        raise ValueError(f"image_labels {tuple(image_labels.shape)} must be (B, K) with B = {batch}")
    num_classes = image_labels.shape[1] + 1
    _check_dense_labels(labels.to(torch.long), num_classes, ignore_index, "LR labels")
    return num_classes


def class_centres(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    per_image: bool = True,
    confidence: torch.Tensor | None = None,
    min_confidence: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class centres μ_k = norm(mean of the labelled embeddings of class k), stop-gradient (§3 step 2, RECONSTRUCTED).

    embeddings (B, D, h, w); labels (B, h, w) int in 0..num_classes-1 or ``ignore_index``; optional confidence
    (B, h, w) in [0, 1]: only pixels with confidence >= ``min_confidence`` build the centres. ``per_image=True``
    (default) gives every image its own centres; ``per_image=False`` pools the whole batch (each image gets copies).
    Returns centres (B, num_classes, D), unit norm (zero where a class has no pixel), and has_pixels
    (B, num_classes) bool.
    """
    if embeddings.dim() != 4 or tuple(labels.shape) != (embeddings.shape[0], *embeddings.shape[2:]):
        raise ValueError(
            f"expected embeddings (B, D, h, w) and labels (B, h, w), "
            f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.to(device=embeddings.device, dtype=torch.long)
    used = labels != ignore_index
    if confidence is not None:
        if tuple(confidence.shape) != tuple(labels.shape):
            raise ValueError(f"confidence {tuple(confidence.shape)} must match labels {tuple(labels.shape)}")
        used = used & (confidence.to(embeddings.device) >= min_confidence)
    with torch.no_grad(), torch.autocast(device_type=embeddings.device.type, enabled=False):
        emb = embeddings.detach().float().flatten(2)  # (B, D, N)
        one_hot = F.one_hot(torch.where(used, labels, 0).flatten(1), num_classes).float()  # (B, N, C)
        one_hot = one_hot * used.flatten(1).unsqueeze(-1)
        sums = torch.bmm(one_hot.transpose(1, 2), emb.transpose(1, 2))  # (B, C, D)
        counts = one_hot.sum(dim=1)  # (B, C)
        if not per_image:
            sums = sums.sum(dim=0, keepdim=True).expand_as(sums)
            counts = counts.sum(dim=0, keepdim=True).expand_as(counts)
        return F.normalize(sums, dim=-1), counts > 0


def _reassignment(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    image_labels: torch.Tensor,
    *,
    margin: float,
    per_image: bool,
    confidence: torch.Tensor | None,
    min_confidence: float,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared LR core: (cosine similarities (B, C, h, w) with gradient, candidates (B, C) bool,
    nearest candidate r (B, h, w), switch (B, h, w) bool = labelled pixels whose label is replaced by r or dropped)."""
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    num_classes = _check_lr_inputs(embeddings, labels, image_labels, ignore_index)
    labels = labels.to(device=embeddings.device, dtype=torch.long)
    centres, has_pixels = class_centres(
        embeddings, labels, num_classes, per_image=per_image, confidence=confidence,
        min_confidence=min_confidence, ignore_index=ignore_index,
    )
    candidates = present_classes(image_labels.to(embeddings.device)) & has_pixels  # those with a centre
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        similarity = torch.einsum("bdhw,bcd->bchw", F.normalize(embeddings.float(), dim=1), centres)
    with torch.no_grad():
        masked = similarity.detach().masked_fill(~candidates[:, :, None, None], float("-inf"))
        best, nearest = masked.max(dim=1)
        labelled = labels != ignore_index
        safe = torch.where(labelled, labels, 0)
        own = similarity.detach().gather(1, safe.unsqueeze(1)).squeeze(1)
        own_is_candidate = candidates.gather(1, safe.flatten(1)).view_as(safe)
        has_candidate = candidates.any(dim=1)[:, None, None].expand_as(labels)
        switch = labelled & (nearest != labels) & (~own_is_candidate | (best - own > margin))
        nearest = torch.where(has_candidate, nearest, ignore_index)
    return similarity, candidates, nearest, switch


def reassign_labels(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    image_labels: torch.Tensor,
    *,
    margin: float = 0.0,
    per_image: bool = True,
    confidence: torch.Tensor | None = None,
    min_confidence: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Reassigned pseudo labels r (spec §3 step 3, RECONSTRUCTED) → (B, h, w) long, no gradient.

    embeddings (B, D, h, w) (L2-normalised here again); labels (B, h, w) int in 0..K or ``ignore_index``;
    image_labels (B, K) multi-hot foreground labels (background is always a candidate). Candidates of an image are
    background plus its present classes that have a centre (``class_centres``). A labelled pixel i gets
    r_i = argmax_{k ∈ candidates} cos(e_i, μ_k) when r_i ≠ Y_i and either Y_i is not a candidate or
    cos(e_i, μ_{r_i}) − cos(e_i, μ_{Y_i}) > ``margin`` (0 = plain nearest centre); otherwise it keeps Y_i.
    Ignore pixels stay ignore; a pixel whose image has no candidate at all becomes ignore.
    """
    _, _, nearest, switch = _reassignment(
        embeddings, labels, image_labels, margin=margin, per_image=per_image, confidence=confidence,
        min_confidence=min_confidence, ignore_index=ignore_index,
    )
    return torch.where(switch, nearest, labels.to(device=embeddings.device, dtype=torch.long))


def label_reassign_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    image_labels: torch.Tensor,
    *,
    variant: str = "prototype",
    active: bool = True,
    tau: float = LR_TEMPERATURE,
    margin: float | None = None,
    on_disagree: str = "reassign",
    per_image: bool = True,
    confidence: torch.Tensor | None = None,
    min_confidence: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Label reassign (LR) loss, RECONSTRUCTED (spec §3 step 4); inputs as in ``reassign_labels``.

    ``variant="prototype"`` (§3 4(a)) → scalar fp32 loss, differentiable w.r.t. the embeddings (centres are
    stop-gradient): with r the reassigned targets (``margin`` default 0) and 𝒦 the image's candidates,
        L = −mean_{i: r_i ≠ ignore} log( exp(cos(e_i, μ_{r_i})/τ) / Σ_{k∈𝒦} exp(cos(e_i, μ_k)/τ) ).
    ``variant="correction"`` (§3 4(b)) → corrected segmentation targets (B, h, w) long, no gradient, for the normal
    CE: pixels whose nearest candidate beats their label by more than ``margin`` (default
    ``LR_CORRECTION_MARGIN`` = 0.1) get it (``on_disagree="reassign"``) or ``ignore_index`` (``"ignore"``).
    Warm-up: with ``active=False`` the prototype variant returns 0 (still connected to the embeddings) and the
    correction variant returns the labels unchanged; the caller decides when the warm-up is over.
    """
    if variant not in LR_VARIANTS:
        raise ValueError(f"variant must be one of {LR_VARIANTS}, got {variant!r}")
    if on_disagree not in ("reassign", "ignore"):
        raise ValueError(f"on_disagree must be 'reassign' or 'ignore', got {on_disagree!r}")
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    if margin is None:
        margin = 0.0 if variant == "prototype" else LR_CORRECTION_MARGIN
    if not active:
        _check_lr_inputs(embeddings, labels, image_labels, ignore_index)
        if variant == "prototype":
            return embeddings.float().sum() * 0.0
        return labels.to(device=embeddings.device, dtype=torch.long).clone()
    similarity, candidates, nearest, switch = _reassignment(
        embeddings, labels, image_labels, margin=margin, per_image=per_image, confidence=confidence,
        min_confidence=min_confidence, ignore_index=ignore_index,
    )
    labels = labels.to(device=embeddings.device, dtype=torch.long)
    if variant == "correction":
        replacement = nearest if on_disagree == "reassign" else torch.full_like(nearest, ignore_index)
        return torch.where(switch, replacement, labels)
    targets = torch.where(switch, nearest, labels)
    logits = (similarity / tau).masked_fill(~candidates[:, :, None, None], _MASKED_LOGIT)
    total = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
    return total / (targets != ignore_index).sum().clamp(min=1).to(total.dtype)


# --------------------------------------------------------------------------------------------------------------------
# AA and LR as extra terms of a segmentation training (spec §6): shared by DeepLab, AuxSegNet and the single-stage model


def to_logit_grid(
    labels: torch.Tensor,
    size: tuple[int, int],
    *,
    valid: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels (and confidence) of a crop at the logit grid (spec §6.1): (B, H, W) → (B, h, w).

    Labels by nearest neighbour ("nearest-exact": each grid cell takes the crop pixel at its centre, the position
    bilinear upsampling of the logits assigns to that cell); pixels where ``valid`` (B, H, W) is False (crop padding)
    become ``ignore_index``, so no AA pair and no LR centre touches the padding. ``confidence`` (B, H, W) in [0, 1] is
    resized bilinearly (align_corners=False). Returned unchanged when already (h, w).
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    labels = labels.long()
    if valid is not None:
        labels = torch.where(valid.to(labels.device, torch.bool), labels, torch.full_like(labels, ignore_index))
    size = tuple(size)
    if tuple(labels.shape[-2:]) != size:
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
    if confidence is not None:
        confidence = confidence.float()
        if tuple(confidence.shape[-2:]) != size:
            confidence = F.interpolate(confidence[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        confidence = confidence.clamp(0.0, 1.0)
    return labels, confidence


class ProgressAwareLoss:
    """Base of the loss callables given to :func:`auxseg.engine.train` whose terms switch on during training.

    The engine calls :meth:`on_step` before every iteration (also after a resume); outside the engine the loss
    behaves as at step 0 until :meth:`on_step` is called.
    """

    def __init__(self) -> None:
        self.epoch, self.step, self.max_steps = 0, 0, 1

    def on_step(self, *, epoch: int, step: int, max_steps: int) -> None:
        self.epoch, self.step, self.max_steps = int(epoch), int(step), max(1, int(max_steps))

    def lr_active(self, aux) -> bool:
        """True once ``aux.lr_warmup`` of the iterations are done (the LR loss of :class:`AuxLossParams`)."""
        return self.step >= aux.lr_warmup * self.max_steps


def lr_corrected_targets(
    aux,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    image_labels: torch.Tensor,
    *,
    active: bool,
    valid: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LR variant ``correction`` (spec §3 4(b), RECONSTRUCTED): (CE targets (B, H, W) with reassigned pixels, extra terms).

    Unless ``aux`` turns LR on with ``lr_variant: correction`` the labels come back as they are with no extra term;
    otherwise the extra terms are ``{"lr_switched": share of labelled pixels whose target changed}``. The embeddings (B, D, h, w) are upsampled bilinearly to the labels' (H, W), as the logits are for the CE, and
    :func:`label_reassign_loss` (``variant="correction"``, centre margin 0.1) replaces the labels of pixels whose
    nearest class centre beats their own by more than the margin. Crop padding (``valid`` False) builds no centre and
    keeps its label. Before the warm-up ends (``active`` False) the labels come back unchanged.
    """
    if not (aux.lr_on and aux.lr_variant == "correction"):
        return labels, {}
    original, labels = labels, labels.long()
    masked = labels if valid is None else torch.where(valid.bool(), labels, torch.full_like(labels, ignore_index))
    if tuple(embeddings.shape[-2:]) != tuple(labels.shape[-2:]):
        embeddings = F.interpolate(embeddings.float(), size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=False)
    corrected = label_reassign_loss(
        embeddings.detach(), masked, image_labels, variant="correction", active=active, ignore_index=ignore_index
    )
    corrected = corrected if valid is None else torch.where(valid.bool(), corrected, labels)
    return corrected, {"lr_switched": switched_fraction(original, corrected)}


def aalr_terms(
    aux,
    *,
    probs: torch.Tensor,
    grid_labels: torch.Tensor,
    image_labels: torch.Tensor,
    grid_confidence: torch.Tensor | None = None,
    embeddings: torch.Tensor | None = None,
    lr_active: bool = True,
) -> dict[str, torch.Tensor]:
    """The unweighted AA and LR terms that ``aux`` (:class:`auxseg.config.AuxLossParams`) switches on.

    probs (B, C, h, w) softmax of the segmentation logits at the logit grid; grid_labels (B, h, w) the pseudo labels
    there (:func:`to_logit_grid`); image_labels (B, K); grid_confidence (B, h, w) (needed with
    ``aa_confidence: labels``); embeddings (B, D, h, w) (needed with ``lr_weight > 0``). Returns ``{"aa": ...}`` when
    ``aa_weight > 0`` and ``{"lr_loss": ...}`` (the prototype loss, which trains the embedding in both LR variants; 0 during
    the warm-up) when ``lr_weight > 0``.
    """
    terms: dict[str, torch.Tensor] = {}
    if aux.aa_on:
        if aux.aa_confidence == "constant":
            confidence = torch.ones_like(grid_labels, dtype=torch.float32)
        elif grid_confidence is None:
            raise ValueError("aa_confidence 'labels' needs the confidence maps (batch key 'confidence')")
        else:
            confidence = grid_confidence
        terms["aa"] = adaptive_affinity_loss(
            probs, grid_labels, confidence, dilation=aux.aa_dilation, margin=aux.aa_margin
        )
    if aux.lr_on:
        if embeddings is None:
            raise ValueError("lr_weight > 0 needs the pixel embeddings of a projection head")
        terms["lr_loss"] = label_reassign_loss(
            embeddings, grid_labels, image_labels, variant="prototype", active=lr_active, tau=aux.lr_tau
        )
    return terms


def aalr_weighted(aux, terms: Mapping[str, torch.Tensor]) -> torch.Tensor | float:
    """λ_AA · aa + λ_LR · lr over the terms :func:`aalr_terms` returned (0.0 when there is none)."""
    total: torch.Tensor | float = 0.0
    if "aa" in terms:
        total = total + aux.aa_weight * terms["aa"]
    if "lr_loss" in terms:
        total = total + aux.lr_weight * terms["lr_loss"]
    return total


def switched_fraction(before: torch.Tensor, after: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Share of the labelled pixels of ``before`` whose label ``after`` changed (an LR-correction diagnostic)."""
    labelled = before != ignore_index
    changed = (before != after) & labelled
    return changed.sum().float() / labelled.sum().clamp(min=1).float()


__all__ = [
    "AA_NEGATIVE_WEIGHT",
    "AA_PROB_CLAMP",
    "AuxSegNetLossWeights",
    "LR_CORRECTION_MARGIN",
    "LR_TEMPERATURE",
    "LR_VARIANTS",
    "ProgressAwareLoss",
    "ProjectionHead",
    "SALIENCY_BINARY_THRESHOLD",
    "aalr_terms",
    "aalr_weighted",
    "present_classes",
    "adaptive_affinity_loss",
    "auxsegnet_losses",
    "class_centres",
    "classification_loss",
    "label_reassign_loss",
    "lr_corrected_targets",
    "reassign_labels",
    "saliency_bce",
    "segmentation_ce",
    "switched_fraction",
    "to_logit_grid",
    "upsample_logits",
]
