"""Small heads shared by the networks and the losses: the pixel projection head of the LR loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """Pixel embedding head g of the LR loss (spec §3 step 1, RECONSTRUCTED).

    features (B, F, h, w) → embeddings (B, D, h, w), L2-normalised over D. Two 1×1 convs with a ReLU between them
    (F → hidden → D); a single 1×1 conv when ``hidden_channels`` is None.
    """

    def __init__(self, in_channels: int, embed_dim: int = 128, hidden_channels: int | None = 256) -> None:
        super().__init__()
        if in_channels < 1 or embed_dim < 1 or (hidden_channels is not None and hidden_channels < 1):
            raise ValueError(
                f"channel counts must be >= 1, got in_channels={in_channels}, embed_dim={embed_dim}, "
                f"hidden_channels={hidden_channels}"
            )
        if hidden_channels is None:
            self.proj: nn.Module = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        else:
            self.proj = nn.Sequential(
                nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden_channels, embed_dim, kernel_size=1),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4:
            raise ValueError(f"features must be (B, F, h, w), got shape {tuple(features.shape)}")
        return F.normalize(self.proj(features), dim=1)


__all__ = ["ProjectionHead"]
