"""DPM-Solver++(3M), (2S) and (2M) SDE against exact answers: a polynomial x0_hat, the convergence order on the
analytic mixture, the closed-form ODE map of Gaussian data, and the 2-D mixture's distribution.

Measured (commands in each test's docstring; one core):
  order on the mixture (median error at t_min against dopri5, karras grid, as test_ode_convergence.py):
    dpmpp-3m, steps 20-160 (NFE 19-159): vp 3.51, flow 3.08, ve 3.31. On flow the first step, from t = 1
      (lambda = -inf) onto the karras grid's s = 80, is first order and keeps its length as the grid refines:
      it leaves an error floor of ~3e-5 (the errors at 320 steps: 6.9e-6 without it, 2.8e-5 with it).
    dpmpp-2s, steps 10-80 (NFE 19-159): vp 1.90, flow 1.91, ve 1.88.
  Gaussian data, logsnr grid, 40 -> 80 steps, log2 of the error ratio (max error at 80 steps):
    dpmpp-3m 3.1-4.9 (8e-6 to 2.3e-5); dpmpp-2s 2.00-2.01 (7e-4 to 1.2e-3); dpmpp-2m-sde eta = 0, heun 2.06-2.09
    (1.2e-3 to 2.1e-3).
  2-D mixture, N = 20000, SW2 (TOL 0.05, floor 0.011 for these draws):
    dpmpp-2m-sde 50 karras steps: ddpm 0.017, vp 0.019, ve 0.013, flow 0.014.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_ode_convergence import fitted_slope, reference, start, to_t_min
from test_samplers_mixture import TOL, wrong_weights

from difflab.denoisers import GaussianMixtureDenoiser, bench_mixture
from difflab.errors import DifflabError
from difflab.metrics.sliced_wasserstein import projection_directions, sliced_w2
from difflab.pipelines.bench_samplers import one_thread
from difflab.process import DDPMProcess, build_process
from difflab.process.base import GaussianProcess
from difflab.rng import GeneratorNoise, PerSampleNoise
from difflab.samplers import time_grid
from difflab.samplers.dpm_solver import (LambdaStep, lambda_step, multistep_update, sample_dpmpp_2m,
                                         sample_dpmpp_2m_sde, sample_dpmpp_2s, sample_dpmpp_3m)

# solver -> (step counts, accepted slope range), around the values measured above
ORDERS = {
    "dpmpp-3m": (sample_dpmpp_3m, (20, 40, 80, 160), (2.7, 4.0)),
    "dpmpp-2s": (sample_dpmpp_2s, (10, 20, 40, 80), (1.7, 2.3)),
}
M, S = 0.5, 0.3                  # Gaussian data N(M, S^2 I)
N_MIXTURE = 20000


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


# --- shared with test_edm_sampler.py ---------------------------------------------------------------------------
REFERENCES: dict[str, tuple] = {}


def mixture_reference(process: str):
    """(model, x, reference at t_min) of test_ode_convergence.py, solved once per process and test session."""
    if process not in REFERENCES:
        model, x = start(process)
        REFERENCES[process] = model, x, reference(model, x)
    return REFERENCES[process]


def measured_order(solver, process: str, steps: tuple[int, ...], **options) -> tuple[float, list[int], list[float]]:
    """The slope of test_ode_convergence.py: median error at t_min against NFE on the karras grid."""
    model, x, ref = mixture_reference(process)
    nfe, err = [], []
    for n_steps in steps:
        res = to_t_min(lambda *a: solver(*a, **options), model, x, n_steps)
        nfe.append(res.nfe)
        err.append(float((res.x - ref).norm(dim=1).median()))
    assert all(b < a for a, b in zip(err, err[1:])), f"error does not fall: {err}"
    return -fitted_slope(nfe, err), nfe, err


def gaussian_processes() -> dict[str, GaussianProcess]:
    """DDPM with its linear schedule: on the cosine schedule the logsnr grid snaps several times above t = 1
    (DDPMProcess.snap_times pushes colliding steps past T; 22 of 81 at 80 steps)."""
    return {"ddpm": DDPMProcess("linear"), **{name: build_process({"name": name}) for name in ("vp", "ve", "flow")}}


def exact_gaussian_sample(process: GaussianProcess, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """What a perfect ODE solver returns for N(M, S^2 I) data on the grid ts (ending 0): the probability-flow map
    x_t -> x_{t_min} keeps (x - alpha M) / sqrt(alpha^2 S^2 + sigma^2) fixed, then the denoising step
    E[x_0 | x_{t_min}] = M + alpha S^2 / (alpha^2 S^2 + sigma^2) (x - alpha M)."""
    (a_t, s_t), (a_s, s_s) = (process.alpha_sigma(t) for t in (ts[0], ts[-2]))
    v_t, v_s = a_t**2 * S**2 + s_t**2, a_s**2 * S**2 + s_s**2
    x_s = a_s * M + (v_s / v_t).sqrt() * (x - a_t * M)
    return M + a_s * S**2 / v_s * (x_s - a_s * M)


def gaussian_errors(solver, process: GaussianProcess, steps: tuple[int, ...], **options) -> list[float]:
    """Max error over 64 samples against the exact Gaussian answer, on logsnr grids of the given step counts."""
    model = GaussianMixtureDenoiser.gaussian(process, M, S, (2,))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * process.prior_std()
    errors = []
    for n in steps:
        ts = time_grid(process, n, "logsnr")
        errors.append(float((solver(model, x, ts, **options).x - exact_gaussian_sample(process, x, ts)).abs().max()))
    return errors


def draw(model: GaussianMixtureDenoiser, solver, steps: int, spacing: str = "karras", n: int = N_MIXTURE,
         seed: int = 2, **options) -> torch.Tensor:
    """test_samplers_mixture.py's draw for a sampler function: n samples from noise seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.example_shape, generator=g, dtype=torch.float64) * model.process.prior_std()
    return solver(model, x, time_grid(model.process, steps, spacing), noise=GeneratorNoise(g), **options).x


