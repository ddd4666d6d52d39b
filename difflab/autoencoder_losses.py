"""Losses of an autoencoder for latent diffusion (Esser et al. 2021, VQGAN; Rombach et al. 2022, LDM): reconstruction,
the hinge GAN losses of a patch discriminator and VQGAN's adaptive weight between them. Per-example losses (B,) out;
the caller reduces and adds the regulariser (KL or commitment) the autoencoder returns.

    L = L_rec + beta_reg * regulariser + lambda * L_G,    lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_G|| + delta)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.errors import DifflabError

RECONSTRUCTION_KINDS = ("l1", "l2")
ADAPTIVE_DELTA = 1e-4   # taming-transformers' delta (the paper writes 1e-6)


def reconstruction_loss(x_hat: Tensor, x: Tensor, kind: str = "l1") -> Tensor:
    """(B,) mean over C H W of |x_hat - x| ("l1", VQGAN / LDM) or (x_hat - x)^2 ("l2")."""
    if kind not in RECONSTRUCTION_KINDS:
        raise DifflabError(f"unknown reconstruction loss {kind!r}; choose one of {', '.join(RECONSTRUCTION_KINDS)}")
    error = x_hat - x
    return (error.abs() if kind == "l1" else error.pow(2)).flatten(1).mean(1)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """(B,) discriminator hinge loss 1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))), means over each example's
    patch logits (B, 1, h, w) (VQGAN's hinge_d_loss)."""
    return 0.5 * (F.relu(1.0 - logits_real).flatten(1).mean(1) + F.relu(1.0 + logits_fake).flatten(1).mean(1))


def generator_adv_loss(logits_fake: Tensor) -> Tensor:
    """(B,) the generator's (decoder's) adversarial loss -mean D(x_hat) over each example's patch logits."""
    return -logits_fake.flatten(1).mean(1)


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, last_layer_weight: Tensor, max_weight: float = 1e4) -> Tensor:
    """lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_G|| + 1e-4), clamped to [0, max_weight] and detached
    (Esser et al. 2021, eq. 7): balances the GAN loss against the reconstruction at the decoder's last layer G_L.

    nll_loss and g_loss are the scalar (batch-mean) losses; both graphs are kept for the caller's backward.
    """
    if nll_loss.ndim or g_loss.ndim:
        raise ValueError(f"adaptive_weight needs scalar losses (the batch means), got shapes {tuple(nll_loss.shape)} "
                         f"and {tuple(g_loss.shape)}")
    nll_grad, = torch.autograd.grad(nll_loss, last_layer_weight, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)
    # Eq. 7.
    weight = torch.linalg.vector_norm(nll_grad) / (torch.linalg.vector_norm(g_grad) + ADAPTIVE_DELTA)
    return weight.clamp(0.0, max_weight).detach()
