"""The exact Gaussian-mixture posterior against the textbook Gaussian posterior, importance sampling from the
prior, and the noiseless limit."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.denoisers.mixture import GaussianMixtureDenoiser, bench_mixture
from difflab.errors import DifflabError
from difflab.process.sde import VPProcess
from difflab.operators import build_operator
from difflab.restoration.posterior import mixture_posterior


def random_gaussian(shape: tuple[int, ...], seed: int = 0) -> GaussianMixtureDenoiser:
    """K = 1: N(mu, diag(s^2)) on images of ``shape`` with random mu and s in [0.3, 1]."""
    g = torch.Generator().manual_seed(seed)
    D = math.prod(shape)
    mu = torch.randn(1, D, generator=g, dtype=torch.float64)
    s = 0.3 + 0.7 * torch.rand(1, D, generator=g, dtype=torch.float64)
    return GaussianMixtureDenoiser(VPProcess(), mu, s, example_shape=shape)


def as_image(mixture: GaussianMixtureDenoiser, shape: tuple[int, ...]) -> GaussianMixtureDenoiser:
    """The same mixture with examples of ``shape`` (a 2-D point set as the (1, 1, 2) image)."""
    return GaussianMixtureDenoiser(mixture.process, mixture.means, mixture.stds, mixture.weights, shape)


def noisy_measurement(op, x: torch.Tensor, sigma_y: float, seed: int = 1) -> torch.Tensor:
    """y = A(x) + sigma_y n for one image x (1, C, H, W)."""
    Ax = op(x)
    return op.measure(x, sigma_y, torch.randn(Ax.shape, generator=torch.Generator().manual_seed(seed),
                                              dtype=torch.float64))


@pytest.mark.parametrize("task", ["sr2", "blur", "inpaint-box"])
def test_one_gaussian_equals_the_textbook_posterior_in_precision_form(task):
    shape, sigma_y = (1, 4, 4), 0.1
    prior = random_gaussian(shape)
    op = build_operator(task, shape)
    x = prior.sample(1, torch.Generator().manual_seed(2))
    y = noisy_measurement(op, x, sigma_y)
    post = mixture_posterior(prior, op, y, sigma_y)

    A = op.matrix(shape)
    S_inv = torch.diag(prior.stds[0] ** -2)
    # Bishop 2006, eq. 2.116 - 2.117: C = (S^-1 + A^T A / sigma_y^2)^-1, m = C (S^-1 mu + A^T y / sigma_y^2).
    C = torch.linalg.inv(S_inv + A.T @ A / sigma_y**2)
    m = C @ (S_inv @ prior.means[0] + A.T @ y.reshape(-1) / sigma_y**2)
    assert post.weights.shape == (1,) and post.weights.item() == pytest.approx(1.0, abs=1e-14)
    assert torch.allclose(post.means[0], m, rtol=0, atol=1e-10)
    assert torch.allclose(post.covariances[0], C, rtol=0, atol=1e-10)
    assert torch.allclose(post.mean, m, rtol=0, atol=1e-10)
    # and its density is that Gaussian's
    xs = post.sample(3, torch.Generator().manual_seed(3)).reshape(3, -1)
    ref = torch.distributions.MultivariateNormal(m, covariance_matrix=C).log_prob(xs)
    assert torch.allclose(post.log_prob(xs.reshape(3, *shape)), ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("task, sigma_y, y", [("denoise", 0.3, (0.2, -0.1)), ("inpaint-half", 0.1, (0.45, 0.0))])
def test_mixture_posterior_matches_importance_sampling_from_the_prior(task, sigma_y, y):
    """Self-normalised importance sampling: x_i ~ p_0 with weights N(y; A x_i, sigma_y^2 I); the estimates of
    E[x_0 | y] and p(k | y) must lie within 5 standard errors (delta method) of the closed form."""
    shape = (1, 1, 2)
    prior = as_image(bench_mixture(VPProcess(), 2), shape)
    op = build_operator(task, shape)
    y = torch.tensor(y, dtype=torch.float64).reshape(1, *shape) * (op(torch.ones(1, *shape, dtype=torch.float64)))
    post = mixture_posterior(prior, op, y, sigma_y)

    n, g = 400_000, torch.Generator().manual_seed(4)
    k = torch.multinomial(prior.weights, n, replacement=True, generator=g)
    x = prior.means[k] + prior.stds[k] * torch.randn(n, 2, generator=g, dtype=torch.float64)   # (n, 2)
    resid = (y.reshape(1, -1) - op(x.reshape(n, *shape)).reshape(n, -1)).pow(2).sum(-1)
    lw = -0.5 * resid / sigma_y**2
    v = torch.softmax(lw, dim=0)                                                # normalised weights (n,)
    ess = 1 / (v**2).sum()
    assert ess > 5_000, "the test's proposal is too poor to say anything"

    f = torch.cat([x, torch.nn.functional.one_hot(k, 3).to(torch.float64)], dim=1)             # (n, 2 + K)
    est = v @ f
    se = ((v[:, None] ** 2) * (f - est) ** 2).sum(0).sqrt()
    exact = torch.cat([post.mean, post.weights])
    assert ((est - exact).abs() <= 5 * se + 1e-12).all(), (est, exact, se)
    assert (post.weights > 0.02).sum() >= 2, "the measurement should leave more than one component plausible"


def test_noiseless_inpainting_keeps_the_measured_pixels_and_samples_the_prior_elsewhere():
    shape = (1, 4, 4)
    prior = random_gaussian(shape, seed=5)
    op = build_operator("inpaint-box", shape)
    y = op(prior.sample(1, torch.Generator().manual_seed(6)))
    post = mixture_posterior(prior, op, y, 0.0)
    n = 20_000
    xs = post.sample(n, torch.Generator().manual_seed(7))
    known = op.mask[0, 0].expand(*shape)                                        # (1, 4, 4) bool
    assert (xs[:, known] - y[0][known]).abs().max() < 1e-10
    # unmeasured pixels: independent of y under a diagonal prior, so N(mu, s^2) there
    mu, s = prior.means[0].reshape(shape)[~known], prior.stds[0].reshape(shape)[~known]
    u = xs[:, ~known]
    assert ((u.mean(0) - mu).abs() < 5 * s / math.sqrt(n)).all()
    assert ((u.std(0) - s).abs() < 5 * s / math.sqrt(2 * n)).all()


@pytest.mark.parametrize("task", ["inpaint-random", "sr2"])
def test_noiseless_mixture_samples_reproduce_the_measurement(task):
    shape = (1, 4, 4)
    prior = as_image(bench_mixture(VPProcess(), 16), shape)
    op = build_operator(task, shape, seed=3)
    y = op(prior.sample(1, torch.Generator().manual_seed(8)))
    post = mixture_posterior(prior, op, y, 0.0)
    xs = post.sample(500, torch.Generator().manual_seed(9))
    assert (op(xs) - y).abs().max() < 1e-10
    assert (post.covariance - post.covariance.T).abs().max() == 0
    with pytest.raises(DifflabError, match="sigma_y > 0"):
        post.log_prob(xs)


def test_a_noiseless_measurement_the_prior_cannot_reach_exactly_says_so():
    """A zero-std pixel measured without noise makes G singular."""
    shape = (1, 1, 2)
    prior = GaussianMixtureDenoiser(VPProcess(), torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]), example_shape=shape)
    with pytest.raises(DifflabError, match="use sigma_y > 0") as error:
        mixture_posterior(prior, build_operator("denoise", shape), torch.zeros(1, *shape), 0.0)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("make", [
    lambda: (random_gaussian((1, 4, 4)), build_operator("inpaint-box", (1, 8, 8)), torch.zeros(1, 1, 4, 4)),
    lambda: (random_gaussian((1, 2, 2)), build_operator("sr4", (1, 8, 8)), torch.zeros(1, 1, 1, 1)),
    lambda: (bench_mixture(VPProcess(), 2), build_operator("denoise", (1, 1, 2)), torch.zeros(1, 1, 1, 2)),
    lambda: (random_gaussian((1, 4, 4)), build_operator("sr2", (1, 4, 4)), torch.zeros(1, 1, 4, 4)),
    lambda: (random_gaussian((1, 4, 4)), build_operator("denoise", (1, 4, 4)), torch.zeros(2, 1, 4, 4)),
], ids=["mask-size", "sr-factor", "not-an-image", "y-shape", "two-measurements"])
def test_a_shape_that_does_not_fit_is_a_one_line_error(make):
    prior, op, y = make()
    with pytest.raises(DifflabError) as error:
        mixture_posterior(prior, op, y, 0.1)
    assert "\n" not in str(error.value)


def test_y_may_come_without_its_batch_dimension():
    shape = (1, 4, 4)
    prior, op = random_gaussian(shape), build_operator("sr2", shape)
    y = noisy_measurement(op, prior.sample(1, torch.Generator().manual_seed(1)), 0.1)
    a, b = mixture_posterior(prior, op, y, 0.1), mixture_posterior(prior, op, y[0], 0.1)
    assert torch.equal(a.means, b.means) and torch.equal(a.covariances, b.covariances)
    assert a.sample(4, torch.Generator().manual_seed(0)).shape == (4, *shape)
