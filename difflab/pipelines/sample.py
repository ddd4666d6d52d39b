"""Draw samples from a trained network with any sampler, and save them as the data they are."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from difflab.codecs import Codec
from difflab.condition import Condition
from difflab.config import RunConfig
from difflab.dataspec import DataSpec
from difflab.denoisers import ClassifierFreeGuidance, ClassifierGuidance, ClippedDenoiser, Denoiser, NetworkDenoiser
from difflab.denoisers.guidance import ClassProbabilities
from difflab.errors import DifflabError
from difflab.pipelines.run import default_condition, is_conditional, run_codec
from difflab.process import GaussianProcess
from difflab.resources import check_memory
from difflab.rng import PerSampleNoise
from difflab.process.base import resolve_variance
from difflab.samplers import StepInfo, check_options, get_sampler, sampler_options, time_grid
from difflab.samplers.base import Callback
from difflab.viz import GRID_SUFFIXES, PLOT_SUFFIXES, plot_points, save_grid

CLIPPING_SAMPLERS = ("ddpm", "ddim")   # samplers that step through x0_hat, where clamping it to the data range helps


@dataclass(frozen=True)
class Guidance:
    """How sampling is steered (denoisers.guidance). scale: the classifier-free guidance scale w (1: the
    conditional model as trained; 0: the unconditional one), optionally only at times inside ``interval``;
    classifier: log p(y | x_t) of a noise-aware classifier, its gradient added to the score times
    ``classifier_scale``."""

    scale: float = 1.0
    interval: tuple[float, float] | None = None
    classifier: ClassProbabilities | None = None
    classifier_scale: float = 1.0

    @property
    def classifier_free(self) -> bool:
        return self.scale != 1.0


def make_denoiser(network: nn.Module, process: GaussianProcess, cfg: RunConfig, clip: bool,
                  guidance: Guidance | None = None, wrap: Callable[[Denoiser], Denoiser] | None = None) -> Denoiser:
    """The run's network read through its process and target, steered by ``guidance`` (classifier-free, then
    classifier guidance) and ``wrap`` (e.g. posterior sampling for a measurement), its x0 clamped to the data's
    range if ``clip`` (and the data has a range)."""
    d: Denoiser = NetworkDenoiser(network, process, cfg.objective.target, cfg.objective.learn_variance)
    if guidance is not None and guidance.classifier_free:
        if not is_conditional(cfg):
            raise DifflabError("--guidance needs a conditional model (difflab train --class-cond or --text); "
                               "steer an unconditional one with --classifier")
        d = ClassifierFreeGuidance(d, guidance.scale, guidance.interval)
    if guidance is not None and guidance.classifier is not None:
        d = ClassifierGuidance(d, guidance.classifier, guidance.classifier_scale, inner_reads_labels=cfg.data.class_cond)
    if wrap is not None:
        d = wrap(d)
    bounds = cfg.spec.clip_range if cfg.spec is not None else None
    return ClippedDenoiser(d, *bounds) if clip and bounds is not None else d


@dataclass
class Generated:
    x: Tensor        # (n, ...) samples
    nfe: int         # evaluations per sample
    seconds: float


@torch.no_grad()
def generate(denoiser: Denoiser, shape: tuple[int, ...], sampler: str, steps: int, n: int, seed: int, *,
             batch_size: int = 256, spacing: str = "uniform", t_min: float | None = None,
             options: dict[str, Any] | None = None, cond: Condition | None = None,
             device: torch.device | str = "cpu", callback: Callable[[int], Callback | None] | None = None,
             progress: bool = False) -> Generated:
    """n samples of ``shape``; sample i draws all its noise from its own generator (rng.derived_seed(seed, i)),
    so it is the same whatever the batch size (dopri5 aside: its step control sees the whole batch). The grid
    runs from the process's t_max to ``t_min`` (default: the process's), then 0. ``cond`` holds the n samples'
    conditions. ``callback(batch_start)`` may return a per-step callback; ``progress`` shows a bar of the
    steps (of the evaluations, for an adaptive solver) on stderr. Samples that are not finite are an error."""
    fn = get_sampler(sampler)
    check_options(sampler, options or {})
    check_memory(4.0 * n * math.prod(shape), f"{n} samples of shape {tuple(shape)}",
                 "draw fewer with --n, several times with different --seed")
    process = denoiser.process
    ts = time_grid(process, steps, spacing, t_min)
    device = torch.device(device)
    adaptive = "rtol" in sampler_options(sampler)         # an adaptive solver reports evaluations, not grid steps
    total = None if adaptive else math.ceil(n / batch_size) * (len(ts) - 1)
    bars: list[tqdm] = []                                 # opened at the first step, after the sampler's checks

    def step_callback(start: int) -> Callback:
        inner = callback(start) if callback else None

        def on_step(info: StepInfo) -> None:
            if not bars:
                bars.append(tqdm(total=total, disable=not progress, dynamic_ncols=True,
                                 unit="eval" if adaptive else "step", desc=f"sampling {n} with {sampler}"))
            bars[0].update(1)
            if inner is not None:
                inner(info)
        return on_step

    out, nfe, t0 = [], 0, time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            noise = PerSampleNoise.for_items(seed, start, stop, device)
            x = noise.randn(shape) * process.prior_std()
            batch_cond = cond[start:stop].to(device) if cond is not None else None
            res = fn(denoiser, x, ts, noise=noise, cond=batch_cond, callback=step_callback(start), **(options or {}))
            out.append(res.x.cpu())
            nfe = max(nfe, res.nfe)                  # dopri5's NFE may differ between batches
    finally:
        for bar in bars:
            bar.close()
    x = torch.cat(out)
    check_finite(x, f"samples ({sampler}, {steps} steps)")
    return Generated(x, nfe, time.perf_counter() - t0)


def check_finite(x: Tensor, what: str) -> None:
    """A one-line error if any of the images or points x (N, ...) hold NaN or infinite values."""
    bad = int((~torch.isfinite(x.flatten(1)).all(1)).sum())
    if bad:
        raise DifflabError(f"{bad} of {len(x)} {what} hold NaN or infinite values: the model or the sampler "
                           "diverges; try more --steps or another --sampler, or check the weights")


def sample_run(network: nn.Module, process: GaussianProcess, cfg: RunConfig, sampler: str, steps: int, n: int,
               seed: int, *, device: torch.device | str = "cpu", clip: bool | None = None,
               cond: Condition | None = None, guidance: Guidance | None = None, codec: Codec | None = None,
               **kwargs: Any) -> Generated:
    """generate() for a run's network: its target, its data's shape, the n samples' condition (None: the run's
    default, its classes cycled; pass a null Condition for unconditional samples of a conditional run), the
    ``guidance`` that steers it (None: the model as trained), x0
    clipped by default for data with a range on the samplers that step through x0, and the samples decoded
    by the run's ``codec`` into the data's space (None: the run's codec without weights, enough for the identity
    codec; a latent run's LoadedModel.codec holds its autoencoder)."""
    codec = codec or run_codec(cfg)
    clip = resolve_clip(clip, codec.model_spec, sampler)
    if (kwargs.get("options") or {}).get("variance") == "learned":
        resolve_variance("learned", cfg.objective.learn_variance)     # a one-line error before the first step
    if cond is None:
        cond = default_condition(cfg, n)
    was_training = network.training
    network.eval()
    try:
        out = generate(make_denoiser(network, process, cfg, clip, guidance), codec.model_spec.shape, sampler, steps,
                       n, seed, cond=cond, device=device, **kwargs)
    finally:
        network.train(was_training)
    with torch.no_grad():
        x = codec.decode(out.x.to(device)).cpu()        # a latent run: decoded by its autoencoder, in chunks
    return Generated(x, out.nfe, out.seconds)


def resolve_clip(clip: bool | None, spec: DataSpec, sampler: str) -> bool:
    """Whether to clamp x0 to the data's range: as asked, or by default for data with a range on the samplers
    that step through x0 (CLIPPING_SAMPLERS)."""
    return clip if clip is not None else (spec.clip_range is not None and sampler in CLIPPING_SAMPLERS)


def picture_suffixes(spec: DataSpec) -> tuple[str, ...]:
    """The file types :func:`save_samples` writes samples of data ``spec`` as."""
    return PLOT_SUFFIXES if spec.kind == "points" else GRID_SUFFIXES


def save_samples(x: Tensor, path: Path | str, spec: DataSpec, nrow: int | None = None) -> Path:
    """Samples of data ``spec`` as a picture: images as a PNG grid, points as a scatter plot."""
    if picture_suffixes(spec) == PLOT_SUFFIXES:
        return plot_points([("samples", x)], path)
    return save_grid(x, path, nrow=nrow)
