"""Bits/dim conversion, dequantization and the discretized Gaussian decoder, against hand computations."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from difflab.likelihood import (BIN_WIDTH, LikelihoodResult, dequantize, discretized_gaussian_log_likelihood,
                                nats_to_bpd, normal_kl)
from difflab.rng import GeneratorNoise, PerSampleNoise

PIXELS = torch.arange(256, dtype=torch.float64)
GRID = 2 * PIXELS / 255 - 1                     # the 256 data values x = 2 p / 255 - 1


def test_uniform_density_on_the_256_bins_is_8_bits_per_dim():
    """A model that is exactly uniform on the dequantized support gives P(p) = 1/256 per pixel: 8 bits/dim."""
    D = 5
    # centered bins of width 2/255 around the grid: support [-1 - 1/255, 1 + 1/255], length 512/255
    nll = torch.tensor(D * math.log(512 / 255))
    assert float(nats_to_bpd(nll, D, 2 / 255)) == pytest.approx(8.0, abs=1e-12)
    # Song et al.'s y = 2 (p + u) / 256 - 1: support [-1, 1), length 2
    nll = torch.tensor(D * math.log(2.0))
    assert float(nats_to_bpd(nll, D, 2 / 256)) == pytest.approx(8.0, abs=1e-12)
    # pairing log 127.5 with the 2/256 bins (a tempting mix-up) would report log2(255) = 7.994 here
    assert (D * math.log(2.0) + D * math.log(127.5)) / (D * math.log(2)) == pytest.approx(math.log2(255))


def test_nats_to_bpd_without_offset():
    assert float(nats_to_bpd(torch.tensor(8 * math.log(2.0)), 4)) == pytest.approx(2.0)


@pytest.mark.parametrize("mode", ["centered", "song"])
def test_dequantized_values_stay_in_their_pixel_bin(mode):
    x = GRID.repeat(40, 1)                                                    # (40, 256)
    y, w = dequantize(x, mode, GeneratorNoise(torch.Generator().manual_seed(0)))
    if mode == "centered":
        assert w == pytest.approx(2 / 255)
        pixel = torch.floor((y + 1 + 1 / 255) * 127.5)                        # bins [x - 1/255, x + 1/255)
    else:
        assert w == pytest.approx(2 / 256)
        pixel = torch.floor((y + 1) * 128)                                    # bins [2p/256 - 1, 2(p+1)/256 - 1)
    assert torch.equal(pixel, PIXELS.expand_as(pixel))
    u = (y - x) / w if mode == "centered" else (y + 1) * 128 - PIXELS
    assert abs(float(u.mean()) - (0.0 if mode == "centered" else 0.5)) < 0.01   # uniform: mean, sd 1/sqrt(12)
    assert float(u.std()) == pytest.approx(1 / math.sqrt(12), rel=0.02)


def test_dequantization_per_sample_noise_does_not_depend_on_the_batch():
    x = GRID[:6].reshape(3, 2)
    a, _ = dequantize(x, "centered", PerSampleNoise([7, 8, 9]))
    b, _ = dequantize(x[1:], "centered", PerSampleNoise([8, 9]))
    torch.testing.assert_close(a[1:], b, rtol=0, atol=0)


@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.2, 0.0, 0.517, 1.0, 2.0])
@pytest.mark.parametrize("std", [1e-4, 0.003, 0.05, 0.6, 4.0])
def test_decoder_probabilities_over_the_256_bins_sum_to_one(mean, std):
    logp = discretized_gaussian_log_likelihood(GRID, torch.tensor(mean, dtype=torch.float64),
                                               torch.tensor(std**2, dtype=torch.float64))
    assert not torch.isnan(logp).any()
    assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("p", [0, 1, 77, 254, 255])
def test_sharp_decoder_puts_all_mass_in_the_right_bin(p):
    var = torch.tensor(1e-3 / 255, dtype=torch.float64) ** 2                   # std: 0.1 % of a bin
    logp = discretized_gaussian_log_likelihood(GRID, GRID[p], var)
    assert float(logp[p]) == pytest.approx(0.0, abs=1e-12)
    assert float(logp.exp().sum() - logp[p].exp()) < 1e-12
    # centred on the edge between bins p and p + 1: half each
    if p < 255:
        half = discretized_gaussian_log_likelihood(GRID[p:p + 2], (GRID[p] + GRID[p + 1]) / 2, var).exp()
        torch.testing.assert_close(half, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_decoder_matches_scipy_cdf_differences():
    rng = np.random.default_rng(0)
    p = rng.integers(0, 256, size=500)
    x = 2 * p / 255 - 1
    mean, std = rng.uniform(-1.2, 1.2, 500), rng.uniform(0.002, 0.5, 500)
    hi = np.where(p == 255, np.inf, (x + 1 / 255 - mean) / std)
    lo = np.where(p == 0, -np.inf, (x - 1 / 255 - mean) / std)
    # the mass of [lo, hi], taken in the tail where it is a difference of small numbers (no cancellation)
    right = lo > 0
    mass = np.where(right, norm.sf(lo) - norm.sf(hi), norm.cdf(hi) - norm.cdf(lo))
    with np.errstate(divide="ignore"):
        expected = np.log(mass)
    ok = mass > 1e-300                                                      # scipy underflows beyond
    assert ok.sum() > 450
    got = discretized_gaussian_log_likelihood(*(torch.from_numpy(a) for a in (x, mean, std**2)), BIN_WIDTH)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy()[ok], expected[ok], rtol=1e-9, atol=1e-12)


def test_decoder_is_accurate_in_the_far_tail():
    """30 standard deviations out, Phi(b) - Phi(a) is 0 in floating point; the log stays finite and right."""
    x, mean, var = (torch.tensor([v], dtype=torch.float64) for v in (0.5, 0.2, 1e-4))
    logp = discretized_gaussian_log_likelihood(x, mean, var)
    a, b = (0.5 - 1 / 255 - 0.2) / 0.01, (0.5 + 1 / 255 - 0.2) / 0.01
    expected = norm.logsf(a) + math.log1p(-math.exp(norm.logsf(b) - norm.logsf(a)))
    assert float(logp) == pytest.approx(expected, rel=1e-9)


def test_normal_kl_against_torch_distributions():
    m1, v1, m2, v2 = torch.tensor(0.3), torch.tensor(0.2), torch.tensor(-0.1), torch.tensor(0.7)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, v1.sqrt()),
                                            torch.distributions.Normal(m2, v2.sqrt()))
    assert float(normal_kl(m1, v1, m2, v2)) == pytest.approx(float(ref), rel=1e-6)


def test_result_summary_and_concatenation():
    a = LikelihoodResult(torch.tensor([1.0, 2.0, 3.0]), nfe=10.0, seconds=1.0)
    b = LikelihoodResult(torch.tensor([5.0]), nfe=20.0, seconds=0.5)
    s = LikelihoodResult.cat([a, b]).summary()
    assert s["bpd"] == pytest.approx(2.75) and s["n"] == 4
    assert s["sem"] == pytest.approx(float(torch.tensor([1.0, 2, 3, 5]).std()) / 2)
    assert s["nfe"] == pytest.approx(12.5) and s["seconds"] == pytest.approx(1.5)
