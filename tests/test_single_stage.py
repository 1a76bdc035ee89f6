"""1-Stage network (Araslanov & Roth): shapes, nGWP + focal penalty, PAMR, pseudo labels, class-balanced CE."""

import itertools
import math

import pytest
import torch

from auxseg.losses import classification_loss, label_reassign_loss
from auxseg.models.single_stage import (
    SingleStageNet,
    SingleStageOutput,
    class_balanced_ce,
    ngwp_focal_scores,
    pamr,
    pseudo_labels_from_masks,
    stochastic_gate,
)

NUM_FG = 5
SMALL = {"aspp_channels": 32, "skip_channels": 16, "decoder_channels": 32, "head_channels": 32}


def make_net(backbone: str = "tiny", **kwargs) -> SingleStageNet:
    torch.manual_seed(0)
    return SingleStageNet.from_backbone_name(backbone, NUM_FG, **{**SMALL, **kwargs})


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("backbone", ["tiny", "resnet50", "resnet38"])
def test_output_shapes(backbone):
    model = make_net(backbone, embedding_dim=8).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 128))
    assert isinstance(out, SingleStageOutput)
    assert out.cls_logits.shape == (2, NUM_FG)
    assert out.masks.shape == out.seg_logits.shape == (2, NUM_FG + 1, 24, 32)
    assert out.embeddings.shape == (2, 8, 24, 32)
    assert torch.all(out.seg_logits[:, 0] == 1.0)
    torch.testing.assert_close(out.masks, torch.softmax(out.seg_logits, dim=1))
    torch.testing.assert_close(out.embeddings.norm(dim=1), torch.ones(2, 24, 32))
    torch.testing.assert_close(out.cls_logits, ngwp_focal_scores(out.masks, out.seg_logits))


def test_odd_size_and_no_embedding():
    model = make_net().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 75, 50))
    assert out.masks.shape == (1, NUM_FG + 1, 19, 13) and out.embeddings is None
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 4, 32, 32))


def test_aspp_rates_follow_output_stride():
    assert make_net().aspp.convs[1][0].dilation == (12, 12)
    assert make_net(output_stride=16).aspp.convs[1][0].dilation == (6, 6)
    assert make_net(atrous_rates=(2, 4)).aspp.convs[2][0].dilation == (4, 4)


