"""Single-stage WSSS network of Araslanov & Roth ("1-Stage", CVPR 2020), the model AALR builds on (spec §1).

Network (spec §1.1), for an image (B, 3, H, W), h4 = ceil(H/4), h8 = ceil(H/8) (or /16 with output stride 16):

- backbone (any registry name): ``out`` (B, C_out, h8, w8) and ``low`` (B, C_low, h4, w4) via ``forward_features``;
- ``aspp``: torchvision's ASPP (1×1 branch, 3×3 atrous branches, image pooling; BN + ReLU each; 1×1 projection + BN +
  ReLU + dropout 0.5) on ``out`` → ``aspp_channels`` (256);
- ``skip``: 1×1 conv + BN + ReLU on ``low`` → ``skip_channels`` (48);
- ``fuse``: bilinear upsampling of the ASPP output to (h4, w4), concat with the skip, 3×3 conv + BN + ReLU →
  ``decoder_channels`` (256) — the *deep* stream;
- ``gci`` (global cue injection): the shallow ``low`` features, 1×1 conv + non-affine BN, are modulated AdaIN-style,
  x · (γ + 1) + β, by (γ, β) = spatial max per channel of 1×1 conv + BN + ReLU of the deep stream; then ReLU and
  1×1 conv + BN + ReLU — the *shallow* stream (same width as the deep one);
- ``gate``: the Stochastic Gate (ψ = 0.3) mixes deep and shallow (see :func:`stochastic_gate`);
- ``head``: two 3×3 conv + BN + ReLU (``head_channels``, 256), dropout 0.5 after the first and 0.1 after the second,
  → 1×1 conv (with bias) to the K foreground logits s (B, K, h4, w4);
- a constant background logit 1 is put in front: ``seg_logits`` (B, K+1, h4, w4); softmax over the K+1 channels
  gives the masks m; the class scores are nGWP + focal mask penalty (spec §1.2, :func:`ngwp_focal_scores`).
- optional ``embed`` (``embedding_dim`` not None): :class:`auxseg.losses.ProjectionHead` on the gated decoder
  features (the head's input) → L2-normalised embeddings (B, D, h4, w4) for the LR loss.

Online pseudo labels and their supervision (spec §1.3-§1.4): :func:`pamr` refines the detached masks with the image,
:func:`pseudo_labels_from_masks` thresholds them (after upsampling to the image size) and :func:`class_balanced_ce`
trains ``seg_logits`` on them.

Choices where the spec is silent (following the released code visinf/1-stage-wseg unless noted):
- the GCI "deep features" are the fused decoder output (the deep stream), its shallow input is the backbone's ``low``;
- ASPP rates default to (12, 24, 36) at output stride 8 and (6, 12, 18) at 16 (released code);
- all resizing is bilinear with ``align_corners=False`` (this repository's convention; the released code uses True);
- new convolutions get Kaiming-normal weights, BN weight 1 / bias 0 (released code); the ASPP keeps torchvision's
  initialisation; the ASPP BatchNorms are not frozen (the released code freezes their running statistics), so in
  training mode the image-pooling branch needs batches of at least 2 images.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from auxseg import IGNORE_INDEX
from auxseg.losses import ProjectionHead, present_classes, upsample_logits
from auxseg.models.backbones import BackboneModel
from auxseg.models.classifier import ParamGroup, backbone_channels, check_images

SG_PSI = 0.3
"""ψ of the Stochastic Gate (spec §1.1)."""

BACKGROUND_LOGIT = 1.0
"""The constant background logit put in front of the K foreground logits (spec §1.1)."""

FOCAL_P = 3.0
FOCAL_LAMBDA = 0.01
"""p and λ of the focal mask penalty (spec §1.2)."""

PAMR_DILATIONS = (1, 2, 4, 8, 12, 24)
PAMR_ITERATIONS = 10
PAMR_EPS = 1e-8
"""Added to 0.1·σ_i in the PAMR kernel so that flat image regions (σ_i = 0, hence |I_i − I_j| = 0) give k = 0."""

PSEUDO_R_BG = 0.7
PSEUDO_R_FG = 0.6
PSEUDO_MIN_THRESHOLD = 0.2
"""Pseudo-label thresholds τ_c = max(0.2, r_c · max_i m_{i,c}), r = 0.7 for background, 0.6 for objects (spec §1.3)."""

_EIGHT_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class SingleStageOutput(NamedTuple):
    """Outputs of :class:`SingleStageNet` at stride 4 (h4 = ceil(H/4), w4 = ceil(W/4)); channel 0 is background."""

    cls_logits: torch.Tensor  # (B, K) class scores y_c = nGWP + focal penalty (train with multilabel soft margin)
    masks: torch.Tensor  # (B, K+1, h4, w4) softmax of seg_logits over the K+1 channels
    seg_logits: torch.Tensor  # (B, K+1, h4, w4) logits, channel 0 the constant 1
    embeddings: torch.Tensor | None  # (B, D, h4, w4) L2-normalised pixel embeddings, None without an embedding head


# --------------------------------------------------------------------------------------------------------------------
# Building blocks


def _new_conv(in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = False) -> nn.Conv2d:
    """Conv with 'same' padding and a Kaiming-normal weight (zero bias if any)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    nn.init.kaiming_normal_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        _new_conv(in_channels, out_channels, kernel_size), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


