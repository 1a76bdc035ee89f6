"""Feature extractors behind a small timm-style registry.

Every backbone maps an ImageNet-normalised image batch (B, 3, H, W) to a feature map at output
stride 8 (or 16 where supported) of exactly (B, out_channels, ceil(H / os), ceil(W / os)), plus a
stride-4 "low" map (B, low_channels, ceil(H / 4), ceil(W / 4)) for decoders that want detail.

Registered names: ``tiny`` (small CNN trained from scratch, the CPU default), ``resnet50`` and
``resnet101`` (torchvision, dilated), ``resnet38`` (the wide ResNet-38 of PSA / AuxSegNet, see
:mod:`auxseg.models.resnet38`). Pretrained weights come from local files only
(:func:`auxseg.models.weights.load_weights`); nothing is ever downloaded.
"""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

from torch import Tensor, nn

from auxseg.models.weights import load_weights, torchvision_imagenet_key_map

VALID_OUTPUT_STRIDES = (8, 16)

BackboneFactory = Callable[..., "Backbone"]
_FactoryT = TypeVar("_FactoryT", bound=BackboneFactory)
_REGISTRY: dict[str, BackboneFactory] = {}


class Backbone(nn.Module):
    """Base class of every backbone.

    Subclasses set ``out_channels``, ``low_channels``, ``output_stride`` and ``freeze_bn``, implement
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

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) ImageNet-normalised -> (B, out_channels, ceil(H/os), ceil(W/os))."""
        return self.forward_features(x)["out"]

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, 3, H, W) -> {"low": (B, low_channels, ceil(H/4), ceil(W/4)), "out": forward(x)}."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features")

    def frozen_modules(self) -> Iterable[nn.Module]:
        """Modules whose parameters are never trained (besides BatchNorm under ``freeze_bn``)."""
        return ()

    def checkpoint_key_map(self, key: str) -> str | None:
        """Default key map for this backbone's pretrained checkpoints: new name, or None to drop."""
        return key

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


def register_backbone(name: str) -> Callable[[_FactoryT], _FactoryT]:
    """Decorator registering ``factory(*, output_stride=8, freeze_bn=None) -> Backbone`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone name must be a non-empty string, got {name!r}")

    def decorator(factory: _FactoryT) -> _FactoryT:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def create_backbone(
    name: str,
    *,
    output_stride: int = 8,
    weights: str | None = None,
    sha256: str | None = None,
    freeze_bn: bool | None = None,
) -> Backbone:
    """Build the backbone ``name``; optionally load a local checkpoint strictly.

    ``freeze_bn=None`` keeps the backbone's default (tiny: False; resnet38/50/101: True).
    ``weights`` is a local .pth file read with the backbone's default key map (e.g. ``fc.*`` of a
    torchvision ImageNet checkpoint or the AuxSegNet heads are dropped); ``sha256`` checks it.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered backbones: {', '.join(list_backbones())}")
    if isinstance(output_stride, bool) or output_stride not in VALID_OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")
    if sha256 is not None and weights is None:
        raise ValueError(f"sha256 was given ({sha256}) but no weights file to check it against")
    backbone = _REGISTRY[name](output_stride=output_stride, freeze_bn=freeze_bn)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"factory of backbone {name!r} returned {type(backbone).__name__}, not a Backbone")
    if weights is not None:
        load_weights(backbone, weights, sha256=sha256, key_map=backbone.checkpoint_key_map, hint=backbone.weights_hint)
    backbone.train()
    return backbone


class BackboneModel(nn.Module):
    """Base of the networks built on a registry backbone: ``Model(backbone, num_classes, **options)``."""

    @classmethod
    def from_backbone_name(
        cls,
        backbone_name: str,
        num_classes: int,
        /,
        *,
        output_stride: int = 8,
        backbone_weights: str | None = None,
        backbone_sha256: str | None = None,
        freeze_bn: bool | None = None,
        **options,
    ):
        """Build the backbone with :func:`create_backbone`, then ``cls(backbone, num_classes, **options)`` on it.

        ``num_classes`` is the constructor's second argument (foreground classes for the classifier, AuxSegNet and
        the single-stage model; background included for DeepLab); ``options`` are the constructor's keywords.
        """
        backbone = create_backbone(
            backbone_name,
            output_stride=output_stride,
            weights=backbone_weights,
            sha256=backbone_sha256,
            freeze_bn=freeze_bn,
        )
        return cls(backbone, num_classes, **options)


