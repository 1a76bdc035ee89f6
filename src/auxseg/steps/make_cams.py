"""Step ``make_cams``: multi-scale, flipped CAMs of every train image (PSA ``infer_cls`` convention).

Per image: CAMs at each scale and its flip, ReLU, upsampled and summed, each present class divided by its maximum
+ 1e-5, absent classes zero; stored as float16 ``<out_dir>/<id>.npz`` holding the present classes only.
"""

from __future__ import annotations

import torch

from auxseg.config import CamParams, ClassifierParams, DatasetParams, RuntimeSection
from auxseg.normalization import Normalization
from auxseg.steps.common import build_classifier, load_model_file, model_normalization, open_split, staged_directory


def load_classifier(classifier: ClassifierParams) -> tuple[torch.nn.Module, Normalization]:
    """The classifier saved at ``classifier.model_out`` (strict load, eval mode) and its recorded input normalisation."""
    payload = load_model_file(classifier.model_out)
    meta = payload["meta"]
    if meta.get("kind") != "classifier":
        raise ValueError(f"{classifier.model_out}: expected a classifier model, found {meta.get('kind')!r}")
    normalization = model_normalization(meta, classifier.model_out)
    model = build_classifier(classifier.network, int(meta["num_classes_fg"]), with_weights=False)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), normalization


def run(dataset: DatasetParams, classifier: ClassifierParams, cams: CamParams, runtime: RuntimeSection) -> None:
    from auxseg.cam import multiscale_cams, save_cams
    from auxseg.data.training import normalize_image
    from auxseg.engine import resolve_device
    from auxseg.runtime import inference_autocast, inference_model
    from tqdm import tqdm

    split = open_split(dataset, "train")
    device = resolve_device(runtime)
    model, normalization = load_classifier(classifier)
    model = inference_model(model, runtime, device)
    with staged_directory(cams.out_dir) as staging, torch.inference_mode(), inference_autocast(runtime, device):
        for image_id in tqdm(split.ids, desc="cams", mininterval=2.0):
            image = normalize_image(split.load_image(image_id), normalization).unsqueeze(0).to(device)
            labels = split.image_labels[image_id]
            maps = multiscale_cams(model, image, labels, scales=cams.scales, flip=cams.flip)
            save_cams(staging / f"{image_id}.npz", maps, labels)
    print(f"wrote CAMs of {len(split.ids)} images -> {cams.out_dir}")
