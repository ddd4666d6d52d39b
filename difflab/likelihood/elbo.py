"""The DDPM variational bound in bits/dim (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, sec. 2).

    -log p(x_0) <= L = L_T + sum_{t=2}^{T} L_{t-1} + L_0                                   (Ho et al., eq. 5)
    L_T     = KL(q(x_T | x_0) || N(0, I))                          prior term, closed form
    L_{t-1} = E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))    t = 2..T, between two Gaussians
    L_0     = E_q -log p(x_0 | x_1)                                 decoder: discretized Gaussian (eq. 13)

with p(x_{t-1} | x_t) = N(mu(x_t, x0_hat), sigma_t^2 I), mu the posterior mean of q(x_{t-1} | x_t, x_0)
at x_0 = x0_hat(x_t, t) (Ho et al. eq. 7), so any Denoiser on a DDPMProcess works whatever its target.
Each term's expectation over x_t ~ q(x_t | x_0) takes one noise draw, as in the reference code; the sum
over t is exact (all T - 1 KL terms) or an unbiased estimate from K of them per example:
(T - 1)/K sum_{t in S} L_{t-1}, S uniform without replacement (Ho et al. sec. 3.4 / Nichol & Dhariwal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser
from difflab.errors import DifflabError
from difflab.likelihood.bpd import BIN_WIDTH, nats_to_bpd
from difflab.likelihood.gaussian import discretized_gaussian_log_likelihood, gaussian_log_likelihood, normal_kl
from difflab.likelihood.result import LikelihoodResult
from difflab.process import DDPMProcess, GaussianProcess, expand_to
from difflab.process.base import learned_variance, resolve_variance
from difflab.rng import GeneratorNoise, Noise

DECODERS = ("discretized", "gaussian")


@dataclass(frozen=True)
class ElboResult(LikelihoodResult):
    """bpd (B,): the bound (an upper bound on -log2 p(x_0) / D); terms (B, T + 1) bits/dim in Ho et al.'s
    indexing: column 0 is L_0 (decoder), column k in 1..T-1 is L_k (the KL at step t = k + 1), column T is
    L_T (prior); with a random subset of steps the KL columns not drawn are NaN."""

    terms: Tensor

    @property
    def prior(self) -> Tensor:
        return self.terms[:, -1]

    @property
    def decoder(self) -> Tensor:
        return self.terms[:, 0]


def ddpm_process(denoiser: Denoiser) -> DDPMProcess:
    """The denoiser's process, which must have discrete steps (the bound is a sum over them)."""
    process: GaussianProcess = denoiser.process
    if process.discrete_steps is None:
        raise DifflabError(f"the DDPM variational bound needs a process with discrete steps (ddpm), not "
                           f"{process.name!r}; use the probability-flow ODE likelihood (ode_bpd) instead")
    return process  # type: ignore[return-value]   (a process with discrete steps has DDPM's tables)


def prior_kl(process: DDPMProcess, x0: Tensor) -> Tensor:
    """L_T = KL(N(sqrt(alpha_bar_T) x_0, (1 - alpha_bar_T) I) || N(0, I)), (B,) nats for x0 (B, ...)."""
    alpha, sigma = process.alpha_sigma(process.times(torch.tensor(process.T)))
    alpha, var = expand_to(alpha, x0), expand_to(sigma**2, x0)
    return normal_kl(alpha * x0, var, torch.zeros_like(x0), torch.ones_like(x0)).flatten(1).sum(1)


def reverse_variance(process: DDPMProcess, steps: Tensor, variance: str, v: Tensor | None = None) -> Tensor:
    """sigma_t^2 of p(x_{t-1} | x_t) for steps t (N,) (Ho et al. sec. 3.2): "posterior" beta-tilde_t, "beta" beta_t,
    (N,); "learned" exp(v log beta_t + (1 - v) log beta-tilde_t) with the model's v (N, ...) (Nichol & Dhariwal, eq. 15);
    "auto" learned where v is given, else posterior.

    The decoder (t = 1) gets beta_1 under "beta" (the paper's sigma_1^2) and beta-tilde_2 under "posterior",
    since beta-tilde_1 = 0 (the clipped value of Ho et al.'s and Nichol & Dhariwal's code, which use
    beta-tilde_2 at t = 1 for both choices); "learned" interpolates between these two."""
    variance = resolve_variance(variance, v is not None)
    if variance == "learned":
        beta, beta_tilde = (expand_to(reverse_variance(process, steps, name), v) for name in ("beta", "posterior"))
        return learned_variance(v, beta, beta_tilde)
    if variance == "beta":
        return process.betas.to(steps.device)[steps - 1]
    return process.posterior_table(steps.clamp_min(2))[2]


