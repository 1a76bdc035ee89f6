"""Segmentation pseudo labels from CAMs and saliency (AuxSegNet spec §4.1), and their confidence maps.

Fusion rule (``tool/imutils.py::fusion_cam`` of the released AuxSegNet code), per pixel, with K foreground
classes and the image-level label vector y ∈ {0, 1}^K:

* cam' = the CAMs of the classes present in the image (y_c = 1); m = max_c cam';
* obj_cam = m > cam_threshold (strict), obj_sal = saliency > saliency_threshold (strict);
* label = 1 + argmax_c cam' where obj_cam and obj_sal, 0 (background) where neither holds,
  ``ignore_index`` where exactly one holds (CAM and saliency disagree).

Absent classes are excluded from both the maximum and the argmax, so an absent class can never win, whatever
its CAM. For non-negative CAMs and thresholds this is exactly the reference's multiplication of the CAMs by the
label vector. Ties in the argmax go to the lowest class index, as ``numpy.argmax`` and ``torch.argmax`` return
the first maximum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from auxseg import IGNORE_INDEX


def _as_numpy(array: Any, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: cannot convert {type(array).__name__} to an array ({error})") from error


def _check_real(array: np.ndarray, name: str) -> None:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name}: expected a real-valued array, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")


def _check_image_labels(labels: np.ndarray, name: str) -> np.ndarray:
    _check_real(labels, name)
    if labels.size and not np.isin(labels, (0, 1)).all():
        bad = np.unique(labels[~np.isin(labels, (0, 1))])[:5]
        raise ValueError(f"{name}: image-level labels must be 0 or 1, got values such as {bad.tolist()}")
    return labels.astype(bool)


def _check_ignore_index(ignore_index: int, num_classes: int) -> None:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    if 0 <= ignore_index <= num_classes:
        raise ValueError(f"ignore_index {ignore_index} collides with the class labels 0..{num_classes}")


def _check_thresholds(cam_threshold: float, saliency_threshold: float) -> None:
    for name, value in (("cam_threshold", cam_threshold), ("saliency_threshold", saliency_threshold)):
        is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not is_number or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def fuse_cam_saliency(
    cam: Any,
    saliency: Any,
    image_labels: Any,
    cam_threshold: float = 0.2,
    saliency_threshold: float = 0.06,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """AuxSegNet's heuristic fusion of CAMs and a saliency map into a pseudo label map.

    cam: (K, H, W) class activation maps of the K foreground classes (numpy or torch), usually in [0, 1];
    values above 1 are accepted (propagated CAMs are not renormalised). saliency: (H, W) in [0, 1].
    image_labels: (K,) in {0, 1} (bool, int or float). Returns int64 (H, W) with values 0 (background),
    1..K (class c+1 for CAM channel c) and ``ignore_index`` (CAM and saliency disagree). Thresholds are strict
    (a CAM of exactly ``cam_threshold`` is not object). Ties between present classes go to the lowest index.
    """
    cam_np = _as_numpy(cam, "cam")
    saliency_np = _as_numpy(saliency, "saliency")
    labels_np = _as_numpy(image_labels, "image_labels")
    if cam_np.ndim != 3:
        raise ValueError(f"cam: expected shape (K, H, W), got {cam_np.shape}")
    num_classes, height, width = cam_np.shape
    if num_classes < 1:
        raise ValueError("cam: needs at least one class channel (K >= 1)")
    if saliency_np.shape != (height, width):
        raise ValueError(f"saliency: expected shape {(height, width)} (as cam {cam_np.shape}), got {saliency_np.shape}")
    if labels_np.shape != (num_classes,):
        raise ValueError(f"image_labels: expected shape ({num_classes},) (as cam {cam_np.shape}), got {labels_np.shape}")
    _check_real(cam_np, "cam")
    _check_real(saliency_np, "saliency")
    if saliency_np.size and (saliency_np.min() < 0 or saliency_np.max() > 1):
        raise ValueError(f"saliency: values must lie in [0, 1], got {saliency_np.min()}..{saliency_np.max()}")
    present = _check_image_labels(labels_np, "image_labels")
    _check_thresholds(cam_threshold, saliency_threshold)
    _check_ignore_index(ignore_index, num_classes)

    # Compare in the CAM's own float precision, as the reference does in torch: a float32 CAM of exactly
    # float32(0.2) is not above the threshold 0.2.
    if not np.issubdtype(cam_np.dtype, np.floating):
        cam_np = cam_np.astype(np.float64)
    cam_threshold = float(cam_threshold)
    saliency_threshold = float(saliency_threshold)
    masked = np.where(present[:, None, None], cam_np, np.array(-np.inf, dtype=cam_np.dtype))
    best_class = np.argmax(masked, axis=0)  # first maximum → lowest class index on ties
    best_score = np.take_along_axis(masked, best_class[None], axis=0)[0]
    object_cam = best_score > cam_threshold
    object_saliency = saliency_np > saliency_threshold

    label = np.zeros((height, width), dtype=np.int64)
    both = object_cam & object_saliency
    label[both] = best_class[both] + 1
    label[object_cam ^ object_saliency] = ignore_index
    return label


def fuse_cam_saliency_batch(
    cam: torch.Tensor,
    saliency: torch.Tensor,
    image_labels: torch.Tensor,
    cam_threshold: float = 0.2,
    saliency_threshold: float = 0.06,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Batched :func:`fuse_cam_saliency` in torch (any device; no gradient).

    cam (B, K, H, W), saliency (B, H, W) or (B, 1, H, W) in [0, 1], image_labels (B, K) in {0, 1}
    → int64 (B, H, W) on cam's device, identical per sample to :func:`fuse_cam_saliency`.
    """
    if not all(isinstance(t, torch.Tensor) for t in (cam, saliency, image_labels)):
        raise ValueError("fuse_cam_saliency_batch expects torch tensors; use fuse_cam_saliency for numpy arrays")
    if cam.dim() != 4:
        raise ValueError(f"cam: expected shape (B, K, H, W), got {tuple(cam.shape)}")
    batch, num_classes, height, width = cam.shape
    if saliency.dim() == 4 and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if tuple(saliency.shape) != (batch, height, width):
        raise ValueError(
            f"saliency: expected shape {(batch, height, width)} (or with a channel of 1), got {tuple(saliency.shape)}"
        )
    if tuple(image_labels.shape) != (batch, num_classes):
        raise ValueError(f"image_labels: expected shape {(batch, num_classes)}, got {tuple(image_labels.shape)}")
    if cam.is_floating_point() and not torch.isfinite(cam).all():
        raise ValueError("cam: contains NaN or infinite values")
    if saliency.numel() and (not torch.isfinite(saliency).all() or saliency.min() < 0 or saliency.max() > 1):
        raise ValueError("saliency: values must be finite and lie in [0, 1]")
    if image_labels.numel() and not ((image_labels == 0) | (image_labels == 1)).all():
        raise ValueError("image_labels: image-level labels must be 0 or 1")
    _check_thresholds(cam_threshold, saliency_threshold)
    _check_ignore_index(ignore_index, num_classes)
    cam_threshold = float(cam_threshold)
    saliency_threshold = float(saliency_threshold)

    with torch.no_grad():
        present = image_labels.to(device=cam.device).bool()[:, :, None, None]
        masked = (cam if cam.is_floating_point() else cam.double()).masked_fill(~present, float("-inf"))
        best_class = torch.argmax(masked, dim=1)  # first maximum → lowest class index on ties
        best_score = torch.gather(masked, 1, best_class[:, None])[:, 0]
        object_cam = best_score > cam_threshold
        object_saliency = saliency.to(cam.device) > saliency_threshold
        label = torch.where(object_cam & object_saliency, best_class + 1, torch.zeros_like(best_class))
        label = torch.where(object_cam ^ object_saliency, torch.full_like(label, ignore_index), label)
    return label


