"""Forward pass of every inference stage in fp32 and bf16 autocast, side by side, on the CPU, with random weights.

Usage::

    auxseg bench forward [--backbone resnet38] [--size 375x500] [--repeats 3] [--warmup 1]
        [--threads 2] [--classes 20] [--stages cam,label_update,deeplab,single_stage] [--seed 0] [--json OUT]

Stages (each one model call on one image, batch 1, eval mode, ``torch.inference_mode``, as the stage makes it):

=============  ==========================================================================================
cam            ``CamClassifier.cams`` (``make_cams``, one scale, no flip)
label_update   ``AuxSegNet`` with A_CT (``update_labels``: ``forward_label_outputs`` +
               ``label_inputs_from_output``, i.e. the forward and the fp32 CAM propagation)
deeplab        ``DeepLab`` logits (``evaluate``; ASPP head 256 wide)
single_stage   ``SingleStageNet`` (``infer_single_stage``; the paper's widths 256 / 48 / 256 / 256)
=============  ==========================================================================================

fp32 and bf16 (:func:`auxseg.runtime.bf16_autocast`, the context every inference stage uses) run alternately,
``--warmup`` untimed pairs first, then ``--repeats`` timed pairs; reported per stage: min and median seconds of each
and the ratio fp32 min / bf16 min. Agreement of the two outputs on the same image: the share of pixels whose argmax
label is the same (CAMs: over the normalised CAMs of all K classes; label update: over the propagated normalised
CAMs; DeepLab and single stage: over the segmentation logits) and the max abs difference of the compared maps
(normalised CAMs in [0, 1], or softmax probabilities). Random weights: agreement on a trained model is what
``auxseg bench bf16-labels`` measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

STAGES = ("cam", "label_update", "deeplab", "single_stage")
MODES = ("fp32", "bf16")


def parse_size(text: str) -> tuple[int, int]:
    """``"375x500"`` → (375, 500) (height × width, both >= 1); argparse ``type``."""
    parts = text.lower().split("x")
    try:
        height, width = (int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 375x500, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"height and width must be >= 1, got {text!r}")
    return height, width


def parse_stages(text: str) -> tuple[str, ...]:
    """Comma-separated subset of :data:`STAGES`; argparse ``type``."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"stages must be a comma-separated subset of {list(STAGES)}, got {text!r}")
    return names


