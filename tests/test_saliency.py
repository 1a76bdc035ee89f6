"""Tests of the training-free MB+ saliency and of the external saliency map reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from auxseg.io import DataError
from auxseg.metrics import SaliencyMetric
from auxseg.saliency import load_external_saliency, minimum_barrier_distance, training_free_saliency


def _disc_scene(seed: int, size: int = 96, centre: tuple[float, float] | None = None):
    """A vivid disc on a dull, noisy, striped background: uint8 RGB (size, size, 3) and the disc mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    stripes = 18.0 * np.sin(xx / rng.uniform(2.0, 5.0)) * np.cos(yy / rng.uniform(3.0, 6.0))
    background = rng.uniform(90, 150, 3) + stripes[..., None] + rng.normal(0.0, 12.0, (size, size, 3))
    radius = rng.uniform(0.12, 0.22) * size
    if centre is None:
        centre = (rng.uniform(radius + 2, size - radius - 2), rng.uniform(radius + 2, size - radius - 2))
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
    hue = rng.uniform(0.0, 1.0)
    vivid = 128.0 + 110.0 * np.cos(2.0 * np.pi * (hue + np.arange(3) / 3.0))
    image = np.where(disc[..., None], vivid + rng.normal(0.0, 12.0, (size, size, 3)), background)
    return np.clip(image, 0, 255).astype(np.uint8), disc


def test_vivid_disc_on_textured_background_is_salient():
    metric = SaliencyMetric()
    for seed in range(6):
        image, disc = _disc_scene(seed)
        saliency = training_free_saliency(image)
        assert saliency.dtype == np.float32 and saliency.shape == disc.shape
        assert saliency.min() >= 0.0 and saliency.max() <= 1.0
        assert saliency[disc].mean() > saliency[~disc].mean() + 0.5
        metric.update(saliency, disc)
    result = metric.compute()
    assert result["max_f"] > 0.9
    assert result["mae"] < 0.1


def test_disc_touching_the_border_stays_salient():
    image, disc = _disc_scene(7, centre=(48.0, 6.0))
    saliency = training_free_saliency(image)
    metric = SaliencyMetric()
    metric.update(saliency, disc)
    assert metric.compute()["max_f"] > 0.8
    assert saliency[disc].mean() > saliency[~disc].mean() + 0.3


def test_saliency_is_deterministic_and_handles_large_and_uniform_images():
    image, disc = _disc_scene(1, size=64)
    np.testing.assert_array_equal(training_free_saliency(image), training_free_saliency(image.copy()))
    # larger than max_side: computed at a smaller size, returned at the input size
    large = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)
    large_disc = np.repeat(np.repeat(disc, 4, axis=0), 4, axis=1)
    saliency = training_free_saliency(large, max_side=64)
    assert saliency.shape == large.shape[:2] and saliency.dtype == np.float32
    assert saliency[large_disc].mean() > saliency[~large_disc].mean() + 0.5
    np.testing.assert_array_equal(training_free_saliency(np.full((20, 30, 3), 77, np.uint8)), 0.0)


def test_saliency_validates_the_image():
    with pytest.raises(ValueError, match="uint8"):
        training_free_saliency(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        training_free_saliency(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="passes"):
        training_free_saliency(np.zeros((10, 10, 3), np.uint8), passes=0)


def test_minimum_barrier_distance_of_a_plateau_is_its_height():
    values = np.zeros((1, 12, 15), np.float32)
    values[0, 3:9, 4:11] = 5.0
    values[0, 5:7, 6:8] = 2.0  # a dip inside the plateau: any path out still crosses the rim
    distance = minimum_barrier_distance(values)
    expected = np.zeros((12, 15), np.float32)
    expected[3:9, 4:11] = 5.0
    np.testing.assert_array_equal(distance, expected)


def test_minimum_barrier_distance_follows_winding_paths_and_sums_channels():
    # a low corridor from the border that turns twice, through a high wall
    values = np.full((9, 9), 8.0, np.float32)
    values[0] = 0.0
    values[1:6, 1] = 1.0
    values[5, 1:7] = 1.0
    values[2:6, 6] = 1.0
    channels = np.stack([values, 2 * values])
    distance = minimum_barrier_distance(channels, passes=2)
    # down, right, then up the corridor: barrier 1 − 0 = 1 in channel 0 and 2 in channel 1
    assert distance[2, 6] == pytest.approx(3.0)
    # one pass of sweeps cannot turn up the last leg of the corridor and crosses a wall instead
    assert minimum_barrier_distance(channels, passes=1)[2, 6] > 3.0
    border_seeds = np.zeros((9, 9), bool)
    border_seeds[4, 4] = True
    assert minimum_barrier_distance(channels, seeds=border_seeds)[4, 4] == 0.0
    with pytest.raises(ValueError, match="seeds"):
        minimum_barrier_distance(channels, seeds=np.zeros((9, 9), bool))


# ------------------------------------------------------------------------------------------ external maps


def test_external_map_is_read_and_scaled(tmp_path):
    values = np.array([[0, 51, 255], [102, 204, 1]], np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "img_1.png")
    saliency = load_external_saliency(tmp_path, "img_1", (2, 3))
    assert saliency.dtype == np.float32
    np.testing.assert_allclose(saliency, values / 255.0, atol=1e-7)


def test_external_colour_map_is_converted_to_grey(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [200, 200, 200]]], np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    saliency = load_external_saliency(str(tmp_path), "c", (2, 2))
    expected = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"), np.float32) / 255.0
    np.testing.assert_array_equal(saliency, expected)
    assert saliency[1, 1] == pytest.approx(200 / 255)


def test_missing_external_map_names_the_expected_file(tmp_path):
    with pytest.raises(DataError) as error:
        load_external_saliency(tmp_path, "absent", (4, 4))
    assert str(error.value).startswith(str(tmp_path / "absent.png"))


def test_external_map_of_the_wrong_size_is_rejected(tmp_path):
    Image.fromarray(np.zeros((5, 7), np.uint8), mode="L").save(tmp_path / "small.png")
    with pytest.raises(DataError) as error:
        load_external_saliency(tmp_path, "small", (6, 7))
    message = str(error.value)
    assert message.startswith(str(tmp_path / "small.png"))
    assert "5x7" in message and "6x7" in message
    with pytest.raises(ValueError, match="expected_size"):
        load_external_saliency(tmp_path, "small", (5,))
