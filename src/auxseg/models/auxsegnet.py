"""AuxSegNet (Xu et al., ICCV 2021) as in the released code (spec §2.2–2.6).

One backbone feeds three heads:
- classification: the CamClassifier head (``fc8``), logits (B, K) and raw CAMs (B, K, h, w);
- segmentation: ``seg_conv1`` (3×3, dil 6) → ``seg_conv2`` (3×3, dil 12) → task affinity A_seg (``seg_att``) and
  feature enhancement F + ``seg_W``(A_seg · ``seg_g``(F)) → ``seg_conv3`` (3×3, dil 18; released code only, the
  paper has no such layer: ``extra_dilated_conv=False``) → ``seg_conv4`` (1×1, K+1 logits);
- saliency: the same with its own weights (``sal_*``) and one logit.
The cross-task affinity A_CT = ω0 ⊙ A_seg + ω1 ⊙ A_sal, with ω = softmax over channels of ``cross_att`` applied to the
stacked (seg, sal) N×N affinities, refines both logit maps once: refined[c, i] = Σ_j A_CT[i, j] · logits[c, j]
(released code, ``refine_target="logits"``). The paper's wording refines probabilities instead
(``refine_target="probabilities"``): refined seg = log(A_CT · softmax(seg) + ε), refined sal = logit(A_CT · σ(sal)),
returned in logit form so the same losses and post-processing apply. N = h·w positions, row-major. Rows of A_CT are
not renormalised.

Module names follow the released code (``fc8``, ``seg_conv1``…, ``seg_att.theta``/``phi``, ``seg_g``, ``seg_W``,
``cross_att.0``/``cross_att.2``); the NLBlock's unused ``g``/``W_z`` are left out.

``embedding_dim`` (AALR's LR loss, spec §6.3; None = off) adds ``seg_embed``, a :class:`auxseg.losses.ProjectionHead`
(two 1×1 convs, hidden width ``branch_channels``) on the segmentation branch's penultimate features (the input of
``seg_conv4``), trained at the head learning rate; without it the module and its state dict are the plain AuxSegNet.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from auxseg.affinity import propagate, task_affinity
from auxseg.models.backbones import BackboneModel
from auxseg.models.classifier import (
    ParamGroup,
    backbone_channels,
    check_images,
    class_activation_maps,
    make_fc8,
    pooled_logits,
)
from auxseg.models.heads import ProjectionHead


class AuxSegNetOutput(NamedTuple):
    """All AuxSegNet outputs at the backbone's stride (h = ceil(H/8), w = ceil(W/8), N = h·w); all logits are raw."""

    cls_logits: torch.Tensor  # (B, K) multi-label classification logits
    cam: torch.Tensor  # (B, K, h, w) raw class activation maps (no ReLU, no normalisation)
    sal_init: torch.Tensor  # (B, 1, h, w) saliency logit before refinement
    sal_refined: torch.Tensor  # (B, 1, h, w) saliency logit after one A_CT step
    seg_init: torch.Tensor  # (B, K+1, h, w) segmentation logits (class 0 = background) before refinement
    seg_refined: torch.Tensor  # (B, K+1, h, w) segmentation logits after one A_CT step
    affinity: torch.Tensor | None  # (B, N, N) cross-task affinity A_CT; None unless requested or when disabled
    embeddings: torch.Tensor | None = None  # (B, D, h, w) LR pixel embeddings; None without ``seg_embed``


def refine_with_affinity(affinity: torch.Tensor | None, maps: torch.Tensor) -> torch.Tensor:
    """One propagation step: maps (B, C, h, w) → (B, C, h, w), out[c, i] = Σ_j affinity[i, j] · maps[c, j].

    ``affinity`` None stands for the identity (AuxSegNet without cross-task affinity): ``maps`` is returned as is.
    Use it for the label update too: ``refine_with_affinity(output.affinity, normalised_cams)``.
    """
    if affinity is None:
        return maps
    return propagate(affinity, maps)


