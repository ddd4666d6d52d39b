"""What every sampler shares: the result type, the per-step callback record and NFE counting.

A sampler is a stateless function

    sampler(denoiser, x, ts, *, noise=None, cond=None, callback=None, **options) -> SampleResult

where x (B, ...) is the starting noise at time ts[0] (already scaled by the prior std) and ts is a
decreasing float64 time grid ending at 0. The step onto t = 0 returns the denoiser's x0 prediction
(the denoising step); a grid that stops above 0 returns the state at its last time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.process.base import as_time


@dataclass(frozen=True)
class StepInfo:
    """Handed to a sampler's callback at each step: the state x_t at time t (before the step) and the x0 prediction made there."""

    index: int
    t: float
    x: Tensor
    x0: Tensor


Callback = Callable[[StepInfo], None]


@dataclass(frozen=True)
class SampleResult:
    x: Tensor   # (B, ...) the samples
    nfe: int    # denoiser evaluations used


class CountingDenoiser:
    """Wraps a denoiser and counts its evaluations (NFE); ``on_call`` (e.g. a progress bar's update) runs at each."""

    def __init__(self, inner: Denoiser, on_call: Callable[[], object] | None = None) -> None:
        self.inner, self.process, self.nfe, self.on_call = inner, inner.process, 0, on_call

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        self.nfe += 1
        if self.on_call is not None:
            self.on_call()
        return self.inner(x, t, cond)


def check_grid(ts: Tensor) -> list[float]:
    """The grid as Python floats; it must be strictly decreasing with at least two points."""
    grid = [float(t) for t in ts]
    if len(grid) < 2 or any(b >= a for a, b in zip(grid, grid[1:])):
        raise DifflabError("the time grid must be strictly decreasing with at least 2 points")
    return grid


def require_noise(noise: object, sampler: str) -> None:
    if noise is None:
        raise DifflabError(f"sampler {sampler!r} is stochastic: pass noise= (e.g. PerSampleNoise(seeds))")


Step = Callable[[Tensor, Prediction, float, float], Tensor]   # (x_t, prediction at (x_t, t), t, s) -> x_s


def run_grid(model: CountingDenoiser, x: Tensor, grid: list[float], step: Step, cond: Condition | None = None,
             callback: Callback | None = None) -> SampleResult:
    """The loop every grid sampler shares. At each (t, s) of the grid: evaluate the model at (x_t, t),
    report StepInfo(k, t, x_t, x0_hat), then x_s = step(x_t, prediction, t, s); the step onto s = 0 is the
    denoising step x_0 = x0_hat. x: (B, ...). ``step`` may evaluate ``model`` again (Heun, RK4, correctors)."""
    for k, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        pred = model(x, as_time(t), cond)
        if callback is not None:
            callback(StepInfo(k, t, x, pred.x0))
        x = pred.x0 if s == 0.0 else step(x, pred, t, s)
    return SampleResult(x, model.nfe)
