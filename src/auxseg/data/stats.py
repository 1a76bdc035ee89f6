"""Statistics of a generated synthetic dataset, computed from the written files.

``python -m auxseg.data.stats ROOT [--json]`` (console script ``auxseg-dataset-stats``) prints them as a table or
as JSON (strict: an undefined value is ``null``); the exit code is 2, with one ``error: <file>: ...`` line, when
ROOT is not a generated dataset or a file is bad (a split list with a duplicate or unsafe id, a JSON file with a
duplicate key, text that is not UTF-8).

Per split (one per ``ImageSets/Segmentation/*.txt``):

* ``num_images``, ``mean_height``, ``mean_width``, ``mean_classes_per_image`` (image-level labels);
* ``class_frequency``: {class name: images whose image-level labels hold the class} (from ``image_labels.json``);
* ``cooccurrence``: ``{"classes": [K names], "matrix": K×K}``, images labelled with both classes (diagonal =
  class frequency);
* ``mean_object_area_fraction``: mean over images of the share of pixels labelled 1..K in the mask (the 255
  boundary band is not counted); ``class_area_fraction``: {class name: mean over images whose mask holds the
  class of that class's pixel share} (null when no mask holds it);
* ``distractor_rate``: share of images with a distractor, i.e. at least max(30 px, 1 % of the image) of
  ``SalientMask`` pixels whose mask label is background;
* ``ignore_fraction``: share of all mask pixels equal to 255;
* ``label_mask_mismatches``: images whose mask classes differ from their image-level labels (0 for a valid set).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from auxseg import IGNORE_INDEX
from auxseg.data.datasets import read_id_list
from auxseg.io import DataError, image_size, json_text, load_gray_png, load_json, load_label_png

MIN_VISIBLE_FRACTION = 0.01
"""A class (or distractor) counts as present when its visible pixels are at least this share of the image ..."""
MIN_VISIBLE_PIXELS = 30
"""... and at least this many pixels (shared with :mod:`auxseg.data.synthetic`)."""


def _read_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found (not a generated synthetic dataset?)")
    return load_json(path)


def _read_class_names(root: Path) -> list[str]:
    path = root / "class_names.json"
    names = _read_json(path)
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(name, str) for name in names):
        raise DataError(f"{path}: expected a list of at least two class names")
    if names[0] != "background":
        raise DataError(f"{path}: the first class name must be 'background', got {names[0]!r}")
    return names


def _read_image_labels(root: Path, num_classes: int) -> dict[str, list[int]]:
    path = root / "image_labels.json"
    labels = _read_json(path)
    if not isinstance(labels, dict):
        raise DataError(f"{path}: expected a mapping {{image id: [class indices]}}")
    for image_id, classes in labels.items():
        if not isinstance(classes, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= num_classes for c in classes
        ):
            raise DataError(f"{path}: labels of {image_id!r} must be a list of class indices in 1..{num_classes}")
    return labels


def _read_split_lists(root: Path) -> dict[str, list[str]]:
    directory = root / "ImageSets" / "Segmentation"
    lists = sorted(directory.glob("*.txt")) if directory.is_dir() else []
    if not lists:
        raise DataError(f"{directory}: no split lists (*.txt) found (not a generated synthetic dataset?)")
    return {path.stem: list(read_id_list(path)) for path in lists}


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _split_statistics(
    root: Path, ids: list[str], names: list[str], labels: dict[str, list[int]], list_name: str
) -> dict:
    num_classes = len(names) - 1
    cooccurrence = np.zeros((num_classes, num_classes), dtype=np.int64)
    area_sum = np.zeros(num_classes + 1, dtype=np.float64)
    area_images = np.zeros(num_classes + 1, dtype=np.int64)
    object_fractions, heights, widths = [], [], []
    ignore_pixels = total_pixels = distractor_images = mismatches = label_count = 0
    for image_id in ids:
        if image_id not in labels:
            raise DataError(f"{root / 'image_labels.json'}: no labels for {image_id!r} (listed in {list_name})")
        mask_path = root / "SegmentationClass" / f"{image_id}.png"
        salient_path = root / "SalientMask" / f"{image_id}.png"
        image_path = root / "JPEGImages" / f"{image_id}.jpg"
        mask = load_label_png(mask_path)
        salient = load_gray_png(salient_path) >= 0.5
        if salient.shape != mask.shape:
            raise DataError(f"{salient_path}: size {salient.shape} differs from its mask {mask_path} {mask.shape}")
        if image_size(image_path) != mask.shape:
            raise DataError(f"{image_path}: size {image_size(image_path)} differs from its mask {mask.shape}")
        invalid = (mask > num_classes) & (mask != IGNORE_INDEX)
        if invalid.any():
            raise DataError(f"{mask_path}: values {np.unique(mask[invalid]).tolist()} outside 0..{num_classes} and 255")
        pixels = mask.size
        counts = np.bincount(mask.ravel(), minlength=256)
        class_counts = counts[: num_classes + 1]
        present_in_mask = class_counts[1:] > 0
        area_sum[1:][present_in_mask] += class_counts[1:][present_in_mask] / pixels
        area_images[1:][present_in_mask] += 1
        object_fractions.append(class_counts[1:].sum() / pixels)
        ignore_pixels += int(counts[IGNORE_INDEX])
        total_pixels += pixels
        heights.append(mask.shape[0])
        widths.append(mask.shape[1])
        min_visible = max(MIN_VISIBLE_PIXELS, math.ceil(MIN_VISIBLE_FRACTION * pixels))
        distractor_images += int(np.count_nonzero(salient & (mask == 0)) >= min_visible)
        image_classes = sorted(set(labels[image_id]))
        label_count += len(image_classes)
        mismatches += int(image_classes != [c for c in range(1, num_classes + 1) if present_in_mask[c - 1]])
        indicator = np.zeros(num_classes, dtype=np.int64)
        indicator[np.array(image_classes, dtype=np.int64) - 1] = 1
        cooccurrence += np.outer(indicator, indicator)
    count = len(ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_area = area_sum / area_images
    return {
        "num_images": count,
        "mean_height": _round(np.mean(heights)) if count else None,
        "mean_width": _round(np.mean(widths)) if count else None,
        "mean_classes_per_image": _round(label_count / count) if count else None,
        "class_frequency": {names[c]: int(cooccurrence[c - 1, c - 1]) for c in range(1, num_classes + 1)},
        "cooccurrence": {"classes": names[1:], "matrix": cooccurrence.tolist()},
        "mean_object_area_fraction": _round(np.mean(object_fractions)) if count else None,
        "class_area_fraction": {names[c]: _round(class_area[c]) for c in range(1, num_classes + 1)},
        "distractor_rate": _round(distractor_images / count) if count else None,
        "ignore_fraction": _round(ignore_pixels / total_pixels) if total_pixels else None,
        "label_mask_mismatches": mismatches,
    }


def dataset_statistics(root: str | os.PathLike) -> dict:
    """Statistics of the dataset under ``root`` (see the module docstring); raises DataError naming a bad file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    names = _read_class_names(root)
    labels = _read_image_labels(root, len(names) - 1)
    for folder in ("JPEGImages", "SegmentationClass", "SalientMask"):
        if not (root / folder).is_dir():
            raise DataError(f"{root / folder}: folder not found (not a generated synthetic dataset?)")
    splits = {
        split: _split_statistics(root, ids, names, labels, f"ImageSets/Segmentation/{split}.txt")
        for split, ids in _read_split_lists(root).items()
    }
    return {"num_classes": len(names) - 1, "class_names": names, "splits": splits}


