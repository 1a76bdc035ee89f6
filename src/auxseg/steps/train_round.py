"""Step ``train_round``: train AuxSegNet for one round on the previous round's pseudo labels.

Round rK starts from the previous round's weights (round r1 from the classifier, whose backbone and ``fc8`` load
into AuxSegNet) and trains on ``<out_root>/<prev>/seg`` and ``<out_root>/<prev>/sal`` with the five losses of
spec §3. Per-round ``loss_weights`` and ``epochs`` override the ``auxsegnet`` section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from auxseg.config import AuxSegNetParams, DatasetParams, PseudoLabelParams, RoundParams, RuntimeSection
from auxseg.steps.common import (
    CHECKPOINT_ROOT,
    auxsegnet_architecture,
    build_auxsegnet,
    fingerprint,
    load_model_file,
    open_split,
    save_model,
)


def _make_loss(weights):
    from auxseg.losses import auxsegnet_losses

    loss_weights = weights

    def compute(model, batch, device):
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        return auxsegnet_losses(model(batch["image"]), batch, loss_weights)

    return compute


def initialise(prev_model_path: Path, auxsegnet: AuxSegNetParams):
    """AuxSegNet initialised from the previous round's model file (a classifier for round 1)."""
    payload = load_model_file(prev_model_path)
    meta = payload["meta"]
    architecture = auxsegnet_architecture(auxsegnet)
    model = build_auxsegnet(meta, architecture)
    if meta.get("kind") == "classifier":
        model.load_classifier_state(payload["state_dict"])
    elif meta.get("kind") == "auxsegnet":
        previous = auxsegnet_architecture(meta)
        for key in ("branch_channels", "extra_dilated_conv", "use_cross_task_affinity"):
            if previous[key] != architecture[key]:
                raise ValueError(
                    f"auxsegnet.{key}: {architecture[key]} differs from the previous round's model "
                    f"{prev_model_path} ({previous[key]})"
                )
        model.load_state_dict(payload["state_dict"], strict=True)
    else:
        raise ValueError(f"{prev_model_path}: cannot initialise AuxSegNet from a {meta.get('kind')!r} model")
    return model, meta


def run(seed: int, dataset: DatasetParams, auxsegnet: AuxSegNetParams, pseudo_labels: PseudoLabelParams,
        runtime: RuntimeSection, round_name: str, round_params: RoundParams) -> None:
    from auxseg.data.training import TrainingSet
    from auxseg.engine import distributed_context, is_main_process, train

    prev_labels = Path(pseudo_labels.out_root) / round_params.prev
    optim = auxsegnet.optim
    if round_params.epochs is not None:
        optim = dataclasses.replace(optim, epochs=round_params.epochs)
    weights = round_params.loss_weights or auxsegnet.loss_weights
    with distributed_context(runtime):
        split = open_split(dataset, "train")
        torch.manual_seed(seed)
        model, meta = initialise(Path(pseudo_labels.models_root) / f"{round_params.prev}.pt", auxsegnet)
        train_set = TrainingSet(
            split, auxsegnet.augment, seed=seed, seg_label_dir=prev_labels / "seg", saliency_dir=prev_labels / "sal"
        )
        model = train(
            model,
            train_set,
            _make_loss(weights),
            param_groups=model.param_groups(optim.head_lr_mult),
            optim=optim,
            runtime=runtime,
            seed=seed,
            checkpoint_dir=CHECKPOINT_ROOT / f"round_{round_name}",
            fingerprint=fingerprint(seed, dataset, auxsegnet, round_params, len(train_set)),
            live_dir=Path(auxsegnet.live_root) / round_name,
            desc=f"auxsegnet {round_name}",
        )
        if is_main_process():
            out = Path(pseudo_labels.models_root) / f"{round_name}.pt"
            save_model(
                out,
                model,
                kind="auxsegnet",
                backbone=meta["backbone"],
                output_stride=int(meta.get("output_stride", 8)),
                num_classes_fg=int(meta["num_classes_fg"]),
                round=round_name,
                **auxsegnet_architecture(auxsegnet),
            )
            print(f"round {round_name}: saved AuxSegNet -> {out}")
