"""Tests of auxseg.engine: schedule, optimiser groups, determinism, resume, dvclive files and DDP on CPU."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from auxseg import engine
from auxseg.engine import OptimParams, RuntimeParams, build_optimizer, poly_lr, train

CPU = RuntimeParams(device="cpu")


@pytest.fixture(autouse=True)
def _outside_any_repository(tmp_path, monkeypatch):
    """dvclive looks for a DVC/git repository from the working directory (and would `dvc init` a bare git one)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)


class TinySet(torch.utils.data.Dataset):
    """n samples: "id" str, "image" (3, 8, 8), "target" int in 0..2."""

    def __init__(self, size: int = 16) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(size, 3, 8, 8, generator=generator)
        self.targets = torch.randint(0, 3, (size,), generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"id": f"im{index}", "image": self.images[index], "target": self.targets[index]}


class TinyNet(nn.Module):
    """conv → ReLU → GAP → dropout → linear; dropout makes the result depend on the RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.conv(images).relu().mean((2, 3))))


def tiny_loss(model: nn.Module, batch: dict, device: torch.device) -> dict:
    logits = model(batch["image"])
    ce = nn.functional.cross_entropy(logits, batch["target"])
    reg = 0.01 * logits.pow(2).mean()
    return {"loss": ce + reg, "ce": ce, "reg": reg}


def fresh_model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def groups(model: TinyNet) -> list[dict]:
    return [
        {"params": model.conv.parameters(), "lr_mult": 1.0, "name": "backbone"},
        {"params": model.head.parameters(), "lr_mult": 10.0, "name": "head"},
    ]


OPTIM = OptimParams(epochs=2, batch_size=4, lr=0.05, log_every=2)


def run(directory: Path, *, seed: int = 1, optim: OptimParams = OPTIM, loss=tiny_loss, fingerprint: str = "tiny",
        dataset=None, keep_checkpoint: bool = False, live: bool = True, model: TinyNet | None = None) -> TinyNet:
    model = model or fresh_model()
    return train(
        model,
        dataset if dataset is not None else TinySet(),
        loss,
        param_groups=groups(model),
        optim=optim,
        runtime=CPU,
        seed=seed,
        checkpoint_dir=directory / "ckpt",
        fingerprint=fingerprint,
        live_dir=directory / "live" if live else None,
        keep_checkpoint=keep_checkpoint,
    )


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------


def test_poly_lr_values():
    assert poly_lr(0.01, 0, 100, 0.9) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 99, 100, 0.9) == pytest.approx(0.01 * 0.01**0.9)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0
    assert poly_lr(0.02, 25, 100, 1.0) == pytest.approx(0.015)
    with pytest.raises(ValueError, match="step"):
        poly_lr(0.01, 101, 100, 0.9)
    with pytest.raises(ValueError, match="max_steps"):
        poly_lr(0.01, 0, 0, 0.9)


class TwoScalars(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))


def test_group_lrs_follow_multipliers_and_the_poly_schedule_every_iteration(tmp_path):
    # loss = a + b: gradient 1 for both, so with plain SGD each parameter moves by exactly its lr per step.
    model = TwoScalars()
    optim = OptimParams(epochs=3, batch_size=2, lr=0.1, momentum=0.0, weight_decay=0.0, poly_power=0.9)

    def loss(m, batch, device):
        total = m.a + m.b + 0.0 * batch["image"].sum()
        return {"loss": total}

    train(model, TinySet(8), loss, param_groups=[
        {"params": [model.a], "lr_mult": 1.0, "name": "base"},
        {"params": [model.b], "lr_mult": 10.0, "name": "head"},
    ], optim=optim, runtime=CPU, seed=0, checkpoint_dir=tmp_path / "c", fingerprint="s")
    steps = 3 * (8 // 2)
    expected = sum(0.1 * (1 - t / steps) ** 0.9 for t in range(steps))
    assert model.a.item() == pytest.approx(-expected, rel=1e-5)
    assert model.b.item() == pytest.approx(-10 * expected, rel=1e-5)
    # a constant lr would have moved a by 1.2: the schedule decays
    assert -model.a.item() < 0.1 * steps * 0.75


def test_build_optimizer_presets_and_group_metadata():
    model = fresh_model()
    standard = build_optimizer(groups(model), OptimParams(lr=0.01, momentum=0.9, weight_decay=5e-4))
    assert [g["name"] for g in standard.param_groups] == ["backbone", "head"]
    assert [g["lr"] for g in standard.param_groups] == pytest.approx([0.01, 0.1])
    assert [g["lr_mult"] for g in standard.param_groups] == [1.0, 10.0]
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 5e-4 for g in standard.param_groups)

    published = build_optimizer(groups(model), OptimParams(preset="published_code", momentum=0.9, weight_decay=5e-4))
    assert all(g["momentum"] == 1e-5 and g["weight_decay"] == 0.0 for g in published.param_groups)


def test_build_optimizer_rejects_bad_groups():
    model = fresh_model()
    with pytest.raises(ValueError, match="also in group 'backbone'"):
        build_optimizer([{"params": model.conv.parameters(), "lr_mult": 1.0, "name": "backbone"},
                         {"params": model.parameters(), "lr_mult": 1.0, "name": "all"}], OPTIM)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: keys"):
        build_optimizer([{"params": model.parameters(), "lr": 1.0}], OPTIM)
    with pytest.raises(ValueError, match="lr_mult"):
        build_optimizer([{"params": model.parameters(), "lr_mult": 0.0, "name": "x"}], OPTIM)
    with pytest.raises(ValueError, match="empty"):
        build_optimizer([], OPTIM)


def test_train_rejects_tensors_that_are_not_model_parameters(tmp_path):
    model, stranger = fresh_model(), nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="not parameters of the model"):
        train(model, TinySet(), tiny_loss, param_groups=[{"params": [stranger], "lr_mult": 1.0, "name": "x"}],
              optim=OPTIM, runtime=CPU, seed=0, checkpoint_dir=tmp_path / "c", fingerprint="f")


def test_same_seed_same_weights_and_identical_dvclive_files(tmp_path):
    first = run(tmp_path / "a")
    second = run(tmp_path / "b")
    other_seed = run(tmp_path / "c", seed=2)
    assert same_weights(first, second)
    assert not same_weights(first, other_seed)
    assert not same_weights(first, fresh_model())

    live_a, live_b = tree_bytes(tmp_path / "a" / "live"), tree_bytes(tmp_path / "b" / "live")
    assert live_a == live_b
    for name in ("metrics.json", "params.yaml", "plots/metrics/train/loss.tsv", "plots/metrics/train/ce.tsv",
                 "plots/metrics/train/reg.tsv", "plots/metrics/train/lr.tsv"):
        assert name in live_a
    # 16 samples / batch 4 = 4 iterations per epoch, logged every 2 → 2 points per epoch, 2 epochs
    rows = live_a["plots/metrics/train/loss.tsv"].decode().splitlines()
    assert rows[0] == "step\tloss" and [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    metrics = json.loads(live_a["metrics.json"])
    assert metrics["epoch"] == 2 and metrics["step"] == 4 and set(metrics["epoch_mean"]) == {"loss", "ce", "reg"}
    lr_rows = [float(r.split("\t")[1]) for r in live_a["plots/metrics/train/lr.tsv"].decode().splitlines()[1:]]
    assert lr_rows == pytest.approx([poly_lr(0.05, step, 8, 0.9) for step in (1, 3, 5, 7)])
    # keep_checkpoint=False: the checkpoint directory is gone
    assert not (tmp_path / "a" / "ckpt").exists()


class CrashAt:
    """compute_loss that raises on its ``call``-th call (a job killed mid-epoch)."""

    def __init__(self, call: int) -> None:
        self.call, self.calls = call, 0

    def __call__(self, model, batch, device):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt("simulated kill")
        return tiny_loss(model, batch, device)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, caplog):
    reference = run(tmp_path / "ref")
    # epoch 1 = calls 1-4 (checkpoint written); killed at call 7, after epoch 2 logged one point to dvclive
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "job", loss=CrashAt(7))
    checkpoint = engine.load_checkpoint(tmp_path / "job" / "ckpt" / "last.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 4
    assert {"model", "optimizer", "rng", "fingerprint", "live"} <= set(checkpoint)
    assert len((tmp_path / "job" / "live" / "plots/metrics/train/loss.tsv").read_text().splitlines()) == 4

    with caplog.at_level(logging.INFO, logger="auxseg.engine"):
        resumed = run(tmp_path / "job")
    assert "resuming from epoch 1" in caplog.text
    assert same_weights(resumed, reference)
    assert tree_bytes(tmp_path / "job" / "live") == tree_bytes(tmp_path / "ref" / "live")
    assert not (tmp_path / "job" / "ckpt").exists()


def test_resume_rebuilds_a_deleted_dvclive_folder_byte_identically(tmp_path):
    """DVC deletes a stage's outputs (the dvclive folder too) before re-running it: the checkpoint carries the log."""
    run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "job", loss=CrashAt(7))
    checkpoint = engine.load_checkpoint(tmp_path / "job" / "ckpt" / "last.pt")
    assert "plots/metrics/train/loss.tsv" in checkpoint["live"]["files"]
    shutil.rmtree(tmp_path / "job" / "live")
    run(tmp_path / "job")
    assert tree_bytes(tmp_path / "job" / "live") == tree_bytes(tmp_path / "ref" / "live")


