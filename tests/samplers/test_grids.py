"""Time grids against their closed forms, in float64 (Karras et al. 2022, eq. 5; Lu et al. 2022)."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.errors import DifflabError
from difflab.process import DDPMProcess, FlowProcess, VEProcess, VPProcess
from difflab.samplers import time_grid
from difflab.samplers.grids import KARRAS_RHO, S_MAX_FOR_INFINITE

PROCESSES = {"vp": VPProcess(), "ve": VEProcess(), "flow-0.999": FlowProcess(t_max=0.999), "flow": FlowProcess()}
N = 12


def noise_to_signal(process, ts: torch.Tensor) -> torch.Tensor:
    alpha, sigma = process.alpha_sigma(ts)
    return sigma / alpha


def ends(process) -> tuple[float, float]:
    """s = sigma / alpha at t_min and t_max from the Python floats, by the paths' closed forms."""
    def s_of(t: float) -> float:
        if isinstance(process, VPProcess):
            alpha = math.exp(-0.5 * process.beta_min * t - 0.25 * (process.beta_max - process.beta_min) * t * t)
            return math.sqrt(1 - alpha * alpha) / alpha
        if isinstance(process, VEProcess):
            return process.sigma_min * (process.sigma_max / process.sigma_min) ** t
        return t / (1 - t) if t < 1 else math.inf
    s_max = s_of(process.t_max)
    return s_of(process.t_min), (S_MAX_FOR_INFINITE if math.isinf(s_max) else s_max)


@pytest.mark.parametrize("name", PROCESSES)
def test_karras_grid_is_evenly_spaced_in_s_to_the_one_over_rho(name):
    process = PROCESSES[name]
    ts = time_grid(process, N, "karras")
    assert ts.dtype == torch.float64 and ts[0] == process.t_max and ts[-2] == process.t_min and ts[-1] == 0
    s_min, s_max = ends(process)
    i = torch.arange(N, dtype=torch.float64)
    r = 1 / KARRAS_RHO
    expected = (s_max**r + i / (N - 1) * (s_min**r - s_max**r)) ** KARRAS_RHO     # eq. 5, from the top down
    got = noise_to_signal(process, ts[:-1])
    inner = slice(1, None) if math.isinf(float(got[0])) else slice(None)          # flow at t = 1: s = inf
    torch.testing.assert_close(got[inner], expected[inner], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", PROCESSES)
def test_logsnr_grid_is_evenly_spaced_in_log_snr(name):
    process = PROCESSES[name]
    ts = time_grid(process, N, "logsnr")
    s_min, s_max = ends(process)
    lam_hi, lam_lo = -2 * math.log(s_min), -2 * math.log(s_max)
    expected = lam_lo + torch.arange(N, dtype=torch.float64) / (N - 1) * (lam_hi - lam_lo)
    got = process.log_snr(ts[:-1])
    inner = slice(1, None) if math.isinf(float(got[0])) else slice(None)
    torch.testing.assert_close(got[inner], expected[inner], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", PROCESSES)
def test_uniform_and_quadratic_grids(name):
    process = PROCESSES[name]
    u = torch.linspace(0, 1, N, dtype=torch.float64).flip(0)
    span = process.t_max - process.t_min
    torch.testing.assert_close(time_grid(process, N, "uniform")[:-1], process.t_min + span * u, rtol=0, atol=1e-15)
    torch.testing.assert_close(time_grid(process, N, "quadratic")[:-1], process.t_min + span * u**2, rtol=0,
                               atol=1e-15)


@pytest.mark.parametrize("spacing", ["uniform", "quadratic", "karras", "logsnr"])
def test_a_discrete_process_snaps_the_grid_onto_its_steps(spacing):
    process = DDPMProcess(T=1000)
    ts = time_grid(process, 50, spacing)
    steps = ts[:-1] * 1000
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-9)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and (ts[1:] < ts[:-1]).all()
    with pytest.raises(DifflabError, match="exceeds"):
        time_grid(DDPMProcess("cosine", T=10), 11, spacing)


@pytest.mark.parametrize("spacing", ["karras", "logsnr"])
def test_crowded_steps_stay_on_the_process(spacing):
    """Where many grid points round onto the same few steps (the cosine schedule's log-SNR plunges near t = 1),
    the nudged steps stay within 1..T: 80 logsnr steps once reached t = 1.022."""
    ts = time_grid(DDPMProcess("cosine", T=1000), 80, spacing)
    assert ts[0] == 1.0 and (ts[1:] < ts[:-1]).all() and len(ts) == 81
