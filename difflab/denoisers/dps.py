"""Diffusion posterior sampling (DPS; Chung et al. 2023): a denoiser steered toward a measurement y = A(x) + sigma_y n.

The posterior score is the prior score plus grad log p(y | x_t). DPS approximates p(y | x_t) by p(y | x0_hat(x_t))
(eq. 15 of the paper, x0_hat the Tweedie estimate), so with r = y - A(x0_hat(x_t)) the gradient is taken
through the network:

    grad_{x_t} log p(y | x_t) ~ -rho(t) grad_{x_t} ||r||^2

with rho(t) by one of two rules:
  "paper"     rho = zeta T / (||r|| g(t)^2), T = 1000. The paper's Algorithm 1 moves x by zeta / ||r|| grad ||r||^2
              after each of DDPM's T = 1000 ancestral steps; a score shift d moves a DDPM step by
              beta_t d = (g(t)^2 / T) d, so this rho is that algorithm on DDPM's own grid, and its continuous-time
              limit on any grid and process (the reverse SDE integrates g^2 d dt). The probability-flow ODE
              (DDIM, Heun) weighs the score by g^2 / 2, so there the same zeta acts half as strongly.
              Works for noiseless measurements (sigma_y = 0).
  "gaussian"  rho = zeta / (2 sigma_y^2): the DPS approximation taken at face value as the log-likelihood of a
              Gaussian measurement (zeta = 1); needs sigma_y > 0.

As a score shift (denoisers.guidance.score_shifted) it is a Denoiser, so every sampler takes it: DDPM, DDIM, the
reverse SDE and, through the velocity model's x0 estimate, flow-matching models.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.denoisers.guidance import score_shifted
from difflab.errors import DifflabError
from difflab.process.base import as_time, expand_to
from difflab.operators import Operator

DPS_RULES = ("paper", "gaussian")
PAPER_STEPS = 1000            # T of the DDPM grid the paper's step size zeta is defined on (Algorithm 1)
DEFAULT_DPS_SCALE = 1.0


class PosteriorSampling:
    """DPS around ``inner`` for measurements ``y`` (B, ...) = operator(x) + sigma_y n of the B samples drawn.

    scale: zeta; rule: "paper" or "gaussian" (see the module docstring)."""

    def __init__(self, inner: Denoiser, operator: Operator, y: Tensor, sigma_y: float = 0.0,
                 scale: float = DEFAULT_DPS_SCALE, rule: str = "paper") -> None:
        if rule not in DPS_RULES:
            raise DifflabError(f"unknown DPS step rule {rule!r}; choose one of {', '.join(DPS_RULES)}")
        if rule == "gaussian" and not sigma_y > 0:
            raise DifflabError("the gaussian DPS rule weighs by 1 / (2 sigma_y^2): give a measurement noise "
                               "--noise > 0, or use the paper's rule")
        if not scale >= 0:
            raise DifflabError(f"the DPS scale must be >= 0, got {scale}")
        self.inner, self.process, self.operator, self.y = inner, inner.process, operator, y
        self.sigma_y, self.scale, self.rule = float(sigma_y), float(scale), rule

    def residual_gradient(self, x: Tensor, t: Tensor, cond: Condition | None) -> tuple[Prediction, Tensor, Tensor]:
        """inner's prediction at (x, t) (detached), ||r|| (B,) and grad_{x_t} ||y - A(x0_hat(x_t))||^2 (B, ...),
        under autograd even inside a sampler's no_grad."""
        if self.y.shape[0] != x.shape[0]:
            raise DifflabError(f"DPS holds {self.y.shape[0]} measurements for a batch of {x.shape[0]} samples")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            pred = self.inner(xg, t, cond)
            r = self.y.to(pred.x0.dtype) - self.operator(pred.x0)                 # (B, ...)
            sq = r.flatten(1).pow(2).sum(1)                                         # ||r||^2 (B,)
            (grad,) = torch.autograd.grad(sq.sum(), xg)
        v = None if pred.variance_v is None else pred.variance_v.detach()
        return Prediction(pred.x0.detach(), pred.eps.detach(), pred.coeffs, v), sq.detach().sqrt(), grad

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        t = as_time(t, device=x.device)
        pred, norm, grad = self.residual_gradient(x, t, cond)
        if self.scale == 0:
            return pred
        if self.rule == "gaussian":
            rho = torch.full_like(norm, self.scale / (2 * self.sigma_y**2))
        else:                                                   # zeta T / (||r|| g(t)^2), Chung et al. Alg. 1
            g2 = self.process.diffusion_sq(t).to(norm)
            rho = self.scale * PAPER_STEPS / (norm.clamp_min(torch.finfo(norm.dtype).tiny) * g2)
        return score_shifted(pred, -expand_to(rho, grad) * grad)
