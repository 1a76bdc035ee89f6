"""Schemas of the ``params.yaml`` sections, one frozen dataclass per section (see :mod:`auxseg.params`).

Range checks come from ``field(ge=..., le=...)``; cross-field checks live in ``validate(name)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from auxseg import IGNORE_INDEX
from auxseg.params import TOP_LEVEL_SCALARS, ParamError, field, section, to_dict


@section("dataset")
class DatasetParams:
    """Which dataset every stage reads. ``root`` holds the VOC-style layout."""

    name: Literal["synthetic", "voc2012", "coco2014"] = "synthetic"
    root: str = "data/synthetic"
    train_split: str = field("train", help="id list under ImageSets/Segmentation (VOC+SBD: train_aug)")
    val_split: str = "val"
    image_labels: Optional[str] = field(
        None, help="image-level label file (JSON or CSV), relative to root; null: root/image_labels.json if present, else derived from masks"
    )
    mask_dir: Optional[str] = field(
        None, help="mask folder under root; null: SegmentationClassAug if present, else SegmentationClass"
    )


@section("synthetic")
class SyntheticParams:
    """The embedded synthetic VOC-style benchmark written by the first stage."""

    n_train: int = field(240, ge=1)
    n_val: int = field(80, ge=1)
    num_classes: int = field(6, ge=2, le=20, help="foreground classes (background is class 0)")
    min_side: int = field(96, ge=32)
    max_side: int = field(160, ge=32)
    max_objects: int = field(3, ge=1, le=8)
    distractor_rate: float = field(0.5, ge=0.0, le=1.0, help="probability that an image holds class-less salient distractors")
    cooccurrence_rate: float = field(0.6, ge=0.0, le=1.0, help="probability that a class's partner class joins it")
    part_fraction: float = field(0.25, gt=0.0, lt=1.0, help="share of an object's area covered by its class-specific part")
    boundary_width: int = field(1, ge=0, le=5, help="width in pixels of the 255 band along object boundaries")
    seed: int = 0
    out_dir: str = field("data/synthetic", help="where the dataset is written (the stage's output)")

    def generator_kwargs(self) -> dict:
        """Keyword arguments of :func:`auxseg.data.synthetic.generate` (everything but ``out_dir``)."""
        return {k: v for k, v in to_dict(self).items() if k != "out_dir"}

    def validate(self, name: str) -> None:
        if self.min_side > self.max_side:
            raise ParamError(f"{name}.min_side: {self.min_side} is larger than {name}.max_side ({self.max_side})")


@section("prepare_data")
class PrepareDataParams:
    """Validate the dataset once and write the manifest every later stage reads."""

    out_dir: str = field("data/prepared", help="manifest folder: <split>.json with ids, image-level labels, sizes")
    workers: int = field(2, ge=1, help="processes used to decode and check every image and mask")


# ---------------------------------------------------------------------------------------------------------
# Building blocks shared by the training sections (nested dataclasses, not sections of their own).


PUBLISHED_CODE_MOMENTUM = 1e-5
PUBLISHED_CODE_WEIGHT_DECAY = 0.0


@dataclass(frozen=True)
class OptimParams:
    """SGD with a poly learning-rate schedule (embedded in the stage sections; not a params.yaml section itself).

    ``preset: published_code`` reproduces what AuxSegNet's released code effectively runs: its optimiser
    (PSA's ``PolyOptimizer``) calls ``SGD.__init__(params, lr, weight_decay)``, which puts the weight decay
    (1e-5) into SGD's positional *momentum* slot, so training uses momentum 1e-5 and weight decay 0 (its
    "momentum 0.9" is only the poly exponent). With that preset ``momentum`` and ``weight_decay`` are ignored.
    """

    epochs: int = field(10, ge=1, help="passes over the training set")
    batch_size: int = field(8, ge=1, help="images per process and iteration")
    lr: float = field(0.01, gt=0.0, help="base learning rate (groups with lr_mult 1)")
    head_lr_mult: float = field(10.0, gt=0.0, help="lr multiplier callers give to newly initialised heads")
    momentum: float = field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = field(1e-4, ge=0.0)
    poly_power: float = field(0.9, ge=0.0, help="lr = base * lr_mult * (1 - it / max_it) ** poly_power")
    preset: Literal["standard", "published_code"] = field(
        "standard", help="published_code: momentum 1e-5 and weight decay 0, as AuxSegNet's released code runs"
    )
    log_every: int = field(10, ge=1, help="iterations per logged (averaged) point of the loss curves")

    @property
    def effective_momentum(self) -> float:
        """Momentum handed to SGD under the chosen preset."""
        return PUBLISHED_CODE_MOMENTUM if self.preset == "published_code" else self.momentum

    @property
    def effective_weight_decay(self) -> float:
        """Weight decay handed to SGD under the chosen preset."""
        return PUBLISHED_CODE_WEIGHT_DECAY if self.preset == "published_code" else self.weight_decay


@dataclass(frozen=True)
class RuntimeParams:
    """How (not what) to train: device and speed settings. They do not enter the checkpoint fingerprint."""

    device: Literal["auto", "cpu", "cuda"] = field("auto", help="auto: CUDA when available, else CPU")
    amp_bf16: bool = field(True, help="bf16 autocast (CUDA only; CPU always runs fp32)")
    channels_last: bool = field(True, help="channels_last memory format (CUDA only)")
    num_workers: int = field(0, ge=0, help="DataLoader worker processes per rank")
    find_unused_parameters: bool = field(False, help="DDP: allow parameters that get no gradient in a step")


@dataclass(frozen=True)
class AugmentParams:
    """Training augmentation (AuxSegNet's released code: crop 321, scale 0.7–1.3, flip; the paper: colour jitter)."""

    crop_size: int = field(321, ge=1, help="side S of the square training crop")
    scale_min: float = field(0.7, gt=0.0)
    scale_max: float = field(1.3, gt=0.0)
    flip: bool = field(True, help="random horizontal flip with p = 0.5")
    color_jitter: float = field(
        0.0, ge=0.0, lt=1.0,
        help="paper only (the released code has none): brightness, contrast and saturation factors ~ U(1-j, 1+j)",
    )
    pad_label: Literal["ignore", "background"] = field(
        "ignore", help="label of padded pixels: 255 (ignore) or 0 (background, as the published code pads)"
    )

    def validate(self, name: str) -> None:
        if self.scale_min > self.scale_max:
            raise ParamError(f"{name}.scale_min: {self.scale_min} is larger than {name}.scale_max ({self.scale_max})")

    @property
    def label_pad_value(self) -> int:
        """Value written into padded label pixels."""
        return IGNORE_INDEX if self.pad_label == "ignore" else 0


@dataclass(frozen=True)
class LossWeights:
    """AuxSegNet loss: cls·L_cls + sal·(L_sal_init + L_sal_refined) + seg·(L_seg_init + L_seg_refined)."""

    cls: float = field(1.0, ge=0.0)
    sal: float = field(1.0, ge=0.0)
    seg: float = field(1.0, ge=0.0)

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or not 0 <= value < float("inf"):
                raise ParamError(f"{item.name}: loss weight must be a finite number >= 0, got {value!r}")


# ---------------------------------------------------------------------------------------------------------
# Pipeline sections.


@section("runtime")
class RuntimeSection(RuntimeParams):
    """Shared by every stage that runs a network (device, precision, loader and CRF workers)."""

    crf_workers: int = field(2, ge=1, help="processes for per-image CRF/fusion/writing (one BLAS thread each)")


@section("saliency")
class SaliencyParams:
    """Saliency prior: a training-free method computed from the image, or external grey PNG maps."""

    method: Literal["training_free", "external"] = "training_free"
    external_dir: Optional[str] = field(None, help="folder of 8-bit grey PNGs <id>.png (DSS/PoolNet format)")
    out_dir: str = "data/saliency"
    workers: int = field(2, ge=1)
    metrics_out: str = "metrics/saliency_prior.json"

    def validate(self, name: str) -> None:
        if self.method == "external" and not self.external_dir:
            raise ParamError(f"{name}.external_dir: required when {name}.method is 'external'")


@dataclass(frozen=True)
class NetworkParams:
    """A backbone from the registry with optional local pretrained weights (loaded strictly)."""

    backbone: str = "tiny"
    weights: Optional[str] = field(None, help="local .pth of the backbone; null trains from scratch")
    sha256: Optional[str] = None
    output_stride: int = field(8, ge=8, le=16)


@section("classifier")
class ClassifierParams:
    """Multi-label classification network whose 1×1 classifier weights give the CAMs."""

    network: NetworkParams = field(NetworkParams())
    augment: AugmentParams = field(AugmentParams())
    optim: OptimParams = field(OptimParams())
    model_out: str = "models/classifier.pt"
    live_dir: str = "dvclive/classifier"
    metrics_out: str = "metrics/classification.json"


@section("cams")
class CamParams:
    """Multi-scale CAM extraction with flips, and the CAM-seed evaluation."""

    scales: list[float] = field([1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    out_dir: str = "data/cams"
    thresholds: list[float] = field([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6], ge=0.0, le=1.0)
    metrics_out: str = "metrics/cam_seeds.json"

    def validate(self, name: str) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ParamError(f"{name}.scales: must be a non-empty list of positive scales")
        if not self.thresholds:
            raise ParamError(f"{name}.thresholds: must not be empty")


@section("pseudo_labels")
class PseudoLabelParams:
    """Fusion of CAMs and saliency into pseudo labels (spec §4), defaults of the released code."""

    cam_threshold: float = field(0.2, ge=0.0, le=1.0)
    saliency_threshold: float = field(0.06, ge=0.0, le=1.0)
    saliency_crf_iterations: int = field(1, ge=0, help="mean-field steps of the saliency CRF (0: no CRF)")
    out_root: str = field("data/rounds", help="labels of round rK go to <out_root>/rK/{seg,sal,conf}")
    models_root: str = field("models/rounds", help="the model of round rK is <models_root>/rK.pt")
    metrics_root: str = field("metrics/rounds", help="metrics of round rK go to <metrics_root>/rK.json")
    overlay_root: str = field("metrics/overlays", help="coloured label overlays of sample images per round")
    num_overlays: int = field(6, ge=0)


@section("auxsegnet")
class AuxSegNetParams:
    """The multi-task network trained in every round (spec §2–3, §5)."""

    branch_channels: int = field(128, ge=8)
    use_cross_task_affinity: bool = field(True, help="false: identity instead of A_CT (ablation)")
    extra_dilated_conv: bool = field(
        True, help="the rate-18 3×3 conv of each branch: released code true, paper false (not mentioned there)"
    )
    refine_target: Literal["logits", "probabilities"] = field(
        "logits", help="what A_CT refines: logits (released code) or probabilities (the paper's wording)"
    )
    loss_weights: LossWeights = field(LossWeights())
    augment: AugmentParams = field(AugmentParams())
    optim: OptimParams = field(OptimParams())
    live_root: str = "dvclive/rounds"


@dataclass(frozen=True)
class RoundParams:
    """One round: train AuxSegNet on the labels of ``prev`` (initialised from its model), then update the labels.

    Unset fields fall back to the ``auxsegnet`` and ``pseudo_labels`` sections.
    """

    prev: str
    loss_weights: Optional[LossWeights] = None
    cam_threshold: Optional[float] = field(None, ge=0.0, le=1.0)
    saliency_threshold: Optional[float] = field(None, ge=0.0, le=1.0)
    epochs: Optional[int] = field(None, ge=1)


TOP_LEVEL_SCALARS["rounds"] = (dict[str, RoundParams], {"r1": {"prev": "r0"}})
TOP_LEVEL_SCALARS["final_round"] = (str, "r1")

INITIAL_ROUND = "r0"
"""Round 0: CAMs fused with the saliency prior; its model is the classifier."""


def round_chain(rounds: dict[str, RoundParams], final_round: str) -> list[str]:
    """Validate the chain of rounds and return it in training order, starting with ``r0``.

    Every ``prev`` must be ``r0`` or another round, the chain must be linear (no cycle, no branch) and
    ``final_round`` must be its last round.
    """
    if INITIAL_ROUND in rounds:
        raise ParamError(f"rounds.{INITIAL_ROUND}: reserved for the initial labels (CAMs + saliency prior)")
    children: dict[str, str] = {}
    for name, spec in rounds.items():
        if spec.prev != INITIAL_ROUND and spec.prev not in rounds:
            raise ParamError(f"rounds.{name}.prev: '{spec.prev}' is neither {INITIAL_ROUND} nor a round in rounds")
        if spec.prev == name:
            raise ParamError(f"rounds.{name}.prev: a round cannot refine itself")
        if spec.prev in children:
            raise ParamError(f"rounds.{name}.prev: '{spec.prev}' is already refined by rounds.{children[spec.prev]}")
        children[spec.prev] = name
    chain = [INITIAL_ROUND]
    while chain[-1] in children:
        chain.append(children[chain[-1]])
    missing = sorted(set(rounds) - set(chain))
    if missing:
        raise ParamError(f"rounds.{missing[0]}: not reachable from {INITIAL_ROUND} (the chain has a cycle)")
    if final_round not in rounds:
        raise ParamError(f"final_round: '{final_round}' is not a round in rounds")
    if final_round != chain[-1]:
        raise ParamError(f"final_round: '{final_round}' is not the last round of the chain ({chain[-1]})")
    return chain


@section("deeplab")
class DeepLabParams:
    """The final segmentation network trained on the final round's labels."""

    network: NetworkParams = field(NetworkParams())
    # ASPP / head width: 256 is DeepLab-v3; the synthetic default uses a narrower head on the tiny backbone.
    head_channels: int = field(256, ge=8)
    # Start the backbone from the image-level classifier (classifier.model_out) instead of network.weights: the
    # synthetic default's stand-in for ImageNet pre-training (the tiny backbone has no pre-trained weights).
    init_from_classifier: bool = False
    augment: AugmentParams = field(AugmentParams())
    optim: OptimParams = field(OptimParams())
    model_out: str = "models/deeplab.pt"
    live_dir: str = "dvclive/deeplab"

    def validate(self, name: str) -> None:
        if self.init_from_classifier and self.network.weights is not None:
            raise ParamError(
                f"{name}.init_from_classifier: true conflicts with {name}.network.weights "
                f"({self.network.weights!r}); choose one initialisation of the backbone"
            )


@section("evaluate")
class EvaluateParams:
    """Validation inference of the final DeepLab and of AuxSegNet's refined segmentation head."""

    scales: list[float] = field([1.0, 0.75, 1.25])
    flip: bool = True
    crf_iterations: int = field(10, ge=1)
    metrics_out: str = "metrics/final.json"
    confusion_out: str = "metrics/confusion_final.csv"
    summary_csv: str = "metrics/miou_per_round.csv"
