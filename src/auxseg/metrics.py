"""Streaming segmentation and saliency metrics (update per image, compute at the end).

Averaging convention (``SegmentationMetric``)
---------------------------------------------
All counts are accumulated over the whole dataset in one confusion matrix ``M[gt, pred]`` (pixels, not
per-image averages), as VOC and AuxSegNet report them. Ground-truth pixels equal to ``ignore_index`` are
dropped. A prediction equal to ``ignore_index`` (an unlabelled pseudo-label pixel) is kept as an extra
"not predicted" column: it counts as a false negative of its ground-truth class, never as a false positive.
Per class c:

* IoU_c = TP / (TP + FP + FN), precision_c = TP / (TP + FP), recall_c = TP / (TP + FN)
  (FN includes the ground-truth pixels of c left at ``ignore_index``).
* ``miou``, ``mean_precision`` and ``mean_recall`` average over the classes where the ratio is defined
  (non-zero denominator); a class absent from both ground truth and predictions is left out (NaN in the list).
* ``precision`` and ``recall`` (the pseudo-label quality figures of AuxSegNet's Fig. 6) are the same per-class
  means; ``pixel_accuracy`` = Σ TP / (number of non-ignored ground-truth pixels), unlabelled pixels count as wrong.
* ``labelled_fraction`` = share of non-ignored ground-truth pixels that received a label.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from auxseg.io import as_label_indices


def _to_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


class SegmentationMetric:
    """Confusion-matrix metric for label maps with values 0..num_classes-1 and ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Sequence[str] | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries, expected {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        # Column num_classes holds ground-truth pixels the prediction left unlabelled (ignore_index).
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, pred, gt) -> None:
        """Add one image (H, W) or a batch (B, H, W) of integer predictions and ground truth.

        Integer arrays/tensors, or float ones holding only finite whole numbers; a non-integer value (soft
        probabilities passed by mistake), NaN or ±infinity is a ValueError, as is a value outside
        0..num_classes-1 and ``ignore_index``.
        """
        pred = _to_numpy(pred)
        gt = _to_numpy(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
        if pred.ndim not in (2, 3):
            raise ValueError(f"expected (H, W) or (B, H, W) label maps, got shape {pred.shape}")
        pred = as_label_indices(pred, "prediction").ravel()
        gt = as_label_indices(gt, "ground truth").ravel()
        keep = gt != self.ignore_index
        pred = pred[keep]
        gt = gt[keep]
        if gt.size == 0:
            return
        if gt.min() < 0 or gt.max() >= self.num_classes:
            bad = np.unique(gt[(gt < 0) | (gt >= self.num_classes)])
            raise ValueError(f"ground truth has values {bad.tolist()} outside 0..{self.num_classes - 1} and {self.ignore_index}")
        unlabelled = pred == self.ignore_index
        invalid = ~unlabelled & ((pred < 0) | (pred >= self.num_classes))
        if invalid.any():
            bad = np.unique(pred[invalid])
            raise ValueError(f"prediction has values {bad.tolist()} outside 0..{self.num_classes - 1} and {self.ignore_index}")
        pred = np.where(unlabelled, self.num_classes, pred)
        width = self.num_classes + 1
        self.confusion += np.bincount(gt * width + pred, minlength=self.num_classes * width).reshape(
            self.num_classes, width
        )

    def compute(self) -> dict:
        """Return ``miou``, ``iou`` (list per class), ``precision``, ``recall``, ``pixel_accuracy`` and more."""
        square = self.confusion[:, : self.num_classes].astype(np.float64)
        true_positive = np.diag(square)
        gt_pixels = self.confusion.sum(axis=1).astype(np.float64)  # includes unlabelled
        predicted_pixels = square.sum(axis=0)
        false_negative = gt_pixels - true_positive
        false_positive = predicted_pixels - true_positive
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = true_positive / (true_positive + false_positive + false_negative)
            precision = true_positive / predicted_pixels
            recall = true_positive / gt_pixels
        total = gt_pixels.sum()
        labelled = square.sum()

        def mean(values: np.ndarray) -> float:
            finite = values[np.isfinite(values)]
            return float(finite.mean()) if finite.size else float("nan")

        def as_list(values: np.ndarray) -> list:
            return [float(v) if np.isfinite(v) else float("nan") for v in values]

        return {
            "miou": mean(iou),
            "iou": as_list(iou),
            "per_class_iou": {name: float(v) for name, v in zip(self.class_names, iou)},
            "precision": mean(precision),
            "recall": mean(recall),
            "precision_per_class": as_list(precision),
            "recall_per_class": as_list(recall),
            "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
            "labelled_fraction": float(labelled / total) if total else float("nan"),
            "num_pixels": int(total),
        }

    def confusion_table(self) -> list[dict]:
        """Long table rows {actual, predicted, count} over class names, 'unlabelled' for ignore predictions."""
        names = self.class_names + ["unlabelled"]
        return [
            {"actual": self.class_names[g], "predicted": names[p], "count": int(self.confusion[g, p])}
            for g in range(self.num_classes)
            for p in range(self.num_classes + 1)
        ]


class SaliencyMetric:
    """Mean absolute error and maximum F-measure (β² = 0.3) of saliency maps against binary masks.

    ``update(saliency, mask, ignore=None)``: saliency float (H, W) in [0, 1], mask (H, W) in {0, 1}
    (or bool); optional ignore (H, W) bool marks pixels to skip. MAE is the mean over images of the
    per-image mean absolute error (the usual SOD convention). Max-F accumulates precision/recall counts
    over the whole dataset at 256 thresholds t/255 (saliency >= t) and reports the best F.
    """

    def __init__(self, beta_squared: float = 0.3, num_thresholds: int = 256):
        self.beta_squared = float(beta_squared)
        self.num_thresholds = int(num_thresholds)
        self.reset()

    def reset(self) -> None:
        self._abs_error_sum = 0.0
        self._images = 0
        self._tp = np.zeros(self.num_thresholds, dtype=np.int64)
        self._predicted = np.zeros(self.num_thresholds, dtype=np.int64)
        self._positives = 0

    def update(self, saliency, mask, ignore=None) -> None:
        saliency = _to_numpy(saliency).astype(np.float64)
        mask = _to_numpy(mask).astype(bool)
        if saliency.shape != mask.shape:
            raise ValueError(f"saliency shape {saliency.shape} differs from mask shape {mask.shape}")
        if not np.isfinite(saliency).all():
            raise ValueError("saliency holds NaN or infinity")
        if saliency.size and (saliency.min() < 0 or saliency.max() > 1):
            raise ValueError("saliency values must lie in [0, 1]")
        if ignore is not None:
            keep = ~_to_numpy(ignore).astype(bool)
            saliency = saliency[keep]
            mask = mask[keep]
        if saliency.size == 0:
            return
        self._abs_error_sum += float(np.abs(saliency - mask).mean())
        self._images += 1
        bins = np.clip(np.floor(saliency * (self.num_thresholds - 1) + 1e-9).astype(np.int64), 0, self.num_thresholds - 1)
        # count of pixels with bin >= t, for every threshold t, via a reversed cumulative histogram
        predicted_hist = np.bincount(bins.ravel(), minlength=self.num_thresholds)
        tp_hist = np.bincount(bins[mask].ravel(), minlength=self.num_thresholds)
        self._predicted += np.cumsum(predicted_hist[::-1])[::-1]
        self._tp += np.cumsum(tp_hist[::-1])[::-1]
        self._positives += int(mask.sum())

    def compute(self) -> dict:
        if self._images == 0:
            return {"mae": float("nan"), "max_f": float("nan"), "best_threshold": float("nan")}
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(self._predicted > 0, self._tp / np.maximum(self._predicted, 1), 0.0)
            recall = self._tp / self._positives if self._positives else np.zeros_like(precision)
            denominator = self.beta_squared * precision + recall
            f_measure = np.where(denominator > 0, (1 + self.beta_squared) * precision * recall / denominator, 0.0)
        best = int(np.argmax(f_measure))
        return {
            "mae": self._abs_error_sum / self._images,
            "max_f": float(f_measure[best]),
            "best_threshold": best / (self.num_thresholds - 1),
        }


__all__ = ["SaliencyMetric", "SegmentationMetric"]
