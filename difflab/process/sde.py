"""Continuous-time score SDEs (Song et al. 2021) as Gaussian paths on t in [0, 1].

VP-SDE:  dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,   beta(t) = beta_min + t (beta_max - beta_min)
         alpha(t) = exp(-1/2 int_0^t beta) = exp(-1/2 beta_min t - 1/4 (beta_max - beta_min) t^2),
         sigma(t)^2 = 1 - alpha(t)^2                                             (Song et al., eq. 29)
VE-SDE:  dx = sqrt(d sigma^2/dt) dw,   alpha = 1,   sigma(t) = sigma_min (sigma_max / sigma_min)^t  (eq. 30)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, PathCoefficients, as_time, check_t_min


class VPProcess(GaussianProcess):
    """Variance-preserving SDE with a linear beta(t); t_min = 1e-3 as in Song et al."""

    name = "vp"
    OPTION_HELP = {"beta_min": "VP-SDE beta(0)", "beta_max": "VP-SDE beta(1)",
                   "t_min": "smallest time a model is trained on and sampled at"}

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3) -> None:
        if not 0 <= beta_min < beta_max:
            raise DifflabError(f"VP-SDE needs 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        check_t_min(t_min)
        self.beta_min, self.beta_max, self.t_min = beta_min, beta_max, t_min

    def config(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + as_time(t) * (self.beta_max - self.beta_min)

    def coefficients(self, t: Tensor) -> PathCoefficients:
        t = as_time(t)
        log_alpha = -0.5 * self.beta_min * t - 0.25 * (self.beta_max - self.beta_min) * t**2
        alpha = torch.exp(log_alpha)
        sigma = (-torch.expm1(2 * log_alpha)).clamp_min(0).sqrt()     # sqrt(1 - alpha^2), exact near t = 0
        d_alpha = -0.5 * self.beta(t) * alpha
        d_sigma = -alpha * d_alpha / sigma.clamp_min(1e-300)          # from alpha^2 + sigma^2 = 1
        return PathCoefficients(alpha, sigma, d_alpha, d_sigma)


class VEProcess(GaussianProcess):
    """Variance-exploding SDE with geometric sigma(t); t_min = 1e-5 as in Song et al.

    At t = 0 the path keeps sigma_min of noise; samplers remove it with the final denoising step.
    """

    name = "ve"
    OPTION_HELP = {"sigma_min": "VE-SDE sigma(0)", "sigma_max": "VE-SDE sigma(1)",
                   "t_min": "smallest time a model is trained on and sampled at"}

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5) -> None:
        if not 0 < sigma_min < sigma_max:
            raise DifflabError(f"VE-SDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        check_t_min(t_min)
        self.sigma_min, self.sigma_max, self.t_min = sigma_min, sigma_max, t_min
        self._log_ratio = math.log(sigma_max / sigma_min)

    def config(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "t_min": self.t_min}

    def coefficients(self, t: Tensor) -> PathCoefficients:
        t = as_time(t)
        sigma = self.sigma_min * torch.exp(t * self._log_ratio)
        one = torch.ones_like(t)
        return PathCoefficients(one, sigma, torch.zeros_like(t), sigma * self._log_ratio)
