"""Time and class embeddings shared by the networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TIME_SCALE = 1000.0  # t in [0, 1] is embedded as t * 1000, the frequency range of DDPM's integer steps


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding (Vaswani et al. 2017) of t (B,) in [0, 1] -> (B, dim).

    emb = [cos(T t w_k), sin(T t w_k)],  w_k = max_period^(-k / (dim/2)),  T = TIME_SCALE.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeClassEmbedding(nn.Module):
    """t (B,) and optional labels (B,) -> one conditioning vector (B, dim).

    Class index ``num_classes`` is the "no label" token, so a conditional model can also run
    unconditionally (classifier-free guidance drops labels to it).
    """

    def __init__(self, freq_dim: int, dim: int, num_classes: int | None = None) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.num_classes = num_classes
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.mlp(sinusoidal_embedding(t, self.freq_dim))
        if self.label is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.label(y)
        return emb
