"""Step ``prepare_data``: validate the dataset once and write the manifest that later stages read.

The manifest ``<out_dir>/<split>.json`` holds the dataset name and root, the class names, and per image its id,
size (H, W) and image-level labels (foreground class indices 1..K). Nothing is written unless every image and
mask of both splits passes validation.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from auxseg.config import DatasetParams, PrepareDataParams
from auxseg.io import image_size, save_json


def run(dataset: DatasetParams, prepare_data: PrepareDataParams) -> dict:
    """Validate the train and val splits of ``dataset``; write ``train.json`` and ``val.json`` manifests."""
    from auxseg.data.datasets import load_split, validate_split

    manifests = {}
    for split_name in (dataset.train_split, dataset.val_split):
        split = load_split(dataset, split_name, validate=False)
        validate_split(split, check_masks=split.mask_dir is not None, workers=prepare_data.workers)
        images = []
        for image_id in split.ids:
            height, width = image_size(split.image_path(image_id))
            labels = [int(c) + 1 for c in split.image_labels[image_id].nonzero()[0]]
            images.append({"id": image_id, "height": height, "width": width, "labels": labels})
        manifests[split_name] = {
            "dataset": dataset.name,
            "root": str(dataset.root),
            "split": split_name,
            "class_names": list(split.class_names),
            "num_images": len(images),
            "images": images,
        }
        print(f"{dataset.name}/{split_name}: {len(images)} images, {split.num_classes} classes - valid")

    out_dir = Path(prepare_data.out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for role, split_name in (("train", dataset.train_split), ("val", dataset.val_split)):
            save_json(staging / f"{role}.json", manifests[split_name])
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifests
