"""Training losses: draw t and noise, form x_t, predict, weight. Per-example loss out; the caller reduces.

    L(theta) = E_{t, (x_0, eps)} [ w(t) || f_theta(x_t, t) - target(x_0, eps, t) ||^2 / D ],
    x_t = alpha(t) x_0 + sigma(t) eps

With target = eps, uniform weighting and discrete t this is L_simple of Ho et al. (2020), eq. 14.

Weightings. At a fixed x_t every target is linear in eps: target = a(t) x_t + k(t) eps, so an error of
any target is k(t) times an error of eps. A weighting is stated on the eps error and converted to the
trained target with w(t) = w_eps(t) / k(t)^2:
  uniform     w = 1 in the target's own units (each target's "simple" loss)
  sigma2      lambda = sigma^2 on the score error (Song et al. 2021), i.e. w_eps = 1
  likelihood  lambda = g^2 on the score error (Song et al. 2021, "likelihood weighting"), w_eps = g^2 / sigma^2
  min-snr     w_eps = min(SNR, gamma) / SNR, SNR = alpha^2 / sigma^2 (Hang et al. 2023), gamma = 5
  edm         lambda(s) = (s^2 + sigma_d^2) / (s sigma_d)^2 on the x0 error, s = sigma / alpha (Karras et al. 2022,
              Table 1), i.e. w_eps = (s^2 + sigma_d^2) / sigma_d^2; for the "edm" target it is 1 in F's units
              (lambda c_out^2 = 1), so "uniform" and "edm" coincide there

Time sampling:
  discrete    t = i / T, i ~ U{1..T} (DDPM)
  continuous  t ~ U(t_min, t_max)
  lognormal   ln s ~ N(P_mean, P_std^2), s = sigma / alpha, t where the path has that s, clamped to [t_min, t_max]
              (EDM's noise-level distribution, Karras et al. 2022, Table 1: P_mean = -1.2, P_std = 1.2)
  auto        lognormal for the "edm" target, else discrete on a process with discrete steps, else continuous

Learned variance (Nichol & Dhariwal 2021, sec. 3.1): the network also outputs v per pixel (see
parameterization.split_variance) and the loss is the hybrid L_simple + lambda L_vlb, lambda = 0.001, with
L_vlb = T L_{t-1} (the one-sample estimate of the bound's sum over t, in bits/dim; their code's "rescaled" form)
computed with the mean from the network's prediction under a stop-gradient, so L_vlb trains the variance only.

Condition dropout (classifier-free training, Ho & Salimans 2022): each example's condition is replaced by
the null condition (no label; every prompt token masked) with probability cond_drop, so one network learns
both p(x | y) and p(x), the two branches classifier-free guidance combines.

Couplings (how x_0 and eps are paired in a batch):
  independent  eps ~ N(0, I) independent of x_0
  ot           the exact optimal-transport pairing within the minibatch: the permutation of eps that
               minimises sum_i ||x_0_i - eps_pi(i)||^2 (Tong et al. 2023; Pooladian et al. 2023). The paths
               cross less, so ODE solvers need fewer steps. Flow matching only: with a dependent pairing
               -eps_hat/sigma is no longer the score, so only the ODE samplers stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.condition import Condition
from difflab.errors import DifflabError
from difflab.likelihood.bpd import nats_to_bpd
from difflab.likelihood.elbo import reverse_variance, vlb_terms
from difflab.parameterization import (EDM_SIGMA_DATA, check_target, eps_scale, from_x0_eps, predict, split_variance,
                                      to_x0_eps)
from difflab.process import DDPMProcess
from difflab.process.base import GaussianProcess, PathCoefficients, as_time
from difflab.rng import BatchDraws, batch_draws

TIME_SAMPLINGS = ("auto", "discrete", "continuous", "lognormal")
# targets that recover x_0 only through 1/alpha: undefined where alpha(t) = 0
ALPHA_DIVIDING_TARGETS = ("eps", "score")
WEIGHTINGS = ("uniform", "sigma2", "likelihood", "min-snr", "edm")
COUPLINGS = ("independent", "ot")
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2          # EDM's log-normal noise levels (Karras et al. 2022, Table 1)
VLB_WEIGHT = 0.001                         # lambda of the hybrid loss (Nichol & Dhariwal 2021, sec. 3.1)


@dataclass(frozen=True)
class DiffusionObjective:
    """What a diffusion model is trained to predict, how times are drawn, weighted and paired with noise."""

    target: str = "eps"
    weighting: str = "uniform"
    # "discrete": t = i/T, i ~ U{1..T} (a process with discrete steps: DDPM); "continuous": t ~ U(t_min, t_max);
    # "lognormal": EDM's ln(sigma/alpha) ~ N(lognormal_mean, lognormal_std^2); "auto": lognormal for the edm target,
    # discrete where the process has discrete steps, else continuous
    time_sampling: str = "discrete"
    coupling: str = "independent"
    min_snr_gamma: float = 5.0
    # probability of training on the null condition; None: 0.1 for a conditional run, 0 otherwise (RunConfig.resolved)
    cond_drop: float | None = None
    lognormal_mean: float = EDM_P_MEAN
    lognormal_std: float = EDM_P_STD
    # Nichol & Dhariwal's learned variance: the network outputs v too, trained by lambda L_vlb (lambda = vlb_weight)
    learn_variance: bool = False
    vlb_weight: float = VLB_WEIGHT

    def __post_init__(self) -> None:
        check_target(self.target)
        for value, allowed, what in ((self.weighting, WEIGHTINGS, "weighting"),
                                     (self.time_sampling, TIME_SAMPLINGS, "time sampling"),
                                     (self.coupling, COUPLINGS, "coupling")):
            if value not in allowed:
                raise DifflabError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        if not self.min_snr_gamma > 0:
            raise DifflabError(f"--min-snr-gamma must be > 0, got {self.min_snr_gamma}")
        if self.cond_drop is not None and not 0 <= self.cond_drop < 1:
            raise DifflabError(f"--cond-drop is a probability in [0, 1), got {self.cond_drop}")
        if not (math.isfinite(self.lognormal_mean) and 0 < self.lognormal_std < math.inf):
            raise DifflabError(f"--lognormal-mean must be finite and --lognormal-std > 0, got {self.lognormal_mean}, "
                               f"{self.lognormal_std}")
        if not 0 <= self.vlb_weight < math.inf:
            raise DifflabError(f"--vlb-weight must be a finite number >= 0, got {self.vlb_weight}")

    def check(self, process: GaussianProcess) -> None:
        """Raise a DifflabError if this objective cannot train on ``process``."""
        if resolve_time_sampling(self.time_sampling, process) == "discrete" and process.discrete_steps is None:
            raise DifflabError(f"discrete time sampling needs a process with discrete steps (--process ddpm); use "
                               f"--time-sampling continuous for {process.name}")
        if self.coupling == "ot" and not process.is_interpolant:
            raise DifflabError("--coupling ot pairs noise and data for flow matching: use it with --process flow")
        if self.target in ALPHA_DIVIDING_TARGETS and float(process.alpha_sigma(as_time(process.t_max))[0]) == 0:
            raise DifflabError(f"--target {self.target} cannot recover x_0 where alpha = 0 (t = {process.t_max}); "
                               "lower --t-max (e.g. 0.999) or train x0, v or velocity")
        if self.learn_variance and (process.discrete_steps is None
                                    or resolve_time_sampling(self.time_sampling, process, self.target) != "discrete"):
            raise DifflabError("--learn-variance trains the variance of DDPM's reverse steps through their bound: use "
                               "--process ddpm with discrete time sampling (--time-sampling auto or discrete)")

    def resolved(self, process: GaussianProcess) -> DiffusionObjective:
        """This objective for ``process``: time sampling "auto" made concrete, then checked."""
        self.check(process)
        return replace(self, time_sampling=resolve_time_sampling(self.time_sampling, process, self.target))


def resolve_time_sampling(how: str, process: GaussianProcess, target: str = "eps") -> str:
    """"auto" -> "lognormal" for the edm target, else "discrete" on a process with discrete steps, else
    "continuous"; other values unchanged."""
    if how == "auto":
        if target == "edm":
            return "lognormal"
        return "discrete" if process.discrete_steps is not None else "continuous"
    return how


def sample_times(process: GaussianProcess, n: int, how: str, generator: torch.Generator | BatchDraws | None,
                 device: torch.device | str = "cpu", lognormal: tuple[float, float] = (EDM_P_MEAN, EDM_P_STD)
                 ) -> Tensor:
    """(n,) float64 training times; ``lognormal`` = (P_mean, P_std) of the "lognormal" sampling."""
    how, draws = resolve_time_sampling(how, process), batch_draws(generator)
    if how == "lognormal":
        # ln s ~ N(P_mean, P_std^2), s = sigma / alpha = exp(-lambda / 2) (Karras et al. 2022, Table 1)
        ln_s = lognormal[0] + lognormal[1] * draws.randn((n,), device=device, dtype=torch.float64)
        return process.time_at_log_snr(-2 * ln_s).clamp(process.t_min, process.t_max)
    if how == "discrete":
        T = process.discrete_steps
        if T is None:
            raise DifflabError("discrete time sampling needs a process with discrete steps; use continuous")
        i = draws.randint(1, T + 1, (n,), device=device)
        return torch.as_tensor(i, dtype=torch.float64) / T
    u = draws.rand((n,), device=device, dtype=torch.float64)
    return process.t_min + (process.t_max - process.t_min) * u


def loss_weight(objective: DiffusionObjective, process: GaussianProcess, t: Tensor) -> Tensor:
    """w(t) (B,) float64 on the squared error of the trained target; see the module docstring."""
    if objective.weighting == "uniform":
        return torch.ones_like(t)
    c = process.coefficients(t)
    if objective.weighting == "sigma2":
        w_eps = torch.ones_like(t)
    elif objective.weighting == "edm":
        # lambda(s) (s sigma/alpha)^2 = (s^2 + sigma_d^2) / sigma_d^2, written without dividing by alpha
        w_eps = (c.sigma**2 + c.alpha**2 * EDM_SIGMA_DATA**2) / (c.alpha * EDM_SIGMA_DATA) ** 2
    elif objective.weighting == "likelihood":
        w_eps = process.diffusion_sq(t) / c.sigma**2
    else:  # min-snr
        snr = (c.alpha / c.sigma) ** 2
        w_eps = snr.clamp(max=objective.min_snr_gamma) / snr
    return w_eps / eps_scale(objective.target, c) ** 2


def ot_pairing(x0: Tensor, eps: Tensor) -> Tensor:
    """(B,) permutation pi minimising sum_i ||x0_i - eps_pi(i)||^2 (exact, by the Hungarian algorithm)."""
    cost = torch.cdist(x0.flatten(1).double(), eps.flatten(1).double()).pow(2)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.from_numpy(np.asarray(cols)[np.argsort(rows)]).to(x0.device)


def noised(process: GaussianProcess, objective: DiffusionObjective, x0: Tensor,
           generator: torch.Generator | BatchDraws | None) -> tuple[Tensor, Tensor, PathCoefficients, Tensor]:
    """A training batch's times t (B,), noise eps (paired with x0 by the coupling), path coefficients at t
    (broadcast against x0) and x_t = alpha x0 + sigma eps ~ q(x_t | x_0)."""
    t = sample_times(process, x0.shape[0], objective.time_sampling, generator, x0.device,
                     (objective.lognormal_mean, objective.lognormal_std))
    eps = batch_draws(generator).randn(x0.shape, device=x0.device, dtype=x0.dtype)
    if objective.coupling == "ot":
        eps = eps[ot_pairing(x0, eps)]
    c: PathCoefficients = process.coefficients(as_time(t)).expand_as(x0)
    return t, eps, c, c.alpha * x0 + c.sigma * eps


def diffusion_loss(network: nn.Module, process: GaussianProcess, objective: DiffusionObjective, x0: Tensor,
                   cond: Condition | None = None, generator: torch.Generator | BatchDraws | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Per-example loss (B,) and the times t (B,) it was taken at. x0: (B, ...); cond is passed to the network
    (each row replaced by the null condition with probability cond_drop)."""
    t, eps, c, x_t = noised(process, objective, x0, generator)
    if cond is not None and objective.cond_drop:
        cond = cond.drop(batch_draws(generator).rand((x0.shape[0],), device=x0.device) < objective.cond_drop)
    target = from_x0_eps(objective.target, x0, eps, c)
    pred = predict(network, x_t, t, c, process, cond, objective.target)
    v = None
    if objective.learn_variance:
        pred, v = split_variance(pred)                                      # (B, C, ...) each
    loss = (pred.float() - target.float()).pow(2).flatten(1).mean(1)       # ||f - target||^2 / D
    loss = loss_weight(objective, process, t).to(loss) * loss
    if v is not None:                                                       # L_hybrid = L_simple + lambda L_vlb
        vlb = vlb_bpd(process, objective.target, x0, x_t, t, pred.detach(), v)  # type: ignore[arg-type] (checked: DDPM)
        loss = loss + objective.vlb_weight * process.discrete_steps * vlb.to(loss)
    return loss, t


