"""AALR losses: the adaptive affinity (AA) loss against a loop-by-loop hand computation, and the reconstructed
label reassign (LR) loss on constructed embeddings."""

import math

import pytest
import torch

from auxseg.losses import (
    ProjectionHead,
    adaptive_affinity_loss,
    class_centres,
    label_reassign_loss,
    reassign_labels,
)

IGNORE = 255
EIGHT = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def binary_kl_by_hand(q: list[float], p: list[float]) -> float:
    clamp = lambda v: min(max(v, 1e-4), 1.0)  # noqa: E731
    total = 0.0
    for qc, pc in zip(q, p):
        total += clamp(qc) * math.log(clamp(qc) / clamp(pc))
        total += clamp(1 - qc) * math.log(clamp(1 - qc) / clamp(1 - pc))
    return total


def aa_loss_by_hand(probs, labels, confidence, dilation, margin=3.0, adaptive=True, return_counts=False):
    """Spec §2 with explicit loops over batch, pixels and the 8 neighbours (ordered pairs)."""
    batch, num_classes, height, width = probs.shape
    sums = {"bg": 0.0, "obj": 0.0, "neg": 0.0}
    counts = {"bg": 0, "obj": 0, "neg": 0}
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for dy, dx in EIGHT:
                    ny, nx = y + dy * dilation, x + dx * dilation
                    if not (0 <= ny < height and 0 <= nx < width):
                        continue
                    li, lj = int(labels[b, y, x]), int(labels[b, ny, nx])
                    if li == IGNORE or lj == IGNORE:
                        continue
                    p = [float(probs[b, c, y, x]) for c in range(num_classes)]
                    q = [float(probs[b, c, ny, nx]) for c in range(num_classes)]
                    divergence = binary_kl_by_hand(q, p)
                    w = max(float(confidence[b, y, x]), float(confidence[b, ny, nx])) if adaptive else 1.0
                    if li != lj:
                        group, value = "neg", max(0.0, margin * w - divergence)
                    else:
                        group, value = ("bg" if li == 0 else "obj"), w * divergence
                    sums[group] += value
                    counts[group] += 1
    loss = sum((2.0 if g == "neg" else 1.0) * sums[g] / counts[g] for g in sums if counts[g] > 0)
    return (loss, counts) if return_counts else loss


LABELS_3x4 = [
    [0, 0, 1, 1],
    [0, IGNORE, 1, 2],
    [0, 0, 2, 2],
]


def make_aa_inputs(batch=1, num_classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(batch, num_classes, 3, 4, generator=generator, dtype=torch.float64), 1)
    probs[0, :, 2, 0] = torch.tensor([1.0] + [0.0] * (num_classes - 1))  # exercises the [1e-4, 1] clamps
    labels = torch.tensor([LABELS_3x4] * batch)
    if batch > 1:
        labels[1] = torch.randint(0, num_classes, (3, 4), generator=generator)
        labels[1, 0, 0] = IGNORE
    confidence = torch.rand(batch, 3, 4, generator=generator, dtype=torch.float64)
    return probs.float(), labels, confidence.float()


@pytest.mark.parametrize("batch,dilation,margin", [(1, 1, 3.0), (2, 1, 3.0), (2, 2, 0.7)])
def test_aa_loss_matches_hand_computation(batch, dilation, margin):
    probs, labels, confidence = make_aa_inputs(batch)
    expected, counts = aa_loss_by_hand(probs, labels, confidence, dilation, margin, return_counts=True)
    assert all(counts[g] > 0 for g in counts), counts  # every group (and the ignore pixel, the borders) is covered
    loss = adaptive_affinity_loss(probs, labels, confidence, dilation=dilation, margin=margin)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_aa_loss_default_dilation_is_four():
    generator = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(1, 2, 6, 9, generator=generator), 1)
    labels = torch.randint(0, 2, (1, 6, 9), generator=generator)
    confidence = torch.rand(1, 6, 9, generator=generator)
    expected = aa_loss_by_hand(probs, labels, confidence, dilation=4)
    assert adaptive_affinity_loss(probs, labels, confidence).item() == pytest.approx(expected, rel=1e-5)


def test_aa_loss_gradient_reaches_probs():
    probs, labels, confidence = make_aa_inputs()
    logits = torch.log(probs.clamp_min(1e-3)).requires_grad_(True)
    loss = adaptive_affinity_loss(torch.softmax(logits, 1), labels, confidence, dilation=1)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0

    direct = probs.clone().requires_grad_(True)
    adaptive_affinity_loss(direct, labels, confidence, dilation=1).backward()
    assert direct.grad is not None and direct.grad.abs().sum() > 0


def test_aa_loss_empty_groups_give_zero_not_nan():
    probs, _, confidence = make_aa_inputs()
    probs.requires_grad_(True)
    loss = adaptive_affinity_loss(probs, torch.full((1, 3, 4), IGNORE), confidence, dilation=1)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(probs.grad).all() and not probs.grad.any()

    # only background pairs: the object and negative groups are empty and contribute 0
    background = torch.zeros(1, 3, 4, dtype=torch.long)
    loss = adaptive_affinity_loss(probs.detach(), background, confidence, dilation=1)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(aa_loss_by_hand(probs.detach(), background, confidence, 1), rel=1e-5)


