"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2 (VE) and 3 (VP)) on any Gaussian path.

Each step t -> s of the grid is one predictor step and ``corrector_steps`` Langevin corrector steps at s.

Predictor "reverse-diffusion" (Song et al., App. E): reverse the one-step forward transition
q(x_t | x_s) = N(a_ts x_s, sigma_{t|s}^2 I), a_ts = alpha_t / alpha_s, sigma_{t|s}^2 = sigma_t^2 - a_ts^2 sigma_s^2:

    x_s = (2 - a_ts) x_t + sigma_{t|s}^2 score(x_t, t) + sigma_{t|s} z

VE (a_ts = 1): x_s = x_t + (sigma_t^2 - sigma_s^2) score + sqrt(sigma_t^2 - sigma_s^2) z        (Alg. 2)
VP (a_ts = sqrt(1 - beta_i)): x_s = (2 - sqrt(1 - beta_i)) x_t + beta_i score + sqrt(beta_i) z  (Alg. 3)
Predictor "euler-maruyama": one step of :mod:`difflab.samplers.sde` (diffusion "auto", eta = 1).

Corrector (Langevin with the signal-to-noise step-size rule of Alg. 2-3), a = a_ts^2 (1 for VE, 1 - beta_i for VP):

    x_s <- x_s + eps score(x_s, s) + sqrt(2 eps) z
    rule "per-sample":  eps = 2 a (snr ||z|| / ||score||)^2          norms over each sample's own elements
    rule "expected":    eps = 2 a (snr sigma_s)^2                    (default)

Song et al. average ||z|| and ||score|| over the batch, which makes a sample depend on its batch. Taken
per sample, the step depends on x through ||score(x)||, and a Langevin chain with a state-dependent step
eps(x) leaves p / eps invariant, not p: here ~ p ||score||^2, which for a Gaussian in D dimensions
inflates E||x||^2 by (D + 2) / D (nothing for images, 3 % in 64-D, ruinous in 2-D: sliced W2 0.3-1.2 on
the bench's 2-D mixture against 0.03 without a corrector). The "expected" rule puts in the values the
norms take for noise-dominated x, ||z||^2 = D and ||score||^2 = D / sigma_s^2: the step no longer depends
on x, so the chain keeps p_s, and no sample depends on another. NFE = (1 + corrector_steps) (steps - 1) + 1
on a grid of ``steps`` times above 0: the step onto t = 0 is the denoising step, without a corrector.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser, Prediction
from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, as_time, expand_to, transition_variance
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, check_grid, require_noise, run_grid
from difflab.samplers.langevin import langevin_step
from difflab.samplers.sde import diffusion_weight, euler_maruyama_step, resolve_diffusion

PREDICTORS = ("reverse-diffusion", "euler-maruyama")
CORRECTOR_RULES = ("expected", "per-sample")
DEFAULT_SNR = 0.16          # the r of Song et al. 2021's CIFAR-10 settings


def transition(process: GaussianProcess, t: float, s: float) -> tuple[float, float]:
    """(a_ts, sigma_{t|s}^2) of q(x_t | x_s) = N(a_ts x_s, sigma_{t|s}^2 I)."""
    a_t, s_t = process.alpha_sigma(as_time(t))
    a_s, s_s = process.alpha_sigma(as_time(s))
    return float(a_t / a_s), float(transition_variance(a_t, s_t, a_s, s_s))


def reverse_diffusion_step(x: Tensor, pred: Prediction, a_ts: float, var_ts: float, noise: Noise) -> Tensor:
    """x_s = (2 - a_ts) x_t + sigma_{t|s}^2 score + sigma_{t|s} z. x: (B, ...)."""
    return (2.0 - a_ts) * x + var_ts * pred.score + math.sqrt(var_ts) * noise.randn_like(x)


def langevin_correct(model: Denoiser, x: Tensor, s: float, a: float, snr: float, noise: Noise,
                     cond: Condition | None, rule: str = "expected") -> Tensor:
    """One corrector step at time s with the step-size ``rule`` (see the module docstring). x: (B, ...)."""
    score = model(x, as_time(s), cond).score                              # (B, ...)
    z = noise.randn_like(x)
    if rule == "per-sample":
        z_norm = z.flatten(1).norm(dim=1)                                 # (B,)
        score_norm = score.flatten(1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
        eps = expand_to(2.0 * a * (snr * z_norm / score_norm) ** 2, x)   # (B, 1, ...)
    else:
        sigma_s = float(model.process.alpha_sigma(as_time(s))[1])
        eps = torch.tensor(2.0 * a * (snr * sigma_s) ** 2, dtype=x.dtype, device=x.device)
    return langevin_step(x, score, eps, z)


def sample_pc(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
              cond: Condition | None = None, callback: Callback | None = None, predictor: str = "reverse-diffusion",
              corrector_steps: int = 1, snr: float = DEFAULT_SNR, corrector_rule: str = "expected") -> SampleResult:
    """Predictor-corrector from x at ts[0] down to 0. x: (B, ...); predictor in PREDICTORS;
    corrector_steps >= 0 Langevin steps after each predictor step; snr > 0; corrector_rule in CORRECTOR_RULES."""
    if predictor not in PREDICTORS:
        raise DifflabError(f"unknown --predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    if not (isinstance(corrector_steps, int) and corrector_steps >= 0):
        raise DifflabError(f"--corrector-steps must be a whole number >= 0, got {corrector_steps}")
    if corrector_rule not in CORRECTOR_RULES:
        raise DifflabError(f"unknown --corrector-rule {corrector_rule!r}; choose one of {', '.join(CORRECTOR_RULES)}")
    if not (snr > 0.0 and math.isfinite(snr)):
        raise DifflabError(f"--snr must be a finite number > 0, got {snr}")
    require_noise(noise, "pc")
    grid, process, model = check_grid(ts), denoiser.process, CountingDenoiser(denoiser)
    diffusion = resolve_diffusion(process, "auto", grid[0])

    def step(x: Tensor, pred: Prediction, t: float, s: float) -> Tensor:
        a_ts, var_ts = transition(process, t, s)
        if predictor == "reverse-diffusion":
            x = reverse_diffusion_step(x, pred, a_ts, var_ts, noise)
        else:
            x = euler_maruyama_step(x, pred, t, s, diffusion_weight(process, diffusion, t), noise)
        for _ in range(corrector_steps):
            x = langevin_correct(model, x, s, a_ts**2, snr, noise, cond, corrector_rule)
        return x

    return run_grid(model, x, grid, step, cond, callback)
