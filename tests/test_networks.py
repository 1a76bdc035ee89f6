"""CamClassifier, AuxSegNet and DeepLab: shapes, the cross-task fusion against hand computations, param groups."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from auxseg.models.auxsegnet import AuxSegNet, AuxSegNetOutput, TaskAffinity, refine_with_affinity
from auxseg.models.backbones import create_backbone
from auxseg.models.classifier import CamClassifier
from auxseg.models.deeplab import DeepLab

NUM_FG = 5


def make_auxsegnet(**kwargs) -> AuxSegNet:
    torch.manual_seed(0)
    return AuxSegNet(create_backbone("tiny"), NUM_FG, **kwargs)


def parameter_ids(params) -> set[int]:
    return {id(p) for p in params}


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("height,width,h,w", [(321, 321, 41, 41), (375, 500, 47, 63)])
def test_auxsegnet_output_shapes(height, width, h, w):
    model = make_auxsegnet().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, height, width), return_affinity=True)
    assert isinstance(out, AuxSegNetOutput)
    assert out.cls_logits.shape == (1, NUM_FG)
    assert out.cam.shape == (1, NUM_FG, h, w)
    assert out.sal_init.shape == out.sal_refined.shape == (1, 1, h, w)
    assert out.seg_init.shape == out.seg_refined.shape == (1, NUM_FG + 1, h, w)
    assert out.affinity.shape == (1, h * w, h * w)


def test_classifier_shapes_and_cam_definition():
    torch.manual_seed(0)
    model = CamClassifier(create_backbone("tiny"), NUM_FG).eval()
    x = torch.randn(2, 3, 75, 50)
    with torch.no_grad():
        logits, cams, features = model(x), model.cams(x), model.backbone(x)
    assert logits.shape == (2, NUM_FG) and cams.shape == (2, NUM_FG, 10, 7)
    weight = model.fc8.weight[:, :, 0, 0]  # (K, C)
    torch.testing.assert_close(cams, torch.einsum("kc,bchw->bkhw", weight, features))
    # eval mode (no dropout): GAP then fc8 equals the spatial mean of the CAM (both linear)
    torch.testing.assert_close(logits, cams.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
    assert model.fc8.bias is None


def test_auxsegnet_logits_and_cam_match_classifier_definition():
    model = make_auxsegnet().eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
        features = model.backbone(x)
    torch.testing.assert_close(out.cam, F.conv2d(features, model.fc8.weight))
    torch.testing.assert_close(out.cls_logits, out.cam.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.cams(x), out.cam)
    assert out.affinity is None  # only returned on request


def test_bad_input_shape_raises():
    model = make_auxsegnet()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 4, 32, 32))


# ------------------------------------------------------------------------------------------------ fusion by hand
def conv2d_by_loops(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Direct (cross-correlation) convolution with zero padding, for one image: x (C, H, W)."""
    x, weight = x.detach(), weight.detach()
    out_channels, in_channels, kh, kw = weight.shape
    _, height, width = x.shape
    out = torch.zeros(out_channels, height, width, dtype=torch.float64)
    for o, i, j in itertools.product(range(out_channels), range(height), range(width)):
        total = 0.0 if bias is None else float(bias[o])
        for c, di, dj in itertools.product(range(in_channels), range(kh), range(kw)):
            y, z = i + di - padding, j + dj - padding
            if 0 <= y < height and 0 <= z < width:
                total += float(weight[o, c, di, dj]) * float(x[c, y, z])
        out[o, i, j] = total
    return out


def row_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


