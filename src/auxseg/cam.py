"""Class activation maps: normalisation, multi-scale extraction, compact storage and seed labels.

Conventions (PSA ``infer_cls.py``, AuxSegNet spec §4.2): K foreground classes (no background channel); a normalised CAM
is ReLU(raw) divided per class by its spatial maximum + 1e-5, with classes absent from the image set to 0, so values lie
in [0, 1).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from auxseg.io import DataError, save_npz
from auxseg.runtime import full_precision

CAM_EPSILON = 1e-5
"""Added to each class's spatial maximum before dividing (PSA / AuxSegNet)."""

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _as_numpy(values: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    """numpy view of an array-like; torch tensors are detached and copied to the CPU."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _check_labels_shape(cams_shape: tuple[int, ...], labels_shape: tuple[int, ...]) -> None:
    if len(cams_shape) not in (3, 4):
        raise ValueError(f"cams must be (K, H, W) or (B, K, H, W), got shape {cams_shape}")
    if cams_shape[-1] == 0 or cams_shape[-2] == 0:
        raise ValueError(f"cams must have a non-empty spatial size, got shape {cams_shape}")
    if tuple(labels_shape) != tuple(cams_shape[:-2]):
        raise ValueError(
            f"image_labels shape {tuple(labels_shape)} does not match cams shape {cams_shape} "
            f"(expected {tuple(cams_shape[:-2])})"
        )


def _check_binary(labels: np.ndarray) -> None:
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"image_labels must hold only 0 and 1, got values {np.unique(labels)[:10].tolist()}")


def normalize_cams(cams: ArrayOrTensor, image_labels: np.ndarray | torch.Tensor) -> ArrayOrTensor:
    """ReLU, divide each class map by its spatial max + 1e-5, zero the classes absent from the image.

    cams: raw foreground maps (K, H, W) or (B, K, H, W), numpy or torch (the result is the same kind; torch keeps device
    and autograd). image_labels: (K,) or (B, K) multi-hot in {0, 1}. Returns values in [0, 1): float64 stays float64,
    every other dtype (integers, float16, bfloat16) is computed and returned in float32, since a float16 result would
    round values just below 1 up to 1.0; for a peak above ~300 x / (peak + 1e-5) rounds to 1.0 even in float32, so
    the ratio is capped at the largest float below 1. ValueError when ``cams`` holds NaN or ±infinity (in any class, present or not).
    """
    if isinstance(cams, torch.Tensor):
        labels = torch.as_tensor(image_labels, device=cams.device)
        _check_labels_shape(tuple(cams.shape), tuple(labels.shape))
        _check_binary(_as_numpy(labels))
        values = cams if cams.dtype == torch.float64 else cams.float()
        if values.is_floating_point() and not bool(torch.isfinite(values.detach()).all()):
            raise ValueError("cams hold NaN or infinity")
        positive = F.relu(values)
        peak = positive.amax(dim=(-2, -1), keepdim=True)
        mask = labels.to(positive.dtype)[..., None, None]
        below_one = torch.nextafter(torch.ones((), dtype=positive.dtype), torch.zeros((), dtype=positive.dtype))
        return torch.minimum(positive / (peak + CAM_EPSILON), below_one.to(positive.device)) * mask
    if isinstance(cams, np.ndarray):
        labels_np = _as_numpy(image_labels)
        _check_labels_shape(cams.shape, labels_np.shape)
        _check_binary(labels_np)
        values = cams if cams.dtype == np.float64 else cams.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError("cams hold NaN or infinity")
        positive = np.maximum(values, 0)
        peak = positive.max(axis=(-2, -1), keepdims=True)
        mask = labels_np.astype(positive.dtype)[..., None, None]
        below_one = np.nextafter(positive.dtype.type(1), positive.dtype.type(0))
        ratio = np.minimum(positive / (peak + positive.dtype.type(CAM_EPSILON)), below_one)
        return (ratio * mask).astype(positive.dtype, copy=False)
    raise TypeError(f"cams must be a numpy array or a torch tensor, got {type(cams).__name__}")


def resize_by_scale(image: torch.Tensor, scale: float) -> torch.Tensor:
    """image (B, C, H, W) resized bilinearly (align_corners=False) to (max(1, round(H·scale)), max(1, round(W·scale)));
    the image itself when that is its size (scale 1.0). The resize of every multi-scale forward pass here."""
    height, width = image.shape[-2:]
    size = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    return image if size == (height, width) else F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def multiscale_cams(
    model: nn.Module,
    image: torch.Tensor,
    image_labels: np.ndarray | torch.Tensor,
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
) -> np.ndarray:
    """Multi-scale (and flipped) CAMs of one image, PSA ``infer_cls`` convention (spec §4.2).

    model: anything with ``cams(x) -> (B, K, h, w)`` raw maps (CamClassifier, AuxSegNet); run in eval mode without
    gradients (its mode is restored afterwards). image: (1, 3, H, W) ImageNet-normalised, on the model's device.
    image_labels: (K,) in {0, 1}. For each scale the image is resized (bilinear, align_corners=False); with ``flip`` the
    mirrored image is run too and its maps mirrored back; every ReLU'd map is upsampled to (H, W) (bilinear) and summed;
    the sum is normalised with :func:`normalize_cams`. Returns float32 numpy (K, H, W) in [0, 1). ``model.cams`` runs
    in the caller's autocast state (bf16 under :func:`auxseg.runtime.inference_autocast`); upsampling, sum and
    normalisation run in fp32 regardless.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[:2] != (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a (1, 3, H, W) tensor, got {shape}")
    scales = tuple(float(scale) for scale in scales)
    if not scales or any(not np.isfinite(scale) or scale <= 0 for scale in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales}")
    labels = _as_numpy(image_labels)
    if labels.ndim != 1:
        raise ValueError(f"image_labels must be (K,), got shape {labels.shape}")
    height, width = image.shape[-2:]

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            total: torch.Tensor | None = None
            for scale in scales:
                scaled = resize_by_scale(image, scale)
                batch = torch.cat((scaled, scaled.flip(-1)), dim=0) if flip else scaled
                maps = F.relu(model.cams(batch).float())  # (1 or 2, K, h, w), fp32 also under bf16 autocast
                if maps.dim() != 4 or maps.shape[1] != labels.shape[0]:
                    raise ValueError(
                        f"model.cams returned shape {tuple(maps.shape)}, expected (B, {labels.shape[0]}, h, w) "
                        f"for {labels.shape[0]} image labels"
                    )
                with full_precision(maps.device):
                    maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
                    summed = maps[0] + maps[1].flip(-1) if flip else maps[0]
                    total = summed if total is None else total + summed
    finally:
        model.train(was_training)
    return normalize_cams(total.cpu().numpy().astype(np.float32, copy=False), labels)


def save_cams(path: str | Path, cams: np.ndarray | torch.Tensor, image_labels: np.ndarray | torch.Tensor) -> None:
    """Store the CAMs (K, H, W) of the present classes as float16 ``.npz`` (deterministic bytes).

    Members: ``cams`` float16 (P, H, W), ``classes`` int64 (P,) indices of the present classes, ``num_classes`` and
    ``size`` (H, W). Absent classes are not stored (they load as zeros). Values must be finite and fit float16.
    """
    array = _as_numpy(cams)
    labels = _as_numpy(image_labels)
    if array.ndim != 3:
        raise ValueError(f"{path}: cams must be (K, H, W), got shape {array.shape}")
    _check_labels_shape(array.shape, labels.shape)
    _check_binary(labels)
    classes = np.flatnonzero(labels).astype(np.int64)
    present = array[classes].astype(np.float32)
    if not np.isfinite(present).all() or (present.size and np.abs(present).max() > _FLOAT16_MAX):
        raise ValueError(f"{path}: CAM values must be finite and within ±{_FLOAT16_MAX:g} to be stored as float16")
    save_npz(
        path,
        cams=present.astype(np.float16),
        classes=classes,
        num_classes=np.int64(array.shape[0]),
        size=np.asarray(array.shape[1:], dtype=np.int64),
    )


def load_cams(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read :func:`save_cams` output → (cams float32 (K, H, W) with zeros for absent classes, labels float32 (K,))."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CAM file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            members = {name: archive[name] for name in ("cams", "classes", "num_classes", "size")}
    except KeyError as error:
        raise DataError(f"{path}: not a CAM file, member {error} is missing") from error
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: unreadable CAM file ({error})") from error
    present, classes = members["cams"], members["classes"]
    num_classes, size = int(members["num_classes"]), tuple(int(v) for v in members["size"])
    if (
        len(size) != 2
        or present.ndim != 3
        or classes.ndim != 1
        or present.shape != (classes.shape[0], *size)
        or (classes.size and (classes.min() < 0 or classes.max() >= num_classes))
        or np.unique(classes).size != classes.size
    ):
        raise DataError(
            f"{path}: inconsistent CAM file (cams {present.shape}, classes {classes.tolist()}, "
            f"num_classes {num_classes}, size {size})"
        )
    cams = np.zeros((num_classes, *size), dtype=np.float32)
    cams[classes] = present.astype(np.float32)
    labels = np.zeros(num_classes, dtype=np.float32)
    labels[classes] = 1.0
    return cams, labels


def cam_seed_labels(
    cams: np.ndarray | torch.Tensor, image_labels: np.ndarray | torch.Tensor, background_threshold: float
) -> np.ndarray:
    """Seed label map from normalised CAMs with a constant background score.

    cams (K, H, W), image_labels (K,) in {0, 1} → int64 (H, W) in 0..K: argmax over [background_threshold, cams of the
    present classes] (absent classes never win); label 0 = background, c + 1 = class c. Ties go to the lower index, so a
    CAM equal to the threshold is background. ValueError when ``cams`` holds NaN or ±infinity.
    """
    array = _as_numpy(cams)
    labels = _as_numpy(image_labels)
    if array.ndim != 3:
        raise ValueError(f"cams must be (K, H, W), got shape {array.shape}")
    _check_labels_shape(array.shape, labels.shape)
    _check_binary(labels)
    if not np.isfinite(background_threshold):
        raise ValueError(f"background_threshold must be finite, got {background_threshold}")
    if not np.isfinite(array).all():
        raise ValueError("cams hold NaN or infinity")
    scores = np.where(labels.astype(bool)[:, None, None], array.astype(np.float32), -np.inf)
    background = np.full((1, *array.shape[1:]), background_threshold, dtype=np.float32)
    return np.argmax(np.concatenate((background, scores), axis=0), axis=0).astype(np.int64)


__all__ = ["CAM_EPSILON", "cam_seed_labels", "load_cams", "multiscale_cams", "normalize_cams", "save_cams"]
