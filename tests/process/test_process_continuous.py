"""VP-SDE, VE-SDE and the flow path against closed forms computed independently (quadrature, finite differences)."""

import math

import pytest
import torch
from scipy.integrate import quad

from difflab.errors import DifflabError
from difflab.process import DDPMProcess, FlowProcess, VEProcess, VPProcess, build_process

T = torch.tensor([0.001, 0.05, 0.3, 0.5, 0.8, 0.999], dtype=torch.float64)
ALL = {"ddpm-cosine": DDPMProcess("cosine"), "vp": VPProcess(), "ve": VEProcess(), "flow": FlowProcess()}


def test_vp_alpha_is_exp_of_half_integrated_beta():
    p = VPProcess(beta_min=0.1, beta_max=20.0)
    c = p.coefficients(T)
    for t, a, s in zip(T.tolist(), c.alpha, c.sigma):
        integral, _ = quad(lambda u: 0.1 + u * 19.9, 0, t)
        assert float(a) == pytest.approx(math.exp(-0.5 * integral), rel=1e-12)
        assert float(s) == pytest.approx(math.sqrt(1 - math.exp(-integral)), rel=1e-10)
    # the SDE coefficients: f = -beta/2, g^2 = beta
    torch.testing.assert_close(p.drift(T), -0.5 * p.beta(T), rtol=1e-10, atol=0)
    torch.testing.assert_close(p.diffusion_sq(T), p.beta(T), rtol=1e-8, atol=0)


def test_ve_sigma_is_geometric():
    p = VEProcess(sigma_min=0.01, sigma_max=50.0)
    c = p.coefficients(T)
    torch.testing.assert_close(c.sigma, 0.01 * (5000.0 ** T), rtol=1e-12, atol=0)
    assert torch.all(c.alpha == 1)
    torch.testing.assert_close(p.drift(T), torch.zeros_like(T))
    # g^2 = d sigma^2 / dt = 2 sigma^2 log(sigma_max / sigma_min)
    torch.testing.assert_close(p.diffusion_sq(T), 2 * c.sigma**2 * math.log(5000.0), rtol=1e-12, atol=0)
    assert p.prior_std() == pytest.approx(50.0)


def test_flow_is_the_straight_line():
    p = FlowProcess()
    c = p.coefficients(T)
    torch.testing.assert_close(c.alpha, 1 - T)
    torch.testing.assert_close(c.sigma, T)
    x0, eps = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    from difflab.parameterization import from_x0_eps
    torch.testing.assert_close(from_x0_eps("velocity", x0, eps, c.expand_as(x0)), eps - x0)
    torch.testing.assert_close(p.diffusion_sq(T), 2 * T / (1 - T), rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", list(ALL))
def test_derivatives_match_finite_differences(name):
    p = ALL[name]
    t = torch.tensor([0.0123, 0.3337, 0.6001, 0.9002], dtype=torch.float64)
    h = 1e-7
    cp, cm, c0 = p.coefficients(t + h), p.coefficients(t - h), p.coefficients(t)
    torch.testing.assert_close(c0.d_alpha, (cp.alpha - cm.alpha) / (2 * h), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(c0.d_sigma, (cp.sigma - cm.sigma) / (2 * h), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(ALL))
def test_time_at_log_snr_inverts_log_snr(name):
    p = ALL[name]
    t = torch.linspace(max(p.t_min, 0.01), p.t_max - 0.01, 37, dtype=torch.float64)
    torch.testing.assert_close(p.time_at_log_snr(p.log_snr(t)), t, rtol=0, atol=1e-8)  # DDPM snaps within 1e-9


@pytest.mark.parametrize("name", list(ALL))
def test_config_round_trip(name):
    p = ALL[name]
    q = build_process(p.config())
    assert type(q) is type(p) and q.config() == p.config()
    torch.testing.assert_close(q.coefficients(T).sigma, p.coefficients(T).sigma)


def test_bad_process_options():
    with pytest.raises(DifflabError, match="beta_min"):
        VPProcess(beta_min=5, beta_max=1)
    with pytest.raises(DifflabError, match="sigma_min"):
        VEProcess(sigma_min=0)
    with pytest.raises(DifflabError, match="t_max"):
        FlowProcess(t_max=1.5)
    with pytest.raises(DifflabError, match="bad option"):
        build_process({"name": "vp", "sigma_max": 3})


@pytest.mark.parametrize("schedule", ["linear", "cosine", "linear-alpha-bar"])
def test_ddpm_exact_inverse_matches_bisection(schedule):
    from difflab.process.base import GaussianProcess
    p = DDPMProcess(schedule)
    lam = torch.linspace(-12, 12, 1001, dtype=torch.float64)
    # the generic bisection sees the values snapped to the grid within 1e-6 of a step: agreement to 1e-9
    torch.testing.assert_close(p.time_at_log_snr(lam), GaussianProcess.time_at_log_snr(p, lam), rtol=0, atol=2e-9)
