"""The CAM classifier (PSA ``resnet38_cls`` head on any registry backbone) and the head pieces AuxSegNet shares.

Head: Dropout2d(0.5) → global average pooling → ``fc8`` (1×1 conv C→K, no bias, xavier-uniform) → logits (B, K).
Class activation maps: ``conv2d(features, fc8.weight)`` without dropout → raw CAMs (B, K, h, w) (spec §2.2).
K counts foreground classes only (20 on VOC); there is no background logit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from auxseg.models.backbones import BackboneModel

ParamGroup = dict[str, Any]
"""One optimiser group for :func:`auxseg.engine.train`: ``{"params": list, "lr_mult": float, "name": str}``."""


def make_fc8(in_channels: int, num_classes_fg: int) -> nn.Conv2d:
    """The classification layer: 1×1 conv ``in_channels → num_classes_fg`` without bias, xavier-uniform weights."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes_fg < 1:
        raise ValueError(f"num_classes_fg must be >= 1 (foreground classes), got {num_classes_fg}")
    fc8 = nn.Conv2d(in_channels, num_classes_fg, kernel_size=1, bias=False)
    nn.init.xavier_uniform_(fc8.weight)
    return fc8


def pooled_logits(features: torch.Tensor, dropout: nn.Module, fc8: nn.Conv2d) -> torch.Tensor:
    """features (B, C, h, w) → dropout → global average pool → fc8 → logits (B, K)."""
    pooled = dropout(features).mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return fc8(pooled).flatten(1)


def class_activation_maps(features: torch.Tensor, fc8: nn.Conv2d) -> torch.Tensor:
    """Raw CAMs: features (B, C, h, w) → (B, K, h, w), CAM_k(i) = Σ_c W[k, c] · F_c(i) (no dropout, no ReLU)."""
    return F.conv2d(features, fc8.weight)


def backbone_channels(backbone: nn.Module) -> int:
    """The backbone's ``out_channels`` (C of its (B, C, h, w) output); TypeError when missing."""
    channels = getattr(backbone, "out_channels", None)
    if not isinstance(channels, int) or channels < 1:
        raise TypeError(
            f"backbone {type(backbone).__name__} must expose a positive int attribute 'out_channels', got {channels!r}"
        )
    return channels


def check_images(x: torch.Tensor) -> None:
    """Raise ValueError unless x is a (B, 3, H, W) tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected images of shape (B, 3, H, W), got {shape}")


class CamClassifier(BackboneModel):
    """Multi-label image classifier whose ``fc8`` weights give class activation maps.

    ``forward(x)``: x (B, 3, H, W) ImageNet-normalised → logits (B, K) (train for multilabel soft margin).
    ``cams(x)``: raw CAMs (B, K, h, w), h = ceil(H / output_stride), computed without dropout.
    State-dict keys are ``backbone.*`` and ``fc8.weight``, the same names AuxSegNet uses, so
    :meth:`auxseg.models.auxsegnet.AuxSegNet.load_classifier_state` takes this model's state dict.
    """

    def __init__(self, backbone: nn.Module, num_classes_fg: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.backbone = backbone
        self.num_classes_fg = num_classes_fg
        self.dropout = nn.Dropout2d(dropout)
        self.fc8 = make_fc8(backbone_channels(backbone), num_classes_fg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) → class logits (B, K)."""
        check_images(x)
        return pooled_logits(self.backbone(x), self.dropout, self.fc8)

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) → raw class activation maps (B, K, h, w); unbounded real values."""
        check_images(x)
        return class_activation_maps(self.backbone(x), self.fc8)

    def param_groups(self, head_lr_mult: float = 10.0) -> list[ParamGroup]:
        """Optimiser groups: backbone at 1× the base lr, fc8 at ``head_lr_mult``×.

        Every parameter is listed, frozen ones included (SGD skips parameters that get no gradient).
        """
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult must be > 0, got {head_lr_mult}")
        return [
            {"params": list(self.backbone.parameters()), "lr_mult": 1.0, "name": "backbone"},
            {"params": list(self.fc8.parameters()), "lr_mult": float(head_lr_mult), "name": "fc8"},
        ]


__all__ = [
    "CamClassifier",
    "ParamGroup",
    "backbone_channels",
    "check_images",
    "class_activation_maps",
    "make_fc8",
    "pooled_logits",
]
