"""The one training loop of the project: classifier, AuxSegNet rounds, DeepLab and the single-stage model.

:func:`train` runs SGD with per-group learning rates on a poly schedule, in one process or as DDP under
``torchrun`` (``WORLD_SIZE > 1``), checkpoints every epoch to ``checkpoint_dir/last.pt`` and resumes from it
bit-exactly, shows tqdm progress bars and logs curves with dvclive. Only rank 0 writes files.

Determinism: for a given seed the run is bit-reproducible on CPU. The shuffling order is a function of
``(seed, epoch)`` (a :class:`~torch.utils.data.DistributedSampler`, also in single-process runs), the
dataset may derive its augmentation from ``(seed, epoch, index)`` through ``set_epoch``, and the global RNGs
(dropout) are seeded per rank at the start and saved in / restored from the checkpoint. On CUDA
``torch.use_deterministic_algorithms`` only warns, so GPU runs are reproducible only as far as the kernels are.

Stage scripts that run under ``torchrun`` should wrap their work in :func:`distributed_context` and write
outputs only where :func:`is_main_process` holds.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate
from tqdm import tqdm

from auxseg.config import PUBLISHED_CODE_MOMENTUM, PUBLISHED_CODE_WEIGHT_DECAY, OptimParams, RuntimeParams  # noqa: F401
from auxseg.io import atomic_write
from auxseg.params import parse_section, to_dict
from auxseg.runtime import bf16_autocast, use_bf16

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
"""File name of the end-of-epoch checkpoint inside ``checkpoint_dir``."""

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout; part of the run fingerprint."""


LossFn = Callable[[nn.Module, dict, torch.device], Mapping[str, Any]]


# --------------------------------------------------------------------------------------------------------------
# Distributed helpers


def launched_distributed() -> bool:
    """True when started by ``torchrun`` with more than one process (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _group_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the process group (1 without one)."""
    return dist.get_world_size() if _group_ready() else 1


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if _group_ready() else 0


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK`` set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the only process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op without a process group."""
    if not _group_ready():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def init_distributed(runtime: RuntimeParams | None = None) -> bool:
    """Join the process group that torchrun describes (nccl on CUDA, gloo on CPU).

    A no-op in a plain run (``WORLD_SIZE`` unset or 1) or when a group exists. Returns True when this call
    created the group.
    """
    if not launched_distributed() or _group_ready():
        return False
    device = resolve_device(runtime or RuntimeParams())
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    return True


def cleanup_distributed() -> None:
    """Leave and destroy the process group, if there is one."""
    if _group_ready():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_context(runtime: RuntimeParams | None = None) -> Iterator[None]:
    """Run a stage inside the torchrun process group (created on entry, destroyed on exit if created here)."""
    created = init_distributed(runtime)
    try:
        yield
    finally:
        if created:
            cleanup_distributed()


def resolve_device(runtime: RuntimeParams) -> torch.device:
    """The training device: ``cuda:LOCAL_RANK`` under torchrun, the current CUDA device, or the CPU."""
    if runtime.device == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if not available:
        if runtime.device == "cuda":
            raise RuntimeError("runtime.device: 'cuda' was requested but CUDA is not available on this machine")
        return torch.device("cpu")
    index = local_rank() if launched_distributed() else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeError(
            f"runtime.device: LOCAL_RANK {index} has no GPU (only {torch.cuda.device_count()} visible); "
            "launch torchrun with --nproc_per_node at most the number of GPUs"
        )
    return torch.device("cuda", index)


# --------------------------------------------------------------------------------------------------------------
# Seeding, determinism, schedule, optimiser


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device) with ``seed`` ≥ 0."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed mixed from non-negative integers (e.g. seed, rank, epoch) by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1, dtype=np.uint32)[0])


def _seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


@contextlib.contextmanager
def _deterministic_mode(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training (warn-only on CUDA); the previous global settings come back after."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
        torch.backends.cudnn.deterministic = previous[3]


def poly_lr(base_lr: float, step: int, max_steps: int, power: float) -> float:
    """Poly schedule: ``base_lr * (1 - step / max_steps) ** power`` for 0 ≤ step ≤ max_steps."""
    if max_steps <= 0:
        raise ValueError(f"max_steps: must be positive, got {max_steps}")
    if not 0 <= step <= max_steps:
        raise ValueError(f"step: {step} is outside 0..{max_steps}")
    return float(base_lr) * (1.0 - step / max_steps) ** power


def set_poly_lr(optimizer: torch.optim.Optimizer, base_lr: float, step: int, max_steps: int, power: float) -> float:
    """Set every group's lr to ``base_lr * lr_mult * poly factor``; return the lr of a group with lr_mult 1."""
    factor = poly_lr(1.0, step, max_steps, power)
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group["lr_mult"] * factor
    return base_lr * factor


