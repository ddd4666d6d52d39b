"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """shadow <- d shadow + (1 - d) theta, with d = min(decay, (1 + n) / (10 + n)) after n updates.

    The warm-up of d (as in TensorFlow's ExponentialMovingAverage) keeps short runs from being
    dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for shadow, param in zip(self.model.parameters(), model.parameters()):
            shadow.lerp_(param.detach(), 1.0 - d)
        for shadow, buf in zip(self.model.buffers(), model.buffers()):
            shadow.copy_(buf)
        self.updates += 1
