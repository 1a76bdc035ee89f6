"""Per-image cost of AuxSegNet's pseudo-label update (step ``update_labels``), on the CPU, with random weights.

Usage::

    python -m auxseg.tools.bench_label_update [--backbone resnet38] [--height 375 --width 500] [--images 5]
        [--warmup 1] [--threads 2] [--branch-channels 128] [--classes 20] [--present 2]
        [--no-cross-task-affinity] [--crf-iterations 1] [--seed 0] [--json OUT]

What is timed (``time.perf_counter``, one image at a time, batch 1, eval mode, ``torch.inference_mode``) are the
functions of :mod:`auxseg.steps.update_labels` themselves, in the order the stage runs them:

=============  ===========================================================================================
preprocess     ``normalize_image`` (uint8 RGB → ImageNet-normalised (1, 3, H, W) tensor)
forward        ``forward_label_outputs``: the model call (backbone, heads, task affinities, A_CT)
propagation    ``label_inputs_from_output``: CAM normalisation, one multiplication by A_CT (skipped with
               ``--no-cross-task-affinity``: the identity), bilinear upsampling of CAMs and refined saliency
               to (H, W), sigmoid, copy to numpy
saliency_crf   ``saliency_labels``: ½(refined saliency + prior), pydensecrf saliency CRF, clip
fusion         ``fuse_labels``: CAM/saliency fusion into the label map + confidence map
write          ``write_labels``: the three PNGs (seg, sal, conf), into a temporary directory
=============  ===========================================================================================

Inputs are deterministic and synthetic: a smooth colour gradient with two soft elliptic blobs and mild noise (so
the CRF's bilateral kernel has edges to follow), a saliency prior built from the blobs plus uniform noise (quantised
to 1/255 as the stage's PNG prior is), and ``--present`` random image-level classes. The model is built with
``torch.manual_seed(--seed)`` and no weights file. Random weights do not change the cost of anything timed here.
``--warmup`` extra images run first and are not counted. Reported per phase: median, min and max ms per image
(share = phase median / sum of phase medians), the median per-image total, images/s, and the setting (torch threads
and version, CPU, load average, N = h·w positions of A_CT, its size, peak RSS of the whole process).

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


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10⁶ bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------------------------------------ arguments
def _int_at_least(minimum: int, wording: str):
    """An argparse ``type`` accepting integers >= ``minimum``; ``wording`` names the bound in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    from auxseg.models.backbones import list_backbones

    parser = argparse.ArgumentParser(
        prog="python -m auxseg.tools.bench_label_update",
        description="Time the per-image phases of AuxSegNet's pseudo-label update (random weights, CPU).",
    )
    parser.add_argument("--backbone", default="resnet38", choices=list_backbones(), help="default: resnet38")
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the synthetic images")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the figures as JSON to OUT")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.present > args.classes:
        parser.error(f"argument --present: must be at most --classes ({args.classes}), got {args.present}")
    return args