@pytest.fixture(scope="module")
def exact_draws() -> torch.Tensor:
    """N_MIXTURE exact draws of the 2-D mixture (the same data on every process)."""
    return bench_mixture(build_process({"name": "vp"}), 2).sample(N_MIXTURE, torch.Generator().manual_seed(1))


def mixture_distance(x: torch.Tensor, data: torch.Tensor) -> float:
    return sliced_w2(x, data, projection_directions(2))


def batch_split_difference(solver, process: str, **options) -> tuple[float, float]:
    """(max |sample in a batch of 6 - the same sample in batches of 2 and 4|, max |sample 0 - sample 1|) with
    PerSampleNoise, as test_samplers_contract.py checks for the registered stochastic samplers."""
    model = bench_mixture(build_process({"name": process}), 2)
    seeds, ts = list(range(100, 106)), time_grid(model.process, 12, "logsnr")

    def run(ids: list[int]) -> torch.Tensor:
        noise = PerSampleNoise(ids)
        x = noise.randn((2,), torch.float64) * model.process.prior_std()
        return solver(model, x, ts, noise=noise, **options).x

    whole = run(seeds)
    parts = torch.cat([run(seeds[:2]), run(seeds[2:])])
    return float((parts - whole).abs().max()), float((whole[0] - whole[1]).abs().max())


# --- the updates ------------------------------------------------------------------------------------------------
def test_multistep_updates_are_exact_for_polynomial_x0():
    """With x0_hat(lambda) a polynomial of degree order - 1 and its exact history, the update is the exact
    integral x_s = (sigma_s / sigma_t) x_t + sigma_s int e^lambda x0_hat d lambda (VP: sigma = (1 + e^{2 lambda})^-1/2).
    The official code's order-3 term (- phi_3 D2, half of 2 phi_3 D2) misses the quadratic by O(h^3)."""
    coef = (0.3, -0.7, 0.2)                                                                # x0 = a + b l + c l^2

    def sigma(lam: float) -> float:
        return 1 / math.sqrt(1 + math.exp(2 * lam))

    def x0(lam: float) -> float:
        return coef[0] + coef[1] * lam + coef[2] * lam**2

    def antiderivative(lam: float) -> float:                                               # of e^lambda x0(lambda)
        return math.exp(lam) * (coef[0] + coef[1] * (lam - 1) + coef[2] * (lam**2 - 2 * lam + 2))

    lam_t, h, x_t = -1.0, 0.3, torch.tensor(0.8, dtype=torch.float64)
    lams = [lam_t, lam_t - 0.9 * h, lam_t - 2.0 * h]                                       # uneven history
    history = [(lam, torch.tensor(x0(lam), dtype=torch.float64)) for lam in lams]
    step = LambdaStep(lam_t, lam_t + h, sigma(lam_t + h) / sigma(lam_t), math.exp(lam_t + h) * sigma(lam_t + h),
                      sigma(lam_t + h))
    exact = step.ratio * x_t + step.sigma_s * (antiderivative(lam_t + h) - antiderivative(lam_t))
    torch.testing.assert_close(multistep_update(x_t, step, history, 3), exact, rtol=0, atol=1e-14)
    phi_2 = 1 - (1 - math.exp(-h)) / h
    phi_3 = phi_2 / h - 0.5
    d2 = coef[2] * h**2                                                                    # h^2 x0'' / 2
    official = multistep_update(x_t, step, history, 3) + step.alpha_s * phi_3 * d2         # "- phi_3 D2"
    assert abs(float(official - exact)) > 1e-4
    linear = [(lam, torch.tensor(0.3 - 0.7 * lam, dtype=torch.float64)) for lam in lams]  # "heun" is exact on a line
    exact_linear = step.ratio * x_t + step.sigma_s * (math.exp(lam_t + h) * (1.0 - 0.7 * (lam_t + h))
                                                      - math.exp(lam_t) * (1.0 - 0.7 * lam_t))
    torch.testing.assert_close(multistep_update(x_t, step, linear, 2, solver_type="heun"), exact_linear,
                               rtol=0, atol=1e-14)


