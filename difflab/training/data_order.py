"""The order examples are seen in: a function of (seed, step) alone, so a resumed run sees the same batches."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.rng import derived_seed


class DataOrder:
    """Batch k holds positions [k B, (k + 1) B) of an endless stream of epochs; epoch e is a random
    permutation of the n examples drawn from a generator seeded with (seed, e)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:                       # a batch spans at most two epochs
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def batch(self, step: int) -> Tensor:
        """(batch_size,) example indices of batch number ``step`` (0-based)."""
        pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, offsets = pos // self.n, pos % self.n
        return torch.cat([self._perm(int(e))[offsets[epochs == e]] for e in torch.unique(epochs)])

    def epoch(self, step: int) -> float:
        return step * self.batch_size / self.n