def test_cross_task_fusion_matches_hand_computation():
    model = make_auxsegnet()
    generator = torch.Generator().manual_seed(3)
    n = 5
    seg_aff = row_softmax(3 * torch.randn(1, n, n, generator=generator))
    sal_aff = row_softmax(3 * torch.randn(1, n, n, generator=generator))
    conv3, _, conv1 = model.cross_att
    with torch.no_grad():
        conv3.weight.copy_(torch.randn(2, 2, 3, 3, generator=generator) * 4)
        conv1.weight.copy_(torch.tensor([[1.5, -2.0], [0.5, 3.0]]).view(2, 2, 1, 1))
        conv1.bias.copy_(torch.tensor([0.2, -0.1]))
        a_ct = model.cross_task_affinity(seg_aff, sal_aff)

    stacked = torch.stack((seg_aff[0], sal_aff[0])).double()  # channel 0 = seg, 1 = sal
    hidden = conv2d_by_loops(stacked, conv3.weight.double(), None, padding=1).clamp(min=0)
    w1, b1 = conv1.weight.detach()[:, :, 0, 0].tolist(), conv1.bias.detach().tolist()
    expected = torch.zeros(n, n, dtype=torch.float64)
    for i, j in itertools.product(range(n), range(n)):
        s0 = b1[0] + sum(w1[0][c] * float(hidden[c, i, j]) for c in range(2))
        s1 = b1[1] + sum(w1[1][c] * float(hidden[c, i, j]) for c in range(2))
        omega0 = math.exp(s0) / (math.exp(s0) + math.exp(s1))
        expected[i, j] = omega0 * float(seg_aff[0, i, j]) + (1 - omega0) * float(sal_aff[0, i, j])
    torch.testing.assert_close(a_ct[0].double(), expected, atol=1e-6, rtol=1e-5)


def test_forward_pipeline_matches_independent_recomputation():
    """Branches, task affinities, feature enhancement and one-step refinement, recomputed with einsum."""
    model = make_auxsegnet().eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        out = model(x, return_affinity=True)
        features = model.backbone(x)

        def branch(prefix):
            conv = lambda k: getattr(model, f"{prefix}_conv{k}")  # noqa: E731
            f = F.relu(conv(2)(F.relu(conv(1)(features))))
            att = getattr(model, f"{prefix}_att")
            q, k = att.theta(f).flatten(2), att.phi(f).flatten(2)  # (B, C, N)
            affinity = torch.softmax(torch.einsum("bci,bcj->bij", q, k), dim=-1)
            v = getattr(model, f"{prefix}_g")(f).flatten(2)
            y = torch.einsum("bij,bcj->bci", affinity, v).view_as(f)
            f = f + getattr(model, f"{prefix}_W")(y)
            return conv(4)(F.relu(conv(3)(f))), affinity

        seg_init, seg_aff = branch("seg")
        sal_init, sal_aff = branch("sal")
        a_ct = model.cross_task_affinity(seg_aff, sal_aff)
    torch.testing.assert_close(out.seg_init, seg_init, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.sal_init, sal_init, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.affinity, a_ct, atol=1e-6, rtol=1e-4)
    b, c, h, w = seg_init.shape
    refined = torch.einsum("bij,bcj->bci", a_ct, out.seg_init.flatten(2)).view(b, c, h, w)
    torch.testing.assert_close(out.seg_refined, refined, atol=1e-5, rtol=1e-4)
    refined_sal = torch.einsum("bij,bcj->bci", a_ct, out.sal_init.flatten(2)).view(b, 1, h, w)
    torch.testing.assert_close(out.sal_refined, refined_sal, atol=1e-5, rtol=1e-4)


def test_refinement_uses_row_major_flattening_by_hand():
    maps = torch.arange(6, dtype=torch.float32).view(1, 1, 2, 3)  # value = y * 3 + x
    affinity = torch.zeros(1, 6, 6)
    affinity[0, 0, 5] = 1.0  # position (0, 0) takes the value at (1, 2)
    affinity[0, 4, 1] = 0.5  # position (1, 1) takes half of the value at (0, 1)
    affinity[0, 4, 3] = 0.25  # ... plus a quarter of the value at (1, 0)
    refined = refine_with_affinity(affinity, maps)
    expected = torch.tensor([[5.0, 0, 0], [0, 0.5 * 1 + 0.25 * 3, 0]]).view(1, 1, 2, 3)
    torch.testing.assert_close(refined, expected)
    assert refine_with_affinity(None, maps) is maps


def test_cross_task_affinity_rows_sum_to_one_at_init():
    model = make_auxsegnet().eval()
    with torch.no_grad():
        affinity = model(torch.randn(1, 3, 96, 120), return_affinity=True).affinity
    row_sums = affinity.sum(dim=-1)
    torch.testing.assert_close(row_sums, torch.ones_like(row_sums), atol=1e-3, rtol=0)
    assert (affinity >= 0).all()


