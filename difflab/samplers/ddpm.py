"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any Gaussian path and any time grid.

Each step t -> s draws x_s ~ p(x_s | x_t) = N(mu, var) with mu the posterior mean of q(x_s | x_t, x0_hat):
  variance="posterior": var = beta-tilde (the posterior variance, Ho et al. sigma_t^2 = beta-tilde_t)
  variance="beta":      var = sigma_{t|s}^2 = 1 - alpha_bar_t/alpha_bar_s (Ho et al. sigma_t^2 = beta_t)
  variance="learned":   var = exp(v log sigma_{t|s}^2 + (1 - v) log beta-tilde) with the model's v (Nichol & Dhariwal
                        2021, eq. 15; on a respaced grid their sec. 4 respacing)
  variance="auto":      "learned" for a model trained with learned variance, else "posterior"
On DDPM's own grid (s = t - 1/T) these are Ho et al.'s two choices exactly; on a coarser grid it is
the respaced sampler of Nichol & Dhariwal (2021).
"""

from __future__ import annotations

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.process.base import GaussianProcess, as_time, expand_to, resolve_variance
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, check_grid, require_noise, run_grid



def sample_ddpm(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                cond: Condition | None = None, callback: Callback | None = None,
                variance: str = "auto") -> SampleResult:
    """Ancestral sampling from x at ts[0] down to 0. x: (B, ...)."""
    resolve_variance(variance, learned=True)                    # a bad name fails before the first step
    require_noise(noise, "ddpm")
    process = denoiser.process

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        return ancestral_step(process, x, pred, t, s, noise, variance)

    return run_grid(CountingDenoiser(denoiser), x, check_grid(ts), step, cond, callback)


def ancestral_step(process: GaussianProcess, x: Tensor, pred: Prediction, t: float, s: float, noise: Noise,
                   variance: str = "auto") -> Tensor:
    """One ancestral step t -> s < t: x_s = mu(x_t, x0_hat) + sqrt(var) z (Ho et al. 2020, Algorithm 2, line 4)."""
    t_, s_ = as_time(t), as_time(s)
    mean, _ = process.posterior(x, pred.x0, t_, s_)
    v = None if pred.variance_v is None else pred.variance_v.to(x.dtype)
    var = process.reverse_variance(t_, s_, variance, v)                         # () or (B,); (B, ...) if learned
    return mean + expand_to(var.sqrt(), x) * noise.randn_like(x)              # x_s = mu + sigma z
