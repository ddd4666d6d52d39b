"""Gaussian log-densities, KL divergences and the discretized Gaussian decoder, elementwise.

All functions broadcast their arguments and return one value per element (the caller sums over
dimensions); variances, not log-variances, are passed. Work in float64: the decoder's bin
probabilities and the KL terms of a T = 1000 chain are small differences of large numbers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) in nats, elementwise:

        1/2 [log(var2 / var1) + (var1 + (mean1 - mean2)^2) / var2 - 1]
    """
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; mean, var) in nats, elementwise: -1/2 [(x - mean)^2 / var + log(2 pi var)]."""
    return -0.5 * ((x - mean) ** 2 / var + torch.log(var) + LOG_2PI)


def log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(d)) for d <= 0, accurate at both ends (Maechler 2012: expm1 near 0, log1p far from it)."""
    return torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a <= b, the log standard-normal mass of [a, b], without cancellation.

    In the right tail (a > 0) the mass is taken as Phi(-a) - Phi(-b), so both log-CDFs stay away from 0.
    """
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + log1mexp(log_lo - log_hi)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor,
                                        bin_width: float = 2.0 / 255.0) -> Tensor:
    """log P(x) in nats, elementwise, for data on a grid in [-1, 1] under N(mean, var) integrated over
    the data's bin (Ho et al. 2020, eq. 13):

        P(x) = int_{delta_-(x)}^{delta_+(x)} N(y; mean, var) dy,
        delta_+(x) = +inf if x = 1 else x + w/2,     delta_-(x) = -inf if x = -1 else x - w/2

    with w = ``bin_width`` (2/255 for 8-bit data x = 2 p / 255 - 1). The edge bins are open, so the
    probabilities of the 256 grid points sum to 1. A point counts as an edge when it lies within w/2 of +-1.
    """
    half, std = 0.5 * bin_width, var.sqrt()
    a = (x - half - mean) / std                                     # lower bin edge, standardised
    b = (x + half - mean) / std                                     # upper bin edge, standardised
    inf = torch.full_like(a, math.inf)
    a = torch.where(x < -1.0 + half, -inf, a)                       # first bin: (-inf, -1 + w/2]
    b = torch.where(x > 1.0 - half, inf, b)                         # last bin: [1 - w/2, inf)
    return log_normal_interval(a, b)
