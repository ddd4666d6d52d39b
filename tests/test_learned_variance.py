"""Learned variance (Nichol & Dhariwal 2021): Sigma = exp(v log beta_t + (1 - v) log beta-tilde_t), the hybrid loss
L_simple + lambda L_vlb with a stop-gradient on the mean, and DDPM sampling and the ELBO reading the learned v."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from difflab.cli.main import main
from difflab.denoisers import GaussianMixtureDenoiser, NetworkDenoiser
from difflab.errors import DifflabError
from difflab.likelihood import elbo_terms
from difflab.networks import build_network
from difflab.objectives import DiffusionObjective, diffusion_loss, vlb_bpd
from difflab.process import build_process
from difflab.rng import GeneratorNoise
from difflab.samplers import sample_ddpm, time_grid


class WithVariance:
    """A denoiser whose predictions carry a constant learned v."""

    def __init__(self, inner, v: float) -> None:
        self.inner, self.process, self.v = inner, inner.process, v

    def __call__(self, x, t, cond=None):
        p = self.inner(x, t, cond)
        return dataclasses.replace(p, variance_v=torch.full_like(x, self.v))


def ddpm(T: int = 40):
    return build_process({"name": "ddpm", "T": T})


def pixels(n: int = 3) -> torch.Tensor:
    """8-bit data x = 2 p / 255 - 1, (n, 1, 2, 2)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 2, 2), generator=g).double() * 2 / 255 - 1


@pytest.mark.parametrize("v,fixed", [(1.0, "beta"), (0.0, "posterior")])
def test_v_of_one_and_zero_reproduce_the_fixed_elbo(v, fixed):
    model = GaussianMixtureDenoiser.gaussian(ddpm(), 0.1, 0.5, (1, 2, 2))
    x0 = pixels()
    noise = lambda: GeneratorNoise(torch.Generator().manual_seed(3))
    learned, _ = elbo_terms(WithVariance(model, v), x0, noise=noise())
    ref, _ = elbo_terms(model, x0, variance=fixed, noise=noise())
    torch.testing.assert_close(learned, ref, rtol=1e-12, atol=1e-12)
    other, _ = elbo_terms(model, x0, variance="posterior" if fixed == "beta" else "beta", noise=noise())
    assert (other - ref).abs().max() > 1e-3                # the two fixed variances do differ


@pytest.mark.parametrize("v,fixed", [(1.0, "beta"), (0.0, "posterior")])
@pytest.mark.parametrize("steps", [40, 7])           # DDPM's own steps, and a respaced grid
def test_v_of_one_and_zero_reproduce_the_fixed_sampler(v, fixed, steps):
    process = ddpm()
    model = GaussianMixtureDenoiser.gaussian(process, 0.1, 0.5, (1, 2, 2))
    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts = time_grid(process, steps)
    run = lambda d, **o: sample_ddpm(d, x, ts, noise=GeneratorNoise(torch.Generator().manual_seed(2)), **o).x
    torch.testing.assert_close(run(WithVariance(model, v)), run(model, variance=fixed), rtol=1e-12, atol=1e-12)
    # "auto" reads the learned v; an explicit fixed variance overrides it
    torch.testing.assert_close(run(WithVariance(model, 0.5), variance="beta"), run(model, variance="beta"))
    assert (run(WithVariance(model, 0.5)) - run(model, variance=fixed)).abs().max() > 1e-6


