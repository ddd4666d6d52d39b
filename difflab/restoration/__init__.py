"""Restoration and editing with a trained model: measurement operators of inverse problems (inpainting,
super-resolution, deblurring, denoising) and the exact posterior of Gaussian-mixture data under them.

    operators.py   y = A(x) + sigma_y n: the operators, their adjoints and matrices, trivial baselines
    posterior.py   p(x_0 | y) of Gaussian-mixture data in closed form: the reference restorations are tested against
"""

from difflab.restoration.operators import TASKS, Operator, build_operator
from difflab.restoration.posterior import GaussianMixturePosterior, mixture_posterior

__all__ = ["GaussianMixturePosterior", "Operator", "TASKS", "build_operator", "mixture_posterior"]