def test_task_affinity_rows_sum_to_one():
    torch.manual_seed(0)
    block = TaskAffinity(8)
    affinity = block(torch.randn(2, 8, 3, 4))
    assert affinity.shape == (2, 12, 12)
    torch.testing.assert_close(affinity.sum(-1), torch.ones(2, 12))


def test_ablation_without_cross_task_affinity():
    model = make_auxsegnet(use_cross_task_affinity=False).eval()
    assert model.cross_att is None
    assert not any("cross_att" in name for name, _ in model.named_parameters())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 40), return_affinity=True)
    assert out.affinity is None
    assert torch.equal(out.seg_refined, out.seg_init)
    assert torch.equal(out.sal_refined, out.sal_init)
    assert model.cross_task_affinity(torch.eye(3)[None], torch.eye(3)[None]) is None


# ------------------------------------------------------------------------------------------------ param groups
def test_auxsegnet_param_groups_follow_released_code():
    model = make_auxsegnet()
    groups = model.param_groups(head_lr_mult=10.0)
    by_name = {group["name"]: group for group in groups}
    base, heads = by_name["backbone_and_cross_att"], by_name["heads"]
    assert base["lr_mult"] == 1.0 and heads["lr_mult"] == 10.0
    named = dict(model.named_parameters())
    base_ids, head_ids = parameter_ids(base["params"]), parameter_ids(heads["params"])
    assert base_ids.isdisjoint(head_ids)
    assert base_ids | head_ids == parameter_ids(named.values())
    for name, param in named.items():
        in_heads = name.startswith(("fc8", "seg_", "sal_"))  # the released code's 'seg'/'sal'/'fc8' name test
        assert (id(param) in head_ids) == in_heads, name
    assert parameter_ids(model.cross_att.parameters()) <= base_ids
    for required in ("seg_att.theta.weight", "sal_att.phi.bias", "seg_g.weight", "sal_W.bias", "fc8.weight"):
        assert id(named[required]) in head_ids


def test_classifier_and_deeplab_param_groups():
    torch.manual_seed(0)
    classifier = CamClassifier(create_backbone("tiny"), NUM_FG)
    groups = {g["name"]: g for g in classifier.param_groups(head_lr_mult=5.0)}
    assert groups["fc8"]["lr_mult"] == 5.0 and groups["backbone"]["lr_mult"] == 1.0
    assert parameter_ids(groups["fc8"]["params"]) == {id(classifier.fc8.weight)}
    assert parameter_ids(groups["backbone"]["params"]) == parameter_ids(classifier.backbone.parameters())
    deeplab = DeepLab(create_backbone("tiny"), NUM_FG + 1)
    groups = {g["name"]: g for g in deeplab.param_groups(head_lr_mult=10.0)}
    assert parameter_ids(groups["head"]["params"]) == parameter_ids(deeplab.head.parameters())
    assert parameter_ids(groups["backbone"]["params"]) | parameter_ids(groups["head"]["params"]) == parameter_ids(
        deeplab.parameters()
    )
    with pytest.raises(ValueError, match="head_lr_mult"):
        deeplab.param_groups(head_lr_mult=0)


def test_head_initialisation_is_xavier_uniform_and_no_bias_on_output_convs():
    model = make_auxsegnet()
    for name in ("fc8", "seg_conv1", "seg_conv2", "seg_conv3", "seg_conv4", "sal_conv1", "sal_conv4"):
        weight = getattr(model, name).weight
        fan_out, fan_in = weight.shape[0] * weight[0, 0].numel(), weight.shape[1] * weight[0, 0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert weight.abs().max() <= bound + 1e-7, name
        assert weight.abs().max() > 0.5 * bound, name  # spread over the xavier range, not a smaller default
    assert model.seg_conv4.bias is None and model.sal_conv4.bias is None and model.fc8.bias is None
    assert model.seg_conv3.dilation == (18, 18) and model.seg_conv3.padding == (18, 18)
    assert model.seg_conv4.out_channels == NUM_FG + 1 and model.sal_conv4.out_channels == 1


# ------------------------------------------------------------------------------------------------ loading
def test_load_classifier_state_loads_backbone_and_fc8_only():
    torch.manual_seed(1)
    classifier = CamClassifier(create_backbone("tiny"), NUM_FG)
    model = make_auxsegnet()
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("backbone.", "fc8."))}
    model.load_classifier_state(classifier.state_dict())
    for key, value in classifier.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    for key, value in heads_before.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_load_classifier_state_is_strict():
    torch.manual_seed(1)
    state = CamClassifier(create_backbone("tiny"), NUM_FG).state_dict()
    model = make_auxsegnet()
    missing = {k: v for k, v in state.items() if k != "fc8.weight"}
    with pytest.raises(ValueError, match="fc8"):
        model.load_classifier_state(missing)
    with pytest.raises(ValueError, match="outside backbone"):
        model.load_classifier_state({**state, "seg_conv1.weight": torch.zeros(1)})
    wrong_classes = CamClassifier(create_backbone("tiny"), NUM_FG + 2).state_dict()
    with pytest.raises(ValueError, match="size mismatch"):
        model.load_classifier_state(wrong_classes)
    backbone_only_missing = {k: v for k, v in state.items() if k != next(iter(state))}
    with pytest.raises(ValueError, match="backbone"):
        model.load_classifier_state(backbone_only_missing)


