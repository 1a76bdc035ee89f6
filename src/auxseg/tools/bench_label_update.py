"""Per-image cost of AuxSegNet's pseudo-label update (step ``update_labels``), on the CPU, with random weights.

Usage::

    python -m auxseg.tools.bench_label_update [--backbone resnet38] [--height 375 --width 500] [--images 5]
        [--warmup 1] [--threads 2] [--branch-channels 128] [--classes 20] [--present 2]
        [--no-cross-task-affinity] [--crf-iterations 1] [--precision both|fp32|bf16] [--seed 0] [--json OUT]

What is timed (``time.perf_counter``, one image at a time, batch 1, eval mode, ``torch.inference_mode``) are the
functions of :mod:`auxseg.steps.update_labels` themselves, in the order the stage runs them:

=============  ===========================================================================================
preprocess     ``normalize_image`` (uint8 RGB → ImageNet-normalised (1, 3, H, W) tensor)
forward        ``forward_label_outputs``: the model call (backbone, heads, task affinities, A_CT)
propagation    ``label_inputs_from_output``: CAM normalisation, one multiplication by A_CT (skipped with
               ``--no-cross-task-affinity``: the identity), sigmoid of the refined saliency on the grid,
               bilinear upsampling of both to (H, W), copy to numpy
saliency_crf   ``saliency_labels``: ½(refined saliency + prior), pydensecrf saliency CRF, clip
fusion         ``fuse_labels``: CAM/saliency fusion into the label map + confidence map
write          ``write_labels``: the three PNGs (seg, sal, conf), into a temporary directory
=============  ===========================================================================================

Inputs are deterministic and synthetic: a smooth colour gradient with two soft elliptic blobs and mild noise (so
the CRF's bilateral kernel has edges to follow), a saliency prior built from the blobs plus uniform noise (quantised
to 1/255 as the stage's PNG prior is), and ``--present`` random image-level classes. The model is built with
``torch.manual_seed(--seed)`` and no weights file. Random weights do not change the cost of anything timed here.
``--warmup`` extra images run first and are not counted. Reported per precision and phase: median, min and max ms per
image (share = phase median / sum of phase medians), the median and min per-image total, images/s, and the setting
(torch threads and version, CPU, load average, N = h·w positions of A_CT, its size, peak RSS of the whole process).
With ``--precision both`` (the default) each image runs in fp32 and then under bf16 autocast
(:func:`auxseg.runtime.bf16_autocast`, what ``runtime.cpu_bf16`` turns on), so the ratio fp32 / bf16 of the totals
comes from one process on the same images; also reported: the share of label-map pixels that differ between the two.

The stage itself runs CRF, fusion and writing in a process pool after each chunk's forward passes
(``runtime.crf_workers``), so its wall time per image is below this single-process total when it has workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from auxseg.tools.args import int_at_least

PHASES = ("preprocess", "forward", "propagation", "saliency_crf", "fusion", "write")


# ------------------------------------------------------------------------------------------------ inputs
def synthetic_inputs(
    seed: int, height: int, width: int, num_classes: int, present: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic (rgb uint8 (H, W, 3), prior float32 (H, W) in [0, 1], image labels float32 (K,))."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    corners = rng.uniform(40, 215, size=(3, 3))  # colours at (0, 0), along x, along y
    image = corners[0] + (corners[1] - corners[0]) * x[..., None] + (corners[2] - corners[0]) * y[..., None]
    image += 15.0 * np.sin(2 * np.pi * (rng.uniform(0.5, 2.0) * x + rng.uniform(0.5, 2.0) * y))[..., None]
    objects = np.zeros((height, width))
    for _ in range(2):
        cy, cx = rng.uniform(0.25, 0.75, size=2)
        ry, rx = rng.uniform(0.12, 0.3, size=2)
        distance = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        blob = 1.0 / (1.0 + np.exp((distance - 1.0) * 25.0))  # soft edge, 1 inside
        image = image * (1 - blob[..., None]) + rng.uniform(0, 255, size=3) * blob[..., None]
        objects = np.maximum(objects, blob)
    image += rng.normal(0.0, 4.0, size=image.shape)
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    prior = np.clip(0.75 * objects + 0.25 * rng.random((height, width)), 0.0, 1.0)
    prior = (np.rint(prior * 255.0) / 255.0).astype(np.float32)  # as load_gray_png returns it
    labels = np.zeros(num_classes, dtype=np.float32)
    labels[rng.choice(num_classes, size=present, replace=False)] = 1.0
    return rgb, prior, labels


# ------------------------------------------------------------------------------------------------ setting
def cpu_description() -> str:
    """The CPU model name (/proc/cpuinfo, else ``platform.processor()``, else the machine type)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_setting(load_start: list[float] | None) -> dict[str, Any]:
    """What a benchmark ran on: native bf16, torch threads and version, CPU, usable CPUs, load average at start/end."""
    import torch

    from auxseg.runtime import cpu_bf16_native

    return {
        "cpu_bf16_native": cpu_bf16_native(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu": cpu_description(),
        "usable_cpus": usable_cpus(),
        "loadavg_start": load_start,
        "loadavg_end": load_average(),
    }


def setting_line(result: dict[str, Any]) -> str:
    """One report line from the :func:`machine_setting` keys of ``result``."""
    return (
        f"native bf16 (oneDNN/cpuinfo): {result['cpu_bf16_native']}; torch {result['torch_version']}, "
        f"{result['torch_threads']} threads; CPU: {result['cpu']} ({result['usable_cpus']} usable); "
        f"load average start {result['loadavg_start']}, end {result['loadavg_end']}"
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10⁶ bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------------------------------------ arguments
def backbone_name(text: str) -> str:
    """argparse ``type``: a registered backbone or any timm model name (as ``create_backbone`` accepts)."""
    from auxseg.models.backbones import _is_timm_model, list_backbones

    if text in list_backbones() or _is_timm_model(text):
        return text
    raise argparse.ArgumentTypeError(f"unknown backbone {text!r}: neither registered ({', '.join(list_backbones())}) "
                                     "nor a timm model name")


_positive_int = int_at_least(1, "a positive integer")
_non_negative_int = int_at_least(0, "an integer >= 0")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m auxseg.tools.bench_label_update",
        description="Time the per-image phases of AuxSegNet's pseudo-label update (random weights, CPU).",
    )
    parser.add_argument("--backbone", default="resnet38", type=backbone_name,
                        help="registered backbone or timm model name (default: resnet38)")
    parser.add_argument("--height", type=_positive_int, default=375, help="image height (default 375, VOC)")
    parser.add_argument("--width", type=_positive_int, default=500, help="image width (default 500, VOC)")
    parser.add_argument("--images", type=_positive_int, default=5, help="timed images (default 5)")
    parser.add_argument("--warmup", type=_non_negative_int, default=1, help="untimed images first (default 1)")
    parser.add_argument("--threads", type=_positive_int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--branch-channels", type=_positive_int, default=128, help="branch width (default 128)")
    parser.add_argument("--classes", type=_positive_int, default=20, help="foreground classes K (default 20)")
    parser.add_argument("--present", type=_non_negative_int, default=2, help="classes present per image (default 2)")
    parser.add_argument("--crf-iterations", type=_non_negative_int, default=None,
                        help="saliency CRF mean-field steps (default: pseudo_labels.saliency_crf_iterations)")
    parser.add_argument("--no-cross-task-affinity", dest="cross_task_affinity", action="store_false",
                        help="ablation: AuxSegNet without A_CT (propagation with the identity)")
    parser.add_argument("--precision", choices=("both", "fp32", "bf16"), default="both",
                        help="both (default): fp32 and bf16 autocast alternating on each image, with their ratio")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the synthetic images")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the figures as JSON to OUT")
    return parser


def parse_args(argv: Sequence[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.present > args.classes:
        parser.error(f"argument --present: must be at most --classes ({args.classes}), got {args.present}")
    return args


# ------------------------------------------------------------------------------------------------ benchmark
def _label_update_once(model, inputs, args, defaults, crf_iterations, out_dir: Path, index: int, bf16: bool,
                       backbone_marks: list[float]):
    """One image through the stage's functions under the given precision → (ms per phase, backbone ms, seg, output)."""
    import torch

    from auxseg.data.training import normalize_image
    from auxseg.runtime import bf16_autocast
    from auxseg.steps.update_labels import (
        forward_label_outputs,
        fuse_labels,
        label_inputs_from_output,
        saliency_labels,
        write_labels,
    )

    rgb, prior, labels = inputs
    backbone_marks.clear()
    with torch.inference_mode(), bf16_autocast("cpu", bf16):
        t0 = time.perf_counter()
        image = normalize_image(rgb, model.backbone.normalization).unsqueeze(0)
        t1 = time.perf_counter()
        output = forward_label_outputs(model, image)
        t2 = time.perf_counter()
        cams, refined = label_inputs_from_output(output, labels, (args.height, args.width))
        t3 = time.perf_counter()
    task = {
        "id": f"synthetic_{index:04d}", "rgb": rgb, "labels": labels, "cams": cams,
        "refined_saliency": refined, "prior": prior, "out_dir": out_dir,
        "cam_threshold": defaults.cam_threshold, "saliency_threshold": defaults.saliency_threshold,
        "crf_iterations": crf_iterations,
    }
    t4 = time.perf_counter()
    saliency = saliency_labels(task)
    t5 = time.perf_counter()
    seg, confidence = fuse_labels(task, saliency)
    t6 = time.perf_counter()
    write_labels(task, seg, saliency, confidence)
    t7 = time.perf_counter()
    times = {phase: (end - start) * 1e3 for phase, start, end in zip(PHASES, (t0, t1, t2, t4, t5, t6), (t1, t2, t3, t5, t6, t7))}
    backbone = (backbone_marks[1] - backbone_marks[0]) * 1e3 if len(backbone_marks) == 2 else None
    return times, backbone, seg, output


def _mode_figures(times: dict[str, list[float]], backbone_ms: list[float], images: int) -> dict[str, Any]:
    medians = {phase: statistics.median(values) for phase, values in times.items()}
    median_sum = sum(medians.values())
    totals = [sum(times[phase][i] for phase in PHASES) for i in range(images)]
    total_median = statistics.median(totals)
    return {
        "phases": {
            phase: {
                "median_ms": medians[phase], "min_ms": min(times[phase]), "max_ms": max(times[phase]),
                "share": medians[phase] / median_sum if median_sum > 0 else 0.0, "ms": times[phase],
            }
            for phase in PHASES
        },
        "forward_backbone_median_ms": statistics.median(backbone_ms) if backbone_ms else None,
        "total_median_ms": total_median,
        "total_min_ms": min(totals),
        "total_ms": totals,
        "images_per_s": 1e3 / total_median if total_median > 0 else None,
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, time every phase on ``args.warmup + args.images`` images in each precision of
    ``args.precision`` (both: fp32 then bf16 on each image, alternating); returns the figures."""
    import torch

    from auxseg.config import PseudoLabelParams
    from auxseg.models.auxsegnet import AuxSegNet

    torch.set_num_threads(args.threads)
    defaults = PseudoLabelParams()
    crf_iterations = defaults.saliency_crf_iterations if args.crf_iterations is None else args.crf_iterations
    modes = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    load_start = load_average()

    from auxseg.runtime import inference_memory_format

    backbone_marks: list[float] = []
    models = {}
    for mode in modes:  # the same weights per mode (seeded); bf16 in channels_last, as the stages run it
        torch.manual_seed(args.seed)
        build_start = time.perf_counter()
        models[mode] = AuxSegNet.from_backbone_name(
            args.backbone,
            args.classes,
            branch_channels=args.branch_channels,
            use_cross_task_affinity=args.cross_task_affinity,
        ).eval().to(memory_format=inference_memory_format("cpu", mode == "bf16"))
        build_s = time.perf_counter() - build_start
        # Time the backbone inside the forward with hooks (same call, no copy of the code).
        models[mode].backbone.register_forward_pre_hook(lambda *_: backbone_marks.append(time.perf_counter()))
        models[mode].backbone.register_forward_hook(lambda *_: backbone_marks.append(time.perf_counter()))

    times = {mode: {phase: [] for phase in PHASES} for mode in modes}
    backbone_ms: dict[str, list[float]] = {mode: [] for mode in modes}
    disagreement: list[float] = []
    grid: tuple[int, int] | None = None
    affinity_bytes = 0
    with tempfile.TemporaryDirectory(prefix="bench_label_update.") as out_dir:
        for index in range(args.warmup + args.images):
            inputs = synthetic_inputs(args.seed * 1_000_003 + index, args.height, args.width, args.classes, args.present)
            segs = {}
            for mode in modes:
                phase_ms, backbone, segs[mode], output = _label_update_once(
                    models[mode], inputs, args, defaults, crf_iterations, Path(out_dir), index, mode == "bf16", backbone_marks
                )
                grid = (int(output.cam.shape[-2]), int(output.cam.shape[-1]))
                if output.affinity is not None:
                    affinity_bytes = output.affinity.numel() * output.affinity.element_size()
                del output
                if index < args.warmup:
                    continue
                for phase, value in phase_ms.items():
                    times[mode][phase].append(value)
                if backbone is not None:
                    backbone_ms[mode].append(backbone)
            if index >= args.warmup and len(segs) == 2:
                disagreement.append(float((segs["fp32"] != segs["bf16"]).mean()))

    assert grid is not None
    n = grid[0] * grid[1]
    per_mode = {mode: _mode_figures(times[mode], backbone_ms[mode], args.images) for mode in modes}
    result: dict[str, Any] = {
        "config": {
            "backbone": args.backbone, "height": args.height, "width": args.width, "images": args.images,
            "warmup": args.warmup, "branch_channels": args.branch_channels, "classes": args.classes,
            "present": args.present, "cross_task_affinity": args.cross_task_affinity,
            "crf_iterations": crf_iterations, "cam_threshold": defaults.cam_threshold,
            "saliency_threshold": defaults.saliency_threshold, "seed": args.seed, "precision": list(modes),
        },
        "modes": per_mode,
        "model_build_s": build_s,
        **machine_setting(load_start),
        "affinity": {
            "h": grid[0], "w": grid[1], "n": n,
            "materialised": affinity_bytes > 0,
            "mb": (affinity_bytes if affinity_bytes else n * n * 4) / 1e6,  # N×N float32
        },
        "peak_rss_mb": peak_rss_mb(),
    }
    if len(modes) == 2:
        fp32, bf16 = per_mode["fp32"], per_mode["bf16"]
        result["comparison"] = {
            "total_ratio_min": fp32["total_min_ms"] / bf16["total_min_ms"],
            "total_ratio_median": fp32["total_median_ms"] / bf16["total_median_ms"],
            "forward_ratio_min": fp32["phases"]["forward"]["min_ms"] / bf16["phases"]["forward"]["min_ms"],
            "label_disagreement_mean": statistics.fmean(disagreement),
            "label_disagreement_max": max(disagreement),
        }
    return result


def format_report(result: dict[str, Any]) -> str:
    config = result["config"]
    affinity = result["affinity"]
    modes = config["precision"]
    lines = [
        f"AuxSegNet label update, per image: {config['backbone']} (random weights), "
        f"{config['height']}x{config['width']}, A_CT {'on' if config['cross_task_affinity'] else 'OFF (identity)'}, "
        f"{config['classes']} classes ({config['present']} present), branch {config['branch_channels']}, "
        f"CRF iterations {config['crf_iterations']}, {config['images']} timed images + {config['warmup']} warm-up"
        + (", fp32 and bf16 autocast alternating on each image" if len(modes) == 2 else f", {modes[0]}"),
    ]
    for mode in modes:
        figures = result["modes"][mode]
        lines += ["", f"[{mode}]", f"{'phase':<14}{'median ms':>12}{'share':>9}{'min ms':>12}{'max ms':>12}"]
        for phase, phase_figures in figures["phases"].items():
            lines.append(
                f"{phase:<14}{phase_figures['median_ms']:>12.1f}{phase_figures['share'] * 100:>8.1f}%"
                f"{phase_figures['min_ms']:>12.1f}{phase_figures['max_ms']:>12.1f}"
            )
        lines.append(f"{'total':<14}{figures['total_median_ms']:>12.1f}{'':>9}{figures['total_min_ms']:>12.1f}"
                     f"{max(figures['total_ms']):>12.1f}")
        backbone = figures["forward_backbone_median_ms"]
        lines.append(f"forward of which backbone: {backbone:.1f} ms median" if backbone is not None
                     else "forward: backbone not timed")
        lines.append(f"images/s: {figures['images_per_s']:.3f}" if figures["images_per_s"] else "images/s: n/a")
    if "comparison" in result:
        comparison = result["comparison"]
        lines += [
            "",
            f"fp32 / bf16 per-image total: {comparison['total_ratio_min']:.2f}x (min), "
            f"{comparison['total_ratio_median']:.2f}x (median); forward {comparison['forward_ratio_min']:.2f}x (min)",
            f"label pixels that differ between fp32 and bf16: mean {comparison['label_disagreement_mean'] * 100:.3f}%, "
            f"max {comparison['label_disagreement_max'] * 100:.3f}% over the timed images (random weights)",
        ]
    lines += [
        "",
        "share = phase median / sum of phase medians; total = median (min) over images of the per-image sum",
        setting_line(result),
        f"A_CT grid {affinity['h']}x{affinity['w']}, N = {affinity['n']}; N x N float32 = {affinity['mb']:.3g} MB"
        + ("" if affinity["materialised"] else " (A_CT not built in the ablation; A_seg and A_sal still are)"),
        f"peak RSS: {result['peak_rss_mb']:.0f} MB; model build {result['model_build_s']:.1f} s",
    ]
    return "\n".join(lines)


def round_tool_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The arguments of the tools that re-run one round's label update on a pipeline's data
    (``--round``, ``--params``, ``--images``, ``--threads``, ``--json``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--round", required=True, help="round whose model updates the labels (e.g. r1)")
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--images", type=_non_negative_int, default=0, help="first N train images (default 0: all)")
    parser.add_argument("--threads", type=_positive_int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the figures as JSON to OUT")
    return parser


def run_and_report(args: argparse.Namespace, run, report) -> int:
    """The body of a benchmark tool's ``main``: ``result = run(args)`` (torch's thread count restored afterwards,
    as ``main`` may be called in-process by tests), print ``report(result)``, write it to ``args.json`` if given.
    Bad params, a missing or unreadable file, an unwritable ``--json``, a value the model code refuses (unknown
    backbone, CUDA asked for on a machine without it): one ``error:`` line on stderr and exit status 2
    (:class:`~auxseg.schema.ParamError` and :class:`~auxseg.io.DataError` are ValueErrors)."""
    import torch

    from auxseg.io import save_json

    previous_threads = torch.get_num_threads()
    try:
        result = run(args)
        print(report(result), flush=True)
        if args.json is not None:
            save_json(args.json, result)
            print(f"wrote {args.json}")
    except (ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(previous_threads)
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (argparse exits with 2 on bad arguments)."""
    return run_and_report(parse_args(argv, prog), run_benchmark, format_report)


if __name__ == "__main__":
    sys.exit(main())
