"""8-bit image data in [-1, 1]: dequantization and the conversion of negative log-likelihoods to bits/dim.

difflab stores pixels p in {0, ..., 255} as x = 2 p / 255 - 1 (``difflab.data.dataset.pixels_to_unit``),
so the data grid has spacing 2/255. Bits/dim always counts 256 levels per dimension, whatever the data
set's true depth (the digits set has 17 levels 0..16 scaled the same way: each of its values is read as
the 8-bit bin around it, so its numbers are on the same 8-bit scale as everyone else's).

Dequantization and the offset (the derivation behind :func:`nats_to_bpd`). A continuous density q on
R^D defines a discrete model by integrating over each pixel's bin, a cube of side w in x-space:

    P(p) = int_{bin(p)} q(y) dy = w^D E_u[q(y(p, u))],         u ~ U[0, 1)^D
    -log P(p) <= E_u[-log q(y(p, u))] - D log w                  (Jensen; Theis et al. 2016)

so  bits/dim = (nll + D log(1/w)) / (D log 2),  nll = -log q(y) in nats.  Two conventions for y:

    "centered"  y = x + w (u - 1/2),  w = 2/255:  bins centred on the data points the model was trained
                on, the same bins as the DDPM decoder (Ho et al. eq. 13):  offset log(1/w) = log 127.5
    "song"      y = 2 (p + u) / 256 - 1,  w = 2/256:  Song et al. (2021)'s code (data (255 x + u) / 256
                in [0, 1], then scaled to [-1, 1]):  offset log(1/w) = log 128, i.e. + 7 bits/dim

The constant belongs to the bin width: 127.5 goes with 2/255-wide bins, 128 with 2/256-wide ones.
Check: the uniform density on the dequantized support ([-1 - 1/255, 1 + 1/255]^D resp. [-1, 1)^D) has
nll = D log(512/255) resp. D log 2, and either pairing gives log2(256) = 8 bits/dim exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.rng import Noise

PIXEL_MAX = 255.0                              # 8-bit pixels p in {0, ..., 255}
BIN_WIDTH = 2.0 / PIXEL_MAX                    # the data grid's spacing in x = 2 p / 255 - 1

# bin width w in x-space per dequantization; "none" is continuous data (no bins, no offset)
DEQUANTIZATIONS: dict[str, float | None] = {"centered": 2.0 / 255.0, "song": 2.0 / 256.0, "none": None}


def check_dequantization(name: str) -> str:
    if name not in DEQUANTIZATIONS:
        raise DifflabError(f"unknown dequantization {name!r}; choose one of {', '.join(DEQUANTIZATIONS)}")
    return name


def nats_to_bpd(nats: Tensor, dims: int, bin_width: float | None = None) -> Tensor:
    """Bits/dim of a negative log-likelihood ``nats`` (any shape) over ``dims`` dimensions:

        bpd = (nats + D log(1/w)) / (D log 2)

    with w the dequantization bin width (see the module docstring); ``bin_width=None`` adds no offset,
    for a discrete probability (the ELBO's decoder) or a density of continuous data."""
    offset = 0.0 if bin_width is None else dims * math.log(1.0 / bin_width)
    return (nats + offset) / (dims * math.log(2.0))


def uniform_like(x: Tensor, noise: Noise) -> Tensor:
    """U[0, 1) draws shaped like x, as Phi(z) of the standard normals ``noise`` gives (exactly uniform),
    so per-sample noise sources (``PerSampleNoise``) keep each example's draws its own."""
    return torch.special.ndtr(noise.randn_like(x)).clamp(max=1.0 - torch.finfo(x.dtype).eps)


def dequantize(x0: Tensor, dequantization: str, noise: Noise) -> tuple[Tensor, float | None]:
    """Uniformly dequantized data y (B, ...) and the bin width w to pass to :func:`nats_to_bpd`.

    x0 (B, ...) holds data x = 2 p / 255 - 1; p need not be an integer (digits' 17 levels are used as is).
        centered:  y = x + (2/255) (u - 1/2)
        song:      y = 2 (p + u) / 256 - 1,   p = 255 (x + 1) / 2
        none:      y = x (continuous data)
    """
    w = DEQUANTIZATIONS[check_dequantization(dequantization)]
    if dequantization == "none":
        return x0, None
    u = uniform_like(x0, noise)
    if dequantization == "centered":
        return x0 + BIN_WIDTH * (u - 0.5), w
    p = 0.5 * PIXEL_MAX * (x0 + 1.0)
    return 2.0 * (p + u) / 256.0 - 1.0, w
