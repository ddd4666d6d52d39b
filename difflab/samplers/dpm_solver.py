"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++"): solvers of the probability-flow ODE in the log-SNR
lambda = log(alpha / sigma), written with the data prediction x0_hat, on any Gaussian path and any time grid.

The exact solution from t to s < t (h = lambda_s - lambda_t > 0) is the exponential integrator (eq. 9)

    x_s = (sigma_s / sigma_t) x_t + sigma_s int_{lambda_t}^{lambda_s} e^lambda x0_hat(lambda) d lambda

and the solvers approximate x0_hat in the integral. The first-order step (DPM-Solver++1, = DDIM) is

    x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) x0_hat(t)

with alpha_s (1 - e^{-h}) = alpha_s - alpha_t sigma_s / sigma_t, so it stays finite where alpha_t = 0 (the flow
path's t = 1, lambda = -inf): there h = inf, e^{-h} = 0.

  dpmpp-2m      multistep, order 2 (Algorithm 2): one evaluation per step, the previous step's x0_hat
  dpmpp-3m      multistep, order 3 (the official code's multistep_dpm_solver_third_update, its D2 term
                corrected: see below), warming up at orders 1 and 2: one evaluation per step
  dpmpp-2s      single-step, order 2 (Algorithm 1, r = 1/2): two evaluations per step
  dpmpp-2m-sde  the 2M step on the SDE with the same marginals (Lu et al. 2022, App.; Gonzalez et al. 2023;
                k-diffusion's sample_dpmpp_2m_sde, diffusers' "sde-dpmsolver++"), eta = 0 being dpmpp-2m

With the previous x0_hat m_1 at lambda_p1 (and m_2 at lambda_p2), h_0 = lambda_t - lambda_p1, h_1 =
lambda_p1 - lambda_p2, r_0 = h_0 / h, r_1 = h_1 / h, and the divided differences

    D1_0 = (m_0 - m_1) / r_0,   D1_1 = (m_1 - m_2) / r_1
    D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1),   D2 = (D1_0 - D1_1) / (r_0 + r_1)

the multistep updates add to the first-order step (phi_2 = 1 - (1 - e^{-h}) / h, phi_3 = phi_2 / h - 1/2):

    order 2 ("midpoint", Algorithm 2):  + alpha_s (1 - e^{-h}) D1_0 / 2         ("heun": + alpha_s phi_2 D1_0)
    order 3:                            + alpha_s (phi_2 D1 - 2 phi_3 D2)

For x0_hat quadratic in lambda, D1 = h x0_hat' and D2 = h^2 x0_hat'' / 2 exactly, and the integral's terms are
alpha_s h phi_2 x0_hat' and -alpha_s h^2 phi_3 x0_hat'' = -2 alpha_s phi_3 D2. The official code (and k-diffusion's
and diffusers' copies) writes "- phi_3 D2", half of that term: its local error is then O(h^3) and the solver
second order (measured on the analytic mixture, NFE 40-320: slope 1.8-1.9 on vp and ve, against 3.2 with
2 phi_3; tests/samplers/test_dpm_solver.py checks exactness on a quadratic x0_hat).

A step whose history reaches back to lambda = -inf drops the orders that need it (the differences -> 0 in
that limit): the flow path's first two steps from t = 1 are first and second order. ``lower_order_final``:
on grids of fewer than LOWER_ORDER_FINAL_BELOW steps the k-th last step onto a positive time is taken at
order <= k, as DPM-Solver++'s code does to keep few-step sampling stable; the step onto 0 is the denoising
step x0_hat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, as_time
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, check_grid, require_noise, run_grid

LOWER_ORDER_FINAL_BELOW = 15     # grids of fewer steps take their last steps at lower order (DPM-Solver++'s rule)
SOLVER_TYPES = ("midpoint", "heun")


def log_snr(alpha: float, sigma: float) -> float:
    """lambda = log(alpha / sigma); -inf where alpha = 0."""
    return math.log(alpha / sigma) if alpha > 0 else -math.inf


def one_minus_exp(x: float) -> float:
    """1 - e^{-x} for x >= 0, x = inf included (-> 1)."""
    return -math.expm1(-x)


@dataclass(frozen=True)
class LambdaStep:
    """A step t -> s < t seen in lambda: what every DPM-Solver++ update is built from (floats)."""

    lam_t: float     # -inf where alpha_t = 0
    lam_s: float
    ratio: float     # sigma_s / sigma_t
    alpha_s: float
    sigma_s: float

    @property
    def h(self) -> float:
        """lambda_s - lambda_t > 0 (inf where alpha_t = 0)."""
        return self.lam_s - self.lam_t

    def first_order(self, x: Tensor, x0: Tensor, eta: float = 0.0) -> Tensor:
        """x_s = (sigma_s / sigma_t) e^{-eta h} x + alpha_s (1 - e^{-(1 + eta) h}) x0 (DPM-Solver++1; eta = 0: DDIM)."""
        decay = math.exp(-eta * self.h) if eta > 0 else 1.0
        return self.ratio * decay * x + self.alpha_s * one_minus_exp((1 + eta) * self.h) * x0


