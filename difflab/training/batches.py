"""Where the trainer's batches come from: rows of a data set chosen by a global, resumable order.

The trainer asks a :class:`BatchSource` for the batches of a range of steps; the rows of step s are
``indices(s)`` (a picklable callable, so DataLoader workers can call it): this process's share of the global
batch s of a :class:`~difflab.training.data_order.DataOrder`. Because the rows are a function of the step
alone, a source can start anywhere (exact resume) and read ahead (prefetching workers).

- :class:`InMemory`: a tensor already in memory (on the training device); the default for small data.
- ``difflab.data.memmap.StreamingSource``: a memory-mapped uint8 cache read by DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
from torch import Tensor

from difflab.training.data_order import DataOrder

Indices = Callable[[int], Tensor]


class BatchSource(Protocol):
    """Examples the trainer draws batches from."""

    def __len__(self) -> int:
        """The number of examples (what the global order permutes)."""

    def stream(self, steps: range, indices: Indices) -> Iterator[Tensor]:
        """The batch of each step in ``steps``, in order: rows ``indices(step)`` as float32 (b, ...) in the
        model's space (pixels in [-1, 1]), on any device (the trainer moves them)."""

    def pop_stats(self) -> dict[str, float]:
        """Loading figures since the last call, to log (e.g. ``load_img_per_s``); {} when there are none."""


@dataclass(frozen=True)
class RankRows:
    """This process's rows of global batch ``step``: the ``rank``-th of ``world`` equal slices of
    ``order.batch(step)`` (rank 0 of 1: the whole batch). Picklable, for DataLoader workers."""

    order: DataOrder
    rank: int = 0
    world: int = 1

    def __call__(self, step: int) -> Tensor:
        batch = self.order.batch(step)                    # (B,) global rows
        b = len(batch) // self.world
        return batch[self.rank * b:(self.rank + 1) * b]


class InMemory:
    """A data set held as one tensor (N, ...) on the training device."""

    def __init__(self, data: Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def stream(self, steps: range, indices: Indices) -> Iterator[Tensor]:
        for step in steps:
            yield self.data[indices(step).to(self.data.device)]

    def pop_stats(self) -> dict[str, float]:
        return {}


def as_source(data: Tensor | BatchSource) -> BatchSource:
    """A tensor as an :class:`InMemory` source; a source as it is."""
    return InMemory(data) if isinstance(data, torch.Tensor) else data
