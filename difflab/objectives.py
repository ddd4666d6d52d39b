"""Training losses: draw t and noise, form x_t, predict, weight. Per-example loss out; the caller reduces.

    L(theta) = E_{t, x_0, eps} [ lambda(t) || f_theta(x_t, t) - target(x_0, eps, t) ||^2 ],
    x_t = alpha(t) x_0 + sigma(t) eps

With target = eps, uniform weighting and discrete t this is L_simple of Ho et al. (2020), eq. 14.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.errors import DifflabError
from difflab.parameterization import check_target, from_x0_eps
from difflab.process import DDPMProcess, GaussianProcess
from difflab.process.base import as_time

TIME_SAMPLINGS = ("discrete", "continuous")
WEIGHTINGS = ("uniform",)


@dataclass(frozen=True)
class DiffusionObjective:
    """What a diffusion model is trained to predict, and how times are drawn and weighted."""

    target: str = "eps"
    weighting: str = "uniform"
    time_sampling: str = "discrete"   # "discrete": t = i/T, i ~ U{1..T} (DDPM); "continuous": t ~ U(t_min, 1)

    def __post_init__(self) -> None:
        check_target(self.target)
        if self.weighting not in WEIGHTINGS:
            raise DifflabError(f"unknown weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise DifflabError(f"unknown time sampling {self.time_sampling!r}; choose one of {', '.join(TIME_SAMPLINGS)}")


def sample_times(process: GaussianProcess, n: int, how: str, generator: torch.Generator | None,
                 device: torch.device | str = "cpu") -> Tensor:
    """(n,) float64 training times."""
    if how == "discrete":
        if not isinstance(process, DDPMProcess):
            raise DifflabError("discrete time sampling needs the ddpm process; use continuous time sampling")
        i = torch.randint(1, process.T + 1, (n,), generator=generator, device=device)
        return process.times(i)
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return process.t_min + (process.t_max - process.t_min) * u


def diffusion_loss(network: nn.Module, process: GaussianProcess, objective: DiffusionObjective, x0: Tensor,
                   cond: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Per-example loss (B,) and the times t (B,) it was taken at. x0: (B, ...)."""
    B = x0.shape[0]
    t = sample_times(process, B, objective.time_sampling, generator, x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    c = process.coefficients(as_time(t)).expand_as(x0)
    x_t = c.alpha * x0 + c.sigma * eps                                    # q(x_t | x_0)
    target = from_x0_eps(objective.target, x0, eps, c)
    pred = network(x_t, t.to(x0.dtype), cond)
    loss = (pred.float() - target.float()).pow(2).flatten(1).mean(1)       # ||f - target||^2 / D
    return loss, t
