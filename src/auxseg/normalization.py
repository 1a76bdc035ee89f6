"""Input normalisation of a backbone: ``x = (rgb / 255 − mean) / std`` per channel (RGB, 0-1 scale).

Each backbone declares the mean/std its weights expect (:attr:`auxseg.models.backbones.Backbone.normalization`:
ImageNet statistics for ``tiny``, ``resnet38`` and the torchvision ResNets, timm's ``pretrained_cfg`` for timm models,
the package's own for ``package:`` weights); ``network.mean`` / ``network.std`` in params override it. Every model
file records the normalisation it was trained with as ``meta["normalization"] = {"mean": [r, g, b], "std": [r, g, b]}``
and every consumer of the file reads it from there (:meth:`Normalization.from_meta`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _triple(values: Any, what: str, *, positive: bool) -> tuple[float, float, float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise ValueError(f"{what}: expected 3 numbers (R, G, B), got {values!r}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{what}: expected 3 finite numbers (R, G, B), got {values!r}")
        if positive and value <= 0:
            raise ValueError(f"{what}: every value must be > 0, got {values!r}")
        out.append(float(value))
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std (RGB, images scaled to [0, 1]); std > 0. Invalid values raise ValueError."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _triple(self.mean, "mean", positive=False))
        object.__setattr__(self, "std", _triple(self.std, "std", positive=True))

    def to_meta(self) -> dict[str, list[float]]:
        """``{"mean": [r, g, b], "std": [r, g, b]}``, the form stored in model files."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], source: str) -> "Normalization":
        """Read ``meta["normalization"]`` of the model file ``source``; missing or invalid → ValueError naming it."""
        value = meta.get("normalization")
        if not isinstance(value, Mapping) or set(value) != {"mean", "std"}:
            raise ValueError(
                f"{source}: the model file's meta has no valid 'normalization' ({{'mean': [r, g, b], 'std': [r, g, b]}}"
                f", got {value!r}); it was written by an older auxseg: re-run the stage that writes it"
            )
        try:
            return cls(tuple(value["mean"]), tuple(value["std"]))
        except ValueError as error:
            raise ValueError(f"{source}: meta['normalization'] is invalid: {error}") from error

    def with_overrides(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> "Normalization":
        """This normalisation with ``mean`` and/or ``std`` replaced (None keeps the current value)."""
        return Normalization(self.mean if mean is None else tuple(mean), self.std if std is None else tuple(std))


IMAGENET = Normalization(IMAGENET_MEAN, IMAGENET_STD)
"""ImageNet statistics (torchvision / timm ``IMAGENET_DEFAULT_MEAN``/``STD``)."""

__all__ = ["IMAGENET", "IMAGENET_MEAN", "IMAGENET_STD", "Normalization"]
