"""Time grids t_N = t_max > ... > t_1 = t_min > t_0 = 0 for samplers (decreasing float64 tensors).

The last step onto t = 0 is the denoising step (x0 prediction). On a discrete process (DDPM) the
times are snapped to its steps i / T.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.process import DDPMProcess, GaussianProcess

SPACINGS = ("uniform", "quadratic")


def unit_grid(steps: int, spacing: str) -> Tensor:
    """u_1..u_steps in [0, 1], increasing, u_1 = 0, u_steps = 1 (a single step gives [1])."""
    u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.ones(1, dtype=torch.float64)
    if spacing == "uniform":
        return u
    if spacing == "quadratic":   # DDIM's quadratic spacing: dense near the data (Song et al. 2021, App. D.2)
        return u**2
    raise DifflabError(f"unknown time spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")


def time_grid(process: GaussianProcess, steps: int, spacing: str = "uniform", t_min: float | None = None) -> Tensor:
    """(steps + 1,) decreasing times from process.t_max down to t_min, then 0."""
    if steps < 1:
        raise DifflabError(f"--steps must be at least 1, got {steps}")
    t_min = process.t_min if t_min is None else t_min
    if not 0.0 < t_min < process.t_max:
        raise DifflabError(f"t_min must lie in (0, {process.t_max}), got {t_min}")
    ts = t_min + (process.t_max - t_min) * unit_grid(steps, spacing)
    if isinstance(process, DDPMProcess):
        if steps > process.T:
            raise DifflabError(f"--steps {steps} exceeds the process's T = {process.T}")
        ts = snap_to_steps(ts, process.T)
    return torch.cat([ts.flip(0), torch.zeros(1, dtype=torch.float64)])


def snap_to_steps(ts: Tensor, T: int) -> Tensor:
    """Round increasing times to steps i/T, i >= 1, nudging collisions up so they stay distinct."""
    idx = torch.round(ts * T).long().clamp(1, T).tolist()
    for k in range(1, len(idx)):
        idx[k] = max(idx[k], idx[k - 1] + 1)
    for k in range(len(idx) - 2, -1, -1):     # keep the top at T, pushing down where needed
        idx[k] = min(idx[k], idx[k + 1] - 1)
    return torch.tensor(idx, dtype=torch.float64) / T
