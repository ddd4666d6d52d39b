"""Named conversions between the five prediction targets, for any Gaussian path.

With x_t = alpha x_0 + sigma eps, a network may predict
    eps       the noise
    x0        the clean image (Tweedie: x0_hat = (x_t - sigma eps_hat) / alpha)
    v         alpha eps - sigma x_0                       (Salimans & Ho 2022)
    score     grad log p_t(x_t) = -eps / sigma            (Tweedie)
    velocity  dx_t/dt = alpha' x_0 + sigma' eps           (flow matching; the probability-flow ODE)
    edm       F of EDM's preconditioning, D = c_skip x_hat + c_out F  (Karras et al. 2022, eq. 7 and Table 1)
Every target is a linear function of (x_0, eps) given x_t, so each converts to (x_0, eps) and back.
All coefficient tensors must already broadcast against x (see PathCoefficients.expand_as).

How a network is called (the one place, for training and sampling alike, :func:`predict`):
    F(x_t / sqrt(alpha^2 + sigma^2), noise level, condition)
with the noise level the path's log-SNR at t (or t itself for runs of difflab 0.1; networks.embeddings).
The "edm" target reads x_t / sqrt(sigma^2 + alpha^2 sigma_data^2) = c_in x_hat instead (unit variance for data of
std sigma_data), and its c_noise = ln(s) / 4 = -lambda / 8 is an affine function of the log-SNR lambda the network
reads (the noise embedding absorbs the affine map).

EDM's frame (Karras et al. 2022, Table 1, scaling s(t) = alpha): x_hat = x_t / alpha = x_0 + s eps, s = sigma / alpha.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from difflab.condition import Condition
from difflab.errors import DifflabError
from difflab.networks.embeddings import LOG_SNR, PROCESS_TIME
from difflab.process.base import GaussianProcess, PathCoefficients, as_time

TARGETS = ("eps", "x0", "v", "score", "velocity", "edm")
# sigma_data of EDM's preconditioning: the std of the data it is tuned for (images in [-1, 1], Karras et al. 2022)
EDM_SIGMA_DATA = 0.5

Pair = tuple[Tensor, Tensor]  # (x0, eps)


def x0_eps_from_eps(eps: Tensor, x_t: Tensor, c: PathCoefficients) -> Pair:
    """x0 = (x_t - sigma eps) / alpha."""
    return (x_t - c.sigma * eps) / c.alpha, eps


def x0_eps_from_x0(x0: Tensor, x_t: Tensor, c: PathCoefficients) -> Pair:
    """eps = (x_t - alpha x0) / sigma."""
    return x0, (x_t - c.alpha * x0) / c.sigma


def x0_eps_from_v(v: Tensor, x_t: Tensor, c: PathCoefficients) -> Pair:
    """Solve x_t = alpha x0 + sigma eps, v = alpha eps - sigma x0:
    x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2),  eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)."""
    norm = c.alpha**2 + c.sigma**2
    return (c.alpha * x_t - c.sigma * v) / norm, (c.sigma * x_t + c.alpha * v) / norm


def x0_eps_from_score(score: Tensor, x_t: Tensor, c: PathCoefficients) -> Pair:
    """eps = -sigma score, then x0 from eps."""
    return x0_eps_from_eps(-c.sigma * score, x_t, c)


def x0_eps_from_velocity(u: Tensor, x_t: Tensor, c: PathCoefficients) -> Pair:
    """Solve x_t = alpha x0 + sigma eps, u = alpha' x0 + sigma' eps with D = alpha sigma' - sigma alpha':
    x0 = (sigma' x_t - sigma u) / D,  eps = (alpha u - alpha' x_t) / D."""
    det = c.alpha * c.d_sigma - c.sigma * c.d_alpha
    return (c.d_sigma * x_t - c.sigma * u) / det, (c.alpha * u - c.d_alpha * x_t) / det


def eps_target(x0: Tensor, eps: Tensor, c: PathCoefficients) -> Tensor:
    return eps


def x0_target(x0: Tensor, eps: Tensor, c: PathCoefficients) -> Tensor:
    return x0


def v_target(x0: Tensor, eps: Tensor, c: PathCoefficients) -> Tensor:
    """v = alpha eps - sigma x0."""
    return c.alpha * eps - c.sigma * x0


def score_target(x0: Tensor, eps: Tensor, c: PathCoefficients) -> Tensor:
    """Conditional score grad log q(x_t | x_0) = -eps / sigma (Vincent 2011; its mean given x_t is the score)."""
    return -eps / c.sigma


def velocity_target(x0: Tensor, eps: Tensor, c: PathCoefficients) -> Tensor:
    """Conditional velocity d x_t / dt = alpha' x0 + sigma' eps (Lipman et al. 2023)."""
    return c.d_alpha * x0 + c.d_sigma * eps


def edm_preconditioning(s: Tensor, sigma_data: float = EDM_SIGMA_DATA) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) at EDM noise levels s = sigma / alpha (Karras et al. 2022, Table 1):

        c_skip = sigma_d^2 / (s^2 + sigma_d^2),   c_out = s sigma_d / sqrt(s^2 + sigma_d^2),
        c_in   = 1 / sqrt(s^2 + sigma_d^2),       c_noise = ln(s) / 4
    so that D(x_hat; s) = c_skip x_hat + c_out F(c_in x_hat, c_noise)                          (eq. 7)."""
    norm = s**2 + sigma_data**2
    return sigma_data**2 / norm, s * sigma_data / norm.sqrt(), 1 / norm.sqrt(), s.log() / 4


