"""EDM's stochastic sampler (Karras et al. 2022, "Elucidating the Design Space", Algorithm 2) on any Gaussian path.

EDM works in the frame of its Table 1 with scaling s(t) = alpha: x~ = x / alpha, sigma~ = sigma / alpha, where
the probability-flow ODE reads dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ = eps_hat (eq. 4). Each step t -> s:

    gamma   = min(S_churn / N, sqrt(2) - 1) if sigma~_t in [S_min, S_max] else 0     (N = steps, 0 included)
    sigma~^ = (1 + gamma) sigma~_t,   x~^ = x~_t + sqrt(sigma~^^2 - sigma~_t^2) S_noise z       (lines 4-6)
    x~_s    = x~^ + (sigma~_s - sigma~^) d,  d = eps_hat(x^, t^)                      (Euler step, line 8)
    x~_s    = x~^ + (sigma~_s - sigma~^) (d + d') / 2,  d' = eps_hat(x_s, s)          (2nd-order correction, 9-11)

S_min, S_max are in sigma~ = sigma / alpha units, as in EDM. s_churn = 0 is EDM's deterministic Heun sampler
(Algorithm 1) and needs no noise. NFE = 2 N - 1: the step onto t = 0 is the denoising step x0_hat(x^, t^)
(EDM's Euler step onto sigma = 0 is exactly that), with no correction.

How the general path enters:
  - the raised level's time t^ = process.time_at_log_snr(-2 log sigma~^), clamped to the process's t_max
    (where (1 + gamma) sigma~_t lies beyond sigma~(t_max), t^ = t_max and less noise is added: x^ then has the
    marginal at t_max exactly). On a discrete process (DDPM) t^ is snapped onto its steps with
    ``process.snap_times``, as EDM rounds sigma~^ to the levels a discrete model knows (``round_sigma``), and
    never below t. In x, line 5 is the forward transition q(x_t^ | x_t):
    x^ = (alpha^ / alpha_t) x_t + S_noise sqrt(sigma^^2 - (alpha^ / alpha_t)^2 sigma_t^2) z.
  - where alpha_t = 0 (the flow path's t = 1, sigma~ = inf) there is no churn (the state is pure noise), and
    the step leaves EDM's frame, whose step from sigma~ = inf is infinite, for the reciprocal one,
    x / sigma against alpha / sigma, where the ODE reads d(x / sigma) / d(alpha / sigma) = x0_hat and t = 1 is
    an ordinary point; there Euler is DDIM and the same trapezoid correction keeps the step second order.
The callback sees StepInfo(k, t_k, x_k, x0_hat) with the grid time and the state before the churn, and the
x0 prediction made at (x^, t^).
"""

from __future__ import annotations

import math

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, as_time, transition_variance
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, StepInfo, check_grid, require_noise

GAMMA_MAX = math.sqrt(2.0) - 1.0        # EDM's cap on gamma: the churn at most doubles the noise variance


def coefficients(process: GaussianProcess, t: float) -> tuple[float, float]:
    """(alpha(t), sigma(t)) as floats."""
    alpha, sigma = process.alpha_sigma(as_time(t))
    return float(alpha), float(sigma)


def churn(process: GaussianProcess, x: Tensor, t: float, gamma: float, s_min: float, s_max: float,
          s_noise: float, noise: Noise | None) -> tuple[float, Tensor]:
    """Algorithm 2, lines 4-6: (t^, x^) with sigma~ raised by 1 + gamma where sigma~_t lies in [S_min, S_max]
    (see the module docstring for t_max, discrete processes and alpha = 0). x: (B, ...)."""
    a_t, sig_t = coefficients(process, t)
    if gamma == 0.0 or a_t == 0.0 or not s_min <= sig_t / a_t <= s_max:
        return t, x
    t_hat = float(process.time_at_log_snr(as_time(-2.0 * math.log((1 + gamma) * sig_t / a_t))))  # <= t_max
    t_hat = max(float(process.snap_times(as_time([t_hat]))[0]), t)
    if t_hat == t:
        return t, x
    a_hat, sig_hat = process.alpha_sigma(as_time(t_hat))
    std = float(transition_variance(a_hat, sig_hat, as_time(a_t), as_time(sig_t)).sqrt())  # q(x_t^ | x_t)
    return t_hat, (float(a_hat) / a_t) * x + s_noise * std * noise.randn_like(x)


def heun_step(model: CountingDenoiser, x: Tensor, pred: Prediction, t: float, s: float,
              cond: Condition | None) -> Tensor:
    """Algorithm 2, lines 7-11: from (x^, t^) with its prediction to s > 0. x: (B, ...)."""
    (a_t, sig_t), (a_s, sig_s) = coefficients(model.process, t), coefficients(model.process, s)
    if a_t > 0:      # EDM's frame: y = x / alpha against sigma / alpha, slope eps_hat
        scale_t, scale_s, dv, slope = a_t, a_s, sig_s / a_s - sig_t / a_t, lambda p: p.eps
    else:            # from alpha = 0: y = x / sigma against alpha / sigma, slope x0_hat
        scale_t, scale_s, dv, slope = sig_t, sig_s, a_s / sig_s, lambda p: p.x0
    y, d = x / scale_t, slope(pred)
    y_s = y + dv * d                                                                # Euler step (line 8)
    d_prime = slope(model(scale_s * y_s, as_time(s), cond))                         # 2nd-order correction
    return scale_s * (y + dv * 0.5 * (d + d_prime))                                 # (lines 9-11)


def sample_edm(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
               cond: Condition | None = None, callback: Callback | None = None, s_churn: float = 0.0,
               s_min: float = 0.0, s_max: float = math.inf, s_noise: float = 1.0) -> SampleResult:
    """EDM's sampler (Karras et al. 2022, Algorithm 2; s_churn = 0: Algorithm 1) from x at ts[0] down to 0.

    x: (B, ...). NFE = 2 N - 1 on a grid of N steps ending at 0. s_churn > 0 needs ``noise``."""
    if not (s_churn >= 0.0 and math.isfinite(s_churn)):
        raise DifflabError(f"--s-churn must be a finite number >= 0, got {s_churn}")
    if not (s_noise > 0.0 and math.isfinite(s_noise)):
        raise DifflabError(f"--s-noise must be a finite number > 0, got {s_noise}")
    if not 0.0 <= s_min <= s_max:
        raise DifflabError(f"--s-min and --s-max must satisfy 0 <= s-min <= s-max, got {s_min}, {s_max}")
    if s_churn > 0:
        require_noise(noise, "edm with s_churn > 0")
    grid, model = check_grid(ts), CountingDenoiser(denoiser)
    gamma = min(s_churn / (len(grid) - 1), GAMMA_MAX)
    for k, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        t_hat, x_hat = churn(model.process, x, t, gamma, s_min, s_max, s_noise, noise)
        pred = model(x_hat, as_time(t_hat), cond)
        if callback is not None:
            callback(StepInfo(k, t, x, pred.x0))
        x = pred.x0 if s == 0.0 else heun_step(model, x_hat, pred, t_hat, s, cond)
    return SampleResult(x, model.nfe)