def test_sampler_step_variance_is_the_geometric_interpolation():
    """One step onto 2/T from 3/T with v = 0.3: x_s - mu = sqrt(beta^0.3 beta_tilde^0.7) z (eq. 15)."""
    process = ddpm()
    model = GaussianMixtureDenoiser.gaussian(process, 0.1, 0.5, (1,))
    x = torch.zeros(1, 1, dtype=torch.float64)
    ts = torch.tensor([3 / 40, 2 / 40], dtype=torch.float64)
    z = torch.randn(1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = sample_ddpm(WithVariance(model, 0.3), x, ts, noise=GeneratorNoise(torch.Generator().manual_seed(2))).x
    mean = sample_ddpm(model, x, ts, noise=GeneratorNoise(torch.Generator().manual_seed(2)), variance="posterior").x
    beta = 1 - process.alpha_bar[3] / process.alpha_bar[2]
    beta_tilde = (1 - process.alpha_bar[2]) / (1 - process.alpha_bar[3]) * beta
    mean = mean - beta_tilde.sqrt() * z
    torch.testing.assert_close(got - mean, (beta**0.3 * beta_tilde**0.7).sqrt() * z, rtol=1e-10, atol=1e-14)


def tiny_unet(channels: int = 1, size: int = 8):
    from difflab.dataspec import DataSpec
    from difflab.networks import network_config
    torch.manual_seed(0)
    net = build_network(network_config("tiny", DataSpec.pixels(channels, size, size), out_channels=2 * channels))
    with torch.no_grad():                      # a non-zero output layer, so that both halves say something
        net.conv_out.weight.normal_(0, 0.05)
        net.conv_out.bias.normal_(0, 0.1)
    return net


def kl_term_by_hand(process, x0, x_t, x0_hat, i, v):
    """L_{t-1} of Ho et al. eq. 5-7 written out for one row at step i >= 2 (nats)."""
    ab, ab_prev, beta = process.alpha_bar[i], process.alpha_bar[i - 1], process.betas[i - 1]
    c0, ct = ab_prev.sqrt() * beta / (1 - ab), (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
    beta_tilde = (1 - ab_prev) / (1 - ab) * beta
    mu_q, mu_p = c0 * x0 + ct * x_t, c0 * x0_hat + ct * x_t
    var_p = torch.exp(v * math.log(beta) + (1 - v) * math.log(beta_tilde))
    return (0.5 * (torch.log(var_p / beta_tilde) + (beta_tilde + (mu_q - mu_p) ** 2) / var_p - 1)).sum()


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_hybrid_vlb_term_is_the_elbo_per_step_term(target):
    """vlb_bpd (the loss's L_vlb term) equals the ELBO code's step term for the same x_t, and both equal the KL
    written out by hand (rows t >= 2) for the network's own x0_hat and v."""
    from difflab.likelihood import step_terms
    process = ddpm(1000)
    net = tiny_unet()
    g = torch.Generator().manual_seed(5)
    x0 = torch.randint(0, 256, (4, 1, 8, 8), generator=g).double() * 2 / 255 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    steps = torch.tensor([1, 2, 500, 1000])
    t = steps.double() / 1000
    x_t = process.marginal(x0, t, eps)
    denoiser = NetworkDenoiser(net, process, target, learn_variance=True)
    pred = denoiser(x_t, t)
    from difflab.parameterization import from_x0_eps
    raw = from_x0_eps(target, pred.x0, pred.eps, pred.coeffs)              # the network's target half
    loss_term = vlb_bpd(process, target, x0, x_t, t, raw, pred.variance_v)
    elbo_term = step_terms(denoiser, x0, steps, eps) / (64 * math.log(2))
    torch.testing.assert_close(loss_term, elbo_term, rtol=1e-10, atol=1e-12)
    for row in (1, 2, 3):
        hand = kl_term_by_hand(process, x0[row], x_t[row], pred.x0[row], int(steps[row]), pred.variance_v[row])
        torch.testing.assert_close(loss_term[row], hand / (64 * math.log(2)), rtol=1e-9, atol=1e-12)


def test_vlb_trains_the_variance_only():
    """Stop-gradient on the mean (Nichol & Dhariwal sec. 3.1): the L_vlb term changes the gradient of the output
    layer's variance half and leaves its mean half's gradient as L_simple alone makes it."""
    process = ddpm(1000)
    x0 = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)).double() * 2 - 1
    grads = []
    for weight in (0.0, 0.001):
        net = tiny_unet()
        objective = DiffusionObjective(learn_variance=True, vlb_weight=weight)
        loss, _ = diffusion_loss(net, process, objective, x0, generator=torch.Generator().manual_seed(1))
        loss.mean().backward()
        grads.append(net.conv_out.weight.grad.clone())
    torch.testing.assert_close(grads[0][:1], grads[1][:1], rtol=1e-12, atol=1e-15)
    assert grads[0][1:].abs().max() == 0 and grads[1][1:].abs().max() > 0


def test_learned_variance_needs_ddpm():
    with pytest.raises(DifflabError, match="--process ddpm"):
        DiffusionObjective(learn_variance=True).resolved(build_process({"name": "vp"}))
    with pytest.raises(DifflabError, match="--process ddpm"):
        DiffusionObjective(learn_variance=True, time_sampling="lognormal").resolved(ddpm())


def test_cli_trains_samples_and_refuses_learned_variance_it_lacks(tmp_path, capsys):
    quick = ["--steps", "4", "--batch-size", "8", "--warmup", "1", "--log-every", "2", "--checkpoint-every", "4",
             "--sample-every", "0", "--preview-steps", "3", "--quiet"]
    assert main(["train", "--learn-variance", *quick, "--out", str(tmp_path / "lv")]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "lv"), "--sampler", "ddpm", "--steps", "5", "--n", "4",
                 "--variance", "learned", "--out", str(tmp_path / "lv.png")]) == 0
    assert main(["train", *quick, "--out", str(tmp_path / "fixed")]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "fixed"), "--sampler", "ddpm", "--steps", "5", "--n", "4",
                 "--variance", "learned", "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--learn-variance" in err[0]
    assert main(["train", "--learn-variance", "--process", "vp", *quick, "--out", str(tmp_path / "vp")]) == 2
    assert "--process ddpm" in capsys.readouterr().err
