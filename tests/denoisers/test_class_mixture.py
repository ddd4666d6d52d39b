"""The labelled Gaussian mixture: exact p(y | x_t), the exact conditional denoiser E[x_0 | x_t, y], and
class-conditional sampling, against brute force (one unlabelled mixture per class, Bayes by hand, autograd).
These are the closed forms that classifier and classifier-free guidance are tested against."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.condition import NULL_LABEL, Condition
from difflab.denoisers.mixture import GaussianMixtureDenoiser, bench_mixture, class_mixture
from difflab.process import build_process

PROCESSES = ["ddpm", "vp", "ve", "flow"]


def image_mixture(process) -> GaussianMixtureDenoiser:
    """Three classes of unequal size (1, 2 and 3 components) on (1, 2, 2) "images", classes not in index order."""
    g = torch.Generator().manual_seed(3)
    means = 0.6 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    stds = 0.2 + 0.3 * torch.rand(6, 4, generator=g, dtype=torch.float64)
    return GaussianMixtureDenoiser(process, means, stds, torch.tensor([1.0, 2, 3, 1, 2, 3]), example_shape=(1, 2, 2),
                                   classes=torch.tensor([2, 0, 1, 2, 1, 2]))


MIXTURES = {"2d": lambda p: class_mixture(p, 2), "16d-3class": lambda p: class_mixture(p, 16, num_classes=3),
            "image-3class": image_mixture}


def by_hand(model: GaussianMixtureDenoiser, label: int) -> GaussianMixtureDenoiser:
    """Class ``label``'s own unlabelled mixture, built from the components without the code under test."""
    keep = model.classes == label
    return GaussianMixtureDenoiser(model.process, model.means[keep], model.stds[keep], model.weights[keep],
                                   model.example_shape)