_GROUP_KEYS = {"params", "lr_mult", "name"}


def build_optimizer(param_groups: Sequence[Mapping[str, Any]], optim: OptimParams) -> torch.optim.SGD:
    """SGD over ``[{"params": iterable, "lr_mult": float, "name": str}, ...]``, lr = optim.lr × lr_mult.

    Momentum and weight decay follow ``optim.preset`` (see :class:`OptimParams`). Each group keeps its
    ``lr_mult`` and ``name`` in ``optimizer.param_groups``.
    """
    if isinstance(param_groups, Mapping) or not isinstance(param_groups, (list, tuple)):
        raise TypeError("param_groups: expected a list of {'params', 'lr_mult', 'name'} dicts")
    if not param_groups:
        raise ValueError("param_groups: empty; give at least one group of parameters")
    groups: list[dict[str, Any]] = []
    owner: dict[int, str] = {}
    for index, group in enumerate(param_groups):
        where = f"param_groups[{index}]"
        if not isinstance(group, Mapping):
            raise TypeError(f"{where}: expected a dict with keys params, lr_mult, name; got {type(group).__name__}")
        missing, unknown = _GROUP_KEYS - set(group), set(group) - _GROUP_KEYS
        if missing or unknown:
            raise ValueError(
                f"{where}: keys must be exactly params, lr_mult, name (missing {sorted(missing)}, unknown {sorted(unknown)})"
            )
        name = group["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name must be a non-empty string, got {name!r}")
        where = f"param_groups[{index}] ('{name}')"
        if name in {g["name"] for g in groups}:
            raise ValueError(f"{where}: duplicate group name")
        lr_mult = group["lr_mult"]
        if isinstance(lr_mult, bool) or not isinstance(lr_mult, (int, float)) or not lr_mult > 0:
            raise ValueError(f"{where}: lr_mult must be a positive number, got {lr_mult!r}")
        raw = group["params"]
        params = [raw] if isinstance(raw, torch.Tensor) else list(raw)
        if not params:
            raise ValueError(f"{where}: holds no parameters")
        for param in params:
            if not isinstance(param, torch.Tensor):
                raise TypeError(f"{where}: holds a {type(param).__name__}, not a tensor")
            if id(param) in owner:
                raise ValueError(f"{where}: a parameter is also in group '{owner[id(param)]}'")
            owner[id(param)] = name
        groups.append({"params": params, "lr": optim.lr * float(lr_mult), "lr_mult": float(lr_mult), "name": name})
    return torch.optim.SGD(
        groups, lr=optim.lr, momentum=optim.effective_momentum, weight_decay=optim.effective_weight_decay
    )