def vlb_terms(process: DDPMProcess, x0: Tensor, x_t: Tensor, x0_hat: Tensor, steps: Tensor, var_p: Tensor,
              decoder: str = "discretized") -> Tensor:
    """One term of the bound per row, (N,) nats, given x_t, the true x0 and the model's x0_hat (N, ...) at steps
    (N,) int64 in 1..T (on the CPU) and the model's reverse variance var_p ((N,) or (N, ...)). Rows with t >= 2 give
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || N(mu(x_t, x0_hat), var_p)) (Ho et al. eq. 5-7), rows with t = 1 the
    decoder's -log p(x_0 | x_1) (eq. 13, or a Gaussian density when decoder="gaussian"). Pure tensor math: the ELBO
    and the hybrid loss of a learned variance (Nichol & Dhariwal sec. 3.1) both call it."""
    out = torch.empty(steps.shape, dtype=x0.dtype, device=x0.device)
    kl = steps >= 2
    if kl.any():
        # L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || N(mu(x_t, x0_hat), sigma_t^2 I))       (Ho et al. eq. 5-7)
        rows = kl.to(x0.device)
        mu_q, var_q = process.posterior_step(x_t[rows], x0[rows], steps[kl])
        mu_p, _ = process.posterior_step(x_t[rows], x0_hat[rows], steps[kl])
        var_q, var_p_kl = expand_to(var_q, mu_q).expand_as(mu_q), expand_to(var_p[rows], mu_q).expand_as(mu_q)
        out[rows] = normal_kl(mu_q, var_q, mu_p, var_p_kl).flatten(1).sum(1)
    if not kl.all():
        # L_0 = -log p(x_0 | x_1), decoder mean mu(x_1, x0_hat) = x0_hat (q's coefficient of x_1 is 0 at t = 1)
        rows = (~kl).to(x0.device)
        x, mean = x0[rows], x0_hat[rows]
        var = expand_to(var_p[rows], x).expand_as(x)
        logp = (discretized_gaussian_log_likelihood(x, mean, var, BIN_WIDTH) if decoder == "discretized"
                else gaussian_log_likelihood(x, mean, var))              # (n, ...)  Ho et al. eq. 13
        out[rows] = -logp.flatten(1).sum(1)
    return out


def step_terms(denoiser: Denoiser, x0: Tensor, steps: Tensor, eps: Tensor, *, cond: Condition | None = None,
               variance: str = "auto", decoder: str = "discretized") -> Tensor:
    """One term of the bound per row, (N,) nats: L_{t-1} at x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

    x0, eps: (N, ...) float64; steps: (N,) int64 in 1..T (read on the CPU, like the tables). See :func:`vlb_terms`.
    One denoiser call on all N rows.
    """
    process = ddpm_process(denoiser)
    steps = steps.cpu()                                                  # indexes the process's (CPU) tables
    t = process.times(steps)
    x_t = process.marginal(x0, t, eps)                                   # (N, ...)
    pred = denoiser(x_t, t, cond)
    v = None if pred.variance_v is None else pred.variance_v.to(x0.dtype)
    var_p = reverse_variance(process, steps, variance, v)                # (N,) or (N, ...)
    return vlb_terms(process, x0, x_t, pred.x0.to(x0.dtype), steps, var_p.to(x0.device), decoder)