def test_aa_loss_constant_confidence_one_is_the_non_adaptive_loss():
    probs, labels, confidence = make_aa_inputs(batch=2)
    ones = torch.ones_like(confidence)
    plain = aa_loss_by_hand(probs, labels, confidence, dilation=1, adaptive=False)
    assert adaptive_affinity_loss(probs, labels, ones, dilation=1).item() == pytest.approx(plain, rel=1e-5)
    assert adaptive_affinity_loss(probs, labels, confidence, dilation=1).item() != pytest.approx(plain, rel=1e-3)
    # w = 0 everywhere switches every term off: pull w·D = 0 and push max(0, −D) = 0
    assert adaptive_affinity_loss(probs, labels, torch.zeros_like(confidence), dilation=1).item() == 0.0


def test_aa_loss_rejects_bad_inputs():
    probs, labels, confidence = make_aa_inputs()
    with pytest.raises(ValueError, match=r"probs must be \(B, C, H, W\)"):
        adaptive_affinity_loss(probs[0], labels, confidence)
    with pytest.raises(ValueError, match="labels"):
        adaptive_affinity_loss(probs, labels[:, :2], confidence, dilation=1)
    with pytest.raises(ValueError, match="confidence"):
        adaptive_affinity_loss(probs, labels, confidence.unsqueeze(1), dilation=1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="dilation must be an integer"):
            adaptive_affinity_loss(probs, labels, confidence, dilation=bad)
    with pytest.raises(ValueError, match="no neighbour pair"):
        adaptive_affinity_loss(probs, labels, confidence, dilation=4)
    with pytest.raises(ValueError, match="margin"):
        adaptive_affinity_loss(probs, labels, confidence, dilation=1, margin=-1.0)
    with pytest.raises(ValueError, match=r"labels \[7\] outside 0..2"):
        adaptive_affinity_loss(probs, torch.full((1, 3, 4), 7), confidence, dilation=1)


# ---------------------------------------------------------------------------------------------------------------- LR


def unit(*values):
    vector = torch.tensor(values, dtype=torch.float32)
    return vector / vector.norm()


def constructed_lr_example():
    """Classes 0 (bg), 1, 2 present; 3 absent from the image label. Pixel (1, 1) is labelled 1 but sits at class 2's
    centre; pixel (2, 1) is labelled with the absent class 3 and sits (closest) at class 3's own centre."""
    e0, e1, e2 = unit(1, 0, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 1, 0)
    e3ish = unit(0, 0.5, 0, 1)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 2], [IGNORE, 3, 2, 2]]])
    pixels = [[e0, e0, e1, e1], [e0, e2, e1, e2], [e2, e3ish, e2, e2]]
    embeddings = torch.stack([torch.stack(row, dim=-1) for row in pixels], dim=-2).unsqueeze(0)  # (1, 4, 3, 4)
    image_labels = torch.tensor([[1, 1, 0]])  # classes 1 and 2 present, 3 absent
    expected = torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 2], [IGNORE, 1, 2, 2]]])
    return embeddings, labels, image_labels, expected


def test_class_centres_are_normalised_detached_means():
    embeddings, labels, _, _ = constructed_lr_example()
    embeddings.requires_grad_(True)
    centres, has_pixels = class_centres(embeddings, labels, 4)
    assert centres.shape == (1, 4, 4) and not centres.requires_grad
    assert has_pixels.tolist() == [[True, True, True, True]]
    torch.testing.assert_close(centres[0, 1], unit(0, 3, 1, 0))  # three pixels at e1, the mislabelled one at e2
    torch.testing.assert_close(centres[0, 3], unit(0, 0.5, 0, 1))
    confident = torch.ones(1, 3, 4)
    confident[0, 1, 1] = 0.2
    centres, _ = class_centres(embeddings, labels, 4, confidence=confident, min_confidence=0.5)
    torch.testing.assert_close(centres[0, 1], unit(0, 1, 0, 0))


def test_reassign_fixes_the_mislabelled_pixel_and_never_picks_an_absent_class():
    embeddings, labels, image_labels, expected = constructed_lr_example()
    reassigned = reassign_labels(embeddings, labels, image_labels)
    assert reassigned.dtype == torch.long
    assert torch.equal(reassigned, expected)
    assert not (reassigned == 3).any()  # class 3's centre is the nearest one for pixel (2, 1), but 3 is absent
    # a margin keeps a label whose centre is close enough; a label of an absent class is replaced regardless
    kept = reassign_labels(embeddings, labels, image_labels, margin=0.9)  # (1, 1): 1 − 1/√10 ≈ 0.68 < 0.9
    assert kept[0, 1, 1].item() == 1 and kept[0, 2, 1].item() == 1


