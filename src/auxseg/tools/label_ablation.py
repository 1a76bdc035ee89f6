"""Which part of a round's label update helps: A_CT propagation and the saliency refinement switched off in turn.

Usage (in a repository where the round's model, the saliency prior and the prepared data exist, e.g. after
``dvc repro update_labels@r1``)::

    auxseg ablate-labels --round r1 [--params params.yaml] [--images N] [--threads 2] [--json OUT]

For every train image that has a ground-truth mask (the first ``--images`` of them, default all) it runs the round's
model once, as step ``update_labels`` does (:func:`auxseg.steps.update_labels.forward_label_outputs`,
:func:`~auxseg.steps.update_labels.label_inputs_from_output`, :func:`~auxseg.steps.update_labels.saliency_labels`,
:func:`~auxseg.steps.update_labels.fuse_labels`; fp32, CPU), and scores four label maps against the masks as
``eval_round`` does (mIoU, precision, recall; 255 = not predicted):

========================  ======================================  =============================================
variant                   CAMs                                    saliency labels
========================  ======================================  =============================================
``published``             propagated once with A_CT (spec §4.3)   CRF of ½(refined saliency + prior)
``no_propagation``        the round's CAMs, not propagated        CRF of ½(refined saliency + prior)
``prior_saliency``        propagated once with A_CT               the saliency prior (as round 0 fuses it)
``neither``               the round's CAMs, not propagated        the saliency prior
========================  ======================================  =============================================

``published`` is the stage's own output, and the tool checks that it equals the written labels
``<pseudo_labels.out_root>/<round>/seg`` when they exist. It also measures how class-selective A_CT is: per image, on
the network's grid, the share of each row's mass on positions of the row's own ground-truth class (the mask
downsampled by nearest neighbour; rows and columns on 255 left out; rows renormalised), against the share a uniform
row would put there. An affinity no better than uniform only blurs the CAMs it propagates. A model trained with
``use_cross_task_affinity: false`` has no A_CT: its propagated and unpropagated variants coincide and the
selectivity is reported as null. Nothing is written except ``--json``.

Source of the variants: the ablations of AuxSegNet (Xu et al., ICCV 2021, Tables 1–2) switch the same parts off in
training; this tool switches them off in the label update of one trained round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

VARIANTS = {  # name → (propagate the CAMs with A_CT, use the refined saliency)
    "published": (True, True),
    "no_propagation": (False, True),
    "prior_saliency": (True, False),
    "neither": (False, False),
}


def affinity_selectivity(affinity, mask: np.ndarray, ignore_index: int = 255) -> tuple[float, float] | None:
    """(mean share of an A_CT row's mass on its own class, the same for a uniform row), or None without labelled rows.

    affinity: (N, N) non-negative, N = h·w of the network grid; mask: int (h, w) ground truth on that grid, with
    ``ignore_index`` positions left out as rows and as columns (rows renormalised over the kept columns).
    """
    import torch

    labels = torch.as_tensor(np.asarray(mask).reshape(-1), dtype=torch.int64)
    kept = labels != ignore_index
    if not bool(kept.any()):
        return None
    weights = affinity.float()[kept][:, kept].clamp_min(0)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    labels = labels[kept]
    same = (labels[:, None] == labels[None, :]).float()
    return float((weights * same).sum(dim=1).mean()), float(same.mean(dim=1).mean())


def run_ablation(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from auxseg.data.training import normalize_image
    from auxseg.io import load_gray_png, load_label_png
    from auxseg.metrics import SegmentationMetric
    from auxseg.params import load_stage_params
    from auxseg.steps.common import load_auxsegnet, model_normalization, open_split, scored_split
    from auxseg.steps.update_labels import (
        forward_label_outputs, fuse_labels, label_inputs_from_output, label_thresholds, saliency_labels,
    )

    torch.set_num_threads(args.threads)
    params = load_stage_params(["dataset", "saliency", "pseudo_labels", "rounds"], args.params, stage=None)
    rounds, pseudo_labels = params["rounds"], params["pseudo_labels"]
    if args.round not in rounds:
        from auxseg.schema import ParamError

        raise ParamError(f"--round {args.round!r} is not a round of {args.params} (rounds: {sorted(rounds)})")
    split, _ = scored_split(open_split(params["dataset"], "train"))
    if split is None:
        from auxseg.io import DataError

        raise DataError("no train image has a ground-truth mask; the variants cannot be scored")
    ids = list(split.ids)[: args.images] if args.images else list(split.ids)
    model_path = Path(pseudo_labels.models_root) / f"{args.round}.pt"
    model, meta = load_auxsegnet(model_path)
    normalization = model_normalization(meta, model_path)
    cam_threshold, saliency_threshold = label_thresholds(pseudo_labels, rounds[args.round])
    stage_dir = Path(pseudo_labels.out_root) / args.round / "seg"
    equal_to_stage: bool | None = True if stage_dir.is_dir() else None

    metrics = {name: SegmentationMetric(split.num_classes, class_names=split.class_names) for name in VARIANTS}
    own_class, uniform = [], []
    for image_id in ids:
        rgb, labels, gt = split.load_image(image_id), split.image_labels[image_id], split.load_mask(image_id)
        with torch.inference_mode():
            output = forward_label_outputs(model, normalize_image(rgb, normalization).unsqueeze(0),
                                           pseudo_labels.label_scale)
            size = rgb.shape[:2]
            cams = {True: label_inputs_from_output(output, labels, size)[0]}
            cams[False], refined = label_inputs_from_output(output._replace(affinity=None), labels, size)
        prior = load_gray_png(Path(params["saliency"].out_dir) / f"{image_id}.png")
        task = {"rgb": rgb, "labels": labels, "refined_saliency": refined, "prior": prior,
                "crf_iterations": pseudo_labels.saliency_crf_iterations,
                "cam_threshold": cam_threshold, "saliency_threshold": saliency_threshold}
        saliency = {True: saliency_labels(task), False: prior}
        for name, (propagated, refined_saliency) in VARIANTS.items():
            seg, _ = fuse_labels({**task, "cams": cams[propagated]}, saliency[refined_saliency])
            metrics[name].update(seg, gt)
            if name == "published" and equal_to_stage:
                stored = stage_dir / f"{image_id}.png"
                equal_to_stage = stored.is_file() and np.array_equal(load_label_png(stored), seg)
        if output.affinity is not None:
            grid = output.cam.shape[-2:]
            small = F.interpolate(torch.as_tensor(gt, dtype=torch.float32)[None, None], size=grid, mode="nearest")
            figures = affinity_selectivity(output.affinity[0], small[0, 0].to(torch.int64).numpy())
            if figures is not None:
                own_class.append(figures[0])
                uniform.append(figures[1])

    scores = {name: metric.compute() for name, metric in metrics.items()}
    return {
        "round": args.round,
        "images": len(ids),
        "thresholds": {"cam": cam_threshold, "saliency": saliency_threshold},
        "variants": {name: {key: scores[name][key] for key in ("miou", "precision", "recall", "labelled_fraction")}
                     for name in VARIANTS},
        "affinity_own_class_mass": float(np.mean(own_class)) if own_class else None,
        "affinity_uniform_mass": float(np.mean(uniform)) if uniform else None,
        "published_equals_stage_labels": equal_to_stage,
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"Label update of round {result['round']} on {result['images']} train images with masks, parts switched off "
        f"(CAM > {result['thresholds']['cam']}, saliency > {result['thresholds']['saliency']})",
        "",
        f"{'variant':<16}{'A_CT':>6}{'saliency':>10}{'mIoU':>9}{'precision':>11}{'recall':>9}{'labelled':>10}",
    ]
    for name, (propagated, refined) in VARIANTS.items():
        figures = result["variants"][name]
        lines.append(f"{name:<16}{'yes' if propagated else 'no':>6}{'refined' if refined else 'prior':>10}"
                     f"{figures['miou']:>9.4f}{figures['precision']:>11.4f}{figures['recall']:>9.4f}"
                     f"{figures['labelled_fraction']:>10.3f}")
    own, uniform = result["affinity_own_class_mass"], result["affinity_uniform_mass"]
    lines += [
        "",
        "A_CT: no cross-task affinity in this model" if own is None else
        f"A_CT row mass on the row's own class: {own:.3f} (a uniform row: {uniform:.3f}, difference {own - uniform:+.3f})",
        "published labels equal the stage's written labels: "
        + {True: "yes", False: "NO", None: "not checked (no written labels)"}[result["published_equals_stage_labels"]],
    ]
    return "\n".join(lines)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from auxseg.tools.bench_label_update import round_tool_parser

    return round_tool_parser(
        prog or "python -m auxseg.tools.label_ablation",
        "Score a round's label update with A_CT propagation and the saliency refinement switched off in turn.",
    )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (argparse exits with 2 on bad arguments)."""
    from auxseg.tools.bench_label_update import run_and_report

    return run_and_report(build_parser(prog).parse_args(argv), run_ablation, format_report)


if __name__ == "__main__":
    sys.exit(main())
