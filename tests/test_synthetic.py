"""Tests of the synthetic VOC-style benchmark (auxseg.data.synthetic) and its statistics (auxseg.data.stats)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auxseg import IGNORE_INDEX
from auxseg.data import synthetic
from auxseg.data.stats import MIN_VISIBLE_FRACTION, MIN_VISIBLE_PIXELS, dataset_statistics, main
from auxseg.data.synthetic import (
    boundary_band,
    class_appearances,
    class_names,
    generate,
    partner_class,
    render_sample,
    sample_rng,
)
from auxseg.io import load_gray_png, load_image_rgb, load_label_png, voc_palette
from auxseg.metrics import SaliencyMetric

TINY = dict(n_train=6, n_val=3, num_classes=4, seed=7, min_side=48, max_side=64)


def _ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().splitlines()


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _min_visible(label: np.ndarray) -> int:
    return max(MIN_VISIBLE_PIXELS, math.ceil(MIN_VISIBLE_FRACTION * label.size))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    statistics = generate(root, **TINY)
    return root, statistics


# ------------------------------------------------------------------------------------------------ layout/format
def test_layout_ids_and_file_formats(tiny):
    root, _ = tiny
    train, val = _ids(root, "train"), _ids(root, "val")
    assert train == [f"syn_train_{i:06d}" for i in range(6)]
    assert val == [f"syn_val_{i:06d}" for i in range(3)]
    assert (root / "ImageSets" / "Segmentation" / "train.txt").read_text().endswith("\n")
    names = json.loads((root / "class_names.json").read_text())
    assert names == class_names(4) and names[0] == "background" and len(set(names)) == 5
    assert json.loads((root / "stats.json").read_text())["num_classes"] == 4
    for image_id in train + val:
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")
            width, height = image.size
        assert 48 <= height <= 64 and 48 <= width <= 64
        with Image.open(root / "SegmentationClass" / f"{image_id}.png") as mask:
            assert (mask.format, mask.mode) == ("PNG", "P")
            assert mask.size == (width, height)
            assert np.array_equal(np.array(mask.getpalette()[:30]).reshape(10, 3), voc_palette()[:10])
        with Image.open(root / "SalientMask" / f"{image_id}.png") as salient:
            assert (salient.format, salient.mode) == ("PNG", "L")
            assert salient.size == (width, height)
            assert set(np.unique(np.asarray(salient)).tolist()) <= {0, 255}
    # no stray files: exactly one image, mask and salient mask per id
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"), ("SalientMask", ".png")):
        assert sorted(p.name for p in (root / folder).iterdir()) == sorted(f"{i}{suffix}" for i in train + val)
    assert not list(root.parent.glob(".synthetic.partial-*"))


def test_image_labels_agree_with_masks(tiny):
    root, _ = tiny
    labels = json.loads((root / "image_labels.json").read_text())
    assert sorted(labels) == sorted(_ids(root, "train") + _ids(root, "val"))
    for image_id, classes in labels.items():
        assert classes == sorted(set(classes)) and classes, f"{image_id}: labels must be sorted, unique, non-empty"
        label = load_label_png(root / "SegmentationClass" / f"{image_id}.png")
        values = set(np.unique(label).tolist())
        assert values <= set(range(5)) | {IGNORE_INDEX}
        assert sorted(values - {0, IGNORE_INDEX}) == classes
        counts = np.bincount(label.ravel(), minlength=256)
        # a labelled class keeps its visible pixels (bar the thin band) above the visibility rule
        assert all(counts[c] >= _min_visible(label) // 2 for c in classes)
        salient = load_gray_png(root / "SalientMask" / f"{image_id}.png") > 0.5
        assert salient[(label > 0) & (label != IGNORE_INDEX)].all(), "every class pixel is salient"


def test_boundary_band_marks_every_label_change_and_is_absent_without_width(tmp_path):
    with_band = generate(tmp_path / "band", **{**TINY, "boundary_width": 1})
    without_band = generate(tmp_path / "none", **{**TINY, "boundary_width": 0})
    assert with_band["splits"]["train"]["ignore_fraction"] > without_band["splits"]["train"]["ignore_fraction"]
    for image_id in _ids(tmp_path / "band", "train"):
        band = load_label_png(tmp_path / "band" / "SegmentationClass" / f"{image_id}.png")
        plain = load_label_png(tmp_path / "none" / "SegmentationClass" / f"{image_id}.png")
        salient = load_gray_png(tmp_path / "none" / "SalientMask" / f"{image_id}.png") > 0.5
        # the scene does not depend on the band width: same image bytes, masks equal outside the band
        assert (tmp_path / "band" / "JPEGImages" / f"{image_id}.jpg").read_bytes() == (
            tmp_path / "none" / "JPEGImages" / f"{image_id}.jpg"
        ).read_bytes()
        assert np.array_equal(band[band != IGNORE_INDEX], plain[band != IGNORE_INDEX])
        assert (band == IGNORE_INDEX).any()
        # width 0: 255 only on tiny occluded fragments (salient object pixels), never a band along object outlines
        outline = (plain[:, :-1] != plain[:, 1:]) & (plain[:, :-1] == 0)
        assert not (plain[:, :-1][outline] == IGNORE_INDEX).any()
        assert salient[plain == IGNORE_INDEX].all()
        # width 1: the pixel before every horizontal and vertical label change is ignored
        assert (band[:, :-1][plain[:, :-1] != plain[:, 1:]] == IGNORE_INDEX).all()
        assert (band[:-1][plain[:-1] != plain[1:]] == IGNORE_INDEX).all()


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
def test_boundary_band_has_the_requested_width(width):
    label = np.zeros((12, 20), dtype=np.uint8)
    label[:, 10:] = 3
    band = boundary_band(label, width)
    columns = np.flatnonzero(band.any(axis=0))
    before, after = width // 2, width - width // 2
    assert columns.tolist() == list(range(10 - after, 10 + before)) and band[:, columns].all()
    assert not boundary_band(label, 0).any()
    assert not boundary_band(np.full((5, 5), 2, dtype=np.uint8), width).any()


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, tiny):
    root, _ = tiny
    again = tmp_path / "again"
    generate(again, **TINY)
    assert _all_files(again) == _all_files(root)
    other = tmp_path / "other"
    generate(other, **{**TINY, "seed": 8})
    other_files = _all_files(other)
    assert other_files.keys() == _all_files(root).keys()
    differing = [name for name, data in _all_files(root).items() if name.startswith("JPEGImages") and other_files[name] != data]
    assert len(differing) == 9


def test_image_does_not_depend_on_how_many_others_are_drawn(tmp_path, tiny):
    root, _ = tiny
    fewer = tmp_path / "fewer"
    generate(fewer, **{**TINY, "n_train": 2, "n_val": 1})
    for image_id in _ids(fewer, "train") + _ids(fewer, "val"):
        for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"), ("SalientMask", ".png")):
            assert (fewer / folder / f"{image_id}{suffix}").read_bytes() == (root / folder / f"{image_id}{suffix}").read_bytes()


# ------------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "name, value",
    [
        ("n_train", 0),
        ("n_val", 0),
        ("n_train", 2.5),
        ("n_val", True),
        ("num_classes", 1),
        ("num_classes", 21),
        ("seed", -1),
        ("min_side", 16),
        ("max_side", 40),
        ("max_objects", 0),
        ("max_objects", 9),
        ("distractor_rate", 1.5),
        ("distractor_rate", float("nan")),
        ("cooccurrence_rate", -0.1),
        ("part_fraction", 0.0),
        ("part_fraction", 1.0),
        ("boundary_width", -1),
        ("boundary_width", 6),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        generate(tmp_path / "root", **{**TINY, name: value})
    assert not (tmp_path / "root").exists()
    assert not list(tmp_path.iterdir())


def test_existing_dataset_is_replaced_without_leftovers(tmp_path):
    root = tmp_path / "data"
    generate(root, **{**TINY, "n_train": 4})
    (root / "JPEGImages" / "stray.jpg").write_bytes(b"old")
    (tmp_path / ".data.partial-stale").mkdir()  # as a killed run would leave it
    generate(root, **{**TINY, "n_train": 2})
    assert _ids(root, "train") == ["syn_train_000000", "syn_train_000001"]
    assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == [
        "syn_train_000000.jpg", "syn_train_000001.jpg", "syn_val_000000.jpg", "syn_val_000001.jpg", "syn_val_000002.jpg"
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_interrupted_run_leaves_the_previous_dataset_untouched(tmp_path, monkeypatch):
    root = tmp_path / "data"
    generate(root, **TINY)
    before = _all_files(root)
    calls = []

    def failing_write(directory, sample_id, sample):
        calls.append(sample_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        synthetic.save_jpeg(directory / "JPEGImages" / f"{sample_id}.jpg", sample.image)

    monkeypatch.setattr(synthetic, "_write_sample", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate(root, **{**TINY, "seed": 99})
    assert _all_files(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="root"):
        generate(precious, **TINY)
    assert (precious / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(empty, **TINY)
    assert (empty / "class_names.json").is_file()


# ------------------------------------------------------------------------------------------ scene properties
def test_class_table_and_partners():
    names = class_names(20)
    assert len(names) == 21 and len(set(names)) == 21
    assert len({(a.colour, a.pattern) for a in class_appearances(20)}) == 20
    assert [partner_class(c, 5) for c in range(1, 6)] == [2, 1, 4, 3, None]
    assert class_names(6)[1:3] == ["red_stripes", "blue_dots"]


def test_occluded_fragments_below_the_visibility_rule_are_ignored_not_labelled():
    fragments = 0
    for index in range(20):
        sample = render_sample(
            sample_rng(1, "train", index), height=56, width=64, num_classes=20, max_objects=8, boundary_width=0
        )
        counts = np.bincount(sample.label.ravel(), minlength=256)
        assert sample.classes == [c for c in range(1, 21) if counts[c] > 0]
        assert all(counts[c] >= _min_visible(sample.label) for c in sample.classes)
        assert sample.salient[sample.label == IGNORE_INDEX].all()
        fragments += int(counts[IGNORE_INDEX] > 0)
    assert fragments >= 2, "crowded scenes must produce some occluded fragments for this test to mean anything"


def test_a_scene_without_a_visible_class_is_redrawn(monkeypatch):
    real_object = synthetic._object
    calls = []

    def vanishing_first_objects(*args, **kwargs):
        item = real_object(*args, **kwargs)
        calls.append(item.class_index)
        if len(calls) <= 3:  # the whole first scene (1 object + partner at most) is invisible
            item.region[:] = False
            item.part[:] = False
        return item

    monkeypatch.setattr(synthetic, "_object", vanishing_first_objects)
    sample = render_sample(sample_rng(2, "val", 0), height=48, width=48, num_classes=3, max_objects=1)
    assert len(calls) > 1
    assert sample.classes and np.count_nonzero(np.isin(sample.label, sample.classes)) >= MIN_VISIBLE_PIXELS


def test_part_covers_about_part_fraction_of_objects():
    achieved = {}
    for fraction in (0.25, 0.5):
        part = objects = 0
        for index in range(12):
            sample = render_sample(sample_rng(3, "train", index), height=96, width=112, num_classes=6, part_fraction=fraction)
            objects_mask = (sample.label > 0) & (sample.label != IGNORE_INDEX)
            part += np.count_nonzero(sample.part & objects_mask)
            objects += np.count_nonzero(objects_mask)
        achieved[fraction] = part / objects
    assert 0.17 < achieved[0.25] < 0.33
    assert 0.4 < achieved[0.5] < 0.6


def test_cooccurrence_rate_controls_partners(tmp_path):
    alone = generate(tmp_path / "alone", **{**TINY, "num_classes": 2, "max_objects": 1, "cooccurrence_rate": 0.0})
    assert alone["splits"]["train"]["cooccurrence"]["matrix"][0][1] == 0
    assert alone["splits"]["train"]["mean_classes_per_image"] == 1.0
    paired = generate(tmp_path / "paired", **{**TINY, "num_classes": 2, "max_objects": 1, "cooccurrence_rate": 1.0})
    assert paired["splits"]["train"]["cooccurrence"]["matrix"][0][1] >= 4  # of 6 (a partner may be occluded)


def test_distractors_are_salient_background(tmp_path):
    clean = generate(tmp_path / "clean", **{**TINY, "distractor_rate": 0.0})
    assert clean["splits"]["train"]["distractor_rate"] == 0.0
    for image_id in _ids(tmp_path / "clean", "train"):
        label = load_label_png(tmp_path / "clean" / "SegmentationClass" / f"{image_id}.png")
        salient = load_gray_png(tmp_path / "clean" / "SalientMask" / f"{image_id}.png") > 0.5
        assert not (salient & (label == 0)).any()
    busy = generate(tmp_path / "busy", **{**TINY, "distractor_rate": 1.0})
    assert busy["splits"]["train"]["distractor_rate"] >= 0.5


def _frequency_tuned_saliency(rgb: np.ndarray) -> np.ndarray:
    """Achanta et al. 2009: |mean Lab colour - blurred Lab image|, normalised to [0, 1]; (H, W)."""
    linear = rgb / 255.0
    linear = np.where(linear <= 0.04045, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
    kernel = np.array([1, 4, 6, 4, 1]) / 16
    padded = np.pad(lab, ((2, 2), (2, 2), (0, 0)), mode="edge")
    rows = sum(w * padded[i : i + lab.shape[0]] for i, w in enumerate(kernel))
    blurred = sum(w * rows[:, i : i + lab.shape[1]] for i, w in enumerate(kernel))
    saliency = np.linalg.norm(blurred - lab.reshape(-1, 3).mean(axis=0), axis=-1)
    return saliency / saliency.max()


def test_training_free_saliency_finds_objects_and_distractors(tiny):
    root, _ = tiny
    metric = SaliencyMetric()
    distractor_scores, background_scores = [], []
    for image_id in _ids(root, "train") + _ids(root, "val"):
        saliency = _frequency_tuned_saliency(load_image_rgb(root / "JPEGImages" / f"{image_id}.jpg").astype(np.float64))
        salient = load_gray_png(root / "SalientMask" / f"{image_id}.png") > 0.5
        label = load_label_png(root / "SegmentationClass" / f"{image_id}.png")
        metric.update(saliency, salient)
        distractor_scores.append(saliency[salient & (label == 0)])
        background_scores.append(saliency[~salient])
    assert metric.compute()["max_f"] > 0.6
    assert np.concatenate(distractor_scores).mean() > 2 * np.concatenate(background_scores).mean()


# ---------------------------------------------------------------------------------------------- statistics
def test_statistics_match_the_written_files(tiny):
    root, returned = tiny
    statistics = dataset_statistics(root)
    assert statistics == returned == json.loads((root / "stats.json").read_text())
    labels = json.loads((root / "image_labels.json").read_text())
    names = class_names(4)
    for split, count in (("train", 6), ("val", 3)):
        split_stats = statistics["splits"][split]
        ids = _ids(root, split)
        assert split_stats["num_images"] == count
        expected_frequency = {names[c]: sum(c in labels[i] for i in ids) for c in range(1, 5)}
        assert split_stats["class_frequency"] == expected_frequency
        matrix = np.array(split_stats["cooccurrence"]["matrix"])
        assert split_stats["cooccurrence"]["classes"] == names[1:]
        assert np.array_equal(matrix, matrix.T)
        assert np.diag(matrix).tolist() == list(expected_frequency.values())
        assert matrix[0, 1] == sum(1 in labels[i] and 2 in labels[i] for i in ids)
        masks = [load_label_png(root / "SegmentationClass" / f"{i}.png") for i in ids]
        object_share = np.mean([np.count_nonzero((m > 0) & (m != IGNORE_INDEX)) / m.size for m in masks])
        assert split_stats["mean_object_area_fraction"] == pytest.approx(object_share, abs=1e-6)
        ignore_share = sum(np.count_nonzero(m == IGNORE_INDEX) for m in masks) / sum(m.size for m in masks)
        assert split_stats["ignore_fraction"] == pytest.approx(ignore_share, abs=1e-6)
        assert split_stats["mean_height"] == pytest.approx(np.mean([m.shape[0] for m in masks]), abs=1e-6)
        assert split_stats["label_mask_mismatches"] == 0
        assert 0.0 <= split_stats["distractor_rate"] <= 1.0


def test_cli_table_json_and_error_exit(tiny, tmp_path, capsys):
    root, statistics = tiny
    assert main([str(root)]) == 0
    table = capsys.readouterr().out
    assert "object area fraction" in table and class_names(4)[1] in table
    assert main([str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == statistics
    not_a_dataset = tmp_path / "plain"
    not_a_dataset.mkdir()
    assert main([str(not_a_dataset)]) != 0
    assert str(not_a_dataset) in capsys.readouterr().err
    completed = subprocess.run(
        [sys.executable, "-m", "auxseg.data.stats", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert completed.returncode != 0 and "missing" in completed.stderr


def test_statistics_reject_a_mask_that_does_not_match_its_image(tmp_path):
    copy = tmp_path / "copy"
    generate(copy, **TINY)
    image_id = _ids(copy, "val")[0]
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8), mode="L").save(copy / "SalientMask" / f"{image_id}.png")
    with pytest.raises(ValueError, match=image_id):
        dataset_statistics(copy)
