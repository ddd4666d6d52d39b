"""Time grids t_N = t_max > ... > t_1 = t_min > t_0 = 0 for samplers (decreasing float64 tensors).

Spacings of the N points between t_min and t_max:
  uniform    evenly in t
  quadratic  evenly in sqrt(t - t_min): dense near the data (DDIM, Song et al. 2021, App. D.2)
  karras     evenly in s^(1/rho), s = sigma/alpha the noise-to-signal ratio, rho = 7 (Karras et al. 2022, eq. 5)
  logsnr     evenly in lambda = log(alpha^2 / sigma^2) (Lu et al. 2022, DPM-Solver)
The last step onto t = 0 is the denoising step (x0 prediction). The process snaps the times onto those it is
defined at (a discrete process: its steps i / T). Times are built in float64 from the float ends throughout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, as_time

SPACINGS = ("uniform", "quadratic", "karras", "logsnr")
KARRAS_RHO = 7.0
# Where t_max has alpha = 0 (flow at t = 1), lambda = -inf; its spacing then runs from s = 80 (EDM's sigma_max).
S_MAX_FOR_INFINITE = 80.0


def time_grid(process: GaussianProcess, steps: int, spacing: str = "uniform", t_min: float | None = None,
              rho: float = KARRAS_RHO, t_max: float | None = None) -> Tensor:
    """(steps + 1,) decreasing times from t_max (default: the process's; lower for SDEdit, which starts from a
    partly noised image) down to t_min, then 0."""
    if steps < 1:
        raise DifflabError(f"--steps must be at least 1, got {steps}")
    if spacing not in SPACINGS:
        raise DifflabError(f"unknown time spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    t_min = process.t_min if t_min is None else t_min
    t_max = process.t_max if t_max is None else t_max
    if not 0.0 < t_max <= process.t_max:
        raise DifflabError(f"the grid's first time must lie in (0, {process.t_max}], got {t_max}")
    if not 0.0 < t_min < t_max:
        raise DifflabError(f"--t-min must lie in (0, {t_max}), got {t_min}")
    ts = process.snap_times(increasing_times(process, steps, spacing, t_min, rho, t_max))
    return torch.cat([ts.flip(0), torch.zeros(1, dtype=torch.float64)])


def increasing_times(process: GaussianProcess, steps: int, spacing: str, t_min: float, rho: float,
                     t_max: float | None = None) -> Tensor:
    """(steps,) times from t_min up to t_max (default the process's; a single step gives [t_max])."""
    t_max = process.t_max if t_max is None else t_max
    if steps == 1:
        return torch.tensor([t_max], dtype=torch.float64)
    u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    if spacing == "uniform":
        return t_min + (t_max - t_min) * u
    if spacing == "quadratic":
        return t_min + (t_max - t_min) * u**2
    lam_hi = float(process.log_snr(as_time(t_min)))
    lam_lo = float(process.log_snr(as_time(t_max)))
    if not math.isfinite(lam_lo):
        lam_lo = -2 * math.log(S_MAX_FOR_INFINITE)
    if spacing == "karras":                           # s = exp(-lambda / 2), evenly in s^(1/rho)
        s_min, s_max = math.exp(-lam_hi / 2), math.exp(-lam_lo / 2)
        s = (s_min ** (1 / rho) + u * (s_max ** (1 / rho) - s_min ** (1 / rho))) ** rho
        lam = -2 * torch.log(s)
    else:                                             # logsnr
        lam = lam_hi + u * (lam_lo - lam_hi)
    ts = process.time_at_log_snr(lam)
    ts[0], ts[-1] = t_min, t_max                      # exact ends
    return ts
