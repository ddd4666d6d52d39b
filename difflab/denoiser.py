"""The one interface between models and samplers: D(x_t, t, cond) -> Prediction(x0, eps).

A network trained for any target becomes a Denoiser by pairing it with its process; analytic models
(Gaussian, Gaussian mixture) and guidance wrappers implement the same call. Samplers ask a Prediction
for whatever they need: x0, eps, score or velocity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from difflab.parameterization import check_target, from_x0_eps, network_input, to_x0_eps
from difflab.process.base import GaussianProcess, PathCoefficients, as_time


@dataclass(frozen=True)
class Prediction:
    """A denoiser's output at (x_t, t): x0_hat and eps_hat (B, ...), and the path coefficients
    (already broadcast against x) they were made with."""

    x0: Tensor
    eps: Tensor
    coeffs: PathCoefficients

    def as_target(self, target: str) -> Tensor:
        """The prediction expressed as any target (eps, x0, v, score, velocity)."""
        return from_x0_eps(target, self.x0, self.eps, self.coeffs)

    @property
    def score(self) -> Tensor:
        """grad_x log p_t(x) = -eps_hat / sigma (Tweedie)."""
        return self.as_target("score")

    @property
    def velocity(self) -> Tensor:
        """Probability-flow ODE velocity dx/dt = alpha' x0_hat + sigma' eps_hat."""
        return self.as_target("velocity")


class Denoiser(Protocol):
    """Anything samplers can call."""

    process: GaussianProcess

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Prediction: ...


class NetworkDenoiser:
    """A network that predicts ``target``, read through its process as a Denoiser.

    x may be float64 (the sampling loop); the network runs in its own dtype and its output is cast back.
    Gradients flow (likelihoods and guidance differentiate through it); samplers' callers turn them off.
    """

    def __init__(self, network: nn.Module, process: GaussianProcess, target: str = "eps") -> None:
        self.network, self.process, self.target = network, process, check_target(target)
        self._dtype = next(network.parameters()).dtype

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Prediction:
        t = as_time(t, device=x.device)                                   # () or (B,) float64
        c = self.process.coefficients(t).expand_as(x)
        t_net = t.expand(x.shape[0]) if t.ndim == 0 else t                # (B,)
        out = self.network(network_input(x, c).to(self._dtype), t_net.to(self._dtype), cond).to(x.dtype)
        x0, eps = to_x0_eps(self.target, out, x, c)
        return Prediction(x0, eps, c)


class ClippedDenoiser:
    """Clamp x0_hat to [lo, hi] and recompute eps_hat from it, as DDPM sampling does for pixel data."""

    def __init__(self, inner: Denoiser, lo: float = -1.0, hi: float = 1.0) -> None:
        self.inner, self.process, self.lo, self.hi = inner, inner.process, lo, hi

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Prediction:
        p = self.inner(x, t, cond)
        x0 = p.x0.clamp(self.lo, self.hi)
        return Prediction(*to_x0_eps("x0", x0, x, p.coeffs), p.coeffs)
