"""The Gaussian path every process in difflab shares.

    x_t = alpha(t) * x_0 + sigma(t) * eps,    eps ~ N(0, I),    t in [0, 1]

Convention for the whole code base: t = 0 is data, t = 1 is noise (flow matching included; its
"alpha = 1 - t, sigma = t" is this convention). A process only knows alpha, sigma and their time
derivatives; the SDE drift and diffusion follow from them:

    f(t)   = alpha'(t) / alpha(t)                                  (dx = f x dt + g dw)
    g^2(t) = d sigma^2/dt - 2 f(t) sigma^2(t) = 2 sigma sigma' - 2 f sigma^2
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from difflab.errors import DifflabError

REVERSE_VARIANCES = ("posterior", "beta")
# what a reverse step may use: the two fixed variances, a model's learned one, or "auto" (learned where learned)
VARIANCES = ("auto", *REVERSE_VARIANCES, "learned")


@dataclass(frozen=True)
class PathCoefficients:
    """alpha(t), sigma(t) and their derivatives d/dt, each shaped like the ``t`` they came from."""

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor

    def expand_as(self, x: Tensor) -> PathCoefficients:
        """Reshape (B,) coefficients to (B, 1, ..., 1) so they broadcast against x (B, ...), in x's dtype."""
        return PathCoefficients(*(expand_to(c, x) for c in (self.alpha, self.sigma, self.d_alpha, self.d_sigma)))


def expand_to(c: Tensor, x: Tensor) -> Tensor:
    """(B,) or () -> (B, 1, ..., 1) with x.ndim dims, cast to x's dtype and device."""
    c = c.to(device=x.device, dtype=x.dtype)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def as_time(t: Tensor | float, batch: int | None = None, device: torch.device | None = None) -> Tensor:
    """A float64 time tensor; a scalar is broadcast to (batch,) when ``batch`` is given."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if batch is not None and t.ndim == 0:
        t = t.expand(batch)
    return t


class GaussianProcess(ABC):
    """A forward process given by alpha(t), sigma(t) on t in [t_min, 1].

    Subclasses implement :meth:`coefficients`; everything else is derived. ``t_min`` is the smallest
    time a model is trained on and a sampler should query (above it, sigma > 0).

    Code that depends on what kind of process it has asks these capabilities, never ``isinstance``:
      discrete_steps   T for a process defined on steps i/T (DDPM), None for continuous time
      snap_times(ts)   a time grid moved onto the times the process is defined at (identity if continuous)
      is_interpolant   x_1 = eps exactly (alpha(1) = 0, sigma(1) = 1): noise and data may be paired freely
      t_min, t_max     the usable time range

    A subclass's constructor arguments are its options (``difflab.process.process_options`` reads them,
    with their defaults, from the signature); ``OPTION_HELP`` says what each means, ``OPTION_CHOICES``
    lists the values of those that take names.
    """

    name: str = "process"
    t_min: float = 0.0
    t_max: float = 1.0
    discrete_steps: int | None = None
    is_interpolant: bool = False
    OPTION_HELP: ClassVar[dict[str, str]] = {}
    OPTION_CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}

    @abstractmethod
    def coefficients(self, t: Tensor) -> PathCoefficients:
        """alpha, sigma, alpha', sigma' at times t (any shape), float64."""

    def config(self) -> dict:
        """The JSON-able arguments that rebuild this process with :func:`difflab.process.build_process`."""
        return {"name": self.name}

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        c = self.coefficients(as_time(t))
        return c.alpha, c.sigma

    def marginal(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Sample q(x_t | x_0) = N(alpha x_0, sigma^2 I) with the given noise. x0, eps: (B, ...); t: (B,)."""
        alpha, sigma = self.alpha_sigma(t)
        return expand_to(alpha, x0) * x0 + expand_to(sigma, x0) * eps

    def log_snr(self, t: Tensor) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2)."""
        alpha, sigma = self.alpha_sigma(t)
        return 2.0 * (torch.log(alpha) - torch.log(sigma))

    def time_at_log_snr(self, log_snr: Tensor, iters: int = 64) -> Tensor:
        """The time t in [0, t_max] with lambda(t) = log_snr (float64, any shape), by bisection.

        lambda(t) decreases in t on every path, so 64 halvings of [0, t_max] reach float64 resolution;
        values outside the path's range land on its ends."""
        target = as_time(log_snr)
        lo, hi = torch.zeros_like(target), torch.full_like(target, self.t_max)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > target          # still too little noise: t lies to the right
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def drift(self, t: Tensor) -> Tensor:
        """f(t) = alpha'/alpha, the linear drift coefficient of the forward SDE dx = f x dt + g dw."""
        c = self.coefficients(as_time(t))
        return c.d_alpha / c.alpha

    def diffusion_sq(self, t: Tensor) -> Tensor:
        """g(t)^2 = 2 sigma sigma' - 2 (alpha'/alpha) sigma^2 (the forward SDE's diffusion squared)."""
        c = self.coefficients(as_time(t))
        return 2.0 * c.sigma * c.d_sigma - 2.0 * (c.d_alpha / c.alpha) * c.sigma**2

    def prior_std(self) -> float:
        """Std of the noise the reverse process starts from: sigma(t_max) (alpha(t_max) x_0 is neglected)."""
        return float(self.alpha_sigma(as_time(self.t_max))[1])

    def snap_times(self, ts: Tensor) -> Tensor:
        """Increasing float64 times moved onto the times the process is defined at: unchanged here."""
        return ts

    def reverse_variance(self, t: Tensor, s: Tensor, variance: str, v: Tensor | None = None) -> Tensor:
        """The variance of a reverse step p(x_s | x_t), s < t, shaped like t (Ho et al. 2020, sec. 3.2):
            "posterior"  Var[q(x_s | x_t, x_0)] (beta-tilde_t on DDPM's own steps)
            "beta"       sigma_{t|s}^2 = Var[q(x_t | x_s)] (beta_t on DDPM's own steps)
            "learned"    exp(v log beta + (1 - v) log beta-tilde) of the two above with a model's v, shaped like v
            "auto"       "learned" where v is given, else "posterior" (see :func:`resolve_variance`)"""
        variance = resolve_variance(variance, v is not None)
        if variance == "learned":
            var_beta, var_post = (expand_to(self.reverse_variance(t, s, fixed), v) for fixed in ("beta", "posterior"))
            return learned_variance(v, var_beta, var_post)
        if variance == "posterior":
            return self.posterior_coefficients(t, s)[2]
        return transition_variance(*self.alpha_sigma(t), *self.alpha_sigma(s))

    def posterior_coefficients(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_s | x_t, x_0) = N(coef_xt x_t + coef_x0 x_0, var) for s < t, on any Gaussian path.

        With alpha_{t|s} = alpha_t/alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2
        (Kingma et al. 2021, eq. 3 and 26):
            coef_xt = alpha_{t|s} sigma_s^2 / sigma_t^2,  coef_x0 = alpha_s sigma_{t|s}^2 / sigma_t^2
            var     = sigma_{t|s}^2 sigma_s^2 / sigma_t^2
        For DDPM's consecutive steps this is Ho et al. (2020) eq. 6-7 (var = beta-tilde_t).
        Returns (coef_xt, coef_x0, var), shaped like t.
        """
        a_t, s_t = self.alpha_sigma(t)
        a_s, s_s = self.alpha_sigma(s)
        var_ts = transition_variance(a_t, s_t, a_s, s_s)
        return (a_t / a_s) * s_s**2 / s_t**2, a_s * var_ts / s_t**2, var_ts * s_s**2 / s_t**2

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (B, ...) and variance (B,) of q(x_s | x_t, x_0); see :meth:`posterior_coefficients`."""
        coef_xt, coef_x0, var = self.posterior_coefficients(t, s)
        return expand_to(coef_xt, x_t) * x_t + expand_to(coef_x0, x_t) * x0, var


