"""A trained network read through its process as a Denoiser."""

from __future__ import annotations

from torch import Tensor, nn

from difflab.condition import Condition
from difflab.denoisers.base import Prediction
from difflab.parameterization import check_target, predict, split_variance, to_x0_eps
from difflab.process.base import GaussianProcess, as_time


class NetworkDenoiser:
    """A network that predicts ``target``, read through its process as a Denoiser.

    x may be float64 (the sampling loop); the network runs in its own dtype and its output is cast back.
    Gradients flow (the ODE likelihood differentiates through it); samplers' callers turn them off.
    With ``learn_variance`` the network outputs twice x's channels: the target, then Nichol & Dhariwal's
    variance output r, read as v = (r + 1) / 2 (their code's "learned range": r = +-1 are beta and beta-tilde).
    """

    def __init__(self, network: nn.Module, process: GaussianProcess, target: str = "eps",
                 learn_variance: bool = False) -> None:
        self.network, self.process, self.target = network, process, check_target(target)
        self.learn_variance = learn_variance

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        t = as_time(t, device=x.device)                                   # () or (B,) float64
        c = self.process.coefficients(t).expand_as(x)
        out = predict(self.network, x, t, c, self.process, cond, self.target).to(x.dtype)
        v = None
        if self.learn_variance:
            out, v = split_variance(out)
        x0, eps = to_x0_eps(self.target, out, x, c)
        return Prediction(x0, eps, c, v)

