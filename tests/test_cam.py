"""CAM normalisation, multi-scale extraction, compact storage and seed labels."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from auxseg.cam import cam_seed_labels, load_cams, multiscale_cams, normalize_cams, save_cams
from auxseg.io import DataError

EPS = 1e-5


# ------------------------------------------------------------------------------------------------ normalize_cams
def test_normalize_cams_by_hand_numpy():
    cams = np.array(
        [
            [[-1.0, 2.0], [4.0, 0.0]],  # present: relu then / (4 + eps)
            [[9.0, 9.0], [9.0, 9.0]],  # absent: zero
            [[-3.0, -1.0], [-2.0, -5.0]],  # present but all negative: zero
        ],
        dtype=np.float32,
    )
    out = normalize_cams(cams, np.array([1, 0, 1]))
    expected = np.zeros_like(cams)
    expected[0] = np.array([[0.0, 2.0], [4.0, 0.0]]) / (4.0 + EPS)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == cams.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.max() < 1.0


def test_normalize_cams_batched_and_torch_agree_with_unbatched_numpy():
    rng = np.random.default_rng(0)
    cams = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = np.array([[1, 1, 0], [0, 1, 1]])
    batched = normalize_cams(cams, labels)
    for b in range(2):
        np.testing.assert_allclose(batched[b], normalize_cams(cams[b], labels[b]), rtol=1e-6)
    as_torch = normalize_cams(torch.from_numpy(cams), torch.from_numpy(labels).float())
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), batched, rtol=1e-6)
    per_class_max = batched.max(axis=(-2, -1))
    np.testing.assert_allclose(per_class_max[labels == 1], 1.0, atol=1e-4)  # each present class peaks at ~1
    assert (per_class_max[labels == 0] == 0).all()


def test_normalize_cams_torch_keeps_gradient():
    cams = torch.randn(2, 3, 3, requires_grad=True)
    out = normalize_cams(cams, torch.tensor([1.0, 1.0]))
    out.sum().backward()
    assert cams.grad is not None and torch.isfinite(cams.grad).all()


@pytest.mark.parametrize(
    "cams,labels,message",
    [
        (np.zeros((2, 3, 3)), np.array([1, 0, 1]), "does not match"),
        (np.zeros((2, 3, 3)), np.array([1, 0.5]), "only 0 and 1"),
        (np.zeros((3, 3)), np.array([1]), r"\(K, H, W\)"),
        ([[[1.0]]], np.array([1]), "numpy array or a torch tensor"),
    ],
)
def test_normalize_cams_rejects_bad_input(cams, labels, message):
    with pytest.raises((ValueError, TypeError), match=message):
        normalize_cams(cams, labels)


# ------------------------------------------------------------------------------------------------ multiscale_cams
class IdentityCamModel(nn.Module):
    """CAM = the first K input channels at full resolution; records the input sizes it saw."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.sizes: list[tuple[int, ...]] = []
        self.modes: list[bool] = []
        self.scale = nn.Parameter(torch.ones(()))

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape))
        self.modes.append(self.training)
        return x[:, : self.num_classes] * self.scale


class PositionWeightedCamModel(IdentityCamModel):
    """CAM = input channel 0 times a left-to-right ramp (not mirror-symmetric), so flip handling is visible."""

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0.0, 1.0, x.shape[-1]).view(1, 1, 1, -1)
        return x[:, :1] * ramp


def test_multiscale_single_scale_without_flip_is_normalised_relu():
    image = torch.randn(1, 3, 9, 12)
    model = IdentityCamModel().train()
    out = multiscale_cams(model, image, np.array([1, 1]), scales=(1.0,), flip=False)
    expected = normalize_cams(image[0, :2].numpy(), np.array([1, 1]))
    assert out.dtype == np.float32 and out.shape == (2, 9, 12)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    assert model.modes == [False] and model.training  # ran in eval mode, mode restored


def test_multiscale_flip_is_mirrored_back():
    image = torch.ones(1, 3, 4, 11)
    flipped = multiscale_cams(PositionWeightedCamModel(1), image, np.array([1]), scales=(1.0,), flip=True)
    # ramp + mirrored ramp is constant: every pixel is max → 1 / (1 + eps)
    np.testing.assert_allclose(flipped, np.full((1, 4, 11), 1.0 / (1.0 + EPS)), rtol=1e-6)
    plain = multiscale_cams(PositionWeightedCamModel(1), image, np.array([1]), scales=(1.0,), flip=False)
    np.testing.assert_allclose(plain[0, 0], np.linspace(0, 1, 11) / (1 + EPS), rtol=1e-5, atol=1e-7)


