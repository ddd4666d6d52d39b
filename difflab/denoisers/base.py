"""The one interface between models and samplers: D(x_t, t, cond) -> Prediction(x0, eps).

Samplers ask a Prediction for whatever they need: x0, eps, score or velocity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from difflab.condition import Condition
from difflab.parameterization import from_x0_eps
from difflab.process.base import GaussianProcess, PathCoefficients


@dataclass(frozen=True)
class Prediction:
    """A denoiser's output at (x_t, t): x0_hat and eps_hat (B, ...), the path coefficients (already broadcast
    against x) they were made with, and for a model with learned variance its v (B, ...): the reverse step's
    variance exp(v log beta + (1 - v) log beta-tilde) (Nichol & Dhariwal 2021, eq. 15); None for the others."""

    x0: Tensor
    eps: Tensor
    coeffs: PathCoefficients
    variance_v: Tensor | None = None

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
    """Anything samplers can call: x (B, ...) at times t (() or (B,) float64) under an optional condition."""

    process: GaussianProcess

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction: ...
