"""EDM's sampler (Karras et al. 2022, Algorithms 1 and 2) on every path: Algorithm 2 replayed by hand, the
convergence order with s_churn = 0, the closed-form ODE map of Gaussian data, and the 2-D mixture with churn.

Measured (one core):
  order on the mixture, s_churn = 0 (as test_ode_convergence.py; steps 20-160, NFE 39-319):
    vp 2.12, flow 2.12, ve 2.08.
  Gaussian data, logsnr grid, 40 -> 80 steps: log2 of the error ratio 2.08-2.09, max error at 80 steps 1.4e-3
    to 2.5e-3.
  2-D mixture, N = 20000, SW2 (TOL 0.05, floor 0.011 for these draws): s_churn = 40 with 50 karras steps:
    ddpm 0.018, vp 0.017, ve 0.018, flow 0.015; s_churn = 0 with 25 karras steps: 0.011-0.013.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_dpm_solver import (M, S, assert_tolerance_rejects_wrong_answers, batch_split_difference, draw,  # noqa: F401
                             exact_draws, gaussian_errors, gaussian_processes, measured_order, mixture_distance)
from test_ode_convergence import start
from test_samplers_mixture import TOL

from difflab.denoisers import GaussianMixtureDenoiser, bench_mixture
from difflab.errors import DifflabError
from difflab.pipelines.bench_samplers import one_thread
from difflab.process import DDPMProcess, VEProcess, build_process
from difflab.rng import GeneratorNoise
from difflab.samplers import time_grid
from difflab.samplers.edm import sample_edm

STEPS, ORDER_RANGE = (20, 40, 80, 160), (1.75, 2.4)      # as heun in test_ode_convergence.py
CHURN = 40.0                                             # EDM's S_churn for ImageNet-64


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


class Recording:
    """A denoiser that records the times it is evaluated at."""

    def __init__(self, inner) -> None:
        self.inner, self.process, self.times = inner, inner.process, []

    def __call__(self, x, t, cond=None):
        self.times.append(float(t))
        return self.inner(x, t, cond)


class FixedNoise:
    def __init__(self, z: torch.Tensor) -> None:
        self.z = z

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.z


# --- Algorithm 2 ------------------------------------------------------------------------------------------------
def test_ve_steps_are_algorithm_2_by_hand():
    """On VE (alpha = 1: EDM's own frame) the sampler is Algorithm 2 line by line, t^ from sigma(t) in closed form."""
    process = VEProcess()
    model = bench_mixture(process, 2)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ts = torch.tensor([0.5, 0.3, 0.1, 0.0], dtype=torch.float64)
    s_churn, s_noise = 0.9, 1.007
    gamma = s_churn / 3                                                     # < sqrt(2) - 1
    log_ratio = math.log(process.sigma_max / process.sigma_min)

    def sigma(t: float) -> float:
        return process.sigma_min * math.exp(t * log_ratio)

    def denoise(x: torch.Tensor, sig: float) -> torch.Tensor:                  # D(x; sigma) at t(sigma)
        return model(x, torch.tensor(math.log(sig / process.sigma_min) / log_ratio, dtype=torch.float64)).x0

    y = x
    for i in range(3):
        t_cur, t_next = sigma(float(ts[i])), (sigma(float(ts[i + 1])) if ts[i + 1] > 0 else 0.0)
        t_hat = t_cur + gamma * t_cur                                       # lines 4-6
        y_hat = y + math.sqrt(t_hat**2 - t_cur**2) * s_noise * z
        d = (y_hat - denoise(y_hat, t_hat)) / t_hat                         # line 7
        y = y_hat + (t_next - t_hat) * d                                    # line 8
        if t_next != 0:                                                     # lines 9-11
            d_prime = (y - denoise(y, t_next)) / t_next
            y = y_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d_prime)
    res = sample_edm(model, x, ts, noise=FixedNoise(z), s_churn=s_churn, s_noise=s_noise)
    torch.testing.assert_close(res.x, y, rtol=1e-10, atol=1e-10)
    assert res.nfe == 5


