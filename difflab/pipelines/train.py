"""Train a diffusion model: resolve the config, build data/network/process, run the trainer, write pictures."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from difflab.config import RunConfig
from difflab.data import ArrayDataset, load_dataset
from difflab.errors import DifflabError
from difflab.networks import build_network, network_config
from difflab.objectives import diffusion_loss
from difflab.pipelines.sample import sample_run, save_samples
from difflab.process import GaussianProcess, build_process
from difflab.training import Trainer, read_log
from difflab.training.checkpoint import CHECKPOINTS, resolve_checkpoint
from difflab.training.trainer import LOG
from difflab.viz import plot_loss_curve


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    final_loss: float | None
    img_per_s: float | None


def load_training_data(cfg: RunConfig, split: str = "train") -> ArrayDataset:
    d = cfg.data
    return load_dataset(d.dataset, split=split, image_size=d.image_size, channels=d.channels)


def resolve_config(cfg: RunConfig, data: ArrayDataset) -> RunConfig:
    """Fill in what depends on the data (the network sized for it and its classes) and the process's defaults."""
    if cfg.data.class_cond and data.labels is None:
        raise DifflabError(f"--class-cond needs labels, and dataset {data.name!r} has none")
    num_classes = data.num_classes if cfg.data.class_cond else None
    net = cfg.network or network_config(cfg.model, data.example_shape, num_classes)
    process = build_process(cfg.process)
    cfg.objective.check(process)
    return replace(cfg, network=net, process=process.config())     # every process option written out


def make_loss(process: GaussianProcess, cfg: RunConfig):
    """The trainer's loss_fn: the diffusion objective on a batch (labels passed as the condition)."""
    def loss_fn(model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return diffusion_loss(model, process, cfg.objective, x, y, generator)
    return loss_fn


def train(cfg: RunConfig, run_dir: Path | str, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with resume, continue) the run in ``run_dir``; returns its timing and final loss."""
    run_dir = Path(run_dir)
    data = load_training_data(cfg)
    cfg = resolve_config(cfg, data)
    if not resume:
        if (run_dir / CHECKPOINTS).exists():
            raise DifflabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out")
        cfg.save(run_dir)
    process = build_process(cfg.process)
    network = build_network(cfg.network)
    if data.kind == "image" and tuple(data.example_shape) != (cfg.network["in_channels"], cfg.network["image_size"], cfg.network["image_size"]):
        raise DifflabError(f"data of shape {data.example_shape} does not fit the run's network config")

    def on_sample(step: int, ema_model: nn.Module) -> None:
        p = cfg.preview
        samples = sample_run(ema_model, process, cfg, p.sampler, p.steps, p.n, p.seed, device=trainer.device).x
        save_samples(samples, run_dir / "samples" / f"step_{step:07d}.png")
        save_samples(samples, run_dir / "samples.png")
        plot_loss_curve(read_log(run_dir / LOG), run_dir / "loss.png")

    trainer = Trainer(network, make_loss(process, cfg), data.data, data.labels if cfg.data.class_cond else None,
                      cfg.trainer, run_dir, on_sample=on_sample)
    if resume:
        trainer.load(resolve_checkpoint(run_dir))
    t0 = time.perf_counter()
    start = trainer.step
    trainer.run(progress=progress)
    seconds = time.perf_counter() - t0
    records = read_log(run_dir / LOG)
    return TrainResult(run_dir, trainer.step - start, seconds, records[-1]["loss"] if records else None,
                       records[-1]["img_per_s"] if records else None)
