"""Sliced Wasserstein-2 distance between two point sets: a distribution distance for low-dimensional data
(the samplers' tests and benchmark), where FID's Gaussian fit would miss multimodal structure."""

from __future__ import annotations

import math

import torch
from torch import Tensor

PROJECTIONS = 128           # directions beyond 2-D (2-D: 64 evenly spaced angles over [0, pi))


def projection_directions(dim: int) -> Tensor:
    """(L, dim) fixed unit vectors: in 2-D 64 angles k pi / 64; otherwise PROJECTIONS Gaussian directions (seed 0)."""
    if dim == 2:
        angle = torch.arange(64, dtype=torch.float64) * math.pi / 64
        return torch.stack([angle.cos(), angle.sin()], 1)
    theta = torch.randn(PROJECTIONS, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def sliced_w2(a: Tensor, b: Tensor, directions: Tensor) -> float:
    """Sliced Wasserstein-2 between two equal-size samples a, b (n, D) over the given (L, D) directions:
    sqrt(mean_l W2^2(a . theta_l, b . theta_l)), each 1-D W2 by matching sorted projections."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_w2 needs equal-size samples, got {tuple(a.shape)} and {tuple(b.shape)}")
    pa = (a.flatten(1).double() @ directions.T).sort(0).values                   # (n, L)
    pb = (b.flatten(1).double() @ directions.T).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())
