"""The noise-level and class embedding every network shares, and which fields of a Condition a network reads.

A network reads its noise level as one number per example, independent of the process (so one design
serves DDPM, VP, VE and flow alike):

    noise_input "log-snr"   lambda = log(alpha^2 / sigma^2) of the path at the example's time (default)
    noise_input "t"         the process time t itself (runs made by difflab 0.1, before lambda)

and embeds its position on a fixed scale of [0, 1000] (the frequency range DDPM's integer steps use):
lambda in [-LOG_SNR_RANGE, LOG_SNR_RANGE] maps linearly onto it, clean at 0 and pure noise at 1000 (the
ends clamp: lambda = +-inf at t = 0 and on the flow path's t = 1); t maps to 1000 t.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from difflab.condition import NULL_LABEL, Condition

LOG_SNR, PROCESS_TIME = "log-snr", "t"
NOISE_INPUTS = (LOG_SNR, PROCESS_TIME)
# Every default path's usable log-SNRs lie inside [-20, 20] (DDPM linear [-10.1, 9.2], VP [-10, 9.2],
# VE [-7.8, 9.2], flow [-inf at t = 1, 13.8]); beyond, the embedding saturates.
LOG_SNR_RANGE = 20.0
POSITION_SCALE = 1000.0


def noise_position(noise: Tensor, noise_input: str) -> Tensor:
    """(B,) noise levels -> (B,) float32 positions in [0, 1000] (see the module docstring)."""
    if noise_input == PROCESS_TIME:
        return noise.float() * POSITION_SCALE
    lam = noise.float().clamp(-LOG_SNR_RANGE, LOG_SNR_RANGE)
    return (LOG_SNR_RANGE - lam) * (POSITION_SCALE / (2 * LOG_SNR_RANGE))


def check_noise_input(noise_input: str) -> None:
    if noise_input not in NOISE_INPUTS:
        raise ValueError(f"noise_input must be one of {', '.join(NOISE_INPUTS)}, got {noise_input!r}")


def sinusoidal_embedding(position: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding (Vaswani et al. 2017) of positions (B,) -> (B, dim).

    emb = [cos(p w_k), sin(p w_k)],  w_k = max_period^(-k / (dim/2)).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=position.device, dtype=torch.float32) / half)
    args = position.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class NoiseClassEmbedding(nn.Module):
    """Noise level (B,) and optional labels (B,) -> one conditioning vector (B, dim).

    Label index ``num_classes`` is the "no label" embedding: a missing label or NULL_LABEL maps to it, so a
    conditional model can also run unconditionally.
    """

    def __init__(self, freq_dim: int, dim: int, num_classes: int | None = None, noise_input: str = LOG_SNR) -> None:
        super().__init__()
        check_noise_input(noise_input)
        self.freq_dim, self.num_classes, self.noise_input = freq_dim, num_classes, noise_input
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, noise: Tensor, cond: Condition | None = None) -> Tensor:
        emb = self.mlp(sinusoidal_embedding(noise_position(noise, self.noise_input), self.freq_dim))
        if self.label is not None:
            y = cond.labels if cond is not None else None
            if y is None:
                y = torch.full((noise.shape[0],), self.num_classes, dtype=torch.long, device=noise.device)
            else:
                if y.shape != noise.shape:
                    raise ValueError(f"labels {tuple(y.shape)} do not match the batch {tuple(noise.shape)}")
                y = torch.where(y == NULL_LABEL, self.num_classes, y.to(noise.device))
            emb = emb + self.label(y)
        return emb
