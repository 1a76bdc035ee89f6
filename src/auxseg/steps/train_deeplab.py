"""Step ``train_deeplab``: the final DeepLab (ASPP head on a registry backbone) on the final round's labels.

Loss: cross-entropy on the final round's pseudo labels, plus AALR's AA and LR terms when ``deeplab.aux_losses`` turns
them on (spec §6.1, §6.3): AA on the softmax of the stride-8 logits with the labels and the confidence maps
(``<out_root>/<final_round>/conf``) resized to that grid, LR on a projection head over the penultimate features.
With both weights 0 (the default) neither the head nor the confidence maps exist and the training is the plain one.
``deeplab.seed`` (null: the global seed) seeds this training only. The input normalisation is the backbone's
(``deeplab.network``: weights package / timm config, or its mean/std override) or, with ``init_from_classifier``, the
one recorded in the classifier file; it is recorded in the DeepLab file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from auxseg.config import (
    AuxLossParams, ClassifierParams, DatasetParams, DeepLabParams, PseudoLabelParams, RuntimeSection,
)
from auxseg.losses import ProgressAwareLoss
from auxseg.normalization import Normalization
from auxseg.steps.common import (
    CHECKPOINT_ROOT, backbone_options, fingerprint, load_model_file, model_normalization, open_split, save_model,
)


def build_deeplab(deeplab: DeepLabParams, num_classes: int, embedding_dim: int | None = None, *,
                  with_weights: bool = True):
    """The DeepLab of ``deeplab.network``; ``embedding_dim`` adds the LR projection head; ``with_weights=False`` skips
    the pretrained backbone file (a saved state dict replaces it)."""
    from auxseg.models.deeplab import DeepLab

    network = deeplab.network
    return DeepLab.from_backbone_name(
        network.backbone, num_classes, **backbone_options(network, with_weights=with_weights),
        head_channels=deeplab.head_channels, embedding_dim=embedding_dim,
    )


def load_deeplab(path: str | Path):
    """The DeepLab saved at ``path``, rebuilt from the file's meta alone (backbone, output stride, ASPP width,
    classes; no params needed), strict load, in eval mode; returns (model, meta)."""
    from auxseg.models.deeplab import DeepLab

    payload = load_model_file(path)
    meta = payload["meta"]
    if meta.get("kind") != "deeplab":
        raise ValueError(f"{path}: expected a DeepLab model, found kind {meta.get('kind')!r}")
    missing = [key for key in ("backbone", "num_classes", "output_stride", "head_channels") if key not in meta]
    if missing:
        raise ValueError(f"{path}: DeepLab model file lacks {', '.join(missing)} in its meta (re-run train_deeplab)")
    model_normalization(meta, path)
    model = DeepLab.from_backbone_name(
        meta["backbone"], int(meta["num_classes"]), output_stride=int(meta["output_stride"]),
        head_channels=int(meta["head_channels"]), embedding_dim=meta.get("embedding_dim"),
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), meta


def load_classifier_backbone(model, classifier_path: str | Path, deeplab: DeepLabParams) -> Normalization:
    """Copy the backbone of the image-level classifier file into ``model.backbone`` (strict: every key must match);
    returns the classifier's recorded input normalisation, which the DeepLab then trains with.

    A ``deeplab.network.mean`` / ``std`` that differs from it is a ValueError (the backbone was trained with the
    classifier's)."""
    payload = load_model_file(classifier_path)
    meta = payload["meta"]
    if meta.get("kind") != "classifier":
        raise ValueError(f"{classifier_path}: expected a classifier model file, got kind {meta.get('kind')!r}")
    normalization = model_normalization(meta, classifier_path)
    for key in ("mean", "std"):
        wanted = getattr(deeplab.network, key)
        if wanted is not None and tuple(wanted) != getattr(normalization, key):
            raise ValueError(
                f"deeplab.network.{key}: {list(wanted)} differs from the {key} {list(getattr(normalization, key))} "
                f"recorded in {classifier_path}, whose backbone deeplab.init_from_classifier loads; set it to null"
            )
    for key, wanted in (("backbone", deeplab.network.backbone), ("output_stride", deeplab.network.output_stride)):
        if meta.get(key) is not None and meta[key] != wanted:
            raise ValueError(
                f"deeplab.init_from_classifier: {classifier_path} has {key} {meta[key]!r}, "
                f"deeplab.network.{key} is {wanted!r}"
            )
    state = {k[len("backbone."):]: v for k, v in payload["state_dict"].items() if k.startswith("backbone.")}
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"deeplab.init_from_classifier: {classifier_path} does not fit the backbone: {error}") from error
    return normalization


