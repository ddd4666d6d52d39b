"""A noise-conditioned MLP for points (2-D toy sets or any flat data), and its presets."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import Tensor, nn

from difflab.condition import Condition, check_condition
from difflab.dataspec import DataSpec
from difflab.networks.base import Network
from difflab.networks.embeddings import LOG_SNR, NoiseClassEmbedding


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 2
    hidden: int = 256
    depth: int = 4          # hidden layers
    num_classes: int | None = None
    noise_input: str = LOG_SNR

    def fitted(self, spec: DataSpec, num_classes: int | None = None) -> MLPConfig:
        """This config sized for examples of ``spec`` (points of dimension D)."""
        return replace(self, dim=spec.shape[0], num_classes=num_classes)


MLP_PRESETS: dict[str, MLPConfig] = {
    "mlp-small": MLPConfig(hidden=128, depth=3),
    "mlp": MLPConfig(hidden=256, depth=4),
}


class MLP(Network):
    """f(x, noise, cond): x (B, dim), noise (B,) -> (B, dim). Each hidden layer adds the noise/class embedding."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.embed = NoiseClassEmbedding(64, cfg.hidden, cfg.num_classes, cfg.noise_input)
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.hidden = nn.ModuleList(nn.Linear(cfg.hidden, cfg.hidden) for _ in range(cfg.depth))
        self.out = nn.Linear(cfg.hidden, cfg.dim)

    def forward(self, x: Tensor, noise: Tensor, cond: Condition | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(f"MLP expects (B, {self.config.dim}), got {tuple(x.shape)}")
        check_condition(cond, "MLP", labels=bool(self.config.num_classes))
        emb = self.embed(noise, cond)           # (B, hidden)
        h = self.inp(x)
        for layer in self.hidden:
            h = layer(F.silu(h + emb))
        return self.out(F.silu(h))
