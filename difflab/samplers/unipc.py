"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models", sec. 3; the official code's multistep_uni_pc_bh_update with predict_x0=True): the multistep predictor
UniP-p and corrector UniC-p with the data prediction, in the log-SNR lambda = log(alpha / sigma), on any
Gaussian path and any time grid.

From t to s (h = lambda_s - lambda_t > 0; the data prediction integrates with h~ = -h) with the evaluations
m_0 = x0_hat(t) and m_k = x0_hat at earlier lambda_k (r_k = (lambda_k - lambda_t) / h < 0):

    D_k = (m_k - m_0) / r_k                               (k = 1 .. p - 1;  the corrector adds D_p = m_s - m_0, r_p = 1)
    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{h~} - 1) m_0 - alpha_s B(h~) sum_k rho_k D_k
    B(h~) = h~ (bh1) or e^{h~} - 1 (bh2)
    R rho = g / B(h~),  R[i, k] = r_k^(i-1),  g_i = h~ phi_{i+1}(h~) i!   (i = 1 .. number of D_k)

with phi_1(z) = (e^z - 1) / z, phi_{k+1}(z) = (phi_k(z) - 1 / k!) / z. Where a single D_k is used (UniP-2,
UniC-1), rho = 1/2, as the paper and its code do; otherwise the system is solved, and B(h~) cancels from
B(h~) rho: the two variants differ only through the rho = 1/2 steps (and hence through the warm-up).

``order`` p names the predictor's order, as the official code and diffusers do. Each step predicts x_s with
UniP-p, evaluates the model there, and corrects x_s with UniC-p, which reuses that evaluation: the model is
then evaluated at the predicted (uncorrected) points, the corrected state carries on, and UniPC-p is accurate
to order p + 1 at one evaluation a step (NFE = the number of grid steps, as DDIM and DPM-Solver++(2M)).
Warm-up: step k uses at most k evaluations (orders 1, 2, ... up to p). ``lower_order_final``: on grids of
fewer than LOWER_ORDER_FINAL_BELOW steps the step onto the j-th last positive time uses order at most j.

