"""EDM's preconditioning as the "edm" target (Karras et al. 2022, Table 1), against the paper's formulas.

In EDM's frame x_hat = x_t / alpha = x_0 + s eps, s = sigma / alpha, Table 1 gives (sigma_d = 0.5)
    c_skip = sigma_d^2 / (s^2 + sigma_d^2)        c_out = s sigma_d / sqrt(s^2 + sigma_d^2)
    c_in   = 1 / sqrt(s^2 + sigma_d^2)            c_noise = ln(s) / 4
    lambda(s) = (s^2 + sigma_d^2) / (s sigma_d)^2,    ln s ~ N(-1.2, 1.2^2)
and the effective training target F = (x_0 - c_skip x_hat) / c_out (eq. 8). The formulas are written out here
again, literally, so that the package's alpha-sigma form of them is checked, not restated.
"""

from __future__ import annotations

import math

import pytest
import torch

from difflab.objectives import DiffusionObjective, loss_weight, sample_times
from difflab.parameterization import (EDM_SIGMA_DATA, edm_preconditioning, from_x0_eps, network_input, noise_level,
                                      to_x0_eps)
from difflab.process import build_process

SD = 0.5
TIMES = torch.tensor([1e-3, 0.02, 0.1, 0.3, 0.5, 0.8, 0.99], dtype=torch.float64)


def table1(s: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (SD**2 / (s**2 + SD**2), s * SD / torch.sqrt(s**2 + SD**2), 1 / torch.sqrt(s**2 + SD**2), torch.log(s) / 4)


def frame(name: str):
    process = build_process({"name": name})
    t = TIMES.clamp(process.t_min, process.t_max)
    c = process.coefficients(t)
    return process, t, c, c.sigma / c.alpha


def test_sigma_data_is_edms():
    assert EDM_SIGMA_DATA == SD


@pytest.mark.parametrize("name", ["ve", "vp", "ddpm", "flow"])
def test_coefficients_are_table_1(name):
    _, _, _, s = frame(name)
    for mine, paper in zip(edm_preconditioning(s), table1(s)):
        torch.testing.assert_close(mine, paper, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["ve", "vp", "ddpm", "flow"])
def test_target_input_and_noise_level_are_table_1(name):
    """F = (x0 - c_skip x_hat) / c_out (eq. 8); x0 = c_skip x_hat + c_out F (eq. 7); the network reads c_in x_hat;
    its noise level, the log-SNR lambda = -2 ln s, is -8 c_noise."""
    process, t, c, s = frame(name)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(len(t), generator=g, dtype=torch.float64), torch.randn(len(t), generator=g, dtype=torch.float64)
    x_t = c.alpha * x0 + c.sigma * eps
    x_hat = x_t / c.alpha
    c_skip, c_out, c_in, c_noise = table1(s)
    f = from_x0_eps("edm", x0, eps, c)
    torch.testing.assert_close(f, (x0 - c_skip * x_hat) / c_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(to_x0_eps("edm", f, x_t, c)[0], c_skip * x_hat + c_out * f, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(network_input(x_t, c, "edm"), c_in * x_hat, rtol=1e-12, atol=0)
    torch.testing.assert_close(noise_level(process, t), -8 * c_noise, rtol=1e-10, atol=1e-12)


def test_finite_where_alpha_is_zero():
    """The flow path's t = 1 has alpha = 0 (s = inf): x0 = sigma_d F there, and the target stays finite."""
    process = build_process({"name": "flow"})
    c = process.coefficients(torch.tensor([1.0], dtype=torch.float64))
    x0, eps = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-1.1], dtype=torch.float64)
    f = from_x0_eps("edm", x0, eps, c)
    assert torch.isfinite(f).all() and torch.isfinite(network_input(c.sigma * eps, c, "edm")).all()
    torch.testing.assert_close(to_x0_eps("edm", f, c.sigma * eps, c)[0], x0)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_edm_loss_weight(name):
    """lambda(s) on the x0 error; on the edm target's own error lambda c_out^2 = 1, so "uniform" is EDM's loss."""
    process, t, _, s = frame(name)
    lam = (s**2 + SD**2) / (s * SD) ** 2
    torch.testing.assert_close(loss_weight(DiffusionObjective(target="x0", weighting="edm"), process, t), lam)
    torch.testing.assert_close(loss_weight(DiffusionObjective(target="edm", weighting="edm"), process, t),
                               torch.ones_like(t))
    c_out = table1(s)[1]
    torch.testing.assert_close(lam * c_out**2, torch.ones_like(t))


def test_lognormal_noise_levels():
    """ln(sigma / alpha) of the drawn times is N(-1.2, 1.2^2) (EDM's P_mean, P_std) where the path reaches:
    on VE (s from 0.01 to 50, beyond -3 and +4 std) the quantiles match the normal's to sampling error."""
    process = build_process({"name": "ve"})
    t = sample_times(process, 40000, "lognormal", torch.Generator().manual_seed(0))
    a, sig = process.alpha_sigma(t)
    ln_s = torch.log(sig / a)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    normal = -1.2 + 1.2 * math.sqrt(2) * torch.erfinv(2 * q - 1)
    torch.testing.assert_close(torch.quantile(ln_s, q), normal, atol=0.03, rtol=0)
    other = sample_times(process, 40000, "lognormal", torch.Generator().manual_seed(0), lognormal=(0.0, 1.2))
    assert torch.quantile(torch.log(process.alpha_sigma(other)[1]), 0.5) > -0.05   # the mean is the option's


def test_edm_target_defaults_to_lognormal_times():
    process = build_process({"name": "ve"})
    assert DiffusionObjective(target="edm", time_sampling="auto").resolved(process).time_sampling == "lognormal"
    assert DiffusionObjective(target="eps", time_sampling="auto").resolved(process).time_sampling == "continuous"
