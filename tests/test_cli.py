"""The ``auxseg`` command: its subcommands' help, ``auxseg predict`` (bad inputs, determinism, the same labels as
``evaluate``'s code path) and ``auxseg show``. Models are small random-weight networks saved like the pipeline's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auxseg.normalization import IMAGENET
from auxseg.io import load_label_png, save_jpeg
from auxseg.steps.common import save_model

ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["background", "scratch", "dent", "rust"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1"}


def auxseg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the ``auxseg`` console script's entry point (``auxseg.cli:main``) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "auxseg.cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def _images(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {}
    for index, (height, width) in enumerate(((48, 64), (48, 64), (56, 40))):
        rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        rgb[10:30, 10:30] = (220, 30, 30)
        save_jpeg(folder / f"photo_{index}.jpg", rgb)
        images[f"photo_{index}"] = np.asarray(Image.open(folder / f"photo_{index}.jpg").convert("RGB"))
    return images


@pytest.fixture(scope="module")
def deeplab_file(tmp_path_factory) -> Path:
    from auxseg.models.deeplab import DeepLab

    torch.manual_seed(0)
    model = DeepLab.from_backbone_name("tiny", len(CLASS_NAMES), output_stride=8, head_channels=16)
    path = tmp_path_factory.mktemp("models") / "deeplab.pt"
    save_model(path, model, normalization=IMAGENET, kind="deeplab", backbone="tiny", output_stride=8, head_channels=16,
               num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, trained_on="r1")
    return path


def test_help_of_auxseg_and_of_every_subcommand(capsys):
    from auxseg.cli import main

    def help_text(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--help"])
        assert exit_info.value.code == 0, args
        return capsys.readouterr().out

    commands = ("predict", "show", "stats", "rounds", "profile", "convert-resnet38", "top5", "ablate-labels", "bench")
    text = help_text()
    for command in commands:
        assert command in text
    for args in [[c] for c in commands] + [["bench", "label-update"], ["bench", "crf"], ["bench", "forward"], ["bench", "bf16-labels"],
                                            ["bench", "train-step"]]:
        assert f"usage: auxseg {' '.join(args)}" in help_text(*args), args
    result = auxseg("--help")  # the module entry point, as the console script runs it
    assert result.returncode == 0 and "usage: auxseg" in result.stdout, result.stderr
    assert 'auxseg = "auxseg.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_predict_writes_the_good_images_byte_identically_and_names_the_corrupt_one(deeplab_file, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    images = _images(photos)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    (photos / "notes.txt").write_text("not an image suffix: skipped")
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / f"out_{run}"
        result = auxseg("predict", deeplab_file, photos, "--out", out, "--overlay", "--probs", "--device", "cpu")
        assert result.returncode == 1, result.stderr
        assert f"{photos / 'broken.jpg'}" in result.stderr
        assert "2 of 4" not in result.stderr and "3 of 4 images" in result.stderr
        outputs.append(out)
    written = sorted(p.relative_to(outputs[0]).as_posix() for p in outputs[0].rglob("*") if p.is_file())
    assert written == sorted([f"{s}.png" for s in images] + [f"overlays/{s}.png" for s in images]
                             + [f"probs/{s}.npz" for s in images])
    for name in written:
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
    for stem, rgb in images.items():
        label = load_label_png(outputs[0] / f"{stem}.png")
        assert label.shape == rgb.shape[:2] and label.max() < len(CLASS_NAMES)
        assert Image.open(outputs[0] / f"{stem}.png").mode == "P"
        with np.load(outputs[0] / "probs" / f"{stem}.npz") as archive:
            probs = archive["probs"]
            assert archive["class_names"].tolist() == CLASS_NAMES
        assert probs.dtype == np.float16 and probs.shape == (len(CLASS_NAMES), *rgb.shape[:2])
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
        np.testing.assert_array_equal(label, probs.astype(np.float32).argmax(0))
    assert not list(outputs[0].rglob("*.tmp"))


def test_predict_fatal_errors_exit_2_naming_the_file(tmp_path, deeplab_file):
    from auxseg.models.classifier import CamClassifier

    save_jpeg(tmp_path / "x.jpg", np.zeros((32, 32, 3), np.uint8))
    classifier = tmp_path / "r0.pt"
    save_model(classifier, CamClassifier.from_backbone_name("tiny", 3), normalization=IMAGENET, kind="classifier",
               backbone="tiny",
               output_stride=8, num_classes_fg=3, class_names=CLASS_NAMES)
    for model, message in ((tmp_path / "missing.pt", "model file not found"), (classifier, "classifier")):
        result = auxseg("predict", model, tmp_path / "x.jpg", "--out", tmp_path / "out")
        assert result.returncode == 2 and str(model) in result.stderr and message in result.stderr, result.stderr
    sub = tmp_path / "sub"
    sub.mkdir()
    save_jpeg(sub / "x.jpg", np.zeros((32, 32, 3), np.uint8))
    result = auxseg("predict", deeplab_file, tmp_path / "x.jpg", sub / "x.jpg", "--out", tmp_path / "out")
    assert result.returncode == 2 and "x.png" in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_predict_and_evaluate_give_the_same_labels(deeplab_file, tmp_path):
    """The CLI and evaluate's predict_split (the val predictions it scores), at the same scales, flip and CRF."""
    from auxseg.config import DatasetParams, RuntimeSection
    from auxseg.data.datasets import load_split
    from auxseg.steps.common import model_normalization
    from auxseg.params import parse_section
    from auxseg.steps.evaluate import multiscale_probs_fn, predict_split
    from auxseg.steps.train_deeplab import load_deeplab

    root = tmp_path / "data"
    (root / "JPEGImages").mkdir(parents=True)
    images = _images(root / "JPEGImages")
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(images) + "\n")
    (root / "image_labels.json").write_text(json.dumps({stem: [1] for stem in images}))
    params = parse_section(DatasetParams, {"name": "custom", "root": str(root), "class_names": CLASS_NAMES}, "dataset")
    split = load_split(params, "val")
    model, meta = load_deeplab(deeplab_file)
    runtime = parse_section(RuntimeSection, {"crf_workers": 1}, "runtime")
    probs_fn = multiscale_probs_fn(model, [1.0, 0.75], True, torch.device("cpu"), model_normalization(meta, deeplab_file))
    evaluated = predict_split("test", probs_fn, split, 2, runtime)

    out = tmp_path / "out"
    result = auxseg("predict", deeplab_file, root / "JPEGImages", "--out", out, "--scales", "1.0", "0.75", "--flip",
                    "--crf", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    plain_out = tmp_path / "plain"
    result = auxseg("predict", deeplab_file, root / "JPEGImages", "--out", plain_out, "--scales", "1.0", "0.75",
                    "--flip", "--batch-size", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for image_id, (plain, refined) in zip(split.ids, evaluated):
        np.testing.assert_array_equal(load_label_png(out / f"{image_id}.png"), refined)
        np.testing.assert_array_equal(load_label_png(plain_out / f"{image_id}.png"), plain)


def test_show_prints_a_round_as_a_table_and_names_a_missing_file(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    metrics = {"round": "r1", "miou": 0.5, "precision": 0.25, "per_class_iou": {"background": 0.75, "dent": 0.125},
               "images_scored": 3, "images_total": 6, "ground_truth": "partial"}
    (tmp_path / "metrics/rounds").mkdir(parents=True)
    (tmp_path / "metrics/rounds/r1.json").write_text(json.dumps(metrics))
    result = auxseg("show", "r1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split() == ["miou", "0.5000"] for line in lines)
    assert any(line.split() == ["dent", "0.1250"] for line in lines)
    assert any(line.split() == ["images_scored", "3"] for line in lines)
    result = auxseg("show", "r2", cwd=tmp_path)
    assert result.returncode == 2 and "metrics/rounds/r2.json" in result.stderr
    result = auxseg("show", "nonsense", cwd=tmp_path)
    assert result.returncode == 2 and "unknown target 'nonsense'" in result.stderr
