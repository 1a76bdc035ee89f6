"""A real training stage killed with SIGKILL after its first checkpoint and re-run ends with every output — the
model AND the dvclive curves — byte-identical to an uninterrupted run (issue 13, kind 8).

DVC deletes a stage's outputs before it runs the stage again, so the dvclive folder is gone when the engine
resumes; the checkpoint in ``.auxseg/checkpoints`` carries the log's bytes and the engine rebuilds it.
Tiny profile, the ``train_classifier`` stage (run under the real ``dvc`` in a temporary git repository).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from auxseg.tools.apply_profile import splice
from test_dvc_pipeline import DVC, GIT_IDENTITY, PY, _environment, _require_tools, copy_project, read_lock, sh

pytestmark = pytest.mark.slow

STAGE = "train_classifier"
CHECKPOINT = Path(".auxseg/checkpoints/classifier/last.pt")
EPOCHS = 4  # the kill must come after the first checkpoint and before the last epoch ends


def tree_bytes(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def stage_outputs(repo: Path) -> tuple[dict[str, str], dict[str, dict[str, bytes]]]:
    """(path → md5 from dvc.lock, path → bytes of every file) of the stage's outputs."""
    outs = read_lock(repo)[STAGE]["outs"]
    return {o["path"]: o["md5"] for o in outs}, {o["path"]: tree_bytes(repo / o["path"]) for o in outs}


def test_sigkilled_training_stage_resumes_to_identical_outputs(tmp_path):
    _require_tools()
    env = _environment(tmp_path)
    repo = tmp_path / "repo"
    copy_project(repo)
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    sh([PY, "-m", "auxseg.tools.apply_profile", "tiny"], repo, env)
    _set_epochs(repo / "params.yaml", EPOCHS)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", *GIT_IDENTITY, "commit", "-q", "-m", "tiny profile"], repo, env)
    # the uninterrupted reference
    sh([DVC, "repro", STAGE], repo, env)
    reference_md5, reference_files = stage_outputs(repo)
    assert not (repo / CHECKPOINT).exists()

    # the same stage again, killed with SIGKILL right after its first checkpoint appears
    job = subprocess.Popen([DVC, "repro", "-f", "-s", STAGE], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (repo / CHECKPOINT).exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert (repo / CHECKPOINT).exists(), "the stage ended before its first checkpoint could be interrupted"
    for path in reference_md5:  # DVC removed the outputs before running the stage; training was cut short
        assert not (repo / path).exists() or tree_bytes(repo / path) != reference_files[path]

    result = sh([DVC, "repro", "-f", "-s", STAGE], repo, env)
    assert f" 1/{EPOCHS}" not in result.stdout and f" {EPOCHS}/{EPOCHS}" in result.stdout  # epoch 1 not retrained
    resumed_md5, resumed_files = stage_outputs(repo)
    assert resumed_md5 == reference_md5
    assert resumed_files == reference_files
    assert not (repo / CHECKPOINT).exists()


def _set_epochs(params_path: Path, epochs: int) -> None:
    """classifier.optim.epochs = epochs, edited as text like the profile tool does (layout kept)."""
    text = splice(params_path.read_text(), [(("classifier", "optim", "epochs"), epochs)])
    assert text is not None
    params_path.write_text(text)
    assert yaml.safe_load(text)["classifier"]["optim"]["epochs"] == epochs