def test_churn_respects_s_min_s_max_and_t_max():
    """Churn only where sigma/alpha lies in [S_min, S_max]; the raised level is clamped to t_max (no churn at the
    first step from VP's t_max); where it churns, the model sees a time above the grid's."""
    model = Recording(bench_mixture(build_process({"name": "vp"}), 2))
    process = model.process
    ts = time_grid(process, 8, "karras")
    x = torch.randn(4, 2, dtype=torch.float64) * process.prior_std()
    s_min, s_max = 0.1, 5.0
    sample_edm(model, x, ts, noise=GeneratorNoise(torch.Generator()), s_churn=CHURN, s_min=s_min, s_max=s_max)
    first = model.times[::2]                                                # the evaluation starting each step
    for t, t_eval in zip(ts[:-1].tolist(), first):
        alpha, sigma = (float(c) for c in process.alpha_sigma(torch.tensor(t, dtype=torch.float64)))
        churned = s_min <= sigma / alpha <= s_max
        assert (t_eval > t) == churned, (t, t_eval, sigma / alpha)
    assert first[0] == 1.0 and max(first) <= 1.0
    model.times.clear()
    sample_edm(model, x, ts, noise=GeneratorNoise(torch.Generator()), s_churn=CHURN)
    assert model.times[0] == 1.0 and all(t_eval > t for t, t_eval in zip(ts[1:-1].tolist(), model.times[2::2]))


def test_churn_on_ddpm_stays_on_its_steps():
    """On the discrete process the raised times are snapped onto its steps i / T (EDM's round_sigma)."""
    model = Recording(bench_mixture(DDPMProcess("linear"), 2))
    ts = time_grid(model.process, 10, "karras")
    x = torch.randn(4, 2, dtype=torch.float64) * model.process.prior_std()
    res = sample_edm(model, x, ts, noise=GeneratorNoise(torch.Generator()), s_churn=CHURN)
    steps = torch.tensor(model.times) * 1000
    assert torch.equal(steps, steps.round()) and torch.isfinite(res.x).all()
    assert len(set(model.times) - set(ts.tolist())) > 3                     # churn moved most of them


def test_first_step_from_pure_noise_is_second_order_in_alpha_over_sigma():
    """From the flow path's t = 1 (sigma/alpha = inf) the step is Heun in x/sigma against rho = alpha/sigma: one
    step [1, s] onto Gaussian data errs by O(rho^3) or less (measured: 30x smaller as rho halves); no churn there."""
    process = build_process({"name": "flow"})
    model = Recording(GaussianMixtureDenoiser.gaussian(process, M, S, (2,)))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    err = []
    for rho in (0.2, 0.1):
        ts = torch.tensor([1.0, 1 / (1 + rho)], dtype=torch.float64)
        res = sample_edm(model, x, ts, noise=GeneratorNoise(torch.Generator()), s_churn=CHURN)
        a, sig = (float(c) for c in process.alpha_sigma(ts[1]))
        err.append(float((res.x - (a * M + math.sqrt(a**2 * S**2 + sig**2) * x)).abs().max()))
        assert model.times[-2] == 1.0
    assert err[0] / err[1] > 7, err


# --- accuracy ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", ["vp", "flow", "ve"])
def test_error_falls_at_second_order(process):
    order, nfe, err = measured_order(sample_edm, process, STEPS)
    lo, hi = ORDER_RANGE
    assert lo <= order <= hi, f"edm on {process}: order {order:.2f} outside [{lo}, {hi}] (NFE {nfe}, errors {err})"


@pytest.mark.parametrize("process", list(gaussian_processes()))
def test_gaussian_data_reaches_the_exact_ode_solution(process):
    """s_churn = 0 against the closed-form flow map of Gaussian data (see test_dpm_solver.py), 40 and 80 steps."""
    err_40, err_80 = gaussian_errors(sample_edm, gaussian_processes()[process], (40, 80))
    order = math.log2(err_40 / err_80)
    assert err_80 < 5e-3 and 1.8 < order < 2.4, f"errors {err_40:.2e}, {err_80:.2e} (order {order:.2f})"