def test_2m_sde_with_eta_zero_is_dpmpp_2m():
    model, x = start("flow")
    for steps in (8, 20):                                             # with and without the lower-order final step
        ts = time_grid(model.process, steps, "karras")
        assert torch.equal(sample_dpmpp_2m_sde(model, x, ts, eta=0.0).x, sample_dpmpp_2m(model, x, ts).x)


def test_3m_lower_order_final_takes_the_last_step_at_first_order():
    """On a grid of fewer than 15 steps the step onto t_min is DPM-Solver++1 from the state before it; from 15
    steps on the option changes nothing."""
    model, x = start("vp")
    ts = time_grid(model.process, 10, "karras")
    seen = []
    sample_dpmpp_3m(model, x, ts, callback=seen.append)
    step = lambda_step(model.process, seen[-2].t, seen[-1].t)
    torch.testing.assert_close(seen[-1].x, step.first_order(seen[-2].x, seen[-2].x0), rtol=0, atol=1e-14)
    assert not torch.equal(sample_dpmpp_3m(model, x, ts, lower_order_final=False).x, sample_dpmpp_3m(model, x, ts).x)
    ts = time_grid(model.process, 15, "karras")
    assert torch.equal(sample_dpmpp_3m(model, x, ts, lower_order_final=False).x, sample_dpmpp_3m(model, x, ts).x)


def test_2s_first_step_from_pure_noise_is_the_midpoint_rule_in_alpha_over_sigma():
    """From the flow path's t = 1 (lambda = -inf) the midpoint sits at lambda_s - log 2: one step [1, s] onto
    Gaussian data has a local error of order >= 3 in rho = alpha_s / sigma_s (measured: it falls 58x as rho halves,
    x0_hat being odd in rho here); DPM-Solver++1 (= DDIM, one step of dpmpp-3m) only O(rho^2) (3.7x)."""
    process = build_process({"name": "flow"})
    model = GaussianMixtureDenoiser.gaussian(process, M, S, (2,))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ratios = {}
    for name, solver in (("2s", sample_dpmpp_2s), ("first order", sample_dpmpp_3m)):
        err = []
        for rho in (0.2, 0.1):                                           # alpha / sigma = (1 - s) / s
            ts = torch.tensor([1.0, 1 / (1 + rho), 0.0], dtype=torch.float64)
            res = solver(model, x, ts[:-1])
            a, sig = (float(c) for c in process.alpha_sigma(ts[1]))
            exact = a * M + math.sqrt(a**2 * S**2 + sig**2) * x          # the flow map from x_1 = eps
            err.append(float((res.x - exact).abs().max()))
        ratios[name] = err[0] / err[1]
    assert ratios["2s"] > 7 and 3.2 < ratios["first order"] < 4.8, ratios


# --- convergence ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", ["vp", "flow", "ve"])
@pytest.mark.parametrize("solver", list(ORDERS))
def test_error_falls_at_the_solver_order(solver, process):
    fn, steps, (lo, hi) = ORDERS[solver]
    order, nfe, err = measured_order(fn, process, steps)
    assert lo <= order <= hi, f"{solver} on {process}: order {order:.2f} outside [{lo}, {hi}] (NFE {nfe}, errors {err})"


def test_the_third_order_range_rejects_a_second_order_solver():
    """dpmpp-2m measured the same way (2.2-2.3) falls below the dpmpp-3m range."""
    order, *_ = measured_order(sample_dpmpp_2m, "vp", ORDERS["dpmpp-3m"][1])
    assert order < ORDERS["dpmpp-3m"][2][0]


