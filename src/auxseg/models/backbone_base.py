"""The :class:`Backbone` base class every feature extractor derives from (the registry and the concrete backbones
are in :mod:`auxseg.models.backbones`; :mod:`auxseg.models.resnet38` builds on this module directly)."""

from __future__ import annotations

import abc
from typing import Iterable

from torch import Tensor, nn

from auxseg.models.weights import KeyMap, PackageWeights
from auxseg.normalization import IMAGENET, Normalization

VALID_OUTPUT_STRIDES = (8, 16)
"""Output strides every backbone offers."""


class Backbone(nn.Module, abc.ABC):
    """Base class of every backbone.

    Subclasses set ``out_channels``, ``low_channels``, ``output_stride``, ``freeze_bn`` and, when their inputs are
    not ImageNet-normalised, ``normalization`` (the mean/std the backbone expects; :func:`create_backbone` replaces it
    with the weights package's own or the params' override), implement
    :meth:`forward_features`, and call ``self.train()`` at the end of ``__init__`` so that frozen
    layers are frozen from construction on.

    With ``freeze_bn`` every BatchNorm layer stays in eval mode (running statistics are never
    updated) and its affine parameters have ``requires_grad=False``, whatever ``train()`` is called
    with; :meth:`frozen_modules` lists further modules whose parameters never train.
    """

    out_channels: int
    low_channels: int
    output_stride: int
    freeze_bn: bool
    weights_hint: str = "place a compatible state_dict (.pth) at this path"
    normalization: Normalization = IMAGENET

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) normalised -> (B, out_channels, ceil(H/os), ceil(W/os))."""
        return self.forward_features(x)["out"]

    @abc.abstractmethod
    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, 3, H, W) -> {"low": (B, low_channels, ceil(H/4), ceil(W/4)), "out": forward(x)}."""

    def frozen_modules(self) -> Iterable[nn.Module]:
        """Modules whose parameters are never trained (besides BatchNorm under ``freeze_bn``)."""
        return ()

    def checkpoint_key_map(self, key: str) -> str | None:
        """Default key map for this backbone's pretrained checkpoints: new name, or None to drop."""
        return key

    def package_key_map(self, package: PackageWeights) -> KeyMap:
        """Key map for the ``package:`` weights ``package``; ValueError when this backbone cannot hold them."""
        raise ValueError(
            f"weights {package.spec!r} hold {package.architecture} weights; backbone {type(self).__name__} cannot load "
            f"them (use network.backbone: {package.architecture})"
        )

    def train(self, mode: bool = True) -> "Backbone":
        """Set train/eval mode, then re-apply the freezing (frozen BN stays in eval mode)."""
        super().train(mode)
        for module in self.frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
                    for parameter in module.parameters(recurse=False):
                        parameter.requires_grad_(False)
        return self
