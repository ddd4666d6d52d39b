"""Editing with a trained model: DDIM inversion, interpolation between inverted images, SDEdit.

DDIM inversion (Song et al. 2021, Sec. 4.3; Dhariwal & Nichol 2021, App. F): deterministic DDIM (eta = 0) is a
first-order solver of the probability-flow ODE, so running it with time going up turns an image into the noise
that DDIM decodes back to it. Each step t -> s > t evaluates the model at (x_t, t) and moves along the ODE:

    x_s = alpha_s x0_hat(x_t, t) + sigma_s eps_hat(x_t, t)

starting from x_{t_min} = x_0 (the image taken as the state at the grid's smallest time). Decoding the result
with DDIM on the same grid reconstructs the image up to the solver's discretisation error, which shrinks as the
steps grow (each direction is first order; the model is evaluated at x_t going up and at x_s coming down).

Interpolation: inverted noises z_a, z_b are mixed by spherical interpolation (Shoemake 1985), which keeps a
Gaussian vector's norm typical where linear mixing would shrink it, and each mixture is decoded.

SDEdit (Meng et al. 2022): noise an image to time t0 = strength, x_t0 = alpha_t0 x + sigma_t0 z, and sample from
there down to 0 with any sampler: a strength near 0 keeps the image, near 1 draws a new one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser
from difflab.process.base import as_time, expand_to
from difflab.samplers import sample_ddim
from difflab.samplers.base import CountingDenoiser, check_grid


def ddim_invert(denoiser: Denoiser, x0: Tensor, ts: Tensor, cond: Condition | None = None) -> tuple[Tensor, int]:
    """The noise at ts[0] that DDIM on the decreasing grid ``ts`` (ending at 0, or above it) decodes to x0.

    x0: (B, ...) images (or, for a grid ending above 0, states at ts[-1]). Returns (x at ts[0], NFE)."""
    grid = check_grid(ts)
    up = [t for t in reversed(grid) if t > 0.0]                            # t_min, ..., t_max
    model, x = CountingDenoiser(denoiser), x0
    for t, s in zip(up[:-1], up[1:]):
        pred = model(x, as_time(t), cond)
        a_s, sig_s = denoiser.process.alpha_sigma(as_time(s))
        x = expand_to(a_s, x) * pred.x0 + expand_to(sig_s, x) * pred.eps      # DDIM (eta = 0) with s > t
    return x, model.nfe


def ddim_decode(denoiser: Denoiser, z: Tensor, ts: Tensor, cond: Condition | None = None) -> Tensor:
    """Deterministic DDIM from z at ts[0] down the grid (the inverse of :func:`ddim_invert`)."""
    return sample_ddim(denoiser, z, ts, cond=cond).x


def slerp(z_a: Tensor, z_b: Tensor, weights: Tensor) -> Tensor:
    """Spherical interpolation of two noises z_a, z_b (...) at weights w (K,) in [0, 1] -> (K, ...):
    sin((1 - w) theta) / sin(theta) z_a + sin(w theta) / sin(theta) z_b, theta their angle (linear when parallel)."""
    a, b = z_a.flatten().double(), z_b.flatten().double()
    cos = torch.clamp(a @ b / (a.norm() * b.norm()), -1.0, 1.0)
    theta = torch.arccos(cos)
    w = weights.double()[:, None]
    if float(torch.sin(theta)) < 1e-6:
        mixed = (1 - w) * a + w * b
    else:
        mixed = (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)
    return mixed.reshape(len(weights), *z_a.shape).to(z_a.dtype)


def sdedit_start(denoiser: Denoiser, x: Tensor, ts: Tensor, noise: Tensor) -> Tensor:
    """x_t0 = alpha_t0 x + sigma_t0 z at the grid's first time t0 = ts[0] (x, z: (B, ...)): where SDEdit starts
    sampling down the grid ``ts`` (a time_grid with t_max = the strength)."""
    return denoiser.process.marginal(x, as_time(float(ts[0]), batch=x.shape[0]), noise)
