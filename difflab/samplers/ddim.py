"""DDIM (Song, Meng & Ermon 2021, eq. 12) on any Gaussian path and any time grid.

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,    c^2 = eta^2 Var[q(x_s | x_t, x_0)]

eta = 0 is the deterministic DDIM (a first-order solver of the probability-flow ODE);
eta = 1 is DDPM ancestral sampling with the posterior variance.
"""

from __future__ import annotations

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.process.base import as_time, expand_to
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, check_grid, require_noise, run_grid


def sample_ddim(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                cond: Condition | None = None, callback: Callback | None = None, eta: float = 0.0) -> SampleResult:
    """DDIM from x at ts[0] down to 0. x: (B, ...); eta in [0, 1]."""
    if not 0.0 <= eta <= 1.0:
        raise DifflabError(f"--eta must lie in [0, 1], got {eta}")
    if eta > 0:
        require_noise(noise, "ddim with eta > 0")
    process = denoiser.process

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        t_, s_ = as_time(t), as_time(s)
        a_s, sig_s = process.alpha_sigma(s_)
        c2 = eta**2 * process.posterior_coefficients(t_, s_)[2]           # eta^2 Var[q(x_s | x_t, x_0)]
        x_s = expand_to(a_s, x) * pred.x0 + expand_to((sig_s**2 - c2).clamp_min(0).sqrt(), x) * pred.eps
        return x_s + expand_to(c2.sqrt(), x) * noise.randn_like(x) if eta > 0 else x_s

    return run_grid(CountingDenoiser(denoiser), x, check_grid(ts), step, cond, callback)
