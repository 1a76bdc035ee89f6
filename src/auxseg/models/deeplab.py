"""DeepLab-v3 (Chen et al., 2017) on a registry backbone: ASPP head for fully supervised / pseudo-label training.

Head (torchvision's ``DeepLabHead`` layout): ASPP with a 1×1 branch, three 3×3 atrous branches (rates 6/12/18 by
default) and image pooling, ``head_channels`` (256) channels each with BatchNorm, projected to ``head_channels``
(+ dropout 0.5) → 3×3 conv + BN + ReLU → 1×1 conv to the class logits. Logits stay at the backbone's stride;
upsample them to the label size for the loss.
With ``embedding_dim`` (the LR loss of AALR, spec §6.3) a :class:`auxseg.losses.ProjectionHead` (two 1×1 convs,
hidden width = head width) maps the penultimate features (the input of the last 1×1 conv) to L2-normalised pixel
embeddings; without it the module and its state dict are exactly the plain DeepLab.
Note: in training mode the image-pooling branch's BatchNorm sees one value per channel and image, so training needs
batches of at least 2 images.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from auxseg.models.backbones import BackboneModel
from auxseg.models.classifier import ParamGroup, backbone_channels, check_images
from auxseg.models.heads import ProjectionHead


class DeepLab(BackboneModel):
    """x (B, 3, H, W) ImageNet-normalised → logits (B, num_classes, h, w), h = ceil(H / output_stride)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        atrous_rates: Sequence[int] = (6, 12, 18),
        head_channels: int = 256,
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        rates = tuple(int(rate) for rate in atrous_rates)
        if len(rates) == 0 or any(rate < 1 for rate in rates):
            raise ValueError(f"atrous_rates must be positive integers, got {tuple(atrous_rates)}")
        self.backbone = backbone
        self.num_classes = num_classes
        if head_channels < 1:
            raise ValueError(f"head_channels must be >= 1, got {head_channels}")
        # torchvision's DeepLabHead layout (same state-dict keys head.0 … head.4) with a configurable width: 256 is
        # DeepLab-v3 exactly; a narrower head suits the tiny CPU backbone.
        self.head = nn.Sequential(
            ASPP(backbone_channels(backbone), rates, out_channels=head_channels),
            nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(),
            nn.Conv2d(head_channels, num_classes, 1),
        )
        self.embedding_dim = embedding_dim
        if embedding_dim is not None:
            width = self.head[-1].in_channels
            self.embed = ProjectionHead(width, embedding_dim, hidden_channels=width)
        else:
            self.embed = None

    def forward(self, x: torch.Tensor, return_embeddings: bool = False):
        """x (B, 3, H, W) → segmentation logits (B, num_classes, h, w).

        With ``return_embeddings`` (needs ``embedding_dim``): (logits, embeddings (B, D, h, w)); a keyword of
        ``forward`` (not another method) so that it also works through DDP.
        """
        check_images(x)
        if not return_embeddings:
            return self.head(self.backbone(x))
        if self.embed is None:
            raise ValueError("return_embeddings=True needs a DeepLab built with embedding_dim")
        features = self.backbone(x)
        layers = list(self.head)
        for layer in layers[:-1]:
            features = layer(features)
        return layers[-1](features), self.embed(features)

    def param_groups(self, head_lr_mult: float = 10.0) -> list[ParamGroup]:
        """Optimiser groups: backbone 1×, ASPP head (and the projection head, if any) ``head_lr_mult``×
        (frozen parameters included)."""
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult must be > 0, got {head_lr_mult}")
        head = list(self.head.parameters())
        if self.embed is not None:
            head += list(self.embed.parameters())
        return [
            {"params": list(self.backbone.parameters()), "lr_mult": 1.0, "name": "backbone"},
            {"params": head, "lr_mult": float(head_lr_mult), "name": "head"},
        ]


__all__ = ["DeepLab"]
