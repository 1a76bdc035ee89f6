"""Custom datasets: own class names (params or a file), image-level labels only on train, masks on part of val.

The end-to-end test runs both DVC pipelines with the real ``dvc`` in a temporary git repository on the tiny profile
(the set-up of ``tests/test_dvc_pipeline.py``), on a custom dataset made from a tiny synthetic one: three own class
names in params, a CSV of class names per image, no train masks, masks on half of val.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from auxseg.config import DatasetParams
from auxseg.data.datasets import load_split, validate_split
from auxseg.data.synthetic import generate
from auxseg.io import DataError
from auxseg.params import ParamError, parse_section
from auxseg.steps.common import scored_split

NAMES = ["background", "hairline crack", "rust_spot", "dent"]


def make_custom_dataset(root: Path, *, n_train: int, n_val: int, seed: int = 0) -> list[str]:
    """A custom dataset under ``root`` from a synthetic one with 3 classes: labels.csv (class names), no train
    masks, val masks on every other id, no class_names.json / image_labels.json / SalientMask. Returns the val ids
    that keep a mask."""
    generate(root, n_train=n_train, n_val=n_val, num_classes=3, seed=seed, min_side=64, max_side=80, max_objects=1)
    labels = json.loads((root / "image_labels.json").read_text())
    for name in ("image_labels.json", "class_names.json"):
        (root / name).unlink()
    shutil.rmtree(root / "SalientMask", ignore_errors=True)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "labels"])
        for image_id, indices in sorted(labels.items()):
            writer.writerow([image_id, " ".join(NAMES[i] for i in indices)])
    masks = root / "SegmentationClass"
    for image_id in (root / "ImageSets/Segmentation/train.txt").read_text().split():
        (masks / f"{image_id}.png").unlink()
    val_ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    for image_id in val_ids[1::2]:
        (masks / f"{image_id}.png").unlink()
    return val_ids[0::2]


def _params(root: Path, **extra) -> DatasetParams:
    return parse_section(DatasetParams, {"name": "custom", "root": str(root), "image_labels": "labels.csv", **extra},
                         "dataset")


def test_custom_splits_with_own_names_labels_only_train_and_partial_val_masks(tmp_path):
    root = tmp_path / "custom"
    with_masks = make_custom_dataset(root, n_train=6, n_val=5)
    params = _params(root, class_names=NAMES)
    train = load_split(params, "train")
    val = load_split(params, "val")
    validate_split(train, check_masks=True)
    validate_split(val, check_masks=True)
    assert train.class_names == tuple(NAMES) and train.mask_ids == ()
    assert list(val.mask_ids) == with_masks and len(with_masks) == 3
    for image_id in val.ids:  # the CSV's class names became multi-hot labels
        assert val.image_labels[image_id].shape == (3,) and val.image_labels[image_id].sum() >= 1
    scored, coverage = scored_split(val)
    assert scored.ids == tuple(with_masks)
    assert coverage == {"ground_truth": "partial", "images_scored": 3, "images_total": 5}
    assert scored_split(train) == (None, {"ground_truth": "none", "images_scored": 0, "images_total": 6})
    # names from root/class_names.json, or from a file named in params
    (root / "class_names.json").write_text(json.dumps(NAMES))
    assert load_split(_params(root), "val").class_names == tuple(NAMES)
    renamed = ["background", "Dent", "Hairline_Crack", "rust spot"]  # matched case- and '_'-insensitively
    (root / "names.json").write_text(json.dumps(renamed))
    other = load_split(_params(root, class_names_file="names.json"), "val")
    assert other.class_names == tuple(renamed)
    assert all(other.image_labels[i][[1, 2, 0]].tolist() == val.image_labels[i].tolist() for i in val.ids)


@pytest.mark.parametrize(
    "names, message",
    [
        (["background", "a", "A"], "dataset.class_names: duplicate class names ['a']"),
        (["background", "a", " "], "dataset.class_names[2]: class names must be non-empty strings"),
        (["background", 3], "dataset.class_names[1]: expected a string"),
        (["cat", "dog"], "dataset.class_names: expected 'background' followed by at least one class"),
        (["background"], "dataset.class_names: expected 'background' followed by at least one class"),
    ],
)
def test_bad_class_names_in_params_name_the_key(names, message):
    with pytest.raises(ParamError) as error:
        parse_section(DatasetParams, {"name": "custom", "class_names": names}, "dataset")
    assert str(error.value).startswith(message), str(error.value)


def test_class_names_errors_name_the_file_or_key(tmp_path):
    root = tmp_path / "custom"
    make_custom_dataset(root, n_train=2, n_val=2)
    with pytest.raises(DataError, match=r"class_names\.json: dataset 'custom' needs its class names"):
        load_split(_params(root), "train")
    (root / "class_names.json").write_text(json.dumps(["background", "rust", "Rust"]))
    with pytest.raises(DataError, match=r"class_names\.json: duplicate class names \['rust'\]"):
        load_split(_params(root), "train")
    with pytest.raises(DataError, match=r"missing\.json: class-name file not found \(dataset\.class_names_file\)"):
        load_split(_params(root, class_names_file="missing.json"), "train")
    with pytest.raises(ParamError, match=r"^dataset\.class_names: only read when dataset\.name is custom"):
        parse_section(DatasetParams, {"name": "synthetic", "class_names": NAMES}, "dataset")
    with pytest.raises(ParamError, match=r"^dataset\.class_names: give the class names either here or in"):
        parse_section(DatasetParams, {"name": "custom", "class_names": NAMES, "class_names_file": "x.json"}, "dataset")
    # no label file and a train image without a mask: the labels cannot be derived
    with pytest.raises(DataError, match=r"image_labels\.json: image-level label file not found, and id '.+' of split "
                                        r"'train' has no mask"):
        load_split(parse_section(DatasetParams, {"name": "custom", "root": str(root), "class_names": NAMES},
                                 "dataset"), "train")


@pytest.mark.slow
def test_custom_dataset_runs_both_dvc_pipelines_and_reports_what_was_scored(tmp_path):
    from test_dvc_pipeline import DVC, GIT_IDENTITY, PY, SINGLE_STAGE_PIPELINE, _environment, _require_tools, copy_project, sh

    _require_tools()
    env = _environment(tmp_path)
    repo = tmp_path / "repo"
    copy_project(repo)
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    sh([PY, "-m", "auxseg.cli", "profile", "tiny"], repo, env)
    sh([PY, "-m", "auxseg.cli", "rounds", "1"], repo, env)
    n_train, n_val = 16, 6
    with_masks = make_custom_dataset(repo / "data/custom", n_train=n_train, n_val=n_val)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["dataset"].update(name="custom", root="data/custom", image_labels="labels.csv", class_names=NAMES)
    params["samples"]["num_images"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh([DVC, "remote", "add", "-d", "-f", "local", tmp_path / "remote"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", *GIT_IDENTITY, "commit", "-q", "-m", "custom dataset"], repo, env)
    sh([DVC, "repro"], repo, env, timeout=1200)
    sh([DVC, "repro", SINGLE_STAGE_PIPELINE], repo, env, timeout=1200)

    def metrics(name: str) -> dict:
        return json.loads((repo / "metrics" / name).read_text())

    none_train = {"ground_truth": "none", "images_scored": 0, "images_total": n_train}
    partial_val = {"ground_truth": "partial", "images_scored": len(with_masks), "images_total": n_val}
    assert metrics("cam_seeds.json") == none_train
    for round_name in ("r0", "r1"):
        assert metrics(f"rounds/{round_name}.json") == {"round": round_name, **none_train}
    # the sample picture needs no mask: image | CAM seeds | r0 | r1 | DeepLab (no ground-truth column)
    assert len(list((repo / "metrics/samples").glob("*.png"))) == 1
    assert metrics("saliency_prior.json") == {"method": "training_free", "num_images": n_train, **none_train}
    summary = metrics("summary.json")
    assert summary["ground_truth"] == "none" and "r0_miou" not in summary and "cam_seed_miou" not in summary
    assert (repo / "metrics/miou_per_round.csv").read_text().count("\n") == 1  # the header only
    final = metrics("final.json")
    assert {key: final[key] for key in partial_val} == partial_val
    assert set(metrics("details/final.json")["deeplab_per_class_iou_crf"]) == set(NAMES)
    assert 0.0 <= final["deeplab_miou"] <= 1.0 and not [key for key in final if "per_class" in key]
    single = metrics("single_stage.json")
    assert {key: single[key] for key in partial_val} == partial_val and "single_stage_miou" in single
    assert {key: single[f"pseudo_{key}"] for key in none_train} == none_train and "pseudo_miou" not in single
    assert set(metrics("details/classification.json")["ap_per_class"]) == set(NAMES[1:])  # image labels suffice
    import torch

    for model in ("models/deeplab.pt", "models/rounds/r0.pt", "models/rounds/r1.pt", "models/single_stage.pt",
                  "models/classifier.pt"):
        meta = torch.load(repo / model, map_location="cpu", weights_only=True)["meta"]
        assert meta["class_names"] == NAMES, model
    out = tmp_path / "predicted"
    result = sh([PY, "-m", "auxseg.cli", "predict", "models/rounds/r1.pt", "data/custom/JPEGImages/*.jpg", "--out", out],
                repo, env)
    assert len(list(out.glob("*.png"))) == n_train + n_val, result.stdout
    shown = sh([PY, "-m", "auxseg.cli", "show", "final"], repo, env).stdout
    assert any(line.split() == ["images_scored", str(len(with_masks))] for line in shown.splitlines())
    assert math.isfinite(final["deeplab_miou_crf"]) and np.isfinite(single["single_stage_miou"])
