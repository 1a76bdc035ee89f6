"""AA and LR as training terms of DeepLab, AuxSegNet and the single-stage model (issue 5 items 3-4).

Params validation, the weights-0 path being the plain loss (same function, same value, same model), and short
training runs with AA and LR on giving finite losses and gradients and dvclive curves of every term.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from auxseg.config import (
    AuxLossParams,
    AuxSegNetParams,
    DeepLabParams,
    LossWeights,
    OptimParams,
    RuntimeParams,
    SingleStageParams,
)
from auxseg.losses import auxsegnet_losses, to_logit_grid
from auxseg.params import ParamError, parse_section, validate_params_file

ROOT = Path(__file__).resolve().parents[1]
NUM_FG = 3
CROP = 32
CPU = RuntimeParams(device="cpu")
ON = AuxLossParams(aa_weight=1.0, lr_weight=0.5, lr_warmup=0.0, lr_embed_dim=8)


@pytest.fixture(autouse=True)
def _outside_any_repository(tmp_path, monkeypatch):
    """dvclive looks for a DVC/git repository from the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)


# ------------------------------------------------------------------------------------------------ params
@pytest.mark.parametrize(
    "section, cls, data, message",
    [
        ("deeplab", DeepLabParams, {"aux_losses": {"aa_wieght": 1.0}}, r"deeplab\.aux_losses\.aa_wieght: unknown key"),
        ("deeplab", DeepLabParams, {"aux_losses": {"lr_variant": "proto"}},
         r"deeplab\.aux_losses\.lr_variant: 'proto' is not one of \['prototype', 'correction'\]"),
        ("deeplab", DeepLabParams, {"aux_losses": {"aa_confidence": "soft"}}, r"deeplab\.aux_losses\.aa_confidence: 'soft'"),
        ("deeplab", DeepLabParams, {"aux_losses": {"aa_weight": -1}}, r"deeplab\.aux_losses\.aa_weight: -1.0 is out of range"),
        ("deeplab", DeepLabParams, {"aux_losses": {"aa_weight": float("inf")}},
         r"deeplab\.aux_losses\.aa_weight: must be a finite number"),
        ("deeplab", DeepLabParams, {"aux_losses": {"lr_warmup": 1.5}}, r"deeplab\.aux_losses\.lr_warmup: 1.5 is out of range"),
        ("deeplab", DeepLabParams, {"aux_losses": {"aa_dilation": 0}}, r"deeplab\.aux_losses\.aa_dilation: 0 is out of range"),
        ("deeplab", DeepLabParams, {"seed": -1}, r"deeplab\.seed: -1 is out of range"),
        ("deeplab", DeepLabParams, {"seed": "one"}, r"deeplab\.seed: expected an integer"),
        ("auxsegnet", AuxSegNetParams, {"aux_losses": {"lr_tau": 0}}, r"auxsegnet\.aux_losses\.lr_tau: 0.0 is out of range \(must be > 0.0\)"),
        ("auxsegnet", AuxSegNetParams, {"aux_losses": {"weight": 1}}, r"auxsegnet\.aux_losses\.weight: unknown key"),
        ("single_stage", SingleStageParams, {"epochs": 3}, r"single_stage\.epochs: unknown key"),
        ("single_stage", SingleStageParams, {"widths": {"decoder": 0}}, r"single_stage\.widths\.decoder: 0 is out of range"),
        ("single_stage", SingleStageParams, {"pamr": {"dilations": []}}, r"single_stage\.pamr\.dilations: must not be empty"),
        ("single_stage", SingleStageParams, {"pseudo_labels": {"r_bg": 2}}, r"single_stage\.pseudo_labels\.r_bg: 2.0 is out"),
        ("single_stage", SingleStageParams, {"optim": {"epochs": 3}, "seg_warmup_epochs": 3},
         r"single_stage\.seg_warmup_epochs: 3 leaves no epoch with the segmentation loss"),
        ("single_stage", SingleStageParams, {"inference": {"scales": []}}, r"single_stage\.inference\.scales: must not be empty"),
        ("single_stage", SingleStageParams, {"aux_losses": {"lr_variant": "x"}}, r"single_stage\.aux_losses\.lr_variant"),
    ],
)
def test_bad_params_name_the_key(section, cls, data, message):
    with pytest.raises(ParamError, match=message):
        parse_section(cls, data, section)


