"""Strict loading of pretrained weights from local files (never downloaded).

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
import os
import re
from collections.abc import Mapping
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


__all__ = [
    "RESNET38_HEAD_PREFIXES",
    "check_state_dict_matches",
    "file_sha256",
    "load_weights",
    "read_checkpoint",
    "remap_state_dict",
    "resnet38_checkpoint_key_map",
    "torchvision_imagenet_key_map",
]