def _check_groups_against_model(model: nn.Module, optimizer: torch.optim.Optimizer, desc: str) -> None:
    """Fail on group tensors that are not model parameters; warn about trainable parameters in no group."""
    names = {id(param): name for name, param in model.named_parameters()}
    grouped: set[int] = set()
    for group in optimizer.param_groups:
        foreign = [param for param in group["params"] if id(param) not in names]
        if foreign:
            raise ValueError(
                f"param_groups ('{group['name']}'): {len(foreign)} tensor(s) are not parameters of the model "
                "(build the groups from the model passed to train())"
            )
        grouped.update(id(param) for param in group["params"])
    left_out = [name for name, param in model.named_parameters() if param.requires_grad and id(param) not in grouped]
    if left_out:
        shown = ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else "")
        logger.warning("%s: %d trainable parameter(s) are in no param group and stay fixed: %s", desc, len(left_out), shown)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state() -> dict[str, Any]:
    """This process's global RNG states, in types that ``torch.load(weights_only=True)`` accepts."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": random.getstate(),
        "numpy": [name, key.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng_states() -> list[dict[str, Any]]:
    """RNG states of every rank, in rank order (a collective call under DDP)."""
    state = _rng_state()
    if world_size() == 1:
        return [state]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, state)
    return gathered


def _run_fingerprint(
    caller: str, optim: OptimParams, seed: int, dataset_size: int, processes: int, optimizer: torch.optim.Optimizer
) -> str:
    """SHA-256 of what determines the training trajectory: the caller's fingerprint, optimiser params, seed,
    dataset size, process count and the param-group layout (names, multipliers, shapes)."""
    groups = [
        [group["name"], group["lr_mult"], [list(param.shape) for param in group["params"]]]
        for group in optimizer.param_groups
    ]
    document = {
        "format": CHECKPOINT_FORMAT,
        "caller": caller,
        "optim": to_dict(optim),
        "seed": seed,
        "dataset_size": dataset_size,
        "world_size": processes,
        "groups": groups,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8")).hexdigest()


def _save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """torch.save to a temporary file beside ``path``, renamed onto it when complete."""
    with atomic_write(path) as handle:
        torch.save(dict(payload), handle)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (tensors on the CPU; safe ``weights_only`` unpickling)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def _matching_checkpoint(path: Path, run_fingerprint: str, desc: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:  # an unreadable file must not stop a fresh start
        logger.warning("%s: %s is unreadable (%s); starting fresh", desc, path, error)
        return None
    if checkpoint.get("fingerprint") != run_fingerprint:
        logger.warning(
            "%s: %s belongs to a different run (fingerprint mismatch: data, seed or optimiser settings changed); "
            "starting fresh",
            desc,
            path,
        )
        return None
    return checkpoint


# --------------------------------------------------------------------------------------------------------------
# dvclive


def _open_live(live_dir: str | os.PathLike, saved: Mapping[str, Any] | None, params: Mapping[str, Any]):
    """A dvclive ``Live`` writing to ``live_dir``; with ``saved`` (from a checkpoint) it continues that log."""
    from dvclive import Live

    directory = os.path.abspath(live_dir)
    options = dict(dvcyaml=False, save_dvc_exp=False, report=None)
    if saved is None:
        live = Live(directory, **options)
    else:
        files = saved.get("files")
        if files is not None:
            # DVC deletes a stage's outputs before running it: rebuild the log exactly as it was at the checkpoint.
            _restore_files(Path(directory), files)
        live = Live(directory, resume=True, **options)
        _truncate_curves(Path(live.plots_dir) / "metrics", int(saved["step"]))
        live.step = int(saved["step"])
        live.summary = copy.deepcopy(dict(saved["summary"]))
    live.log_params(dict(params))
    return live


def _truncate_curves(metrics_dir: Path, first_dropped_step: int) -> None:
    """Drop the rows with step ≥ ``first_dropped_step`` from every dvclive ``.tsv`` (logged after the checkpoint)."""
    if not metrics_dir.is_dir():
        return
    for table in sorted(metrics_dir.rglob("*.tsv")):
        lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            continue
        header = lines[0].rstrip("\r\n").split("\t")
        if "step" not in header:
            continue
        column = header.index("step")
        kept = [line for line in lines[1:] if line.strip() and int(line.split("\t")[column]) < first_dropped_step]
        if not kept:
            table.unlink()
            continue
        with atomic_write(table) as handle:
            handle.write("".join([lines[0], *kept]).encode("utf-8"))


def _restore_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Replace the contents of ``directory`` by ``files`` (relative POSIX path → bytes, as :func:`_live_state`)."""
    if directory.exists():
        shutil.rmtree(directory)
    for relative, data in files.items():
        parts = Path(relative).parts
        if not parts or Path(relative).is_absolute() or ".." in parts:
            raise ValueError(f"{directory}: checkpoint holds a dvclive file outside the log folder: {relative!r}")
        with atomic_write(directory / relative) as handle:
            handle.write(bytes(data))


