"""Exact negative log-likelihood through the probability-flow ODE (Song et al. 2021, App. D;
Grathwohl et al. 2019, FFJORD), for any process and any denoiser (diffusion or flow matching alike).

The model's sample path solves dx/dt = v(x, t), v = alpha' x0_hat + sigma' eps_hat (Prediction.velocity),
from the prior N(0, sigma(t_max)^2 I) at t_max down to t_min. Along it the log-density obeys the
instantaneous change of variables (Chen et al. 2018, Thm. 1)

    d/dt [x, log p_t(x)] = [v(x, t), -div v(x, t)]                                      (FFJORD eq. 2-4)
    =>  log p_{t_min}(x(t_min)) = log N(x(t_max); 0, sigma(t_max)^2 I) + int_{t_min}^{t_max} div v(x(t), t) dt

so one solve from the data side t_min up to t_max (torchdiffeq, dopri5) gives the likelihood. div v is
either exact (D autograd passes per evaluation; for small D) or Hutchinson's estimate
eps^T (dv/dx) eps with one probe eps per example held fixed over the solve (Rademacher or Gaussian;
E[eps eps^T] = I makes it unbiased; FFJORD sec. 3.1).

Two choices at the ends of the path (both with a small effect for the default processes):

- t_max: the prior is the one samplers start from, N(0, sigma(t_max)^2 I) (``process.prior_std()``), so the
  number is the likelihood of the generative model that sampling uses. alpha(t_max) x_0 "leaking" past it
  is then a model error, not an estimator error: the true p_{t_max} is the data scaled by alpha(t_max) plus
  noise. Per example the difference is first order, ~ alpha(t_max) E[x_0] . x(t_max) / sigma(t_max)^2
  (in the tests: 3-D Gaussian data with mean 0.5, mean |difference| 4e-3 nats for VP/DDPM-linear,
  alpha(1) ~ 0.0065, and 1.3e-2 for VE with sigma_max = 50); on average over the data it is
  KL(p_{t_max} || prior) ~ alpha(t_max)^2 E|x_0|^2 / (2 sigma(t_max)^2) per dimension (~2e-5 nats/dim for
  VP/DDPM-linear with data in [-1, 1], ~1e-4 for VE; 0 for flow with t_max = 1).
- t_min: models are not queried below t_min > 0, where the path still carries alpha(t_min) < 1 and
  sigma(t_min) > 0. The ODE starts at x(t_min) = alpha(t_min) y and the change of variables y -> alpha y adds
  D log alpha(t_min); the result is the density of y = x_{t_min} / alpha(t_min) = x_0 + (sigma/alpha)(t_min) eps,
  i.e. the data smoothed by N(0, (sigma(t_min)/alpha(t_min))^2 I) (std 0.01 for DDPM-1000, VP and VE
  defaults; 1e-3 for flow). Starting at y itself instead (Song et al.'s code) mixes the scales
  (-D log 0.999 nats for flow). The samplers' final Tweedie step (x0_hat at t_min) is not part of this density.

The solver's clock. DDPM's continuous path interpolates log alpha_bar linearly between its T grid
points, so its velocity jumps at each of them; an adaptive solver in t does not see the 1000 small jumps
(its error estimate misses them: ~1e-2 nats of error on a 2-D mixture at any rtol from 1e-5 to 1e-7, and
more NFE: 326 vs 92 there, 1226 vs 560 for a digits U-Net). torchdiffeq's ``jump_t`` cannot help: its
one-sided evaluations nudge t by one ulp, which DDPMProcess snaps back onto the grid point. In log-SNR
lambda = log(alpha^2 / sigma^2) the same ODE, dx/dlambda = v dt/dlambda, has
smooth coefficients on every variance-preserving path, so DDPM integrates in lambda by default (t from
lambda by ``process.time_at_log_snr``); other processes integrate in t (flow's lambda(1) is -inf).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser
from difflab.errors import DifflabError
from difflab.likelihood.bpd import dequantize, nats_to_bpd
from difflab.likelihood.gaussian import LOG_2PI
from difflab.likelihood.result import LikelihoodResult
from difflab.process import GaussianProcess
from difflab.process.base import as_time
from difflab.rng import GeneratorNoise, Noise

DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")
CLOCKS = ("t", "log-snr")


def exact_divergence(v: Tensor, x: Tensor) -> Tensor:
    """div v = sum_i dv_i/dx_i (B,) by one autograd pass per dimension; v, x (B, ...), v a function of x."""
    vf, D = v.flatten(1), v[0].numel()
    div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    for i in range(D):
        (g,) = torch.autograd.grad(vf[:, i].sum(), x, retain_graph=i < D - 1)
        div = div + g.flatten(1)[:, i]
    return div


def hutchinson_divergence(v: Tensor, x: Tensor, probe: Tensor) -> Tensor:
    """eps^T (dv/dx) eps (B,), an unbiased estimate of div v when E[eps eps^T] = I (Hutchinson 1989):
    one vector-Jacobian product per evaluation."""
    (g,) = torch.autograd.grad((v * probe).sum(), x)
    return (g * probe).flatten(1).sum(1)


def draw_probe(x: Tensor, probe: str, noise: Noise) -> Tensor:
    """A probe shaped like x: Rademacher (+-1) or standard Gaussian."""
    if probe not in PROBES:
        raise DifflabError(f"unknown probe {probe!r}; choose one of {', '.join(PROBES)}")
    z = noise.randn_like(x)
    return torch.sign(z) if probe == "rademacher" else z


Clock = Callable[[Tensor], tuple[Tensor, Tensor]]


def solver_clock(process: GaussianProcess, clock: str | None, t_min: float,
                 t_max: float) -> tuple[Tensor, Tensor, Clock]:
    """The solver's start and end times and the map s -> (t, dt/ds) for ``clock`` "t" or "log-snr"
    (None: log-SNR for a DDPM process, t otherwise; see the module docstring)."""
    clock = ("log-snr" if process.discrete_steps is not None else "t") if clock is None else clock
    if clock not in CLOCKS:
        raise DifflabError(f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    if clock == "t":
        return as_time(t_min), as_time(t_max), lambda s: (s, torch.ones_like(s))
    lam = process.log_snr(as_time([t_min, t_max]))
    if not torch.isfinite(lam).all():
        raise DifflabError(f"the log-SNR clock needs alpha, sigma > 0 on [t_min, t_max] = [{t_min}, {t_max}]; "
                           "use clock='t'")

    def time_of(s: Tensor) -> tuple[Tensor, Tensor]:
        t = process.time_at_log_snr(s)
        c = process.coefficients(t)
        return t, 0.5 / (c.d_alpha / c.alpha - c.d_sigma / c.sigma)       # dt/dlambda = 1 / lambda'(t)

    return lam[0], lam[1], time_of


def ode_nll(denoiser: Denoiser, y: Tensor, *, cond: Condition | None = None, divergence: str = "hutchinson",
            probe: str = "rademacher", noise: Noise | None = None, t_min: float | None = None,
            t_max: float | None = None, clock: str | None = None, method: str = "dopri5", rtol: float = 1e-5,
            atol: float = 1e-5, options: dict | None = None) -> tuple[Tensor, int]:
    """-log p(y) (B,) in nats for continuous data y (B, ...) under the model's probability-flow ODE, and
    the number of velocity evaluations the solver used (each on the whole batch).

        -log p(y) = -[log N(x(t_max); 0, sigma(t_max)^2 I) + int_{t_min}^{t_max} div v dt + D log alpha(t_min)],
        x(t_min) = alpha(t_min) y

    (see the module docstring for the two ends and the clock). t_min, t_max default to the process's; the
    solve runs in float64 with torchdiffeq's ``method``, ``rtol``, ``atol`` and ``options`` (its default
    error norm is an RMS over the batch). Hutchinson probes come from ``noise`` (default: a generator seeded 0).
    Gradients with respect to x are taken inside, so do not call this under torch.inference_mode();
    no gradient reaches the network's parameters.
    """
    if divergence not in DIVERGENCES:
        raise DifflabError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    if torch.is_inference_mode_enabled():
        raise DifflabError("the ODE likelihood differentiates the velocity: call it outside torch.inference_mode()")
    process = denoiser.process
    t0 = process.t_min if t_min is None else float(t_min)
    t1 = process.t_max if t_max is None else float(t_max)
    if not 0 < t0 < t1 <= 1:
        raise DifflabError(f"the ODE likelihood needs 0 < t_min < t_max <= 1, got {t0}, {t1}")
    s0, s1, time_of = solver_clock(process, clock, t0, t1)
    noise = noise if noise is not None else GeneratorNoise(torch.Generator(y.device).manual_seed(0))
    y = y.to(torch.float64)
    B, D = y.shape[0], y[0].numel()
    eps = draw_probe(y, probe, noise) if divergence == "hutchinson" else None
    nfe = 0

    def dynamics(s: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        nfe += 1
        t, dt_ds = time_of(s)
        with torch.enable_grad():
            x = state[0].detach().requires_grad_(True)
            v = denoiser(x, t, cond).velocity.to(x.dtype)                 # (B, ...)
            div = exact_divergence(v, x) if eps is None else hutchinson_divergence(v, x, eps)
        dt_ds = dt_ds.to(x.device)
        return (v * dt_ds).detach(), (div * dt_ds).detach()              # d/ds [x, int div v dt]

    alpha_min, _ = process.alpha_sigma(as_time(t0))
    _, sigma_max = process.alpha_sigma(as_time(t1))
    x_start = float(alpha_min) * y
    ss = torch.stack([s0, s1]).to(y.device)
    xs, divs = odeint(dynamics, (x_start, torch.zeros(B, dtype=torch.float64, device=y.device)), ss,
                      method=method, rtol=rtol, atol=atol, options=options)
    x_end, int_div = xs[-1], divs[-1]
    s2 = float(sigma_max) ** 2
    log_prior = -0.5 * (x_end.flatten(1) ** 2).sum(1) / s2 - 0.5 * D * (LOG_2PI + math.log(s2))
    return -(log_prior + int_div + D * math.log(float(alpha_min))), nfe


def ode_bpd(denoiser: Denoiser, x0: Tensor, *, cond: Condition | None = None, dequantization: str = "centered",
            divergence: str = "hutchinson", probe: str = "rademacher", noise: Noise | None = None,
            t_min: float | None = None, t_max: float | None = None, clock: str | None = None,
            method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
            options: dict | None = None) -> LikelihoodResult:
    """Bits/dim per example through the probability-flow ODE, for x0 (B, ...) = 2 p / 255 - 1.

    y = dequantize(x0) (uniform noise in each 8-bit bin of width w), then

        bpd = (-log p(y) + D log(1/w)) / (D log 2)

    with w = 2/255 ("centered": y = x0 + w (u - 1/2), offset log 127.5) or w = 2/256 ("song":
    y = 2 (p + u)/256 - 1, offset log 128 = 7 bits); an upper bound on the discrete model's -log2 P(p)/D
    in expectation over u (:mod:`difflab.likelihood.bpd`). dequantization="none" reads x0 as continuous data
    (bits/dim of a density, no offset). NFE: velocity evaluations of the solve (exact divergence costs D
    backward passes each, Hutchinson one). Other options as in :func:`ode_nll`; dequantization noise is
    drawn from ``noise`` before the probes. Pass the plain model, not a ClippedDenoiser (clamping x0_hat makes
    the velocity's divergence wrong wherever the clamp is active).
    """
    start = time.perf_counter()
    noise = noise if noise is not None else GeneratorNoise(torch.Generator(x0.device).manual_seed(0))
    y, w = dequantize(x0.to(torch.float64), dequantization, noise)
    nll, nfe = ode_nll(denoiser, y, cond=cond, divergence=divergence, probe=probe, noise=noise, t_min=t_min,
                       t_max=t_max, clock=clock, method=method, rtol=rtol, atol=atol, options=options)
    return LikelihoodResult(nats_to_bpd(nll, x0[0].numel(), w), float(nfe), time.perf_counter() - start)