def resolve_variance(variance: str, learned: bool) -> str:
    """The variance a reverse step uses: "auto" is "learned" for a model with learned variance, else "posterior"."""
    if variance not in VARIANCES:
        raise DifflabError(f"unknown DDPM variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    if variance == "learned" and not learned:
        raise DifflabError("--variance learned needs a model trained with --learn-variance; use posterior or beta")
    if variance == "auto":
        return "learned" if learned else "posterior"
    return variance


def learned_variance(v: Tensor, var_beta: Tensor, var_posterior: Tensor) -> Tensor:
    """Sigma = exp(v log beta_t + (1 - v) log beta-tilde_t) (Nichol & Dhariwal 2021, eq. 15), elementwise: v = 1 gives
    the "beta" variance, v = 0 the "posterior" one; v is a network output and is not clamped to [0, 1]."""
    return torch.exp(v * torch.log(var_beta) + (1 - v) * torch.log(var_posterior))


def check_t_min(t_min: float, t_max: float = 1.0) -> None:
    """Raise DifflabError unless 0 < t_min < t_max: the smallest time must lie inside the path."""
    if not 0 < t_min < t_max:
        raise DifflabError(f"--t-min must lie in (0, {t_max}), got {t_min}")


def transition_variance(a_t: Tensor, s_t: Tensor, a_s: Tensor, s_s: Tensor) -> Tensor:
    """sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2, the variance of q(x_t | x_s), clamped >= 0."""
    return (s_t**2 - (a_t / a_s) ** 2 * s_s**2).clamp_min(0.0)
