"""Benchmark: the final dense CRF over all classes vs over the image's classes + background only.

Usage::

    python -m auxseg.tools.bench_crf [--height 375] [--width 500] [--classes 21] [--present 2] [--images 5]
        [--iterations 10] [--seed 0] [--json OUT]

Each image is a random smooth RGB picture with a softmax of random logits over ``--classes`` classes, peaked on
``--present`` foreground classes (+ background). Both variants run on the same inputs, one after the other per
image, in this process with one thread (as a worker of the CRF pool does), so the ratio is measured in one run.
Prints per-image medians and the speed-up; ``--json`` also writes them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Sequence


def _inputs(rng, height: int, width: int, num_classes: int, present: int):
    import numpy as np

    coarse = rng.integers(0, 256, size=(height // 25 + 2, width // 25 + 2, 3)).astype(np.float32)
    rows = np.linspace(0, coarse.shape[0] - 1, height)
    cols = np.linspace(0, coarse.shape[1] - 1, width)
    image = coarse[rows.round().astype(int)][:, cols.round().astype(int)]
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    foreground = rng.choice(np.arange(1, num_classes), size=present, replace=False)
    logits = rng.normal(0, 1, size=(num_classes, height // 8 + 1, width // 8 + 1)).astype(np.float32)
    logits[[0, *foreground]] += 3.0
    logits = logits.repeat(8, axis=1).repeat(8, axis=2)[:, :height, :width]
    probs = np.exp(logits - logits.max(0, keepdims=True))
    probs /= probs.sum(0, keepdims=True)
    return image, probs, sorted(int(c) for c in foreground)


def run(height: int, width: int, num_classes: int, present: int, images: int, iterations: int, seed: int) -> dict:
    import numpy as np

    from auxseg.crf import dense_crf, dense_crf_present

    rng = np.random.default_rng(seed)
    all_ms, present_ms, agree = [], [], []
    for _ in range(images):
        image, probs, classes = _inputs(rng, height, width, num_classes, present)
        start = time.perf_counter()
        full = dense_crf(image, probs, iterations=iterations)
        all_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        sub = dense_crf_present(image, probs, classes, iterations=iterations)
        present_ms.append((time.perf_counter() - start) * 1000)
        agree.append(float((full.argmax(0) == sub.argmax(0)).mean()))
    report = {
        "height": height, "width": width, "classes": num_classes, "present_foreground": present,
        "iterations": iterations, "images": images,
        "all_classes_ms_median": statistics.median(all_ms), "present_classes_ms_median": statistics.median(present_ms),
        "speedup": statistics.median(all_ms) / statistics.median(present_ms),
        "argmax_agreement_mean": statistics.mean(agree),
    }
    return report


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--classes", type=int, default=21, help="classes including background")
    parser.add_argument("--present", type=int, default=2, help="foreground classes in each image")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.height < 8 or args.width < 8 or args.images < 1 or args.iterations < 1:
        print("error: --height/--width must be >= 8, --images and --iterations >= 1", file=sys.stderr)
        return 2
    if not 1 <= args.present < args.classes:
        print(f"error: --present must lie in 1..{args.classes - 1}, got {args.present}", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = run(args.height, args.width, args.classes, args.present, args.images, args.iterations, args.seed)
    print(
        f"dense CRF, {args.height}x{args.width}, {args.iterations} iterations, {args.images} images (medians): "
        f"all {args.classes} classes {report['all_classes_ms_median']:.0f} ms, "
        f"{args.present} present + background {report['present_classes_ms_median']:.0f} ms, "
        f"speed-up {report['speedup']:.2f}x, argmax agreement {report['argmax_agreement_mean']:.4f}"
    )
    if args.json:
        from auxseg.io import save_json

        save_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
