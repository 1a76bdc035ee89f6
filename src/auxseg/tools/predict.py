"""``auxseg predict``: segment new images with a trained model file, without params.yaml or the dataset.

A model file (``models/deeplab.pt``, a round's AuxSegNet ``models/rounds/rK.pt`` with K >= 1, or the single-stage
``models/single_stage.pt``) carries what is needed to rebuild and run it: the kind, backbone name, output stride,
architecture params, class names (K+1, background first) and the input normalisation (``meta["normalization"]``;
a file without it, written by an older auxseg, is refused naming it). For each input image ``<stem>.<ext>`` it writes

- ``<out>/<stem>.png``: the label map, a VOC-palette PNG of class indices 0..K (:func:`auxseg.io.save_label_png`);
- with ``--overlay``: ``<out>/overlays/<stem>.png``, the image with the coloured labels blended on top;
- with ``--probs``: ``<out>/probs/<stem>.npz`` with ``probs`` float16 (C, H, W) (mean softmax over the scales and
  flips, before any CRF; sums to 1 over C) and ``class_names`` (C,).

Probabilities and labels come from the code path ``evaluate`` uses (:class:`auxseg.inference.ProbabilityFn`,
:func:`auxseg.inference.label_maps`), so the same model, image, scales, flip and CRF give the same labels. Images of
one size are batched (``--batch-size``, default 8 on a GPU, 1 on the CPU). Every file is written atomically. An
input that is not a readable image is reported (``error: <path>: ...``) and skipped; the others are written and
the exit status is 1 at the end. A bad model file, no input images, or two inputs with the same stem exit with 2.
"""

from __future__ import annotations

import argparse
import glob
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from auxseg.tools.args import int_at_least
from auxseg.normalization import Normalization

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
"""Suffixes of the files taken from an input directory (explicit files and globs are taken whatever their suffix)."""

SEGMENTATION_KINDS = ("deeplab", "auxsegnet", "single_stage")


class PredictError(ValueError):
    """A fatal problem with the model file or the inputs (the message names the file or argument)."""


@dataclass
class SegmentationModel:
    """A trained segmentation network loaded from a model file, with what inference needs to run it."""

    network: Any
    """The torch module (eval mode)."""
    logits_fn: Callable
    """(B, 3, H, W) normalised → (B, C, h, w) segmentation logits (C = K+1, background first)."""
    meta: dict
    class_names: tuple[str, ...]
    normalization: Normalization
    """The input normalisation recorded in the model file (:meth:`auxseg.normalization.Normalization.from_meta`)."""


def load_segmentation_model(path: str | Path) -> SegmentationModel:
    """Rebuild the segmentation network saved at ``path`` from its meta alone (strict load, eval mode).

    Raises PredictError naming the file when it is missing, not an auxseg model file, an image-level classifier
    (round r0's model is a copy of it: it gives CAMs, not segmentations) or lacks what is needed to rebuild it.
    """
    from auxseg.steps.common import load_auxsegnet, load_model_file, model_normalization

    path = Path(path)
    try:
        meta = load_model_file(path)["meta"]
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as error:
        message = str(error) if str(error).startswith(str(path)) else f"{path}: unreadable model file ({error})"
        raise PredictError(message) from error
    kind = meta.get("kind")
    if kind == "classifier":
        raise PredictError(
            f"{path}: an image-level classifier (round r0's model is a copy of it) gives class scores and CAMs, not "
            f"segmentations; use the final DeepLab, a round r1+ AuxSegNet or the single-stage model"
        )
    if kind not in SEGMENTATION_KINDS:
        raise PredictError(f"{path}: unknown model kind {kind!r} (expected one of {', '.join(SEGMENTATION_KINDS)})")
    try:
        if kind == "deeplab":
            from auxseg.steps.train_deeplab import load_deeplab

            network, meta = load_deeplab(path)
            logits_fn = network
        elif kind == "auxsegnet":
            network, meta = load_auxsegnet(path)
            logits_fn = lambda x: network(x).seg_refined  # noqa: E731
        else:
            from auxseg.steps.train_single_stage import load_single_stage

            network, meta = load_single_stage(path)
            logits_fn = lambda x: network(x).seg_logits  # noqa: E731
        normalization = model_normalization(meta, path)
    except (KeyError, ValueError, RuntimeError) as error:
        raise PredictError(f"{path}: cannot rebuild the {kind} network from the file ({error})") from error
    num_classes = int(meta["num_classes"]) if kind == "deeplab" else int(meta["num_classes_fg"]) + 1
    names = meta.get("class_names")
    if names is None:
        print(f"warning: {path} records no class names (written before they were added); using class_1..class_"
              f"{num_classes - 1}", file=sys.stderr)
        names = ["background"] + [f"class_{index}" for index in range(1, num_classes)]
    if len(names) != num_classes:
        raise PredictError(f"{path}: {len(names)} class names for a network with {num_classes} classes")
    return SegmentationModel(network, logits_fn, meta, tuple(names), normalization)


