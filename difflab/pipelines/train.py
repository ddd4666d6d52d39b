"""Train a diffusion model: resolve the config, build data/codec/network/process, run the trainer, write pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from difflab.codecs import Codec
from difflab.condition import Condition
from difflab.config import RunConfig
from difflab.data import ArrayDataset
from difflab.data.image_cache import open_cached, resolve_loader
from difflab.data.memmap import MemmapImages, StreamingSource
from difflab.errors import DifflabError
from difflab.io import check_output_folder, output_error
from difflab.networks import build_network
from difflab.objectives import classifier_loss, diffusion_loss
from difflab.pipelines.run import Request, data_conditions, load_run_data, preview_request, run_codec, text_encoder
from difflab.pipelines.latents import is_latent, prepare_latents
from difflab.pipelines.classifier import ACCURACY, write_classifier_accuracy
from difflab.pipelines.sample import sample_run, save_samples
from difflab.process import GaussianProcess, build_process
from difflab.training import Hook, Trainer, TrainResult, read_log, resolve_device
from difflab.training.checkpoint import CHECKPOINTS, clean_checkpoints, latest_checkpoint
from difflab.training.distributed import Distributed, from_environment
from difflab.training.trainer import LOG, truncate_log
from difflab.viz import plot_loss_curve

EVAL_LOG = "eval.jsonl"


def make_loss(process: GaussianProcess, cfg: RunConfig):
    """The trainer's loss_fn: the diffusion objective on a batch with the batch's conditions, or a classifier
    run's cross-entropy on its labels."""
    loss = classifier_loss if cfg.task == "classifier" else diffusion_loss

    def loss_fn(model: nn.Module, x: Tensor, cond: Condition | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return loss(model, process, cfg.objective, x, cond, generator)
    return loss_fn


def restoration_rows(inputs: Tensor, restored: Tensor, truth: Tensor) -> tuple[Tensor, int]:
    """The picture of n restorations (each (n, C, H, W)): rows of k = ceil(sqrt(n)) examples in threes, the
    upsampled low-resolution inputs, their restorations, the truth (a short last row padded with white).
    Returns the images in grid order and k, the row length."""
    n = len(restored)
    k = math.ceil(math.sqrt(n))
    rows = []
    for start in range(0, n, k):
        for images in (inputs, restored, truth):
            row = images[start:start + k].to(restored)
            rows += [row, row.new_ones(k - len(row), *row.shape[1:])]
    return torch.cat(rows), k


def eval_hook(cfg: RunConfig, process: GaussianProcess, run_dir: Path, asked: Request,
              codec: Codec) -> Callable[[int, nn.Module], None]:
    """A hook that measures the EMA model's samples (drawn like the preview grids) and appends to eval.jsonl
    (replacing a line of the same step, so a hook run again after a kill leaves one line per step). The
    feature extractor is built once, here, so each evaluation costs the sampling and one feature pass.
    ``asked``: what a conditional run's samples are asked for (then the asked-for class's accuracy is logged too)."""
    from difflab.metrics import MetricOptions
    from difflab.pipelines.evaluate import evaluate, run_extractor

    e, p = cfg.evaluation, cfg.preview
    device = resolve_device(cfg.trainer.device)
    extractor = run_extractor(cfg, e.features, e.inception_weights, device=device)
    path = run_dir / EVAL_LOG

    def hook(step: int, ema_model: nn.Module) -> None:
        result = evaluate(ema_model, process, cfg, sampler=p.sampler, steps=p.steps, n=asked.n or e.n, seed=p.seed,
                          extractor=extractor, metric_options=MetricOptions(fid_resamples=e.fid_resamples),
                          device=device, step=step, cond=asked.cond, labels=asked.labels, codec=codec)
        try:
            truncate_log(path, step - 1)
            with open(path, "a") as f:
                f.write(json.dumps(result.to_dict()) + "\n")
        except OSError as err:
            raise output_error(path, err) from None
        tqdm.write(f"step {step}: FID {result.report.fid:.4f}, KID {result.report.kid_mean:.5f}, "
                   f"IS {result.report.is_mean:.3f}, precision {result.report.precision:.3f}, "
                   f"recall {result.report.recall:.3f}"
                   + (f", accuracy {result.accuracy['accuracy']:.3f}" if result.accuracy else ""))
    return hook


def training_data(cfg: RunConfig, progress: bool) -> ArrayDataset | MemmapImages:
    """The run's training split: in memory, or (--loader memmap, or auto for a large image folder or .npz) the
    disk cache's memory map, decoded once, which the trainer streams through DataLoader workers."""
    d = cfg.data
    if resolve_loader(cfg.trainer.loader, d.dataset, image_size=d.image_size, channels=d.channels) == "memory":
        return load_run_data(cfg)
    if is_latent(cfg) or d.sr_scale is not None:
        what = "latent diffusion (--autoencoder)" if is_latent(cfg) else "super-resolution (--task sr)"
        raise DifflabError(f"{what} trains on data held in memory: use --loader memory")
    return open_cached(d.dataset, split="train", image_size=d.image_size, channels=d.channels, progress=progress)


def train(cfg: RunConfig, run_dir: Path | str, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or, with resume, continue) the run in ``run_dir``; returns its timing and final loss.

    Everything is checked before anything is written: the data, the resolved config, the device, the
    checkpoint to resume and the output folder, so a mistake leaves the run folder as it was. Resuming a run
    that has no complete checkpoint (killed before its first) starts it again from step 0; a fresh run may
    go into such a folder too. A resumed run already at its last step redoes its end-of-run work (samples,
    plots, evaluation) in case a kill cut it short.

    Started by torchrun (several processes), every process runs this; they train as one data parallel run
    (difflab.training.distributed) and only rank 0 writes."""
    dist = from_environment(cfg.trainer.device)
    try:
        return train_process(cfg, Path(run_dir), resume, progress, dist)
    finally:
        dist.shutdown()


def train_process(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool, dist: Distributed) -> TrainResult:
    """:func:`train` in one process of ``dist``."""
    device = resolve_device(dist.device(cfg.trainer.device))
    check_output_folder(run_dir, "--resume" if resume else "--out")
    with dist.main_first():         # rank 0 builds a disk cache first; the others open it
        data = training_data(cfg, progress and dist.is_main)
    encoder = text_encoder(cfg) if cfg.data.text_encoder is not None and cfg.task == "diffusion" else None
    conditions = data_conditions(cfg, data, encoder)
    labelled = cfg.data.class_cond or cfg.task == "classifier"
    latent = None
    if is_latent(cfg):          # latent diffusion: the images encoded once (cached), scaled to unit variance
        with dist.main_first():     # rank 0 encodes and caches; the others read its cache
            cfg, latent = prepare_latents(cfg, data, run_dir, device, progress and dist.is_main)
    cfg = cfg.resolved(data.spec, data.num_classes if labelled else None, encoder.dim if encoder else None)
    codec = latent.codec if latent is not None else run_codec(cfg)
    if data.spec != codec.data_spec:
        raise DifflabError(f"the data ({data.spec.kind} {data.spec.shape}) do not fit the run's config "
                           f"({codec.data_spec.kind} {codec.data_spec.shape}); was the data set changed?")
    if cfg.trainer.batch_size > len(data):
        raise DifflabError(f"--batch-size {cfg.trainer.batch_size} is more than the {len(data)} training examples; "
                           f"use at most {len(data)}")
    found = latest_checkpoint(run_dir)
    if not resume and found is not None:
        raise DifflabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out")
    dist.barrier()                  # every rank has looked for a checkpoint before rank 0 may write one
    process = build_process(cfg.process)
    torch.manual_seed(cfg.trainer.seed)     # the initial weights depend on --seed alone
    network = build_network(cfg.network)

    p = cfg.preview
    heldout, examples = None, conditions
    if cfg.data.sr_scale is not None:   # restorations of held-out images, spread over the split (it may be sorted)
        test = load_run_data(cfg, split="test")
        rows = torch.linspace(0, len(test) - 1, min(p.n, len(test))).round().long()
        heldout, examples = test.data[rows], data_conditions(cfg, test)[rows]
    preview = Request(None, None, None) if cfg.task == "classifier" else preview_request(cfg, p.n, encoder, examples)

    def on_sample(step: int, ema_model: nn.Module) -> None:
        if cfg.task == "classifier":        # a classifier's "samples": its accuracy on held-out data by noise level
            write_classifier_accuracy(ema_model, process, cfg, run_dir / ACCURACY, step, codec)
        else:
            samples = sample_run(ema_model, process, cfg, p.sampler, p.steps, preview.n or p.n, p.seed,
                                 device=trainer.device, cond=preview.cond, codec=codec).x
            nrow = preview.nrow
            if heldout is not None:
                samples, nrow = restoration_rows(preview.cond.image, samples, heldout[:len(samples)])
            save_samples(samples, run_dir / "samples" / f"step_{step:07d}.png", codec.data_spec, nrow=nrow)
            save_samples(samples, run_dir / "samples.png", codec.data_spec, nrow=nrow)
        plot_loss_curve(read_log(run_dir / LOG), run_dir / "loss.png")

    hooks = [Hook(cfg.trainer.sample_every, on_sample)]
    if cfg.evaluation.every and dist.is_main:      # the hooks run on rank 0 only
        asked = preview_request(cfg, cfg.evaluation.n, encoder, conditions)
        hooks.append(Hook(cfg.evaluation.every, eval_hook(cfg, process, run_dir, asked, codec), at_end=True))
    if isinstance(data, MemmapImages):
        examples = StreamingSource(data, workers=cfg.trainer.workers)
    else:
        examples = latent.latents if latent else codec.encode(data.data)
    trainer = Trainer(network, make_loss(process, cfg), examples, conditions, cfg.trainer, run_dir, hooks=hooks,
                      dist=dist)
    if found is not None:
        trainer.resume_from(found)
    # Nothing has been written so far; from here on the run folder changes (rank 0 writes).
    if not dist.is_main:
        return trainer.run_to_end(progress=False)
    try:
        cfg.save(run_dir)              # on resume: the new --steps, logging and evaluation options
        if latent is not None:
            latent.write_weights(run_dir)   # a fresh latent run: its own copy of the autoencoder
        clean_checkpoints(run_dir / CHECKPOINTS, cfg.trainer.keep_checkpoints)
        for log in (LOG, EVAL_LOG):     # a fresh start forgets the lines of a run that left no checkpoint
            truncate_log(run_dir / log, trainer.step)
    except OSError as e:
        raise output_error(e.filename or run_dir, e) from None
    return trainer.run_to_end(progress)
