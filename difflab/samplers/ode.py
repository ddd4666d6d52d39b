"""Solvers of the probability-flow ODE, for diffusion and flow-matching models alike.

    dx/dt = u(x, t) = alpha'(t) x0_hat(x, t) + sigma'(t) eps_hat(x, t)         (Song et al. 2021, eq. 13)

On the flow path this is the flow-matching ODE dx/dt = eps_hat - x0_hat (Lipman et al. 2023). Each solver
integrates from ts[0] down the grid to t_min, then takes the denoising step x_0 = x0_hat(x, t_min).
With h = t - s > 0 the size of a step t -> s (time runs backwards):

  euler   x_s = x_t - h u(x_t, t)                                         1 NFE a step, order 1
  heun    Karras et al. 2022, Algorithm 1: Euler, then the trapezoid       2 NFE a step, order 2
  rk4     the classical Runge-Kutta method                                4 NFE a step, order 4
  dopri5  Dormand-Prince 5(4), adaptive, through torchdiffeq.odeint        NFE set by rtol, atol

On a grid of N times above 0: euler N NFE, heun 2N - 1, rk4 4N - 3 (the denoising step is one
evaluation and takes no correction); dopri5 uses only ts[0] and t_min (the last time above 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchdiffeq import odeint

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.process.base import as_time
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, StepInfo, check_grid, run_grid

DEFAULT_TOL = 1e-5


def velocity(model: Denoiser, x: Tensor, t: float, cond: Condition | None) -> Tensor:
    """u(x, t), the probability-flow ODE velocity. x: (B, ...)."""
    return model(x, as_time(t), cond).velocity


def sample_euler(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                 cond: Condition | None = None, callback: Callback | None = None) -> SampleResult:
    """Euler's method on the probability-flow ODE. x: (B, ...) at ts[0]; ``noise`` is not used."""

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        return x + (s - t) * pred.velocity                                  # x_s = x_t - h u(x_t, t)

    return run_grid(CountingDenoiser(denoiser), x, check_grid(ts), step, cond, callback)


def sample_heun(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                cond: Condition | None = None, callback: Callback | None = None) -> SampleResult:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1, deterministic). x: (B, ...) at ts[0]."""
    model = CountingDenoiser(denoiser)

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        d = pred.velocity                                                   # d_i = u(x_i, t_i)
        x_euler = x + (s - t) * d                                           # Euler step (Alg. 1, line 5)
        d_prime = velocity(model, x_euler, s, cond)                         # 2nd-order correction (lines 6-8)
        return x + (s - t) * 0.5 * (d + d_prime)

    return run_grid(model, x, check_grid(ts), step, cond, callback)


def sample_rk4(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
               cond: Condition | None = None, callback: Callback | None = None) -> SampleResult:
    """The classical 4th-order Runge-Kutta method on the probability-flow ODE. x: (B, ...) at ts[0]."""
    model = CountingDenoiser(denoiser)

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        dt, mid = s - t, 0.5 * (t + s)                                      # dt = -h
        k1 = pred.velocity
        k2 = velocity(model, x + 0.5 * dt * k1, mid, cond)
        k3 = velocity(model, x + 0.5 * dt * k2, mid, cond)
        k4 = velocity(model, x + dt * k3, s, cond)
        return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    return run_grid(model, x, check_grid(ts), step, cond, callback)


def sample_dopri5(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                  cond: Condition | None = None, callback: Callback | None = None, rtol: float = DEFAULT_TOL,
                  atol: float = DEFAULT_TOL) -> SampleResult:
    """Adaptive Dormand-Prince 5(4) (torchdiffeq.odeint) from ts[0] to t_min, then the denoising step.

    x: (B, ...). Only the ends of the grid matter. The step-size control measures the error over the
    whole batch (torchdiffeq's RMS norm), so unlike every other sampler here a sample depends slightly
    (within the tolerances) on the batch it is solved with. The callback sees every evaluation, with
    index = evaluation number, trial stages of rejected steps included.
    """
    for name, tol in (("--rtol", rtol), ("--atol", atol)):
        if not (tol > 0.0 and math.isfinite(tol)):
            raise DifflabError(f"{name} must be a finite number > 0, got {tol}")
    grid, model = check_grid(ts), CountingDenoiser(denoiser)
    t_end = grid[-2] if grid[-1] == 0.0 else grid[-1]                       # t_min: where the ODE stops

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        pred = model(y, as_time(t), cond)
        if callback is not None:
            callback(StepInfo(model.nfe - 1, float(t), y, pred.x0))
        return pred.velocity

    if t_end < grid[0]:
        span = torch.tensor([grid[0], t_end], dtype=torch.float64, device=x.device)
        # step_t: the last step ends exactly at t_min, so no stage is evaluated below it (where t < 0 the
        # VP path is undefined); by default torchdiffeq steps past the end and interpolates back.
        x = odeint(rhs, x, span, rtol=rtol, atol=atol, method="dopri5", options={"step_t": span[1:]})[-1]
    if grid[-1] == 0.0:
        x = model(x, as_time(t_end), cond).x0                               # the denoising step
    return SampleResult(x, model.nfe)