def test_reassign_per_image_vs_per_batch_centres():
    embeddings, labels, image_labels, expected = constructed_lr_example()
    # image 2: class 2 present in its image label but without a labelled pixel → no per-image centre for it
    second = labels.clone()
    second[second == 2] = 1
    embeddings2, labels2 = torch.cat([embeddings, embeddings]), torch.cat([labels, second])
    image_labels2 = torch.cat([image_labels, image_labels])
    per_image = reassign_labels(embeddings2, labels2, image_labels2)
    assert torch.equal(per_image[:1], expected)
    assert not (per_image[1] == 2).any()
    per_batch = reassign_labels(embeddings2, labels2, image_labels2, per_image=False)
    assert (per_batch[1] == 2).any()  # the pooled batch centre of class 2 is available to image 2


def test_prototype_loss_by_hand_finite_and_differentiable():
    embeddings, labels, image_labels, expected = constructed_lr_example()
    embeddings.requires_grad_(True)
    tau = 0.1
    loss = label_reassign_loss(embeddings, labels, image_labels, tau=tau)
    # by hand: centres of the candidates 0, 1, 2 from the labelled pixels, CE on the reassigned targets
    centres = {0: unit(1, 0, 0, 0), 1: unit(0, 3, 1, 0), 2: unit(0, 0, 1, 0)}
    terms = []
    for y in range(3):
        for x in range(4):
            target = int(expected[0, y, x])
            if target == IGNORE:
                continue
            e = embeddings[0, :, y, x].detach()
            scores = {k: float(e @ c) / tau for k, c in centres.items()}
            terms.append(math.log(sum(math.exp(s) for s in scores.values())) - scores[target])
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)

    torch.manual_seed(0)
    head = ProjectionHead(8, embed_dim=16, hidden_channels=12)
    features = torch.randn(2, 8, 5, 6)
    emb = head(features)
    assert emb.shape == (2, 16, 5, 6)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2, 5, 6))
    generator = torch.Generator().manual_seed(0)
    seg = torch.randint(0, 4, (2, 5, 6), generator=generator)
    seg[:, 0] = IGNORE
    loss = label_reassign_loss(emb, seg, torch.tensor([[1, 0, 1], [0, 1, 1]]))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_lr_warm_up_and_empty_cases():
    embeddings, labels, image_labels, _ = constructed_lr_example()
    embeddings.requires_grad_(True)
    off = label_reassign_loss(embeddings, labels, image_labels, active=False)
    assert off.item() == 0.0
    off.backward()
    assert embeddings.grad is not None and not embeddings.grad.any()
    unchanged = label_reassign_loss(embeddings, labels, image_labels, variant="correction", active=False)
    assert torch.equal(unchanged, labels)
    everything_ignored = torch.full_like(labels, IGNORE)
    loss = label_reassign_loss(embeddings, everything_ignored, image_labels)
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert torch.equal(reassign_labels(embeddings, everything_ignored, image_labels), everything_ignored)


def test_correction_variant_returns_corrected_targets():
    embeddings, labels, image_labels, expected = constructed_lr_example()
    corrected = label_reassign_loss(embeddings, labels, image_labels, variant="correction")  # margin 0.1
    assert corrected.dtype == torch.long and not corrected.requires_grad
    assert torch.equal(corrected, expected)
    dropped = label_reassign_loss(embeddings, labels, image_labels, variant="correction", on_disagree="ignore")
    assert dropped[0, 1, 1].item() == IGNORE and dropped[0, 2, 1].item() == IGNORE
    assert torch.equal(dropped[expected == labels], labels[expected == labels])
    strict = label_reassign_loss(embeddings, labels, image_labels, variant="correction", margin=0.9)
    assert strict[0, 1, 1].item() == 1


def test_lr_rejects_bad_inputs():
    embeddings, labels, image_labels, _ = constructed_lr_example()
    with pytest.raises(ValueError, match=r"embeddings must be \(B, D, h, w\)"):
        reassign_labels(embeddings[0], labels, image_labels)
    with pytest.raises(ValueError, match="nearest neighbour"):
        reassign_labels(embeddings, labels[:, :2], image_labels)
    with pytest.raises(ValueError, match="image_labels"):
        reassign_labels(embeddings, labels, torch.cat([image_labels, image_labels]))
    with pytest.raises(ValueError, match=r"labels \[3\] outside 0..2"):
        reassign_labels(embeddings, labels, image_labels[:, :2])
    with pytest.raises(ValueError, match="variant"):
        label_reassign_loss(embeddings, labels, image_labels, variant="contrastive")
    with pytest.raises(ValueError, match="tau"):
        label_reassign_loss(embeddings, labels, image_labels, tau=0.0)
    with pytest.raises(ValueError, match="on_disagree"):
        label_reassign_loss(embeddings, labels, image_labels, variant="correction", on_disagree="drop")
    with pytest.raises(ValueError, match="margin"):
        reassign_labels(embeddings, labels, image_labels, margin=-0.1)
    with pytest.raises(ValueError, match=r"\(B, F, h, w\)"):
        ProjectionHead(4)(torch.zeros(4, 2, 2))
