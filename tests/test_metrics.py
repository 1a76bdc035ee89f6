"""SegmentationMetric and SaliencyMetric against hand-computed confusion matrices and counts."""

import math

import numpy as np
import pytest
import torch

from auxseg.metrics import SaliencyMetric, SegmentationMetric


def test_hand_computed_confusion_with_ignore_in_gt_and_prediction():
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 255], [0, 2, 0, 1]])
    metric = SegmentationMetric(3)
    metric.update(pred, gt)
    # GT 255 dropped (last pixel). Rows = gt, columns = pred 0,1,2,unlabelled.
    expected = np.array([[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]])
    np.testing.assert_array_equal(metric.confusion, expected)
    result = metric.compute()
    # class 0: TP 2, FP 1 (gt2->0), FN 1 (->1); class 1: TP 1, FP 1, FN 1 (unlabelled); class 2: TP 1, FP 0, FN 1
    assert result["iou"] == pytest.approx([2 / 4, 1 / 3, 1 / 2])
    assert result["miou"] == pytest.approx((2 / 4 + 1 / 3 + 1 / 2) / 3)
    assert result["precision_per_class"] == pytest.approx([2 / 3, 1 / 2, 1 / 1])
    assert result["recall_per_class"] == pytest.approx([2 / 3, 1 / 2, 1 / 2])
    assert result["precision"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert result["recall"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert result["pixel_accuracy"] == pytest.approx(4 / 7)
    assert result["labelled_fraction"] == pytest.approx(6 / 7)
    assert result["num_pixels"] == 7


def test_absent_class_is_left_out_of_the_mean():
    gt = np.array([[0, 0, 2, 2]])
    pred = np.array([[0, 0, 2, 0]])
    metric = SegmentationMetric(3, class_names=["bg", "cat", "dog"])
    metric.update(pred, gt)
    result = metric.compute()
    assert math.isnan(result["iou"][1])
    assert result["per_class_iou"]["dog"] == pytest.approx(1 / 2)
    assert result["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_predicted_but_absent_in_gt_counts_with_zero_iou():
    metric = SegmentationMetric(3)
    metric.update(np.array([[1, 1]]), np.array([[0, 0]]))
    result = metric.compute()
    assert result["iou"][0] == 0.0 and result["iou"][1] == 0.0
    assert math.isnan(result["iou"][2])
    assert result["miou"] == 0.0


def test_streaming_equals_batch_and_accepts_torch():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(3, 8, 9))
    gt[:, 0, :] = 255
    pred = rng.integers(0, 4, size=(3, 8, 9))
    pred[:, :, 0] = 255
    streaming = SegmentationMetric(4)
    for p, g in zip(pred, gt):
        streaming.update(torch.from_numpy(p), torch.from_numpy(g))
    batch = SegmentationMetric(4)
    batch.update(pred, gt)
    np.testing.assert_array_equal(streaming.confusion, batch.confusion)
    assert streaming.compute()["miou"] == pytest.approx(batch.compute()["miou"])


@pytest.mark.parametrize(
    "pred, gt, message",
    [
        (np.zeros((2, 2)), np.zeros((2, 3)), "shape"),
        (np.array([[5, 0]]), np.array([[0, 0]]), "prediction has values"),
        (np.array([[0, 0]]), np.array([[0, 7]]), "ground truth has values"),
        (np.zeros(4), np.zeros(4), "expected"),
    ],
)
def test_bad_input_raises(pred, gt, message):
    with pytest.raises(ValueError, match=message):
        SegmentationMetric(3).update(pred, gt)


def test_confusion_table_rows():
    metric = SegmentationMetric(2, class_names=["background", "cat"])
    metric.update(np.array([[0, 1, 255]]), np.array([[0, 0, 1]]))
    rows = {(r["actual"], r["predicted"]): r["count"] for r in metric.confusion_table()}
    assert rows[("background", "background")] == 1
    assert rows[("background", "cat")] == 1
    assert rows[("cat", "unlabelled")] == 1
    assert sum(rows.values()) == 3


def test_saliency_mae_and_max_f_by_hand():
    saliency = np.array([[1.0, 0.6], [0.2, 0.0]])
    mask = np.array([[1, 0], [1, 0]])
    metric = SaliencyMetric()
    metric.update(saliency, mask)
    result = metric.compute()
    assert result["mae"] == pytest.approx((0 + 0.6 + 0.8 + 0) / 4)
    # thresholds: t<=0.2 -> P=2/3,R=1; t in (0.2,0.6] -> P=1/2,R=1/2; t in (0.6,1] -> P=1,R=1/2
    def f(p, r):
        return 1.3 * p * r / (0.3 * p + r)
    assert result["max_f"] == pytest.approx(max(f(2 / 3, 1), f(0.5, 0.5), f(1, 0.5)))


def test_saliency_perfect_map_and_ignore():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    metric = SaliencyMetric()
    noisy = mask.astype(float)
    noisy[0, 0] = 1.0
    ignore = np.zeros_like(mask)
    ignore[0, 0] = True
    metric.update(noisy, mask, ignore=ignore)
    result = metric.compute()
    assert result["mae"] == 0.0 and result["max_f"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(mask * 2.0, mask)
