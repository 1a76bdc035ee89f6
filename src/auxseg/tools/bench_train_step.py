"""Where the time of one AuxSegNet training step goes, per output stride and crop size, on the CPU.

Usage::

    auxseg bench train-step [--backbone efficientnet_lite0] [--output-strides 8 16]
        [--crops 256 320] [--batch-size 8] [--classes 20] [--branch-channels 64] [--repeats 3] [--threads 2]

For every (output stride, crop) setting an AuxSegNet with random weights is built once
(``AuxSegNet.from_backbone_name``, no weights file: random weights cost the same), and the settings are then timed
in turn, ``--repeats`` rounds over all of them (so the machine's load drifts alike for every setting; the minimum
per setting is reported). Per setting and round, two things are timed with ``time.perf_counter``:

===========  ====================================================================================================
backbone     the backbone alone: forward of a (B, 3, crop, crop) batch, backward of the mean of its output,
             SGD step (what a training step costs without AuxSegNet's branches)
step         the stage's whole training step: model forward, the five AuxSegNet loss terms
             (:func:`auxseg.losses.auxsegnet_losses` on random labels), backward, SGD step
===========  ====================================================================================================

``branches = step - backbone`` is the cost of the classification head, the two task branches, their N×N
affinities (N = (crop / output stride)², memory and time grow with N², i.e. with the fourth power of the crop side),
the cross-task affinity and the refinement. Printed per setting: N, the size of one N×N affinity of the batch,
backbone / step / branches seconds (minimum over rounds), the branches' share, and the step time relative to the
first setting; then the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from typing import Sequence

import torch

from auxseg.tools.args import int_at_least


_positive = int_at_least(1, ">= 1")


def parse_args(argv: Sequence[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog or "python -m auxseg.tools.bench_train_step",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0", help="registry or timm backbone name")
    parser.add_argument("--output-strides", type=int, nargs="+", default=[8, 16], choices=(8, 16))
    parser.add_argument("--crops", type=_positive, nargs="+", default=[256], help="square crop sides (pixels)")
    parser.add_argument("--batch-size", type=_positive, default=8)
    parser.add_argument("--classes", type=_positive, default=20, help="foreground classes K")
    parser.add_argument("--branch-channels", type=_positive, default=64)
    parser.add_argument("--repeats", type=_positive, default=3)
    parser.add_argument("--threads", type=_positive, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _batch(batch_size: int, crop: int, classes: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random normalised images, multi-hot labels, saliency in [0, 1] and label maps 0..K (crop × crop)."""
    labels = (torch.rand(batch_size, classes, generator=generator) < 0.15).float()
    return {
        "image": torch.randn(batch_size, 3, crop, crop, generator=generator),
        "image_labels": labels,
        "saliency": torch.rand(batch_size, crop, crop, generator=generator),
        "seg": torch.randint(0, classes + 1, (batch_size, crop, crop), generator=generator),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    torch.set_num_threads(args.threads)
    from auxseg.losses import auxsegnet_losses
    from auxseg.models.auxsegnet import AuxSegNet

    settings = [(os_, crop) for os_ in args.output_strides for crop in args.crops]
    models, batches, optimizers = {}, {}, {}
    generator = torch.Generator().manual_seed(args.seed)
    for setting in settings:
        torch.manual_seed(args.seed)
        model = AuxSegNet.from_backbone_name(
            args.backbone, args.classes, output_stride=setting[0], branch_channels=args.branch_channels
        ).train()
        models[setting] = model
        optimizers[setting] = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        batches[setting] = _batch(args.batch_size, setting[1], args.classes, generator)

    def backbone_step(setting):
        model, optimizer = models[setting], optimizers[setting]
        optimizer.zero_grad(set_to_none=True)
        model.backbone(batches[setting]["image"]).mean().backward()
        optimizer.step()

    def full_step(setting):
        model, optimizer, batch = models[setting], optimizers[setting], batches[setting]
        optimizer.zero_grad(set_to_none=True)
        auxsegnet_losses(model(batch["image"]), batch)["loss"].backward()
        optimizer.step()

    for setting in settings:  # warm-up: first calls allocate and pick kernels
        full_step(setting)
    times = {setting: {"backbone": [], "step": []} for setting in settings}
    for _ in range(args.repeats):
        for setting in settings:
            times[setting]["backbone"].append(_timed(lambda: backbone_step(setting)))
            times[setting]["step"].append(_timed(lambda: full_step(setting)))

    print(f"AuxSegNet training step, backbone {args.backbone}, batch {args.batch_size}, K {args.classes}, "
          f"branch channels {args.branch_channels}, {args.threads} threads, torch {torch.__version__}, "
          f"min of {args.repeats}")
    header = f"{'OS':>3} {'crop':>5} {'N':>6} {'A (MB)':>8} {'backbone s':>11} {'step s':>8} {'branches s':>11} " \
             f"{'branches %':>11} {'step / first':>13}"
    print(header)
    print("-" * len(header))
    first = None
    for os_, crop in settings:
        side = -(-crop // os_)
        n = side * side
        backbone = min(times[(os_, crop)]["backbone"])
        step = min(times[(os_, crop)]["step"])
        first = first or step
        branches = max(step - backbone, 0.0)
        affinity_mb = args.batch_size * n * n * 4 / 2**20
        print(f"{os_:>3} {crop:>5} {n:>6} {affinity_mb:>8.1f} {backbone:>11.2f} {step:>8.2f} {branches:>11.2f} "
              f"{100 * branches / step:>10.0f}% {step / first:>12.2f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