The step onto t = 0 is the denoising step x0_hat (samplers/base.run_grid): it returns x0_hat at the
predicted x_{t_min}, where the model was evaluated, so the step onto t_min is left uncorrected (its
corrector would need one more evaluation), as the last step is in UniPC's code; a grid that stops above 0
likewise ends with an uncorrected predictor step. e^{h~} = alpha_t sigma_s / (sigma_t alpha_s), so the
steps stay finite where alpha_t = 0 (the flow path's t = 1, lambda = -inf): an evaluation there enters only
as m_0 of the first step (never as an m_k), and that step's corrector uses bh2's B(h~) = -1 in both variants
(bh1's B = h~ is infinite there).

Measured on the analytic 2-D mixture (tests/samplers/test_unipc.py): order 3.05-3.26 for p = 2 and 4.12-4.38
for p = 3; every state matches diffusers' UniPCMultistepScheduler to 1e-14 on the same exact DDPM model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, check_grid, run_grid
from difflab.samplers.dpm_solver import LambdaStep, lambda_step, order_caps

ORDERS = (1, 2, 3)
VARIANTS = ("bh1", "bh2")
PHI_SERIES_BELOW = 1.0          # |z| under which phi_k(z) is summed as its series (the recursion cancels there)
PHI_SERIES_TERMS = 24           # 1 / 24! ~ 1.6e-24: float64 exact for |z| < 1


def phi(k: int, z: float) -> float:
    """phi_k(z) = sum_{j >= 0} z^j / (j + k)!  (k >= 1), the exponential integrators' phi functions;
    phi_k(-inf) = 0."""
    if abs(z) < PHI_SERIES_BELOW:
        return sum(z**j / math.factorial(j + k) for j in range(PHI_SERIES_TERMS))
    value = math.exp(z)                                                 # phi_0
    for j in range(k):
        value = (value - 1 / math.factorial(j)) / z                     # phi_{j+1} = (phi_j - 1/j!) / z
    return value


def unipc_weights(h: float, rs: list[float], variant: str) -> list[float]:
    """B(h~) rho_k for the differences D_k with ratios rs (h~ = -h): 1/2 B(h~) for a single one, else the
    solution w of R w = g (R[i, k] = r_k^(i-1), g_i = h~ phi_{i+1}(h~) i!), where B(h~) cancels."""
    if not rs:
        return []
    h_tilde = -h
    if len(rs) == 1:
        # rho = 1/2; B(h~) = h~ (bh1) or e^{h~} - 1 (bh2); bh1's is infinite on a step from lambda = -inf
        b = h_tilde if variant == "bh1" and math.isfinite(h) else math.expm1(h_tilde)
        return [0.5 * b]
    n = len(rs)
    R = torch.tensor([[r**i for r in rs] for i in range(n)], dtype=torch.float64)              # R[i, k] = r_k^(i-1)
    g = torch.tensor([h_tilde * phi(i + 1, h_tilde) * math.factorial(i) for i in range(1, n + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, g).tolist()


def unipc_update(x: Tensor, step: LambdaStep, lams: list[float], x0s: list[Tensor], variant: str,
                 x0_s: Tensor | None = None) -> Tensor:
    """One UniP-p step (x0_s None) or the UniC-p correction of it (x0_s: x0_hat at the predicted x_s) from
    x = x_t (B, ...) over ``step`` t -> s. lams, x0s: lambda and x0_hat (B, ...) of the p evaluations used, the
    one at t first, then earlier ones (finite lambda)."""
    m0 = x0s[0]
    rs = [(lam - step.lam_t) / step.h for lam in lams[1:]]                 # r_k < 0
    diffs = [(m - m0) / r for m, r in zip(x0s[1:], rs)]                    # D_k
    if x0_s is not None:
        rs, diffs = rs + [1.0], diffs + [x0_s - m0]                        # D_p = m_s - m0 (corrector)
    # first order (DDIM): -alpha_s (e^{h~} - 1) x0_hat, finite where alpha_t = 0
    x_s = step.first_order(x, m0)
    for w, d in zip(unipc_weights(step.h, rs, variant), diffs):
        x_s = x_s - step.alpha_s * w * d                                   # - alpha_s B(h~) rho_k D_k
    return x_s


def sample_unipc(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                 cond: Condition | None = None, callback: Callback | None = None, order: int = 2,
                 variant: str = "bh2", lower_order_final: bool = True) -> SampleResult:
    """UniPC (UniP-``order`` predictor, UniC-``order`` corrector; accurate to order ``order`` + 1) from x at
    ts[0] down to 0. x: (B, ...). Deterministic: ``noise`` is not used. The callback's x is the predicted
    state at each grid time, where the model is evaluated."""
    return run_unipc(denoiser, x, ts, cond=cond, callback=callback, order=order, variant=variant,
                     lower_order_final=lower_order_final)


def run_unipc(denoiser: Denoiser, x: Tensor, ts: Tensor, *, cond: Condition | None = None,
              callback: Callback | None = None, order: int = 2, variant: str = "bh2", lower_order_final: bool = True,
              corrector: bool = True) -> SampleResult:
    """:func:`sample_unipc`, or with ``corrector=False`` the predictor UniP-``order`` alone (the ablation the
    tests compare against; order 2 with bh2 is DPM-Solver++(2M))."""
    if not (isinstance(order, int) and order in ORDERS):
        raise DifflabError(f"--order must be 1, 2 or 3 (the UniP predictor's order; UniPC is accurate to order + 1), "
                           f"got {order}")
    if variant not in VARIANTS:
        raise DifflabError(f"unknown UniPC variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    process = denoiser.process
    grid = check_grid(ts)
    caps = order_caps(grid, lower_order_final)
    evals: list[tuple[float, Tensor]] = []                 # (lambda, x0_hat) of the evaluations, latest first
    pending: list[tuple] = []     # the last UniP step, to correct: (x_t, its step, lambdas, x0_hats)

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        if pending and corrector:
            x_prev, step_prev, lams, x0s = pending[0]
            x = unipc_update(x_prev, step_prev, lams, x0s, variant, x0_s=pred.x0)                  # UniC-p
        st = lambda_step(process, t, s)
        evals.insert(0, (st.lam_t, pred.x0))
        del evals[order:]
        usable = [evals[0]] + [e for e in evals[1:] if math.isfinite(e[0])]                       # r_k finite
        p = min(len(usable), caps[s]) if caps else len(usable)
        lams, x0s = [e[0] for e in usable[:p]], [e[1] for e in usable[:p]]
        pending[:] = [(x, st, lams, x0s)]
        return unipc_update(x, st, lams, x0s, variant)                                             # UniP-p

    return run_grid(CountingDenoiser(denoiser), x, grid, step, cond, callback)
