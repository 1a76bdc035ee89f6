"""Step ``saliency_prior``: the saliency map of every train image, from the image or from external PNG maps.

``method: training_free`` computes MB+ saliency (Zhang et al., ICCV 2015, see :mod:`auxseg.saliency`), so the
embedded default needs no saliency network. ``method: external`` reads DSS/PoolNet-style 8-bit grey PNGs
``<external_dir>/<id>.png``; a missing map or a size mismatch stops the stage naming the file. Maps are written as
8-bit grey PNGs ``<out_dir>/<id>.png`` (values /255 in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path

from auxseg.config import DatasetParams, SaliencyParams
from auxseg.io import image_size, load_image_rgb, save_gray_png
from auxseg.parallel import process_map
from auxseg.steps.common import open_split, staged_directory


def _compute(task: tuple) -> None:
    from auxseg.saliency import load_external_saliency, training_free_saliency

    image_path, image_id, method, external_dir, out_path = task
    if method == "external":
        saliency = load_external_saliency(external_dir, image_id, image_size(image_path))
    else:
        saliency = training_free_saliency(load_image_rgb(image_path))
    save_gray_png(out_path, saliency)


def run(dataset: DatasetParams, saliency: SaliencyParams) -> None:
    """Write ``<saliency.out_dir>/<id>.png`` for every train image."""
    split = open_split(dataset, "train")
    with staged_directory(saliency.out_dir) as staging:
        tasks = [(split.image_path(i), i, saliency.method, saliency.external_dir, staging / f"{i}.png") for i in split.ids]
        process_map(_compute, tasks, workers=saliency.workers, chunksize=8, desc=f"saliency ({saliency.method})")
    print(f"wrote {len(split.ids)} saliency maps ({saliency.method}) -> {Path(saliency.out_dir)}")
