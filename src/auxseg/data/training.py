"""Datasets that feed :func:`auxseg.engine.train` and batch-1 inference.

Training samples follow AuxSegNet's released augmentation (``tool/exutils.py``): random scale
s ~ U(scale_min, scale_max) (bilinear for the image and grey maps, nearest for label maps), random horizontal
flip with p = 0.5, then a random S×S crop that takes a random offset along a side longer than S and pads at the
bottom/right along a shorter one. The image is padded with 0 *after* normalisation (the mean colour).
Normalisation is the model's (:class:`auxseg.normalization.Normalization`, ImageNet mean/std unless given).

Two deliberate differences from the released code: the scale is drawn per image instead of per batch, and
every random draw comes from a NumPy generator seeded by ``(seed, epoch, index)``, so a sample does not depend
on the batch it lands in, the number of DataLoader workers or the order of access.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from auxseg import IGNORE_INDEX
from auxseg.config import AugmentParams  # re-exported: the params of TrainingSet
from auxseg.io import DataError, load_gray_png, load_label_png
from auxseg.normalization import IMAGENET, IMAGENET_MEAN, IMAGENET_STD, Normalization
from auxseg.params import parse_section, to_dict


def _statistics(normalization: Normalization) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as float32 (3, 1, 1) tensors."""
    return (torch.tensor(normalization.mean, dtype=torch.float32).view(3, 1, 1),
            torch.tensor(normalization.std, dtype=torch.float32).view(3, 1, 1))


class SplitLike(Protocol):
    """The part of :class:`auxseg.data.datasets.DatasetSplit` these datasets use."""

    ids: Sequence[str]
    class_names: Sequence[str]
    image_labels: Mapping[str, np.ndarray]

    @property
    def num_classes(self) -> int: ...

    def load_image(self, image_id: str) -> np.ndarray: ...

    def load_mask(self, image_id: str) -> np.ndarray: ...

    def image_path(self, image_id: str) -> Path: ...


