"""Step ``train_single_stage``: the single-stage model (1-Stage of Araslanov & Roth, spec §1) with AALR's losses.

One network on a registry backbone, trained end to end from image-level labels only (no rounds, no saliency):

    L = L_cls + seg_weight · L_seg + λ_AA · L_AA + λ_LR · L_LR

- L_cls: multilabel soft margin on the nGWP + focal-penalty class scores of the masks (spec §1.2);
- L_seg (after ``seg_warmup_epochs`` classification-only epochs): class-balanced CE of the stride-4 logits against
  online pseudo labels: PAMR of the detached masks with the image (spec §1.3 step 1), absent classes zeroed and cut
  at τ_c = max(min_threshold, r_c · max m_c) at crop resolution (§1.3 steps 2-3); crop padding is ignored;
- L_AA (``aux_losses.aa_weight`` > 0): AA on the masks at the stride-4 grid (d = ``aa_dilation`` cells, so d = 1 is
  AALR's 4 px at full resolution) against those pseudo labels at the grid, confidence = per-pixel max over the
  image's classes (and background) of the PAMR-refined masks (``aa_confidence: labels``) or 1 (``constant``);
- L_LR (``aux_losses.lr_weight`` > 0, RECONSTRUCTED, spec §3): the prototype loss on a projection head over the gated
  decoder features, after ``lr_warmup`` of the iterations; ``lr_variant: correction`` also corrects the CE targets.
AA and LR are segmentation-side terms: like L_seg they are 0 during the classification-only warm-up.
"""

from __future__ import annotations

import torch

from auxseg.config import DatasetParams, PamrParams, PseudoCutParams, RuntimeSection, SingleStageParams
from auxseg.losses import ProgressAwareLoss
from auxseg.params import to_dict
from auxseg.steps.common import (
    CHECKPOINT_ROOT, fingerprint, load_model_file, model_normalization, open_split, save_model,
)


def build_single_stage(backbone: str, num_classes_fg: int, *, output_stride: int, widths: dict,
                       embedding_dim: int | None = None, weights: str | None = None, sha256: str | None = None,
                       mean=None, std=None):
    """A :class:`~auxseg.models.single_stage.SingleStageNet`; ``widths`` = {aspp, skip, decoder, head}; ``mean`` /
    ``std`` override the backbone's input normalisation."""
    from auxseg.models.single_stage import SingleStageNet

    return SingleStageNet.from_backbone_name(
        backbone, num_classes_fg, output_stride=output_stride, backbone_weights=weights, backbone_sha256=sha256,
        backbone_mean=mean, backbone_std=std,
        aspp_channels=int(widths["aspp"]), skip_channels=int(widths["skip"]),
        decoder_channels=int(widths["decoder"]), head_channels=int(widths["head"]),
        embedding_dim=embedding_dim, embedding_hidden=int(widths["decoder"]),
    )


def load_single_stage(path):
    """The single-stage model saved by this step (strict load), in eval mode; returns (model, meta) (input
    normalisation: ``model_normalization(meta, path)``)."""
    payload = load_model_file(path)
    meta = payload["meta"]
    if meta.get("kind") != "single_stage":
        raise ValueError(f"{path}: expected a single-stage model, found kind {meta.get('kind')!r}")
    model_normalization(meta, path)
    model = build_single_stage(
        meta["backbone"], int(meta["num_classes_fg"]), output_stride=int(meta["output_stride"]),
        widths=meta["widths"], embedding_dim=meta.get("embedding_dim"),
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), meta


