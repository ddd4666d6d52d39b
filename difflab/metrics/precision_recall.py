"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models", eq. 1-3).

The manifold of a feature set is the union of balls around its points, each with the radius of the
point's k-th nearest neighbour in the set (k = 3). Precision is the fraction of generated points inside
the reference manifold; recall is the fraction of reference points inside the generated manifold.
Distances are computed a block of rows at a time, so memory stays near ``max_elements`` numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import DifflabError

DEFAULT_K = 3
MAX_ELEMENTS = 2 ** 24  # pairwise distances held at once (128 MiB in float64)


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_j||^2 for a (M, D), b (L, D) -> (M, L), float64, clamped at 0."""
    a, b = a.double(), b.double()
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min_(0)


def _rows_per_block(n_columns: int, max_elements: int) -> int:
    return max(1, max_elements // max(1, n_columns))


def knn_radii(points: Tensor, k: int, max_elements: int = MAX_ELEMENTS) -> Tensor:
    """Squared distance from each of points (N, D) to its k-th nearest other point -> (N,) float64."""
    if not 1 <= k < len(points):
        raise DifflabError(f"k-nearest-neighbour radii need 1 <= k < number of points; got k = {k} and "
                           f"{len(points)} points")
    radii = []
    for block in points.split(_rows_per_block(len(points), max_elements)):
        d2 = squared_distances(block, points)                                  # (B, N)
        radii.append(d2.topk(k + 1, dim=1, largest=False).values[:, -1])       # k+1: the point itself is 0
    return torch.cat(radii)


def manifold_coverage(manifold: Tensor, radii: Tensor, queries: Tensor, max_elements: int = MAX_ELEMENTS) -> float:
    """Fraction of queries (Q, D) inside some ball ||q - m_j||^2 <= radii_j around manifold (N, D) (eq. 1-2)."""
    inside = [(squared_distances(block, manifold) <= radii[None, :]).any(dim=1)
              for block in queries.split(_rows_per_block(len(manifold), max_elements))]
    return torch.cat(inside).double().mean().item()


def precision_recall(reference: Tensor, generated: Tensor, k: int = DEFAULT_K,
                     max_elements: int = MAX_ELEMENTS) -> tuple[float, float]:
    """(precision, recall) of generated (N_g, D) against reference (N_r, D) features (eq. 3)."""
    precision = manifold_coverage(reference, knn_radii(reference, k, max_elements), generated, max_elements)
    recall = manifold_coverage(generated, knn_radii(generated, k, max_elements), reference, max_elements)
    return precision, recall
