"""``auxseg supervised-ceiling``: the params' DeepLab trained on the ground-truth masks, scored; bad input exits 2."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from auxseg.tools.supervised_ceiling import format_report, main, train_images_per_class

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "synthetic": {"n_train": 6, "n_val": 3, "min_side": 48, "max_side": 64, "out_dir": "data/synthetic"},
    "dataset": {"root": "data/synthetic"},
    "runtime": {"crf_workers": 1},
    "deeplab": {"init_from_classifier": False, "head_channels": 16, "augment": {"crop_size": 48},
                "optim": {"epochs": 3, "batch_size": 2, "log_every": 1}},
    "evaluate": {"scales": [1.0], "flip": False, "crf_iterations": 1},
}


def test_train_images_per_class_counts_the_multi_hot_image_labels():
    split = SimpleNamespace(
        ids=("a", "b", "c"), num_classes=4, class_names=("background", "cat", "dog", "cow"),
        image_labels={"a": np.array([1.0, 0.0, 0.0]), "b": np.array([1.0, 1.0, 0.0]), "c": np.array([0.0, 1.0, 0.0])},
    )
    assert train_images_per_class(split) == {"cat": 2, "dog": 2, "cow": 0}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ceiling")
    (repo / "params.yaml").write_text(yaml.safe_dump(TINY))
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "synthesize.py")], cwd=repo, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return repo


def test_the_ceiling_trains_on_the_masks_scores_val_and_train_and_writes_only_the_json(tiny_repo):
    before = sorted(str(p.relative_to(tiny_repo)) for p in tiny_repo.rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "auxseg.cli", "supervised-ceiling", "--epochs", "2", "--train-too", "--json", "c.json"],
        cwd=tiny_repo, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = sorted(str(p.relative_to(tiny_repo)) for p in tiny_repo.rglob("*"))
    assert sorted(set(after) - set(before)) == ["c.json"]  # no model, no checkpoint, no dvclive left behind
    figures = json.loads((tiny_repo / "c.json").read_text())
    assert figures["epochs"] == 2 and figures["train_images"] == 6 and figures["steps_per_epoch"] == 3
    assert figures["val"]["images"] == 3 and figures["train"]["images"] == 6
    for role in ("val", "train"):
        assert 0.0 <= figures[role]["miou"] <= 1.0 and 0.0 <= figures[role]["miou_crf"] <= 1.0
        assert "background" in figures[role]["per_class_iou"]
    labels = json.loads((tiny_repo / "data/synthetic/image_labels.json").read_text())
    train_ids = (tiny_repo / "data/synthetic/ImageSets/Segmentation/train.txt").read_text().split()
    assert sum(figures["train_images_per_class"].values()) == sum(len(labels[i]) for i in train_ids)
    assert "ground-truth masks of 6 train images" in result.stdout and "train IoU" in result.stdout


def test_bad_params_and_arguments_exit_2_naming_them(tiny_repo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--epochs", "0"])
    assert exit_info.value.code == 2 and "--epochs" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    assert main(["--params", str(missing)]) == 2
    assert f"error: {missing}: params file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "deeplab": {**TINY["deeplab"], "head_chanels": 8}}))
    assert main(["--params", str(bad)]) == 2
    assert "deeplab.head_chanels: unknown key" in capsys.readouterr().err


def test_the_report_names_every_class_with_its_train_images():
    scores = {"images": 2, "miou": 0.5, "miou_crf": 0.6, "precision": 0.7, "recall": 0.4,
              "per_class_iou": {"background": 0.9, "cat": 0.1, "dog": float("nan")}}
    text = format_report({"backbone": "tiny", "epochs": 1, "steps_per_epoch": 3, "train_images": 6,
                          "train_images_per_class": {"cat": 4, "dog": 0}, "val": scores})
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[6:]}
    assert rows == {"background": ["-", "0.900"], "cat": ["4", "0.100"], "dog": ["0", "-"]}


def _ceiling(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auxseg.cli", "supervised-ceiling", *args], cwd=repo,
                          capture_output=True, text=True, timeout=300, env=env)


def test_bad_files_and_values_are_refused_before_the_training_with_one_error_line(tiny_repo, tmp_path):
    # --json naming a directory: refused before training, not after
    result = _ceiling(tiny_repo, "--epochs", "1", "--json", str(tmp_path))
    assert result.returncode == 2 and f"error: {tmp_path}: --json names a directory" in result.stderr
    assert "ceiling 1/" not in result.stderr + result.stdout and "Traceback" not in result.stderr
    # a corrupt val image is found before the training starts
    data = tmp_path / "data"
    shutil.copytree(tiny_repo / "data/synthetic", data)
    broken = sorted((data / "JPEGImages").glob("syn_val_*.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:200])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**TINY, "dataset": {"root": str(data)}}))
    result = _ceiling(tiny_repo, "--params", str(params), "--json", "never.json")
    assert result.returncode == 2 and broken.name in result.stderr and "ceiling 1/" not in result.stderr
    assert not (tiny_repo / "never.json").exists()
    # a value the model code refuses is an error line too, not a traceback
    params.write_text(yaml.safe_dump({**TINY, "deeplab": {**TINY["deeplab"], "network": {"backbone": "resnet9000"}}}))
    result = _ceiling(tiny_repo, "--params", str(params))
    assert result.returncode == 2 and "error:" in result.stderr and "resnet9000" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_removes_the_temporary_checkpoint(tiny_repo, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    process = subprocess.Popen([sys.executable, "-m", "auxseg.cli", "supervised-ceiling", "--epochs", "500"],
                               cwd=tiny_repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(scratch.glob("auxseg-ceiling-*/last.pt")) and time.monotonic() < deadline:
            time.sleep(0.2)  # wait for the first epoch's checkpoint
        assert list(scratch.glob("auxseg-ceiling-*/last.pt")), "no checkpoint appeared"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        process.kill()
    assert not list(scratch.glob("auxseg-ceiling-*"))


def test_an_empty_or_foreign_model_file_is_refused_naming_it(tmp_path):
    from auxseg.steps.common import load_model_file

    empty = tmp_path / "classifier.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty}: not a readable model file"):
        load_model_file(empty)
    empty.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=f"{empty}: not a readable model file"):
        load_model_file(empty)
