"""The DDPM forward process against independent computations and Monte Carlo."""

import math

import numpy as np
import pytest
import torch

from difflab.process import DDPMProcess, build_process
from difflab.process.base import as_time


def numpy_cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal's betas_for_alpha_bar, written out as a loop."""
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return np.array([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)])


def test_linear_alpha_bar_matches_cumulative_product():
    p = DDPMProcess("linear", 1000)
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(p.betas.numpy(), betas, rtol=1e-12)
    np.testing.assert_allclose(p.alpha_bar[1:].numpy(), np.cumprod(1 - betas), rtol=1e-10)
    assert p.alpha_bar[0] == 1.0
    # Ho et al.: alpha_bar_T ~ 4e-5 for the linear schedule
    assert 3e-5 < float(p.alpha_bar[-1]) < 5e-5


def test_cosine_betas_match_nichol_dhariwal():
    p = DDPMProcess("cosine", 1000)
    np.testing.assert_allclose(p.betas.numpy(), numpy_cosine_betas(1000), rtol=1e-10)
    assert float(p.betas.max()) == pytest.approx(0.999)          # clipped at the end
    # alpha_bar follows f(t)/f(0) wherever no clipping happened
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    i = np.arange(0, 990)
    np.testing.assert_allclose(p.alpha_bar[i].numpy(), f(i / 1000) / f(0), rtol=1e-9)


def test_linear_alpha_bar_schedule():
    p = DDPMProcess("linear-alpha-bar", 100)
    i = np.arange(0, 100)
    np.testing.assert_allclose(p.alpha_bar[i].numpy(), 1 - i / 100, rtol=1e-10, atol=1e-12)
    assert float(p.betas[-1]) == pytest.approx(0.999)
    assert float(p.alpha_bar[-1]) > 0


def test_linear_schedule_rescales_with_T():
    p = DDPMProcess("linear", 250)
    assert float(p.betas[0]) == pytest.approx(4e-4) and float(p.betas[-1]) == pytest.approx(0.08)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_matches_ho_et_al(schedule):
    """q(x_{t-1} | x_t, x_0): the table, the general two-time posterior, and Ho et al.'s eps form (eq. 11)."""
    p = DDPMProcess(schedule, 1000)
    g = torch.Generator().manual_seed(0)
    i = torch.tensor([1, 2, 10, 500, 999, 1000])
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=g, dtype=torch.float64)
    ab = p.alpha_bar[i][:, None]
    beta = p.betas[i - 1][:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    # Ho et al. eq. 11 with the true eps: mu = (x_t - beta / sqrt(1 - ab) eps) / sqrt(alpha)
    mu_ho = (x_t - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
    ab_prev = p.alpha_bar[i - 1]
    var_ho = (1 - ab_prev) / (1 - p.alpha_bar[i]) * p.betas[i - 1]
    mean_tab, var_tab = p.posterior_step(x_t, x0, i)
    mean_gen, var_gen = p.posterior(x_t, x0, p.times(i), p.times(i - 1))
    for mean, var in ((mean_tab, var_tab), (mean_gen, var_gen)):
        torch.testing.assert_close(mean, mu_ho, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(var, var_ho, rtol=1e-9, atol=1e-12)
    assert float(var_tab[0]) == 0.0  # beta-tilde_1 = 0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_marginal_monte_carlo(schedule):
    p = DDPMProcess(schedule, 1000)
    g = torch.Generator().manual_seed(1)
    n = 200_000
    for i in (1, 100, 500, 1000):
        x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
        xt = p.marginal(x0, p.times(torch.full((n,), i)), torch.randn(n, 1, generator=g, dtype=torch.float64))
        ab = float(p.alpha_bar[i])
        se_mean = math.sqrt((1 - ab) / n)
        assert abs(float(xt.mean()) - math.sqrt(ab) * 0.7) < 5 * se_mean + 1e-12
        assert float(xt.var()) == pytest.approx(1 - ab, rel=5 * math.sqrt(2 / n))


def test_continuous_coefficients_exact_on_grid_and_smooth_between():
    p = DDPMProcess("cosine", 1000)
    i = torch.arange(1, 1001)
    c = p.coefficients(p.times(i))
    torch.testing.assert_close(c.alpha, p.alpha_bar[i].sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(c.sigma, (1 - p.alpha_bar[i]).sqrt(), rtol=1e-12, atol=0)
    # derivatives against central differences inside a grid cell
    t = torch.tensor([0.1234, 0.5005, 0.9001], dtype=torch.float64)
    h = 1e-7
    cp, cm, c0 = p.coefficients(t + h), p.coefficients(t - h), p.coefficients(t)
    torch.testing.assert_close(c0.d_alpha, (cp.alpha - cm.alpha) / (2 * h), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(c0.d_sigma, (cp.sigma - cm.sigma) / (2 * h), rtol=1e-5, atol=1e-8)
    # at a grid point, the slope of the cell below: alpha'/alpha (constant on a cell) is the one just below it
    g = p.times(torch.tensor([2, 500, 1000]))
    torch.testing.assert_close(p.drift(g), p.drift(g - 0.5 / 1000), rtol=1e-12, atol=0)
    assert (p.drift(g[:2]) - p.drift(g[:2] + 0.5 / 1000)).abs().min() > 1e-3     # (t = 1 has no cell above)


def test_sde_coefficients_of_ddpm():
    """g^2 = d sigma^2/dt - 2 f sigma^2 with f = alpha'/alpha: for DDPM, g^2 ~ beta(t) T (the VP-SDE's beta)."""
    p = DDPMProcess("linear", 1000)
    t = torch.tensor([0.25, 0.75], dtype=torch.float64)
    i = p.index(t)
    beta_cont = -torch.log(1 - p.betas[i]) * 1000     # -d log alpha_bar / dt on that cell
    torch.testing.assert_close(p.diffusion_sq(t + 0.0004), beta_cont, rtol=1e-9, atol=0)
    torch.testing.assert_close(p.drift(t + 0.0004), -0.5 * beta_cont, rtol=1e-9, atol=0)


def test_build_process_round_trip_and_errors():
    p = DDPMProcess("cosine", 500)
    q = build_process(p.config())
    assert torch.equal(q.alpha_bar, p.alpha_bar)
    from difflab.errors import DifflabError
    with pytest.raises(DifflabError, match="unknown schedule"):
        DDPMProcess("quadratic-ish")
    with pytest.raises(DifflabError, match="unknown process"):
        build_process({"name": "nope"})


def test_as_time_broadcasts():
    assert as_time(0.5, 3).shape == (3,) and as_time(0.5, 3).dtype == torch.float64
