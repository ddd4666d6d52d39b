"""Load a trained run and draw samples from it with any sampler."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from difflab.config import RunConfig
from difflab.denoiser import ClippedDenoiser, Denoiser, NetworkDenoiser
from difflab.networks import build_network
from difflab.process import GaussianProcess, build_process
from difflab.rng import PerSampleNoise
from difflab.samplers import check_options, get_sampler, time_grid
from difflab.samplers.base import Callback
from difflab.training import resolve_device
from difflab.training.checkpoint import load_weights, read_json, resolve_checkpoint
from difflab.viz import plot_points, save_grid

CLIPPING_SAMPLERS = ("ddpm", "ddim")   # samplers that step through x0_hat, where clamping it to [-1, 1] helps


@dataclass
class LoadedModel:
    config: RunConfig
    network: nn.Module
    process: GaussianProcess
    checkpoint: Path
    step: int

    @property
    def example_shape(self) -> tuple[int, ...]:
        return example_shape(self.config)


def example_shape(cfg: RunConfig) -> tuple[int, ...]:
    net = cfg.network
    if net["kind"] == "mlp":
        return (net["dim"],)
    return (net["in_channels"], net["image_size"], net["image_size"])


def load_model(path: Path | str, ema: bool = True, device: str = "auto") -> LoadedModel:
    """A run folder (its latest checkpoint) or a step folder -> network with (EMA) weights, in eval mode."""
    ckpt = resolve_checkpoint(path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else Path(path)
    cfg = RunConfig.load(run_dir)
    network = build_network(cfg.network)
    load_weights(network, ckpt / ("ema.safetensors" if ema else "model.safetensors"))
    step = int(read_json(ckpt / "trainer.json").get("step", 0))
    return LoadedModel(cfg, network.to(resolve_device(device)).eval(), build_process(cfg.process), ckpt, step)


def make_denoiser(network: nn.Module, process: GaussianProcess, cfg: RunConfig, clip: bool) -> Denoiser:
    d: Denoiser = NetworkDenoiser(network, process, cfg.objective.target)
    return ClippedDenoiser(d) if clip else d


def default_labels(cfg: RunConfig, n: int, label: int | None = None) -> Tensor | None:
    """Labels for a class-conditional model: ``label`` for all, else cycling 0, 1, ..., K-1; None if unconditional."""
    K = cfg.network.get("num_classes")
    if not K:
        return None
    return torch.full((n,), label, dtype=torch.long) if label is not None else torch.arange(n) % K


@dataclass
class Generated:
    x: Tensor        # (n, ...) samples
    nfe: int         # evaluations per sample
    seconds: float


@torch.no_grad()
def generate(denoiser: Denoiser, shape: tuple[int, ...], sampler: str, steps: int, n: int, seed: int, *,
             batch_size: int = 256, spacing: str = "uniform", t_min: float | None = None,
             options: dict[str, Any] | None = None, labels: Tensor | None = None, device: torch.device | str = "cpu",
             callback: Callable[[int], Callback | None] | None = None) -> Generated:
    """n samples; sample i draws all its noise from a generator seeded with seed * 1000003 + i, so it is
    the same whatever the batch size (dopri5 aside: its step control sees the whole batch). The grid runs
    from the process's t_max to ``t_min`` (default: the process's), then 0. ``callback(batch_start)`` may
    return a per-step callback."""
    fn = get_sampler(sampler)
    check_options(sampler, options or {})
    process = denoiser.process
    ts = time_grid(process, steps, spacing, t_min)
    device = torch.device(device)
    out, nfe, t0 = [], 0, time.perf_counter()
    for start in range(0, n, batch_size):
        seeds = [seed * 1_000_003 + i for i in range(start, min(n, start + batch_size))]
        noise = PerSampleNoise(seeds, device)
        x = noise.randn(shape) * process.prior_std()
        cond = labels[start:start + len(seeds)].to(device) if labels is not None else None
        res = fn(denoiser, x, ts, noise=noise, cond=cond, callback=callback(start) if callback else None,
                 **(options or {}))
        out.append(res.x.cpu())
        nfe = max(nfe, res.nfe)                  # dopri5's NFE may differ between batches
    return Generated(torch.cat(out), nfe, time.perf_counter() - t0)


def sample_run(network: nn.Module, process: GaussianProcess, cfg: RunConfig, sampler: str, steps: int, n: int,
               seed: int, *, device: torch.device | str = "cpu", clip: bool | None = None, **kwargs: Any) -> Generated:
    """generate() for a run's network: its target, its labels, clipping by default for pixel data."""
    shape = example_shape(cfg)
    if clip is None:
        clip = len(shape) == 3 and sampler in CLIPPING_SAMPLERS
    was_training = network.training
    network.eval()
    try:
        return generate(make_denoiser(network, process, cfg, clip), shape, sampler, steps, n, seed,
                        labels=kwargs.pop("labels", default_labels(cfg, n)), device=device, **kwargs)
    finally:
        network.train(was_training)


def save_samples(x: Tensor, path: Path | str, nrow: int | None = None) -> Path:
    """Images as a PNG grid; 2-D points as a scatter plot."""
    if x.ndim == 2:
        return plot_points([("samples", x)], path)
    return save_grid(x, path, nrow=nrow)