def noisy_batch(model: GaussianMixtureDenoiser, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t ~ p_t at per-row times t in [0.05, 0.95] (B,), float64."""
    g = torch.Generator().manual_seed(seed)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    alpha, sigma = model.process.alpha_sigma(t)
    x0 = model.sample(n, g)
    shape = (n,) + (1,) * (x0.ndim - 1)
    return alpha.reshape(shape) * x0 + sigma.reshape(shape) * torch.randn(x0.shape, generator=g, dtype=torch.float64), t


def autograd_score(model: GaussianMixtureDenoiser, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """grad_x log p_t(x) by autograd of the closed-form log density."""
    xg = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_prob(xg, t).sum(), xg)
    return grad


@pytest.mark.parametrize("pname", PROCESSES)
@pytest.mark.parametrize("mixture", list(MIXTURES))
def test_class_log_probs_are_bayes_rule(pname, mixture):
    """log p(y | x_t) = log p_t(x | y) + log p(y) - log p_t(x), each from its own mixture."""
    model = MIXTURES[mixture](build_process({"name": pname}))
    x, t = noisy_batch(model, 64, seed=1)
    log_p = model.class_log_probs(x, t)
    assert log_p.shape == (64, model.num_classes) and log_p.dtype == torch.float64
    torch.testing.assert_close(torch.logsumexp(log_p, -1), torch.zeros(64, dtype=torch.float64), rtol=0, atol=1e-12)
    total = model.log_prob(x, t)
    for y in range(model.num_classes):
        own = by_hand(model, y)
        prior = model.weights[model.classes == y].sum()
        torch.testing.assert_close(log_p[:, y], own.log_prob(x, t) + torch.log(prior) - total, rtol=0, atol=1e-10)
        torch.testing.assert_close(model.of_class(y).log_prob(x, t), own.log_prob(x, t), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.class_weights, torch.stack([model.weights[model.classes == y].sum()
                                                                 for y in range(model.num_classes)]))


@pytest.mark.parametrize("pname", PROCESSES)
@pytest.mark.parametrize("mixture", list(MIXTURES))
def test_the_conditional_denoiser_is_the_class_score_and_classifier_guidance_is_exact(pname, mixture):
    """Tweedie for the conditional denoiser: -eps(x_t, y) / sigma = grad_x log p_t(x | y), with labels mixed
    in one batch; and the identity classifier guidance rests on (Dhariwal & Nichol 2021, sec. 4):
    grad log p_t(x | y) = grad log p_t(x) + grad_x log p(y | x_t)."""
    model = MIXTURES[mixture](build_process({"name": pname}))
    x, t = noisy_batch(model, 48, seed=2)
    labels = torch.arange(48) % model.num_classes
    conditional = model(x, t, Condition(labels=labels)).score
    expected = torch.empty_like(x)
    for y in range(model.num_classes):
        rows = labels == y
        expected[rows] = autograd_score(by_hand(model, y), x[rows], t[rows])
    torch.testing.assert_close(conditional, expected, rtol=1e-8, atol=1e-8)          # scores up to ~100 (ve)

    xg = x.clone().requires_grad_(True)
    chosen = model.class_log_probs(xg, t).gather(1, labels[:, None]).sum()
    (classifier_grad,) = torch.autograd.grad(chosen, xg)                            # grad_x log p(y | x_t)
    guided = model(x, t).score + classifier_grad
    torch.testing.assert_close(guided, conditional, rtol=1e-8, atol=1e-8)
    assert classifier_grad.abs().amax() > 0.1                                       # the classes overlap: guidance acts


@pytest.mark.parametrize("pname", PROCESSES)
def test_null_label_rows_are_the_unconditional_denoiser_bit_for_bit(pname):
    model = image_mixture(build_process({"name": pname}))
    x, t = noisy_batch(model, 12, seed=4)
    labels = torch.tensor([NULL_LABEL, 0, 1, NULL_LABEL, 2, NULL_LABEL] * 2)
    plain = model(x, t)
    mixed = model(x, t, Condition(labels=labels))
    null = labels == NULL_LABEL
    assert torch.equal(mixed.x0[null], plain.x0[null]) and torch.equal(mixed.eps[null], plain.eps[null])
    assert not torch.allclose(mixed.x0[~null], plain.x0[~null])
    everyone = model(x, t, Condition(labels=torch.full((12,), NULL_LABEL)))
    assert torch.equal(everyone.x0, plain.x0) and torch.equal(everyone.eps, plain.eps)
    scalar_t = model(x, t[0], Condition(labels=labels))                             # a () time works too
    assert torch.equal(scalar_t.x0[null], model(x, t[0]).x0[null])


def test_labels_are_refused_where_they_cannot_be_read():
    process = build_process({"name": "vp"})
    x, t = torch.randn(3, 2, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    unlabelled = bench_mixture(process, 2)
    assert unlabelled.num_classes is None
    with pytest.raises(ValueError, match="Gaussian mixture was not built to read the condition's labels"):
        unlabelled(x, t, Condition(labels=torch.tensor([0, 1, NULL_LABEL])))
    with pytest.raises(ValueError, match="no classes"):
        unlabelled.class_log_probs(x, t)
    labelled = class_mixture(process, 2)
    with pytest.raises(ValueError, match=r"in \[0, 2\) or NULL_LABEL"):
        labelled(x, t, Condition(labels=torch.tensor([0, 2, 1])))
    with pytest.raises(ValueError, match="do not match the batch"):
        labelled(x, t, Condition(labels=torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="cover 0 .. C-1"):
        GaussianMixtureDenoiser(process, torch.zeros(2, 2), 1.0, classes=torch.tensor([0, 2]))


def exact_moments(model: GaussianMixtureDenoiser, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of the mixture of the components ``keep`` (weights renormalised):
    m = sum w_k mu_k, Cov = sum w_k (diag(s_k^2) + mu_k mu_k^T) - m m^T."""
    w = model.weights[keep] / model.weights[keep].sum()
    mu, s2 = model.means[keep], model.stds[keep] ** 2
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (torch.diag_embed(s2) + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


@pytest.mark.parametrize("mixture", ["2d", "image-3class"])
def test_class_conditional_draws_have_each_class_mean_and_covariance(mixture):
    """Sample moments within 5 standard errors (each estimated from the draws) of the exact ones; the other
    classes' exact moments lie far outside those bounds, so drawing from the wrong class fails."""
    model = MIXTURES[mixture](build_process({"name": "vp"}))
    C, n = model.num_classes, 20000
    labels = torch.cat([torch.arange(C).repeat(n), torch.full((n,), NULL_LABEL)])        # interleaved, then NULL
    draws = model.sample(len(labels), torch.Generator().manual_seed(5), labels=labels)
    assert draws.shape == (len(labels), *model.example_shape) and draws.dtype == torch.float64
    flat = draws.reshape(len(labels), -1)
    exact = {y: exact_moments(model, model.classes == y) for y in range(C)}
    exact[NULL_LABEL] = exact_moments(model, torch.ones_like(model.classes, dtype=torch.bool))
    for y in (*range(C), NULL_LABEL):
        z = flat[labels == y]
        mean = z.mean(0)
        centred = z - mean
        products = centred[:, :, None] * centred[:, None, :]                              # (n, D, D)
        cov, cov_se = products.mean(0), products.std(0) / math.sqrt(len(z))
        mean_se = z.std(0) / math.sqrt(len(z))
        assert ((mean - exact[y][0]).abs() < 5 * mean_se).all(), (y, mean, exact[y][0])
        assert ((cov - exact[y][1]).abs() < 5 * cov_se + 1e-12).all(), (y, cov, exact[y][1])
        for other in range(C):
            if other != y and y != NULL_LABEL:
                assert ((mean - exact[other][0]).abs() > 5 * mean_se).any()


def test_unlabelled_sampling_is_unchanged_by_classes():
    """sample without labels reads the generator exactly as before classes existed."""
    process = build_process({"name": "flow"})
    labelled = class_mixture(process, 2)
    plain = GaussianMixtureDenoiser(process, labelled.means, labelled.stds, labelled.weights)
    a = labelled.sample(100, torch.Generator().manual_seed(0))
    b = plain.sample(100, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("pname", ["vp", "ve", "flow"])
@pytest.mark.parametrize("dim", [2, 64])
def test_class_mixture_is_certain_at_t0_and_uncertain_at_t_half(pname, dim):
    """The property class_mixture's docstring promises (the numbers it quotes, to within sampling error)."""
    model = class_mixture(build_process({"name": pname}), dim)
    assert model.num_classes == 2 and model.means.shape == (6, dim)
    g = torch.Generator().manual_seed(1)
    x0 = model.sample(4000, g)
    confidence = {}
    for t in (model.process.t_min, 0.5):
        t = torch.tensor(t, dtype=torch.float64)
        alpha, sigma = model.process.alpha_sigma(t)
        xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        confidence[float(t)] = model.class_log_probs(xt, t).exp().amax(-1).mean().item()
    assert confidence[float(model.process.t_min)] > 0.99
    assert float(model.class_weights.max()) + 0.03 < confidence[0.5] < 0.95