def lambda_step(process: GaussianProcess, t: float, s: float) -> LambdaStep:
    """The step t -> s on ``process``; s > 0 (sigma_s > 0)."""
    a_t, sig_t = (float(c) for c in process.alpha_sigma(as_time(t)))
    a_s, sig_s = (float(c) for c in process.alpha_sigma(as_time(s)))
    return LambdaStep(log_snr(a_t, sig_t), log_snr(a_s, sig_s), sig_s / sig_t, a_s, sig_s)


def multistep_update(x: Tensor, step: LambdaStep, history: list[tuple[float, Tensor]], order: int,
                     eta: float = 0.0, solver_type: str = "midpoint") -> Tensor:
    """One DPM-Solver++ multistep update x_t -> x_s (see the module docstring), without the SDE's noise.

    x: (B, ...); history: (lambda, x0_hat) newest first, history[0] made at (x_t, t). Uses order <= ``order``,
    as far as the history reaches with finite lambdas. eta > 0: the SDE's drift, h -> (1 + eta) h in the
    x0_hat coefficients (k-diffusion's sample_dpmpp_2m_sde / 3m_sde)."""
    lams = [step.lam_s] + [lam for lam, _ in history]
    order = min(order, len(history))
    while order > 1 and not (all(math.isfinite(lam) for lam in lams[:order + 1])
                             and all(a > b for a, b in zip(lams, lams[1:order + 1]))):
        order -= 1
    m = [x0 for _, x0 in history[:order]]
    x_s = step.first_order(x, m[0], eta)
    if order == 1:
        return x_s
    h, eta_h = step.h, (1 + eta) * step.h
    phi_2 = 1 - one_minus_exp(eta_h) / eta_h                     # (e^{-H} - 1) / H + 1, H = (1 + eta) h
    r_0 = (lams[1] - lams[2]) / h
    d1_0 = (m[0] - m[1]) / r_0
    if order == 2:
        coef = 0.5 * one_minus_exp(eta_h) if solver_type == "midpoint" else phi_2
        return x_s + step.alpha_s * coef * d1_0
    r_1 = (lams[2] - lams[3]) / h                                 # order 3 (multistep_dpm_solver_third_update)
    d1_1 = (m[1] - m[2]) / r_1
    d1 = d1_0 + r_0 / (r_0 + r_1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r_0 + r_1)
    phi_3 = phi_2 / eta_h - 0.5                                   # (e^{-H} - 1 + H) / H^2 - 1/2
    return x_s + step.alpha_s * (phi_2 * d1 - 2 * phi_3 * d2)       # 2 phi_3: see the module docstring


def order_caps(grid: list[float], lower_order_final: bool) -> dict[float, int] | None:
    """The highest order of the step onto each positive time s of ``grid``, or None for no cap: with
    ``lower_order_final`` on a grid of fewer than LOWER_ORDER_FINAL_BELOW steps, the step onto the k-th last
    positive time is taken at order <= k (positive[-1] -> 1, positive[-2] -> 2, ...)."""
    if not (lower_order_final and len(grid) - 1 < LOWER_ORDER_FINAL_BELOW):
        return None
    positive = [t for t in grid if t > 0]
    return {t: len(positive) - k for k, t in enumerate(positive)}


def sample_multistep(denoiser: Denoiser, x: Tensor, ts: Tensor, order: int, lower_order_final: bool,
                     cond: Condition | None = None, callback: Callback | None = None, eta: float = 0.0,
                     solver_type: str = "midpoint", noise: Noise | None = None) -> SampleResult:
    """DPM-Solver++(2M or 3M, ODE or SDE) from x at ts[0] down to 0. x: (B, ...). One evaluation per step.

    eta > 0 adds the SDE's noise sigma_s sqrt(1 - e^{-2 eta h}) z, z = noise.randn_like(x)."""
    process, grid = denoiser.process, check_grid(ts)
    caps = order_caps(grid, lower_order_final)
    history: list[tuple[float, Tensor]] = []                             # (lambda, x0_hat), newest first

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        st = lambda_step(process, t, s)
        history[:] = [(st.lam_t, pred.x0)] + history[:order - 1]
        x_s = multistep_update(x, st, history, min(order, caps[s]) if caps else order, eta, solver_type)
        if eta > 0:
            x_s = x_s + st.sigma_s * math.sqrt(one_minus_exp(2 * eta * st.h)) * noise.randn_like(x)
        return x_s

    return run_grid(CountingDenoiser(denoiser), x, grid, step, cond, callback)


