"""Denoisers: what a network is given and how its output is read, against values computed by hand from the
paths' closed forms; clipping; the exact Gaussian denoiser."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.condition import Condition
from difflab.denoisers import ClippedDenoiser, GaussianMixtureDenoiser, NetworkDenoiser
from difflab.process import FlowProcess, VEProcess, VPProcess


class Recorder(torch.nn.Module):
    """Returns a fixed output and keeps what it was called with."""

    def __init__(self, output: torch.Tensor, noise_input: str = "log-snr") -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))   # sets the network's dtype
        self.output, self.noise_input, self.calls = output, noise_input, []

    def forward(self, x, noise, cond=None):
        self.calls.append((x, noise, cond))
        return self.output.expand_as(x)


def vp_alpha_sigma(t: float, beta_min: float = 0.1, beta_max: float = 20.0) -> tuple[float, float]:
    """Song et al. 2021, eq. 29, by hand."""
    alpha = math.exp(-0.5 * beta_min * t - 0.25 * (beta_max - beta_min) * t * t)
    return alpha, math.sqrt(1 - alpha * alpha)


X = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
OUT = torch.tensor([[0.7, -0.4], [0.1, 0.9]], dtype=torch.float64)


@pytest.mark.parametrize("target", ["eps", "x0", "v", "score"])
def test_vp_network_output_is_read_as_its_target(target):
    t = 0.4
    a, s = vp_alpha_sigma(t)
    x0, eps = {"eps": ((X - s * OUT) / a, OUT),
               "x0": (OUT, (X - a * OUT) / s),
               "v": (a * X - s * OUT, s * X + a * OUT),                   # alpha^2 + sigma^2 = 1
               "score": ((X + s * s * OUT) / a, -s * OUT)}[target]
    pred = NetworkDenoiser(Recorder(OUT), VPProcess(), target)(X, torch.tensor(t, dtype=torch.float64))
    torch.testing.assert_close(pred.x0, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.eps, eps, rtol=1e-12, atol=1e-12)


def test_flow_velocity_output_and_the_derived_score_and_velocity():
    t = 0.25
    pred = NetworkDenoiser(Recorder(OUT), FlowProcess(), "velocity")(X, torch.tensor(t, dtype=torch.float64))
    x0, eps = X - t * OUT, X + (1 - t) * OUT                             # x = (1 - t) x0 + t eps, u = eps - x0
    torch.testing.assert_close(pred.x0, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.eps, eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.velocity, OUT, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.score, -eps / t, rtol=1e-12, atol=1e-12)


def test_the_network_reads_scaled_input_the_log_snr_and_the_condition():
    t, process = 0.6, VEProcess()
    sigma = 0.01 * (50 / 0.01) ** t                                     # Song et al. 2021, eq. 30
    net = Recorder(OUT)
    cond = Condition(labels=torch.tensor([3, 1]))
    NetworkDenoiser(net, process, "eps")(X, torch.tensor([t, t], dtype=torch.float64), cond)
    x_in, noise, got = net.calls[0]
    torch.testing.assert_close(x_in, X / math.sqrt(1 + sigma**2), rtol=1e-12, atol=1e-12)   # EDM's c_in
    torch.testing.assert_close(noise, torch.full((2,), -2 * math.log(sigma), dtype=torch.float64))
    assert got is cond


def test_a_network_of_difflab_0_1_reads_the_process_time():
    net = Recorder(OUT, noise_input="t")
    NetworkDenoiser(net, VPProcess(), "eps")(X, torch.tensor(0.3, dtype=torch.float64))
    torch.testing.assert_close(net.calls[0][1], torch.full((2,), 0.3, dtype=torch.float64))


def test_clipping_clamps_x0_and_recomputes_eps():
    t = 0.5
    a, s = vp_alpha_sigma(t)
    inner = NetworkDenoiser(Recorder(torch.full((1, 2), 3.0, dtype=torch.float64)), VPProcess(), "x0")
    pred = ClippedDenoiser(inner, -1.0, 1.0)(X, torch.tensor(t, dtype=torch.float64))
    torch.testing.assert_close(pred.x0, torch.ones_like(X))
    torch.testing.assert_close(pred.eps, (X - a) / s, rtol=1e-12, atol=1e-12)


def test_gaussian_denoiser_is_the_posterior_mean():
    """For x0 ~ N(m, v), E[x0 | x_t] = m + alpha v / (alpha^2 v + sigma^2) (x_t - alpha m)."""
    m, std, t = 0.5, 0.3, 0.35
    a, s = vp_alpha_sigma(t)
    model = GaussianMixtureDenoiser.gaussian(VPProcess(), m, std, (2,))
    expected = m + a * std**2 / (a * a * std**2 + s * s) * (X - a * m)
    torch.testing.assert_close(model(X, torch.tensor(t, dtype=torch.float64)).x0, expected, rtol=1e-12, atol=1e-12)
    var = a * a * std**2 + s * s
    log_p = (-0.5 * (X - a * m) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).sum(1)
    torch.testing.assert_close(model.log_prob(X, t), log_p, rtol=1e-12, atol=1e-12)
