"""The probability-flow ODE likelihood against closed forms, for every process.

Gaussian N(m, s^2 I) data: the ODE is linear, (x_t - alpha_t m) / r_t is constant along it with
r_t^2 = alpha_t^2 s^2 + sigma_t^2, so the model's exact log-density (the prior N(0, sigma(t_max)^2 I) pulled
back through the flow map, started at alpha(t_min) y) is written out independently below. A 2-D Gaussian
mixture has a nonlinear, non-diagonal flow: there the reference is the mixture's own density log p_t
(GaussianMixtureDenoiser.log_prob), which the estimator targets up to the prior's alpha(t_max) leak.
"""

import math

import pytest
import torch

from difflab.denoisers import GaussianMixtureDenoiser
from difflab.errors import DifflabError
from difflab.likelihood import ode_bpd, ode_nll
from difflab.process import DDPMProcess, FlowProcess, VEProcess, VPProcess
from difflab.process.base import as_time
from difflab.rng import GeneratorNoise

PROCESSES = {"ddpm": DDPMProcess, "vp": VPProcess, "ve": VEProcess, "flow": FlowProcess}
M, S = 0.5, 0.3


def noise(seed: int) -> GeneratorNoise:
    return GeneratorNoise(torch.Generator().manual_seed(seed))


def gaussian(process, D: int) -> GaussianMixtureDenoiser:
    one = torch.ones(1, D, dtype=torch.float64)
    return GaussianMixtureDenoiser(process, M * one, S * one)


def mixture(process) -> GaussianMixtureDenoiser:
    means = torch.tensor([[0.4, -0.2], [-0.5, 0.3]], dtype=torch.float64)
    stds = torch.tensor([[0.3, 0.2], [0.25, 0.4]], dtype=torch.float64)
    return GaussianMixtureDenoiser(process, means, stds, torch.tensor([0.6, 0.4], dtype=torch.float64))


def gaussian_model_nll(process, y: torch.Tensor) -> torch.Tensor:
    """-log p(y) of the flow model for Gaussian data, by the exact flow map (no ODE solve)."""
    a0, s0 = (float(v) for v in process.alpha_sigma(as_time(process.t_min)))
    a1, s1 = (float(v) for v in process.alpha_sigma(as_time(process.t_max)))
    r0, r1 = math.hypot(a0 * S, s0), math.hypot(a1 * S, s1)
    x_end = a1 * M + r1 / r0 * (a0 * y - a0 * M)
    D = y.shape[1]
    log_prior = -0.5 * (x_end**2).sum(1) / s1**2 - 0.5 * D * math.log(2 * math.pi * s1**2)
    return -(log_prior + D * math.log(r1 / r0) + D * math.log(a0))


def smoothed_nll(model: GaussianMixtureDenoiser, y: torch.Tensor) -> torch.Tensor:
    """-log of the density the estimator targets, that of y = x_{t_min} / alpha(t_min):
    log p_{t_min}(alpha y) + D log alpha."""
    p = model.process
    a = p.alpha_sigma(as_time(p.t_min))[0]
    return -(model.log_prob(a * y, p.t_min) + y.shape[1] * torch.log(a))


@pytest.mark.parametrize("name", PROCESSES)
def test_gaussian_data_exact_divergence_matches_the_flow_map(name):
    """D = 3, 64 examples. Measured max |error| (nats): at rtol = atol = 1e-7 ddpm 1.0e-5, vp 2.3e-6,
    ve 2.7e-6, flow 1.3e-6 (1e-9: all below 7e-8); at the default 1e-5: 5.1e-4, 9.7e-5, 1.8e-4, 1.2e-5."""
    process = PROCESSES[name]()
    model = gaussian(process, 3)
    y = model.sample(64, torch.Generator().manual_seed(0))
    nll, nfe = ode_nll(model, y, divergence="exact", rtol=1e-7, atol=1e-7)
    assert 10 < nfe < 400
    torch.testing.assert_close(nll, gaussian_model_nll(process, y), rtol=0, atol=5e-5)
    nll, _ = ode_nll(model, y, divergence="exact")
    torch.testing.assert_close(nll, gaussian_model_nll(process, y), rtol=0, atol=1e-3)
    # The data density differs by the t_min smoothing and the prior's leak, first order in alpha(t_max) m:
    # mean |difference| ddpm 4.2e-3, vp 4.2e-3, ve 1.3e-2 (sigma_max = 50 only), flow 1e-5 nats.
    assert float((nll + model.log_prob(y)).abs().mean()) < 2e-2


