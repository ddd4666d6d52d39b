"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a second-order multistep solver of the
probability-flow ODE in the log-SNR lambda = log(alpha / sigma), written with the data prediction x0_hat, on any
Gaussian path and any time grid.

From t to s (h = lambda_s - lambda_t > 0), with the previous step's x0_hat at lambda_p (h_p = lambda_t - lambda_p,
r = h_p / h):

    D   = (1 + 1 / (2 r)) x0_hat(t) - 1 / (2 r) x0_hat(p)            (first step: D = x0_hat(t))
    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D           (eq. 9; with D = x0_hat it is DDIM)

e^{-h} = alpha_t sigma_s / (sigma_t alpha_s), so the step stays finite where alpha_t = 0 (the flow path's t = 1,
lambda = -inf: its first step is first order). One evaluation per step. ``lower_order_final`` takes the last
step onto the smallest positive time at first order when the grid has fewer than LOWER_ORDER_FINAL_BELOW steps,
as DPM-Solver++'s code does to keep few-step sampling stable; the step onto 0 is the denoising step x0_hat.
"""

from __future__ import annotations

import math

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.process.base import as_time
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, check_grid, run_grid

LOWER_ORDER_FINAL_BELOW = 15     # grids of fewer steps take their last step at first order (DPM-Solver++'s rule)


def log_snr(alpha: float, sigma: float) -> float:
    """lambda = log(alpha / sigma); -inf where alpha = 0."""
    return math.log(alpha / sigma) if alpha > 0 else -math.inf


def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                    cond: Condition | None = None, callback: Callback | None = None,
                    lower_order_final: bool = True) -> SampleResult:
    """DPM-Solver++(2M) from x at ts[0] down to 0. x: (B, ...). Deterministic: ``noise`` is not used."""
    process = denoiser.process
    grid = check_grid(ts)
    positive = [t for t in grid if t > 0]
    final = positive[-1] if lower_order_final and len(grid) - 1 < LOWER_ORDER_FINAL_BELOW else None
    previous: list[tuple[float, Tensor]] = []          # (lambda, x0_hat) of the step before

    def coefficients(t: float) -> tuple[float, float]:
        a, s = process.alpha_sigma(as_time(t))
        return float(a), float(s)

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        (a_t, sig_t), (a_s, sig_s) = coefficients(t), coefficients(s)
        lam_t, lam_s = log_snr(a_t, sig_t), log_snr(a_s, sig_s)
        d = pred.x0
        if previous and s != final:
            lam_p, x0_p = previous[0]
            h, h_p = lam_s - lam_t, lam_t - lam_p
            if math.isfinite(h) and math.isfinite(h_p) and h > 0 and h_p > 0:
                half_inv_r = h / (2 * h_p)                                     # 1 / (2 r)
                d = (1 + half_inv_r) * pred.x0 - half_inv_r * x0_p
        previous[:] = [(lam_t, pred.x0)]
        ratio = sig_s / sig_t
        return ratio * x + (a_s - a_t * ratio) * d        # -alpha_s (e^{-h} - 1) = alpha_s - alpha_t sigma_s / sigma_t

    return run_grid(CountingDenoiser(denoiser), x, grid, step, cond, callback)