class GlobalCueInjection(nn.Module):
    """GCI: shallow features (B, C_low, h, w) + deep features (B, C_deep, h', w') → (B, channels, h, w).

    (γ, β) (B, channels) each = spatial max per channel of ReLU(BN(conv1×1(deep))) (2·channels channels, first half γ);
    x = BN_noaffine(conv1×1(shallow)); out = ReLU(BN(conv1×1(ReLU(x · (γ + 1) + β)))).
    """

    def __init__(self, shallow_channels: int, deep_channels: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc_deep = _conv_bn_relu(deep_channels, 2 * channels, 1)
        self.fc_skip = nn.Sequential(_new_conv(shallow_channels, channels, 1), nn.BatchNorm2d(channels, affine=False))
        self.fc_out = _conv_bn_relu(channels, channels, 1)

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        attributes = self.fc_deep(deep).amax(dim=(2, 3))  # (B, 2·channels)
        gamma, beta = attributes[:, : self.channels, None, None], attributes[:, self.channels :, None, None]
        x = self.fc_skip(shallow)
        return self.fc_out(F.relu(x * (gamma + 1.0) + beta))


def stochastic_gate(
    deep: torch.Tensor, shallow: torch.Tensor, psi: float = SG_PSI, training: bool = True
) -> torch.Tensor:
    """Stochastic Gate of 1-Stage: deep, shallow (same shape) → mixed features (same shape).

    Training: every element independently takes the (rescaled) deep stream with probability 1 − ψ and the shallow
    stream with probability ψ: out = b · (deep − ψ · shallow) / (1 − ψ) + (1 − b) · shallow, b ~ Bernoulli(1 − ψ).
    The rescaling makes E_b[out] = deep exactly, so in expectation the gate passes the deep stream while the network
    sees shallow features alone at a fraction ψ of the positions/channels (this is where the shallow stream gets its
    gradient). Eval: the deterministic mix (1 − ψ) · deep + ψ · shallow of the *un-rescaled* streams. Both follow the
    released code (paper and code agree on the test-time formula; note it is not the training expectation).
    ψ = 0 passes ``deep`` unchanged in both modes.
    """
    if not 0.0 <= psi < 1.0:
        raise ValueError(f"psi must lie in [0, 1), got {psi}")
    if deep.shape != shallow.shape:
        raise ValueError(
            f"deep {tuple(deep.shape)} and shallow {tuple(shallow.shape)} features must have the same shape"
        )
    if psi == 0.0:
        return deep
    if not training:
        return (1.0 - psi) * deep + psi * shallow
    keep_deep = torch.rand_like(deep) >= psi  # P(True) = 1 − ψ
    return torch.where(keep_deep, (deep - psi * shallow) / (1.0 - psi), shallow)


class StochasticGate(nn.Module):
    """Module form of :func:`stochastic_gate`; the mode follows ``self.training``."""

    def __init__(self, psi: float = SG_PSI) -> None:
        super().__init__()
        if not 0.0 <= psi < 1.0:
            raise ValueError(f"psi must lie in [0, 1), got {psi}")
        self.psi = float(psi)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return stochastic_gate(deep, shallow, self.psi, self.training)

    def extra_repr(self) -> str:
        return f"psi={self.psi}"


# --------------------------------------------------------------------------------------------------------------------
# The network


class SingleStageNet(BackboneModel):
    """1-Stage network (spec §1.1): x (B, 3, H, W) ImageNet-normalised → :class:`SingleStageOutput` at stride 4.

    K = ``num_classes_fg``. Widths are arguments so that CPU runs on the tiny backbone can use a narrow decoder
    (e.g. ``aspp_channels=decoder_channels=head_channels=64``); the defaults are the paper's. ``decoder_channels``
    is the width of both streams the gate mixes (deep = fused decoder output, shallow = GCI output).
    ``embedding_dim`` (None = off) adds a :class:`ProjectionHead` (hidden width ``embedding_hidden``; None = a single
    1×1 conv) on the gated decoder features, returned as ``output.embeddings``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes_fg: int,
        *,
        atrous_rates: Sequence[int] | None = None,
        aspp_channels: int = 256,
        skip_channels: int = 48,
        decoder_channels: int = 256,
        head_channels: int = 256,
        psi: float = SG_PSI,
        focal_p: float = FOCAL_P,
        focal_lambda: float = FOCAL_LAMBDA,
        embedding_dim: int | None = None,
        embedding_hidden: int | None = 256,
    ) -> None:
        super().__init__()
        if num_classes_fg < 1:
            raise ValueError(f"num_classes_fg must be >= 1 (foreground classes), got {num_classes_fg}")
        widths = {"aspp_channels": aspp_channels, "skip_channels": skip_channels,
                  "decoder_channels": decoder_channels, "head_channels": head_channels}
        for name, width in widths.items():
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"{name} must be a positive int, got {width!r}")
        low_channels = getattr(backbone, "low_channels", None)
        if not isinstance(low_channels, int) or low_channels < 1 or not hasattr(backbone, "forward_features"):
            raise TypeError(
                f"backbone {type(backbone).__name__} must expose 'low_channels' and 'forward_features' "
                "(a registry Backbone)"
            )
        if atrous_rates is None:
            atrous_rates = (6, 12, 18) if getattr(backbone, "output_stride", 8) == 16 else (12, 24, 36)
        rates = tuple(int(rate) for rate in atrous_rates)
        if len(rates) == 0 or any(rate < 1 for rate in rates):
            raise ValueError(f"atrous_rates must be positive integers, got {tuple(atrous_rates)}")
        if focal_lambda <= 0:
            raise ValueError(f"focal_lambda must be > 0, got {focal_lambda}")

        self.backbone = backbone
        self.num_classes_fg = num_classes_fg
        self.focal_p = float(focal_p)
        self.focal_lambda = float(focal_lambda)

        self.aspp = ASPP(backbone_channels(backbone), rates, out_channels=aspp_channels)
        self.skip = _conv_bn_relu(low_channels, skip_channels, 1)
        self.fuse = _conv_bn_relu(aspp_channels + skip_channels, decoder_channels, 3)
        self.gci = GlobalCueInjection(low_channels, decoder_channels, decoder_channels)
        self.gate = StochasticGate(psi)
        self.head = nn.Sequential(
            _conv_bn_relu(decoder_channels, head_channels, 3),
            nn.Dropout(0.5),
            _conv_bn_relu(head_channels, head_channels, 3),
            nn.Dropout(0.1),
            _new_conv(head_channels, num_classes_fg, 1, bias=True),
        )
        self.embed = (
            ProjectionHead(decoder_channels, embedding_dim, embedding_hidden) if embedding_dim is not None else None
        )

    def decoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) → gated decoder features (B, decoder_channels, h4, w4), the head's input."""
        check_images(x)
        features = self.backbone.forward_features(x)
        low = features["low"]
        skip = self.skip(low)
        deep = self.aspp(features["out"])
        deep = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        deep = self.fuse(torch.cat((deep, skip), dim=1))
        shallow = self.gci(low, deep)
        return self.gate(deep, shallow)

    def forward(self, x: torch.Tensor) -> SingleStageOutput:
        """x (B, 3, H, W) → :class:`SingleStageOutput` (cls_logits (B, K); masks, seg_logits (B, K+1, h4, w4))."""
        features = self.decoder_features(x)
        foreground = self.head(features)  # (B, K, h4, w4)
        background = torch.full_like(foreground[:, :1], BACKGROUND_LOGIT)
        seg_logits = torch.cat((background, foreground), dim=1)
        masks = torch.softmax(seg_logits, dim=1)
        cls_logits = ngwp_focal_scores(masks, seg_logits, p=self.focal_p, lam=self.focal_lambda)
        embeddings = self.embed(features) if self.embed is not None else None
        return SingleStageOutput(cls_logits=cls_logits, masks=masks, seg_logits=seg_logits, embeddings=embeddings)

    def param_groups(self, head_lr_mult: float = 10.0) -> list[ParamGroup]:
        """Optimiser groups: backbone 1×, every new layer (ASPP, decoder, GCI, head, embedding) ``head_lr_mult``×.

        Every parameter is listed, frozen ones included (SGD skips parameters that get no gradient). (The released
        code also doubles the lr of biases; not done here, as in the other models of this package.)
        """
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult must be > 0, got {head_lr_mult}")
        new = [param for name, module in self.named_children() if name != "backbone" for param in module.parameters()]
        return [
            {"params": list(self.backbone.parameters()), "lr_mult": 1.0, "name": "backbone"},
            {"params": new, "lr_mult": float(head_lr_mult), "name": "decoder_and_head"},
        ]


# --------------------------------------------------------------------------------------------------------------------
# Class scores from the masks (spec §1.2)


def ngwp_focal_scores(
    masks: torch.Tensor, logits: torch.Tensor, p: float = FOCAL_P, lam: float = FOCAL_LAMBDA
) -> torch.Tensor:
    """Class scores y_c = nGWP + focal mask penalty for the foreground classes → (B, K).

    masks (B, K+1, h, w) softmax probabilities and logits (B, K+1, h, w), channel 0 = background (dropped from the
    result). With sums over the h·w positions i and m̄_c = mean_i m_{i,c}:
        y_c = Σ_i m_{i,c} s_{i,c} / (1 + Σ_i m_{i,c}) + (1 − m̄_c)^p · log(λ + m̄_c).
    Differentiable w.r.t. both inputs (the released code does not detach either).
    """
    if masks.dim() != 4 or masks.shape != logits.shape:
        raise ValueError(
            f"masks {tuple(masks.shape)} and logits {tuple(logits.shape)} must both be (B, K+1, h, w)"
        )
    if masks.shape[1] < 2:
        raise ValueError(f"need the background plus at least one class, got {masks.shape[1]} channels")
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    masks_fg = masks[:, 1:].flatten(2)  # (B, K, N)
    logits_fg = logits[:, 1:].flatten(2)
    mass = masks_fg.sum(dim=-1)
    ngwp = (masks_fg * logits_fg).sum(dim=-1) / (1.0 + mass)
    mean = mass / masks_fg.shape[-1]
    focal = (1.0 - mean).pow(p) * torch.log(lam + mean)
    return ngwp + focal


# --------------------------------------------------------------------------------------------------------------------
# Pixel-adaptive mask refinement (spec §1.3 step 1)


def _shifted(padded: torch.Tensor, pad: int, height: int, width: int, off_y: int, off_x: int) -> torch.Tensor:
    """Window of ``padded`` (…, height + 2·pad, width + 2·pad): out[…, y, x] = unpadded[…, y + off_y, x + off_x]."""
    return padded[..., pad + off_y : pad + off_y + height, pad + off_x : pad + off_x + width]


def pamr_affinity(image: torch.Tensor, dilations: Sequence[int] = PAMR_DILATIONS) -> torch.Tensor:
    """PAMR affinities: image (B, Ch, h, w) → weights (B, P, h, w), P = 8 · len(dilations), softmax over P.

    Neighbour p = (dilation d, direction (δy, δx) ∈ {−1, 0, 1}² \\ {0}) of pixel i is j = i + d·(δy, δx), clamped to the
    image (replicate padding). k_ij = −(1/Ch) Σ_ch |I_i − I_j| / (1e-8 + 0.1 σ_i), σ_i = per-channel standard
    deviation (unbiased, as ``torch.std``) of the 9·len(dilations) samples of the 3×3 windows of every dilation around
    i (the centre counted once per dilation, as in the released code). The order of P is dilation-major, then
    the directions in row-major order.
    """
    dilations = tuple(int(d) for d in dilations)
    if len(dilations) == 0 or any(d < 1 for d in dilations):
        raise ValueError(f"dilations must be positive integers, got {dilations}")
    if image.dim() != 4:
        raise ValueError(f"image must be (B, Ch, h, w), got shape {tuple(image.shape)}")
    _, _, height, width = image.shape
    pad = max(dilations)
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")  # replicate = index clamping for every shift
    neighbours = torch.stack(
        [_shifted(padded, pad, height, width, dy * d, dx * d) for d in dilations for dy, dx in _EIGHT_DIRECTIONS],
        dim=2,
    )  # (B, Ch, P, h, w)
    samples = torch.cat([neighbours, image.unsqueeze(2).expand(-1, -1, len(dilations), -1, -1)], dim=2)
    sigma = samples.std(dim=2, keepdim=True)  # (B, Ch, 1, h, w)
    kernel = -((image.unsqueeze(2) - neighbours).abs() / (PAMR_EPS + 0.1 * sigma)).mean(dim=1)  # (B, P, h, w)
    return torch.softmax(kernel, dim=1)


def pamr(
    image: torch.Tensor,
    masks: torch.Tensor,
    dilations: Sequence[int] = PAMR_DILATIONS,
    iterations: int = PAMR_ITERATIONS,
) -> torch.Tensor:
    """Pixel-adaptive mask refinement (spec §1.3 step 1) → refined masks (B, C, h, w) fp32, no gradient.

    image (B, Ch, H, W) raw or normalised (the kernel is invariant to a per-channel affine scaling up to the 1e-8),
    resized bilinearly to the masks' (h, w); masks (B, C, h, w) (detached here). The affinities
    (:func:`pamr_affinity`) are computed once, then ``iterations`` times m_i ← Σ_j softmax(k)_ij m_j over the
    8 · len(dilations) neighbours, with replicate padding. Each step is a convex combination, so masks that sum to 1
    over C keep doing so, and a constant mask stays constant.
    """
    if masks.dim() != 4 or image.dim() != 4 or image.shape[0] != masks.shape[0]:
        raise ValueError(
            f"expected image (B, Ch, H, W) and masks (B, C, h, w), got {tuple(image.shape)} and {tuple(masks.shape)}"
        )
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    dilations = tuple(int(d) for d in dilations)
    _, _, height, width = masks.shape
    with torch.no_grad(), torch.autocast(device_type=masks.device.type, enabled=False):
        image = image.detach().to(device=masks.device, dtype=torch.float32)
        if tuple(image.shape[-2:]) != (height, width):
            image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
        weights = pamr_affinity(image, dilations).unsqueeze(1)  # (B, 1, P, h, w)
        offsets = [(dy * d, dx * d) for d in dilations for dy, dx in _EIGHT_DIRECTIONS]
        pad = max(dilations)
        refined = masks.detach().float()
        for _ in range(iterations):
            padded = F.pad(refined, (pad, pad, pad, pad), mode="replicate")
            update = torch.zeros_like(refined)
            for index, (off_y, off_x) in enumerate(offsets):
                update += weights[:, :, index] * _shifted(padded, pad, height, width, off_y, off_x)
            refined = update
        return refined


# --------------------------------------------------------------------------------------------------------------------
# Pseudo labels and their supervision (spec §1.3 steps 2-3, §1.4)


def pseudo_labels_from_masks(
    masks: torch.Tensor,
    image_labels: torch.Tensor,
    r_bg: float = PSEUDO_R_BG,
    r_fg: float = PSEUDO_R_FG,
    min_threshold: float = PSEUDO_MIN_THRESHOLD,
    ignore_index: int = IGNORE_INDEX,
    *,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Online pseudo labels (spec §1.3 steps 2-3) → (B, H, W) long in 0..K or ``ignore_index``, no gradient.

    masks (B, K+1, H, W) (e.g. the PAMR output; upsampled bilinearly to ``size`` first when given); image_labels (B, K)
    multi-hot. Channels of classes absent from the image label are zeroed (background always kept); per image and
    class τ_c = max(min_threshold, r_c · max_i m_{i,c}) (r_bg for channel 0, r_fg otherwise); pixel i gets class c
    when m_{i,c} > τ_c for exactly one c, and ``ignore_index`` when no or several classes pass.
    The per-pixel confidence the AA loss wants can be taken as ``masks.max(1).values`` of the same masks.
    """
    if masks.dim() != 4 or image_labels.dim() != 2 or image_labels.shape != (masks.shape[0], masks.shape[1] - 1):
        raise ValueError(
            f"expected masks (B, K+1, H, W) and image_labels (B, K), got {tuple(masks.shape)} and "
            f"{tuple(image_labels.shape)}"
        )
    with torch.no_grad():
        masks = masks.detach().float()
        if size is not None and tuple(masks.shape[-2:]) != tuple(size):
            masks = F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False)
        present = present_classes(image_labels.to(masks.device))  # (B, K+1), background always
        masks = masks * present[:, :, None, None]
        ratios = torch.full((masks.shape[1],), float(r_fg), device=masks.device)
        ratios[0] = float(r_bg)
        thresholds = (masks.amax(dim=(2, 3)) * ratios).clamp(min=float(min_threshold))  # (B, K+1)
        above = masks > thresholds[:, :, None, None]  # (B, K+1, H, W)
        unique = above.sum(dim=1) == 1
        labels = above.to(torch.uint8).argmax(dim=1)
        return torch.where(unique, labels, torch.full_like(labels, ignore_index))


def class_balanced_ce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    image_labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Class-balanced cross-entropy of 1-Stage (spec §1.4).

    logits (B, K+1, h, w) are upsampled bilinearly to the labels' (H, W); labels (B, H, W) in 0..K or
    ``ignore_index``; image_labels (B, K) multi-hot. Per image b, with N_c the pixels of class c in its pseudo mask
    and N = Σ_c N_c (the labelled pixels), a pixel of class c has weight w_c = (N − N_c) / (1 + N), and
        L_b = keep_b · (1 / (H·W)) Σ_{i labelled} w_{Y_i} · CE_i,
    the mean over all H·W pixels (ignored ones count as 0), as in the released code. keep_b = 1 iff the pseudo mask
    contains the background and every image-level class, else 0 (an image with a single pseudo class also gets
    w = 0). ``reduction``: "mean" (over B, zeroed images included) → scalar, "none" → (B,).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if logits.dim() != 4 or labels.dim() != 3 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"expected logits (B, C, h, w) and labels (B, H, W), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    batch, num_classes = logits.shape[:2]
    if tuple(image_labels.shape) != (batch, num_classes - 1):
        raise ValueError(f"image_labels {tuple(image_labels.shape)} must be (B, K) = {(batch, num_classes - 1)}")
    labels = labels.to(device=logits.device, dtype=torch.long)
    valid = labels != ignore_index
    if bool((valid & ((labels < 0) | (labels >= num_classes))).any()):
        bad = torch.unique(labels[valid & ((labels < 0) | (labels >= num_classes))])[:10].tolist()
        raise ValueError(f"labels hold values {bad} outside 0..{num_classes - 1} and {ignore_index}")
    logits = upsample_logits(logits, tuple(labels.shape[-2:]))
    safe = torch.where(valid, labels, 0)
    with torch.no_grad():
        valid_flat = valid.flatten(1).float()  # (B, HW)
        counts = valid_flat.new_zeros(batch, num_classes).scatter_add_(1, safe.flatten(1), valid_flat)  # N_c (B, C)
        total = counts.sum(dim=1, keepdim=True)  # N (B, 1)
        class_weight = (total - counts) / (1.0 + total)  # (B, C)
        pixel_weight = class_weight.gather(1, safe.flatten(1)) * valid_flat  # (B, HW)
        present = present_classes(image_labels.to(logits.device))
        keep = (~present | (counts > 0)).all(dim=1)  # (B,)
    ce = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none").flatten(1)  # (B, HW)
    per_image = (pixel_weight * ce).sum(dim=1) / ce.shape[1] * keep.to(ce.dtype)
    return per_image.mean() if reduction == "mean" else per_image


__all__ = [
    "BACKGROUND_LOGIT",
    "FOCAL_LAMBDA",
    "FOCAL_P",
    "PAMR_DILATIONS",
    "PAMR_ITERATIONS",
    "PSEUDO_MIN_THRESHOLD",
    "PSEUDO_R_BG",
    "PSEUDO_R_FG",
    "SG_PSI",
    "GlobalCueInjection",
    "SingleStageNet",
    "SingleStageOutput",
    "StochasticGate",
    "class_balanced_ce",
    "ngwp_focal_scores",
    "pamr",
    "pamr_affinity",
    "pseudo_labels_from_masks",
    "stochastic_gate",
]