def edm_norm(c: PathCoefficients, sigma_data: float = EDM_SIGMA_DATA) -> Tensor:
    """sqrt(sigma^2 + alpha^2 sigma_d^2) = alpha sqrt(s^2 + sigma_d^2): Table 1's coefficients in x_t's frame
    divide by it, which keeps them finite where alpha = 0 (the flow path's t = 1)."""
    return (c.sigma**2 + c.alpha**2 * sigma_data**2).sqrt()


def x0_eps_from_edm(f: Tensor, x_t: Tensor, c: PathCoefficients) -> Pair:
    """x0 = D = c_skip x_hat + c_out F with x_hat = x_t / alpha (eq. 7), in x_t's frame:
    x0 = (sigma_d^2 alpha / n^2) x_t + (sigma sigma_d / n) F,  n = sqrt(sigma^2 + alpha^2 sigma_d^2)."""
    sd, n = EDM_SIGMA_DATA, edm_norm(c)
    return x0_eps_from_x0(sd**2 * c.alpha / n**2 * x_t + c.sigma * sd / n * f, x_t, c)


def edm_target(x0: Tensor, eps: Tensor, c: PathCoefficients) -> Tensor:
    """EDM's effective training target F = (x0 - c_skip x_hat) / c_out (Karras et al. 2022, eq. 8), in x_t's frame:
    F = (sigma x0 - sigma_d^2 alpha eps) / (sigma_d n),  n = sqrt(sigma^2 + alpha^2 sigma_d^2)."""
    sd = EDM_SIGMA_DATA
    return (c.sigma * x0 - sd**2 * c.alpha * eps) / (sd * edm_norm(c))


TO_X0_EPS: dict[str, Callable[[Tensor, Tensor, PathCoefficients], Pair]] = {
    "eps": x0_eps_from_eps, "x0": x0_eps_from_x0, "v": x0_eps_from_v,
    "score": x0_eps_from_score, "velocity": x0_eps_from_velocity, "edm": x0_eps_from_edm,
}
FROM_X0_EPS: dict[str, Callable[[Tensor, Tensor, PathCoefficients], Tensor]] = {
    "eps": eps_target, "x0": x0_target, "v": v_target, "score": score_target, "velocity": velocity_target,
    "edm": edm_target,
}


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise DifflabError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return target


