"""Schemas of the ``params.yaml`` sections, one frozen dataclass per section (see :mod:`auxseg.params`).

Range checks come from ``field(ge=..., le=...)``; cross-field checks live in ``validate(name)``.
"""

from __future__ import annotations

import dataclasses
import math
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


@dataclass(frozen=True)
class AuxLossParams:
    """AALR's adaptive affinity (AA) and label reassign (LR) losses on a segmentation output (spec §2, §3, §6).

    Both are off with weight 0 (the default): no projection head is built, no confidence map is read and the
    training is bit-identical to the plain loss. ``L = L_seg + aa_weight · L_AA + lr_weight · L_LR``.
    The LR loss is RECONSTRUCTED (spec §3: the paper's formula was not retrieved).
    """

    aa_weight: float = field(0.0, ge=0.0, help="λ_AA; 0 = off (spec §6.1 suggests 1, sweep 0.3–1)")
    aa_dilation: int = field(1, ge=1, help="neighbour offset d on the logit grid (stride 8: d=1 is 8 px)")
    aa_margin: float = field(3.0, ge=0.0, help="margin m of the push term max(0, m·w − D)")
    aa_confidence: Literal["labels", "constant"] = field(
        "labels", help="w_ij = max(c_i, c_j) from the confidence maps written with the labels, or c ≡ 1 (plain AFF)"
    )
    lr_weight: float = field(0.0, ge=0.0, help="λ_LR; 0 = off (no projection head is built)")
    lr_variant: Literal["prototype", "correction"] = field(
        "prototype", help="prototype: prototype CE on reassigned targets (§3 4a); correction: also corrects the CE targets (§3 4b)"
    )
    lr_tau: float = field(0.1, gt=0.0, help="temperature τ of the prototype cross-entropy")
    lr_warmup: float = field(0.15, ge=0.0, le=1.0, help="fraction of the iterations before the LR loss switches on")
    lr_embed_dim: int = field(32, ge=1, help="width D of the pixel embedding of the projection head")

    def validate(self, name: str) -> None:
        for key in ("aa_weight", "aa_margin", "lr_weight", "lr_tau"):
            if not math.isfinite(getattr(self, key)):
                raise ParamError(f"{name}.{key}: must be a finite number, got {getattr(self, key)!r}")

    @property
    def aa_on(self) -> bool:
        return self.aa_weight > 0

    @property
    def lr_on(self) -> bool:
        return self.lr_weight > 0

    @property
    def enabled(self) -> bool:
        """True when any AALR term is on."""
        return self.aa_on or self.lr_on

    @property
    def embedding_dim(self) -> int | None:
        """Width of the projection head the model needs (None: no head, LR off)."""
        return self.lr_embed_dim if self.lr_on else None

    @property
    def reads_confidence(self) -> bool:
        """True when the training needs the confidence maps written with the labels."""
        return self.aa_on and self.aa_confidence == "labels"


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
    aux_losses: AuxLossParams = field(
        AuxLossParams(), help="AA/LR on the refined segmentation logits, labels + confidence of the previous round"
    )
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
    aux_losses: AuxLossParams = field(
        AuxLossParams(), help="AA/LR on the stride-8 logits, with the final round's labels and confidence maps"
    )
    seed: Optional[int] = field(
        None, ge=0, help="seed of this training only (null: the global seed); a sweep re-runs train_deeplab + evaluate"
    )
    model_out: str = "models/deeplab.pt"
    live_dir: str = "dvclive/deeplab"

    def training_seed(self, global_seed: int) -> int:
        """The seed the DeepLab training uses: ``seed`` or, when null, the global one."""
        return global_seed if self.seed is None else self.seed

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


# ---------------------------------------------------------------------------------------------------------
# The single-stage branch (1-Stage of Araslanov & Roth + AALR's losses, spec §1), independent of the rounds.


@dataclass(frozen=True)
class SingleStageWidths:
    """Channel widths of the 1-Stage decoder (the paper: 256 / 48 / 256 / 256; narrower for the CPU tiny backbone)."""

    aspp: int = field(64, ge=1, help="ASPP output channels")
    skip: int = field(32, ge=1, help="1×1 projection of the stride-4 backbone features")
    decoder: int = field(64, ge=1, help="width of the deep and shallow (GCI) streams the Stochastic Gate mixes")
    head: int = field(64, ge=1, help="the two 3×3 convs of the segmentation head")


