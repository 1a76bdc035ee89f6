"""Step ``train_round``: train AuxSegNet for one round on the previous round's pseudo labels.

Round rK starts from the previous round's weights (round r1 from the classifier, whose backbone and ``fc8`` load
into AuxSegNet) and trains on ``<out_root>/<prev>/seg`` and ``<out_root>/<prev>/sal`` with the five losses of
spec §3. Per-round ``loss_weights`` and ``epochs`` override the ``auxsegnet`` section.

``auxsegnet.aux_losses`` adds AALR's AA and LR terms (spec §6; off with weights 0, the default). Both act on the
*refined* segmentation prediction, the output the label update and ``evaluate`` use, at the logit grid (stride 8):
AA on softmax(``seg_refined``) with the previous round's labels and confidence maps (``<prev>/conf``) resized to the
grid; LR on the ``seg_embed`` projection head over the segmentation branch's penultimate features. With
``lr_variant: correction`` the corrected labels also replace the targets of both segmentation CE terms. A round with
LR keeps the previous round's ``seg_embed`` weights when it has the same shape and starts a new head otherwise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from auxseg.config import AuxLossParams, AuxSegNetParams, DatasetParams, PseudoLabelParams, RoundParams, RuntimeSection
from auxseg.losses import ProgressAwareLoss
from auxseg.steps.common import (
    CHECKPOINT_ROOT,
    auxsegnet_architecture,
    build_auxsegnet,
    fingerprint,
    load_model_file,
    model_normalization,
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


class RoundAuxLoss(ProgressAwareLoss):
    """The five AuxSegNet terms + λ_AA · AA + λ_LR · LR on the refined segmentation logits (terms ``aa``, ``lr_loss`` as
    switched on, ``lr_switched`` with the correction variant)."""

    def __init__(self, weights, aux: AuxLossParams) -> None:
        super().__init__()
        self.weights, self.aux = weights, aux

    def __call__(self, model, batch, device):
        from auxseg.losses import (
            aalr_terms, aalr_weighted, auxsegnet_losses, lr_corrected_targets, to_logit_grid,
        )

        aux = self.aux
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        output = model(batch["image"])
        lr_active = self.lr_active(aux)
        target = batch["seg"]
        corrected, extra = lr_corrected_targets(
            aux, output.embeddings, target, batch["image_labels"], active=lr_active, valid=batch["valid"]
        )
        terms = auxsegnet_losses(output, {**batch, "seg": corrected}, self.weights)
        logits = output.seg_refined
        grid_labels, grid_confidence = to_logit_grid(
            target, tuple(logits.shape[-2:]), valid=batch["valid"], confidence=batch.get("confidence")
        )
        aalr = aalr_terms(
            aux, probs=torch.softmax(logits.float(), dim=1), grid_labels=grid_labels,
            image_labels=batch["image_labels"], grid_confidence=grid_confidence, embeddings=output.embeddings,
            lr_active=lr_active,
        )
        terms["loss"] = terms["loss"] + aalr_weighted(aux, aalr)
        return {**terms, **aalr, **extra}


def make_loss(weights, aux: AuxLossParams):
    """The round's loss callable: the plain five terms when every AALR weight is 0, else :class:`RoundAuxLoss`."""
    return RoundAuxLoss(weights, aux) if aux.enabled else _make_loss(weights)


def initialise(prev_model_path: Path, auxsegnet: AuxSegNetParams):
    """AuxSegNet initialised from the previous round's model file (a classifier for round 1); returns (model, the
    previous file's meta), whose ``normalization`` the round trains with and records.

    With ``auxsegnet.aux_losses.lr_weight > 0`` the model has the LR head ``seg_embed``: it keeps the previous
    round's weights when they exist with the same shapes, else its fresh initialisation; a previous head this round
    does not use is dropped.
    """
    payload = load_model_file(prev_model_path)
    meta = payload["meta"]
    architecture = auxsegnet_architecture(auxsegnet)
    model = build_auxsegnet(meta, architecture, auxsegnet.aux_losses.embedding_dim)
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
        model.load_state_dict(_with_own_embedding_head(model, payload["state_dict"]), strict=True)
    else:
        raise ValueError(f"{prev_model_path}: cannot initialise AuxSegNet from a {meta.get('kind')!r} model")
    return model, meta


def _with_own_embedding_head(model, state: dict) -> dict:
    """``state`` with its ``seg_embed.*`` entries replaced by the model's own unless they fit (same keys and shapes)."""
    prefix = "seg_embed."
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    theirs = {k: v for k, v in state.items() if k.startswith(prefix)}
    keep = own.keys() == theirs.keys() and all(own[k].shape == theirs[k].shape for k in own)
    rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return {**rest, **(theirs if keep else own)}


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
        prev_model = Path(pseudo_labels.models_root) / f"{round_params.prev}.pt"
        model, meta = initialise(prev_model, auxsegnet)
        normalization = model_normalization(meta, prev_model)
        aux = auxsegnet.aux_losses
        train_set = TrainingSet(
            split, auxsegnet.augment, seed=seed, seg_label_dir=prev_labels / "seg", saliency_dir=prev_labels / "sal",
            confidence_dir=prev_labels / "conf" if aux.reads_confidence else None, normalization=normalization,
        )
        model = train(
            model,
            train_set,
            make_loss(weights, aux),
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
                normalization=normalization,
                kind="auxsegnet",
                backbone=meta["backbone"],
                output_stride=int(meta.get("output_stride", 8)),
                num_classes_fg=int(meta["num_classes_fg"]),
                class_names=list(split.class_names),
                round=round_name,
                **auxsegnet_architecture(auxsegnet),
                **({"embedding_dim": aux.embedding_dim} if aux.embedding_dim is not None else {}),
            )
            print(f"round {round_name}: saved AuxSegNet -> {out}")