def test_finished_checkpoint_is_reused_without_training(tmp_path):
    reference = run(tmp_path, keep_checkpoint=True)
    assert engine.load_checkpoint(tmp_path / "ckpt" / "last.pt")["epoch"] == 2

    def must_not_run(model, batch, device):
        raise AssertionError("training ran although the checkpoint is complete")

    again = run(tmp_path, loss=must_not_run, keep_checkpoint=True)
    assert same_weights(again, reference)


def test_fingerprint_mismatch_starts_fresh(tmp_path, caplog):
    run(tmp_path / "old", fingerprint="data-v1", keep_checkpoint=True, seed=5)
    fresh = run(tmp_path / "clean", fingerprint="data-v2")
    with caplog.at_level(logging.WARNING, logger="auxseg.engine"):
        restarted = run(tmp_path / "old", fingerprint="data-v2")
    assert "fingerprint mismatch" in caplog.text
    assert same_weights(restarted, fresh)
    # a changed optimiser setting changes the run fingerprint even with the same caller fingerprint
    run(tmp_path / "opt", keep_checkpoint=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="auxseg.engine"):
        run(tmp_path / "opt", optim=OptimParams(epochs=2, batch_size=4, lr=0.01, log_every=2), live=False)
    assert "fingerprint mismatch" in caplog.text


