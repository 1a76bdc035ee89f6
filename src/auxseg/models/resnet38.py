"""Wide ResNet-38 ("model A1" of Wu et al., *Wider or Deeper*), the backbone of PSA and AuxSegNet.

Layout (output stride 8; spec §2.1), every block pre-activation:

- ``conv1a`` 3x3, 3 -> 64, no bias (never trained);
- ``b2`` ResBlock(64, 128, 128, stride 2), ``b2_1``, ``b2_2``;
- ``b3`` ResBlock(128, 256, 256, stride 2), ``b3_1``, ``b3_2``;
- ``b4`` ResBlock(256, 512, 512, stride 2), ``b4_1`` ... ``b4_5``;
- ``b5`` ResBlock(512, 512, 1024, first dilation 1, dilation 2), ``b5_1``, ``b5_2`` (dilation 2);
- ``b6`` bottleneck 1024 -> 2048 (dilation 4, dropout 0.3); ``b7`` bottleneck 2048 -> 4096 (dilation 4,
  dropout 0.5);
- ``bn7`` + ReLU -> ``conv6`` (B, 4096, ceil(H/8), ceil(W/8)).

Parameter and buffer names are those of PSA's ``network/resnet38d.py`` (``conv1a.weight``,
``b2.bn_branch2a.*``, ``b2.conv_branch2a.weight``, ``b2.conv_branch1.weight``, ..., ``bn7.*``) so
PSA / AuxSegNet checkpoints and converted MXNet weights load strictly.

With ``output_stride=16`` the stride removed from ``b5`` is restored (stride 2, no dilation in
``b5*``) and the bottlenecks use dilation 2; every weight keeps its shape.
"""

from __future__ import annotations

from typing import Iterable

import torch.nn.functional as F
from torch import Tensor, nn

from auxseg.models.backbone_base import VALID_OUTPUT_STRIDES, Backbone
from auxseg.models.weights import resnet38_checkpoint_key_map

MXNET_WEIGHTS_NAME = "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"


class ResBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU, then two 3x3 convs; 1x1 projection shortcut if the shape changes.

    x (B, in, H, W) -> (B, out, ceil(H/stride), ceil(W/stride)). The shortcut projection reads the
    BN-ReLU output; an identity shortcut reads the raw input.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.projects_shortcut = in_channels != out_channels or stride != 1
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(
            in_channels, mid_channels, 3, stride=stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(mid_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        if self.projects_shortcut:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward_with_preactivation(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (block output, BN-ReLU of the input); the second is the normalised previous-stage feature."""
        activated = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(activated) if self.projects_shortcut else x
        residual = self.conv_branch2a(activated)
        residual = self.conv_branch2b1(F.relu(self.bn_branch2b1(residual)))
        return shortcut + residual, activated

    def forward(self, x: Tensor) -> Tensor:
        """x (B, in, H, W) -> (B, out, ceil(H/stride), ceil(W/stride))."""
        return self.forward_with_preactivation(x)[0]


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck: BN-ReLU, 1x1 (out/4), BN-ReLU-Dropout2d, dilated 3x3 (out/2),
    BN-ReLU-Dropout2d, 1x1 (out); the 1x1 projection shortcut (always present) reads the BN-ReLU output.

    x (B, in, H, W) -> (B, out, H, W). Dropout stays active in training (even with frozen BN).
    """

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        quarter, half = out_channels // 4, out_channels // 2
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, quarter, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(quarter)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(quarter, half, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(half)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(half, out_channels, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, in, H, W) -> (B, out, H, W)."""
        activated = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(activated)
        residual = self.conv_branch2a(activated)
        residual = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(residual))))
        residual = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(residual))))
        return shortcut + residual


class ResNet38(Backbone):
    """Wide ResNet-38 backbone: (B, 3, H, W) -> ``conv6`` (B, 4096, ceil(H/os), ceil(W/os)).

    ``low`` is the BN-ReLU-activated output of ``b3_2`` (computed inside ``b4``): (B, 256, ceil(H/4),
    ceil(W/4)). With ``freeze_bn`` (default) every BatchNorm stays in eval mode with frozen affine
    parameters after any ``train()`` call, as in PSA's ``Net.train`` override; ``conv1a`` is always
    frozen. Dropout in ``b6``/``b7`` stays active in training.
    """

    weights_hint = (
        f"convert the MXNet ResNet-38 A1 ImageNet weights ({MXNET_WEIGHTS_NAME}) with "
        "`python -m auxseg.tools.convert_resnet38 INPUT.params OUTPUT.pth`, or use a PSA/AuxSegNet "
        "checkpoint (e.g. PSA's res38_cls.pth; its heads are dropped)"
    )

    def __init__(self, output_stride: int = 8, freeze_bn: bool = True) -> None:
        super().__init__()
        if output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(f"resnet38: output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")
        self.output_stride = output_stride
        self.freeze_bn = freeze_bn
        self.low_channels = 256
        self.out_channels = 4096
        if output_stride == 8:
            b5_stride, b5_dilation, bottleneck_dilation = 1, 2, 4
        else:
            b5_stride, b5_dilation, bottleneck_dilation = 2, 1, 2

        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)

        self.b2 = ResBlock(64, 128, 128, stride=2)
        self.b2_1 = ResBlock(128, 128, 128)
        self.b2_2 = ResBlock(128, 128, 128)

        self.b3 = ResBlock(128, 256, 256, stride=2)
        self.b3_1 = ResBlock(256, 256, 256)
        self.b3_2 = ResBlock(256, 256, 256)

        self.b4 = ResBlock(256, 512, 512, stride=2)
        self.b4_1 = ResBlock(512, 512, 512)
        self.b4_2 = ResBlock(512, 512, 512)
        self.b4_3 = ResBlock(512, 512, 512)
        self.b4_4 = ResBlock(512, 512, 512)
        self.b4_5 = ResBlock(512, 512, 512)

        self.b5 = ResBlock(512, 512, 1024, stride=b5_stride, first_dilation=1, dilation=b5_dilation)
        self.b5_1 = ResBlock(1024, 512, 1024, dilation=b5_dilation)
        self.b5_2 = ResBlock(1024, 512, 1024, dilation=b5_dilation)

        self.b6 = BottleneckBlock(1024, 2048, dilation=bottleneck_dilation, dropout=0.3)
        self.b7 = BottleneckBlock(2048, 4096, dilation=bottleneck_dilation, dropout=0.5)

        self.bn7 = nn.BatchNorm2d(4096)
        self.train()

    def frozen_modules(self) -> Iterable[nn.Module]:
        """``conv1a`` never trains (PSA's ``not_training``)."""
        return (self.conv1a,)

    def checkpoint_key_map(self, key: str) -> str | None:
        """Drop PSA/AuxSegNet heads (``fc8``, ``seg_*``, ``sal_*``, ``cross_att``); keep backbone names."""
        return resnet38_checkpoint_key_map(key)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, 3, H, W) -> {"low": (B, 256, ceil(H/4), ceil(W/4)), "out": (B, 4096, ceil(H/os), ceil(W/os))}."""
        x = self.conv1a(x)
        x = self.b2_2(self.b2_1(self.b2(x)))
        x = self.b3_2(self.b3_1(self.b3(x)))
        x, low = self.b4.forward_with_preactivation(x)
        x = self.b4_5(self.b4_4(self.b4_3(self.b4_2(self.b4_1(x)))))
        x = self.b5_2(self.b5_1(self.b5(x)))
        x = self.b7(self.b6(x))
        conv6 = F.relu(self.bn7(x))
        return {"low": low, "out": conv6}


__all__ = ["BottleneckBlock", "MXNET_WEIGHTS_NAME", "ResBlock", "ResNet38"]