def test_committed_params_have_every_aalr_term_off_and_seeds_follow_the_global_one():
    parsed = validate_params_file(ROOT / "params.yaml")
    for name in ("deeplab", "auxsegnet", "single_stage"):
        aux = parsed[name].aux_losses
        assert not aux.enabled and aux.embedding_dim is None and not aux.reads_confidence, name
    assert parsed["deeplab"].seed is None and parsed["deeplab"].training_seed(7) == 7
    assert parse_section(DeepLabParams, {"seed": 3}, "deeplab").training_seed(7) == 3
    aux = parse_section(AuxLossParams, {"aa_weight": 1, "aa_confidence": "constant"}, "aux")
    assert aux.aa_on and not aux.reads_confidence and aux.embedding_dim is None


def test_dvc_yaml_declares_the_single_stage_keys_so_that_inference_changes_do_not_retrain():
    stages = yaml.safe_load((ROOT / "stages/single_stage/dvc.yaml").read_text())["stages"]

    def declared(stage):
        return {p.split(".", 1)[1] for p in stages[stage]["params"] if isinstance(p, str) and p.startswith("single_stage.")}

    train, infer, evaluate = declared("train_single_stage"), declared("infer_single_stage"), declared("eval_single_stage")
    fields = {f.name for f in dataclasses.fields(SingleStageParams)}
    assert train | infer | evaluate == fields
    assert not {"inference", "out_dir", "metrics_out"} & train
    assert {"seed", "aux_losses", "optim", "seg_warmup_epochs"} <= train
    assert {"inference", "pamr", "pseudo_labels", "model_out", "out_dir"} <= infer
    # the single-stage branch depends on the prepared data only
    deps = {d for stage in ("train_single_stage", "infer_single_stage", "eval_single_stage") for d in stages[stage]["deps"]}
    assert not any("pseudo_labels" in d or "saliency" in d or "cams" in d for d in deps)
    root_stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert not {"train_single_stage", "infer_single_stage", "eval_single_stage"} & set(root_stages)
    assert all(stages[stage]["wdir"] == "../.." for stage in stages)  # paths relative to the repository root
    assert "deeplab" in root_stages["train_deeplab"]["params"] and "deeplab" in root_stages["evaluate"]["params"]