def _segmentation_loss(model, batch, device):
    from auxseg.losses import segmentation_ce, upsample_logits

    target = batch["seg"].to(device)
    logits = upsample_logits(model(batch["image"].to(device)), tuple(target.shape[-2:]))
    return {"loss": segmentation_ce(logits, target)}


class DeepLabAuxLoss(ProgressAwareLoss):
    """CE + λ_AA · AA + λ_LR · LR (spec §6.1, §6.3); terms ``loss``, ``seg`` (the CE), ``aa``, ``lr_loss`` as switched on,
    and ``lr_switched`` (share of labelled pixels the LR correction changed) with ``lr_variant: correction``."""

    def __init__(self, aux: AuxLossParams) -> None:
        super().__init__()
        self.aux = aux

    def __call__(self, model, batch, device):
        from auxseg.losses import (
            aalr_terms, aalr_weighted, lr_corrected_targets, segmentation_ce, to_logit_grid, upsample_logits,
        )

        aux = self.aux
        target = batch["seg"].to(device)
        image_labels = batch["image_labels"].to(device)
        valid = batch["valid"].to(device)
        if aux.lr_on:
            logits, embeddings = model(batch["image"].to(device), return_embeddings=True)
        else:
            logits, embeddings = model(batch["image"].to(device)), None
        lr_active = self.lr_active(aux)
        ce_target, extra = lr_corrected_targets(aux, embeddings, target, image_labels, active=lr_active, valid=valid)
        seg = segmentation_ce(upsample_logits(logits, tuple(target.shape[-2:])), ce_target)
        confidence = batch.get("confidence")
        grid_labels, grid_confidence = to_logit_grid(
            target, tuple(logits.shape[-2:]), valid=valid,
            confidence=confidence.to(device) if confidence is not None else None,
        )
        terms = aalr_terms(
            aux, probs=torch.softmax(logits.float(), dim=1), grid_labels=grid_labels, image_labels=image_labels,
            grid_confidence=grid_confidence, embeddings=embeddings, lr_active=lr_active,
        )
        return {"loss": seg + aalr_weighted(aux, terms), "seg": seg, **terms, **extra}


def make_loss(aux: AuxLossParams):
    """The loss callable of the DeepLab training: the plain CE when every AALR weight is 0, else :class:`DeepLabAuxLoss`."""
    return DeepLabAuxLoss(aux) if aux.enabled else _segmentation_loss


def run(seed: int, final_round: str, dataset: DatasetParams, classifier: ClassifierParams, deeplab: DeepLabParams,
        pseudo_labels: PseudoLabelParams, runtime: RuntimeSection) -> None:
    from auxseg.data.training import TrainingSet
    from auxseg.engine import distributed_context, is_main_process, train

    seed = deeplab.training_seed(seed)
    aux = deeplab.aux_losses
    labels = Path(pseudo_labels.out_root) / final_round
    with distributed_context(runtime):
        split = open_split(dataset, "train")
        torch.manual_seed(seed)
        model = build_deeplab(deeplab, split.num_classes, aux.embedding_dim)
        init_digest = None
        normalization = model.backbone.normalization
        if deeplab.init_from_classifier:
            normalization = load_classifier_backbone(model, classifier.model_out, deeplab)
            init_digest = hashlib.sha256(Path(classifier.model_out).read_bytes()).hexdigest()
        train_set = TrainingSet(
            split, deeplab.augment, seed=seed, seg_label_dir=labels / "seg",
            confidence_dir=labels / "conf" if aux.reads_confidence else None, normalization=normalization,
        )
        model = train(
            model, train_set, make_loss(aux),
            param_groups=model.param_groups(deeplab.optim.head_lr_mult), optim=deeplab.optim, runtime=runtime,
            seed=seed, checkpoint_dir=CHECKPOINT_ROOT / "deeplab",
            fingerprint=fingerprint(seed, final_round, dataset, deeplab, init_digest, len(train_set)),
            live_dir=deeplab.live_dir, desc="deeplab",
        )
        if is_main_process():
            extra = {"embedding_dim": aux.embedding_dim} if aux.embedding_dim is not None else {}
            save_model(deeplab.model_out, model, normalization=normalization, kind="deeplab",
                       backbone=deeplab.network.backbone, output_stride=deeplab.network.output_stride,
                       head_channels=deeplab.head_channels, num_classes=split.num_classes,
                       class_names=list(split.class_names), trained_on=final_round, **extra)
            print(f"saved DeepLab (trained on {final_round} labels) -> {deeplab.model_out}")