def _check_rgb(image: Any, where: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    return image


def _normalize_chw(image: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """float (3, H, W) in [0, 255] → normalised float32 (3, H, W)."""
    mean, std = _statistics(normalization)
    return (image / 255.0 - mean) / std


def normalize_image(image: np.ndarray, normalization: Normalization = IMAGENET) -> torch.Tensor:
    """uint8 RGB (H, W, 3) → float32 (3, H, W): (x / 255 − mean) / std of ``normalization`` (the model's)."""
    image = _check_rgb(image, "image")
    return _normalize_chw(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float(), normalization)


def denormalize_image(image: torch.Tensor, normalization: Normalization = IMAGENET) -> np.ndarray:
    """Inverse of :func:`normalize_image`: float (3, H, W) → uint8 RGB (H, W, 3), rounded and clipped."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a normalised (3, H, W) tensor, got shape {tuple(image.shape)}")
    mean, std = _statistics(normalization)
    values = (image.detach().float().cpu() * std + mean) * 255.0
    return values.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()



def _resize(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, H, W) float → (C, h, w); bilinear (half-pixel centres, no antialias, like cv2) or nearest."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    if mode == "bilinear":
        return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False, antialias=False)[0]
    return F.interpolate(maps[None], size=size, mode="nearest")[0]


def _color_jitter(pixels: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """pixels float (3, H, W) in [0, 255] → jittered copy in [0, 255]; factors ~ U(1 − strength, 1 + strength)."""
    from torchvision.transforms.v2 import functional as TF

    brightness, contrast, saturation = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    image = pixels / 255.0
    image = TF.adjust_brightness(image, float(brightness))
    image = TF.adjust_contrast(image, float(contrast))
    image = TF.adjust_saturation(image, float(saturation))
    return image.clamp_(0.0, 1.0) * 255.0


def scale_flip_crop(
    image: np.ndarray,
    params: AugmentParams,
    rng: np.random.Generator,
    *,
    label_maps: Mapping[str, np.ndarray] | None = None,
    grey_maps: Mapping[str, np.ndarray] | None = None,
    normalization: Normalization = IMAGENET,
) -> dict[str, torch.Tensor]:
    """Random scale → flip → S×S crop/pad, the same geometry for the image and every map.

    image uint8 (H, W, 3); label_maps uint8 (H, W) class indices; grey_maps float (H, W) in [0, 1].
    Returns "image" float32 (3, S, S) normalised with ``normalization`` (0 on padding), "valid" bool (S, S) (False on padding), each
    label map as int64 (S, S) padded with ``params.label_pad_value`` and each grey map as float32 (S, S)
    padded with 0. Draws, in order: scale, flip coin, top offset, left offset, then, only when
    ``params.color_jitter`` j > 0, brightness, contrast and saturation factors ~ U(1 − j, 1 + j) applied in that
    order to the image (torchvision's functional ops; the maps are untouched).
    """
    image = _check_rgb(image, "image")
    height, width = image.shape[:2]
    label_maps = dict(label_maps or {})
    grey_maps = dict(grey_maps or {})
    for name, array in {**label_maps, **grey_maps}.items():
        if np.shape(array) != (height, width):
            raise ValueError(f"{name}: shape {np.shape(array)} differs from the image's {(height, width)}")

    crop = params.crop_size
    scale = float(rng.uniform(params.scale_min, params.scale_max))
    flip_coin = float(rng.random())
    flip = params.flip and flip_coin < 0.5
    size = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
    top = int(rng.integers(0, size[0] - crop + 1)) if size[0] > crop else 0
    left = int(rng.integers(0, size[1] - crop + 1)) if size[1] > crop else 0
    rows, cols = min(crop, size[0]), min(crop, size[1])

    def place(maps: torch.Tensor, mode: str, fill: float, dtype: torch.dtype) -> torch.Tensor:
        maps = _resize(maps, size, mode)
        if flip:
            maps = maps.flip(-1)
        out = torch.full((maps.shape[0], crop, crop), fill, dtype=dtype)
        out[:, :rows, :cols] = maps[:, top : top + rows, left : left + cols].to(dtype)
        return out

    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    if params.color_jitter > 0:
        pixels = _color_jitter(pixels, params.color_jitter, rng)
    resized = _resize(pixels, size, "bilinear")
    if flip:
        resized = resized.flip(-1)
    out_image = torch.zeros((3, crop, crop), dtype=torch.float32)
    out_image[:, :rows, :cols] = _normalize_chw(resized[:, top : top + rows, left : left + cols], normalization)
    valid = torch.zeros((crop, crop), dtype=torch.bool)
    valid[:rows, :cols] = True

    result: dict[str, torch.Tensor] = {"image": out_image, "valid": valid}
    for name, array in label_maps.items():
        values = torch.from_numpy(np.asarray(array, dtype=np.float32))[None]
        result[name] = place(values, "nearest", float(params.label_pad_value), torch.int64)[0]
    for name, array in grey_maps.items():
        values = torch.from_numpy(np.asarray(array, dtype=np.float32))[None]
        result[name] = place(values, "bilinear", 0.0, torch.float32)[0].clamp_(0.0, 1.0)
    return result


def _check_label_values(label: np.ndarray, num_classes: int, where: str) -> None:
    present = np.unique(label)
    bad = present[(present >= num_classes) & (present != IGNORE_INDEX)]
    if bad.size:
        raise DataError(
            f"{where}: label values {bad.tolist()} are outside 0..{num_classes - 1} and not {IGNORE_INDEX}"
        )


def _existing_dir(directory: str | Path | None, what: str) -> Path | None:
    if directory is None:
        return None
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: {what} directory not found")
    return directory


class TrainingSet(Dataset):
    """Augmented training samples of a split.

    Item ``i`` (for the epoch set by :meth:`set_epoch`) is a dict: "id" str, "image" float32 (3, S, S)
    normalised, "image_labels" float32 (K,) multi-hot over the foreground classes, "valid" bool (S, S) (False on
    padding) and, when requested, "seg" int64 (S, S) (pseudo labels from ``seg_label_dir/<id>.png`` or the
    ground-truth masks with ``use_gt_masks``; padding 255 or 0 per ``augment.pad_label``), "saliency" float32
    (S, S) in [0, 1] (grey PNGs ``saliency_dir/<id>.png``; padding 0) and "confidence" float32 (S, S) (grey
    PNGs ``confidence_dir/<id>.png``; padding 0). A missing or mis-sized file raises :class:`DataError`.
    Images are normalised with ``normalization``, the model's (its backbone's, or the model file's meta).
    """

    def __init__(
        self,
        split: SplitLike,
        augment: AugmentParams,
        *,
        seed: int,
        seg_label_dir: str | Path | None = None,
        saliency_dir: str | Path | None = None,
        confidence_dir: str | Path | None = None,
        use_gt_masks: bool = False,
        normalization: Normalization = IMAGENET,
    ) -> None:
        if not isinstance(normalization, Normalization):
            raise TypeError(f"normalization: expected a Normalization, got {type(normalization).__name__}")
        self.normalization = normalization
        self.augment = parse_section(AugmentParams, to_dict(augment), "augment")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        if use_gt_masks and seg_label_dir is not None:
            raise ValueError("seg_label_dir and use_gt_masks are exclusive: choose pseudo labels or ground truth")
        self.split = split
        self.ids: tuple[str, ...] = tuple(split.ids)
        self.num_classes = int(split.num_classes)
        self.seed = seed
        self.use_gt_masks = use_gt_masks
        self.seg_label_dir = _existing_dir(seg_label_dir, "pseudo-label")
        self.saliency_dir = _existing_dir(saliency_dir, "saliency")
        self.confidence_dir = _existing_dir(confidence_dir, "confidence")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of epoch ``epoch`` (≥ 0); the engine calls this at each epoch start."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        """The generator behind item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def _image_labels(self, image_id: str) -> np.ndarray:
        try:
            labels = np.asarray(self.split.image_labels[image_id], dtype=np.float32)
        except KeyError:
            raise DataError(f"{self.split.image_path(image_id)}: no image-level labels for id '{image_id}'") from None
        if labels.shape != (self.num_classes - 1,):
            raise DataError(
                f"{self.split.image_path(image_id)}: image-level labels have shape {labels.shape}, "
                f"expected ({self.num_classes - 1},)"
            )
        return labels

    def _map(self, directory: Path, image_id: str, shape: tuple[int, int], label: bool) -> np.ndarray:
        path = directory / f"{image_id}.png"
        array = load_label_png(path) if label else load_gray_png(path)
        if array.shape != shape:
            raise DataError(f"{path}: size {array.shape} differs from its image's {shape}")
        if label:
            _check_label_values(array, self.num_classes, str(path))
        return array

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self.ids))[index]
        image_id = self.ids[index]
        image = _check_rgb(self.split.load_image(image_id), str(self.split.image_path(image_id)))
        shape = image.shape[:2]
        label_maps: dict[str, np.ndarray] = {}
        grey_maps: dict[str, np.ndarray] = {}
        if self.use_gt_masks:
            mask = np.asarray(self.split.load_mask(image_id))
            if mask.shape != shape:
                raise DataError(f"{self.split.image_path(image_id)}: mask size {mask.shape} differs from the image's {shape}")
            _check_label_values(mask, self.num_classes, f"mask of {self.split.image_path(image_id)}")
            label_maps["seg"] = mask
        elif self.seg_label_dir is not None:
            label_maps["seg"] = self._map(self.seg_label_dir, image_id, shape, label=True)
        if self.saliency_dir is not None:
            grey_maps["saliency"] = self._map(self.saliency_dir, image_id, shape, label=False)
        if self.confidence_dir is not None:
            grey_maps["confidence"] = self._map(self.confidence_dir, image_id, shape, label=False)
        sample = scale_flip_crop(
            image, self.augment, self.rng(index), label_maps=label_maps, grey_maps=grey_maps,
            normalization=self.normalization,
        )
        return {"id": image_id, "image_labels": torch.from_numpy(self._image_labels(image_id)), **sample}


class InferenceSet(Dataset):
    """Full-size images for batch-1 inference: {"id" str, "image" float32 (3, H, W) normalised,
    "rgb" uint8 (H, W, 3) numpy array (a tensor after default collation)}; "image" normalised with ``normalization``."""

    def __init__(self, split: SplitLike, ids: Sequence[str] | None = None, normalization: Normalization = IMAGENET) -> None:
        self.split = split
        self.normalization = normalization
        known = tuple(split.ids)
        if ids is None:
            self.ids: tuple[str, ...] = known
        else:
            self.ids = tuple(ids)
            unknown = sorted(set(self.ids) - set(known))
            if unknown:
                raise ValueError(f"ids: {len(unknown)} id(s) are not in the split, e.g. {unknown[:3]}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        rgb = _check_rgb(self.split.load_image(image_id), str(self.split.image_path(image_id)))
        return {"id": image_id, "image": normalize_image(rgb, self.normalization), "rgb": rgb}


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentParams",
    "InferenceSet",
    "Normalization",
    "TrainingSet",
    "denormalize_image",
    "normalize_image",
    "scale_flip_crop",
]
