"""Step ``train_classifier``: the multi-label classification network whose 1×1 classifier gives the CAMs."""

from __future__ import annotations

import torch

from auxseg.config import ClassifierParams, DatasetParams, RuntimeSection
from auxseg.steps.common import CHECKPOINT_ROOT, build_classifier, fingerprint, open_split, save_model


def _classification_loss(model, batch, device):
    from auxseg.losses import classification_loss

    logits = model(batch["image"].to(device))
    return {"loss": classification_loss(logits, batch["image_labels"].to(device))}


def run(seed: int, dataset: DatasetParams, classifier: ClassifierParams, runtime: RuntimeSection) -> None:
    """Train on the train split's image-level labels; write ``classifier.model_out``."""
    from auxseg.data.training import TrainingSet
    from auxseg.engine import distributed_context, is_main_process, train

    with distributed_context(runtime):
        split = open_split(dataset, "train")
        torch.manual_seed(seed)
        model = build_classifier(classifier.network, split.num_classes - 1)
        normalization = model.backbone.normalization
        train_set = TrainingSet(split, classifier.augment, seed=seed, normalization=normalization)
        model = train(
            model,
            train_set,
            _classification_loss,
            param_groups=model.param_groups(classifier.optim.head_lr_mult),
            optim=classifier.optim,
            runtime=runtime,
            seed=seed,
            checkpoint_dir=CHECKPOINT_ROOT / "classifier",
            fingerprint=fingerprint(seed, dataset, classifier, len(train_set)),
            live_dir=classifier.live_dir,
            desc="classifier",
        )
        if is_main_process():
            save_model(
                classifier.model_out,
                model,
                normalization=normalization,
                kind="classifier",
                backbone=classifier.network.backbone,
                output_stride=classifier.network.output_stride,
                num_classes_fg=split.num_classes - 1,
                class_names=list(split.class_names),
            )
            print(f"saved classifier -> {classifier.model_out}")