def format_table(statistics: dict) -> str:
    """A readable plain-text rendering of :func:`dataset_statistics`."""
    splits = statistics["splits"]
    split_names = list(splits)
    lines = [f"classes: {statistics['num_classes']} foreground + background"]
    rows = [
        ("images", "num_images", "{}"),
        ("mean size (HxW)", None, ""),
        ("labels per image", "mean_classes_per_image", "{:.2f}"),
        ("object area fraction", "mean_object_area_fraction", "{:.3f}"),
        ("distractor rate", "distractor_rate", "{:.3f}"),
        ("ignore (255) fraction", "ignore_fraction", "{:.4f}"),
        ("label/mask mismatches", "label_mask_mismatches", "{}"),
    ]

    def cell(value, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    name_width = max(24, max(len(name) for name in statistics["class_names"]) + 2)
    lines.append("".join([f"{'':<{name_width}}"] + [f"{name:>18}" for name in split_names]))
    for title, key, fmt in rows:
        if key is None:
            values = [
                "-" if s["mean_height"] is None else f"{s['mean_height']:.1f}x{s['mean_width']:.1f}" for s in splits.values()
            ]
        else:
            values = [cell(s[key], fmt) for s in splits.values()]
        lines.append("".join([f"{title:<{name_width}}"] + [f"{v:>18}" for v in values]))
    lines.append("")
    lines.append("per class: images labelled / mean area fraction where present")
    for name in statistics["class_names"][1:]:
        values = [
            f"{s['class_frequency'][name]} / {cell(s['class_area_fraction'][name], '{:.3f}')}" for s in splits.values()
        ]
        lines.append("".join([f"{name:<{name_width}}"] + [f"{v:>18}" for v in values]))
    for split, split_stats in splits.items():
        matrix = split_stats["cooccurrence"]["matrix"]
        classes = split_stats["cooccurrence"]["classes"]
        lines.append("")
        lines.append(f"co-occurrence ({split}): images labelled with both classes; columns as rows")
        for index, (name, row) in enumerate(zip(classes, matrix)):
            lines.append(f"{index + 1:>3} {name:<{name_width}}" + "".join(f"{count:>6}" for count in row))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "auxseg-dataset-stats", description="Statistics of a generated synthetic VOC-style dataset."
    )
    parser.add_argument("root", help="dataset root (holds class_names.json, image_labels.json, ImageSets/...)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        statistics = dataset_statistics(args.root)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        print(json_text(statistics).rstrip("\n") if args.json else format_table(statistics), flush=True)
    except BrokenPipeError:  # output piped into e.g. `head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