def collect_images(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Input files in order: each argument is a file, a directory (its files with an image suffix, sorted, not
    recursive) or a glob pattern (matching files, sorted; ``**`` recurses). Returns (files without duplicates,
    error messages for arguments that name nothing)."""
    files: list[Path] = []
    errors: list[str] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for argument in inputs:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{path}: directory holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for item in found:
                add(item)
        elif path.is_file():
            add(path)
        elif glob.has_magic(argument):
            found = sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())
            if not found:
                errors.append(f"{argument}: pattern matches no file")
            for item in found:
                add(item)
        else:
            errors.append(f"{path}: no such file or directory")
    return files, errors


def _check_stems(files: Sequence[Path]) -> None:
    first: dict[str, Path] = {}
    for path in files:
        if path.stem in first:
            raise PredictError(
                f"{path} and {first[path.stem]} would both be written as {path.stem}.png; predict them into "
                "different --out folders"
            )
        first[path.stem] = path


def resolve_device(name: str):
    """torch device for ``auto`` (CUDA when available), ``cpu`` or ``cuda`` (an error when CUDA is missing)."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if name == "cuda":
        raise PredictError("--device cuda: CUDA is not available on this machine")
    return torch.device("cpu")


def _batches(images: list[tuple[Path, np.ndarray]], batch_size: int) -> list[list[tuple[Path, np.ndarray]]]:
    """Consecutive images of the same size, at most ``batch_size`` per batch (input order kept)."""
    batches: list[list[tuple[Path, np.ndarray]]] = []
    for item in images:
        if batches and len(batches[-1]) < batch_size and batches[-1][0][1].shape == item[1].shape:
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


def _write_outputs(task: dict) -> None:
    """Pool worker: label maps (and CRF) of one image, then its files, each written atomically."""
    from auxseg.inference import label_maps
    from auxseg.io import save_label_png, save_npz

    plain, refined = label_maps(task)
    label = plain if refined is None else refined
    out_dir: Path = task["out_dir"]
    stem = task["stem"]
    save_label_png(out_dir / f"{stem}.png", label)
    if task["overlay"]:
        from PIL import Image

        from auxseg.io import atomic_write
        from auxseg.steps.common import overlay

        with atomic_write(out_dir / "overlays" / f"{stem}.png") as handle:
            Image.fromarray(overlay(task["rgb"], label)).save(handle, format="PNG")
    if task["save_probs"]:
        save_npz(out_dir / "probs" / f"{stem}.npz", probs=task["probs"], class_names=np.asarray(task["class_names"]))


def run(model_path: str | Path, inputs: Sequence[str], out_dir: str | Path, *, scales: Sequence[float] = (1.0,),
        flip: bool = False, crf_iterations: int = 0, overlay: bool = False, probs: bool = False,
        device: str = "auto", batch_size: int | None = None, workers: int = 1, bf16: str = "off") -> list[str]:
    """Predict every input image (see the module docstring); returns the error messages of the inputs that could
    not be read (empty when all were written). Raises PredictError for a bad model file or no input image.
    ``bf16``: ``auto | on | off``, bf16 autocast of the forward passes (:mod:`auxseg.runtime`; on the CPU ``auto``
    is on when it has native bf16, on CUDA ``auto`` and ``on`` are on); off (the default) gives evaluate's labels."""
    import torch
    from tqdm import tqdm

    from auxseg.inference import ProbabilityFn, label_task
    from auxseg.io import DataError, load_image_rgb
    from auxseg.parallel import process_map
    from auxseg.config import RuntimeParams
    from auxseg.runtime import inference_autocast, inference_model

    files, errors = collect_images(inputs)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if not files:
        raise PredictError("no input images (give image files, directories or glob patterns)")
    _check_stems(files)
    model = load_segmentation_model(model_path)
    torch_device = resolve_device(device)
    precision = RuntimeParams(amp_bf16=bf16 != "off", cpu_bf16=bf16)
    inference_model(model.network, precision, torch_device)  # in place: logits_fn uses this module
    if batch_size is None:
        batch_size = 8 if torch_device.type == "cuda" else 1
    # the single-stage model softmaxes on its stride-4 grid, as infer_single_stage does (1-Stage infer_val.py)
    probs_fn = ProbabilityFn(model.logits_fn, scales, flip, torch_device, model.normalization,
                             softmax_on_grid=model.meta.get("kind") == "single_stage")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunk = max(batch_size, 8)
    written = 0
    with tqdm(total=len(files), desc="predict", unit="image", mininterval=1.0) as progress:
        for start in range(0, len(files), chunk):
            loaded: list[tuple[Path, np.ndarray]] = []
            for path in files[start : start + chunk]:
                try:
                    loaded.append((path, load_image_rgb(path)))
                except DataError as error:
                    message = str(error)
                    errors.append(message)
                    tqdm.write(f"error: {message}", file=sys.stderr)
                    progress.update(1)
            tasks = []
            for batch in _batches(loaded, batch_size):
                with torch.inference_mode(), inference_autocast(precision, torch_device):
                    batch_probs = probs_fn.batch([rgb for _, rgb in batch])
                for (path, rgb), image_probs in zip(batch, batch_probs):
                    task = label_task(rgb, image_probs, crf_iterations)
                    task.update(out_dir=out_dir, stem=path.stem, overlay=overlay, save_probs=probs,
                                class_names=list(model.class_names))
                    tasks.append(task)
            process_map(_write_outputs, tasks, workers=workers)
            progress.update(len(tasks))
            written += len(tasks)
    print(f"predict: {written} of {len(files)} images -> {out_dir}", file=sys.stderr)
    return errors


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 8:
        raise argparse.ArgumentTypeError(f"scales must lie in (0, 8], got {value}")
    return value


_positive_int = int_at_least(1, "an integer >= 1")
_non_negative_int = int_at_least(0, "an integer >= 0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``auxseg predict`` (shared with ``python -m auxseg.tools.predict``)."""
    parser.add_argument("model", help="model file: models/deeplab.pt, models/rounds/rK.pt (K >= 1) or models/single_stage.pt")
    parser.add_argument("images", nargs="+", help="image files, directories (their images) or glob patterns ('photos/**/*.jpg')")
    parser.add_argument("-o", "--out", required=True, help="output folder: <out>/<stem>.png label maps (VOC palette)")
    parser.add_argument("--overlay", action="store_true", help="also write colour overlays to <out>/overlays/<stem>.png")
    parser.add_argument("--probs", action="store_true",
                        help="also write class probabilities (float16 (C, H, W), before the CRF) to <out>/probs/<stem>.npz")
    parser.add_argument("--scales", type=_scale, nargs="+", default=[1.0], metavar="S",
                        help="test scales, mean softmax over them (default: 1.0; the pipeline's evaluate: 1.0 0.75 1.25)")
    parser.add_argument("--flip", action="store_true", help="also average horizontally flipped inputs")
    parser.add_argument("--crf", type=_non_negative_int, nargs="?", const=10, default=0, metavar="ITERATIONS",
                        help="refine with the dense CRF (default 10 iterations when given without a number; 0: off)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto (CUDA if available)")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="off",
                        help="bf16 autocast of the forward passes (auto: on where the CPU has native bf16, on CUDA; "
                        "default off: the labels of the pipeline's evaluate)")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="images of one size per forward pass (default: 8 on a GPU, 1 on the CPU)")
    parser.add_argument("--workers", type=_positive_int, default=1, help="processes for the CRF and writing (default 1)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``auxseg predict`` with parsed arguments; returns the exit status (0, 1: some inputs failed, 2: fatal)."""
    try:
        errors = run(args.model, args.images, args.out, scales=args.scales, flip=args.flip, crf_iterations=args.crf,
                     overlay=args.overlay, probs=args.probs, device=args.device, batch_size=args.batch_size,
                     workers=args.workers, bf16=args.bf16)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if errors:
        print(f"error: {len(errors)} input(s) failed (listed above); the other images were written to {args.out}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "auxseg predict", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