def elbo_terms(denoiser: Denoiser, x0: Tensor, *, cond: Condition | None = None, variance: str = "auto",
               decoder: str = "discretized", timesteps: int | None = None, t_batch: int = 50,
               noise: Noise | None = None) -> tuple[Tensor, Tensor]:
    """The bound's terms (B, T + 1) and its total (B,), in nats, for data x0 (B, ...).

    Columns as in :class:`ElboResult`. ``timesteps`` K: None evaluates all T - 1 KL terms (the exact sum);
    otherwise K of them drawn per example and the total is the unbiased L_T + L_0 + (T - 1)/K sum of those.
    ``t_batch`` steps per denoiser call (B * t_batch rows). Noise is drawn one (B, ...) batch per evaluated
    step, so the draws do not depend on ``t_batch`` (nor, with ``PerSampleNoise``, on the batch).
    """
    process = ddpm_process(denoiser)
    if decoder not in DECODERS:
        raise DifflabError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    T, B, shape = process.T, x0.shape[0], tuple(x0.shape[1:])
    K = T - 1 if timesteps is None else int(timesteps)
    if not 1 <= K <= T - 1:
        raise DifflabError(f"timesteps must be between 1 and T - 1 = {T - 1}, got {timesteps}")
    if t_batch < 1:
        raise DifflabError(f"t_batch must be at least 1, got {t_batch}")
    x0 = x0.to(torch.float64)
    if decoder == "discretized" and (x0.min() < -1 or x0.max() > 1):
        raise DifflabError("the discretized decoder needs image data in [-1, 1]; "
                           "use decoder='gaussian' for continuous data")
    noise = noise if noise is not None else GeneratorNoise(torch.Generator(x0.device).manual_seed(0))
    dev = x0.device

    kl_steps = torch.arange(2, T + 1).expand(B, T - 1)                                   # (B, T - 1)
    if K < T - 1:                                                  # K steps per example, no repeats
        order = noise.randn_like(torch.empty(B, T - 1, dtype=torch.float64, device=dev)).argsort(dim=1)
        kl_steps = kl_steps.gather(1, order[:, :K].cpu())
    steps = torch.cat([torch.ones(B, 1, dtype=torch.long), kl_steps], 1)                # (B, K + 1), L_0 first

    terms = torch.full((B, T + 1), float("nan"), dtype=torch.float64, device=dev)
    terms[:, T] = prior_kl(process, x0)
    with torch.no_grad():
        for j in range(0, K + 1, t_batch):
            s = steps[:, j:j + t_batch]                                                   # (B, c)
            c = s.shape[1]
            eps = torch.stack([noise.randn_like(x0) for _ in range(c)], 1)    # (B, c, ...): one draw per step
            rows = x0[:, None].expand(B, c, *shape).reshape(B * c, *shape)
            cond_rows = None if cond is None else cond.repeat_interleave(c, dim=0)
            value = step_terms(denoiser, rows, s.reshape(-1), eps.reshape(B * c, *shape), cond=cond_rows,
                               variance=variance, decoder=decoder)
            terms.scatter_(1, (s - 1).to(dev), value.reshape(B, c))                 # L_{t-1} sits in column t - 1
    total = terms[:, 0] + terms[:, T] + (T - 1) / K * terms[:, 1:T].nansum(1)
    return terms, total


def elbo_bpd(denoiser: Denoiser, x0: Tensor, *, cond: Condition | None = None, variance: str = "auto",
             decoder: str = "discretized", timesteps: int | None = None, t_batch: int = 50,
             noise: Noise | None = None) -> ElboResult:
    """The DDPM variational bound in bits/dim per example, for x0 (B, ...) in [-1, 1].

    bpd = L / (D log 2) with L in nats (no offset: the discretized decoder gives the probability of the 8-bit
    bins of width 2/255 themselves; decoder="gaussian" gives a density's bits/dim for continuous data).
    variance: "posterior" (sigma_t^2 = beta-tilde_t), "beta" (beta_t), "learned" (the model's, Nichol & Dhariwal) or
    "auto" (learned where the model learned it, else posterior); timesteps: None for all T terms
    or K for the unbiased estimate from K random steps. NFE per example: K + 1. See :func:`elbo_terms`.
    """
    start = time.perf_counter()
    terms, total = elbo_terms(denoiser, x0, cond=cond, variance=variance, decoder=decoder,
                              timesteps=timesteps, t_batch=t_batch, noise=noise)
    D = x0[0].numel()
    nfe = (ddpm_process(denoiser).T - 1 if timesteps is None else timesteps) + 1
    return ElboResult(nats_to_bpd(total, D), float(nfe), time.perf_counter() - start, nats_to_bpd(terms, D))
