"""Euler-Maruyama on the family of reverse-time SDEs that share the process's marginals p_t.

For any w(t) >= 0, running time backwards (dw_bar a reverse-time Wiener process),

    dx = [u(x, t) - (w(t) / 2) grad log p_t(x)] dt + sqrt(w(t)) dw_bar,    u = alpha' x0_hat + sigma' eps_hat

has marginals p_t: u is the probability-flow ODE velocity (Song et al. 2021, eq. 13), and the score term
plus the noise add a Langevin move that leaves p_t invariant (Song et al. 2021, App. D; Ma et al. 2024, SiT).
Choices of w:
  "sde"    w = g(t)^2: the process's own reverse SDE, dx = [f x - g^2 score] dt + g dw_bar (Song et al., eq. 6)
  "sigma"  w = sigma(t): a bounded diffusion (SiT's w_t = sigma_t), finite on the flow path at t = 1
           where g^2 = 2t / (1 - t) is infinite
  "auto"   "sigma" where alpha(t_max) = 0 (flow from pure noise), else "sde"
eta scales w: eta = 0 is the Euler solver of the probability-flow ODE, eta = 1 the SDE. On the flow
path this is the "stochastic variant" of flow-matching sampling.
"""

from __future__ import annotations

import math

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, as_time
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, check_grid, require_noise, run_grid

DIFFUSIONS = ("auto", "sde", "sigma")


def resolve_diffusion(process: GaussianProcess, diffusion: str, t_max: float) -> str:
    """The diffusion ("sde" or "sigma") for a grid starting at t_max: "auto" is "sigma" where alpha(t_max) = 0."""
    if diffusion not in DIFFUSIONS:
        raise DifflabError(f"unknown --diffusion {diffusion!r}; choose one of {', '.join(DIFFUSIONS)}")
    if diffusion == "auto":
        return "sigma" if float(process.alpha_sigma(as_time(t_max))[0]) == 0.0 else "sde"
    if diffusion == "sde" and not math.isfinite(float(process.diffusion_sq(as_time(t_max)))):
        raise DifflabError(f"--diffusion sde: g(t)^2 is infinite at t = {t_max} on the {process.name} path; "
                           "use --diffusion sigma (or auto)")
    return diffusion


def diffusion_weight(process: GaussianProcess, diffusion: str, t: float) -> float:
    """w(t): g(t)^2 for "sde", sigma(t) for "sigma" (already resolved, see :func:`resolve_diffusion`)."""
    t_ = as_time(t)
    return float(process.diffusion_sq(t_) if diffusion == "sde" else process.alpha_sigma(t_)[1])


def euler_maruyama_step(x: Tensor, pred: Prediction, t: float, s: float, w: float, noise: Noise | None) -> Tensor:
    """One step t -> s < t of the reverse SDE with diffusion weight w (w = 0 needs no noise). x: (B, ...).

        x_s = x_t - (t - s) [u - (w / 2) score] + sqrt(w (t - s)) z          (Euler-Maruyama, dt = s - t < 0)
    """
    h = t - s
    drift = pred.velocity - 0.5 * w * pred.score if w > 0 else pred.velocity       # (B, ...)
    x_s = x - h * drift
    return x_s + math.sqrt(w * h) * noise.randn_like(x) if w > 0 else x_s


def sample_euler_maruyama(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                          cond: Condition | None = None, callback: Callback | None = None, eta: float = 1.0,
                          diffusion: str = "auto") -> SampleResult:
    """Euler-Maruyama from x at ts[0] down to 0 (one evaluation a step; the last is the denoising step).

    x: (B, ...); eta >= 0 scales w(t); diffusion in ("auto", "sde", "sigma")."""
    if not (eta >= 0.0 and math.isfinite(eta)):
        raise DifflabError(f"--eta must be a finite number >= 0, got {eta}")
    grid, process = check_grid(ts), denoiser.process
    diffusion = resolve_diffusion(process, diffusion, grid[0])
    if eta > 0:
        require_noise(noise, "euler-maruyama with eta > 0")

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        return euler_maruyama_step(x, pred, t, s, eta * diffusion_weight(process, diffusion, t), noise)

    return run_grid(CountingDenoiser(denoiser), x, grid, step, cond, callback)
