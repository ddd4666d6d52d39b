"""Closed-form "perfectly trained models": Gaussian-mixture data under any Gaussian path.

Data p_0 = sum_k w_k N(mu_k, diag(s_k^2)). Under x_t = alpha x_0 + sigma eps the marginal is

    p_t(x) = sum_k w_k N(x; alpha mu_k, diag(alpha^2 s_k^2 + sigma^2))

and the exact denoiser (Tweedie) is

    E[x_0 | x_t] = sum_k r_k(x_t) [mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k)]

with r_k the posterior responsibilities. A single Gaussian is the case K = 1. Computed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Prediction
from difflab.process.base import GaussianProcess, as_time


class GaussianMixtureDenoiser:
    """Exact denoiser for a diagonal Gaussian mixture; data examples have shape ``example_shape``.

    means: (K, D); stds: (K, D) or (K,) or scalar; weights: (K,) (normalised here). D = prod(example_shape).
    """

    def __init__(self, process: GaussianProcess, means: Tensor, stds: Tensor | float,
                 weights: Tensor | None = None, example_shape: tuple[int, ...] | None = None) -> None:
        self.process = process
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim != 2:
            raise ValueError("means must be (K, D)")
        K, D = self.means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        self.stds = (stds.reshape(K, 1) if stds.ndim == 1 else stds).expand(K, D).clone()
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.example_shape = example_shape or (D,)
        if math.prod(self.example_shape) != D:
            raise ValueError(f"example_shape {self.example_shape} does not hold D = {D}")

    @classmethod
    def gaussian(cls, process: GaussianProcess, mean: float, std: float, example_shape: tuple[int, ...]) -> GaussianMixtureDenoiser:
        """Isotropic N(mean, std^2 I) data of the given shape."""
        D = math.prod(example_shape)
        return cls(process, torch.full((1, D), float(mean), dtype=torch.float64),
                   torch.full((1,), float(std), dtype=torch.float64), example_shape=example_shape)

    def _components(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Flattened x (B, D), alpha and sigma (B or 1, 1, 1), per-component marginal variance (B, K, D)
        and log responsibilities-before-normalisation (B, K)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        alpha, sigma = self.process.alpha_sigma(as_time(t, device=x.device))
        alpha, sigma = alpha.reshape(-1, 1, 1), sigma.reshape(-1, 1, 1)
        mu, s2 = self.means.to(x.device), self.stds.to(x.device) ** 2
        var = alpha**2 * s2 + sigma**2                                   # (B, K, D)
        diff = xf[:, None] - alpha * mu                                  # (B, K, D)
        logp = -0.5 * ((diff**2 / var) + torch.log(2 * math.pi * var)).sum(-1) + torch.log(self.weights.to(x.device))
        return xf, alpha, sigma, var, logp

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        xf, alpha, sigma, var, logp = self._components(x, t)
        r = torch.softmax(logp, dim=-1)                                  # (B, K)
        mu, s2 = self.means.to(x.device), self.stds.to(x.device) ** 2
        x0_k = mu + alpha * s2 / var * (xf[:, None] - alpha * mu)        # E[x0 | x_t, k]  (B, K, D)
        x0 = (r[..., None] * x0_k).sum(1).reshape(x.shape).to(x.dtype)
        c = self.process.coefficients(as_time(t, device=x.device)).expand_as(x)
        eps = (x - c.alpha * x0) / c.sigma
        return Prediction(x0, eps, c)

    def log_prob(self, x: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """log p_t(x) (B,) in nats; t = 0 gives the data density (for t_min > 0 processes use t explicitly)."""
        *_, logp = self._components(x, t)
        return torch.logsumexp(logp, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws from the data distribution p_0, shaped (n, *example_shape), float64."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * z).reshape(n, *self.example_shape)


def bench_mixture(process: GaussianProcess, dim: int) -> GaussianMixtureDenoiser:
    """The mixture the sampler benchmark and tests use. 2-D: three anisotropic components of unequal weight;
    otherwise four components with means ~ N(0, 0.5^2 I) and per-coordinate stds in [0.2, 0.6] (seed 0)."""
    if dim == 2:
        means = torch.tensor([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]], dtype=torch.float64)
        stds = torch.tensor([[0.3, 0.15], [0.2, 0.2], [0.15, 0.4]], dtype=torch.float64)
        return GaussianMixtureDenoiser(process, means, stds, torch.tensor([0.5, 0.3, 0.2]))
    g = torch.Generator().manual_seed(0)
    means = 0.5 * torch.randn(4, dim, generator=g, dtype=torch.float64)
    stds = 0.2 + 0.4 * torch.rand(4, dim, generator=g, dtype=torch.float64)
    return GaussianMixtureDenoiser(process, means, stds, torch.tensor([0.4, 0.3, 0.2, 0.1]))
