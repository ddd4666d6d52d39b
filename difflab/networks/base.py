"""What every backbone is: an nn.Module built from a config dataclass, read as f(x, noise level, condition)."""

from __future__ import annotations

from typing import Any

from torch import nn


class Network(nn.Module):
    """Base of every backbone. ``config`` is its dataclass (JSON in a run's config.json), whose ``noise_input``
    says what the noise level it reads is (networks.embeddings); callers ask ``network.noise_input``."""

    config: Any

    @property
    def noise_input(self) -> str:
        return self.config.noise_input
