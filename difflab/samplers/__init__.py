"""Samplers: stateless functions sampler(denoiser, x, ts, *, noise, cond, callback, **options) -> SampleResult.

A sampler's options are its keyword-only arguments after ``callback``; their defaults live in its
signature only (:func:`sampler_options` reads them from there for the CLI and the bench).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from difflab.errors import DifflabError
from difflab.samplers.base import SampleResult, StepInfo
from difflab.samplers.ddim import sample_ddim
from difflab.samplers.ddpm import sample_ddpm
from difflab.samplers.dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s, sample_dpmpp_3m
from difflab.samplers.edm import sample_edm
from difflab.samplers.grids import SPACINGS, time_grid
from difflab.samplers.langevin import sample_langevin
from difflab.samplers.ode import sample_dopri5, sample_euler, sample_heun, sample_rk4
from difflab.samplers.pc import sample_pc
from difflab.samplers.sde import sample_euler_maruyama
from difflab.samplers.unipc import sample_unipc

SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-3m": sample_dpmpp_3m,
    "dpmpp-2s": sample_dpmpp_2s,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "unipc": sample_unipc,
    "edm": sample_edm,
    "euler-maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "euler": sample_euler,
    "heun": sample_heun,
    "rk4": sample_rk4,
    "dopri5": sample_dopri5,
    "langevin": sample_langevin,
}
COMMON_ARGUMENTS = ("noise", "cond", "callback")


def get_sampler(name: str) -> Callable[..., SampleResult]:
    if name not in SAMPLERS:
        raise DifflabError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def sampler_options(name: str) -> dict[str, Any]:
    """The options of sampler ``name`` and their defaults, e.g. {"eta": 1.0, "diffusion": "auto"}."""
    params = inspect.signature(get_sampler(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in COMMON_ARGUMENTS}


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise DifflabError naming the first option that sampler ``name`` does not take."""
    known = sampler_options(name)
    for key in options:
        if key not in known:
            takes = ", ".join(known) or "no options"
            raise DifflabError(f"sampler {name!r} has no option {key!r} (it takes: {takes})")


__all__ = ["SAMPLERS", "SPACINGS", "SampleResult", "StepInfo", "check_options", "get_sampler", "sample_ddim",
           "sample_ddpm", "sample_dopri5", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_dpmpp_2s",
           "sample_dpmpp_3m", "sample_edm", "sample_euler", "sample_euler_maruyama", "sample_heun", "sample_langevin",
           "sample_pc", "sample_rk4", "sample_unipc", "sampler_options", "time_grid"]
