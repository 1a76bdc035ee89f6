"""VOC-layout dataset loading: list formats, label files, mask-folder choice, conversions and validation errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auxseg.config import DatasetParams
from auxseg.data.datasets import (
    COCO_CLASSES,
    VOC_CLASSES,
    DatasetSplit,
    load_split,
    read_id_list,
    read_image_labels,
    validate_split,
    write_image_labels,
)
from auxseg.io import DataError, save_label_png

SYNTHETIC_NAMES = ["background", "circle", "square", "star"]


def write_image(path: Path, height: int, width: int, seed: int = 0, mode: str = "RGB") -> None:
    """A small noisy JPEG (or PNG for modes JPEG cannot hold) of the given size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(rgb, mode="RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format="JPEG" if path.suffix == ".jpg" and mode in ("RGB", "L", "CMYK") else "PNG")


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_label_png(path, np.asarray(mask, dtype=np.uint8))


def square_mask(height: int, width: int, value: int, ignore_border: bool = True) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = value
    if ignore_border:
        mask[height // 4 - 1, width // 4 : width // 2] = 255
    return mask


def make_dataset(
    root: Path,
    masks: dict[str, np.ndarray],
    *,
    split: str = "train",
    mask_dir: str = "SegmentationClass",
    class_names: list[str] | None = SYNTHETIC_NAMES,
    labels: dict[str, list] | None = None,
    list_lines: list[str] | None = None,
) -> Path:
    """Write a tiny VOC-layout dataset: one JPEG and one mask per id, the split list, optional JSON files."""
    for index, (image_id, mask) in enumerate(masks.items()):
        write_image(root / "JPEGImages" / f"{image_id}.jpg", *mask.shape, seed=index)
        write_mask(root / mask_dir / f"{image_id}.png", mask)
    list_path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("\n".join(list_lines if list_lines is not None else list(masks)) + "\n")
    if class_names is not None:
        (root / "class_names.json").write_text(json.dumps(class_names))
    if labels is not None:
        (root / "image_labels.json").write_text(json.dumps(labels))
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root (even the ones above it) with size and mtime: proves nothing was written."""
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


def params(root: Path, name: str = "synthetic", **overrides) -> DatasetParams:
    return DatasetParams(name=name, root=str(root), **overrides)


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    masks = {
        "syn_0": square_mask(24, 32, 1),
        "syn_1": square_mask(20, 28, 3),
        "syn_2": square_mask(16, 16, 2),
    }
    labels = {"syn_0": [1], "syn_1": [3, 2], "syn_2": [2], "syn_extra": [1]}
    return make_dataset(tmp_path / "ds", masks, labels=labels)


# ------------------------------------------------------------------------------------------------ constants


def test_voc_and_coco_class_lists():
    assert len(VOC_CLASSES) == 21 and len(COCO_CLASSES) == 81
    assert VOC_CLASSES[0] == COCO_CLASSES[0] == "background"
    assert VOC_CLASSES[1] == "aeroplane" and VOC_CLASSES[15] == "person" and VOC_CLASSES[20] == "tvmonitor"
    assert COCO_CLASSES[1] == "person" and COCO_CLASSES[40] == "bottle" and COCO_CLASSES[80] == "toothbrush"
    assert len(set(VOC_CLASSES)) == 21 and len(set(COCO_CLASSES)) == 81


def test_voc_and_coco_splits_report_their_class_counts(tmp_path):
    for name, count in (("voc2012", 21), ("coco2014", 81)):
        root = make_dataset(
            tmp_path / name, {"a": square_mask(16, 20, count - 1)}, class_names=None, mask_dir="SegmentationClass"
        )
        ds = load_split(params(root, name), "train")
        assert ds.num_classes == count and len(ds.class_names) == count
        assert ds.image_labels["a"].shape == (count - 1,)
        assert np.flatnonzero(ds.image_labels["a"]).tolist() == [count - 2]


# ------------------------------------------------------------------------------------------------ loading


def test_synthetic_split_loads_ids_names_labels_and_files(synthetic_root):
    ds = load_split(params(synthetic_root), "train")
    assert isinstance(ds, DatasetSplit)
    assert ds.ids == ("syn_0", "syn_1", "syn_2")
    assert ds.class_names == tuple(SYNTHETIC_NAMES) and ds.num_classes == 4
    assert set(ds.image_labels) == set(ds.ids)  # labels of other splits are not carried along
    np.testing.assert_array_equal(ds.image_labels["syn_1"], [0, 1, 1])
    assert ds.image_labels["syn_1"].dtype == np.float32
    assert ds.mask_dir == synthetic_root / "SegmentationClass"
    assert ds.image_path("syn_1") == synthetic_root / "JPEGImages" / "syn_1.jpg"
    image = ds.load_image("syn_1")
    assert image.dtype == np.uint8 and image.shape == (20, 28, 3)
    np.testing.assert_array_equal(ds.load_mask("syn_1"), square_mask(20, 28, 3))


def test_labels_are_derived_from_masks_without_a_label_file(tmp_path):
    mask = square_mask(24, 24, 15)
    mask[0:3, 0:3] = 3
    root = make_dataset(tmp_path / "voc", {"2007_000032": mask, "2007_000039": np.zeros((8, 8))}, class_names=None)
    ds = load_split(params(root, "voc2012"), "train")
    assert np.flatnonzero(ds.image_labels["2007_000032"]).tolist() == [2, 14]  # classes 3 and 15, 255 and 0 excluded
    assert ds.image_labels["2007_000039"].sum() == 0
    # Derivation reads the masks even when file validation is off.
    lazy = load_split(params(root, "voc2012"), "train", validate=False)
    np.testing.assert_array_equal(lazy.image_labels["2007_000032"], ds.image_labels["2007_000032"])


def test_segmentation_class_aug_is_preferred_unless_mask_dir_is_given(tmp_path):
    root = make_dataset(tmp_path / "voc", {"a": square_mask(16, 16, 7)}, class_names=None, mask_dir="SegmentationClass")
    write_mask(root / "SegmentationClassAug" / "a.png", square_mask(16, 16, 9))
    ds = load_split(params(root, "voc2012"), "train")
    assert ds.mask_dir == root / "SegmentationClassAug"
    assert np.flatnonzero(ds.image_labels["a"]).tolist() == [8]
    explicit = load_split(params(root, "voc2012", mask_dir="SegmentationClass"), "train")
    assert explicit.mask_dir == root / "SegmentationClass"
    assert np.flatnonzero(explicit.image_labels["a"]).tolist() == [6]


def test_train_aug_list_format_and_blank_lines(tmp_path):
    masks = {"2007_000032": square_mask(16, 16, 1), "2008_000002": square_mask(16, 16, 2)}
    lines = ["/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png", "", "   ", "2008_000002"]
    root = make_dataset(
        tmp_path / "voc", masks, split="train_aug", mask_dir="SegmentationClassAug", class_names=None, list_lines=lines
    )
    ds = load_split(params(root, "voc2012", train_split="train_aug"), "train_aug")
    assert ds.ids == ("2007_000032", "2008_000002")
    assert read_id_list(root / "ImageSets" / "Segmentation" / "train_aug.txt") == ds.ids


def test_no_masks_means_mask_path_raises(tmp_path):
    root = make_dataset(tmp_path / "ds", {"a": square_mask(16, 16, 1)}, labels={"a": [1]})
    for path in (root / "SegmentationClass").iterdir():
        path.unlink()
    (root / "SegmentationClass").rmdir()
    ds = load_split(params(root), "train")
    assert ds.mask_dir is None
    with pytest.raises(DataError, match=rf"^{re.escape(str(root))}: .*no ground-truth masks"):
        ds.mask_path("a")
    (root / "image_labels.json").unlink()  # neither a label file nor masks: no labels at all
    with pytest.raises(DataError, match=rf"^{re.escape(str(root))}: split 'train' has no image-level labels"):
        load_split(params(root), "train")


# ------------------------------------------------------------------------------------------------ label files


def test_label_file_formats_json_indices_names_and_csv(tmp_path):
    expected = {"x": [1, 3], "y": [], "z": [2]}
    (tmp_path / "indices.json").write_text(json.dumps({"x": [3, 1], "y": [], "z": [2]}))
    (tmp_path / "names.json").write_text(json.dumps({"x": ["Circle", "star"], "y": [], "z": ["square"]}))
    (tmp_path / "mixed.csv").write_text("id,labels\nx,1 star\ny,\n\nz,square\n")
    for name in ("indices.json", "names.json", "mixed.csv"):
        labels = read_image_labels(tmp_path / name, SYNTHETIC_NAMES)
        assert sorted(labels) == ["x", "y", "z"], name
        for image_id, indices in expected.items():
            assert labels[image_id].dtype == np.float32 and labels[image_id].shape == (3,)
            assert (np.flatnonzero(labels[image_id]) + 1).tolist() == indices, (name, image_id)


def test_csv_matches_multi_word_coco_names(tmp_path):
    (tmp_path / "coco.csv").write_text("id,labels\nimg,traffic light person hot_dog 40\n")
    labels = read_image_labels(tmp_path / "coco.csv", COCO_CLASSES)
    names = [COCO_CLASSES[index + 1] for index in np.flatnonzero(labels["img"])]
    assert names == ["person", "traffic light", "bottle", "hot dog"]


def test_label_file_from_params_is_used(synthetic_root):
    (synthetic_root / "labels.csv").write_text("id,labels\nsyn_0,star\nsyn_1,1\nsyn_2,\n")
    ds = load_split(params(synthetic_root, image_labels="labels.csv"), "train")
    assert [(np.flatnonzero(ds.image_labels[i]) + 1).tolist() for i in ds.ids] == [[3], [1], []]


def test_write_image_labels_round_trip(tmp_path):
    labels = {"b": np.array([0, 1, 1], np.float32), "a": np.array([1, 0, 0], np.float32)}
    path = tmp_path / "out" / "labels.json"
    write_image_labels(path, labels)
    assert list(json.loads(path.read_text())) == ["a", "b"]
    assert json.loads(path.read_text()) == {"a": [1], "b": [2, 3]}
    back = read_image_labels(path, SYNTHETIC_NAMES)
    for key, vector in labels.items():
        np.testing.assert_array_equal(back[key], vector)
    with pytest.raises(ValueError, match="labels\\['a'\\]"):
        write_image_labels(tmp_path / "bad.json", {"a": np.array([0.5, 0, 0])})
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize(
    "file_name, content, fragment",
    [
        ("l.json", {"x": [4]}, "id 'x': class index 4 is outside 1..3"),
        ("l.json", {"x": [0]}, "id 'x': class index 0 is outside 1..3"),
        ("l.json", {"x": ["dog"]}, "id 'x': unknown class name 'dog'"),
        ("l.json", {"x": 1}, "id 'x': expected a list"),
        ("l.json", ["x"], "expected a JSON object"),
        ("l.csv", "image,labels\nx,1\n", "expected the CSV header 'id,labels'"),
        ("l.csv", "id,labels\nx,1\nx,2\n", "line 3: id 'x': duplicate id"),
        ("l.csv", "id,labels\nx,1 dog\n", "line 2: id 'x': unknown class name 'dog'"),
        ("l.txt", "x 1\n", "unsupported label file type"),
    ],
)
def test_bad_label_files_name_the_file(tmp_path, file_name, content, fragment):
    path = tmp_path / file_name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError) as info:
        read_image_labels(path, SYNTHETIC_NAMES)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_id_missing_from_the_label_file_names_file_and_id(synthetic_root):
    (synthetic_root / "image_labels.json").write_text(json.dumps({"syn_0": [1], "syn_2": [2]}))
    before = snapshot(synthetic_root)
    with pytest.raises(DataError) as info:
        load_split(params(synthetic_root), "train")
    assert str(info.value).startswith(f"{synthetic_root / 'image_labels.json'}: ") and "'syn_1'" in str(info.value)
    assert snapshot(synthetic_root) == before


# ------------------------------------------------------------------------------------------------ image modes


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA"])
def test_grey_rgba_palette_and_cmyk_images_are_converted(tmp_path, mode):
    root = make_dataset(tmp_path / "ds", {"a": square_mask(12, 18, 1)}, labels={"a": [1]})
    path = root / "JPEGImages" / "a.jpg"
    write_image(path, 12, 18, mode=mode)  # L and CMYK as JPEG; RGBA, LA and P as PNG bytes behind the .jpg name
    with Image.open(path) as image:
        assert image.mode == mode
    ds = load_split(params(root), "train")  # full validation decodes it: accepted, not rejected
    rgb = ds.load_image("a")
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 18, 3)
    if mode in ("L", "LA"):
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    validate_split(ds)


# ------------------------------------------------------------------------------------------------ validation errors


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _break(root: Path, case: str) -> tuple[Path, str | None]:
    """Damage a valid synthetic dataset; return the path the error must start with and an id it must name."""
    images, masks = root / "JPEGImages", root / "SegmentationClass"
    list_path = root / "ImageSets" / "Segmentation" / "train.txt"
    if case == "missing image":
        (images / "syn_1.jpg").unlink()
        return images / "syn_1.jpg", "syn_1"
    if case == "truncated image":
        write_image(images / "syn_1.jpg", 20, 28, seed=5)
        _truncate(images / "syn_1.jpg")
        return images / "syn_1.jpg", "syn_1"
    if case == "unreadable image":
        (images / "syn_2.jpg").write_bytes(b"not an image at all")
        return images / "syn_2.jpg", "syn_2"
    if case == "mask size":
        write_mask(masks / "syn_1.png", square_mask(20, 27, 3))
        return masks / "syn_1.png", "syn_1"
    if case == "mask values":
        write_mask(masks / "syn_2.png", square_mask(16, 16, 4))  # K = 3
        return masks / "syn_2.png", "syn_2"
    if case == "missing mask":
        (masks / "syn_0.png").unlink()
        return masks / "syn_0.png", "syn_0"
    if case == "rgb mask":
        Image.new("RGB", (16, 16)).save(masks / "syn_2.png")
        return masks / "syn_2.png", "syn_2"
    if case == "duplicate id":
        list_path.write_text("syn_0\nsyn_1\nsyn_0\n")
        return list_path, "syn_0"
    if case in ("separator id", "dotdot id", "escaping sbd path", "backslash id"):
        bad = {
            "separator id": "sub/syn_0",
            "dotdot id": "..",
            "escaping sbd path": "/JPEGImages/../../outside.jpg",
            "backslash id": "..\\syn_0",
        }[case]
        list_path.write_text(f"syn_0\n{bad}\n")
        return list_path, bad.replace("\\", "\\\\")  # repr() of the id doubles a backslash
    if case == "missing list":
        list_path.unlink()
        return list_path, None
    if case == "missing class names":
        (root / "class_names.json").unlink()
        return root / "class_names.json", None
    raise AssertionError(case)


BAD_CASES = [
    "missing image",
    "truncated image",
    "unreadable image",
    "mask size",
    "mask values",
    "missing mask",
    "rgb mask",
    "duplicate id",
    "separator id",
    "dotdot id",
    "escaping sbd path",
    "backslash id",
    "missing list",
    "missing class names",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_data_error_naming_the_file_and_writes_nothing(synthetic_root, case):
    expected_path, image_id = _break(synthetic_root, case)
    before = snapshot(synthetic_root.parent)
    with pytest.raises(DataError) as info:
        load_split(params(synthetic_root), "train")
    message = str(info.value)
    assert message.startswith(f"{expected_path}: "), message
    if image_id is not None:
        assert f"'{image_id}'" in message, message
    assert snapshot(synthetic_root.parent) == before


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'nowhere'))}: dataset root not found"):
        load_split(params(tmp_path / "nowhere"), "train")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["truncated image", "mask size", "mask values", "missing image"])
def test_validate_split_reports_damage_after_loading(synthetic_root, case):
    ds = load_split(params(synthetic_root), "train")
    expected_path, image_id = _break(synthetic_root, case)
    with pytest.raises(DataError) as info:
        validate_split(ds)
    assert str(info.value).startswith(f"{expected_path}: ") and f"'{image_id}'" in str(info.value)


def test_validation_switches(synthetic_root):
    _truncate(synthetic_root / "JPEGImages" / "syn_2.jpg")
    write_mask(synthetic_root / "SegmentationClass" / "syn_1.png", square_mask(20, 27, 3))
    ds = load_split(params(synthetic_root), "train", validate=False)  # labels from file: no file is opened
    with pytest.raises(DataError, match="syn_1.png: mask size 20x27"):
        validate_split(ds)
    with pytest.raises(DataError, match="syn_2.jpg: unreadable or truncated"):
        validate_split(ds, check_masks=False)
    with pytest.raises(DataError, match="syn_1.png: mask size 20x27"):
        ds.load_mask("syn_1")


def test_load_mask_rejects_out_of_range_values(synthetic_root):
    write_mask(synthetic_root / "SegmentationClass" / "syn_0.png", square_mask(24, 32, 200))
    ds = load_split(params(synthetic_root), "train", validate=False)
    with pytest.raises(DataError, match=r"syn_0.png: mask values 200 are outside 0..3 and 255"):
        ds.load_mask("syn_0")


def test_first_bad_id_in_list_order_is_reported_with_parallel_workers(tmp_path):
    masks = {f"img_{index:02d}": square_mask(16, 16, 1 + index % 3) for index in range(12)}
    root = make_dataset(tmp_path / "ds", masks, labels={key: [1] for key in masks})
    _truncate(root / "JPEGImages" / "img_09.jpg")
    write_mask(root / "SegmentationClass" / "img_04.png", square_mask(15, 16, 1))
    ds = load_split(params(root), "train", validate=False)
    for workers in (1, 2):
        with pytest.raises(DataError, match=r"img_04.png: mask size .*'img_04'"):
            validate_split(ds, workers=workers)
    write_mask(root / "SegmentationClass" / "img_04.png", square_mask(16, 16, 1))
    with pytest.raises(DataError, match=r"img_09.jpg: .*'img_09'"):
        load_split(params(root), "train", workers=2)
    with pytest.raises(ValueError, match="workers"):
        validate_split(ds, workers=0)
