"""A round's label update in fp32 and under bf16 autocast on the same images: how much the pseudo labels change.

Usage (in a repository where the round's model, the saliency prior and the prepared data exist, e.g. after
``dvc repro update_labels@r1``)::

    auxseg bench bf16-labels --round r1 [--params params.yaml] [--images N] [--threads 2]
        [--json OUT]

For every train image (the first ``--images`` of the split, default all) it runs the functions of step
``update_labels`` (:func:`auxseg.steps.update_labels.label_task` and :func:`labels_of_task`: forward, CAM
propagation, saliency CRF, fusion) on the CPU twice, fp32 and then under bf16 autocast
(:func:`auxseg.runtime.bf16_autocast`, what ``runtime.cpu_bf16`` turns on), and reports:

- the share of label-map pixels that differ between the two (over all pixels, and over the pixels labelled in
  either), and of images with any difference;
- mIoU, precision and recall of each against the ground truth, as ``eval_round`` scores them (255 = not predicted),
  and their differences;
- the forward time (``label_task``) of each, summed over the images, and the ratio;
- whether the fp32 labels equal the stage's written labels ``<pseudo_labels.out_root>/<round>/seg`` (when present).

Nothing is written except ``--json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MODES = ("fp32", "bf16")


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from auxseg.io import load_label_png
    from auxseg.metrics import SegmentationMetric
    from auxseg.params import load_stage_params
    from auxseg.runtime import bf16_autocast, cpu_bf16_native, inference_memory_format
    from auxseg.steps.common import load_auxsegnet, model_normalization, open_split
    from auxseg.steps.update_labels import label_task, label_thresholds, labels_of_task

    torch.set_num_threads(args.threads)
    params = load_stage_params(["dataset", "saliency", "pseudo_labels", "rounds"], args.params, stage=None)
    rounds = params["rounds"]
    if args.round not in rounds:
        from auxseg.schema import ParamError

        raise ParamError(f"--round {args.round!r} is not a round of {args.params} (rounds: {sorted(rounds)})")
    pseudo_labels = params["pseudo_labels"]
    split = open_split(params["dataset"], "train")
    ids = list(split.ids)[: args.images] if args.images else list(split.ids)
    model_path = Path(pseudo_labels.models_root) / f"{args.round}.pt"
    model, meta = load_auxsegnet(model_path)
    models = {mode: (model if mode == "fp32" else load_auxsegnet(model_path)[0]) for mode in MODES}
    for mode, network in models.items():  # bf16 in channels_last, as the stages run it
        network.to(memory_format=inference_memory_format("cpu", mode == "bf16"))
    normalization = model_normalization(meta, model_path)
    thresholds = label_thresholds(pseudo_labels, rounds[args.round])
    stage_dir = Path(pseudo_labels.out_root) / args.round / "seg"

    metrics = {mode: SegmentationMetric(split.num_classes, class_names=split.class_names) for mode in MODES}
    forward_s = {mode: 0.0 for mode in MODES}
    differing = labelled_either = total = images_differing = 0
    equal_to_stage: bool | None = True if stage_dir.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="compare_bf16_labels.") as scratch:
        for image_id in ids:
            segs = {}
            for mode in MODES:
                start = time.perf_counter()
                with bf16_autocast("cpu", mode == "bf16"):
                    task = label_task(split, image_id, models[mode], normalization, "cpu", params["saliency"], pseudo_labels,
                                      thresholds, Path(scratch))
                forward_s[mode] += time.perf_counter() - start
                segs[mode] = labels_of_task(task)[0]
            gt = split.load_mask(image_id)
            for mode in MODES:
                metrics[mode].update(segs[mode], gt)
            changed = segs["fp32"] != segs["bf16"]
            differing += int(changed.sum())
            labelled_either += int(((segs["fp32"] != 255) | (segs["bf16"] != 255)).sum())
            total += changed.size
            images_differing += bool(changed.any())
            if equal_to_stage:
                stored = stage_dir / f"{image_id}.png"
                equal_to_stage = stored.is_file() and np.array_equal(load_label_png(stored), segs["fp32"])

    scores = {mode: metrics[mode].compute() for mode in MODES}
    return {
        "round": args.round,
        "images": len(ids),
        "pixels": total,
        "pixel_disagreement": differing / total if total else 0.0,
        "pixel_disagreement_labelled": differing / labelled_either if labelled_either else 0.0,
        "images_with_differences": images_differing,
        "modes": {
            mode: {"miou": scores[mode]["miou"], "precision": scores[mode]["precision"],
                   "recall": scores[mode]["recall"], "forward_s": forward_s[mode]}
            for mode in MODES
        },
        "miou_difference": scores["bf16"]["miou"] - scores["fp32"]["miou"],
        "forward_ratio": forward_s["fp32"] / forward_s["bf16"] if forward_s["bf16"] > 0 else None,
        "fp32_equals_stage_labels": equal_to_stage,
        "cpu_bf16_native": cpu_bf16_native(),
        "torch_threads": torch.get_num_threads(),
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"Label update of round {result['round']} on {result['images']} train images ({result['pixels']} pixels), "
        "fp32 vs bf16 autocast",
        "",
        f"{'':<6}{'mIoU':>9}{'precision':>11}{'recall':>9}{'forward s':>11}",
    ]
    for mode, figures in result["modes"].items():
        lines.append(f"{mode:<6}{figures['miou']:>9.4f}{figures['precision']:>11.4f}{figures['recall']:>9.4f}"
                     f"{figures['forward_s']:>11.2f}")
    ratio = result["forward_ratio"]
    lines += [
        "",
        f"pixels that differ: {result['pixel_disagreement'] * 100:.4f}% of all, "
        f"{result['pixel_disagreement_labelled'] * 100:.4f}% of those labelled in either; "
        f"{result['images_with_differences']} of {result['images']} images have any difference",
        f"mIoU bf16 - fp32: {result['miou_difference']:+.5f}; forward fp32 / bf16: "
        + (f"{ratio:.2f}x" if ratio else "n/a"),
        "fp32 labels equal the stage's written labels: "
        + {True: "yes", False: "NO", None: "not checked (no written labels)"}[result["fp32_equals_stage_labels"]],
        f"native bf16 (oneDNN/cpuinfo): {result['cpu_bf16_native']}; {result['torch_threads']} torch threads",
    ]
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from auxseg.tools.bench_label_update import round_tool_parser

    return round_tool_parser(
        prog or "python -m auxseg.tools.compare_bf16_labels",
        "Run a round's label update in fp32 and bf16 on the same images; report label disagreement and mIoU.",
    )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (argparse exits with 2 on bad arguments)."""
    from auxseg.tools.bench_label_update import run_and_report

    return run_and_report(build_parser(prog).parse_args(argv), run_comparison, format_report)


if __name__ == "__main__":
    sys.exit(main())
