"""Restoration and editing with a trained model: measurement operators of inverse problems (inpainting,
super-resolution, deblurring, denoising) and the exact posterior of Gaussian-mixture data under them.

    operators.py   y = A(x) + sigma_y n: the operators, their adjoints and matrices, trivial baselines
"""

from difflab.restoration.operators import TASKS, Operator, build_operator

__all__ = ["Operator", "TASKS", "build_operator"]
