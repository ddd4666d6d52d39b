"""A run folder as objects: its resolved config, its data, and its trained network with process and codec.

    RUN/config.json        RunConfig (read through config.migrate, so runs of older versions load)
    RUN/checkpoints/...    weights and trainer state (difflab.training.checkpoint)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from difflab.codecs import Codec, build_codec
from difflab.condition import Condition
from difflab.config import RunConfig
from difflab.data import ArrayDataset, load_dataset
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.io import read_json
from difflab.networks import build_network
from difflab.process import GaussianProcess, build_process
from difflab.training import resolve_device
from difflab.training.checkpoint import load_weights, resolve_checkpoint, run_folder


@dataclass
class LoadedModel:
    config: RunConfig
    network: nn.Module
    process: GaussianProcess
    codec: Codec
    checkpoint: Path
    step: int
    run_dir: Path

    @property
    def spec(self) -> DataSpec:
        """What the diffusion models (the codec's model space)."""
        return self.codec.model_spec


def load_run_data(cfg: RunConfig, split: str = "train") -> ArrayDataset:
    """The run's data set (one split), at the size and channels the run was trained on."""
    d = cfg.data
    return load_dataset(d.dataset, split=split, image_size=d.image_size, channels=d.channels)


def run_codec(cfg: RunConfig) -> Codec:
    """The codec of a resolved run config."""
    if cfg.spec is None:
        raise DifflabError("the run's config.json has no data description (spec); was it written by hand?")
    return build_codec(cfg.codec, cfg.spec)


def num_classes(cfg: RunConfig) -> int | None:
    """The number of classes a class-conditional run was trained on, else None."""
    return cfg.network.get("num_classes") if cfg.data.class_cond else None


def data_conditions(cfg: RunConfig, data: ArrayDataset) -> Condition | None:
    """What each training example is conditioned on: its label in a class-conditional run, else nothing."""
    if not cfg.data.class_cond:
        return None
    if data.labels is None:
        raise DifflabError(f"--class-cond needs labels, and dataset {data.name!r} has none")
    return Condition(labels=data.labels)


def default_condition(cfg: RunConfig, n: int, label: int | None = None) -> Condition | None:
    """The condition of n samples: for a class-conditional run ``label`` for all, else cycling 0, 1, ..., K-1;
    None for an unconditional run."""
    K = num_classes(cfg)
    if not K:
        return None
    labels = torch.full((n,), label, dtype=torch.long) if label is not None else torch.arange(n) % K
    return Condition(labels=labels)


def load_model(path: Path | str, ema: bool = True, device: str = "auto") -> LoadedModel:
    """A run folder (its latest checkpoint) or a step folder -> network with (EMA) weights, in eval mode."""
    ckpt = resolve_checkpoint(path)
    run_dir = run_folder(ckpt)
    cfg = RunConfig.load(run_dir)
    network = build_network(cfg.network)
    load_weights(network, ckpt / ("ema.safetensors" if ema else "model.safetensors"))
    step = int(read_json(ckpt / "trainer.json").get("step", 0))
    return LoadedModel(cfg, network.to(resolve_device(device)).eval(), build_process(cfg.process), run_codec(cfg),
                       ckpt, step, run_dir)
