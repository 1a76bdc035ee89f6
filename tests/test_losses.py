"""AuxSegNet loss terms against hand computations, ignore handling, weights and gradient flow."""

import math

import pytest
import torch

from auxseg.losses import (
    AuxSegNetLossWeights,
    auxsegnet_losses,
    classification_loss,
    saliency_bce,
    segmentation_ce,
)
from auxseg.models.auxsegnet import AuxSegNet, AuxSegNetOutput
from auxseg.models.backbones import create_backbone
from auxseg.params import ParamError, parse_section


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def bce_by_hand(logit: float, target: float) -> float:
    return -(target * log_sigmoid(logit) + (1 - target) * log_sigmoid(-logit))


def test_classification_loss_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    expected = sum(bce_by_hand(float(x), float(y)) for x, y in zip(logits.flatten(), labels.flatten())) / 6
    assert classification_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        classification_loss(logits, labels[:, :2])


def test_segmentation_ce_by_hand_with_ignore():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 4, 4, generator=generator)
    target = torch.randint(0, 2, (1, 4, 4), generator=generator)
    target[0, 0, :3] = 255
    total, count = 0.0, 0
    for y in range(4):
        for x in range(4):
            label = int(target[0, y, x])
            if label == 255:
                continue
            scores = logits[0, :, y, x].double()
            total += float(torch.logsumexp(scores, 0) - scores[label])
            count += 1
    assert count == 13
    assert segmentation_ce(logits, target).item() == pytest.approx(total / count, rel=1e-6)


def test_segmentation_ce_upsamples_logits_to_the_target():
    # spatially constant logits stay constant under bilinear upsampling
    logits = torch.tensor([1.0, -0.5, 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    target = torch.tensor([[[0, 2, 255, 1]] * 4])  # (1, 4, 4)
    log_norm = math.log(sum(math.exp(v) for v in (1.0, -0.5, 2.0)))
    per_class = {0: log_norm - 1.0, 1: log_norm + 0.5, 2: log_norm - 2.0}
    expected = (per_class[0] + per_class[2] + per_class[1]) / 3
    assert segmentation_ce(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_segmentation_ce_all_ignored_is_zero_with_finite_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_ce(logits, torch.full((2, 4, 4), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and not logits.grad.any()


def test_segmentation_ce_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"labels \[3\] outside 0..2"):
        segmentation_ce(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 3], [255, 1]]]))


def test_saliency_bce_binarises_at_half_and_averages_all_pixels():
    logits = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    saliency = torch.tensor([[[0.5, 0.51], [1.0, 0.0]]])  # → targets 0, 1, 1, 0 (0.5 is background)
    expected = (bce_by_hand(0.5, 0) + bce_by_hand(-1.0, 1) + bce_by_hand(2.0, 1) + bce_by_hand(0.0, 0)) / 4
    assert saliency_bce(logits, saliency).item() == pytest.approx(expected, rel=1e-6)
    assert saliency_bce(logits, saliency.unsqueeze(1)).item() == pytest.approx(expected, rel=1e-6)


def make_output(generator: torch.Generator, num_fg: int = 2, size: int = 4) -> AuxSegNetOutput:
    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    return AuxSegNetOutput(
        cls_logits=rand(1, num_fg),
        cam=rand(1, num_fg, size, size),
        sal_init=rand(1, 1, size, size),
        sal_refined=rand(1, 1, size, size),
        seg_init=rand(1, num_fg + 1, size, size),
        seg_refined=rand(1, num_fg + 1, size, size),
        affinity=None,
    )


def test_auxsegnet_losses_terms_and_weights_by_hand():
    generator = torch.Generator().manual_seed(1)
    output = make_output(generator)
    seg = torch.randint(0, 3, (1, 4, 4), generator=generator)
    seg[0, -1] = 255
    saliency = torch.rand(1, 4, 4, generator=generator)
    batch = {"image_labels": torch.tensor([[1.0, 0.0]]), "saliency": saliency, "seg": seg}

    def ce_by_hand(logits):
        values = []
        for y in range(4):
            for x in range(4):
                label = int(seg[0, y, x])
                if label != 255:
                    values.append(float(torch.logsumexp(logits[0, :, y, x], 0) - logits[0, label, y, x]))
        return sum(values) / len(values)

    def sal_by_hand(logits):
        pairs = zip(logits.flatten().tolist(), (saliency.flatten() > 0.5).float().tolist())
        return sum(bce_by_hand(x, t) for x, t in pairs) / 16

    cls = (bce_by_hand(float(output.cls_logits[0, 0]), 1) + bce_by_hand(float(output.cls_logits[0, 1]), 0)) / 2
    expected = {
        "cls": cls,
        "sal_init": sal_by_hand(output.sal_init),
        "sal_refined": sal_by_hand(output.sal_refined),
        "seg_init": ce_by_hand(output.seg_init),
        "seg_refined": ce_by_hand(output.seg_refined),
    }
    losses = auxsegnet_losses(output, batch)
    assert set(losses) == {"loss", *expected}
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name
    assert losses["loss"].item() == pytest.approx(sum(expected.values()), rel=1e-5)

    weighted = auxsegnet_losses(output, batch, AuxSegNetLossWeights(cls=2.0, sal=0.5, seg=0.0))
    manual = 2.0 * expected["cls"] + 0.5 * (expected["sal_init"] + expected["sal_refined"])
    assert weighted["loss"].item() == pytest.approx(manual, rel=1e-5)
    assert weighted["seg_init"].item() == pytest.approx(expected["seg_init"], rel=1e-5)  # terms stay unweighted


def test_auxsegnet_losses_upsample_to_crop_and_require_keys():
    generator = torch.Generator().manual_seed(2)
    output = make_output(generator, size=2)
    batch = {
        "image_labels": torch.tensor([[0.0, 1.0]]),
        "saliency": torch.zeros(1, 8, 8),
        "seg": torch.full((1, 8, 8), 255),
    }
    losses = auxsegnet_losses(output, batch)
    assert losses["seg_init"].item() == 0.0 and torch.isfinite(losses["loss"])
    with pytest.raises(KeyError, match="saliency"):
        auxsegnet_losses(output, {"image_labels": batch["image_labels"], "seg": batch["seg"]})


def test_loss_weights_params_validation():
    assert AuxSegNetLossWeights() == AuxSegNetLossWeights(1.0, 1.0, 1.0)
    assert parse_section(AuxSegNetLossWeights, {"sal": 0.5}, "loss_weights").sal == 0.5
    with pytest.raises(ParamError, match="loss_weights.cls"):
        parse_section(AuxSegNetLossWeights, {"cls": -1.0}, "loss_weights")
    with pytest.raises(ParamError, match="seg"):
        AuxSegNetLossWeights(seg=float("nan"))


def test_gradients_reach_every_head():
    torch.manual_seed(0)
    model = AuxSegNet(create_backbone("tiny"), 3).train()
    generator = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(2, 3, 48, 48, generator=generator),
        "image_labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
        "saliency": torch.rand(2, 48, 48, generator=generator),
        "seg": torch.randint(0, 4, (2, 48, 48), generator=generator),
    }
    losses = auxsegnet_losses(model(batch["image"]), batch)
    losses["loss"].backward()
    for name, param in model.named_parameters():
        if name.startswith(("fc8", "seg_", "sal_", "cross_att")):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
