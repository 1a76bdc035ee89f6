"""The fully supervised ceiling of the final stage: the params' DeepLab trained on the ground-truth masks of the
train split instead of pseudo labels, scored on val as step ``evaluate`` scores the weakly supervised one.

Usage (in a repository whose ``dataset`` has masks, e.g. after ``dvc repro prepare_data``; with
``deeplab.init_from_classifier``, as in the default params, after ``dvc repro train_classifier``)::

    auxseg supervised-ceiling [--params params.yaml] [--epochs N] [--train-too] [--threads 2] [--json OUT]

WSSS papers print this row beside their results (the "fully supervised" DeepLab trained on the pixel masks of the
same images). On a small dataset it answers a question the pseudo labels cannot: can the final DeepLab's recipe
(``deeplab.network``, ``augment``, ``optim``; ``--epochs`` overrides ``optim.epochs``) with this many photos per
class reach a target at all? A DeepLab trained on perfect labels that scores below the CAM seeds means that no
pseudo label can lift the weakly supervised one above them. ``--train-too`` also scores the train images, which
shows whether the recipe fits even the photos it was trained on.

Exactly the stage's training and scoring: the model of ``deeplab.network`` (from its ImageNet weights, or the
classifier's backbone with ``init_from_classifier``), ``TrainingSet`` with ``use_gt_masks``, the engine's ``train``
with the ``deeplab.optim`` schedule and ``seed``, the plain cross-entropy (``deeplab.aux_losses`` exist for noisy
labels and are not used), then step ``evaluate``'s ``evaluate_network`` at ``evaluate.scales`` / ``flip`` /
``crf_iterations``. Train images without a mask are left out. Every image and mask of both splits is checked and ``--json`` is tried before the training starts. Nothing
is written except ``--json``: the checkpoint lives in a temporary folder, removed also on Ctrl-C and SIGTERM.
Bad params, a bad or missing file, an unwritable ``--json``: one ``error:`` line naming it, exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from auxseg.tools.args import int_at_least

SECTIONS = ["seed", "dataset", "classifier", "deeplab", "evaluate", "runtime"]


def train_images_per_class(split) -> dict[str, int]:
    """Foreground class name → number of images of ``split`` whose image-level labels (multi-hot (K,)) contain it."""
    import numpy as np

    counts = np.zeros(split.num_classes - 1, dtype=np.int64)
    for image_id in split.ids:
        counts += np.asarray(split.image_labels[image_id]) > 0.5
    return {name: int(count) for name, count in zip(split.class_names[1:], counts)}


def check_writable(path: str | Path) -> None:
    """OSError naming ``path`` unless a file can be written there (checked before the training, not after)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: --json names a directory, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
        pass


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[dict]:
    """SIGTERM raises SystemExit(143) inside the block, so the temporary checkpoint folder is removed as on Ctrl-C;
    yields a dict whose ``"received"`` turns True when it arrived (torch.save turns an exception raised while it
    writes into a RuntimeError, so the caller checks this rather than the exception). Only in the main thread;
    elsewhere the handler cannot be set and the block runs as is."""
    state = {"received": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def stop(signum, frame):
        state["received"] = True
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield state
    except SystemExit:
        if not state["received"]:
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from auxseg.data.datasets import load_split
    from auxseg.data.training import TrainingSet
    from auxseg.engine import resolve_device, train
    from auxseg.io import DataError
    from auxseg.params import load_stage_params
    from auxseg.runtime import inference_autocast, inference_model
    from auxseg.steps.common import fingerprint, scored_split
    from auxseg.steps.evaluate import evaluate_network
    from auxseg.steps.train_deeplab import build_deeplab, load_classifier_backbone, make_loss

    torch.set_num_threads(args.threads)
    params = load_stage_params(SECTIONS, args.params, stage=None)
    dataset, deeplab, evaluate, runtime = params["dataset"], params["deeplab"], params["evaluate"], params["runtime"]
    if args.epochs:
        deeplab = dataclasses.replace(deeplab, optim=dataclasses.replace(deeplab.optim, epochs=args.epochs))
    seed = deeplab.training_seed(params["seed"])
    if args.json is not None:
        check_writable(args.json)
    splits = {}
    for role in ("train", "val"):  # every image and mask decoded and checked now, not after an hour of training
        splits[role], _ = scored_split(load_split(dataset, getattr(dataset, f"{role}_split"), validate=True))
        if splits[role] is None:
            raise DataError(f"dataset.{role}_split: no image has a ground-truth mask; the ceiling needs masks")
    train_split, val_split = splits["train"], splits["val"]

    torch.manual_seed(seed)
    model = build_deeplab(deeplab, train_split.num_classes)
    normalization = model.backbone.normalization
    if deeplab.init_from_classifier:
        normalization = load_classifier_backbone(model, params["classifier"].model_out, deeplab)
    train_set = TrainingSet(train_split, deeplab.augment, seed=seed, use_gt_masks=True, normalization=normalization)
    plain_ce = make_loss(dataclasses.replace(deeplab.aux_losses, aa_weight=0.0, lr_weight=0.0))
    with tempfile.TemporaryDirectory(prefix="auxseg-ceiling-") as checkpoint_dir:
        model = train(
            model, train_set, plain_ce, param_groups=model.param_groups(deeplab.optim.head_lr_mult),
            optim=deeplab.optim, runtime=runtime, seed=seed, checkpoint_dir=checkpoint_dir,
            fingerprint=fingerprint("supervised-ceiling", seed, dataset, deeplab, len(train_set)), desc="ceiling",
        )
    device = resolve_device(runtime)
    model = inference_model(model.eval(), runtime, device)
    scores: dict[str, Any] = {}
    for role, split in (("val", val_split), ("train", train_split)):
        if role == "train" and not args.train_too:
            continue
        with inference_autocast(runtime, device):
            plain, with_crf = evaluate_network(f"ceiling {role}", model, normalization, split, evaluate, runtime, device)
        plain_result, crf_result = plain.compute(), with_crf.compute()
        scores[role] = {
            "images": len(split.ids), "miou": plain_result["miou"], "miou_crf": crf_result["miou"],
            "precision": plain_result["precision"], "recall": plain_result["recall"],
            "per_class_iou": plain_result["per_class_iou"],
        }
    return {
        "backbone": deeplab.network.backbone, "epochs": deeplab.optim.epochs,
        "steps_per_epoch": len(train_set) // min(deeplab.optim.batch_size, len(train_set)),  # the engine's batches
        "train_images": len(train_set),
        "train_images_per_class": train_images_per_class(train_split), **scores,
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"DeepLab ({result['backbone']}, {result['epochs']} × {result['steps_per_epoch']} steps) trained on the "
        f"ground-truth masks of {result['train_images']} train images",
        "",
        f"{'split':<8}{'images':>7}{'mIoU':>8}{'CRF':>8}{'precision':>11}{'recall':>8}",
    ]
    roles = [role for role in ("val", "train") if role in result]
    for role in roles:
        figures = result[role]
        lines.append(f"{role:<8}{figures['images']:>7}{figures['miou']:>8.4f}{figures['miou_crf']:>8.4f}"
                     f"{figures['precision']:>11.4f}{figures['recall']:>8.4f}")
    lines += ["", f"{'class':<14}{'train images':>13}" + "".join(f"{role + ' IoU':>11}" for role in roles)]
    counts = result["train_images_per_class"]
    for name in ["background", *counts]:
        row = f"{name:<14}{counts.get(name, '-'):>13}"
        for role in roles:
            value = result[role]["per_class_iou"].get(name)
            row += f"{'-' if value is None or value != value else f'{value:.3f}':>11}"
        lines.append(row)
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m auxseg.tools.supervised_ceiling",
        description="Train the params' DeepLab on the ground-truth train masks and score it on val: the fully "
        "supervised ceiling of the final stage.",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--epochs", type=int_at_least(1, "at least 1"), default=None,
                        help="override deeplab.optim.epochs")
    parser.add_argument("--train-too", action="store_true", help="also score the train images")
    parser.add_argument("--threads", type=int_at_least(1, "at least 1"), default=2,
                        help="torch intra-op threads (default 2)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the figures as JSON to OUT")
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (argparse exits with 2 on bad arguments)."""
    from auxseg.tools.bench_label_update import run_and_report

    args = build_parser(prog).parse_args(argv)
    with sigterm_as_exit() as sigterm:
        status = run_and_report(args, run_ceiling, format_report)
    if sigterm["received"]:
        print("stopped by SIGTERM; the temporary checkpoint was removed", file=sys.stderr)
        return 128 + signal.SIGTERM
    return status


if __name__ == "__main__":
    sys.exit(main())
