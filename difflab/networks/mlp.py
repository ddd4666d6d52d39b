"""A time-conditioned MLP for 2-D (or any flat) data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.networks.embeddings import TimeClassEmbedding


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2
    hidden: int = 256
    depth: int = 4          # hidden layers
    num_classes: int | None = None


class MLP(nn.Module):
    """f(x, t, y): x (B, dim), t (B,) in [0, 1] -> (B, dim). Each hidden layer adds the time/class embedding."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.embed = TimeClassEmbedding(64, cfg.hidden, cfg.num_classes)
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.hidden = nn.ModuleList(nn.Linear(cfg.hidden, cfg.hidden) for _ in range(cfg.depth))
        self.out = nn.Linear(cfg.hidden, cfg.dim)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(f"MLP expects (B, {self.config.dim}), got {tuple(x.shape)}")
        emb = self.embed(t, y)                  # (B, hidden)
        h = self.inp(x)
        for layer in self.hidden:
            h = layer(F.silu(h + emb))
        return self.out(F.silu(h))