def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                    cond: Condition | None = None, callback: Callback | None = None,
                    lower_order_final: bool = True) -> SampleResult:
    """DPM-Solver++(2M) from x at ts[0] down to 0. x: (B, ...). Deterministic: ``noise`` is not used."""
    return sample_multistep(denoiser, x, ts, 2, lower_order_final, cond, callback)


def sample_dpmpp_3m(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                    cond: Condition | None = None, callback: Callback | None = None,
                    lower_order_final: bool = True) -> SampleResult:
    """DPM-Solver++(3M) from x at ts[0] down to 0 (steps 1 and 2 at orders 1 and 2). x: (B, ...).
    Deterministic: ``noise`` is not used."""
    return sample_multistep(denoiser, x, ts, 3, lower_order_final, cond, callback)


def sample_dpmpp_2m_sde(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                        cond: Condition | None = None, callback: Callback | None = None, eta: float = 1.0,
                        solver_type: str = "midpoint", lower_order_final: bool = True) -> SampleResult:
    """DPM-Solver++(2M) SDE from x at ts[0] down to 0. x: (B, ...). One evaluation per step.

        x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s (1 - e^{-(1 + eta) h}) x0_hat
              + [2nd-order term of ``solver_type`` with h -> (1 + eta) h] + sigma_s sqrt(1 - e^{-2 eta h}) z

    eta = 1 is the reverse SDE of the process (Lu et al. 2022), eta = 0 the ODE (dpmpp-2m with "midpoint").
    Both solver types are second order: "midpoint" (k-diffusion's default), "heun" (exact for x0_hat linear
    in lambda, DPM-Solver's "taylor")."""
    if not (eta >= 0.0 and math.isfinite(eta)):
        raise DifflabError(f"--eta must be a finite number >= 0, got {eta}")
    if solver_type not in SOLVER_TYPES:
        raise DifflabError(f"unknown --solver-type {solver_type!r}; choose one of {', '.join(SOLVER_TYPES)}")
    if eta > 0:
        require_noise(noise, "dpmpp-2m-sde with eta > 0")
    return sample_multistep(denoiser, x, ts, 2, lower_order_final, cond, callback, eta, solver_type, noise)


def sample_dpmpp_2s(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                    cond: Condition | None = None, callback: Callback | None = None) -> SampleResult:
    """DPM-Solver++(2S) (Algorithm 1, r = 1/2) from x at ts[0] down to 0. x: (B, ...). Two evaluations per
    step (one on the step onto 0). Deterministic: ``noise`` is not used.

    From t to s, with the midpoint time t_mid at lambda_mid = lambda_t + h / 2:

        u   = (sigma_mid / sigma_t) x_t + alpha_mid (1 - e^{-h/2}) x0_hat(x_t, t)
        x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) x0_hat(u, t_mid)

    (Algorithm 1's D = (1 - 1/(2r)) x0_hat(x_t, t) + 1/(2r) x0_hat(u, t_mid) is x0_hat(u, t_mid) at r = 1/2.)
    From lambda_t = -inf (the flow path's t = 1) the midpoint in lambda does not exist; there lambda_mid =
    lambda_s - log 2, the midpoint in e^lambda = alpha / sigma: in that variable the step is
    x_s / sigma_s = x_t / sigma_t + int x0_hat d(alpha / sigma) over [0, alpha_s / sigma_s], and this is the
    midpoint rule for it (second order, where x0_hat is smooth in alpha / sigma; first order would leave an
    error that does not shrink as the grid refines, the first step's length being fixed). t_mid comes from
    ``process.time_at_log_snr``; on the DDPM process it falls between the steps, where the model is queried
    on the process's interpolated path (as DPM-Solver does for discrete-time models).
    """
    model, process = CountingDenoiser(denoiser), denoiser.process

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        full = lambda_step(process, t, s)
        lam_mid = full.lam_t + 0.5 * full.h if math.isfinite(full.lam_t) else full.lam_s - math.log(2.0)
        t_mid = float(process.time_at_log_snr(as_time(2.0 * lam_mid)))   # the process's log-SNR is 2 lambda
        u = lambda_step(process, t, t_mid).first_order(x, pred.x0)       # Alg. 1, line 4
        d = model(u, as_time(t_mid), cond).x0                            # line 5, r = 1/2
        return full.first_order(x, d)                                    # line 6

    return run_grid(model, x, check_grid(ts), step, cond, callback)