@pytest.mark.parametrize("process", list(gaussian_processes()))
@pytest.mark.parametrize("solver,options,orders,tol", [
    (sample_dpmpp_3m, {}, (2.7, 5.5), 1e-4),
    (sample_dpmpp_2s, {}, (1.8, 2.3), 3e-3),
    (sample_dpmpp_2m_sde, {"eta": 0.0, "solver_type": "heun"}, (1.8, 2.3), 5e-3),
], ids=["dpmpp-3m", "dpmpp-2s", "dpmpp-2m-sde-heun"])
def test_gaussian_data_reaches_the_exact_ode_solution(solver, options, orders, tol, process):
    """Against the closed-form flow map of Gaussian data (DDPM included: in lambda its path is smooth), 40 and
    80 logsnr steps: the error at 80 steps is small and halving the step divides it by ~2^order."""
    err_40, err_80 = gaussian_errors(solver, gaussian_processes()[process], (40, 80), **options)
    order = math.log2(err_40 / err_80)
    assert err_80 < tol and orders[0] < order < orders[1], f"errors {err_40:.2e}, {err_80:.2e} (order {order:.2f})"


# --- the SDE ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", ["ddpm", "flow"])       # the discrete path and alpha = 0 at t = 1
def test_2m_sde_reproduces_the_2d_mixture(exact_draws, process):
    """(test_samplers_mixture.py runs every registered sampler on all four processes.)"""
    x = draw(bench_mixture(build_process({"name": process}), 2), sample_dpmpp_2m_sde, 50)
    dist = mixture_distance(x, exact_draws)
    assert dist < TOL, f"dpmpp-2m-sde on {process}: SW2 {dist:.4f} >= {TOL}"


def assert_tolerance_rejects_wrong_answers(solver, exact_draws: torch.Tensor, **options) -> None:
    """The 2-D mixture test's tolerance fails ``solver`` at 50 steps on wrong mixture weights, and at 5 steps."""
    good = bench_mixture(build_process({"name": "vp"}), 2)
    assert mixture_distance(draw(wrong_weights(good), solver, 50, **options), exact_draws) > TOL
    assert mixture_distance(draw(good, solver, 5, **options), exact_draws) > TOL


def test_2m_sde_tolerance_rejects_wrong_answers(exact_draws):
    """Mixture weights off by 0.05/0.03/0.02 (measured SW2 0.13) and 5 steps (0.32) both fail."""
    assert_tolerance_rejects_wrong_answers(sample_dpmpp_2m_sde, exact_draws)


@pytest.mark.parametrize("process", ["vp", "flow"])
def test_2m_sde_samples_do_not_depend_on_the_batch(process):
    split, seeds = batch_split_difference(sample_dpmpp_2m_sde, process, solver_type="heun")
    assert split <= 1e-12 and seeds > 1e-3


def test_2m_sde_noise_is_the_reverse_sde_on_gaussian_data():
    """eta = 1 on DDPM (linear) with Gaussian data: mean and std of 8000 x 2 samples within the Monte-Carlo error
    (mean 0.0024, std 0.6 %); eta = 0.5 as well."""
    process = DDPMProcess("linear")
    model = GaussianMixtureDenoiser.gaussian(process, M, S, (2,))
    for eta in (1.0, 0.5):
        x = draw(model, sample_dpmpp_2m_sde, 50, "logsnr", n=8000, eta=eta)
        assert abs(float(x.mean()) - M) < 0.01 and float(x.std()) == pytest.approx(S, rel=0.03)


# --- contract ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver,options,nfe", [
    (sample_dpmpp_3m, {}, lambda n: n), (sample_dpmpp_2s, {}, lambda n: 2 * n - 1),
    (sample_dpmpp_2m_sde, {}, lambda n: n),
])
@pytest.mark.parametrize("process", ["ddpm", "flow"])
def test_nfe_callbacks_and_finite_samples(solver, options, nfe, process):
    """NFE, one callback a grid time, and finite samples from the flow path's t = 1 (alpha = 0)."""
    model, x = start(process)
    ts = time_grid(model.process, 7, "karras")
    seen = []
    res = solver(model, x[:8], ts, noise=GeneratorNoise(torch.Generator()), callback=seen.append, **options)
    assert res.nfe == nfe(7) and [i.t for i in seen] == ts[:-1].tolist() and torch.isfinite(res.x).all()


@pytest.mark.parametrize("options,needle", [({"eta": -0.5}, "--eta"), ({"eta": math.inf}, "--eta"),
                                            ({"solver_type": "rk"}, "--solver-type")])
def test_bad_2m_sde_options_are_one_line_errors(options, needle):
    model, x = start("vp")
    with pytest.raises(DifflabError, match=needle) as err:
        sample_dpmpp_2m_sde(model, x[:2], time_grid(model.process, 3), noise=GeneratorNoise(torch.Generator()),
                            **options)
    assert "\n" not in str(err.value)


def test_2m_sde_needs_noise_unless_eta_is_zero():
    model, x = start("vp")
    with pytest.raises(DifflabError, match="noise"):
        sample_dpmpp_2m_sde(model, x[:2], time_grid(model.process, 3))
    assert torch.isfinite(sample_dpmpp_2m_sde(model, x[:2], time_grid(model.process, 3), eta=0.0).x).all()