def _conv_bn_relu(in_channels: int, out_channels: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (padding = dilation, so stride 2 maps n -> ceil(n/2)) -> BN -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(Backbone):
    """Small conv-BN-ReLU CNN for CPU runs on ~100-160 px images (about 1.1 M parameters).

    Stages 32-64-128-256 channels; three stride-2 3x3 convs give stride 8 with exact ceil sizes; two more 3x3 convs
    at stride 8 give a receptive field of 71 px, about half the side of the synthetic images. A wider field (rates 2
    and 4, 135 px, the whole image) made every position see every object, so CAMs of co-occurring classes fired on
    the same blob: CAM-seed mIoU 0.29 vs 0.33 with 71 px (same data, 40 epochs). The AuxSegNet branches and the
    DeepLab head add their own dilated context on top. With ``output_stride=16`` the first context conv has
    stride 2 and the second dilation 2. ``low`` is the stride-4 map (64 channels).
    """

    weights_hint = "the tiny backbone is trained from scratch; pass a state_dict saved from TinyBackbone"

    def __init__(self, output_stride: int = 8, freeze_bn: bool = False) -> None:
        super().__init__()
        if output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(f"tiny: output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")
        self.output_stride = output_stride
        self.freeze_bn = freeze_bn
        self.low_channels = 64
        self.out_channels = 256
        first_rate, second_rate, context_stride = (1, 1, 1) if output_stride == 8 else (1, 2, 2)
        self.stem = _conv_bn_relu(3, 32, stride=2)
        self.stage2 = nn.Sequential(_conv_bn_relu(32, 64, stride=2), _conv_bn_relu(64, 64))
        self.stage3 = nn.Sequential(_conv_bn_relu(64, 128, stride=2), _conv_bn_relu(128, 128))
        self.context = nn.Sequential(
            _conv_bn_relu(128, 256, stride=context_stride, dilation=first_rate),
            _conv_bn_relu(256, 256, dilation=second_rate),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.train()

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, 3, H, W) -> {"low": (B, 64, ceil(H/4), ceil(W/4)), "out": (B, 256, ceil(H/os), ceil(W/os))}."""
        low = self.stage2(self.stem(x))
        out = self.context(self.stage3(low))
        return {"low": low, "out": out}


class TorchvisionResNetBackbone(Backbone):
    """torchvision ResNet-50/101 without avgpool/fc; layer3/layer4 dilated for stride 8.

    Stride 8: ``replace_stride_with_dilation=[False, True, True]``; stride 16: ``[False, False, True]``.
    The submodules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so
    torchvision ImageNet checkpoints load once ``fc.*`` is dropped. ``low`` = layer1 (256 channels),
    ``out`` = layer4 (2048 channels). Weights are never downloaded (``weights=None``).
    """

    # torchvision is imported only when a ResNet is built: it adds ~1.5 s to every stage's start-up otherwise.
    _ARCHITECTURES = ("resnet50", "resnet101")
    _CHECKPOINT_NAMES = {"resnet50": "resnet50-19c8e357.pth or resnet50-0676ba61.pth",
                         "resnet101": "resnet101-5d3b4d8f.pth or resnet101-63fe2227.pth"}

    def __init__(self, depth_name: str, output_stride: int = 8, freeze_bn: bool = True) -> None:
        super().__init__()
        if depth_name not in self._ARCHITECTURES:
            raise ValueError(f"depth_name must be one of {sorted(self._ARCHITECTURES)}, got {depth_name!r}")
        if output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(
                f"{depth_name}: output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}"
            )
        dilate = [False, True, True] if output_stride == 8 else [False, False, True]
        import torchvision

        network = getattr(torchvision.models, depth_name)(weights=None, replace_stride_with_dilation=dilate)
        self.output_stride = output_stride
        self.freeze_bn = freeze_bn
        self.low_channels = 256
        self.out_channels = 2048
        self.weights_hint = (
            f"use torchvision's ImageNet checkpoint for {depth_name} ({self._CHECKPOINT_NAMES[depth_name]}, "
            "from $TORCH_HOME/hub/checkpoints on a machine with internet access)"
        )
        self.conv1 = network.conv1
        self.bn1 = network.bn1
        self.relu = network.relu
        self.maxpool = network.maxpool
        self.layer1 = network.layer1
        self.layer2 = network.layer2
        self.layer3 = network.layer3
        self.layer4 = network.layer4
        self.train()

    def checkpoint_key_map(self, key: str) -> str | None:
        """Drop the ImageNet classifier (``fc.*``); keep every other torchvision name."""
        return torchvision_imagenet_key_map(key)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, 3, H, W) -> {"low": (B, 256, ceil(H/4), ceil(W/4)), "out": (B, 2048, ceil(H/os), ceil(W/os))}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        out = self.layer4(self.layer3(self.layer2(low)))
        return {"low": low, "out": out}


@register_backbone("tiny")
def tiny(*, output_stride: int = 8, freeze_bn: bool | None = None) -> Backbone:
    """Small CNN trained from scratch; BatchNorm trainable unless ``freeze_bn``."""
    return TinyBackbone(output_stride=output_stride, freeze_bn=False if freeze_bn is None else freeze_bn)


@register_backbone("resnet50")
def resnet50(*, output_stride: int = 8, freeze_bn: bool | None = None) -> Backbone:
    """Dilated torchvision ResNet-50; BatchNorm frozen unless ``freeze_bn=False``."""
    return TorchvisionResNetBackbone("resnet50", output_stride, True if freeze_bn is None else freeze_bn)


@register_backbone("resnet101")
def resnet101(*, output_stride: int = 8, freeze_bn: bool | None = None) -> Backbone:
    """Dilated torchvision ResNet-101; BatchNorm frozen unless ``freeze_bn=False``."""
    return TorchvisionResNetBackbone("resnet101", output_stride, True if freeze_bn is None else freeze_bn)


@register_backbone("resnet38")
def resnet38(*, output_stride: int = 8, freeze_bn: bool | None = None) -> Backbone:
    """Wide ResNet-38 (model A1) as in PSA / AuxSegNet; BatchNorm and conv1a frozen by default."""
    from auxseg.models.resnet38 import ResNet38

    return ResNet38(output_stride=output_stride, freeze_bn=True if freeze_bn is None else freeze_bn)


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (only those with requires_grad if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "Backbone",
    "BackboneModel",
    "TinyBackbone",
    "TorchvisionResNetBackbone",
    "count_parameters",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
