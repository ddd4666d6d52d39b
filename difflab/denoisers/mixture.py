"""Closed-form "perfectly trained models": Gaussian-mixture data under any Gaussian path.

Data p_0 = sum_k w_k N(mu_k, diag(s_k^2)). Under x_t = alpha x_0 + sigma eps the marginal is

    p_t(x) = sum_k w_k N(x; alpha mu_k, diag(alpha^2 s_k^2 + sigma^2))

and the exact denoiser (Tweedie) is

    E[x_0 | x_t] = sum_k r_k(x_t) [mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k)]

with r_k the posterior responsibilities. A single Gaussian is the case K = 1. Computed in float64.

Classes: optionally component k belongs to class c_k (``classes``), so the data is labelled, p_0(x, y) =
sum_{k: c_k = y} w_k N(x; mu_k, diag(s_k^2)). Then everything classifier and classifier-free guidance need
has a closed form too:

    p(y | x_t)        = sum_{k: c_k = y} r_k(x_t)                       (Bayes: the class's responsibilities)
    E[x_0 | x_t, y]   = the sum above over k with c_k = y, r_k renormalised within the class
    grad log p_t(x | y) = grad log p_t(x) + grad log p(y | x_t)         (Dhariwal & Nichol 2021, sec. 4)

the last being what classifier guidance adds to an unconditional score, and exact here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.condition import NULL_LABEL, Condition, check_condition
from difflab.denoisers.base import Prediction
from difflab.process.base import GaussianProcess, as_time


class GaussianMixtureDenoiser:
    """Exact denoiser for a diagonal Gaussian mixture; data examples have shape ``example_shape``.

    means: (K, D); stds: (K, D) or (K,) or scalar; weights: (K,) (normalised here). D = prod(example_shape).
    classes: (K,) int64, the class of each component, covering 0 .. C-1 (None: unlabelled data). With classes,
    a condition's labels (B,) select the exact conditional denoiser E[x_0 | x_t, y] row by row (NULL_LABEL:
    the unconditional one); without, labels are refused like a network not built to read them.
    """

    def __init__(self, process: GaussianProcess, means: Tensor, stds: Tensor | float,
                 weights: Tensor | None = None, example_shape: tuple[int, ...] | None = None,
                 classes: Tensor | None = None) -> None:
        self.process = process
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim != 2:
            raise ValueError("means must be (K, D)")
        K, D = self.means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        self.stds = (stds.reshape(K, 1) if stds.ndim == 1 else stds).expand(K, D).clone()
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.example_shape = example_shape or (D,)
        if math.prod(self.example_shape) != D:
            raise ValueError(f"example_shape {self.example_shape} does not hold D = {D}")
        self.classes = None if classes is None else torch.as_tensor(classes)
        if self.classes is not None:
            if self.classes.shape != (K,) or self.classes.dtype != torch.int64:
                raise ValueError(f"classes must be ({K},) int64, got {tuple(self.classes.shape)} {self.classes.dtype}")
            if self.classes.min() < 0 or (torch.bincount(self.classes) == 0).any():
                raise ValueError(f"classes must cover 0 .. C-1, each with a component; got {self.classes.tolist()}")

    @classmethod
    def gaussian(cls, process: GaussianProcess, mean: float, std: float, example_shape: tuple[int, ...]) -> GaussianMixtureDenoiser:
        """Isotropic N(mean, std^2 I) data of the given shape."""
        D = math.prod(example_shape)
        return cls(process, torch.full((1, D), float(mean), dtype=torch.float64),
                   torch.full((1,), float(std), dtype=torch.float64), example_shape=example_shape)

    @property
    def num_classes(self) -> int | None:
        """C, or None for an unlabelled mixture."""
        return None if self.classes is None else int(self.classes.max()) + 1

    @property
    def class_weights(self) -> Tensor:
        """p(y) = sum_{k: c_k = y} w_k, (C,) float64."""
        return torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, self._require_classes(), self.weights)

    def of_class(self, label: int) -> GaussianMixtureDenoiser:
        """The unlabelled mixture of class ``label``'s components, p_0(x | y = label), weights renormalised."""
        keep = self._require_classes() == label
        if not keep.any():
            raise ValueError(f"no component has class {label}")
        return GaussianMixtureDenoiser(self.process, self.means[keep], self.stds[keep], self.weights[keep],
                                       self.example_shape)

    def _components(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Flattened x (B, D), alpha and sigma (B or 1, 1, 1), per-component marginal variance (B, K, D)
        and log responsibilities-before-normalisation (B, K)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        alpha, sigma = self.process.alpha_sigma(as_time(t, device=x.device))
        alpha, sigma = alpha.reshape(-1, 1, 1), sigma.reshape(-1, 1, 1)
        mu, s2 = self.means.to(x.device), self.stds.to(x.device) ** 2
        var = alpha**2 * s2 + sigma**2                                   # (B, K, D)
        diff = xf[:, None] - alpha * mu                                  # (B, K, D)
        logp = -0.5 * ((diff**2 / var) + torch.log(2 * math.pi * var)).sum(-1) + torch.log(self.weights.to(x.device))
        return xf, alpha, sigma, var, logp

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        """E[x_0 | x_t] (cond None or without labels) or E[x_0 | x_t, y] row by row (labels y; NULL_LABEL rows
        unconditional), as a Prediction; x (B, ...), t () or (B,)."""
        check_condition(cond, "Gaussian mixture", labels=self.classes is not None)
        xf, alpha, sigma, var, logp = self._components(x, t)
        if cond is not None and cond.labels is not None:
            if cond.labels.shape != x.shape[:1]:
                raise ValueError(f"labels {tuple(cond.labels.shape)} do not match the batch {tuple(x.shape[:1])}")
            # p(k | x_t, y) = r_k 1[c_k = y] / sum_{j: c_j = y} r_j: the softmax over the class's components only.
            logp = logp.masked_fill(~self._in_class(cond.labels, x.device), -math.inf)
        r = torch.softmax(logp, dim=-1)                                  # (B, K)
        mu, s2 = self.means.to(x.device), self.stds.to(x.device) ** 2
        x0_k = mu + alpha * s2 / var * (xf[:, None] - alpha * mu)        # E[x0 | x_t, k]  (B, K, D)
        x0 = (r[..., None] * x0_k).sum(1).reshape(x.shape).to(x.dtype)
        c = self.process.coefficients(as_time(t, device=x.device)).expand_as(x)
        eps = (x - c.alpha * x0) / c.sigma
        return Prediction(x0, eps, c)

    def log_prob(self, x: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """log p_t(x) (B,) in nats; t = 0 gives the data density (for t_min > 0 processes use t explicitly)."""
        *_, logp = self._components(x, t)
        return torch.logsumexp(logp, dim=-1)

    def class_log_probs(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Exact log p(y | x_t) (B, C) float64, differentiable in x (Bayes):

            log p(y | x_t) = logsumexp_{k: c_k = y} log(w_k p_t(x | k)) - logsumexp_k log(w_k p_t(x | k))
        """
        *_, logp = self._components(x, t)                                # (B, K)
        C = self.num_classes
        member = self._require_classes().to(x.device)[None] == torch.arange(C, device=x.device)[:, None]  # (C, K)
        per_class = torch.logsumexp(logp[:, None].masked_fill(~member, -math.inf), dim=-1)  # log p_t(x, y) (B, C)
        return per_class - torch.logsumexp(logp, dim=-1, keepdim=True)

    def sample(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        """n draws from the data distribution p_0, shaped (n, *example_shape), float64; with ``labels`` (n,),
        draw i from p_0(x | y = labels[i]) (its class's components, weights renormalised; NULL_LABEL: p_0)."""
        if labels is not None:
            if labels.shape != (n,):
                raise ValueError(f"labels must be ({n},), got {tuple(labels.shape)}")
            w = self.weights * self._in_class(labels, self.weights.device)   # (n, K); multinomial renormalises rows
            k = torch.multinomial(w, 1, generator=generator)[:, 0]
        else:
            k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * z).reshape(n, *self.example_shape)

    def _require_classes(self) -> Tensor:
        if self.classes is None:
            raise ValueError("this Gaussian mixture has no classes")
        return self.classes

    def _in_class(self, labels: Tensor, device: torch.device) -> Tensor:
        """(B, K) bool: component k may explain row b, i.e. c_k = labels[b] or labels[b] is NULL_LABEL."""
        classes = self._require_classes().to(device)
        labels = labels.to(device)
        if labels.ndim != 1 or ((labels < NULL_LABEL) | (labels >= self.num_classes)).any():
            raise ValueError(f"labels must be (B,) in [0, {self.num_classes}) or NULL_LABEL")
        return (labels[:, None] == NULL_LABEL) | (labels[:, None] == classes[None])


def bench_mixture(process: GaussianProcess, dim: int) -> GaussianMixtureDenoiser:
    """The mixture the sampler benchmark and tests use. 2-D: three anisotropic components of unequal weight;
    otherwise four components with means ~ N(0, 0.5^2 I) and per-coordinate stds in [0.2, 0.6] (seed 0)."""
    if dim == 2:
        means = torch.tensor([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]], dtype=torch.float64)
        stds = torch.tensor([[0.3, 0.15], [0.2, 0.2], [0.15, 0.4]], dtype=torch.float64)
        return GaussianMixtureDenoiser(process, means, stds, torch.tensor([0.5, 0.3, 0.2]))
    g = torch.Generator().manual_seed(0)
    means = 0.5 * torch.randn(4, dim, generator=g, dtype=torch.float64)
    stds = 0.2 + 0.4 * torch.rand(4, dim, generator=g, dtype=torch.float64)
    return GaussianMixtureDenoiser(process, means, stds, torch.tensor([0.4, 0.3, 0.2, 0.1]))


def class_mixture(process: GaussianProcess, dim: int, num_classes: int = 2,
                  per_class: int = 3) -> GaussianMixtureDenoiser:
    """Labelled data for tests and benchmarks of guidance: ``num_classes`` classes of ``per_class`` components
    each, told apart for certain at t = 0 but overlapping at t ~ 0.5, where p(y | x_t) is far from both 1/C
    and 1 (so guidance has work to do). Component k has class k mod num_classes and weight proportional to
    1 + k / K, so the classes are not equally likely (the prior p(y) matters).

    2-D: class y's components sit on a circle of radius 0.5 around the point at angle 2 pi y / C of the unit
    circle, with stds (0.25, 0.12) and (0.12, 0.25) in turn. Otherwise: means ~ N(0, 0.2^2 I) and
    per-coordinate stds in [0.2, 0.5] (seed 0).

    How much the classes overlap, as E[max_y p(y | x_t)] over x_t ~ p_t for the defaults (0.53 = always guess
    the likelier class, 1 = certain): 1.00 at t = 0 on every process; at t = 0.5, 2-D: 0.61 (vp), 0.88 (ve),
    0.81 (flow); 64-D: 0.58 (vp), 0.85 (ve), 0.76 (flow)."""
    if num_classes < 2 or per_class < 1:
        raise ValueError("class_mixture needs num_classes >= 2 and per_class >= 1")
    K = num_classes * per_class
    classes = torch.arange(K) % num_classes
    weights = 1 + torch.arange(K, dtype=torch.float64) / K
    if dim == 2:
        class_angle = 2 * math.pi * classes.to(torch.float64) / num_classes                 # (K,)
        angle = class_angle + 2 * math.pi * (torch.arange(K) // num_classes).to(torch.float64) / per_class
        means = (torch.stack([class_angle.cos(), class_angle.sin()], dim=-1)
                 + 0.5 * torch.stack([angle.cos(), angle.sin()], dim=-1))                  # (K, 2)
        stds = torch.tensor([[0.25, 0.12], [0.12, 0.25]], dtype=torch.float64)[torch.arange(K) % 2]
        return GaussianMixtureDenoiser(process, means, stds, weights, classes=classes)
    g = torch.Generator().manual_seed(0)
    means = 0.2 * torch.randn(K, dim, generator=g, dtype=torch.float64)
    stds = 0.2 + 0.3 * torch.rand(K, dim, generator=g, dtype=torch.float64)
    return GaussianMixtureDenoiser(process, means, stds, weights, classes=classes)