def test_param_groups_cover_every_parameter_once():
    model = make_net(embedding_dim=8)
    groups = model.param_groups(10.0)
    ids = [id(p) for group in groups for p in group["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    assert id(model.embed.proj[0].weight) in {id(p) for p in groups[1]["params"]}
    with pytest.raises(ValueError):
        model.param_groups(0.0)


# ------------------------------------------------------------------------------------------------ stochastic gate
def test_stochastic_gate_eval_formula_and_model_wiring():
    deep, shallow = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(stochastic_gate(deep, shallow, 0.3, training=False), 0.7 * deep + 0.3 * shallow)
    assert stochastic_gate(deep, shallow, 0.0, training=True) is deep

    model = make_net().eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        features = model.backbone.forward_features(x)
        skip = model.skip(features["low"])
        aspp = torch.nn.functional.interpolate(model.aspp(features["out"]), size=skip.shape[-2:], mode="bilinear")
        deep = model.fuse(torch.cat((aspp, skip), dim=1))
        shallow = model.gci(features["low"], deep)
        torch.testing.assert_close(model.decoder_features(x), 0.7 * deep + 0.3 * shallow)
        torch.testing.assert_close(model(x).seg_logits, model(x).seg_logits)  # eval is deterministic


def test_stochastic_gate_training_picks_streams_with_deep_expectation():
    torch.manual_seed(0)
    deep, shallow = torch.full((200_000,), 1.0), torch.full((200_000,), -1.0)
    out = stochastic_gate(deep, shallow, 0.3, training=True)
    rescaled = (1.0 + 0.3) / 0.7
    is_shallow = out == -1.0
    assert torch.all(is_shallow | torch.isclose(out, torch.tensor(rescaled)))
    assert abs(is_shallow.float().mean().item() - 0.3) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.02


def test_gci_modulation_by_hand():
    model = make_net()
    gci = model.gci.eval()
    shallow, deep = torch.randn(1, model.backbone.low_channels, 4, 5), torch.randn(1, 32, 4, 5)
    with torch.no_grad():
        attrs = gci.fc_deep(deep).amax(dim=(2, 3))[0]
        gamma, beta = attrs[:32].view(1, 32, 1, 1), attrs[32:].view(1, 32, 1, 1)
        expected = gci.fc_out(torch.relu(gci.fc_skip(shallow) * (gamma + 1) + beta))
        torch.testing.assert_close(gci(shallow, deep), expected)


# ------------------------------------------------------------------------------------------------ nGWP + focal penalty
def test_ngwp_focal_scores_by_hand():
    # one image, background + 2 classes, 1×2 positions
    logits = torch.tensor([[[[1.0, 1.0]], [[2.0, -1.0]], [[0.5, 3.0]]]])
    masks = torch.softmax(logits, dim=1)
    m = masks[0, :, 0].tolist()  # m[c][i]
    s = logits[0, :, 0].tolist()
    expected = []
    for c in (1, 2):
        total = m[c][0] + m[c][1]
        mean = total / 2
        ngwp = (m[c][0] * s[c][0] + m[c][1] * s[c][1]) / (1 + total)
        expected.append(ngwp + (1 - mean) ** 3 * math.log(0.01 + mean))
    torch.testing.assert_close(ngwp_focal_scores(masks, logits), torch.tensor([expected]))
    # other p and λ
    c = 1
    mean = (m[c][0] + m[c][1]) / 2
    ngwp = (m[c][0] * s[c][0] + m[c][1] * s[c][1]) / (1 + 2 * mean)
    got = ngwp_focal_scores(masks, logits, p=1, lam=0.1)[0, 0].item()
    assert got == pytest.approx(ngwp + (1 - mean) * math.log(0.1 + mean), rel=1e-5)


# ------------------------------------------------------------------------------------------------ PAMR
def clamp_neighbour(x, y, xx, height, width):
    return x[..., min(max(y, 0), height - 1), min(max(xx, 0), width - 1)]


def pamr_by_loops(image, masks, dilations, iterations):
    """Per-pixel reference of spec §1.3 step 1 for one image: image (Ch, h, w), masks (C, h, w)."""
    image, masks = image.double(), masks.double()
    channels, height, width = image.shape
    directions = [(dy, dx) for dy, dx in itertools.product((-1, 0, 1), repeat=2) if (dy, dx) != (0, 0)]
    offsets = [(dy * d, dx * d) for d in dilations for dy, dx in directions]
    weights = torch.zeros(len(offsets), height, width, dtype=torch.float64)
    for y, x in itertools.product(range(height), range(width)):
        windows = [(dy * d, dx * d) for d in dilations for dy, dx in itertools.product((-1, 0, 1), repeat=2)]
        samples = torch.stack([clamp_neighbour(image, y + oy, x + ox, height, width) for oy, ox in windows], dim=1)
        sigma = samples.std(dim=1)  # (Ch,)
        kernel = [
            -sum(
                abs(image[ch, y, x] - clamp_neighbour(image[ch], y + oy, x + ox, height, width))
                / (1e-8 + 0.1 * sigma[ch])
                for ch in range(channels)
            )
            / channels
            for oy, ox in offsets
        ]
        weights[:, y, x] = torch.softmax(torch.stack(kernel), dim=0)
    for _ in range(iterations):
        new = torch.zeros_like(masks)
        for y, x in itertools.product(range(height), range(width)):
            for p, (oy, ox) in enumerate(offsets):
                new[:, y, x] += weights[p, y, x] * clamp_neighbour(masks, y + oy, x + ox, height, width)
        masks = new
    return masks


def test_pamr_constant_image_is_replicate_padded_neighbour_average():
    masks = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)
    image = torch.full((1, 3, 3, 4), 0.5)
    refined = pamr(image, masks, dilations=(1,), iterations=1)
    m = masks[0, 0].tolist()
    # pixel (0, 0): neighbours with clamping: (-1,-1)->(0,0), (-1,0)->(0,0), (-1,1)->(0,1), (0,-1)->(0,0), (0,1)->(0,1),
    # (1,-1)->(1,0), (1,0)->(1,0), (1,1)->(1,1)
    corner = (m[0][0] * 3 + m[0][1] * 2 + m[1][0] * 2 + m[1][1]) / 8
    # pixel (1, 1): the 8 true neighbours
    inner = (m[0][0] + m[0][1] + m[0][2] + m[1][0] + m[1][2] + m[2][0] + m[2][1] + m[2][2]) / 8
    assert refined[0, 0, 0, 0].item() == pytest.approx(corner)
    assert refined[0, 0, 1, 1].item() == pytest.approx(inner)
    expected = pamr_by_loops(image[0], masks[0], (1, 2), 2)
    torch.testing.assert_close(pamr(image, masks, dilations=(1, 2), iterations=2)[0].double(), expected)


def test_pamr_matches_per_pixel_reference_on_a_textured_image():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 5, 6)
    masks = torch.softmax(torch.randn(1, 3, 5, 6), dim=1)
    expected = pamr_by_loops(image[0], masks[0], (1, 2, 4), 3)
    got = pamr(image, masks, dilations=(1, 2, 4), iterations=3)
    torch.testing.assert_close(got[0].double(), expected, rtol=1e-5, atol=1e-6)


