"""Step ``eval_saliency``: MAE and max-F (β² = 0.3) of the saliency prior on the train split.

Scored against two references: the class foreground of the ground-truth masks (what pseudo labels need; 255
ignored) and, when the dataset has it (the synthetic set), the mask of all salient objects (``SalientMask/``),
which includes the class-less distractors. Only images with a ground-truth mask are scored (``images_scored`` of
``images_total``; ``"ground_truth": "none"`` and no scores when none has one).
"""

from __future__ import annotations

from pathlib import Path

from auxseg import IGNORE_INDEX
from auxseg.config import DatasetParams, SaliencyParams
from auxseg.io import load_gray_png, load_label_png, save_json
from auxseg.metrics import SaliencyMetric
from auxseg.steps.common import no_ground_truth_note, open_split, scored_split


def saliency_scores(split, saliency_dir: str | Path) -> dict:
    """Scores of the grey maps ``saliency_dir/<id>.png`` over ``split`` (see module docstring)."""
    foreground = SaliencyMetric()
    salient = SaliencyMetric()
    salient_dir = split.root / "SalientMask"
    for image_id in split.ids:
        saliency = load_gray_png(Path(saliency_dir) / f"{image_id}.png")
        if split.mask_dir is not None:
            mask = split.load_mask(image_id)
            foreground.update(saliency, (mask > 0) & (mask != IGNORE_INDEX), ignore=mask == IGNORE_INDEX)
        if salient_dir.is_dir():
            salient.update(saliency, load_label_png(salient_dir / f"{image_id}.png") > 127)
    result = {"vs_class_foreground": foreground.compute()}
    if salient_dir.is_dir():
        result["vs_salient_objects"] = salient.compute()
    return result


def run(dataset: DatasetParams, saliency: SaliencyParams) -> dict:
    split = open_split(dataset, "train")
    scored, coverage = scored_split(split)
    scores = {"method": saliency.method, "num_images": len(split.ids), **coverage}
    if scored is None:
        save_json(saliency.metrics_out, scores)
        print(no_ground_truth_note(f"saliency prior ({saliency.method})", split))
        return scores
    scores.update(saliency_scores(scored, saliency.out_dir))
    save_json(saliency.metrics_out, scores)
    print(f"saliency prior ({saliency.method}): {scores}")
    return scores
