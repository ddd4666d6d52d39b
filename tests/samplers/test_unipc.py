"""UniPC (difflab.samplers.unipc): its order on the analytic mixture, the exact flow map of Gaussian data, what the
corrector buys, the finite step from alpha = 0, and one-line option errors.

Convergence follows test_ode_convergence.py (its helpers; median error over 256 samples at t_min against dopri5
at 1e-11, karras grid, slope fitted over steps 20-160, NFE = steps - 1 there). Measured slopes (vp, flow, ve):

    order 2, bh2   3.05  3.07  3.05        predictor alone (UniP-2 = DPM-Solver++(2M))  2.19  2.24  2.15
    order 2, bh1   3.23  3.26  3.19        predictor alone                              2.36  2.41  2.26
    order 3, bh2   4.38  4.22  4.12        predictor alone                              3.51  3.08  3.31
    order 3, bh1   4.38  4.22  4.12        predictor alone                              3.51  3.08  3.31

(order 3's variants agree from 16 steps on: bh1 and bh2 differ only in the rho = 1/2 warm-up steps.) Over steps
160-640 the slopes settle at 3.00-3.04 (order 2) and 3.96-4.01 (order 3) on vp and ve; on flow the karras
grid's first step, t = 1 -> 80/81 whatever the step count, becomes an error floor there.
"""

from __future__ import annotations

import math

import pytest
import torch

from difflab.denoisers import GaussianMixtureDenoiser
from difflab.errors import DifflabError
from difflab.pipelines.bench_samplers import one_thread
from difflab.process import build_process
from difflab.samplers import sample_ddim, sample_dpmpp_2m, time_grid
from difflab.samplers.unipc import phi, run_unipc, sample_unipc

from test_ode_convergence import fitted_slope, reference, start, to_t_min

STEPS = (20, 40, 80, 160)
# order -> accepted slope range: measured 3.05-3.26 (order 2), 4.12-4.38 (order 3); the predictor alone
# measured at most 2.41 and 3.51, so each range excludes a UniPC without its corrector.
SLOPES = {2: (2.8, 3.6), 3: (3.8, 4.7)}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def references():
    """process -> (model, starting noise, reference solution at t_min), each solved once."""
    cache = {}

    def get(process: str):
        if process not in cache:
            model, x = start(process)
            cache[process] = model, x, reference(model, x)
        return cache[process]

    return get


def errors(model, x, ref, steps, **options) -> tuple[list[int], list[float]]:
    """NFE and median ||x - x_ref|| at t_min for each step count."""
    nfe, err = [], []
    for n in steps:
        res = to_t_min(lambda m, x, ts: run_unipc(m, x, ts, **options), model, x, n)
        nfe.append(res.nfe)
        err.append(float((res.x - ref).norm(dim=1).median()))
    return nfe, err


# --- order ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("process", ["vp", "flow", "ve"])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [2, 3])
def test_error_falls_at_order_plus_one(references, order, variant, process):
    model, x, ref = references(process)
    nfe, err = errors(model, x, ref, STEPS, order=order, variant=variant)
    assert nfe == [n - 1 for n in STEPS]
    assert all(b < a for a, b in zip(err, err[1:])), f"order {order} {variant} on {process}: error does not fall: {err}"
    lo, hi = SLOPES[order]
    slope = -fitted_slope(nfe, err)
    assert lo <= slope <= hi, f"order {order} {variant} on {process}: slope {slope:.2f} outside [{lo}, {hi}] ({err})"


@pytest.mark.parametrize("order", [2, 3])
def test_the_predictor_alone_falls_outside_the_accepted_range(references, order):
    """The slope test has teeth: UniPC without its corrector (UniP-p, one order lower) fails it. On vp, where
    the predictor's slopes come closest to the ranges (table above)."""
    model, x, ref = references("vp")
    nfe, err = errors(model, x, ref, STEPS, order=order, corrector=False)
    assert -fitted_slope(nfe, err) < SLOPES[order][0]


