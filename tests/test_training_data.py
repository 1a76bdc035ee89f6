"""Tests of auxseg.data.training: normalisation, augmentation geometry, padding, determinism and file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from auxseg.data.training import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    InferenceSet,
    TrainingSet,
    denormalize_image,
    normalize_image,
    scale_flip_crop,
)
from auxseg.io import DataError, save_gray_png, save_label_png
from auxseg.params import ParamError, parse_section


class CoordinateSplit:
    """Duck-typed DatasetSplit whose pixels encode their coordinates.

    Image: red = x, green = y, blue = 7. Mask (ground truth) = x (num_classes = width + 1 so every x is a class).
    """

    def __init__(self, sizes: dict[str, tuple[int, int]]) -> None:
        self.sizes = sizes
        self.ids = tuple(sizes)
        width = max(w for _, w in sizes.values())
        self.num_classes = width + 1
        self.class_names = tuple(f"c{i}" for i in range(self.num_classes))
        self.image_labels = {
            image_id: np.eye(self.num_classes - 1, dtype=np.float32)[i % (self.num_classes - 1)]
            for i, image_id in enumerate(self.ids)
        }

    def image_path(self, image_id: str) -> Path:
        return Path("images") / f"{image_id}.jpg"

    def load_image(self, image_id: str) -> np.ndarray:
        height, width = self.sizes[image_id]
        ys, xs = np.mgrid[0:height, 0:width]
        return np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8)

    def load_mask(self, image_id: str) -> np.ndarray:
        height, width = self.sizes[image_id]
        return np.tile(np.arange(width, dtype=np.uint8), (height, 1))


def write_maps(split: CoordinateSplit, root: Path) -> dict[str, Path]:
    """Pseudo labels = x, saliency = y / 255, confidence = 0.5 for every id."""
    dirs = {name: root / name for name in ("seg", "sal", "conf")}
    for image_id, (height, width) in split.sizes.items():
        ys, xs = np.mgrid[0:height, 0:width]
        save_label_png(dirs["seg"] / f"{image_id}.png", xs.astype(np.uint8))
        save_gray_png(dirs["sal"] / f"{image_id}.png", ys / 255.0)
        save_gray_png(dirs["conf"] / f"{image_id}.png", np.full((height, width), 0.5))
    return dirs


def make_set(split, dirs, **augment) -> TrainingSet:
    return TrainingSet(split, AugmentParams(**augment), seed=3, seg_label_dir=dirs["seg"],
                       saliency_dir=dirs["sal"], confidence_dir=dirs["conf"])


@pytest.fixture()
def split() -> CoordinateSplit:
    return CoordinateSplit({"big": (60, 90), "small": (20, 30), "tall": (70, 25)})


@pytest.fixture()
def dirs(split, tmp_path) -> dict[str, Path]:
    return write_maps(split, tmp_path)


# ---------------------------------------------------------------------------------------------------------------


def test_normalize_image_matches_imagenet_statistics():
    mean_colour = np.array(IMAGENET_MEAN) * 255
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[0, 0] = (255, 255, 255)
    image[1, 2] = np.round(mean_colour).astype(np.uint8)
    tensor = normalize_image(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    expected_white = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(tensor[:, 0, 0].numpy(), expected_white, atol=1e-6)
    assert np.allclose(tensor[:, 1, 2].numpy(), 0.0, atol=0.01)
    assert np.array_equal(denormalize_image(tensor), image)
    with pytest.raises(ValueError, match="uint8"):
        normalize_image(np.zeros((2, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        normalize_image(np.zeros((2, 3), dtype=np.uint8))


def test_augment_params_are_validated():
    assert parse_section(AugmentParams, {"crop_size": 64, "pad_label": "background"}, "augment").crop_size == 64
    with pytest.raises(ParamError, match="augment.scale_min"):
        parse_section(AugmentParams, {"scale_min": 1.5, "scale_max": 1.0}, "augment")
    with pytest.raises(ParamError, match="augment.pad_label"):
        parse_section(AugmentParams, {"pad_label": "zero"}, "augment")


def test_item_shapes_dtypes_and_keys(split, dirs):
    dataset = make_set(split, dirs, crop_size=48)
    assert len(dataset) == 3
    for index in range(len(dataset)):
        item = dataset[index]
        assert set(item) == {"id", "image", "image_labels", "valid", "seg", "saliency", "confidence"}
        assert item["id"] == split.ids[index]
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
        assert item["image_labels"].shape == (split.num_classes - 1,) and item["image_labels"].dtype == torch.float32
        assert torch.equal(item["image_labels"], torch.from_numpy(split.image_labels[item["id"]]))
        assert item["valid"].shape == (48, 48) and item["valid"].dtype == torch.bool
        assert item["seg"].shape == (48, 48) and item["seg"].dtype == torch.int64
        for name in ("saliency", "confidence"):
            assert item[name].shape == (48, 48) and item[name].dtype == torch.float32
            assert 0.0 <= item[name].min() and item[name].max() <= 1.0
    plain = TrainingSet(split, AugmentParams(crop_size=48), seed=0)[0]
    assert set(plain) == {"id", "image", "image_labels", "valid"}


@pytest.mark.parametrize("pad_label, pad_value", [("ignore", 255), ("background", 0)])
def test_padding_values_without_scaling(split, dirs, pad_label, pad_value):
    # "small" is 20×30: at scale 1 a 48 crop keeps it whole at the top-left and pads bottom/right
    dataset = make_set(split, dirs, crop_size=48, scale_min=1.0, scale_max=1.0, flip=False, pad_label=pad_label)
    item = dataset[1]
    valid = item["valid"]
    assert valid[:20, :30].all() and not valid[20:, :].any() and not valid[:, 30:].any()
    padding = ~valid
    assert torch.all(item["image"][:, padding] == 0)  # the mean colour after normalisation
    assert torch.all(item["seg"][padding] == pad_value)
    assert torch.all(item["saliency"][padding] == 0) and torch.all(item["confidence"][padding] == 0)
    # content is untouched: labels equal x, saliency y/255, the image round-trips exactly
    ys, xs = np.mgrid[0:20, 0:30]
    assert np.array_equal(item["seg"][:20, :30].numpy(), xs)
    assert np.allclose(item["saliency"][:20, :30].numpy(), np.round(ys) / 255.0, atol=1e-6)
    assert np.allclose(item["confidence"][:20, :30].numpy(), 128 / 255.0, atol=1e-6)
    assert np.array_equal(denormalize_image(item["image"])[:20, :30], split.load_image("small"))


def test_flip_and_crop_move_image_and_maps_together_at_scale_one(split, dirs):
    dataset = make_set(split, dirs, crop_size=32, scale_min=1.0, scale_max=1.0, flip=True)
    flips = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        item = dataset[0]  # "big" 60×90: random offsets on both axes
        rgb = denormalize_image(item["image"]).astype(np.int64)
        assert item["valid"].all()
        assert np.array_equal(rgb[..., 0], item["seg"].numpy())  # red = x = label
        assert np.allclose(rgb[..., 1] / 255.0, item["saliency"].numpy(), atol=1e-6)  # green = y = saliency
        xs = item["seg"][0].numpy()
        step = np.unique(np.diff(xs))
        assert step.tolist() in ([1], [-1])  # a contiguous window, mirrored when flipped
        flips.add(int(step[0]))
        original_x = xs if step[0] == 1 else 89 - xs  # flipped image: x' = W - 1 - x
        assert 0 <= original_x.min() and original_x.max() <= 89
        ys = (item["saliency"][:, 0].numpy() * 255).round()
        assert np.array_equal(np.diff(ys), np.ones(31))  # rows are never flipped
    assert flips == {1, -1}


def test_scaled_samples_stay_aligned(split, dirs):
    dataset = make_set(split, dirs, crop_size=40, scale_min=0.7, scale_max=1.3, flip=True)
    scales_seen = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            valid = item["valid"].numpy()
            scales_seen.add(int(valid.sum()))
            red = denormalize_image(item["image"])[..., 0].astype(np.int64)
            # image bilinear vs labels nearest: the x read from both agree to within one source pixel
            assert np.abs(red[valid] - item["seg"].numpy()[valid]).max() <= 1
            green = denormalize_image(item["image"])[..., 1].astype(np.float64) / 255.0
            assert np.abs(green[valid] - item["saliency"].numpy()[valid]).max() <= 1.5 / 255
    assert len(scales_seen) > 3  # different scales gave different valid areas


def test_randomness_is_a_function_of_seed_epoch_and_index(split, dirs):
    dataset = make_set(split, dirs, crop_size=40)
    first = [dataset[i] for i in range(3)]
    reversed_order = [dataset[i] for i in (2, 1, 0)][::-1]
    other_instance = make_set(split, dirs, crop_size=40)
    for a, b, c in zip(first, reversed_order, [other_instance[i] for i in range(3)]):
        for key in ("image", "seg", "saliency", "valid"):
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    assert torch.equal(dataset[-1]["image"], first[2]["image"])

    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i]["image"], first[i]["image"]) for i in range(3))
    other_seed = TrainingSet(split, AugmentParams(crop_size=40), seed=4, seg_label_dir=dirs["seg"])
    assert any(not torch.equal(other_seed[i]["seg"], first[i]["seg"]) for i in range(3))
    with pytest.raises(ValueError, match="epoch"):
        dataset.set_epoch(-1)


def test_items_do_not_depend_on_dataloader_workers(split, dirs):
    dataset = make_set(split, dirs, crop_size=32)
    dataset.set_epoch(2)
    single = next(iter(DataLoader(dataset, batch_size=3, num_workers=0)))
    workers = next(iter(DataLoader(dataset, batch_size=3, num_workers=2)))
    assert single["id"] == workers["id"] == list(split.ids)
    for key in ("image", "seg", "saliency", "confidence", "valid", "image_labels"):
        assert torch.equal(single[key], workers[key])


def test_ground_truth_masks(split, dirs):
    dataset = TrainingSet(split, AugmentParams(crop_size=48, scale_min=1.0, scale_max=1.0, flip=False),
                          seed=0, use_gt_masks=True)
    item = dataset[1]
    assert np.array_equal(item["seg"][:20, :30].numpy(), split.load_mask("small"))
    with pytest.raises(ValueError, match="exclusive"):
        TrainingSet(split, AugmentParams(), seed=0, use_gt_masks=True, seg_label_dir=dirs["seg"])


def test_missing_and_bad_files_raise_data_errors_naming_them(split, dirs, tmp_path):
    (dirs["sal"] / "tall.png").unlink()
    dataset = make_set(split, dirs, crop_size=32)
    with pytest.raises(DataError, match=r"sal/tall\.png: file not found"):
        dataset[2]
    with pytest.raises(DataError, match="nowhere: saliency directory not found"):
        TrainingSet(split, AugmentParams(), seed=0, saliency_dir=tmp_path / "nowhere")

    save_label_png(dirs["seg"] / "big.png", np.zeros((10, 10), dtype=np.uint8))  # wrong size
    with pytest.raises(DataError, match=r"seg/big\.png: size"):
        dataset[0]
    too_high = np.full((20, 30), split.num_classes, dtype=np.uint8)
    save_label_png(dirs["seg"] / "small.png", too_high)
    with pytest.raises(DataError, match=r"seg/small\.png: label values \[91\]"):
        dataset[1]
    del split.image_labels["big"]
    save_label_png(dirs["seg"] / "big.png", np.zeros((60, 90), dtype=np.uint8))
    with pytest.raises(DataError, match="no image-level labels"):
        dataset[0]


def test_scale_flip_crop_rejects_mismatched_maps():
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="seg: shape"):
        scale_flip_crop(image, AugmentParams(crop_size=8), np.random.default_rng(0),
                        label_maps={"seg": np.zeros((10, 11), dtype=np.uint8)})


def test_inference_set_returns_full_size_images(split):
    dataset = InferenceSet(split)
    item = dataset[2]
    assert item["id"] == "tall"
    assert item["image"].shape == (3, 70, 25)
    assert np.array_equal(item["rgb"], split.load_image("tall")) and item["rgb"].dtype == np.uint8
    assert torch.allclose(item["image"], normalize_image(split.load_image("tall")))
    batch = next(iter(DataLoader(InferenceSet(split, ids=["small"]), batch_size=1)))
    assert batch["id"] == ["small"] and batch["image"].shape == (1, 3, 20, 30) and batch["rgb"].shape == (1, 20, 30, 3)
    with pytest.raises(ValueError, match="not in the split"):
        InferenceSet(split, ids=["missing"])


def test_color_jitter_changes_only_the_image_and_is_seeded():
    image = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    label = np.random.default_rng(1).integers(0, 4, (50, 60), dtype=np.uint8)
    plain = scale_flip_crop(image, AugmentParams(crop_size=40), np.random.default_rng(2), label_maps={"seg": label})
    first = scale_flip_crop(
        image, AugmentParams(crop_size=40, color_jitter=0.4), np.random.default_rng(2), label_maps={"seg": label}
    )
    again = scale_flip_crop(
        image, AugmentParams(crop_size=40, color_jitter=0.4), np.random.default_rng(2), label_maps={"seg": label}
    )
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["seg"], plain["seg"]) and torch.equal(first["valid"], plain["valid"])
    assert not torch.allclose(first["image"], plain["image"])
    with pytest.raises(ParamError, match="color_jitter"):
        parse_section(AugmentParams, {"color_jitter": 1.5}, "classifier.augment")