def test_small_dataset_uses_its_size_as_batch(tmp_path, caplog):
    sizes = []

    def loss(model, batch, device):
        sizes.append(len(batch["id"]))
        assert batch["id"][0].startswith("im")  # string ids survive default collation
        return tiny_loss(model, batch, device)

    with caplog.at_level(logging.WARNING, logger="auxseg.engine"):
        run(tmp_path, dataset=TinySet(3), optim=OptimParams(epochs=2, batch_size=8), loss=loss, live=False)
    assert sizes == [3, 3]
    assert "fewer than batch_size 8" in caplog.text
    with pytest.raises(ValueError, match="empty"):
        run(tmp_path, dataset=TinySet(0), live=False)


def test_bad_losses_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="'loss'"):
        run(tmp_path, loss=lambda m, b, d: {"ce": tiny_loss(m, b, d)["ce"]}, live=False)

    def nan_loss(model, batch, device):
        terms = tiny_loss(model, batch, device)
        return {**terms, "loss": terms["loss"] * float("nan")}

    with pytest.raises(FloatingPointError, match="epoch 1, iteration 2"):
        run(tmp_path, loss=nan_loss, live=False)
    with pytest.raises(ValueError, match="may not be named 'lr'"):
        run(tmp_path, loss=lambda m, b, d: {**tiny_loss(m, b, d), "lr": 0.0}, live=False)