# ------------------------------------------------------------------------------------------------ DeepLab, factories
def test_deeplab_shapes_and_training_step():
    torch.manual_seed(0)
    model = DeepLab(create_backbone("tiny"), 4)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 75, 100)).shape == (1, 4, 10, 13)
    model.train()
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 4, 8, 8)
    logits.mean().backward()
    assert model.head[-1].weight.grad.abs().sum() > 0


def test_factories_build_on_registry_backbones():
    assert CamClassifier.from_backbone_name("tiny", 3).fc8.out_channels == 3
    model = AuxSegNet.from_backbone_name("tiny", 3, use_cross_task_affinity=False, branch_channels=16)
    assert model.cross_att is None and model.seg_conv1.out_channels == 16
    assert DeepLab.from_backbone_name("tiny", 4, atrous_rates=(2, 4)).num_classes == 4
    with pytest.raises(ValueError, match="unknown backbone"):
        AuxSegNet.from_backbone_name("no-such-net", 3)


def test_resnet38_auxsegnet_parameter_count():
    """Published 115,382,122 minus the two NLBlocks' unused g (16,512) and W_z conv+BN (16,512 + 256) = 115,315,562."""
    torch.manual_seed(0)
    model = AuxSegNet(create_backbone("resnet38"), 20)
    unused_per_block = (128 * 128 + 128) * 2 + 2 * 128
    assert sum(p.numel() for p in model.parameters()) == 115_382_122 - 2 * unused_per_block


@pytest.mark.slow
@pytest.mark.parametrize("backbone_name", ["resnet38", "resnet101"])
def test_full_network_shapes_with_large_backbones(backbone_name):
    torch.manual_seed(0)
    model = AuxSegNet(create_backbone(backbone_name), 20).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 375, 500), return_affinity=True)
    assert out.cam.shape == (1, 20, 47, 63)
    assert out.seg_refined.shape == (1, 21, 47, 63) and out.sal_refined.shape == (1, 1, 47, 63)
    assert out.affinity.shape == (1, 2961, 2961)
    assert torch.isfinite(out.seg_refined).all()


# ------------------------------------------------------------------------------------------------ paper variants
def test_paper_variant_without_extra_dilated_conv():
    code = make_auxsegnet(branch_channels=16)
    paper = make_auxsegnet(branch_channels=16, extra_dilated_conv=False)
    assert code.seg_conv3 is not None and code.sal_conv3 is not None
    assert paper.seg_conv3 is None and paper.sal_conv3 is None
    assert not any(name.startswith(("seg_conv3", "sal_conv3")) for name in paper.state_dict())
    removed = sum(p.numel() for m in (code.seg_conv3, code.sal_conv3) for p in m.parameters())
    assert sum(p.numel() for p in code.parameters()) - sum(p.numel() for p in paper.parameters()) == removed
    with torch.no_grad():
        out = paper.eval()(torch.randn(1, 3, 40, 48))
    assert out.seg_init.shape == (1, NUM_FG + 1, 5, 6) and out.sal_refined.shape == (1, 1, 5, 6)
    # the branch goes straight from the enhanced features to the 1×1 classifier
    heads = parameter_ids(paper.param_groups()[1]["params"])
    assert parameter_ids(paper.seg_conv4.parameters()) <= heads