# ------------------------------------------------------------------------------------------------ benchmark
def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, time every phase on ``args.warmup + args.images`` images; returns the figures."""
    import torch

    from auxseg.config import PseudoLabelParams
    from auxseg.data.training import normalize_image
    from auxseg.models.auxsegnet import AuxSegNet
    from auxseg.steps.update_labels import (
        forward_label_outputs,
        fuse_labels,
        label_inputs_from_output,
        saliency_labels,
        write_labels,
    )

    torch.set_num_threads(args.threads)
    defaults = PseudoLabelParams()
    crf_iterations = defaults.saliency_crf_iterations if args.crf_iterations is None else args.crf_iterations
    load_start = load_average()

    torch.manual_seed(args.seed)
    build_start = time.perf_counter()
    model = AuxSegNet.from_backbone_name(
        args.backbone,
        args.classes,
        branch_channels=args.branch_channels,
        use_cross_task_affinity=args.cross_task_affinity,
    ).eval()
    build_s = time.perf_counter() - build_start

    # Time the backbone inside the forward with hooks (same call, no copy of the code).
    backbone_marks: list[float] = []
    model.backbone.register_forward_pre_hook(lambda *_: backbone_marks.append(time.perf_counter()))
    model.backbone.register_forward_hook(lambda *_: backbone_marks.append(time.perf_counter()))

    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    backbone_ms: list[float] = []
    grid: tuple[int, int] | None = None
    affinity_bytes = 0
    with tempfile.TemporaryDirectory(prefix="bench_label_update.") as out_dir:
        for index in range(args.warmup + args.images):
            rgb, prior, labels = synthetic_inputs(
                args.seed * 1_000_003 + index, args.height, args.width, args.classes, args.present
            )
            backbone_marks.clear()
            with torch.inference_mode():
                t0 = time.perf_counter()
                image = normalize_image(rgb).unsqueeze(0)
                t1 = time.perf_counter()
                output = forward_label_outputs(model, image)
                t2 = time.perf_counter()
                cams, refined = label_inputs_from_output(output, labels, (args.height, args.width))
                t3 = time.perf_counter()
            grid = (int(output.cam.shape[-2]), int(output.cam.shape[-1]))
            if output.affinity is not None:
                affinity_bytes = output.affinity.numel() * output.affinity.element_size()
            del output, image
            task = {
                "id": f"synthetic_{index:04d}", "rgb": rgb, "labels": labels, "cams": cams,
                "refined_saliency": refined, "prior": prior, "out_dir": Path(out_dir),
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
            if index < args.warmup:
                continue
            for phase, start, end in zip(PHASES, (t0, t1, t2, t4, t5, t6), (t1, t2, t3, t5, t6, t7)):
                times[phase].append((end - start) * 1e3)
            if len(backbone_marks) == 2:
                backbone_ms.append((backbone_marks[1] - backbone_marks[0]) * 1e3)

    assert grid is not None
    n = grid[0] * grid[1]
    medians = {phase: statistics.median(values) for phase, values in times.items()}
    median_sum = sum(medians.values())
    totals = [sum(times[phase][i] for phase in PHASES) for i in range(args.images)]
    total_median = statistics.median(totals)
    return {
        "config": {
            "backbone": args.backbone, "height": args.height, "width": args.width, "images": args.images,
            "warmup": args.warmup, "branch_channels": args.branch_channels, "classes": args.classes,
            "present": args.present, "cross_task_affinity": args.cross_task_affinity,
            "crf_iterations": crf_iterations, "cam_threshold": defaults.cam_threshold,
            "saliency_threshold": defaults.saliency_threshold, "seed": args.seed,
        },
        "phases": {
            phase: {
                "median_ms": medians[phase], "min_ms": min(times[phase]), "max_ms": max(times[phase]),
                "share": medians[phase] / median_sum if median_sum > 0 else 0.0, "ms": times[phase],
            }
            for phase in PHASES
        },
        "forward_backbone_median_ms": statistics.median(backbone_ms) if backbone_ms else None,
        "total_median_ms": total_median,
        "total_ms": totals,
        "images_per_s": 1e3 / total_median if total_median > 0 else None,
        "model_build_s": build_s,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu": cpu_description(),
        "usable_cpus": usable_cpus(),
        "loadavg_start": load_start,
        "loadavg_end": load_average(),
        "affinity": {
            "h": grid[0], "w": grid[1], "n": n,
            "materialised": affinity_bytes > 0,
            "mb": (affinity_bytes if affinity_bytes else n * n * 4) / 1e6,  # N×N float32
        },
        "peak_rss_mb": peak_rss_mb(),
    }


def format_report(result: dict[str, Any]) -> str:
    config = result["config"]
    affinity = result["affinity"]
    lines = [
        f"AuxSegNet label update, per image: {config['backbone']} (random weights), "
        f"{config['height']}x{config['width']}, A_CT {'on' if config['cross_task_affinity'] else 'OFF (identity)'}, "
        f"{config['classes']} classes ({config['present']} present), branch {config['branch_channels']}, "
        f"CRF iterations {config['crf_iterations']}, {config['images']} timed images + {config['warmup']} warm-up",
        "",
        f"{'phase':<14}{'median ms':>12}{'share':>9}{'min ms':>12}{'max ms':>12}",
    ]
    for phase, figures in result["phases"].items():
        lines.append(
            f"{phase:<14}{figures['median_ms']:>12.1f}{figures['share'] * 100:>8.1f}%"
            f"{figures['min_ms']:>12.1f}{figures['max_ms']:>12.1f}"
        )
    lines.append(f"{'total':<14}{result['total_median_ms']:>12.1f}{'':>9}{min(result['total_ms']):>12.1f}"
                 f"{max(result['total_ms']):>12.1f}")
    backbone = result["forward_backbone_median_ms"]
    lines += [
        "",
        "share = phase median / sum of phase medians; total = median over images of the per-image sum",
        f"forward of which backbone: {backbone:.1f} ms median" if backbone is not None
        else "forward: backbone not timed",
        f"images/s: {result['images_per_s']:.3f}" if result["images_per_s"] else "images/s: n/a",
        f"torch {result['torch_version']}, {result['torch_threads']} threads; CPU: {result['cpu']} "
        f"({result['usable_cpus']} usable); load average start {result['loadavg_start']}, end {result['loadavg_end']}",
        f"A_CT grid {affinity['h']}x{affinity['w']}, N = {affinity['n']}; N x N float32 = {affinity['mb']:.3g} MB"
        + ("" if affinity["materialised"] else " (A_CT not built in the ablation; A_seg and A_sal still are)"),
        f"peak RSS: {result['peak_rss_mb']:.0f} MB; model build {result['model_build_s']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (argparse exits with 2 on bad arguments)."""
    import torch

    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    try:
        result = run_benchmark(args)
    finally:
        torch.set_num_threads(previous_threads)  # main() may be called in-process (tests)
    print(format_report(result), flush=True)
    if args.json is not None:
        from auxseg.io import save_json

        save_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