def test_multiscale_scales_sizes_and_sum_by_hand():
    torch.manual_seed(0)
    image = torch.randn(1, 3, 10, 14)
    model = IdentityCamModel()
    out = multiscale_cams(model, image, np.array([1, 0]), scales=(1.0, 0.5, 1.5), flip=True)
    assert [size[0] for size in model.sizes] == [2, 2, 2]  # image and its mirror in one batch
    assert [size[2:] for size in model.sizes] == [(10, 14), (5, 7), (15, 21)]
    total = torch.zeros(2, 10, 14)
    for scale in (1.0, 0.5, 1.5):
        size = (round(10 * scale), round(14 * scale))
        scaled = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        for mirrored in (False, True):
            x = scaled.flip(-1) if mirrored else scaled
            cam = F.relu(x[:, :2])
            cam = F.interpolate(cam, size=(10, 14), mode="bilinear", align_corners=False)[0]
            total += cam.flip(-1) if mirrored else cam
    expected = total.numpy() / (total.numpy().max(axis=(1, 2), keepdims=True) + EPS)
    expected[1] = 0.0  # absent class
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_multiscale_rejects_bad_arguments():
    model = IdentityCamModel()
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        multiscale_cams(model, torch.zeros(2, 3, 4, 4), np.array([1, 1]))
    with pytest.raises(ValueError, match="scales"):
        multiscale_cams(model, torch.zeros(1, 3, 4, 4), np.array([1, 1]), scales=(1.0, 0.0))
    with pytest.raises(ValueError, match="model.cams returned"):
        multiscale_cams(model, torch.zeros(1, 3, 4, 4), np.array([1, 1, 0]))


# ------------------------------------------------------------------------------------------------ storage
def test_save_load_round_trip_stores_present_classes_only(tmp_path):
    rng = np.random.default_rng(1)
    cams = rng.uniform(0, 1, size=(4, 6, 7)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    path = tmp_path / "a.npz"
    save_cams(path, cams, labels)
    with np.load(path) as archive:
        assert archive["cams"].dtype == np.float16 and archive["cams"].shape == (2, 6, 7)
        assert archive["classes"].tolist() == [1, 3]
    loaded, loaded_labels = load_cams(path)
    assert loaded.dtype == np.float32 and loaded.shape == cams.shape
    np.testing.assert_allclose(loaded[[1, 3]], cams[[1, 3]], atol=1e-3)  # float16 precision
    assert (loaded[[0, 2]] == 0).all()
    np.testing.assert_array_equal(loaded_labels, labels.astype(np.float32))


def test_save_cams_bytes_are_deterministic(tmp_path):
    cams = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    save_cams(tmp_path / "a.npz", cams, torch.tensor([1.0, 0.0, 1.0]))
    save_cams(tmp_path / "b.npz", cams.numpy().copy(), np.array([1, 0, 1]))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_save_load_without_present_classes(tmp_path):
    save_cams(tmp_path / "empty.npz", np.ones((2, 3, 4), dtype=np.float32), np.array([0, 0]))
    cams, labels = load_cams(tmp_path / "empty.npz")
    assert cams.shape == (2, 3, 4) and not cams.any() and not labels.any()


def test_storage_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(DataError, match=f"^{missing}"):
        load_cams(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=f"^{corrupt}"):
        load_cams(corrupt)
    other = tmp_path / "other.npz"
    np.savez(other, something=np.zeros(3))
    with pytest.raises(DataError, match=f"^{other}.*missing"):
        load_cams(other)
    with pytest.raises(ValueError, match="float16"):
        save_cams(tmp_path / "big.npz", np.full((1, 2, 2), 1e6, dtype=np.float32), np.array([1]))
    with pytest.raises(ValueError, match="float16"):
        save_cams(tmp_path / "nan.npz", np.full((1, 2, 2), np.nan, dtype=np.float32), np.array([1]))


# ------------------------------------------------------------------------------------------------ seed labels
def test_cam_seed_labels_by_hand():
    cams = np.array(
        [
            [[0.9, 0.1, 0.3], [0.0, 0.5, 0.2]],  # class 0 → label 1
            [[0.95, 0.95, 0.95], [0.95, 0.95, 0.95]],  # absent: never wins
            [[0.2, 0.6, 0.3], [0.1, 0.5, 0.25]],  # class 2 → label 3
        ],
        dtype=np.float32,
    )
    labels = np.array([1, 0, 1])
    seeds = cam_seed_labels(cams, labels, background_threshold=0.3)
    expected = np.array([[1, 3, 0], [0, 1, 0]])  # ties (0.3 vs 0.3, 0.5 vs 0.5) go to the lower index
    assert seeds.dtype == np.int64
    np.testing.assert_array_equal(seeds, expected)
    np.testing.assert_array_equal(cam_seed_labels(torch.from_numpy(cams), labels, 0.0), [[1, 3, 1], [3, 1, 3]])
    assert (cam_seed_labels(cams, labels, background_threshold=1.0) == 0).all()
