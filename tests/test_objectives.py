"""Loss weightings against their published closed forms, and the exact minibatch OT pairing."""

import itertools

import pytest
import torch

from difflab.errors import DifflabError
from difflab.objectives import DiffusionObjective, diffusion_loss, loss_weight, ot_pairing
from difflab.parameterization import TARGETS, edm_norm, eps_scale, from_x0_eps, to_x0_eps
from difflab.process import DDPMProcess, FlowProcess, VEProcess, VPProcess

PROCESSES = {"ddpm": DDPMProcess("cosine"), "vp": VPProcess(), "ve": VEProcess(sigma_max=5.0), "flow": FlowProcess()}
T = torch.tensor([0.01, 0.2, 0.5, 0.9], dtype=torch.float64)


@pytest.mark.parametrize("name", list(PROCESSES))
@pytest.mark.parametrize("target", TARGETS)
def test_eps_scale_is_the_derivative_of_the_target_in_eps(name, target):
    c = PROCESSES[name].coefficients(T).expand_as(torch.zeros(4, 3, dtype=torch.float64))
    x_t = torch.randn(4, 3, dtype=torch.float64)
    eps = torch.randn(4, 3, dtype=torch.float64)

    def target_at(e):   # the target as a function of eps with x_t held fixed
        x0 = (x_t - c.sigma * e) / c.alpha
        return from_x0_eps(target, x0, e, c)

    h = 1e-6
    fd = (target_at(eps + h) - target_at(eps - h)) / (2 * h)
    torch.testing.assert_close(fd, eps_scale(target, c).expand_as(fd), rtol=1e-6, atol=1e-6)


def test_weightings_match_their_papers():
    p = VPProcess()
    c = p.coefficients(T)
    snr = (c.alpha / c.sigma) ** 2
    w = lambda target, weighting: loss_weight(DiffusionObjective(target, weighting, "continuous"), p, T)
    # Song et al. 2021: lambda = sigma^2 and lambda = g^2 = beta(t) on the score loss
    torch.testing.assert_close(w("score", "sigma2"), c.sigma**2)
    torch.testing.assert_close(w("score", "likelihood"), p.beta(T))
    torch.testing.assert_close(w("eps", "sigma2"), torch.ones_like(T))
    # Hang et al. 2023 (Min-SNR), Sec. 3.4: eps min(SNR, g)/SNR, x0 min(SNR, g), v min(SNR, g)/(SNR + 1)
    torch.testing.assert_close(w("eps", "min-snr"), snr.clamp(max=5) / snr)
    torch.testing.assert_close(w("x0", "min-snr"), snr.clamp(max=5))
    torch.testing.assert_close(w("v", "min-snr"), snr.clamp(max=5) / (snr + 1))
    for target in TARGETS:
        torch.testing.assert_close(w(target, "uniform"), torch.ones_like(T))


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "min-snr", "edm"])
def test_weighted_loss_is_the_same_whatever_the_target(weighting):
    """One prediction, expressed as each target, gives the same weighted loss: weights live on the eps scale."""
    p = VPProcess()
    x0 = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    eps_net = torch.nn.Conv2d(1, 1, 3, padding=1).double()

    class As(torch.nn.Module):   # predicts eps with eps_net, reports it as ``target``
        def __init__(self, target):
            super().__init__()
            self.target = target

        def forward(self, x, noise, cond=None):
            t = p.time_at_log_snr(noise.double())      # networks read the log-SNR; the path is the test's
            c = p.coefficients(t).expand_as(x)
            x = x.double() * (edm_norm(c) if self.target == "edm" else 1)   # x_t (VP: alpha^2 + sigma^2 = 1)
            x0_hat, eps_hat = to_x0_eps("eps", eps_net(x), x, c)
            return from_x0_eps(self.target, x0_hat, eps_hat, c)

    losses = []
    for target in TARGETS:
        obj = DiffusionObjective(target, weighting, "continuous")
        loss, _ = diffusion_loss(As(target), p, obj, x0.double(), generator=torch.Generator().manual_seed(1))
        losses.append(loss)
    for loss in losses[1:]:
        torch.testing.assert_close(loss, losses[0], rtol=1e-4, atol=1e-8)


def test_ot_pairing_is_the_optimal_permutation():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    cost = lambda perm: float(((x0 - eps[list(perm)]) ** 2).sum())
    best = min(itertools.permutations(range(6)), key=cost)
    pi = ot_pairing(x0, eps)
    assert sorted(pi.tolist()) == list(range(6))
    assert cost(pi.tolist()) == pytest.approx(cost(best), rel=1e-6)
    assert cost(pi.tolist()) < cost(range(6))


def test_objective_errors():
    with pytest.raises(DifflabError, match="weighting"):
        DiffusionObjective(weighting="snr-ish")
    with pytest.raises(DifflabError, match="coupling"):
        DiffusionObjective(coupling="sinkhorn")
    with pytest.raises(DifflabError, match="--process ddpm"):
        DiffusionObjective().check(VPProcess())
    with pytest.raises(DifflabError, match="--process flow"):
        DiffusionObjective(coupling="ot", time_sampling="continuous").check(VPProcess())
    with pytest.raises(DifflabError, match="--t-max"):
        DiffusionObjective("eps", time_sampling="continuous").check(FlowProcess())
    DiffusionObjective("eps", time_sampling="continuous").check(FlowProcess(t_max=0.999))
    DiffusionObjective("velocity", time_sampling="continuous", coupling="ot").check(FlowProcess())