def test_pamr_invariants_and_resizing():
    torch.manual_seed(1)
    image = torch.rand(2, 3, 40, 56)  # resized to the mask size inside
    logits = torch.randn(2, 4, 10, 14, requires_grad=True)
    masks = torch.softmax(logits, dim=1)
    refined = pamr(image, masks)
    assert refined.shape == (2, 4, 10, 14) and not refined.requires_grad
    torch.testing.assert_close(refined.sum(dim=1), torch.ones(2, 10, 14))
    assert not torch.allclose(refined, masks.detach())
    constant = torch.full((2, 4, 10, 14), 0.25)
    torch.testing.assert_close(pamr(image, constant), constant)
    torch.testing.assert_close(pamr(image, masks, iterations=0), masks.detach())


# ------------------------------------------------------------------------------------------------ pseudo labels
def test_pseudo_labels_thresholds_ambiguity_and_absent_classes():
    masks = torch.zeros(2, 3, 1, 5)
    # image 0: class 2 absent. τ_bg = max(0.2, 0.7·0.9) = 0.63, τ_1 = max(0.2, 0.6·0.8) = 0.48
    masks[0, 0, 0] = torch.tensor([0.9, 0.1, 0.7, 0.2, 0.05])
    masks[0, 1, 0] = torch.tensor([0.05, 0.8, 0.6, 0.1, 0.05])
    masks[0, 2, 0] = torch.tensor([0.05, 0.1, 0.0, 0.7, 0.9])  # would win pixels 3 and 4 if not zeroed
    # image 1: both classes present. τ_bg = max(0.2, 0.7·1.0) = 0.7; τ_1 = max(0.2, 0.6·0.25 = 0.15) = 0.2;
    # τ_2 = 0.6·1.0 = 0.6 (0.65 passes for a class, would not for the background ratio 0.7)
    masks[1, 0, 0] = torch.tensor([1.0, 0.65, 0.1, 0.1, 0.7])
    masks[1, 1, 0] = torch.tensor([0.0, 0.0, 0.21, 0.25, 0.0])
    masks[1, 2, 0] = torch.tensor([0.0, 0.0, 0.65, 1.0, 0.0])
    image_labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    labels = pseudo_labels_from_masks(masks, image_labels)
    assert labels.dtype == torch.long
    assert labels[0, 0].tolist() == [0, 1, 255, 255, 255]  # px 2: bg and class 1 both pass → ambiguous
    # px 1: 0.65 < τ_bg = 0.7 → nothing; px 2: class 1 (0.21 > 0.2) and class 2 (0.65 > 0.6) → ambiguous;
    # px 3: 0.25 > 0.2 and 1.0 > 0.6 → ambiguous; px 4: 0.7 is not > 0.7 → nothing
    assert labels[1, 0].tolist() == [0, 255, 255, 255, 255]
    masks[1, 2, 0, 2] = 0.5
    assert pseudo_labels_from_masks(masks, image_labels)[1, 0, 2].item() == 1
    # r and the floor are arguments; ``size`` upsamples first
    assert pseudo_labels_from_masks(masks, image_labels, r_bg=0.5, ignore_index=-1)[1, 0].tolist()[:2] == [0, 0]
    assert pseudo_labels_from_masks(masks, image_labels, size=(2, 10)).shape == (2, 2, 10)


