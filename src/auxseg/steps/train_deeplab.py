"""Step ``train_deeplab``: the final DeepLab (ASPP head on a registry backbone) on the final round's labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from auxseg.config import ClassifierParams, DatasetParams, DeepLabParams, PseudoLabelParams, RuntimeSection
from auxseg.steps.common import CHECKPOINT_ROOT, fingerprint, load_model_file, open_split, save_model


def build_deeplab(deeplab: DeepLabParams, num_classes: int):
    from auxseg.models.deeplab import DeepLab

    network = deeplab.network
    return DeepLab.from_backbone_name(
        network.backbone, num_classes, output_stride=network.output_stride,
        backbone_weights=network.weights, backbone_sha256=network.sha256, head_channels=deeplab.head_channels,
    )


def load_classifier_backbone(model, classifier_path: str | Path, deeplab: DeepLabParams) -> None:
    """Copy the backbone of the image-level classifier file into ``model.backbone`` (strict: every key must match)."""
    payload = load_model_file(classifier_path)
    meta = payload["meta"]
    if meta.get("kind") != "classifier":
        raise ValueError(f"{classifier_path}: expected a classifier model file, got kind {meta.get('kind')!r}")
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


def _segmentation_loss(model, batch, device):
    from auxseg.losses import segmentation_ce, upsample_logits

    target = batch["seg"].to(device)
    logits = upsample_logits(model(batch["image"].to(device)), tuple(target.shape[-2:]))
    return {"loss": segmentation_ce(logits, target)}


def run(seed: int, final_round: str, dataset: DatasetParams, classifier: ClassifierParams, deeplab: DeepLabParams,
        pseudo_labels: PseudoLabelParams, runtime: RuntimeSection) -> None:
    from auxseg.data.training import TrainingSet
    from auxseg.engine import distributed_context, is_main_process, train

    labels = Path(pseudo_labels.out_root) / final_round / "seg"
    with distributed_context(runtime):
        split = open_split(dataset, "train")
        torch.manual_seed(seed)
        model = build_deeplab(deeplab, split.num_classes)
        init_digest = None
        if deeplab.init_from_classifier:
            load_classifier_backbone(model, classifier.model_out, deeplab)
            init_digest = hashlib.sha256(Path(classifier.model_out).read_bytes()).hexdigest()
        train_set = TrainingSet(split, deeplab.augment, seed=seed, seg_label_dir=labels)
        model = train(
            model, train_set, _segmentation_loss,
            param_groups=model.param_groups(deeplab.optim.head_lr_mult), optim=deeplab.optim, runtime=runtime,
            seed=seed, checkpoint_dir=CHECKPOINT_ROOT / "deeplab",
            fingerprint=fingerprint(seed, final_round, dataset, deeplab, init_digest, len(train_set)),
            live_dir=deeplab.live_dir, desc="deeplab",
        )
        if is_main_process():
            save_model(deeplab.model_out, model, kind="deeplab", backbone=deeplab.network.backbone,
                       num_classes=split.num_classes, trained_on=final_round)
            print(f"saved DeepLab (trained on {final_round} labels) -> {deeplab.model_out}")