@dataclass(frozen=True)
class PamrParams:
    """Pixel-adaptive mask refinement of the online masks (spec §1.3 step 1)."""

    iterations: int = field(10, ge=0)
    dilations: list[int] = field([1, 2, 4, 8, 12, 24], ge=1, help="3×3 neighbourhoods at these dilations (stride-4 grid)")

    def validate(self, name: str) -> None:
        if not self.dilations:
            raise ParamError(f"{name}.dilations: must not be empty")


@dataclass(frozen=True)
class PseudoCutParams:
    """Online pseudo labels from the refined masks: τ_c = max(min_threshold, r_c · max_i m_ic) (spec §1.3 step 3)."""

    r_bg: float = field(0.7, ge=0.0, le=1.0, help="ratio r of the background channel")
    r_fg: float = field(0.6, ge=0.0, le=1.0, help="ratio r of the foreground channels")
    min_threshold: float = field(0.2, ge=0.0, le=1.0)


@dataclass(frozen=True)
class SingleStageInferenceParams:
    """Inference of ``infer_single_stage`` (defaults as ``evaluate``, so that the val numbers compare)."""

    scales: list[float] = field([1.0, 0.75, 1.25], gt=0.0)
    flip: bool = True
    crf_iterations: int = field(10, ge=1)
    bg_power: float = field(
        1.0, gt=0.0, help="val: background probability raised to this power before the argmax (1-Stage: 3; 1 = off)"
    )
    min_class_score: float = field(
        0.0, ge=0.0, le=1.0, help="val: classes whose sigmoid class score is below this are dropped (1-Stage: 0.1; 0 = off)"
    )

    def validate(self, name: str) -> None:
        if not self.scales:
            raise ParamError(f"{name}.scales: must not be empty")


@section("single_stage")
class SingleStageParams:
    """The single-stage model (1-Stage network, spec §1) trained end to end from image labels, with AA/LR.

    L = L_cls + seg_weight · L_seg (after ``seg_warmup_epochs``) + λ_AA · L_AA + λ_LR · L_LR; L_seg is the
    class-balanced CE on online PAMR pseudo labels; AA and LR run on the stride-4 masks / embeddings with the same
    pseudo labels, and only once L_seg is on.
    """

    network: NetworkParams = field(NetworkParams())
    widths: SingleStageWidths = field(SingleStageWidths())
    augment: AugmentParams = field(AugmentParams(crop_size=128))
    optim: OptimParams = field(OptimParams(epochs=20, batch_size=8, lr=0.01, log_every=5))
    seg_weight: float = field(1.0, ge=0.0, help="weight of the class-balanced CE on the online pseudo labels")
    seg_warmup_epochs: int = field(5, ge=0, help="classification-only epochs before L_seg (and AA, LR) switch on")
    pamr: PamrParams = field(PamrParams())
    pseudo_labels: PseudoCutParams = field(PseudoCutParams())
    aux_losses: AuxLossParams = field(
        AuxLossParams(), help="AA/LR at the stride-4 masks; aa_confidence labels = per-pixel max of the PAMR masks"
    )
    seed: Optional[int] = field(None, ge=0, help="seed of the single-stage training (null: the global seed)")
    inference: SingleStageInferenceParams = field(SingleStageInferenceParams())
    model_out: str = "models/single_stage.pt"
    live_dir: str = "dvclive/single_stage"
    out_dir: str = field("data/single_stage", help="val/{plain,crf}/<id>.png predictions, train/{seg,conf}/<id>.png labels")
    metrics_out: str = "metrics/single_stage.json"

    def validate(self, name: str) -> None:
        if self.seg_warmup_epochs >= self.optim.epochs and self.seg_weight > 0:
            raise ParamError(
                f"{name}.seg_warmup_epochs: {self.seg_warmup_epochs} leaves no epoch with the segmentation loss "
                f"({name}.optim.epochs is {self.optim.epochs})"
            )

    def training_seed(self, global_seed: int) -> int:
        """The seed the single-stage training uses: ``seed`` or, when null, the global one."""
        return global_seed if self.seed is None else self.seed