def test_paper_variant_refines_probabilities():
    model = make_auxsegnet(branch_channels=16, refine_target="probabilities").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 48), return_affinity=True)
    affinity = out.affinity[0]  # (N, N)
    seg_probs = torch.softmax(out.seg_init[0].flatten(1), dim=0)  # (K+1, N)
    expected_seg = seg_probs @ affinity.T  # (K+1, N): Σ_j A[i, j] p[c, j]
    expected_seg = expected_seg / expected_seg.sum(0, keepdim=True)
    torch.testing.assert_close(torch.softmax(out.seg_refined[0].flatten(1), dim=0), expected_seg, atol=1e-5, rtol=1e-4)
    expected_sal = torch.sigmoid(out.sal_init[0].flatten(1)) @ affinity.T
    torch.testing.assert_close(torch.sigmoid(out.sal_refined[0].flatten(1)), expected_sal, atol=1e-5, rtol=1e-4)


def test_unknown_refine_target_is_rejected():
    with pytest.raises(ValueError, match="refine_target"):
        make_auxsegnet(refine_target="features")


def test_deeplab_head_width_keeps_the_deeplabv3_layout():
    """head_channels=256 is torchvision's DeepLabHead key for key; a narrower head only changes widths."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    wide = DeepLab(create_backbone("tiny"), 5)
    reference = DeepLabHead(256, 5, atrous_rates=(6, 12, 18))
    assert {k: v.shape for k, v in wide.head.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    narrow = DeepLab(create_backbone("tiny"), 5, head_channels=32)
    assert narrow.head[0].project[0].out_channels == 32 and narrow.head[-1].in_channels == 32
    with torch.no_grad():
        assert narrow.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5, 8, 8)
    with pytest.raises(ValueError, match="head_channels"):
        DeepLab(create_backbone("tiny"), 5, head_channels=0)


def test_deeplab_backbone_from_classifier_file(tmp_path):
    from auxseg.config import DeepLabParams
    from auxseg.params import parse_section
    from auxseg.normalization import IMAGENET, Normalization
    from auxseg.steps.common import save_model
    from auxseg.steps.train_deeplab import build_deeplab, load_classifier_backbone

    torch.manual_seed(0)
    classifier = CamClassifier.from_backbone_name("tiny", 3)
    path = tmp_path / "classifier.pt"
    recorded = Normalization((0.3, 0.4, 0.5), (0.2, 0.25, 0.3))
    save_model(path, classifier, normalization=recorded, kind="classifier", backbone="tiny", output_stride=8,
               num_classes_fg=3)
    params = parse_section(DeepLabParams, {"head_channels": 16, "init_from_classifier": True}, "deeplab")
    model = build_deeplab(params, 4)
    assert load_classifier_backbone(model, path, params) == recorded  # DeepLab trains with the classifier's
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key

    # a model file of another kind, or another backbone, is refused with the file's name
    save_model(tmp_path / "deeplab.pt", model, normalization=IMAGENET, kind="deeplab", backbone="tiny")
    with pytest.raises(ValueError, match="deeplab.pt.*expected a classifier"):
        load_classifier_backbone(model, tmp_path / "deeplab.pt", params)
    overridden = parse_section(
        DeepLabParams, {"head_channels": 16, "init_from_classifier": True, "network": {"mean": [0.5, 0.5, 0.5]}},
        "deeplab",
    )
    with pytest.raises(ValueError, match=r"deeplab.network.mean: \[0.5, 0.5, 0.5\] differs .*classifier.pt"):
        load_classifier_backbone(build_deeplab(overridden, 4), path, overridden)
    save_model(path, classifier, normalization=IMAGENET, kind="classifier", backbone="tiny", output_stride=16,
               num_classes_fg=3)
    with pytest.raises(ValueError, match="output_stride"):
        load_classifier_backbone(model, path, params)


def test_deeplab_init_from_classifier_conflicts_with_weights():
    from auxseg.config import DeepLabParams
    from auxseg.params import ParamError, parse_section

    with pytest.raises(ParamError, match="deeplab.init_from_classifier"):
        parse_section(
            DeepLabParams,
            {"init_from_classifier": True, "network": {"backbone": "resnet50", "weights": "r50.pth"}},
            "deeplab",
        )