@pytest.mark.parametrize("name", PROCESSES)
def test_rademacher_hutchinson_is_exact_for_isotropic_gaussian_data(name):
    """The flow's Jacobian is a multiple of I, and eps^T (c I) eps = c D for every +-1 probe."""
    process = PROCESSES[name]()
    model = gaussian(process, 3)
    y = model.sample(32, torch.Generator().manual_seed(1))
    nll, _ = ode_nll(model, y, divergence="hutchinson", probe="rademacher", noise=noise(0), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(nll, gaussian_model_nll(process, y), rtol=0, atol=5e-5)
    nll, _ = ode_nll(model, y, divergence="hutchinson", probe="gaussian", noise=noise(0), rtol=1e-7, atol=1e-7)
    assert float((nll - gaussian_model_nll(process, y)).abs().max()) > 0.1      # Gaussian probes are not exact


@pytest.mark.parametrize("name", PROCESSES)
def test_mixture_exact_divergence_matches_the_closed_form_density(name):
    """2-D two-component mixture, rtol = atol = 1e-5. Measured max |error| per example against the targeted
    density log p_{t_min}(alpha y) + D log alpha: ddpm 7e-4, vp 8e-4, ve 2.7e-3 nats (all the prior's
    alpha(t_max) leak, which does not shrink with the tolerance), flow 2.4e-4; mean errors below 3e-5.
    Against the data density log p_0(y) the t_min smoothing adds up to 1.3e-2 nats in the tails, 5e-5 on average."""
    process = PROCESSES[name]()
    model = mixture(process)
    y = model.sample(200, torch.Generator().manual_seed(0))
    nll, nfe = ode_nll(model, y, divergence="exact")
    err = nll - smoothed_nll(model, y)
    assert float(err.abs().max()) < 4e-3
    assert abs(float(err.mean())) < 1e-4
    err0 = nll + model.log_prob(y)
    assert float(err0.abs().max()) < 2e-2 and abs(float(err0.mean())) < 2e-4
    assert nfe < 200


@pytest.mark.parametrize("name,probe", [("ddpm", "rademacher"), ("vp", "gaussian"), ("ve", "rademacher"),
                                        ("flow", "rademacher"), ("flow", "gaussian")])
def test_mixture_hutchinson_is_unbiased(name, probe):
    """Per-example Hutchinson noise on this 2-D mixture: sd ~0.65 nats (Rademacher), ~2.1 (Gaussian)."""
    process = PROCESSES[name]()
    model = mixture(process)
    y = model.sample(400, torch.Generator().manual_seed(2))
    nll, _ = ode_nll(model, y, divergence="hutchinson", probe=probe, noise=noise(3))
    err = nll - smoothed_nll(model, y)
    sem = float(err.std()) / math.sqrt(len(err))
    assert 0.2 < float(err.std()) < 3.0                                    # it is an estimate, not exact
    assert abs(float(err.mean())) < 4 * sem


def test_gaussian_probes_are_noisier_than_rademacher():
    model = mixture(FlowProcess())
    y = model.sample(200, torch.Generator().manual_seed(4))
    ref = smoothed_nll(model, y)
    sd = {probe: float((ode_nll(model, y, probe=probe, noise=noise(5))[0] - ref).std())
          for probe in ("rademacher", "gaussian")}
    assert sd["gaussian"] > 1.3 * sd["rademacher"]


def test_ddpm_log_snr_clock_beats_t_clock():
    """DDPM's interpolated path jumps in velocity at every grid step; in t the solver misses the jumps."""
    model = mixture(DDPMProcess())
    y = model.sample(100, torch.Generator().manual_seed(0))
    ref = smoothed_nll(model, y)
    nll_lam, nfe_lam = ode_nll(model, y, divergence="exact", clock="log-snr")
    nll_t, nfe_t = ode_nll(model, y, divergence="exact", clock="t")
    assert float((nll_lam - ref).abs().max()) < 2e-3
    assert nfe_lam < nfe_t
    with pytest.raises(DifflabError, match="clock"):
        ode_nll(mixture(FlowProcess()), y, clock="log-snr")             # lambda(1) = -inf on the flow path


def test_ode_bpd_dequantized_gaussian_and_summary():
    """8-bit Gaussian data under the Gaussian model: bits/dim = (nll + D log 127.5) / (D log 2) with nll the
    density of the dequantized point; close to the continuous density's value plus log2(127.5)."""
    D = 3
    model = gaussian(VPProcess(), D)
    x = torch.round((model.sample(64, torch.Generator().manual_seed(0)).clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    res = ode_bpd(model, x, divergence="exact", noise=noise(1))
    y = x + (2 / 255) * (torch.special.ndtr(torch.randn(x.shape, generator=torch.Generator().manual_seed(1),
                                                         dtype=torch.float64)) - 0.5)
    expected = (gaussian_model_nll(model.process, y) + D * math.log(127.5)) / (D * math.log(2))
    torch.testing.assert_close(res.bpd, expected, rtol=0, atol=1e-4)
    s = res.summary()
    assert s["n"] == 64 and s["nfe"] == res.nfe > 0 and s["seconds"] > 0
    cont = ode_bpd(model, x, divergence="exact", dequantization="none")
    torch.testing.assert_close(cont.bpd, gaussian_model_nll(model.process, x) / (D * math.log(2)), rtol=0, atol=1e-4)


def test_refuses_inference_mode_and_bad_options():
    model = gaussian(FlowProcess(), 2)
    y = torch.zeros(2, 2, dtype=torch.float64)
    with torch.inference_mode(), pytest.raises(DifflabError, match="inference_mode"):
        ode_nll(model, y)
    with pytest.raises(DifflabError, match="divergence"):
        ode_nll(model, y, divergence="trace")
    with pytest.raises(DifflabError, match="probe"):
        ode_nll(model, y, probe="sphere")
    with pytest.raises(DifflabError, match="dequantization"):
        ode_bpd(model, y, dequantization="random")


def test_works_under_no_grad():
    """The CLI evaluates under torch.no_grad(); the velocity's Jacobian is still taken."""
    model = gaussian(FlowProcess(), 2)
    y = model.sample(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        nll, _ = ode_nll(model, y, divergence="exact")
    torch.testing.assert_close(nll, gaussian_model_nll(model.process, y), rtol=0, atol=1e-4)
