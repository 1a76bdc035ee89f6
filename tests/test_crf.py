"""Tests of the dense CRFs (pydensecrf) and of the process pool that runs them."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from auxseg.crf import dense_crf, dense_crf_present, saliency_crf
from auxseg.parallel import limit_worker_threads, process_map

HEIGHT, WIDTH = 24, 32


def _two_colour_scene(seed: int = 0, flip_rate: float = 0.3):
    """Image with a blue left part and a red right part, the true split, and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    truth[:, WIDTH // 2 + 3 :] = 1
    image = np.where(truth[..., None] == 1, np.uint8([200, 40, 40]), np.uint8([30, 60, 200])).astype(np.uint8)
    noisy = np.where(rng.random((HEIGHT, WIDTH)) < flip_rate, 1 - truth, truth)
    return image, truth, noisy


def _random_probs(rng: np.random.Generator, num_classes: int, dtype=np.float32) -> np.ndarray:
    logits = rng.normal(0.0, 2.0, (num_classes, HEIGHT, WIDTH))
    probs = np.exp(logits - logits.max(axis=0))
    return (probs / probs.sum(axis=0)).astype(dtype)


def _random_image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- saliency CRF


@pytest.mark.parametrize("iterations", [1, 3])
def test_saliency_crf_without_pairwise_terms_is_softmax_of_negative_unaries(iterations):
    rng = np.random.default_rng(0)
    image = _random_image(rng)
    saliency = rng.random((HEIGHT, WIDTH))
    saliency[0, :3] = [0.0, 1.0, 0.5]
    got = saliency_crf(image, saliency, iterations, gaussian_compat=0, bilateral_compat=0)

    # independent computation of AuxSegNet's crf_for_sal unaries (tau = 1.05, eps = 1e-8)
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    energy_background = -np.log(1.0 - saliency + 1e-8) / (1.05 * sigmoid(1.0 - saliency))
    energy_foreground = -np.log(saliency + 1e-8) / (1.05 * sigmoid(saliency))
    expected = 1.0 / (1.0 + np.exp(energy_foreground - energy_background))
    assert got.dtype == np.float32 and got.shape == (HEIGHT, WIDTH)
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_saliency_crf_defaults_clean_a_noisy_map_and_are_deterministic():
    image, truth, noisy = _two_colour_scene()
    saliency = np.where(noisy == 1, 0.7, 0.3)
    first = saliency_crf(image, saliency)
    second = saliency_crf(image, saliency)
    np.testing.assert_array_equal(first, second)
    assert first.min() >= 0.0 and first.max() <= 1.0
    accuracy_before = ((saliency > 0.5) == truth).mean()
    accuracy_after = ((first > 0.5) == truth).mean()
    assert accuracy_before < 0.75 and accuracy_after > 0.95
    # the pairwise terms matter: the result differs from the unary-only solution
    unary_only = saliency_crf(image, saliency, gaussian_compat=0, bilateral_compat=0)
    assert np.abs(first - unary_only).max() > 0.1


def test_saliency_crf_validates_inputs():
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    saliency = np.full((HEIGHT, WIDTH), 0.5)
    with pytest.raises(ValueError, match="image: expected dtype uint8"):
        saliency_crf(image.astype(np.float32), saliency)
    with pytest.raises(ValueError, match="saliency: expected shape"):
        saliency_crf(image, saliency[:, 1:])
    with pytest.raises(ValueError, match=r"saliency: values must lie in \[0, 1\]"):
        saliency_crf(image, saliency * 3)
    with pytest.raises(ValueError, match="iterations"):
        saliency_crf(image, saliency, -1)
    with pytest.raises(ValueError, match="bilateral_srgb"):
        saliency_crf(image, saliency, bilateral_srgb=0)


# ------------------------------------------------------------------------------------------------ dense CRF


def test_dense_crf_without_pairwise_terms_returns_renormalised_clipped_probs():
    rng = np.random.default_rng(1)
    probs = _random_probs(rng, 4, dtype=np.float64)
    probs[:, 0, 0] = [1.0, 0.0, 0.0, 0.0]  # exercises the clip at 1e-8
    got = dense_crf(_random_image(rng), probs, 5, gaussian_compat=0, bilateral_compat=0)
    clipped = np.clip(probs, 1e-8, 1.0)
    np.testing.assert_allclose(got, clipped / clipped.sum(axis=0), atol=2e-6)


def test_dense_crf_defaults_give_a_deterministic_distribution_that_cleans_labels():
    image, truth, noisy = _two_colour_scene(seed=2)
    probs = np.where(np.arange(2)[:, None, None] == noisy[None], 0.7, 0.3).astype(np.float32)
    first = dense_crf(image, probs)
    assert first.dtype == np.float32 and first.shape == (2, HEIGHT, WIDTH)
    np.testing.assert_allclose(first.sum(axis=0), 1.0, atol=1e-5)
    assert first.min() >= 0.0
    np.testing.assert_array_equal(first, dense_crf(image, probs))
    accuracy_before = (probs.argmax(axis=0) == truth).mean()
    accuracy_after = (first.argmax(axis=0) == truth).mean()
    assert accuracy_before < 0.75 and accuracy_after > 0.98


def test_dense_crf_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    image, probs = _random_image(rng), _random_probs(rng, 3)
    from_tensors = dense_crf(torch.from_numpy(image), torch.from_numpy(probs), 2)
    np.testing.assert_array_equal(from_tensors, dense_crf(image, probs, 2))


def test_dense_crf_validates_inputs():
    rng = np.random.default_rng(4)
    image, probs = _random_image(rng), _random_probs(rng, 3)
    with pytest.raises(ValueError, match=r"image: expected shape \(H, W, 3\)"):
        dense_crf(image[..., :2], probs)
    with pytest.raises(ValueError, match="probs: expected shape"):
        dense_crf(image, probs[:, :, 1:])
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf(image, probs * 0.5)
    with pytest.raises(ValueError, match="floating-point"):
        dense_crf(image, (probs > 0.5).astype(np.int64))
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(image, np.full_like(probs, np.nan))


# -------------------------------------------------------------------------------------- present classes only


def test_dense_crf_present_equals_dense_crf_on_the_renormalised_subarray():
    rng = np.random.default_rng(5)
    image, probs = _random_image(rng), _random_probs(rng, 6)
    got = dense_crf_present(image, probs, [4, 2], iterations=3)
    classes = [0, 2, 4]
    sub = probs[classes] / probs[classes].sum(axis=0, keepdims=True)
    expected = dense_crf(image, sub, 3)
    assert got.shape == (6, HEIGHT, WIDTH) and got.dtype == np.float32
    np.testing.assert_array_equal(got[classes], expected)
    np.testing.assert_array_equal(got[[1, 3, 5]], 0.0)
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-5)