def refine_and_cut(image: torch.Tensor, masks: torch.Tensor, image_labels: torch.Tensor, pamr_params: PamrParams,
                   cut: PseudoCutParams, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Online pseudo labels (spec §1.3), used in training and for the written train labels.

    image (B, 3, H, W) normalised; masks (B, K+1, h, w) class probabilities; image_labels (B, K). Returns
    (refined masks (B, K+1, h, w) — PAMR, no gradient; pseudo labels (B, *size) long with 255 — absent classes zeroed,
    cut per image and class; confidence (B, h, w) — per-pixel max of the refined masks over background + the image's
    classes).
    """
    from auxseg.losses import present_classes
    from auxseg.models.single_stage import pamr, pseudo_labels_from_masks

    refined = pamr(image, masks, dilations=tuple(pamr_params.dilations), iterations=pamr_params.iterations)
    labels = pseudo_labels_from_masks(
        refined, image_labels, r_bg=cut.r_bg, r_fg=cut.r_fg, min_threshold=cut.min_threshold, size=size
    )
    present = present_classes(image_labels.to(refined.device))
    confidence = (refined * present[:, :, None, None]).amax(dim=1).clamp(0.0, 1.0)
    return refined, labels, confidence


class SingleStageLoss(ProgressAwareLoss):
    """Terms ``loss``, ``cls``, ``seg`` (with seg_weight > 0), ``aa``, ``lr_loss`` (when switched on) and ``lr_switched``
    (correction variant); every term exists from the first iteration (0 during its warm-up)."""

    def __init__(self, params: SingleStageParams) -> None:
        super().__init__()
        self.params = params

    def seg_active(self) -> bool:
        return self.epoch >= self.params.seg_warmup_epochs

    def __call__(self, model, batch, device):
        from auxseg.losses import (
            aalr_terms, aalr_weighted, classification_loss, lr_corrected_targets, to_logit_grid,
        )
        from auxseg.models.single_stage import class_balanced_ce

        params, aux = self.params, self.params.aux_losses
        image = batch["image"].to(device)
        image_labels = batch["image_labels"].to(device)
        valid = batch["valid"].to(device)
        out = model(image)
        terms = {"cls": classification_loss(out.cls_logits, image_labels)}
        total = terms["cls"]
        segment = params.seg_weight > 0 and self.seg_active()
        aalr: dict = {}
        extra: dict = {}
        if segment:
            _, pseudo, confidence = refine_and_cut(
                image, out.masks, image_labels, params.pamr, params.pseudo_labels, size=tuple(image.shape[-2:])
            )
            pseudo = torch.where(valid, pseudo, torch.full_like(pseudo, 255))
            target, extra = lr_corrected_targets(
                aux, out.embeddings, pseudo, image_labels, active=self.lr_active(aux), valid=valid
            )
            terms["seg"] = class_balanced_ce(out.seg_logits, target, image_labels)
            grid_labels, _ = to_logit_grid(pseudo, tuple(out.masks.shape[-2:]))
            aalr = aalr_terms(
                aux, probs=out.masks.float(), grid_labels=grid_labels, image_labels=image_labels,
                grid_confidence=confidence, embeddings=out.embeddings, lr_active=self.lr_active(aux),
            )
        else:
            if params.seg_weight > 0:
                terms["seg"] = out.seg_logits.float().sum() * 0.0
            if aux.aa_on:
                aalr["aa"] = out.masks.float().sum() * 0.0
            if aux.lr_on:
                aalr["lr_loss"] = out.embeddings.float().sum() * 0.0
                if aux.lr_variant == "correction":
                    extra["lr_switched"] = torch.zeros((), device=image.device)
        if "seg" in terms:
            total = total + params.seg_weight * terms["seg"]
        total = total + aalr_weighted(aux, aalr)
        return {"loss": total, **terms, **aalr, **extra}


def model_meta(params: SingleStageParams, class_names) -> dict:
    """What :func:`load_single_stage` needs to rebuild the network and ``auxseg predict`` to name its classes
    (``class_names``: K+1, background first; ``embedding_dim`` only with the LR head)."""
    meta = {
        "kind": "single_stage", "backbone": params.network.backbone, "output_stride": params.network.output_stride,
        "num_classes_fg": len(class_names) - 1, "class_names": list(class_names), "widths": to_dict(params.widths),
    }
    if params.aux_losses.embedding_dim is not None:
        meta["embedding_dim"] = params.aux_losses.embedding_dim
    return meta


def run(seed: int, dataset: DatasetParams, single_stage: SingleStageParams, runtime: RuntimeSection) -> None:
    from auxseg.data.training import TrainingSet
    from auxseg.engine import distributed_context, is_main_process, train

    params = single_stage
    seed = params.training_seed(seed)
    with distributed_context(runtime):
        split = open_split(dataset, "train")
        num_classes_fg = split.num_classes - 1
        torch.manual_seed(seed)
        network = params.network
        model = build_single_stage(
            network.backbone, num_classes_fg, output_stride=network.output_stride, widths=to_dict(params.widths),
            embedding_dim=params.aux_losses.embedding_dim, weights=network.weights, sha256=network.sha256,
            mean=network.mean, std=network.std,
        )
        normalization = model.backbone.normalization
        train_set = TrainingSet(split, params.augment, seed=seed, normalization=normalization)
        training = {key: to_dict(getattr(params, key)) for key in (
            "network", "widths", "augment", "optim", "seg_weight", "seg_warmup_epochs", "pamr", "pseudo_labels",
            "aux_losses")}
        model = train(
            model, train_set, SingleStageLoss(params),
            param_groups=model.param_groups(params.optim.head_lr_mult), optim=params.optim, runtime=runtime,
            seed=seed, checkpoint_dir=CHECKPOINT_ROOT / "single_stage",
            fingerprint=fingerprint(seed, dataset, training, len(train_set)),
            live_dir=params.live_dir, desc="single-stage",
        )
        if is_main_process():
            save_model(params.model_out, model, normalization=normalization, **model_meta(params, split.class_names))
            print(f"saved the single-stage model -> {params.model_out}")


__all__ = ["SingleStageLoss", "build_single_stage", "load_single_stage", "refine_and_cut", "run"]