def time_alternating(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> tuple[dict[str, list[float]], dict]:
    """Run every call of ``calls`` (mode → function) in turn, ``warmup`` + ``repeats`` rounds.

    Returns ({mode: [seconds of each timed round]}, {mode: the output of the last call}). Alternating the modes in
    one process makes their ratio robust against a machine whose load changes.
    """
    seconds: dict[str, list[float]] = {mode: [] for mode in calls}
    outputs: dict[str, Any] = {}
    for index in range(warmup + repeats):
        for mode, call in calls.items():
            start = time.perf_counter()
            outputs[mode] = call()
            elapsed = time.perf_counter() - start
            if index >= warmup:
                seconds[mode].append(elapsed)
    return seconds, outputs


def label_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Share of pixels whose argmax over axis 0 is the same in two (C, H, W) maps."""
    if first.shape != second.shape:
        raise ValueError(f"maps of different shapes {first.shape} and {second.shape}")
    return float((first.argmax(0) == second.argmax(0)).mean())


def _stage_runner(stage: str, args: argparse.Namespace, rgb: np.ndarray, labels: np.ndarray):
    """(model, function → comparable float32 numpy map (C, h, w) of ``rgb``) of one stage; the image is normalised
    with the backbone's own normalisation, as the stages do."""
    import torch

    from auxseg.data.training import normalize_image

    from auxseg.cam import normalize_cams
    from auxseg.models.auxsegnet import AuxSegNet
    from auxseg.models.classifier import CamClassifier
    from auxseg.models.deeplab import DeepLab
    from auxseg.steps.train_single_stage import build_single_stage
    from auxseg.steps.update_labels import forward_label_outputs, label_inputs_from_output

    torch.manual_seed(args.seed)
    classes = args.classes
    if stage == "cam":
        model = CamClassifier.from_backbone_name(args.backbone, classes).eval()

        def run() -> np.ndarray:
            cams = model.cams(image)
            return normalize_cams(cams.float(), torch.ones(1, classes))[0].numpy()
    elif stage == "label_update":
        model = AuxSegNet.from_backbone_name(args.backbone, classes).eval()

        def run() -> np.ndarray:
            output = forward_label_outputs(model, image)
            cams, _ = label_inputs_from_output(output, labels, (int(output.cam.shape[-2]), int(output.cam.shape[-1])))
            return cams
    elif stage == "deeplab":
        model = DeepLab.from_backbone_name(args.backbone, classes + 1).eval()

        def run() -> np.ndarray:
            return torch.softmax(model(image).float(), dim=1)[0].numpy()
    else:
        model = build_single_stage(
            args.backbone, classes, output_stride=8, widths={"aspp": 256, "skip": 48, "decoder": 256, "head": 256}
        ).eval()

        def run() -> np.ndarray:
            return torch.softmax(model(image).seg_logits.float(), dim=1)[0].numpy()
    image = normalize_image(rgb, model.backbone.normalization).unsqueeze(0)  # read by run() when called
    return model, run


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Time every stage of ``args.stages`` in both modes; returns the figures (see the module docstring)."""
    import torch

    from auxseg.runtime import bf16_autocast, inference_memory_format
    from auxseg.tools.bench_label_update import load_average, machine_setting, synthetic_inputs

    torch.set_num_threads(args.threads)
    height, width = args.size
    rgb, _, labels = synthetic_inputs(args.seed, height, width, args.classes, min(2, args.classes))
    load_start = load_average()
    stages: dict[str, Any] = {}
    for stage in args.stages:
        # the same weights twice (seeded): bf16 runs in channels_last, as the inference stages run it
        model, run = _stage_runner(stage, args, rgb, labels)
        model_bf16, run_bf16 = _stage_runner(stage, args, rgb, labels)
        model_bf16.to(memory_format=inference_memory_format("cpu", True))

        def call(enabled: bool, run) -> np.ndarray:
            with torch.inference_mode(), bf16_autocast("cpu", enabled):
                return run()

        seconds, outputs = time_alternating(
            {"fp32": lambda: call(False, run), "bf16": lambda: call(True, run_bf16)}, args.repeats, args.warmup
        )
        del model, model_bf16
        fp32, bf16 = outputs["fp32"], outputs["bf16"]
        stages[stage] = {
            **{f"{mode}_min_s": min(seconds[mode]) for mode in MODES},
            **{f"{mode}_median_s": statistics.median(seconds[mode]) for mode in MODES},
            **{f"{mode}_s": seconds[mode] for mode in MODES},
            "ratio": min(seconds["fp32"]) / min(seconds["bf16"]),
            "label_agreement": label_agreement(fp32, bf16),
            "max_abs_diff": float(np.abs(fp32 - bf16).max()),
            "map_shape": list(fp32.shape),
        }
    return {
        "config": {"backbone": args.backbone, "height": height, "width": width, "repeats": args.repeats,
                   "warmup": args.warmup, "classes": args.classes, "seed": args.seed},
        "stages": stages,
        **machine_setting(load_start),
    }


def format_report(result: dict[str, Any]) -> str:
    from auxseg.tools.bench_label_update import setting_line

    config = result["config"]
    lines = [
        f"Forward per image, fp32 vs bf16 autocast: {config['backbone']} (random weights), "
        f"{config['height']}x{config['width']}, {config['classes']} classes, min of {config['repeats']} "
        f"alternating runs after {config['warmup']} warm-up",
        "",
        f"{'stage':<14}{'fp32 min s':>11}{'bf16 min s':>11}{'ratio':>8}{'fp32 med s':>11}{'bf16 med s':>11}"
        f"{'labels agree':>14}{'max |diff|':>12}",
    ]
    for stage, figures in result["stages"].items():
        lines.append(
            f"{stage:<14}{figures['fp32_min_s']:>11.3f}{figures['bf16_min_s']:>11.3f}{figures['ratio']:>7.2f}x"
            f"{figures['fp32_median_s']:>11.3f}{figures['bf16_median_s']:>11.3f}"
            f"{figures['label_agreement'] * 100:>13.2f}%{figures['max_abs_diff']:>12.4f}"
        )
    lines += [
        "",
        "ratio = fp32 min / bf16 min; labels agree = pixels with the same argmax in both; max |diff| of the "
        "normalised CAMs (cam, label_update) or softmax probabilities (deeplab, single_stage)",
        setting_line(result),
    ]
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from auxseg.tools.bench_label_update import _non_negative_int, _positive_int, backbone_name

    parser = argparse.ArgumentParser(
        prog=prog or "python -m auxseg.tools.bench_forward",
        description="Time the forward pass of every inference stage in fp32 and bf16 autocast (random weights, CPU).",
    )
    parser.add_argument("--backbone", default="resnet38", type=backbone_name,
                        help="registered backbone or timm model name, e.g. efficientnet_lite0 (default: resnet38)")
    parser.add_argument("--size", type=parse_size, default=(375, 500), help="HEIGHTxWIDTH (default 375x500, VOC)")
    parser.add_argument("--repeats", type=_positive_int, default=3, help="timed runs per mode (default 3)")
    parser.add_argument("--warmup", type=_non_negative_int, default=1, help="untimed runs per mode first (default 1)")
    parser.add_argument("--threads", type=_positive_int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--classes", type=_positive_int, default=20, help="foreground classes K (default 20)")
    parser.add_argument("--stages", type=parse_stages, default=STAGES, help=f"default: {','.join(STAGES)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the synthetic image")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the figures as JSON to OUT")
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (argparse exits with 2 on bad arguments)."""
    from auxseg.tools.bench_label_update import run_and_report

    return run_and_report(build_parser(prog).parse_args(argv), run_benchmark, format_report)


if __name__ == "__main__":
    sys.exit(main())