def test_dense_crf_present_passes_crf_parameters_and_handles_background_only():
    rng = np.random.default_rng(6)
    image, probs = _random_image(rng), _random_probs(rng, 3)
    got = dense_crf_present(image, probs, [0, 1, 1], iterations=2, gaussian_compat=0, bilateral_compat=0)
    sub = probs[:2] / probs[:2].sum(axis=0, keepdims=True)
    np.testing.assert_allclose(got[:2], sub, atol=2e-6)
    background_only = dense_crf_present(image, probs, [])
    np.testing.assert_array_equal(background_only[0], 1.0)
    np.testing.assert_array_equal(background_only[1:], 0.0)
    # pixels where every used class has probability 0 get a uniform sub-distribution
    probs[:, 0, 0] = [0.0, 0.0, 1.0]
    no_mass = dense_crf_present(image, probs, [1], iterations=0)
    np.testing.assert_allclose(no_mass[:, 0, 0], [0.5, 0.5, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="present: class indices"):
        dense_crf_present(image, probs, [3])
    with pytest.raises(TypeError, match="unexpected keyword"):
        dense_crf_present(image, probs, [1], gaussian_sigma=3)


# ---------------------------------------------------------------------------------------------- process pool


def _crf_labels(seed: int) -> np.ndarray:
    """Module-level (picklable) work item: CRF label map of a random scene."""
    rng = np.random.default_rng(seed)
    return dense_crf(_random_image(rng), _random_probs(rng, 3), 2).argmax(axis=0)


def _thread_settings(_: int) -> tuple[str, ...]:
    import os

    return tuple(os.environ.get(name, "") for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))


def test_process_map_inline_preserves_order_and_identifies_failing_item():
    assert process_map(math.sqrt, [9, 1, 4, 16], workers=1) == [3.0, 1.0, 2.0, 4.0]
    assert process_map(functools.partial(pow, 2), range(5), workers=0) == [1, 2, 4, 8, 16]
    assert process_map(math.sqrt, [], workers=4) == []
    with pytest.raises(ValueError, match=r"failed on item 2: -1\b") as error:
        process_map(math.sqrt, [4, 1, -1, -4], workers=1)
    assert "math domain error" in str(error.value)


def test_process_map_pool_matches_inline_and_raises_with_the_item(capsys):
    seeds = list(range(6))
    inline = process_map(_crf_labels, seeds, workers=1)
    pooled = process_map(_crf_labels, seeds, workers=2, chunksize=2, desc="crf")
    assert len(pooled) == len(seeds)
    for expected, got in zip(inline, pooled):
        np.testing.assert_array_equal(got, expected)
    assert "crf" in capsys.readouterr().err  # the tqdm bar
    # the first failing item in input order is reported, with its original exception type
    with pytest.raises(ValueError, match=r"failed on item 3: -9\b"):
        process_map(math.sqrt, [1, 4, 9, -9, 16, -16], workers=2)
    assert process_map(_thread_settings, [0, 1], workers=2) == [("1", "1", "1")] * 2


def test_process_map_validates_arguments():
    with pytest.raises(ValueError, match="chunksize"):
        process_map(math.sqrt, [1], workers=2, chunksize=0)
    with pytest.raises(ValueError, match="workers"):
        process_map(math.sqrt, [1], workers=2.0)
    with pytest.raises(ValueError, match="callable"):
        process_map(None, [1], workers=1)


def test_limit_worker_threads_sets_environment(monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "8")
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        limit_worker_threads()
        assert _thread_settings(0) == ("1", "1", "1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
