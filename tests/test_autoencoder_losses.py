"""Autoencoder losses on hand values, and VQGAN's adaptive weight against gradients taken with autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from difflab.autoencoder_losses import (adaptive_weight, generator_adv_loss, hinge_d_loss, reconstruction_loss)
from difflab.errors import DifflabError


def test_reconstruction_losses_are_per_example_means():
    x = torch.zeros(2, 1, 1, 2)
    x_hat = torch.tensor([[1.0, -3.0], [0.5, 0.5]]).reshape(2, 1, 1, 2)
    torch.testing.assert_close(reconstruction_loss(x_hat, x), torch.tensor([2.0, 0.5]))            # l1
    torch.testing.assert_close(reconstruction_loss(x_hat, x, "l2"), torch.tensor([5.0, 0.25]))
    with pytest.raises(DifflabError, match="l1, l2"):
        reconstruction_loss(x_hat, x, "huber")


def test_hinge_losses_on_hand_values():
    real = torch.tensor([[2.0, 0.5], [-1.0, 1.0]]).reshape(2, 1, 1, 2)
    fake = torch.tensor([[-3.0, 0.0], [0.5, -0.5]]).reshape(2, 1, 1, 2)
    # example 0: 1/2 (mean(0, 0.5) + mean(0, 1)) = 0.375;  example 1: 1/2 (mean(2, 0) + mean(1.5, 0.5)) = 1.0
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor([0.375, 1.0]))
    torch.testing.assert_close(generator_adv_loss(fake), torch.tensor([1.5, 0.0]))


def test_the_adaptive_weight_on_a_one_weight_decoder():
    """x_hat = w a with w = 1, a = 2, x = 1: L_rec = (w a - x)^2 has gradient 2 a (w a - x) = 4 in w;
    L_G = -w b with b = 3 has gradient -3; lambda = 4 / (3 + 1e-4)."""
    w = torch.ones(1, requires_grad=True)
    nll = (w * 2.0 - 1.0).pow(2).sum()
    g = -(w * 3.0).sum()
    torch.testing.assert_close(adaptive_weight(nll, g, w), torch.tensor(4.0 / (3.0 + 1e-4)))


def test_the_adaptive_weight_matches_autograd_on_a_tiny_decoder():
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))
    critic = nn.Linear(4, 1)
    z, x = torch.randn(5, 3), torch.randn(5, 4)
    last = decoder[2].weight

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        x_hat = decoder(z)
        return (x_hat - x).abs().mean(), -critic(x_hat).mean()

    nll, g = losses()
    weight = adaptive_weight(nll, g, last)
    nll2, g2 = losses()
    grad_nll = torch.autograd.grad(nll2, last, retain_graph=True)[0]     # x_hat is shared by both losses
    grad_g = torch.autograd.grad(g2, last)[0]
    expected = grad_nll.norm() / (grad_g.norm() + 1e-4)
    torch.testing.assert_close(weight, expected)
    assert not weight.requires_grad and 0 < float(weight) < 1e4
    (nll + weight * g).backward()                                       # the graphs were kept for the caller
    assert last.grad is not None


def test_the_adaptive_weight_is_clamped():
    w = torch.ones(1, requires_grad=True)
    nll = (1e3 * w).sum()
    g = (0.0 * w).sum()                                                 # no gradient: 1e3 / 1e-4 = 1e7
    assert float(adaptive_weight(nll, g, w)) == 1e4
    assert float(adaptive_weight(nll, g, w, max_weight=10.0)) == 10.0
    with pytest.raises(ValueError, match="scalar"):
        adaptive_weight(torch.stack([nll, nll]), g, w)