@pytest.mark.parametrize("process", ["vp", "flow", "ve"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_the_corrector_lowers_the_error_at_the_same_nfe(references, order, process):
    """At 40 steps the corrected error is 3.4-5.1x below the predictor's alone (measured), at the same NFE."""
    model, x, ref = references(process)
    (nfe_pc,), (err_pc,) = errors(model, x, ref, (40,), order=order)
    (nfe_p,), (err_p,) = errors(model, x, ref, (40,), order=order, corrector=False)
    assert nfe_pc == nfe_p == 39
    assert err_pc < err_p / 2, f"order {order} on {process}: with corrector {err_pc:.2e}, without {err_p:.2e}"


def test_order_two_predictor_alone_is_dpm_solver_pp_2m():
    """UniP-2 with bh2 (rho = 1/2, B = e^{h~} - 1) is DPM-Solver++(2M), written independently in dpm_solver.py."""
    for name in ("ddpm", "flow"):
        model, x = start(name)
        x = x[:32]
        for steps in (3, 10, 20):
            ts = time_grid(model.process, steps, "karras")
            ours = run_unipc(model, x, ts, order=2, variant="bh2", corrector=False).x
            torch.testing.assert_close(ours, sample_dpmpp_2m(model, x, ts).x, rtol=0, atol=1e-12)


# --- Gaussian data: the exact probability-flow map ---------------------------------------------------------
M, S = 0.5, 0.3
# order -> max |error| at 40 logsnr steps; measured over ddpm, vp, ve, flow: 1.1e-2 - 1.5e-2 (order 1),
# 8.0e-4 - 1.8e-3 (2), 5.1e-5 - 1.2e-4 (3); DDIM 5.0e-2 - 6.6e-2.
GAUSSIAN_TOL = {1: 2e-2, 2: 3e-3, 3: 3e-4}


@pytest.mark.parametrize("process", ["ddpm", "vp", "ve", "flow"])
def test_gaussian_data_follows_the_exact_flow_map(process):
    """For N(M, S^2 I) data the ODE keeps z = (x_t - alpha_t M) / sqrt(alpha_t^2 S^2 + sigma_t^2) fixed, and the
    denoising step at t_min returns M + alpha S^2 z / sqrt(alpha^2 S^2 + sigma^2) there."""
    p = build_process({"name": process})
    model = GaussianMixtureDenoiser.gaussian(p, M, S, (2,))
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * p.prior_std()
    ts = time_grid(p, 40, "logsnr")
    (a_T, s_T), (a_0, s_0) = (tuple(float(c) for c in p.alpha_sigma(ts[i])) for i in (0, -2))
    z = (x - a_T * M) / math.sqrt(a_T**2 * S**2 + s_T**2)
    exact = M + a_0 * S**2 / math.sqrt(a_0**2 * S**2 + s_0**2) * z
    ddim = float((sample_ddim(model, x, ts).x - exact).abs().max())
    for order, tol in GAUSSIAN_TOL.items():
        res = sample_unipc(model, x, ts, order=order)
        err = float((res.x - exact).abs().max())
        assert res.nfe == 40
        assert err < tol and err < ddim / 4, f"order {order} on {process}: error {err:.2e} (DDIM {ddim:.2e})"


# --- grid conventions ----------------------------------------------------------------------------------------
def test_nfe_callback_and_one_step():
    """NFE = steps (the corrector reuses the next evaluation); the callback sees each grid time once, with the
    predicted state where the model was evaluated; one step returns x0_hat at t_max."""
    model, x = start("vp")
    x = x[:8]
    ts = time_grid(model.process, 7, "karras")
    seen = []
    res = sample_unipc(model, x, ts, order=3, callback=seen.append)
    assert res.nfe == 7 and [i.index for i in seen] == list(range(7)) and [i.t for i in seen] == ts[:-1].tolist()
    torch.testing.assert_close(seen[-1].x0, res.x)                       # the denoising step: x0_hat at t_min
    one = sample_unipc(model, x, time_grid(model.process, 1))
    assert one.nfe == 1
    torch.testing.assert_close(one.x, model(x, torch.tensor(1.0, dtype=torch.float64)).x0)


def test_lower_order_final_acts_on_grids_under_15_steps():
    model, x = start("ve")
    for steps, differs in ((10, True), (20, False)):
        ts = time_grid(model.process, steps, "karras")
        on, off = sample_unipc(model, x, ts).x, sample_unipc(model, x, ts, lower_order_final=False).x
        assert bool((on - off).abs().max() > 1e-6) == differs


@pytest.mark.parametrize("order", [1, 2, 3])
def test_finite_from_alpha_zero(order):
    """The flow path's t = 1 has lambda = -inf: every variant stays finite there, and bh1 takes bh2's B = -1 on
    that first step (on 3 steps nothing else can tell the variants apart: x0_hat at t = 1 never enters a D_k)."""
    model, x = start("flow")
    for steps in range(1, 7):
        ts = time_grid(model.process, steps, "karras")
        out = {v: sample_unipc(model, x, ts, order=order, variant=v).x for v in ("bh1", "bh2")}
        assert all(torch.isfinite(o).all() for o in out.values())
    ts = time_grid(model.process, 3, "karras")
    torch.testing.assert_close(sample_unipc(model, x, ts, order=order, variant="bh1").x,
                               sample_unipc(model, x, ts, order=order, variant="bh2").x, rtol=0, atol=1e-14)


def test_phi_matches_its_closed_forms():
    """The series (|z| < 1) and the recursion agree with phi_1 = (e^z - 1) / z, phi_2 = (e^z - 1 - z) / z^2."""
    for z in (-7.0, -1.5, -1.0, -0.999, -0.3, -1e-3, 0.5):
        assert phi(1, z) == pytest.approx(math.expm1(z) / z, rel=1e-12)
        assert phi(2, z) == pytest.approx((math.expm1(z) - z) / z**2, rel=1e-9)
        assert phi(3, z) == pytest.approx((phi(2, z) - 0.5) / z, rel=1e-6)
    assert phi(1, -math.inf) == 0.0 and phi(3, 0.0) == pytest.approx(1 / 6)


@pytest.mark.parametrize("options,needle", [({"order": 0}, "--order"), ({"order": 4}, "--order"),
                                            ({"order": 2.5}, "--order"), ({"variant": "bh3"}, "bh1, bh2")])
def test_bad_options_are_one_line_difflab_errors(options, needle):
    model, x = start("vp")
    with pytest.raises(DifflabError, match=needle) as err:
        sample_unipc(model, x[:2], time_grid(model.process, 3), **options)
    assert "\n" not in str(err.value)