def to_x0_eps(target: str, value: Tensor, x_t: Tensor, c: PathCoefficients) -> Pair:
    """(x0, eps) implied by a prediction of ``target`` at x_t."""
    return TO_X0_EPS[check_target(target)](value, x_t, c)


def from_x0_eps(target: str, x0: Tensor, eps: Tensor, c: PathCoefficients) -> Tensor:
    """The value of ``target`` given (x0, eps): the regression target when they are the true ones."""
    return FROM_X0_EPS[check_target(target)](x0, eps, c)


def eps_scale(target: str, c: PathCoefficients) -> Tensor:
    """k(t) with target = a(t) x_t + k(t) eps at a fixed x_t: an eps error of 1 is a target error of k.

    Every target is linear in (x_t, eps), so k is the target's value at x_t = 0, eps = 1
    (eps: 1, x0: -sigma/alpha, v: (alpha^2 + sigma^2)/alpha, score: -1/sigma, velocity: sigma' - alpha' sigma/alpha).
    """
    one = torch.ones_like(c.alpha)
    x0, eps = x0_eps_from_eps(one, torch.zeros_like(one), c)
    return from_x0_eps(target, x0, eps, c)


def network_input(x_t: Tensor, c: PathCoefficients, target: str = "eps") -> Tensor:
    """What a network reads: x_t / sqrt(alpha^2 + sigma^2), unit variance for unit-variance data on every path
    (the identity on variance-preserving paths; EDM's c_in for VE and sigma_data = 1, Karras et al. 2022, Table 1);
    for the "edm" target EDM's own c_in x_hat = x_t / sqrt(sigma^2 + alpha^2 sigma_data^2)."""
    if target == "edm":
        return x_t / edm_norm(c)
    return x_t / (c.alpha**2 + c.sigma**2).sqrt()


def convert(value: Tensor, source: str, target: str, x_t: Tensor, c: PathCoefficients) -> Tensor:
    """Convert a prediction of ``source`` into the equivalent prediction of ``target`` at x_t."""
    x0, eps = to_x0_eps(source, value, x_t, c)
    return from_x0_eps(target, x0, eps, c)


def split_variance(out: Tensor) -> tuple[Tensor, Tensor]:
    """A learned-variance network's output (B, 2C, ...) -> its target (B, C, ...) and Nichol & Dhariwal's v =
    (r + 1) / 2 (B, C, ...) from the second half r (their code's "learned range": r = 1 is beta, r = -1 beta-tilde)."""
    target, r = out.chunk(2, dim=1)
    return target, (r + 1) / 2


def noise_level(process: GaussianProcess, t: Tensor, noise_input: str = LOG_SNR) -> Tensor:
    """What a network reads as its noise level at times t (float64, shaped like t): the log-SNR
    lambda(t) = log(alpha^2 / sigma^2), or t itself for a network whose noise_input is "t"."""
    return as_time(t) if noise_input == PROCESS_TIME else process.log_snr(t)


def predict(network: nn.Module, x_t: Tensor, t: Tensor, c: PathCoefficients, process: GaussianProcess,
            cond: Condition | None = None, target: str = "eps") -> Tensor:
    """The network's raw output at (x_t, t) (B, ...), in its own dtype: F(network_input(x_t), noise level, cond).

    x_t (B, ...); t () or (B,) float64; c the path coefficients at t, broadcast against x_t; ``target`` what the
    network predicts (only "edm" changes what it reads)."""
    param = next(network.parameters(), None)
    dtype = x_t.dtype if param is None else param.dtype
    t = as_time(t, batch=x_t.shape[0], device=x_t.device)
    noise = noise_level(process, t, getattr(network, "noise_input", LOG_SNR))
    return network(network_input(x_t, c, target).to(dtype), noise.to(dtype), cond)