def test_a_loss_with_on_step_sees_every_iterations_progress(tmp_path):
    class ProgressLoss:
        def __init__(self):
            self.seen = []

        def on_step(self, *, epoch, step, max_steps):
            self.seen.append((epoch, step, max_steps))

        def __call__(self, model, batch, device):
            return tiny_loss(model, batch, device)

    loss = ProgressLoss()
    run(tmp_path, loss=loss, live=False)
    iterations = len(loss.seen) // 2
    assert loss.seen == [(i // iterations, i, 2 * iterations) for i in range(2 * iterations)]


def test_global_determinism_settings_are_restored(tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []

    def loss(model, batch, device):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return tiny_loss(model, batch, device)

    run(tmp_path, loss=loss, live=False)
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()


def test_resolve_device_and_single_process_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert engine.resolve_device(RuntimeParams(device="cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert engine.resolve_device(RuntimeParams(device="auto")) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            engine.resolve_device(RuntimeParams(device="cuda"))
    assert engine.world_size() == 1 and engine.rank() == 0 and engine.is_main_process()
    with engine.distributed_context(CPU):
        engine.barrier()
        assert engine.world_size() == 1


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    from auxseg import engine

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x, self.y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        def __len__(self):
            return 16
        def __getitem__(self, i):
            return {"id": str(i), "image": self.x[i], "target": self.y[i]}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.drop, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Dropout(0.5), nn.Linear(4, 3)
        def forward(self, x):
            return self.head(self.drop(self.conv(x).relu().mean((2, 3))))

    def loss(model, batch, device):
        out = model(batch["image"])
        return {"loss": nn.functional.cross_entropy(out, batch["target"])}

    out = sys.argv[1]
    runtime = engine.RuntimeParams(device="cpu")
    with engine.distributed_context(runtime):
        torch.manual_seed(engine.rank())  # different initial weights per rank: DDP must broadcast rank 0's
        model = Net()
        trained = engine.train(
            model, Data(), loss,
            param_groups=[{"params": model.conv.parameters(), "lr_mult": 1.0, "name": "backbone"},
                          {"params": model.head.parameters(), "lr_mult": 10.0, "name": "head"}],
            optim=engine.OptimParams(epochs=2, batch_size=2, lr=0.05, log_every=2), runtime=runtime, seed=3,
            checkpoint_dir=os.path.join(out, "ckpt"), fingerprint="ddp", live_dir=os.path.join(out, "live"),
            keep_checkpoint=True)
        torch.save(trained.state_dict(), os.path.join(out, f"rank{engine.rank()}.pt"))
        with open(os.path.join(out, f"rank{engine.rank()}.json"), "w") as f:
            json.dump({"world_size": engine.world_size(), "main": engine.is_main_process(),
                       "type": type(trained).__name__}, f)
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_torchrun_end_with_equal_weights(tmp_path):
    script = tmp_path / "ddp_job.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DVC_ROOT", None)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in infos] == [2, 2]
    assert [i["main"] for i in infos] == [True, False]
    assert all(i["type"] == "Net" for i in infos)  # unwrapped, not DistributedDataParallel
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    checkpoint = engine.load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2 and checkpoint["epoch"] == 2
    # 16 samples / 2 ranks / batch 2 = 4 iterations per epoch, logged every 2: 4 rows, written by rank 0 only
    rows = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["step", "0", "1", "2", "3"]
    assert all(math.isfinite(float(r.split("\t")[1])) for r in rows[1:])
