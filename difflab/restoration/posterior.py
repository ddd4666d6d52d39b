"""The exact posterior p(x_0 | y) of Gaussian-mixture data under a linear measurement y = A x_0 + sigma_y n.

With x_0 ~ sum_k w_k N(mu_k, S_k) (S_k diagonal) and n ~ N(0, I), Bayes' rule for a linear-Gaussian model
(Bishop 2006, eq. 2.113 - 2.117, in gain form) gives a Gaussian mixture again:

    G_k = A S_k A^T + sigma_y^2 I,    K_k = S_k A^T G_k^{-1}
    m_k = mu_k + K_k (y - A mu_k),    C_k = S_k - K_k A S_k
    w'_k ∝ w_k N(y; A mu_k, G_k)

The gain form needs only G_k invertible, so it holds for a noiseless measurement (sigma_y = 0) too, once the
all-zero rows of A (the pixels an inpainting mask does not measure) and the matching entries of y are dropped.
Computed in float64 with dense matrices (D = C H W up to a few hundred): the reference that restoration
methods (DPS, RePaint, ...) run on the analytic mixture denoisers are tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from difflab.errors import DifflabError, one_line
from difflab.operators import Operator

if TYPE_CHECKING:                      # only a type here: restoration loads without the denoisers package
    from difflab.denoisers.mixture import GaussianMixtureDenoiser


@dataclass(frozen=True, eq=False)
class GaussianMixturePosterior:
    """sum_k weights_k N(means_k, covariances_k) on flattened images of ``example_shape`` (D = prod), float64.

    weights (K,), means (K, D), covariances (K, D, D) symmetric positive semi-definite: a noiseless measurement
    leaves C_k exactly singular in the measured directions. Samples use C_k = V diag(lambda) V^T (eigh) with
    the eigenvalues below D * eps * max(lambda) set to 0, so they reproduce a noiseless measurement to
    rounding (~1e-15) instead of the ~1e-8 that the square root of a rounding-level eigenvalue would leave.
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    example_shape: tuple[int, ...]
    _factors: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lam, V = torch.linalg.eigh(self.covariances)                            # (K, D), (K, D, D)
        D = self.means.shape[1]
        floor = D * torch.finfo(lam.dtype).eps * lam.abs().amax(-1, keepdim=True)
        lam = torch.where(lam > floor, lam, torch.zeros((), dtype=lam.dtype))
        object.__setattr__(self, "_factors", V * lam.sqrt()[:, None, :])      # F_k F_k^T = C_k  (K, D, D)

    @property
    def mean(self) -> Tensor:
        """E[x_0 | y] = sum_k w'_k m_k, (D,)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """Cov[x_0 | y] = sum_k w'_k (C_k + m_k m_k^T) - m m^T (law of total covariance), (D, D)."""
        d = self.means - self.mean
        return torch.einsum("k,kde->de", self.weights, self.covariances + d[:, :, None] * d[:, None, :])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws from p(x_0 | y), (n, *example_shape) float64: a component k ~ w', then m_k + F_k z."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nde,ne->nd", self._factors[k], z)
        return x.reshape(n, *self.example_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x_0 | y) (B,) in nats for x (B, *example_shape); needs every C_k positive definite (sigma_y > 0
        or a measurement that leaves no direction known exactly)."""
        L, info = torch.linalg.cholesky_ex(self.covariances)
        if info.any():
            raise DifflabError("this posterior is singular (a noiseless measurement fixes some directions) and has "
                               "no density; use sigma_y > 0 for log_prob")
        diff = x.reshape(x.shape[0], 1, -1).to(torch.float64) - self.means      # (B, K, D)
        z = torch.linalg.solve_triangular(L, diff.transpose(0, 1).transpose(1, 2), upper=False)  # (K, D, B)
        maha = (z**2).sum(1).T                                                  # (B, K)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)     # (K,)
        D = self.means.shape[1]
        logp = -0.5 * (maha + logdet + D * math.log(2 * math.pi)) + torch.log(self.weights)
        return torch.logsumexp(logp, dim=-1)


def mixture_posterior(mixture: GaussianMixtureDenoiser, operator: Operator, y: Tensor,
                      sigma_y: float) -> GaussianMixturePosterior:
    """p(x_0 | y) for the mixture's data, measured by ``operator`` with noise sigma_y >= 0.

    mixture: its example_shape must be an image (C, H, W) (a 2-D point set is the (1, 1, 2) image).
    y: ONE measurement, shaped like operator(x) for one image, with or without the leading 1 (e.g. (1, C, h, w)
    or (C, h, w)); its unmeasured (inpainting) entries are ignored. An operator with a mask per image uses
    its first: pass ``operator.rows(slice(i, i + 1))`` for image i.
    """
    shape = tuple(mixture.example_shape)
    if not sigma_y >= 0:
        raise DifflabError(f"sigma_y must be >= 0, got {sigma_y}")
    try:
        measured_shape = tuple(operator(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])
        A = operator.matrix(shape)                                              # (M, D)
    except (RuntimeError, ValueError, IndexError) as error:
        raise DifflabError(f"the {operator.name} operator does not fit images {shape}: {one_line(error)}") from None
    if tuple(y.shape) not in (measured_shape, (1, *measured_shape)):
        raise DifflabError(f"y of shape {tuple(y.shape)} is not one measurement of the {operator.name} operator on "
                           f"images {shape}; expected {measured_shape} or {(1, *measured_shape)}")
    rows = A.abs().sum(1) > 0                    # drop the unmeasured pixels: G_k stays invertible at sigma_y = 0
    A, yf = A[rows], y.reshape(-1).to(torch.float64).cpu()[rows]               # (M, D), (M,)
    M = A.shape[0]
    mu, s2, w = mixture.means, mixture.stds**2, mixture.weights                 # (K, D), (K, D), (K,)

    # G_k = A S_k A^T + sigma_y^2 I and its Cholesky factor.
    AS = A[None] * s2[:, None, :]                                               # A S_k  (K, M, D)
    G = AS @ A.T + sigma_y**2 * torch.eye(M, dtype=torch.float64)               # (K, M, M)
    L, info = torch.linalg.cholesky_ex(G)
    if info.any():
        raise DifflabError(f"A S A^T + sigma_y^2 I is singular for the {operator.name} operator at sigma_y = "
                           f"{sigma_y} (a measurement the prior cannot explain exactly); use sigma_y > 0")
    # K_k^T = G_k^{-1} A S_k;  m_k = mu_k + K_k r_k;  C_k = S_k - K_k A S_k.
    gain_t = torch.cholesky_solve(AS, L)                                        # (K, M, D)
    r = yf - mu @ A.T                                                           # y - A mu_k  (K, M)
    means = mu + torch.einsum("kmd,km->kd", gain_t, r)
    C = torch.diag_embed(s2) - gain_t.transpose(1, 2) @ AS                      # (K, D, D)
    C = 0.5 * (C + C.transpose(1, 2))

    # w'_k ∝ w_k N(y; A mu_k, G_k).
    z = torch.linalg.solve_triangular(L, r[..., None], upper=False)[..., 0]     # L_k^{-1} r_k  (K, M)
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    loglik = -0.5 * ((z**2).sum(-1) + logdet + M * math.log(2 * math.pi))
    weights = torch.softmax(torch.log(w) + loglik, dim=0)
    return GaussianMixturePosterior(weights, means, C, shape)
