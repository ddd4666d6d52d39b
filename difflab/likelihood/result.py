"""What a likelihood evaluation returns: per-example bits/dim and a summary over the examples."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence, TypeVar

import torch
from torch import Tensor

R = TypeVar("R", bound="LikelihoodResult")


@dataclass(frozen=True)
class LikelihoodResult:
    """bpd (B,) bits/dim per example; nfe: denoiser evaluations per example; seconds: wall time in all."""

    bpd: Tensor
    nfe: float
    seconds: float

    def summary(self) -> dict[str, float]:
        """mean bits/dim, its standard error std/sqrt(n) over examples, n, NFE per example and timings."""
        n = self.bpd.numel()
        bpd = self.bpd.to(torch.float64)
        sem = float(bpd.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
        return {"bpd": float(bpd.mean()), "sem": sem, "n": n, "nfe": float(self.nfe),
                "seconds": self.seconds, "seconds_per_example": self.seconds / max(n, 1)}

    @classmethod
    def cat(cls: type[R], results: Sequence[R]) -> R:
        """Join results of several batches: tensors concatenated along the batch, NFE averaged per
        example, seconds added."""
        if not results:
            raise ValueError("nothing to concatenate")
        n = [r.bpd.shape[0] for r in results]
        values = {}
        for f in fields(cls):
            parts = [getattr(r, f.name) for r in results]
            if isinstance(parts[0], Tensor):
                values[f.name] = torch.cat(parts)
            elif f.name == "nfe":
                values[f.name] = sum(k * v for k, v in zip(n, parts)) / sum(n)
            else:
                values[f.name] = sum(parts)
        return cls(**values)
