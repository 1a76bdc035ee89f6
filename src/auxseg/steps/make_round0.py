"""Step ``make_round0``: the initial pseudo labels, CAMs fused with the saliency prior (spec §4.1–4.2).

Writes ``<out_root>/r0/seg/<id>.png`` (class where CAM > 0.2 and saliency > 0.06, background where neither, 255
where exactly one holds), ``sal/<id>.png`` (the saliency prior, the initial saliency labels) and ``conf/<id>.png``
(per-pixel max of the normalised CAMs of the image's classes, for the adaptive affinity loss), and the round-0
model ``<models_root>/r0.pt``, a copy of the classifier that initialises round 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from auxseg.config import INITIAL_ROUND, CamParams, ClassifierParams, DatasetParams, PseudoLabelParams, RuntimeSection, SaliencyParams
from auxseg.io import atomic_write, load_gray_png, save_gray_png, save_label_png
from auxseg.parallel import process_map
from auxseg.steps.common import open_split, staged_directory


def _fuse(task: tuple) -> None:
    from auxseg.cam import load_cams
    from auxseg.pseudo_labels import fuse_cam_saliency, label_confidence

    cam_path, saliency_path, out_dir, image_id, cam_threshold, saliency_threshold = task
    cams, labels = load_cams(cam_path)
    saliency = load_gray_png(saliency_path)
    seg = fuse_cam_saliency(cams, saliency, labels, cam_threshold=cam_threshold, saliency_threshold=saliency_threshold)
    save_label_png(out_dir / "seg" / f"{image_id}.png", seg)
    save_gray_png(out_dir / "sal" / f"{image_id}.png", saliency)
    save_gray_png(out_dir / "conf" / f"{image_id}.png", label_confidence(cams, labels))


def run(dataset: DatasetParams, saliency: SaliencyParams, classifier: ClassifierParams, cams: CamParams,
        pseudo_labels: PseudoLabelParams, runtime: RuntimeSection) -> None:
    split = open_split(dataset, "train")
    with staged_directory(Path(pseudo_labels.out_root) / INITIAL_ROUND) as staging:
        tasks = [
            (Path(cams.out_dir) / f"{i}.npz", Path(saliency.out_dir) / f"{i}.png", staging, i,
             pseudo_labels.cam_threshold, pseudo_labels.saliency_threshold)
            for i in split.ids
        ]
        process_map(_fuse, tasks, workers=runtime.crf_workers, chunksize=8, desc="round r0 labels")
    model_out = Path(pseudo_labels.models_root) / f"{INITIAL_ROUND}.pt"
    with open(classifier.model_out, "rb") as source, atomic_write(model_out) as target:
        shutil.copyfileobj(source, target)
    print(f"round r0: {len(split.ids)} label maps -> {pseudo_labels.out_root}/{INITIAL_ROUND}, model -> {model_out}")