REFINE_TARGETS = ("logits", "probabilities")
PROBABILITY_EPS = 1e-6
"""Floor of refined probabilities before the log / logit (refine_target="probabilities")."""


def refine_probabilities(
    affinity: torch.Tensor, seg_logits: torch.Tensor, sal_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's refinement of probabilities, returned as logits.

    seg_logits (B, K+1, h, w), sal_logits (B, 1, h, w), affinity (B, N, N) →
    (log(A · softmax(seg) + ε) (B, K+1, h, w), logit(clip(A · σ(sal), ε, 1 − ε)) (B, 1, h, w)); softmax of the first
    is A · softmax(seg) renormalised, σ of the second is A · σ(sal).
    """
    seg_probs = propagate(affinity, torch.softmax(seg_logits.float(), dim=1))
    sal_probs = propagate(affinity, torch.sigmoid(sal_logits.float())).clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    seg_refined = torch.log(seg_probs + PROBABILITY_EPS).to(seg_logits.dtype)
    sal_refined = torch.logit(sal_probs).to(sal_logits.dtype)
    return seg_refined, sal_refined


class TaskAffinity(nn.Module):
    """Non-local (embedded Gaussian) affinity of one task: features (B, C, h, w) → A (B, N, N), rows sum to 1.

    A[i, j] = softmax_j(θ(F)_i · φ(F)_j) with 1×1 convs θ, φ (bias, PyTorch default init), no 1/√C scaling.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(channels, channels, kernel_size=1)
        self.phi = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return task_affinity(self.theta(features), self.phi(features))


def _dilated_conv(in_channels: int, out_channels: int, dilation: int) -> nn.Conv2d:
    """3×3 conv with padding = dilation (same spatial size), bias, xavier-uniform weight."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=dilation, dilation=dilation)
    nn.init.xavier_uniform_(conv.weight)
    return conv


def _output_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """1×1 prediction conv without bias, xavier-uniform weight."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
    nn.init.xavier_uniform_(conv.weight)
    return conv


class AuxSegNet(BackboneModel):
    """Classification + saliency + segmentation network with cross-task affinity (spec §2).

    ``forward(x, return_affinity=False)``: x (B, 3, H, W) ImageNet-normalised → :class:`AuxSegNetOutput`.
    ``use_cross_task_affinity=False`` is the ablation without A_CT: no ``cross_att`` module, refined outputs are the
    initial ones and ``output.affinity`` is None (the identity); the task affinities still enhance the branch features.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes_fg: int,
        *,
        branch_channels: int = 128,
        use_cross_task_affinity: bool = True,
        dropout: float = 0.5,
        extra_dilated_conv: bool = True,
        refine_target: str = "logits",
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        if refine_target not in REFINE_TARGETS:
            raise ValueError(f"refine_target must be one of {REFINE_TARGETS}, got {refine_target!r}")
        if branch_channels < 1:
            raise ValueError(f"branch_channels must be >= 1, got {branch_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        in_channels = backbone_channels(backbone)
        self.backbone = backbone
        self.num_classes_fg = num_classes_fg
        self.use_cross_task_affinity = use_cross_task_affinity
        self.extra_dilated_conv = extra_dilated_conv
        self.refine_target = refine_target

        self.dropout = nn.Dropout2d(dropout)
        self.fc8 = make_fc8(in_channels, num_classes_fg)

        self.seg_conv1 = _dilated_conv(in_channels, branch_channels, 6)
        self.seg_conv2 = _dilated_conv(branch_channels, branch_channels, 12)
        self.seg_conv3 = _dilated_conv(branch_channels, branch_channels, 18) if extra_dilated_conv else None
        self.seg_conv4 = _output_conv(branch_channels, num_classes_fg + 1)
        self.sal_conv1 = _dilated_conv(in_channels, branch_channels, 6)
        self.sal_conv2 = _dilated_conv(branch_channels, branch_channels, 12)
        self.sal_conv3 = _dilated_conv(branch_channels, branch_channels, 18) if extra_dilated_conv else None
        self.sal_conv4 = _output_conv(branch_channels, 1)

        self.seg_att = TaskAffinity(branch_channels)
        self.sal_att = TaskAffinity(branch_channels)
        self.seg_g = nn.Conv2d(branch_channels, branch_channels, kernel_size=1)
        self.seg_W = nn.Conv2d(branch_channels, branch_channels, kernel_size=1)
        self.sal_g = nn.Conv2d(branch_channels, branch_channels, kernel_size=1)
        self.sal_W = nn.Conv2d(branch_channels, branch_channels, kernel_size=1)

        self.cross_att: nn.Sequential | None = None
        if use_cross_task_affinity:
            # Applied by cross_task_affinity(): conv 3×3 → ReLU → conv 1×1 → softmax over the 2 channels.
            self.cross_att = nn.Sequential(
                nn.Conv2d(2, 2, kernel_size=3, padding=1, bias=False),
                nn.ReLU(),
                nn.Conv2d(2, 2, kernel_size=1),
            )
        self.embedding_dim = embedding_dim
        self.seg_embed: nn.Module | None = None
        if embedding_dim is not None:
            self.seg_embed = ProjectionHead(branch_channels, embedding_dim, hidden_channels=branch_channels)

    # ----------------------------------------------------------------------------------------------------------
    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) → raw CAMs (B, K, h, w) from the classification head (branches are skipped)."""
        check_images(x)
        return class_activation_maps(self.backbone(x), self.fc8)

    def cross_task_affinity(self, seg_affinity: torch.Tensor, sal_affinity: torch.Tensor) -> torch.Tensor | None:
        """A_CT (B, N, N) = ω0 ⊙ A_seg + ω1 ⊙ A_sal, ω = cross_att(stack(A_seg, A_sal)) (B, 2, N, N).

        Returns None (the identity, see :func:`refine_with_affinity`) when the model has no cross-task affinity.
        """
        if self.cross_att is None:
            return None
        if seg_affinity.shape != sal_affinity.shape or seg_affinity.dim() != 3:
            raise ValueError(
                f"affinities must both be (B, N, N), got {tuple(seg_affinity.shape)} and {tuple(sal_affinity.shape)}"
            )
        # (B, 2, N, N), channel 0 = seg. channels_last: oneDNN's 2-channel 3×3 conv over the N×N grid is ~10×
        # faster (forward + backward) than in NCHW on CPU; the result is the same up to float rounding.
        stacked = torch.stack((seg_affinity, sal_affinity), dim=1).contiguous(memory_format=torch.channels_last)
        conv3x3, relu, conv1x1 = self.cross_att
        hidden = relu(conv3x3(stacked)).contiguous()
        # The 1×1 conv as a channel matmul: same result, ~10× faster than a 2-channel direct conv on CPU.
        scores = torch.einsum("oc,bcij->boij", conv1x1.weight.flatten(1), hidden) + conv1x1.bias.view(1, -1, 1, 1)
        weights = torch.softmax(scores, dim=1)  # ω (B, 2, N, N), ω0 + ω1 = 1
        return weights[:, 0] * seg_affinity + weights[:, 1] * sal_affinity

    @staticmethod
    def _enhance(features: torch.Tensor, affinity: torch.Tensor, g: nn.Conv2d, w: nn.Conv2d) -> torch.Tensor:
        """F + W(A · g(F)): features (B, C, h, w), affinity (B, N, N) → (B, C, h, w)."""
        return features + w(propagate(affinity, g(features)))

    def forward(self, x: torch.Tensor, return_affinity: bool = False) -> AuxSegNetOutput:
        """x (B, 3, H, W) ImageNet-normalised → :class:`AuxSegNetOutput` at stride 8."""
        check_images(x)
        features = self.backbone(x)  # (B, C, h, w)
        cls_logits = pooled_logits(features, self.dropout, self.fc8)
        cam = class_activation_maps(features, self.fc8)

        seg_features = F.relu(self.seg_conv2(F.relu(self.seg_conv1(features))))
        sal_features = F.relu(self.sal_conv2(F.relu(self.sal_conv1(features))))
        seg_affinity = self.seg_att(seg_features)
        sal_affinity = self.sal_att(sal_features)

        seg_features = self._enhance(seg_features, seg_affinity, self.seg_g, self.seg_W)
        if self.seg_conv3 is not None:
            seg_features = F.relu(self.seg_conv3(seg_features))
        seg_init = self.seg_conv4(seg_features)
        embeddings = self.seg_embed(seg_features) if self.seg_embed is not None else None
        sal_features = self._enhance(sal_features, sal_affinity, self.sal_g, self.sal_W)
        if self.sal_conv3 is not None:
            sal_features = F.relu(self.sal_conv3(sal_features))
        sal_init = self.sal_conv4(sal_features)

        affinity = self.cross_task_affinity(seg_affinity, sal_affinity)
        if affinity is None:
            seg_refined, sal_refined = seg_init, sal_init
        elif self.refine_target == "logits":
            refined = refine_with_affinity(affinity, torch.cat((seg_init, sal_init), dim=1))
            seg_refined, sal_refined = refined[:, : seg_init.shape[1]], refined[:, seg_init.shape[1] :]
        else:
            seg_refined, sal_refined = refine_probabilities(affinity, seg_init, sal_init)
        return AuxSegNetOutput(
            cls_logits=cls_logits,
            cam=cam,
            sal_init=sal_init,
            sal_refined=sal_refined,
            seg_init=seg_init,
            seg_refined=seg_refined,
            affinity=affinity if return_affinity else None,
            embeddings=embeddings,
        )

    # ----------------------------------------------------------------------------------------------------------
    def _head_modules(self) -> list[nn.Module]:
        """Modules trained at the head learning rate: fc8 and every seg_*/sal_* module (``seg_embed`` included)."""
        return [module for name, module in self.named_children() if name == "fc8" or name.startswith(("seg_", "sal_"))]

    def param_groups(self, head_lr_mult: float = 10.0) -> list[ParamGroup]:
        """Optimiser groups as in the released code.

        1×: backbone and ``cross_att``; ``head_lr_mult``×: fc8 and every seg_*/sal_* module (convs, θ, φ, g, W).
        Every parameter is listed, frozen ones included (SGD skips parameters that get no gradient).
        """
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult must be > 0, got {head_lr_mult}")
        base = list(self.backbone.parameters())
        if self.cross_att is not None:
            base += list(self.cross_att.parameters())
        heads = [param for module in self._head_modules() for param in module.parameters()]
        return [
            {"params": base, "lr_mult": 1.0, "name": "backbone_and_cross_att"},
            {"params": heads, "lr_mult": float(head_lr_mult), "name": "heads"},
        ]

    def load_classifier_state(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Initialise backbone and fc8 from a :class:`CamClassifier` state dict; the new heads keep their init.

        Strict for those parts: every ``backbone.*`` key and ``fc8.weight`` must be present with matching shapes, and
        keys outside ``backbone.``/``fc8.`` are rejected (a wrong checkpoint fails instead of loading partially).
        """
        backbone_state: dict[str, torch.Tensor] = {}
        fc8_state: dict[str, torch.Tensor] = {}
        unexpected: list[str] = []
        for key, value in state_dict.items():
            if key.startswith("backbone."):
                backbone_state[key[len("backbone.") :]] = value
            elif key.startswith("fc8."):
                fc8_state[key[len("fc8.") :]] = value
            else:
                unexpected.append(key)
        if unexpected:
            raise ValueError(
                f"classifier state has keys outside backbone./fc8.: {unexpected[:5]}"
                + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
            )
        for prefix, module, part in (("backbone.", self.backbone, backbone_state), ("fc8.", self.fc8, fc8_state)):
            try:
                module.load_state_dict(part, strict=True)
            except RuntimeError as error:
                raise ValueError(f"classifier state does not fit this model's '{prefix[:-1]}': {error}") from error


__all__ = ["REFINE_TARGETS", "AuxSegNet", "AuxSegNetOutput", "TaskAffinity", "refine_probabilities", "refine_with_affinity"]
