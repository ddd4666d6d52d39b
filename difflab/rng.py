"""Random numbers that do not depend on the batch: one generator per sample (EDM's StackedRandomGenerator)."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import Tensor


SEED_STRIDE = 1_000_003   # a prime: derived seeds of different base seeds do not collide for i < SEED_STRIDE


def derived_seed(seed: int, i: int) -> int:
    """The seed of item i (a sample, an example, an epoch) under a base seed: seed * 1000003 + i."""
    return int(seed) * SEED_STRIDE + int(i)


class Noise(Protocol):
    """A source of standard normal noise shaped like a batch."""

    def randn_like(self, x: Tensor) -> Tensor: ...


class PerSampleNoise:
    """Sample i draws only from its own generator seeded with seeds[i], so sample i is the same
    whatever the batch size or the other seeds in the batch."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]

    @classmethod
    def for_items(cls, seed: int, start: int, stop: int, device: torch.device | str = "cpu") -> PerSampleNoise:
        """Generators of items start..stop-1 under ``seed`` (see :func:`derived_seed`): item i's noise is
        the same whatever batch it is drawn in."""
        return cls([derived_seed(seed, i) for i in range(start, stop)], device)

    def randn(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """(len(seeds), *shape) standard normal."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randn_like(self, x: Tensor) -> Tensor:
        if x.shape[0] != len(self.generators):
            raise ValueError(f"batch of {x.shape[0]} but {len(self.generators)} generators")
        return self.randn(tuple(x.shape[1:]), x.dtype)


class GeneratorNoise:
    """Noise from one torch.Generator (fast; depends on the batch layout)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def randn_like(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
