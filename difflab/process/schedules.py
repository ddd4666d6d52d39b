"""Discrete beta schedules for DDPM: beta_1..beta_T as float64 tensors."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from difflab.errors import DifflabError


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. (2020): beta_t linear from beta_start to beta_end (given for T = 1000, rescaled by 1000/T)."""
    scale = 1000.0 / T
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)


def scaled_linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """sqrt(beta_t) linear from sqrt(beta_start) to sqrt(beta_end) (latent diffusion, Rombach et al. 2022; diffusers'
    "scaled_linear"), stated for T = 1000 and rescaled by 1000/T like :func:`linear_betas`."""
    scale = 1000.0 / T
    return scale * torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2


def betas_from_alpha_bar(alpha_bar: Callable[[Tensor], Tensor], T: int, max_beta: float = 0.999) -> Tensor:
    """beta_t = min(1 - alpha_bar(t/T) / alpha_bar((t-1)/T), max_beta) for t = 1..T (Nichol & Dhariwal 2021, eq. 17)."""
    u = torch.arange(T + 1, dtype=torch.float64) / T
    ab = alpha_bar(u)
    return (1.0 - ab[1:] / ab[:-1]).clamp(max=max_beta)


def cosine_alpha_bar(u: Tensor, s: float = 0.008) -> Tensor:
    """alpha_bar(u) = f(u)/f(0), f(u) = cos^2(((u + s)/(1 + s)) pi/2) (Nichol & Dhariwal 2021, eq. 17)."""
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return f / math.cos(s / (1 + s) * math.pi / 2) ** 2


def linear_alpha_bar(u: Tensor) -> Tensor:
    """alpha_bar(u) = 1 - u: signal power falls linearly (the last beta is clipped at max_beta)."""
    return 1.0 - u


SCHEDULES = ("linear", "cosine", "linear-alpha-bar", "scaled-linear")


def make_betas(schedule: str, T: int, *, beta_start: float = 1e-4, beta_end: float = 0.02,
               cosine_s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The (T,) betas of a named schedule."""
    if T < 2:
        raise DifflabError(f"--T must be at least 2, got {T}")
    if schedule == "linear":
        return linear_betas(T, beta_start, beta_end)
    if schedule == "cosine":
        return betas_from_alpha_bar(lambda u: cosine_alpha_bar(u, cosine_s), T, max_beta)
    if schedule == "scaled-linear":
        return scaled_linear_betas(T, beta_start, beta_end)
    if schedule == "linear-alpha-bar":
        return betas_from_alpha_bar(linear_alpha_bar, T, max_beta)
    raise DifflabError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
