"""Helpers shared by the pipeline steps: splits, model checkpoints, fingerprints, staged output folders."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from auxseg.config import DatasetParams, NetworkParams
from auxseg.io import atomic_write
from auxseg.normalization import Normalization
from auxseg.params import to_dict

CHECKPOINT_ROOT = Path(".auxseg/checkpoints")
"""Per-stage resume checkpoints (git- and DVC-ignored scratch); removed when a training finishes."""


def open_split(dataset: DatasetParams, role: str):
    """The train or val :class:`~auxseg.data.datasets.DatasetSplit` (already validated by ``prepare_data``)."""
    from auxseg.data.datasets import load_split

    if role not in ("train", "val"):
        raise ValueError(f"role must be 'train' or 'val', got {role!r}")
    return load_split(dataset, dataset.train_split if role == "train" else dataset.val_split, validate=False)


def scored_split(split):
    """The part of ``split`` that has ground-truth masks, and how much that is.

    Returns (a :class:`~auxseg.data.datasets.DatasetSplit` restricted to the ids with a mask, or ``None`` when no
    image has one; ``{"ground_truth": "full" | "partial" | "none", "images_scored": n, "images_total": N}``, the keys
    every metrics file that needs ground truth carries). Only ``custom`` datasets can have partial or no ground truth.
    """
    ids = split.mask_ids
    total = len(split.ids)
    coverage = {
        "ground_truth": "none" if not ids else ("full" if len(ids) == total else "partial"),
        "images_scored": len(ids),
        "images_total": total,
    }
    if not ids:
        return None, coverage
    return (split if len(ids) == total else dataclasses.replace(split, ids=ids)), coverage


def no_ground_truth_note(what: str, split) -> str:
    """One line saying that ``what`` could not be scored because no image of ``split`` has a mask."""
    return f"{what}: not scored, no image of split '{split.split}' has a ground-truth mask ({len(split.ids)} images)"


def fingerprint(*parts: Any) -> str:
    """A stable hash of params and other JSON-able values (identifies a training run for resuming)."""
    text = json.dumps([to_dict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_model(path: str | Path, model: torch.nn.Module, *, normalization: Normalization, **meta: Any) -> None:
    """Write ``{"meta": meta, "state_dict": ...}`` atomically (bytes depend only on the weights and meta).

    ``normalization`` (the input mean/std the model was trained with) is recorded as
    ``meta["normalization"] = {"mean": [r, g, b], "std": [r, g, b]}``; read it back with :func:`model_normalization`.
    """
    if not isinstance(normalization, Normalization):
        raise TypeError(f"{path}: normalization must be a Normalization, got {type(normalization).__name__}")
    buffer = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"meta": {**meta, "normalization": normalization.to_meta()}, "state_dict": state}, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def load_model_file(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_model`; a missing file is FileNotFoundError, an empty, truncated or
    foreign one a ValueError naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found (run the stage that writes it first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as error:  # empty, truncated or foreign bytes
        raise ValueError(f"{path}: not a readable model file ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or "meta" not in payload or "state_dict" not in payload:
        raise ValueError(f"{path}: not an auxseg model file (expected 'meta' and 'state_dict')")
    return payload


def model_normalization(meta: dict, path: str | Path) -> Normalization:
    """The input normalisation recorded in the meta of the model file ``path`` (ValueError naming it if absent)."""
    return Normalization.from_meta(meta, str(path))


def backbone_options(network: NetworkParams, *, with_weights: bool = True) -> dict:
    """Keywords of ``BackboneModel.from_backbone_name`` for ``network`` (output stride, weights, sha256, mean/std).

    ``with_weights=False`` skips the pretrained file: for rebuilding a saved model whose state dict replaces it.
    """
    options = {"output_stride": network.output_stride, "backbone_mean": network.mean, "backbone_std": network.std}
    if with_weights:
        options.update(backbone_weights=network.weights, backbone_sha256=network.sha256)
    return options


def build_classifier(network: NetworkParams, num_classes_fg: int, *, with_weights: bool = True):
    """The CAM classifier on ``network`` (its input normalisation is ``model.backbone.normalization``)."""
    from auxseg.models.classifier import CamClassifier

    return CamClassifier.from_backbone_name(
        network.backbone, num_classes_fg, **backbone_options(network, with_weights=with_weights)
    )


ARCHITECTURE_KEYS = ("branch_channels", "use_cross_task_affinity", "extra_dilated_conv", "refine_target")
"""The ``auxsegnet`` params that shape the network; they are stored in every AuxSegNet model file's meta."""
_ARCHITECTURE_DEFAULTS = {"extra_dilated_conv": True, "refine_target": "logits"}


def auxsegnet_architecture(params) -> dict:
    """{key: value} of :data:`ARCHITECTURE_KEYS` from an ``AuxSegNetParams`` or a model file's meta dict."""
    if isinstance(params, dict):
        return {key: params.get(key, _ARCHITECTURE_DEFAULTS.get(key)) for key in ARCHITECTURE_KEYS}
    return {key: getattr(params, key) for key in ARCHITECTURE_KEYS}


def build_auxsegnet(meta: dict, architecture: dict, embedding_dim: int | None = None):
    """An AuxSegNet on the backbone recorded in ``meta`` (the backbone comes from the previous round's model);
    ``embedding_dim`` adds the LR projection head ``seg_embed``."""
    from auxseg.models.auxsegnet import AuxSegNet

    return AuxSegNet.from_backbone_name(
        meta["backbone"],
        int(meta["num_classes_fg"]),
        output_stride=int(meta.get("output_stride", 8)),
        branch_channels=int(architecture["branch_channels"]),
        use_cross_task_affinity=bool(architecture["use_cross_task_affinity"]),
        extra_dilated_conv=bool(architecture["extra_dilated_conv"]),
        refine_target=str(architecture["refine_target"]),
        embedding_dim=embedding_dim,
    )


def load_auxsegnet(path: str | Path):
    """Rebuild the AuxSegNet saved at ``path`` (strict load) and return (model in eval mode, meta); its input
    normalisation is ``model_normalization(meta, path)``."""
    payload = load_model_file(path)
    meta = payload["meta"]
    if meta.get("kind") != "auxsegnet":
        raise ValueError(f"{path}: expected an AuxSegNet model, found kind {meta.get('kind')!r}")
    model = build_auxsegnet(meta, auxsegnet_architecture(meta), meta.get("embedding_dim"))
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), meta


@contextlib.contextmanager
def staged_directory(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``final``; on success it replaces ``final``, on failure it is removed.

    A stage that fails half-way therefore leaves neither a partial output folder nor a stale one mixed with new files.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def select_sample_ids(ids: tuple[str, ...] | list[str], count: int) -> list[str]:
    """A fixed, evenly spaced subset of ids (the same images in every run's sample pictures)."""
    if count <= 0 or not ids:
        return []
    positions = np.linspace(0, len(ids) - 1, num=min(count, len(ids))).round().astype(int)
    return [ids[i] for i in sorted(set(positions.tolist()))]


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGB image (H, W, 3) with the VOC-coloured label map (H, W) blended on top; ignore pixels in light grey."""
    from auxseg.io import colorize_label

    colours = colorize_label(label).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    background = label == 0
    blended[background] = image[background] * 0.6 + 0.4 * colours[background]
    return np.clip(blended.round(), 0, 255).astype(np.uint8)
