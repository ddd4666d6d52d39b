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


class BatchDraws:
    """Random numbers for rows ``rows`` of a batch of ``total`` rows, from one generator: every draw is made
    for the whole batch and this share of rows is kept. Data parallel ranks that hold the same generator
    state and their own slices of a batch thus draw exactly the numbers one process drawing the whole
    batch would (each rank draws ``total`` rows and keeps its own: cheap beside the network). Without
    ``rows``, the draws are the generator's own, for the batch shape asked."""

    def __init__(self, generator: torch.Generator | None, rows: slice | None = None, total: int | None = None
                 ) -> None:
        if (rows is None) != (total is None):
            raise ValueError("give rows and total together")
        self.generator, self.rows, self.total = generator, rows, total

    def _full(self, shape: Sequence[int]) -> tuple[int, ...]:
        if self.rows is None:
            return tuple(shape)
        if len(range(self.total)[self.rows]) != shape[0]:
            raise ValueError(f"a share of {shape[0]} rows, but rows {self.rows} of {self.total} were given")
        return (self.total, *shape[1:])

    def _keep(self, x: Tensor) -> Tensor:
        return x if self.rows is None else x[self.rows]

    def randn(self, shape: Sequence[int], *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
              ) -> Tensor:
        """Standard normal (shape[0] rows, *shape[1:])."""
        return self._keep(torch.randn(self._full(shape), generator=self.generator, device=device, dtype=dtype))

    def rand(self, shape: Sequence[int], *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
             ) -> Tensor:
        """Uniform on [0, 1) (shape[0] rows, *shape[1:])."""
        return self._keep(torch.rand(self._full(shape), generator=self.generator, device=device, dtype=dtype))

    def randint(self, low: int, high: int, shape: Sequence[int], *, device: torch.device | str = "cpu") -> Tensor:
        """Integers uniform in [low, high) (shape[0] rows, *shape[1:]), int64."""
        return self._keep(torch.randint(low, high, self._full(shape), generator=self.generator, device=device))


def batch_draws(source: torch.Generator | BatchDraws | None) -> BatchDraws:
    """A generator (or None: torch's global one) as :class:`BatchDraws` of a whole batch; draws as they are."""
    return source if isinstance(source, BatchDraws) else BatchDraws(source)
