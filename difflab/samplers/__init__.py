"""Samplers: stateless functions sampler(denoiser, x, ts, *, noise, cond, callback, **options) -> SampleResult."""

from __future__ import annotations

from typing import Callable

from difflab.errors import DifflabError
from difflab.samplers.base import SampleResult, StepInfo
from difflab.samplers.ddim import sample_ddim
from difflab.samplers.ddpm import sample_ddpm
from difflab.samplers.grids import SPACINGS, time_grid

SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
}


def get_sampler(name: str) -> Callable[..., SampleResult]:
    if name not in SAMPLERS:
        raise DifflabError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = ["SAMPLERS", "SPACINGS", "SampleResult", "StepInfo", "get_sampler", "sample_ddim", "sample_ddpm", "time_grid"]
