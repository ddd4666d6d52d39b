"""Clamping x0 predictions to the data's range, as DDPM sampling does for pixels."""

from __future__ import annotations

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.parameterization import to_x0_eps


class ClippedDenoiser:
    """Clamp x0_hat to [lo, hi] and recompute eps_hat from it. Use it only for data with a known range
    (``DataSpec.clip_range``): pixels, not latents or points."""

    def __init__(self, inner: Denoiser, lo: float = -1.0, hi: float = 1.0) -> None:
        self.inner, self.process, self.lo, self.hi = inner, inner.process, lo, hi

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        p = self.inner(x, t, cond)
        x0 = p.x0.clamp(self.lo, self.hi)
        return Prediction(*to_x0_eps("x0", x0, x, p.coeffs), p.coeffs, p.variance_v)