def label_confidence(class_scores: Any, image_labels: Any) -> np.ndarray:
    """Per-pixel confidence of a pseudo label map, for the adaptive affinity (AA) loss.

    class_scores: (K, H, W) per-class scores of the K foreground classes (numpy or torch), normally the
    propagated normalised CAMs that :func:`fuse_cam_saliency` thresholds; image_labels: (K,) in {0, 1}.
    Returns float32 (H, W) in [0, 1]: max over the image's present classes of the score, clipped to [0, 1]
    (propagated CAMs are not renormalised and can exceed 1). An image without foreground classes gets zeros.
    This is the "per-pixel max class score of the map that produced the pseudo mask" of the AA loss
    (aa-lr-losses-spec §2 and §6.1, option (i)); the loss weights each neighbour pair by max(c_i, c_j).
    """
    scores = _as_numpy(class_scores, "class_scores")
    labels_np = _as_numpy(image_labels, "image_labels")
    if scores.ndim != 3 or scores.shape[0] < 1:
        raise ValueError(f"class_scores: expected shape (K, H, W) with K >= 1, got {scores.shape}")
    if labels_np.shape != (scores.shape[0],):
        raise ValueError(
            f"image_labels: expected shape ({scores.shape[0]},) (as class_scores {scores.shape}), got {labels_np.shape}"
        )
    _check_real(scores, "class_scores")
    present = _check_image_labels(labels_np, "image_labels")
    if not present.any():
        return np.zeros(scores.shape[1:], dtype=np.float32)
    confidence = scores[present].max(axis=0).astype(np.float32)
    return np.clip(confidence, 0.0, 1.0)


__all__ = ["fuse_cam_saliency", "fuse_cam_saliency_batch", "label_confidence"]
