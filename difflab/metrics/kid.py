"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", eq. 3 with the cubic kernel).

KID is the unbiased estimate of the squared MMD with the polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets of m feature vectors from each set; its spread over subsets is reported too.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from difflab.errors import DifflabError
from difflab.metrics.blas import blas_threads_for


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for x (M, D), y (L, D) -> (M, L)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples x (m, D) and y (m, D), m >= 2:

        1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)]  -  2/m^2 sum_{i, j} k(x_i, y_j)
    """
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kernel_inception_distance(generated: Tensor | np.ndarray, reference: Tensor | np.ndarray, n_subsets: int,
                              subset_size: int, rng: np.random.Generator) -> tuple[float, float]:
    """(mean, std) of mmd2_unbiased over n_subsets pairs of subsets of ``subset_size`` vectors, each drawn
    without replacement from generated (N_g, D) and reference (N_r, D); std is over subsets (ddof 0)."""
    if subset_size < 2 or subset_size > min(len(generated), len(reference)) or n_subsets < 1:
        raise DifflabError(f"KID needs 2 <= subset size <= the number of images in each set and >= 1 subset; got "
                           f"subset size {subset_size}, {n_subsets} subsets, sets of {len(generated)} and "
                           f"{len(reference)}")
    g, r = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
    with blas_threads_for(g.shape[1]):
        values = [mmd2_unbiased(g[rng.choice(len(g), subset_size, replace=False)],
                                r[rng.choice(len(r), subset_size, replace=False)]) for _ in range(n_subsets)]
    return float(np.mean(values)), float(np.std(values))