# ------------------------------------------------------------------------------------------------ batches
def make_batch(batch: int = 2, seed: int = 0, crop: int = CROP) -> dict:
    """Image-like batch with block labels consistent with the image labels, padding at the bottom right."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, crop, crop, generator=generator)
    seg = torch.zeros(batch, crop, crop, dtype=torch.long)
    image_labels = torch.zeros(batch, NUM_FG)
    for b in range(batch):
        k = 1 + b % NUM_FG
        seg[b, 4:20, 6:22] = k
        image[b, :, 4:20, 6:22] += 2.0
        image_labels[b, k - 1] = 1.0
    seg[:, 12:14, :] = 255
    valid = torch.ones(batch, crop, crop, dtype=torch.bool)
    valid[:, -4:, :] = False
    seg[~valid] = 255
    confidence = torch.rand(batch, crop, crop, generator=generator) * valid
    saliency = (seg > 0).float() * (seg != 255)
    return {"id": [f"im{i}" for i in range(batch)], "image": image, "seg": seg, "valid": valid,
            "confidence": confidence, "saliency": saliency, "image_labels": image_labels}


class DictSet(torch.utils.data.Dataset):
    def __init__(self, size: int = 4) -> None:
        full = make_batch(size)
        self.items = [{k: (v[i] if isinstance(v, torch.Tensor) else v[i]) for k, v in full.items()} for i in range(size)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def deeplab_model(embedding_dim=None):
    from auxseg.models.deeplab import DeepLab

    torch.manual_seed(0)
    return DeepLab.from_backbone_name("tiny", NUM_FG + 1, embedding_dim=embedding_dim)


def auxsegnet_model(embedding_dim=None):
    from auxseg.models.auxsegnet import AuxSegNet

    torch.manual_seed(0)
    return AuxSegNet.from_backbone_name("tiny", NUM_FG, branch_channels=8, embedding_dim=embedding_dim)


def single_stage_params(aux: AuxLossParams = AuxLossParams(), **kwargs) -> SingleStageParams:
    data = {"widths": {"aspp": 16, "skip": 8, "decoder": 16, "head": 16}, "optim": {"epochs": 2, "batch_size": 2,
            "log_every": 1}, "seg_warmup_epochs": 1, "pamr": {"iterations": 2, "dilations": [1, 2]}, **kwargs}
    params = parse_section(SingleStageParams, data, "single_stage")
    return dataclasses.replace(params, aux_losses=aux)


def single_stage_model(params: SingleStageParams):
    from auxseg.params import to_dict
    from auxseg.steps.train_single_stage import build_single_stage

    torch.manual_seed(0)
    return build_single_stage("tiny", NUM_FG, output_stride=8, widths=to_dict(params.widths),
                              embedding_dim=params.aux_losses.embedding_dim)


# ------------------------------------------------------------------------------------------------ weights 0 = plain
def test_deeplab_weights_zero_is_the_plain_loss_and_model():
    from auxseg.steps.train_deeplab import DeepLabAuxLoss, _segmentation_loss, make_loss

    assert make_loss(AuxLossParams()) is _segmentation_loss
    plain, with_head = deeplab_model().eval(), deeplab_model(embedding_dim=8).eval()
    assert plain.embed is None and list(plain.state_dict()) == [k for k in with_head.state_dict() if not k.startswith("embed.")]
    for key, value in plain.state_dict().items():
        assert torch.equal(value, with_head.state_dict()[key]), key
    batch = make_batch()
    reference = _segmentation_loss(plain, batch, torch.device("cpu"))["loss"]
    terms = DeepLabAuxLoss(AuxLossParams(aa_weight=1.0))(plain, batch, torch.device("cpu"))
    assert sorted(terms) == ["aa", "loss", "seg"]
    assert torch.equal(terms["seg"], reference)
    assert torch.equal(terms["loss"], reference + 1.0 * terms["aa"])
    # the same loss with the LR head on a model that has one: its logits are the plain ones
    terms = DeepLabAuxLoss(ON)(with_head, batch, torch.device("cpu"))
    assert torch.equal(terms["seg"], reference) and sorted(terms) == ["aa", "loss", "lr_loss", "seg"]


def test_auxsegnet_weights_zero_is_the_plain_loss_and_model():
    from auxseg.steps.train_round import RoundAuxLoss, make_loss

    weights = LossWeights()
    plain = auxsegnet_model().eval()
    assert plain.seg_embed is None and "seg_embed" not in "".join(plain.state_dict())
    batch = make_batch()
    reference = auxsegnet_losses(plain(batch["image"]), batch, weights)
    assert make_loss(weights, AuxLossParams())(plain, batch, torch.device("cpu")) == reference
    terms = RoundAuxLoss(weights, AuxLossParams(aa_weight=0.5, aa_confidence="constant"))(plain, batch, torch.device("cpu"))
    assert set(terms) == set(reference) | {"aa"}
    for name in reference:
        if name != "loss":
            assert torch.equal(terms[name], reference[name]), name
    assert torch.equal(terms["loss"], reference["loss"] + 0.5 * terms["aa"])
    with_head = auxsegnet_model(embedding_dim=8).eval()
    groups = with_head.param_groups(10.0)
    assert {id(p) for p in with_head.seg_embed.parameters()} <= {id(p) for p in groups[1]["params"]}


def test_single_stage_weights_zero_has_only_the_baseline_terms():
    from auxseg.steps.train_single_stage import SingleStageLoss

    params = single_stage_params()
    model = single_stage_model(params).eval()
    assert model.embed is None
    loss = SingleStageLoss(params)
    batch = make_batch()
    before = loss(model, batch, torch.device("cpu"))
    assert sorted(before) == ["cls", "loss", "seg"] and before["seg"].item() == 0.0
    loss.on_step(epoch=1, step=1, max_steps=2)
    after = loss(model, batch, torch.device("cpu"))
    # the untrained model's pseudo labels miss the image's class, so the class-balanced CE zeroes the image; the
    # term is computed (it has a graph through the logits) rather than the warm-up's constant
    assert torch.equal(after["cls"], before["cls"]) and after["seg"].grad_fn is not None
    assert torch.equal(after["loss"], after["cls"] + after["seg"])


def test_logit_grid_takes_the_cell_centres_and_ignores_padding():
    labels = torch.arange(64).view(1, 8, 8) % 7
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[:, :, 6:] = False
    grid, confidence = to_logit_grid(labels, (2, 2), valid=valid, confidence=torch.full((1, 8, 8), 2.0))
    assert grid.tolist() == [[[labels[0, 2, 2].item(), 255], [labels[0, 6, 2].item(), 255]]]
    assert confidence.tolist() == [[[1.0, 1.0], [1.0, 1.0]]]


# ------------------------------------------------------------------------------------------------ AA and LR on
def _check_step(model, loss_fn, batch, embed_params):
    model.train()
    terms = loss_fn(model, batch, torch.device("cpu"))
    assert all(math.isfinite(v.item()) for v in terms.values()), terms
    assert terms["aa"].item() > 0 and terms["lr_loss"].item() > 0
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in embed_params)
    return terms


@pytest.mark.parametrize("variant", ["prototype", "correction"])
def test_deeplab_step_with_aa_and_lr_has_finite_losses_and_gradients(variant):
    from auxseg.steps.train_deeplab import DeepLabAuxLoss

    aux = dataclasses.replace(ON, lr_variant=variant)
    model = deeplab_model(embedding_dim=8)
    terms = _check_step(model, DeepLabAuxLoss(aux), make_batch(), list(model.embed.parameters()))
    assert ("lr_switched" in terms) == (variant == "correction")


@pytest.mark.parametrize("variant", ["prototype", "correction"])
def test_auxsegnet_step_with_aa_and_lr_has_finite_losses_and_gradients(variant):
    from auxseg.steps.train_round import RoundAuxLoss

    aux = dataclasses.replace(ON, lr_variant=variant)
    model = auxsegnet_model(embedding_dim=8)
    _check_step(model, RoundAuxLoss(LossWeights(), aux), make_batch(), list(model.seg_embed.parameters()))


@pytest.mark.parametrize("variant", ["prototype", "correction"])
def test_single_stage_step_with_aa_and_lr_has_finite_losses_and_gradients(variant):
    from auxseg.steps.train_single_stage import SingleStageLoss

    params = single_stage_params(dataclasses.replace(ON, lr_variant=variant))
    model = single_stage_model(params)
    loss = SingleStageLoss(params)
    loss.on_step(epoch=1, step=2, max_steps=4)
    _check_step(model, loss, make_batch(), list(model.embed.parameters()))


def test_lr_warmup_follows_the_engines_progress():
    from auxseg.steps.train_deeplab import DeepLabAuxLoss

    loss = DeepLabAuxLoss(dataclasses.replace(ON, lr_warmup=0.5))
    model = deeplab_model(embedding_dim=8).eval()
    batch = make_batch()
    loss.on_step(epoch=0, step=4, max_steps=10)
    assert loss(model, batch, torch.device("cpu"))["lr_loss"].item() == 0.0
    loss.on_step(epoch=1, step=5, max_steps=10)
    assert loss(model, batch, torch.device("cpu"))["lr_loss"].item() > 0.0


@pytest.mark.parametrize("which", ["deeplab", "auxsegnet", "single_stage"])
def test_short_training_with_aa_and_lr_logs_every_term(tmp_path, which):
    from auxseg.engine import train
    from auxseg.steps.train_deeplab import DeepLabAuxLoss
    from auxseg.steps.train_round import RoundAuxLoss
    from auxseg.steps.train_single_stage import SingleStageLoss

    aux = dataclasses.replace(ON, lr_warmup=0.25, lr_variant="correction")
    if which == "deeplab":
        model, loss = deeplab_model(embedding_dim=8), DeepLabAuxLoss(aux)
    elif which == "auxsegnet":
        model, loss = auxsegnet_model(embedding_dim=8), RoundAuxLoss(LossWeights(), aux)
    else:
        params = single_stage_params(aux)
        model, loss = single_stage_model(params), SingleStageLoss(params)
    seen = []
    original = loss.on_step

    def spy(**progress):
        seen.append(progress)
        original(**progress)

    loss.on_step = spy
    optim = OptimParams(epochs=2, batch_size=2, lr=0.001, log_every=1)
    train(model, DictSet(4), loss, param_groups=model.param_groups(10.0), optim=optim, runtime=CPU, seed=0,
          checkpoint_dir=tmp_path / "ckpt", fingerprint="aux", live_dir=tmp_path / "live", desc=which)
    assert [(p["epoch"], p["step"], p["max_steps"]) for p in seen] == [(0, 0, 4), (0, 1, 4), (1, 2, 4), (1, 3, 4)]
    curves = tmp_path / "live" / "plots" / "metrics" / "train"
    for term in ("loss", "aa", "lr_loss", "lr_switched"):
        rows = (curves / f"{term}.tsv").read_text().splitlines()[1:]
        values = [float(row.split("\t")[-1]) for row in rows]
        assert len(values) == 4 and all(math.isfinite(v) for v in values), term
    lr_values = [float(r.split("\t")[-1]) for r in (curves / "lr_loss.tsv").read_text().splitlines()[1:]]
    if which != "single_stage":  # the single-stage LR also waits for the segmentation warm-up (epoch 1)
        assert lr_values[0] == 0.0 and all(v > 0 for v in lr_values[1:])
    else:
        assert lr_values[:2] == [0.0, 0.0] and all(v > 0 for v in lr_values[2:])


# ------------------------------------------------------------------------------------------------ checkpoints
def test_a_round_keeps_or_drops_the_previous_rounds_embedding_head(tmp_path):
    from auxseg.steps.common import save_model
    from auxseg.steps.train_round import initialise

    source = auxsegnet_model(embedding_dim=8)
    with torch.no_grad():
        for p in source.seg_embed.parameters():
            p.fill_(0.25)
    meta = {"kind": "auxsegnet", "backbone": "tiny", "output_stride": 8, "num_classes_fg": NUM_FG, "branch_channels": 8,
            "use_cross_task_affinity": True, "extra_dilated_conv": True, "refine_target": "logits", "embedding_dim": 8}
    save_model(tmp_path / "prev.pt", source, normalization=source.backbone.normalization, **meta)
    base = parse_section(AuxSegNetParams, {"branch_channels": 8}, "auxsegnet")
    same = dataclasses.replace(base, aux_losses=dataclasses.replace(ON, lr_embed_dim=8))
    model, _ = initialise(tmp_path / "prev.pt", same)
    assert all(torch.all(p == 0.25) for p in model.seg_embed.parameters())
    wider = dataclasses.replace(base, aux_losses=dataclasses.replace(ON, lr_embed_dim=4))
    model, _ = initialise(tmp_path / "prev.pt", wider)
    assert model.seg_embed.proj[2].out_channels == 4
    model, _ = initialise(tmp_path / "prev.pt", base)
    assert model.seg_embed is None
    torch.testing.assert_close(model.seg_conv4.weight, source.seg_conv4.weight)
