"""Inception Score (Salimans et al. 2016): IS = exp(E_x KL(p(y|x) || p(y))), p(y) the marginal over x,
computed on each of several equal splits of the images; mean and std over splits are reported."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import DifflabError


def inception_score(probabilities: Tensor, splits: int) -> tuple[float, float]:
    """(mean, std) over ``splits`` contiguous splits of probabilities (N, K) (rows sum to 1) of

        exp( 1/n sum_i sum_y p(y|x_i) (log p(y|x_i) - log p(y)) ),   p(y) = 1/n sum_i p(y|x_i)

    std is over splits (ddof 0), as in the original code.
    """
    p = torch.as_tensor(probabilities, dtype=torch.float64)
    if p.dim() != 2 or not 1 <= splits <= len(p):
        raise DifflabError(f"IS needs probabilities (N, K) and 1 <= splits <= N; got shape {tuple(p.shape)} "
                           f"and {splits} splits")
    n = len(p)
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]              # (n_i, K)
        marginal = part.mean(dim=0, keepdim=True)                      # p(y), (1, K)
        # xlogy: 0 log 0 = 0, so one-hot predictions are exact.
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(dim=1)  # (n_i,)
        scores.append(torch.exp(kl.mean()))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))
