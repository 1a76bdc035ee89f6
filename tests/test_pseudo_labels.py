"""Tests of CAM + saliency fusion (AuxSegNet fusion_cam rules) and the label confidence map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auxseg.pseudo_labels import fuse_cam_saliency, fuse_cam_saliency_batch, label_confidence


def _row(cam_values: list[list[float]], saliency_values: list[float], dtype=np.float32):
    """CAM (K, 1, N) and saliency (1, N) from per-class rows of values."""
    cam = np.asarray(cam_values, dtype=dtype)[:, None, :]
    saliency = np.asarray(saliency_values, dtype=dtype)[None, :]
    return cam, saliency


def test_all_four_cam_saliency_cases():
    # pixels: (cam hi, sal hi), (cam lo, sal lo), (cam hi, sal lo), (cam lo, sal hi)
    cam, saliency = _row([[0.9, 0.1, 0.5, 0.0], [0.3, 0.0, 0.8, 0.1]], [0.7, 0.01, 0.02, 0.9])
    label = fuse_cam_saliency(cam, saliency, np.array([1, 1]))
    assert label.dtype == np.int64
    assert label.shape == (1, 4)
    np.testing.assert_array_equal(label[0], [1, 0, 255, 255])


def test_object_label_is_one_plus_argmax():
    cam, saliency = _row([[0.9, 0.3], [0.4, 0.6]], [0.5, 0.5])
    np.testing.assert_array_equal(fuse_cam_saliency(cam, saliency, [1, 1])[0], [1, 2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thresholds_are_strict(dtype):
    cam_at = float(np.asarray(0.2, dtype=dtype))
    cam_above = float(np.nextafter(np.asarray(0.2, dtype=dtype), dtype(1)))
    sal_at = float(np.asarray(0.06, dtype=dtype))
    sal_above = float(np.nextafter(np.asarray(0.06, dtype=dtype), dtype(1)))
    cam, saliency = _row(
        [[cam_at, cam_above, cam_at, cam_above]], [sal_at, sal_at, sal_above, sal_above], dtype=dtype
    )
    label = fuse_cam_saliency(cam, saliency, [1])
    # CAM exactly 0.2 is not object; saliency exactly 0.06 is not salient
    np.testing.assert_array_equal(label[0], [0, 255, 255, 1])


def test_custom_thresholds_and_ignore_index():
    cam, saliency = _row([[0.45, 0.55, 0.55]], [0.6, 0.6, 0.4])
    label = fuse_cam_saliency(cam, saliency, [1], cam_threshold=0.5, saliency_threshold=0.5, ignore_index=99)
    np.testing.assert_array_equal(label[0], [99, 1, 99])


def test_absent_class_never_wins():
    # class 0 absent with a high CAM; class 1 present
    cam, saliency = _row([[0.99, 0.99, 0.99], [0.5, 0.1, 0.0]], [0.9, 0.9, 0.01])
    label = fuse_cam_saliency(cam, saliency, [0, 1])
    # pixel 0: present class wins; pixel 1: present CAM too low → disagreement; pixel 2: neither → background
    np.testing.assert_array_equal(label[0], [2, 255, 0])


def test_image_without_classes_gives_background_or_ignore():
    cam, saliency = _row([[0.9, 0.9]], [0.9, 0.01])
    np.testing.assert_array_equal(fuse_cam_saliency(cam, saliency, [0])[0], [255, 0])


def test_ties_go_to_lowest_present_class():
    cam, saliency = _row([[0.1, 0.7], [0.7, 0.7], [0.7, 0.7]], [0.5, 0.5])
    np.testing.assert_array_equal(fuse_cam_saliency(cam, saliency, [1, 1, 1])[0], [2, 1])
    np.testing.assert_array_equal(fuse_cam_saliency(cam, saliency, [0, 1, 1])[0], [2, 2])


def test_cam_above_one_is_accepted():
    # propagated CAMs are not renormalised
    cam, saliency = _row([[1.7, 0.1], [2.5, 0.3]], [0.5, 0.5])
    np.testing.assert_array_equal(fuse_cam_saliency(cam, saliency, [1, 1])[0], [2, 2])


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(0)
    cam = rng.random((4, 9, 11), dtype=np.float32) * 0.4
    saliency = rng.random((9, 11), dtype=np.float32) * 0.2
    labels = np.array([1, 0, 1, 1], dtype=np.float32)
    expected = fuse_cam_saliency(cam, saliency, labels)
    got = fuse_cam_saliency(torch.from_numpy(cam), torch.from_numpy(saliency), torch.from_numpy(labels))
    np.testing.assert_array_equal(got, expected)
    values = set(np.unique(expected).tolist())
    assert {0, 255} <= values <= {0, 1, 3, 4, 255} and len(values & {1, 3, 4}) > 0


def test_matches_an_independent_reference():
    """A literal transcription of the rule (multiply by labels, max, argmax, masks) on random data."""
    rng = np.random.default_rng(1)
    cam = rng.random((5, 17, 13))
    saliency = rng.random((17, 13)) * 0.12
    labels = np.array([0, 1, 1, 0, 1])
    masked = cam * labels[:, None, None]
    object_cam = masked.max(axis=0) > 0.2
    object_sal = saliency > 0.06
    reference = np.where(object_cam & object_sal, masked.argmax(axis=0) + 1, 0)
    reference[object_cam != object_sal] = 255
    np.testing.assert_array_equal(fuse_cam_saliency(cam, saliency, labels), reference)


def test_batch_variant_matches_single():
    generator = torch.Generator().manual_seed(0)
    cam = torch.rand(3, 4, 8, 10, generator=generator)
    saliency = torch.rand(3, 1, 8, 10, generator=generator) * 0.15
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    batch = fuse_cam_saliency_batch(cam, saliency, labels)
    assert batch.dtype == torch.int64 and batch.shape == (3, 8, 10)
    for index in range(3):
        single = fuse_cam_saliency(cam[index], saliency[index, 0], labels[index])
        np.testing.assert_array_equal(batch[index].numpy(), single)
    np.testing.assert_array_equal(fuse_cam_saliency_batch(cam, saliency[:, 0], labels).numpy(), batch.numpy())


@pytest.mark.parametrize(
    ("cam_shape", "saliency_shape", "labels_shape", "message"),
    [
        ((4, 5), (4, 5), (1,), "cam"),
        ((2, 4, 5), (4, 6), (2,), "saliency"),
        ((2, 4, 5), (4, 5), (3,), "image_labels"),
    ],
)
def test_shapes_are_validated(cam_shape, saliency_shape, labels_shape, message):
    with pytest.raises(ValueError, match=message):
        fuse_cam_saliency(np.zeros(cam_shape), np.zeros(saliency_shape), np.ones(labels_shape))


def test_values_are_validated():
    cam = np.zeros((2, 3, 3))
    saliency = np.zeros((3, 3))
    with pytest.raises(ValueError, match="saliency"):
        fuse_cam_saliency(cam, saliency + 1.5, [1, 0])
    with pytest.raises(ValueError, match="image_labels"):
        fuse_cam_saliency(cam, saliency, [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        fuse_cam_saliency(np.full((2, 3, 3), np.nan), saliency, [1, 0])
    with pytest.raises(ValueError, match="ignore_index"):
        fuse_cam_saliency(cam, saliency, [1, 0], ignore_index=2)
    with pytest.raises(ValueError, match="cam_threshold"):
        fuse_cam_saliency(cam, saliency, [1, 0], cam_threshold=float("nan"))
    with pytest.raises(ValueError, match="torch tensors"):
        fuse_cam_saliency_batch(cam[None], torch.zeros(1, 3, 3), torch.ones(1, 2))


def test_label_confidence_is_max_over_present_classes_clipped():
    scores = np.array(
        [
            [[0.3, 0.9], [1.4, 0.0]],
            [[0.6, 0.2], [0.1, -0.2]],
            [[0.99, 0.99], [0.99, 0.99]],  # absent class: ignored
        ],
        dtype=np.float32,
    )
    confidence = label_confidence(scores, [1, 1, 0])
    assert confidence.dtype == np.float32
    np.testing.assert_allclose(confidence, [[0.6, 0.9], [1.0, 0.0]])
    np.testing.assert_array_equal(label_confidence(torch.from_numpy(scores), torch.tensor([1, 1, 0])), confidence)


def test_label_confidence_without_classes_is_zero_and_validates():
    np.testing.assert_array_equal(label_confidence(np.ones((2, 3, 4)), [0, 0]), np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="image_labels"):
        label_confidence(np.ones((2, 3, 4)), [1, 0, 1])
    with pytest.raises(ValueError, match="class_scores"):
        label_confidence(np.ones((3, 4)), [1])