def _live_state(live) -> dict[str, Any] | None:
    """dvclive position (step, summary) and every file of its folder (relative path → bytes), for the checkpoint."""
    if live is None:
        return None
    directory = Path(live.dir)
    files = {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    return {"step": int(live.step), "summary": copy.deepcopy(live.summary), "files": files}


# --------------------------------------------------------------------------------------------------------------
# The loop


def _move_to_device(value: Any, device: torch.device, channels_last: bool) -> Any:
    """Tensors (nested in dicts, lists, tuples) to ``device``; 4-D float tensors channels_last when asked."""
    if isinstance(value, torch.Tensor):
        moved = value.to(device, non_blocking=True)
        if channels_last and moved.dim() == 4 and moved.is_floating_point():
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved
    if isinstance(value, Mapping):
        return {key: _move_to_device(item, device, channels_last) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not all(isinstance(item, str) for item in value):
        return type(value)(_move_to_device(item, device, channels_last) for item in value)
    return value


def _loss_terms(terms: Any, expected: tuple[str, ...] | None, where: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Check ``compute_loss``'s output; return the total and every term detached as fp32 scalars."""
    if not isinstance(terms, Mapping) or "loss" not in terms:
        raise ValueError(f"{where}: compute_loss must return a dict with the total under 'loss', got {terms!r}")
    total = terms["loss"]
    if not isinstance(total, torch.Tensor) or total.numel() != 1:
        raise ValueError(f"{where}: 'loss' must be a scalar tensor, got {type(total).__name__}")
    if not total.requires_grad:
        raise ValueError(f"{where}: 'loss' does not require grad (is it computed from the model's outputs?)")
    names = tuple(sorted(terms))
    if "lr" in names:
        raise ValueError(f"{where}: a loss term may not be named 'lr' (train/lr is the learning-rate curve)")
    if expected is not None and names != expected:
        raise ValueError(f"{where}: compute_loss returned terms {list(names)}, earlier iterations {list(expected)}")
    logged: dict[str, torch.Tensor] = {}
    for name in names:
        value = terms[name]
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"{where}: loss term '{name}' must be a scalar, got shape {tuple(value.shape)}")
            logged[name] = value.detach().float().reshape(())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            logged[name] = torch.tensor(float(value), device=total.device)
        else:
            raise ValueError(f"{where}: loss term '{name}' must be a scalar tensor or number, got {type(value).__name__}")
    return total.reshape(()), logged


def _mean_over_ranks(sums: Mapping[str, torch.Tensor], count: int) -> dict[str, float]:
    """Window sums of every term → means over the window and over all ranks (a collective under DDP)."""
    names = sorted(sums)
    stacked = torch.stack([sums[name] for name in names]) / count
    if world_size() > 1:
        dist.all_reduce(stacked)
        stacked /= world_size()
    return dict(zip(names, stacked.tolist()))


@dataclass
class _Loop:
    """What one epoch of :func:`train` needs; :meth:`run_epoch` trains, logs and shows progress."""

    model: nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    compute_loss: LossFn
    device: torch.device
    optim: OptimParams
    iterations: int
    max_steps: int
    use_amp: bool
    channels_last: bool
    live: Any  # dvclive.Live on rank 0 with a live_dir, else None
    desc: str
    main: bool
    on_step: Callable[..., None] | None = None  # compute_loss.on_step, when the loss depends on the progress

    def run_epoch(self, epoch: int, global_step: int) -> int:
        """Train one epoch starting at iteration ``global_step``; return the global step after it."""
        optim, live = self.optim, self.live
        self.model.train()
        expected: tuple[str, ...] | None = None
        window: dict[str, torch.Tensor] = {}
        epoch_sums: dict[str, torch.Tensor] = {}
        window_count = 0
        bar = tqdm(
            total=self.iterations, desc=f"{self.desc} {epoch + 1}/{optim.epochs}", disable=not self.main, dynamic_ncols=True
        )
        for index, batch in enumerate(self.loader):
            where = f"{self.desc}: epoch {epoch + 1}, iteration {index + 1}"
            if not isinstance(batch, Mapping):
                raise TypeError(f"{where}: batches must be dicts (check collate_fn), got {type(batch).__name__}")
            lr = set_poly_lr(self.optimizer, optim.lr, global_step, self.max_steps, optim.poly_power)
            if self.on_step is not None:
                self.on_step(epoch=epoch, step=global_step, max_steps=self.max_steps)
            batch = _move_to_device(batch, self.device, self.channels_last)
            with bf16_autocast(self.device, self.use_amp):
                terms = self.compute_loss(self.model, batch, self.device)
            total, logged = _loss_terms(terms, expected, where)
            expected = tuple(sorted(logged))
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            global_step += 1
            window_count += 1
            for name, value in logged.items():
                window[name] = window[name] + value if name in window else value
                epoch_sums[name] = epoch_sums[name] + value if name in epoch_sums else value
            if window_count == optim.log_every or index + 1 == self.iterations:
                means = _mean_over_ranks(window, window_count)
                bad = [name for name, value in means.items() if not math.isfinite(value)]
                if bad:
                    raise FloatingPointError(
                        f"{where}: non-finite loss term(s) {bad} in the last {window_count} iteration(s): {means}"
                    )
                if live is not None:
                    for name, value in means.items():
                        live.log_metric(f"train/{name}", value)
                    live.log_metric("train/lr", lr)
                    live.next_step()
                bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                window, window_count = {}, 0
            bar.update(1)
        bar.close()
        epoch_means = _mean_over_ranks(epoch_sums, self.iterations)
        if self.main:
            summary = " ".join(f"{name}={value:.4f}" for name, value in epoch_means.items())
            logger.info("%s: epoch %d/%d %s", self.desc, epoch + 1, optim.epochs, summary)
        if live is not None:
            live.summary["epoch"] = epoch + 1
            live.summary["epoch_mean"] = epoch_means
            live.make_summary()
        return global_step


def train(
    model: nn.Module,
    dataset: Dataset,
    compute_loss: LossFn,
    *,
    param_groups: Sequence[Mapping[str, Any]],
    optim: OptimParams,
    runtime: RuntimeParams,
    seed: int,
    checkpoint_dir: str | os.PathLike,
    fingerprint: str,
    live_dir: str | os.PathLike | None = None,
    desc: str = "train",
    collate_fn: Callable[[list], Any] | None = None,
    keep_checkpoint: bool = False,
) -> nn.Module:
    """Train ``model`` for ``optim.epochs`` epochs and return it, unwrapped, on the training device.

    ``compute_loss(model, batch, device)`` gets the (possibly DDP-wrapped) model and a batch dict whose
    tensors are already on ``device`` (string ids stay lists); it returns ``{"loss": total, **terms}``.
    A loss that depends on the training progress (warm-ups) may have a method ``on_step(*, epoch, step,
    max_steps)``: it is called before every iteration with the 0-based epoch, the global iteration about to
    run and the total number of iterations (also after a resume, so warm-ups stay exact).
    ``param_groups``: ``[{"params": iterable, "lr_mult": float, "name": str}, ...]``; the lr of a group at
    iteration t is ``optim.lr * lr_mult * (1 - t / max_it) ** optim.poly_power``, max_it = epochs × iterations
    per epoch (``len(dataset) // (world_size * batch_size)``, last partial batch dropped).

    At the end of every epoch rank 0 writes ``checkpoint_dir/last.pt`` atomically (model, optimiser, epoch,
    global step, RNG states of every rank, dvclive position and the bytes of every file of ``live_dir``, run
    fingerprint). On resume ``live_dir`` is rebuilt from those bytes (DVC deletes a stage's outputs before it runs
    it), so a resumed run's curves are byte-identical to an uninterrupted run's. A later call finding a
    ``last.pt`` with the same run fingerprint (``fingerprint`` from the caller, plus optimiser params, seed,
    dataset size, process count and group layout) resumes from it and ends with the weights of an
    uninterrupted run; another fingerprint starts fresh with a warning. With ``keep_checkpoint=False`` the
    checkpoint is deleted at the end (and ``checkpoint_dir`` too if that leaves it empty).

    With ``live_dir`` rank 0 logs with dvclive: every ``optim.log_every`` iterations (and at the end of each
    epoch) the window means of each term as ``train/<name>`` plus ``train/lr`` (the lr of lr_mult 1), then
    ``next_step()``; per epoch ``summary["epoch"]`` and ``summary["epoch_mean"][<name>]``. No timestamps.
    """
    optim = parse_section(type(optim), to_dict(optim), "optim")
    runtime = parse_section(type(runtime), to_dict(runtime), "runtime")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError("fingerprint: expected a non-empty string describing the data and settings of this run")
    dataset_size = len(dataset)  # type: ignore[arg-type]
    if dataset_size == 0:
        raise ValueError(f"{desc}: the training dataset is empty")

    if init_distributed(runtime):
        atexit.register(cleanup_distributed)
    device = resolve_device(runtime)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(device)
    processes, this_rank = world_size(), rank()
    main = this_rank == 0
    use_amp = use_bf16(runtime, device, training=True)  # CUDA: amp_bf16; CPU: cpu_bf16_train (auxseg.runtime)
    channels_last = runtime.channels_last and device.type == "cuda"
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME

    with _deterministic_mode(device):
        seed_everything(derive_seed(seed, this_rank))
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(param_groups, optim)
        _check_groups_against_model(model, optimizer, desc)

        sampler = DistributedSampler(
            dataset, num_replicas=processes, rank=this_rank, shuffle=True, seed=seed, drop_last=False
        )
        batch_size = optim.batch_size
        if len(sampler) < batch_size:
            logger.warning(
                "%s: %d training sample(s) per process is fewer than batch_size %d; using batches of %d",
                desc,
                len(sampler),
                batch_size,
                len(sampler),
            )
            batch_size = len(sampler)
        iterations = len(sampler) // batch_size
        max_steps = optim.epochs * iterations
        generator = torch.Generator()
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=runtime.num_workers,
            collate_fn=collate_fn or default_collate,
            generator=generator,
            worker_init_fn=_seed_worker,
            pin_memory=device.type == "cuda",
            persistent_workers=False,  # workers must see the dataset's new epoch after set_epoch()
        )

        run_fingerprint = _run_fingerprint(fingerprint, optim, seed, dataset_size, processes, optimizer)
        start_epoch, global_step, live_saved = 0, 0, None
        checkpoint = _matching_checkpoint(checkpoint_path, run_fingerprint, desc)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            start_epoch, global_step = int(checkpoint["epoch"]), int(checkpoint["global_step"])
            _set_rng_state(checkpoint["rng"][this_rank])
            live_saved = checkpoint.get("live")
            logger.info("%s: resuming from epoch %d (%s)", desc, start_epoch, checkpoint_path)
        barrier()  # every rank has read last.pt before rank 0 may replace it

        wrapped: nn.Module = model
        if processes > 1:
            wrapped = DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=runtime.find_unused_parameters,
            )

        live = None
        if main and live_dir is not None and start_epoch < optim.epochs:
            if checkpoint is not None and live_saved is None:
                logger.warning("%s: the checkpoint has no dvclive position; %s restarts its curves", desc, live_dir)
            live_params = {"desc": desc, "seed": seed, "world_size": processes, "optim": to_dict(optim)}
            live = _open_live(live_dir, live_saved, live_params)
        loop = _Loop(
            model=wrapped,
            optimizer=optimizer,
            loader=loader,
            compute_loss=compute_loss,
            device=device,
            optim=optim,
            iterations=iterations,
            max_steps=max_steps,
            use_amp=use_amp,
            channels_last=channels_last,
            live=live,
            desc=desc,
            main=main,
            on_step=getattr(compute_loss, "on_step", None),
        )
        try:
            for epoch in range(start_epoch, optim.epochs):
                sampler.set_epoch(epoch)
                set_epoch = getattr(dataset, "set_epoch", None)
                if callable(set_epoch):
                    set_epoch(epoch)
                generator.manual_seed(derive_seed(seed, this_rank, epoch, 1))
                global_step = loop.run_epoch(epoch, global_step)
                if keep_checkpoint or epoch + 1 < optim.epochs:
                    rng_states = _gather_rng_states()
                    if main:
                        _save_checkpoint(
                            checkpoint_path,
                            {
                                "format": CHECKPOINT_FORMAT,
                                "fingerprint": run_fingerprint,
                                "caller_fingerprint": fingerprint,
                                "epoch": epoch + 1,
                                "global_step": global_step,
                                "world_size": processes,
                                "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(),
                                "rng": rng_states,
                                "live": _live_state(live),
                            },
                        )
                    barrier()
        finally:
            if live is not None:
                live.end()

    barrier()
    if main and not keep_checkpoint:
        checkpoint_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # keep a directory that holds anything else
            checkpoint_path.parent.rmdir()
    barrier()
    return model


__all__ = [
    "CHECKPOINT_NAME",
    "OptimParams",
    "RuntimeParams",
    "barrier",
    "build_optimizer",
    "cleanup_distributed",
    "derive_seed",
    "distributed_context",
    "init_distributed",
    "is_main_process",
    "launched_distributed",
    "load_checkpoint",
    "local_rank",
    "poly_lr",
    "rank",
    "resolve_device",
    "seed_everything",
    "set_poly_lr",
    "train",
    "world_size",
]
