"""Flow matching / rectified flow: the straight path between data (t = 0) and noise (t = 1).

    x_t = (1 - t) x_0 + t eps,     velocity dx_t/dt = eps - x_0          (Lipman et al. 2023; Liu et al. 2023)

In difflab's convention (t = 0 data) this is alpha = 1 - t, sigma = t. Papers that put data at t = 1
use s = 1 - t: convert at the edge, never inside the code base.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, PathCoefficients, as_time


class FlowProcess(GaussianProcess):
    """The linear (rectified-flow) path. ``t_max`` < 1 keeps alpha > 0, which eps- and score-models need
    (at t = 1 an eps prediction says nothing about x_0)."""

    name = "flow"
    is_interpolant = True
    OPTION_HELP = {"t_min": "smallest time a model is trained on and sampled at",
                   "t_max": "largest time of the path (1: pure noise; eps and score targets need alpha > 0, "
                            "so their runs default to 0.999)"}

    def __init__(self, t_min: float = 1e-3, t_max: float = 1.0) -> None:
        if not 0 < t_min < t_max <= 1:
            raise DifflabError(f"the flow path needs 0 < t_min < t_max <= 1 (--t-min, --t-max), got {t_min}, {t_max}")
        self.t_min, self.t_max = t_min, t_max

    def config(self) -> dict:
        return {"name": self.name, "t_min": self.t_min, "t_max": self.t_max}

    def coefficients(self, t: Tensor) -> PathCoefficients:
        t = as_time(t)
        return PathCoefficients(1 - t, t.clone(), -torch.ones_like(t), torch.ones_like(t))