@pytest.mark.parametrize("process", ["ddpm", "flow"])       # the discrete path and alpha = 0 at t = 1
def test_churn_reproduces_the_2d_mixture(exact_draws, process):
    """S_churn = 40 (test_samplers_mixture.py runs every registered sampler on all four processes)."""
    x = draw(bench_mixture(build_process({"name": process}), 2), sample_edm, 50, s_churn=CHURN)
    dist = mixture_distance(x, exact_draws)
    assert dist < TOL, f"edm (s_churn {CHURN}) on {process}: SW2 {dist:.4f} >= {TOL}"


def test_churn_tolerance_rejects_wrong_answers(exact_draws):
    """Mixture weights off by 0.05/0.03/0.02 (measured SW2 0.13) and 5 steps (1.8) both fail."""
    assert_tolerance_rejects_wrong_answers(sample_edm, exact_draws, s_churn=CHURN)


def test_churn_keeps_gaussian_data_on_ddpm():
    """S_churn = 40 on DDPM (linear; churn snapped onto its steps) with Gaussian data, 100 logsnr steps: mean and
    std of 8000 x 2 samples within the Monte-Carlo error (mean 0.0024, std 0.6 %; measured std 0.3003). Churn
    costs accuracy at few steps, as in EDM: 30 steps give std 0.316 (gamma = sqrt(2) - 1, its cap)."""
    model = GaussianMixtureDenoiser.gaussian(DDPMProcess("linear"), M, S, (2,))
    x = draw(model, sample_edm, 100, "logsnr", n=8000, s_churn=CHURN)
    assert abs(float(x.mean()) - M) < 0.01 and float(x.std()) == pytest.approx(S, rel=0.03)


# --- contract ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", ["vp", "flow"])
def test_samples_do_not_depend_on_the_batch(process):
    split, seeds = batch_split_difference(sample_edm, process, s_churn=10.0)
    assert split <= 1e-12 and seeds > 1e-3


@pytest.mark.parametrize("s_churn", [0.0, CHURN])
@pytest.mark.parametrize("process", ["ddpm", "flow"])
def test_nfe_callbacks_and_finite_samples(s_churn, process):
    """NFE 2 N - 1, one callback a grid time (before the churn), finite from the flow path's t = 1."""
    model, x = start(process)
    ts = time_grid(model.process, 7, "karras")
    seen = []
    res = sample_edm(model, x[:8], ts, noise=GeneratorNoise(torch.Generator()), callback=seen.append, s_churn=s_churn)
    assert res.nfe == 13 and [i.t for i in seen] == ts[:-1].tolist() and torch.isfinite(res.x).all()


@pytest.mark.parametrize("options,needle", [
    ({"s_churn": -1.0}, "--s-churn"), ({"s_churn": math.inf}, "--s-churn"), ({"s_noise": 0.0}, "--s-noise"),
    ({"s_noise": -1.0}, "--s-noise"), ({"s_min": 2.0, "s_max": 1.0}, "--s-min"), ({"s_min": math.nan}, "--s-min"),
])
def test_bad_options_are_one_line_errors(options, needle):
    model, x = start("vp")
    with pytest.raises(DifflabError, match=needle) as err:
        sample_edm(model, x[:2], time_grid(model.process, 3), noise=GeneratorNoise(torch.Generator()), **options)
    assert "\n" not in str(err.value)


def test_churn_needs_noise_and_algorithm_1_does_not():
    model, x = start("vp")
    with pytest.raises(DifflabError, match="noise"):
        sample_edm(model, x[:2], time_grid(model.process, 3), s_churn=1.0)
    assert torch.isfinite(sample_edm(model, x[:2], time_grid(model.process, 3)).x).all()
