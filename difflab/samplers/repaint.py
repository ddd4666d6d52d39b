"""RePaint (Lugmayr et al. 2022): inpainting with an unconditional model by replacing the known region at each
step and resampling.

Each step t -> s of the grid (Algorithm 1, lines 4-8):

    x_s^known   = alpha_s y + sigma_s z                     (the measured pixels, noised to time s)
    x_s^unknown = an ancestral step from x_t                (DDPM, Ho et al. 2020, Algorithm 2)
    x_s         = m * x_s^known + (1 - m) * x_s^unknown

and the step onto t = 0 is the denoising step, m * y + (1 - m) * x0_hat, so the known pixels are kept exactly.
Resampling (Sec. 4.2, "jumps"): after every ``jump`` steps down, the state is noised ``jump`` grid steps back up
with the forward transition q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I) and the steps are walked again,
``resample - 1`` times at each such point (the schedule of the paper's code, jump_length and jump_n_sample):
this lets the generated region harmonise with the known one. NFE = steps + jumps x jump.

RePaint changes the state x_t itself, not the denoiser's prediction, so it is a sampler (taking any Denoiser,
on any Gaussian path) rather than a denoiser wrapper like DPS.
"""

from __future__ import annotations

from torch import Tensor

from difflab.condition import Condition
from difflab.denoisers.base import Denoiser
from difflab.errors import DifflabError
from difflab.process.base import as_time, expand_to, transition_variance
from difflab.rng import Noise
from difflab.samplers.base import Callback, CountingDenoiser, SampleResult, StepInfo, check_grid, require_noise
from difflab.samplers.ddpm import ancestral_step

DEFAULT_JUMP = 10
DEFAULT_RESAMPLE = 10


def repaint_schedule(steps: int, jump: int, resample: int) -> list[int]:
    """The grid indices RePaint visits, from ``steps`` (t_max) down to 0 (the data), with jumps back up.

    Index i is the grid's time t_i (t_0 = 0). After arriving at an index i >= 1 with (i - 1) % jump == 0 and
    i + jump <= steps, the walk goes back up ``jump`` indices and down again, ``resample - 1`` times (the
    paper's get_schedule_jump, in this grid's indexing)."""
    if jump < 1 or resample < 1:
        raise DifflabError(f"--jump and --resample must be >= 1, got {jump} and {resample}")
    left = {i: resample - 1 for i in range(1, steps - jump + 1, jump)}
    i, path = steps, [steps]
    while i > 0:
        i -= 1
        path.append(i)
        if left.get(i, 0) > 0:
            left[i] -= 1
            for _ in range(jump):
                i += 1
                path.append(i)
    return path


def sample_repaint(denoiser: Denoiser, x: Tensor, ts: Tensor, *, noise: Noise | None = None,
                   cond: Condition | None = None, callback: Callback | None = None, known: Tensor,
                   mask: Tensor, jump: int = DEFAULT_JUMP, resample: int = DEFAULT_RESAMPLE,
                   variance: str = "auto") -> SampleResult:
    """Inpaint: x (B, C, H, W) noise at ts[0]; ``known`` (B, C, H, W) the measured image (values where ``mask``
    (B or 1, 1, H, W) bool is True are kept). The grid must end at 0."""
    require_noise(noise, "repaint")
    grid, process = check_grid(ts), denoiser.process
    if grid[-1] != 0.0:
        raise DifflabError("RePaint keeps the known pixels at t = 0: the time grid must end at 0")
    model = CountingDenoiser(denoiser)
    m = expand_to(mask.to(x.device), x).to(x.dtype)                               # (B or 1, 1, H, W)
    times = grid[::-1]                                                          # times[i] = t_i, increasing
    path = repaint_schedule(len(grid) - 1, jump, resample)
    for k, (i, j) in enumerate(zip(path[:-1], path[1:])):
        t, s = times[i], times[j]
        if j > i:                                                               # a jump back up: q(x_s | x_t)
            a_t, sig_t = process.alpha_sigma(as_time(t))
            a_s, sig_s = process.alpha_sigma(as_time(s))
            std = transition_variance(a_s, sig_s, a_t, sig_t).sqrt()
            x = expand_to(a_s / a_t, x) * x + expand_to(std, x) * noise.randn_like(x)
            continue
        pred = model(x, as_time(t), cond)
        if callback is not None:
            callback(StepInfo(k, t, x, pred.x0))
        if s == 0.0:                                                            # the denoising step
            return SampleResult(m * known + (1 - m) * pred.x0, model.nfe)
        a_s, sig_s = process.alpha_sigma(as_time(s))
        x_known = expand_to(a_s, x) * known + expand_to(sig_s, x) * noise.randn_like(x)
        x = m * x_known + (1 - m) * ancestral_step(process, x, pred, t, s, noise, variance)
    raise AssertionError("the RePaint schedule ends at index 0")
