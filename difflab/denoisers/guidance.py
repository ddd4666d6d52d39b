"""Guidance: denoisers that steer a model toward a condition, each a Denoiser itself (so every sampler takes it).

Classifier-free guidance (Ho & Salimans 2022, eq. 6), with w the guidance scale:

    eps_w = eps(x_t, null) + w (eps(x_t, c) - eps(x_t, null)) = w eps(x_t, c) + (1 - w) eps(x_t, null)

Every target (x0, eps, v, score, velocity) is affine in (x0, eps) at a fixed x_t with the same coefficients,
so combining x0 and eps this way is the same guidance in every target, and every sampler sees it. w = 1 is
the conditional model, w = 0 the unconditional one; w > 1 trades diversity for fidelity. Optionally only
inside a time interval (Kynkaenniemi et al. 2024: guidance at the highest noise levels costs diversity and
buys little); outside it the conditional model runs alone.

Classifier guidance (Dhariwal & Nichol 2021, sec. 4; Song et al. 2021, eq. 14), with s the classifier scale:

    grad log p_s(x_t | y) = grad log p(x_t) + s grad_x log p_phi(y | x_t, t)

In the denoiser's terms the score shift d = s grad_x log p(y | x_t) is eps -> eps - sigma d and, by Tweedie
(x0_hat = (x_t + sigma^2 score) / alpha), x0 -> x0 + sigma^2 / alpha d; x_t = alpha x0 + sigma eps still holds.
Where alpha = 0 (the flow path's pure-noise end) x_t carries no information about y, the exact gradient
is 0, and nothing is shifted.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.parameterization import predict
from difflab.process.base import GaussianProcess, as_time, expand_to


class ClassifierFreeGuidance:
    """w D(x_t, c) + (1 - w) D(x_t, null), both branches in ONE batched call of ``inner`` (2B rows).

    ``interval`` (t_lo, t_hi): guide only at times t_lo <= t <= t_hi; elsewhere the conditional branch alone.
    Where the scale is exactly 1 (0) only the conditional (unconditional) branch runs: bit for bit that denoiser.
    """

    def __init__(self, inner: Denoiser, scale: float, interval: tuple[float, float] | None = None) -> None:
        if interval is not None and not interval[0] <= interval[1]:
            raise DifflabError(f"the guidance interval must have t_lo <= t_hi, got {interval}")
        self.inner, self.process, self.scale, self.interval = inner, inner.process, float(scale), interval

    def scales(self, t: Tensor) -> Tensor:
        """The guidance scale at times t (() or (B,) float64): ``scale`` inside the interval, else 1."""
        w = torch.full_like(t, self.scale)
        if self.interval is None:
            return w
        inside = (t >= self.interval[0]) & (t <= self.interval[1])
        return torch.where(inside, w, torch.ones_like(w))

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        if cond is None or cond.batch_size is None:
            raise DifflabError("classifier-free guidance needs a condition (a label or a prompt) for each sample")
        t = as_time(t, device=x.device)
        w = self.scales(t)
        if bool((w == 1).all()):
            return self.inner(x, t, cond)
        if bool((w == 0).all()):
            return self.inner(x, t, cond.null_like())
        B = x.shape[0]
        both = self.inner(torch.cat([x, x]), t if t.ndim == 0 else torch.cat([t, t]),
                          Condition.cat([cond, cond.null_like()]))                 # rows: B conditional, B null
        w = expand_to(w, x)
        x0 = w * both.x0[:B] + (1 - w) * both.x0[B:]                               # Ho & Salimans 2022, eq. 6
        eps = w * both.eps[:B] + (1 - w) * both.eps[B:]
        # a learned variance is the conditional branch's (GLIDE, Nichol et al. 2022)
        v = None if both.variance_v is None else both.variance_v[:B]
        return Prediction(x0, eps, self.process.coefficients(t).expand_as(x), v)


class ClassProbabilities(Protocol):
    """log p(y | x_t) for every class: x (B, ...), t () or (B,) float64 -> (B, K). Differentiable in x."""

    def class_log_probs(self, x: Tensor, t: Tensor) -> Tensor: ...


class NetworkClassifier:
    """A noise-aware classifier network (trained with objectives.classifier_loss on ``process``) read as
    log p_phi(y | x_t, t) = log_softmax(f(x_t / sqrt(alpha^2 + sigma^2), noise level))."""

    def __init__(self, network: nn.Module, process: GaussianProcess) -> None:
        self.network, self.process = network, process

    def class_log_probs(self, x: Tensor, t: Tensor) -> Tensor:
        t = as_time(t, device=x.device)
        c = self.process.coefficients(t).expand_as(x)
        return torch.log_softmax(predict(self.network, x, t, c, self.process).to(x.dtype), dim=-1)


class ClassifierGuidance:
    """``inner``'s score shifted by s grad_x log p(y | x_t) (see the module docstring), y = cond.labels.

    ``inner_reads_labels``: pass the labels on to ``inner`` (a conditional model); an unconditional model gets
    the condition without them (the original use: steering an unconditional model with a classifier).
    """

    def __init__(self, inner: Denoiser, classifier: ClassProbabilities, scale: float,
                 inner_reads_labels: bool = False) -> None:
        self.inner, self.process, self.classifier = inner, inner.process, classifier
        self.scale, self.inner_reads_labels = float(scale), inner_reads_labels

    def gradient(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        """grad_x log p(y | x_t) (B, ...), under autograd even inside a sampler's no_grad."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            log_p = self.classifier.class_log_probs(xg, t)                       # (B, K)
            chosen = log_p.gather(1, labels.to(log_p.device)[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, xg)
        return grad

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        if cond is None or cond.labels is None:
            raise DifflabError("classifier guidance needs a class label for each sample")
        t = as_time(t, device=x.device)
        pred = self.inner(x, t, cond if self.inner_reads_labels else cond.without_labels())
        if self.scale == 0:
            return pred
        return score_shifted(pred, self.scale * self.gradient(x, t, cond.labels))   # s grad_x log p(y | x_t)


def score_shifted(pred: Prediction, d: Tensor) -> Prediction:
    """The prediction whose score is pred.score + d (d (B, ...)): eps - sigma d and, by Tweedie,
    x0 + sigma^2 / alpha d, so x_t = alpha x0 + sigma eps still holds. Where alpha = 0 (or d is not finite,
    e.g. a weight that is infinite there) nothing is shifted: x_t carries no information to steer by."""
    c = pred.coeffs
    shift = (c.alpha > 0) & torch.isfinite(d)
    d = torch.where(shift, d, torch.zeros_like(d))
    safe_alpha = torch.where(c.alpha > 0, c.alpha, torch.ones_like(c.alpha))
    return Prediction(pred.x0 + c.sigma**2 / safe_alpha * d, pred.eps - c.sigma * d, c, pred.variance_v)