# ------------------------------------------------------------------------------------------------ class-balanced CE
def cross_entropy_by_hand(logit_column, target):
    return math.log(sum(math.exp(v) for v in logit_column)) - logit_column[target]


def test_class_balanced_ce_by_hand_and_image_zeroing():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 1, 4, requires_grad=True)
    labels = torch.tensor([[[0, 0, 1, 255]], [[0, 1, 1, 0]]])
    image_labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # image 1 misses class 2 in its pseudo mask
    per_image = class_balanced_ce(logits, labels, image_labels, reduction="none")
    values = logits.detach()[0, :, 0].T.tolist()  # values[i] = logits over classes at pixel i
    # image 0: N_0 = 2, N_1 = 1, N = 3 → w_0 = (3 - 2) / 4, w_1 = (3 - 1) / 4; mean over all 4 pixels
    expected0 = (0.25 * cross_entropy_by_hand(values[0], 0) + 0.25 * cross_entropy_by_hand(values[1], 0)
                 + 0.5 * cross_entropy_by_hand(values[2], 1)) / 4
    assert per_image[0].item() == pytest.approx(expected0, rel=1e-5)
    assert per_image[1].item() == 0.0
    loss = class_balanced_ce(logits, labels, image_labels)
    assert loss.item() == pytest.approx(expected0 / 2, rel=1e-5)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    assert torch.all(logits.grad[0, :, 0, 3] == 0)  # ignored pixel
    # with class 2 not in its image label, image 1 counts: N_0 = N_1 = 2 → w = 0.4
    values1 = logits.detach()[1, :, 0].T.tolist()
    expected1 = 0.4 * sum(cross_entropy_by_hand(values1[i], t) for i, t in enumerate([0, 1, 1, 0])) / 4
    got = class_balanced_ce(logits, labels, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), reduction="none")
    assert got[1].item() == pytest.approx(expected1, rel=1e-5)


def test_class_balanced_ce_upsamples_and_validates():
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4] = 1
    assert class_balanced_ce(logits, labels, torch.tensor([[1.0, 0.0]])).dim() == 0
    # only background in the mask of an image whose label says class 1 → zeroed
    assert class_balanced_ce(logits, torch.zeros_like(labels), torch.tensor([[1.0, 0.0]])).item() == 0.0
    with pytest.raises(ValueError, match="outside"):
        class_balanced_ce(logits, labels + 5, torch.tensor([[1.0, 0.0]]))


# ------------------------------------------------------------------------------------------------ training step
def test_train_step_gradients_reach_backbone_and_heads():
    model = make_net(embedding_dim=8).train()
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    image_labels = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    out = model(images)
    # the online pipeline runs end to end (it may zero images, so the seg gradient check uses fixed labels below)
    refined = pamr(images, out.masks)
    pseudo = pseudo_labels_from_masks(refined, image_labels, size=(64, 64))
    assert torch.isfinite(class_balanced_ce(out.seg_logits, pseudo, image_labels))
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, :20] = 1
    labels[0, 40:] = 3
    labels[1, :, :30] = 2
    labels[1, :, 60:] = 255
    small = torch.nn.functional.interpolate(labels[:, None].float(), size=(16, 16), mode="nearest")[:, 0].long()
    loss = (
        classification_loss(out.cls_logits, image_labels)
        + class_balanced_ce(out.seg_logits, labels, image_labels)
        + label_reassign_loss(out.embeddings, small, image_labels)
    )
    loss.backward()
    for name, param in [
        ("backbone.stem.0.weight", model.backbone.stem[0].weight),
        ("backbone.context.1.0.weight", model.backbone.context[1][0].weight),
        ("aspp", model.aspp.project[0].weight),
        ("skip", model.skip[0].weight),
        ("fuse", model.fuse[0].weight),
        ("gci.fc_deep", model.gci.fc_deep[0].weight),
        ("gci.fc_skip", model.gci.fc_skip[0].weight),
        ("head.last", model.head[-1].weight),
        ("embed", model.embed.proj[0].weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
