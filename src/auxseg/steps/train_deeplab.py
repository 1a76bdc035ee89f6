"""Step ``train_deeplab``: the final DeepLab (ASPP head on a registry backbone) on the final round's labels."""

from __future__ import annotations

from pathlib import Path

import torch

from auxseg.config import DatasetParams, DeepLabParams, PseudoLabelParams, RuntimeSection
from auxseg.steps.common import CHECKPOINT_ROOT, fingerprint, open_split, save_model


def build_deeplab(deeplab: DeepLabParams, num_classes: int):
    from auxseg.models.deeplab import DeepLab

    network = deeplab.network
    return DeepLab.from_backbone_name(
        network.backbone, num_classes, output_stride=network.output_stride,
        backbone_weights=network.weights, backbone_sha256=network.sha256,
    )


def _segmentation_loss(model, batch, device):
    from auxseg.losses import segmentation_ce, upsample_logits

    target = batch["seg"].to(device)
    logits = upsample_logits(model(batch["image"].to(device)), tuple(target.shape[-2:]))
    return {"loss": segmentation_ce(logits, target)}


def run(seed: int, final_round: str, dataset: DatasetParams, deeplab: DeepLabParams, pseudo_labels: PseudoLabelParams,
        runtime: RuntimeSection) -> None:
    from auxseg.data.training import TrainingSet
    from auxseg.engine import distributed_context, is_main_process, train

    labels = Path(pseudo_labels.out_root) / final_round / "seg"
    with distributed_context(runtime):
        split = open_split(dataset, "train")
        torch.manual_seed(seed)
        model = build_deeplab(deeplab, split.num_classes)
        train_set = TrainingSet(split, deeplab.augment, seed=seed, seg_label_dir=labels)
        model = train(
            model, train_set, _segmentation_loss,
            param_groups=model.param_groups(deeplab.optim.head_lr_mult), optim=deeplab.optim, runtime=runtime,
            seed=seed, checkpoint_dir=CHECKPOINT_ROOT / "deeplab",
            fingerprint=fingerprint(seed, final_round, dataset, deeplab, len(train_set)),
            live_dir=deeplab.live_dir, desc="deeplab",
        )
        if is_main_process():
            save_model(deeplab.model_out, model, kind="deeplab", backbone=deeplab.network.backbone,
                       num_classes=split.num_classes, trained_on=final_round)
            print(f"saved DeepLab (trained on {final_round} labels) -> {deeplab.model_out}")