def vlb_bpd(process: DDPMProcess, target: str, x0: Tensor, x_t: Tensor, t: Tensor, pred: Tensor, v: Tensor
            ) -> Tensor:
    """L_{t-1} (B,) in bits/dim for training times t (B,) on DDPM's steps: the bound's term with the mean of
    p(x_{t-1} | x_t) from the prediction ``pred`` of ``target`` (pass it detached: Nichol & Dhariwal's stop-gradient)
    and the learned variance from v (B, C, ...), in float64 (the KL of a T = 1000 chain is a small difference)."""
    x0, x_t, v = x0.double(), x_t.double(), v.double()
    steps = process.index(t.cpu())                                                   # (B,) in 1..T
    c = process.coefficients(as_time(t)).expand_as(x_t)
    x0_hat = to_x0_eps(target, pred.double(), x_t, c)[0]
    var = reverse_variance(process, steps, "learned", v)                             # (B, C, ...)
    nats = vlb_terms(process, x0, x_t, x0_hat, steps, var, "discretized")
    return nats_to_bpd(nats, x0[0].numel())


def classifier_loss(network: nn.Module, process: GaussianProcess, objective: DiffusionObjective, x0: Tensor,
                    cond: Condition | None = None, generator: torch.Generator | BatchDraws | None = None
                   ) -> tuple[Tensor, Tensor]:
    """A noise-aware classifier's per-example cross-entropy -log p_phi(y | x_t, t) (B,) and the times t (B,):
    x_t drawn from q(x_t | x_0) at times drawn as for the diffusion model (Dhariwal & Nichol 2021, sec. 4.1).
    cond carries the labels y (B,); the network reads x_t and the noise level only."""
    if cond is None or cond.labels is None:
        raise DifflabError("a classifier trains on labelled data: this data set has no labels")
    t, _, c, x_t = noised(process, objective, x0, generator)
    logits = predict(network, x_t, t, c, process)                         # (B, K)
    return F.cross_entropy(logits.float(), cond.labels, reduction="none"), t
