"""Pixel affinities on the stride-8 feature grid (AuxSegNet spec §2.3–2.6).

N = h·w positions in row-major order (index = y·w + x). All functions are batched and differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _flatten(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, C, N)."""
    if maps.dim() != 4:
        raise ValueError(f"expected (B, C, h, w) maps, got shape {tuple(maps.shape)}")
    return maps.flatten(2)


def task_affinity(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Row-softmax affinity of a non-local block, without 1/√C scaling.

    query, key: (B, C, h, w) → A (B, N, N) with A[b, i, j] = softmax_j(Σ_c query[b, c, i] · key[b, c, j]).
    Every row sums to 1.
    """
    if query.shape != key.shape:
        raise ValueError(f"query {tuple(query.shape)} and key {tuple(key.shape)} must have the same shape")
    # The scores are unscaled, so bf16 would distort the softmax: compute them in fp32 even under autocast.
    with torch.autocast(device_type=query.device.type, enabled=False):
        q = _flatten(query).float()  # (B, C, N)
        k = _flatten(key).float()
        logits = torch.bmm(q.transpose(1, 2), k)  # (B, N, N)
        return F.softmax(logits, dim=-1)


def propagate(affinity: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """One propagation step: affinity (B, N, N), maps (B, C, h, w) → (B, C, h, w).

    out[b, c, i] = Σ_j affinity[b, i, j] · maps[b, c, j]; no renormalisation, no iterations.
    """
    b, c, h, w = maps.shape
    n = h * w
    if affinity.shape != (b, n, n):
        raise ValueError(f"affinity shape {tuple(affinity.shape)} does not match maps (B={b}, N={n})")
    flat = _flatten(maps)  # (B, C, N)
    out = torch.bmm(flat, affinity.transpose(1, 2))  # (B, C, N): Σ_j maps[c, j] · A[i, j]
    return out.view(b, c, h, w)


__all__ = ["propagate", "task_affinity"]
