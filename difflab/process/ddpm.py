"""The discrete DDPM forward process (Ho et al. 2020) as a Gaussian path on t in [0, 1].

Step i in {0, ..., T} sits at t = i / T, with alpha_bar_0 = 1 and alpha_bar_i = prod_{j<=i} (1 - beta_j):

    q(x_i | x_0) = N(sqrt(alpha_bar_i) x_0, (1 - alpha_bar_i) I)                     (Ho et al., eq. 4)

Between grid points, log alpha_bar is interpolated linearly in t, so continuous-time samplers
(ODE solvers, any time grid) can query a DDPM model; on the grid the tables are exact, and alpha'(t), constant on
each cell, is the one of the cell below (the one a sampler stepping toward the data steps through).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, PathCoefficients, as_time, expand_to
from difflab.process.schedules import SCHEDULES, make_betas


class DDPMProcess(GaussianProcess):
    """Discrete DDPM with T steps and a named beta schedule."""

    name = "ddpm"
    OPTION_HELP = {"schedule": "DDPM beta schedule", "T": "number of DDPM steps",
                   "beta_start": "beta_1 of the linear and scaled-linear schedules (stated for T = 1000, rescaled "
                                 "by 1000/T)",
                   "beta_end": "beta_T of the linear and scaled-linear schedules (stated for T = 1000, rescaled "
                               "by 1000/T)",
                   "cosine_s": "offset s of the cosine schedule", "max_beta": "largest beta of the cosine and "
                   "linear-alpha-bar schedules"}
    OPTION_CHOICES = {"schedule": SCHEDULES}

    def __init__(self, schedule: str = "linear", T: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, cosine_s: float = 0.008, max_beta: float = 0.999) -> None:
        self.schedule, self.T = schedule, T
        if not (isinstance(T, int) and T >= 2):
            raise DifflabError(f"--T must be at least 2, got {T}")
        linear = schedule in ("linear", "scaled-linear")
        if linear and not (0 < beta_start <= beta_end and 1000.0 / max(T, 1) * beta_end < 1):
            raise DifflabError(f"the {schedule} schedule needs 0 < --beta-start <= --beta-end and beta_end * 1000 / T "
                               f"< 1, got {beta_start}, {beta_end} with T = {T}")
        if not (cosine_s >= 0 and 0 < max_beta < 1):
            raise DifflabError(f"--cosine-s must be >= 0 and --max-beta in (0, 1), got {cosine_s}, {max_beta}")
        self._args = dict(beta_start=beta_start, beta_end=beta_end, cosine_s=cosine_s, max_beta=max_beta)
        self.betas = make_betas(schedule, T, **self._args)  # (T,) beta_1..beta_T
        self.alphas = 1.0 - self.betas
        # (T + 1,) alpha_bar_0 = 1, alpha_bar_i = prod_{j <= i} alpha_j
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(self.alphas, 0)])
        self._log_alpha_bar = torch.log(self.alpha_bar)
        self.t_min = 1.0 / T
        self.discrete_steps = T

    def config(self) -> dict:
        return {"name": self.name, "schedule": self.schedule, "T": self.T, **self._args}

    # --- the discrete tables -------------------------------------------------------------------
    def index(self, t: Tensor) -> Tensor:
        """The step index i = round(t T) (int64) of grid times t."""
        return torch.round(as_time(t) * self.T).long()

    def times(self, i: Tensor) -> Tensor:
        """Grid times t = i / T (float64) for integer steps i."""
        return torch.as_tensor(i, dtype=torch.float64) / self.T

    def posterior_table(self, i: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Coefficients of q(x_{i-1} | x_i, x_0) for steps i >= 1 (Ho et al., eq. 7):

            mean = coef_x0 * x_0 + coef_xt * x_i
            coef_x0 = sqrt(alpha_bar_{i-1}) beta_i / (1 - alpha_bar_i)
            coef_xt = sqrt(alpha_i) (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i)
            beta_tilde_i = (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i) beta_i
        Returns (coef_x0, coef_xt, beta_tilde), each shaped like i.
        """
        ab, ab_prev, beta = self.alpha_bar[i], self.alpha_bar[i - 1], self.betas[i - 1]
        coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
        coef_xt = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
        return coef_x0, coef_xt, (1 - ab_prev) / (1 - ab) * beta

    def posterior_step(self, x_t: Tensor, x0: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (B, ...) and variance (B,) of q(x_{i-1} | x_i, x_0) from the tables."""
        coef_x0, coef_xt, var = self.posterior_table(i)
        return expand_to(coef_x0, x_t) * x0 + expand_to(coef_xt, x_t) * x_t, var

    def snap_times(self, ts: Tensor) -> Tensor:
        """Round increasing times to steps i/T, i >= 1, nudging collisions up so they stay distinct
        (and the top down from T where needed)."""
        if len(ts) > self.T:
            raise DifflabError(f"--steps {len(ts)} exceeds the process's T = {self.T}")
        idx = torch.round(as_time(ts) * self.T).long().clamp(1, self.T).tolist()
        for k in range(1, len(idx)):
            idx[k] = max(idx[k], idx[k - 1] + 1)
        idx[-1] = min(idx[-1], self.T)                 # the nudges may have pushed the top past T
        for k in range(len(idx) - 2, -1, -1):
            idx[k] = min(idx[k], idx[k + 1] - 1)
        return torch.tensor(idx, dtype=torch.float64) / self.T

    # --- the continuous path ---------------------------------------------------------------------
    def time_at_log_snr(self, log_snr: Tensor, iters: int = 64) -> Tensor:
        """Exact inverse of lambda(t) on the interpolated path: alpha_bar = sigmoid(lambda), so
        log alpha_bar = -softplus(-lambda), found in its cell of the (decreasing) log alpha_bar table."""
        lam = as_time(log_snr)
        log_ab = -torch.nn.functional.softplus(-lam)
        table = self._log_alpha_bar.to(lam.device)
        # index of the cell [i, i + 1] with table[i] >= log_ab >= table[i + 1]; searchsorted needs increasing
        i = (self.T - torch.searchsorted(table.flip(0).contiguous(), log_ab.contiguous())).clamp(0, self.T - 1)
        lo, hi = table[i], table[i + 1]
        w = ((log_ab - lo) / (hi - lo)).clamp(0, 1)
        return (i + w) / self.T

    def coefficients(self, t: Tensor) -> PathCoefficients:
        t = as_time(t)
        u = t * self.T
        near = torch.round(u)
        u = torch.where((u - near).abs() < 1e-6, near, u)  # exact table values on the grid
        # the cell [i0, i0 + 1] holding t; at a grid point i/T the cell below, [i - 1, i]: samplers step down in t,
        # and a step's first stage must take alpha' of the cell it steps through (the one above capped every ODE
        # solver at first order on this process)
        i0 = (torch.ceil(u) - 1).clamp(0, self.T - 1).long()
        w = u - i0
        table = self._log_alpha_bar.to(t.device)
        lo, hi = table[i0], table[i0 + 1]
        log_ab = torch.where(w == 1, hi, lo + w * (hi - lo))
        d_log_ab = (hi - lo) * self.T  # piecewise constant derivative of log alpha_bar in t
        alpha_bar = torch.exp(log_ab)
        alpha = alpha_bar.sqrt()
        sigma = (1 - alpha_bar).clamp_min(0).sqrt()
        d_alpha = 0.5 * alpha * d_log_ab
        d_sigma = -0.5 * alpha_bar * d_log_ab / sigma.clamp_min(1e-12)
        return PathCoefficients(alpha, sigma, d_alpha, d_sigma)
