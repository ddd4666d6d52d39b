"""The probability-flow ODE solvers converge at their order on the analytic mixture.

From the same starting noise, each solver's state at t_min is compared with a reference solve (dopri5 at
rtol = atol = 1e-11, itself checked against a 4000-step RK4 below). The error is the median over 256
samples of ||x - x_ref||: a few paths pass near the separatrix between two modes, where the flow map
stretches errors by orders of magnitude; they dominate an RMS, which then reaches the asymptotic regime
only at several thousand NFE (measured: Euler's RMS falls at slope 0.5-0.7 up to 400 NFE), while the
median follows the order from ~40 NFE on. The slope is a least-squares fit of log error on log NFE over
NFE ~40-320 on the karras grid. Measured (vp, flow, ve): euler 0.95-1.04, heun 1.88-2.12, rk4 3.83-4.11,
dpmpp-2m (NFE 20-160) 2.20-2.29, dpmpp-2s 1.88-1.91, dpmpp-3m 3.08-3.51, unipc (order 2, bh2) 3.05-3.07,
edm (s_churn 0) 2.08-2.12. The other orders and variants of UniPC are in test_unipc.py.
The DDPM process is left out: alpha'(t) jumps at each of its 1000 steps, which caps every fixed-grid
solver at first order there.
"""

from __future__ import annotations

import pytest
import torch

from difflab.denoisers import bench_mixture
from difflab.pipelines.bench_samplers import one_thread
from difflab.process import build_process
from difflab.samplers import (sample_dopri5, sample_dpmpp_2m, sample_dpmpp_2s, sample_dpmpp_3m, sample_edm,
                              sample_euler, sample_heun, sample_rk4, sample_unipc, time_grid)

N_SAMPLES = 256
REFERENCE_TOL = 1e-11
# solver -> (step counts, accepted slope range); NFE = steps, 2 steps - 1 and 4 steps - 3: ~40 to ~320
ORDERS = {
    "euler": (sample_euler, (50, 100, 200, 400), (0.85, 1.2)),
    "heun": (sample_heun, (20, 40, 80, 160), (1.75, 2.4)),
    "dpmpp-2m": (sample_dpmpp_2m, (20, 40, 80, 160), (1.75, 2.5)),
    "dpmpp-2s": (sample_dpmpp_2s, (10, 20, 40, 80), (1.7, 2.3)),
    "dpmpp-3m": (sample_dpmpp_3m, (20, 40, 80, 160), (2.7, 4.0)),
    "unipc": (sample_unipc, (20, 40, 80, 160), (2.8, 3.6)),          # --order 2: the corrector adds one
    "edm": (sample_edm, (20, 40, 80, 160), (1.75, 2.4)),
    "rk4": (sample_rk4, (10, 20, 40, 80), (3.0, 4.6)),
}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


def start(process_name: str):
    process = build_process({"name": process_name})
    model = bench_mixture(process, 2)
    x = torch.randn(N_SAMPLES, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * process.prior_std()
    return model, x


def to_t_min(solver, model, x: torch.Tensor, steps: int):
    """Solve from t_max to t_min on the karras grid, stopping before the denoising step (the grid without its 0)."""
    return solver(model, x, time_grid(model.process, steps, "karras")[:-1])


def reference(model, x: torch.Tensor) -> torch.Tensor:
    ends = torch.tensor([model.process.t_max, model.process.t_min], dtype=torch.float64)
    return sample_dopri5(model, x, ends, rtol=REFERENCE_TOL, atol=REFERENCE_TOL).x


def fitted_slope(nfe: list[int], err: list[float]) -> float:
    """Least-squares slope of log err against log NFE (negative: the order)."""
    log_n = torch.tensor(nfe, dtype=torch.float64).log()
    log_e = torch.tensor(err, dtype=torch.float64).log()
    A = torch.stack([log_n, torch.ones_like(log_n)], 1)
    return float(torch.linalg.lstsq(A, log_e[:, None]).solution[0, 0])


@pytest.mark.parametrize("process", ["vp", "flow", "ve"])
@pytest.mark.parametrize("solver", list(ORDERS))
def test_error_falls_at_the_solver_order(solver, process):
    fn, steps, (lo, hi) = ORDERS[solver]
    model, x = start(process)
    ref = reference(model, x)
    nfe, err = [], []
    for n_steps in steps:
        res = to_t_min(fn, model, x, n_steps)
        nfe.append(res.nfe)
        err.append(float((res.x - ref).norm(dim=1).median()))
    assert all(b < a for a, b in zip(err, err[1:])), f"{solver} on {process}: error does not fall: {err}"
    order = -fitted_slope(nfe, err)
    assert lo <= order <= hi, f"{solver} on {process}: order {order:.2f} outside [{lo}, {hi}] (NFE {nfe}, errors {err})"


@pytest.mark.parametrize("process", ["vp", "flow"])
def test_dopri5_with_tight_tolerances_matches_a_fine_rk4_solve(process):
    """dopri5 (rtol = atol = 1e-8) against RK4 with 2000 karras steps (error ~1e-10, an independent method);
    its NFE is counted and grows as the tolerance tightens."""
    model, x = start(process)
    fine = to_t_min(sample_rk4, model, x, 2000).x
    ends = torch.tensor([model.process.t_max, model.process.t_min], dtype=torch.float64)
    tight = sample_dopri5(model, x, ends, rtol=1e-8, atol=1e-8)
    loose = sample_dopri5(model, x, ends, rtol=1e-3, atol=1e-3)
    assert float((tight.x - fine).abs().max()) < 1e-6
    assert float((loose.x - fine).abs().max()) > 1e-6              # the comparison can fail
    assert 20 < loose.nfe < tight.nfe
    assert float((reference(model, x) - fine).abs().max()) < 1e-8   # the slope test's reference
