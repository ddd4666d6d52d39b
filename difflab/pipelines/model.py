"""A trained model as objects (the network with its process and codec, and where it came from), whatever
folder it was read from: a difflab run (pipelines.run) or a diffusers checkpoint (pipelines.diffusers_run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from difflab.codecs import Codec, build_codec, codec_data_spec
from difflab.config import RunConfig
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.process import GaussianProcess


@dataclass
class LoadedModel:
    config: RunConfig
    network: nn.Module
    process: GaussianProcess
    codec: Codec
    checkpoint: Path
    step: int
    run_dir: Path
    source: str = "difflab"         # what wrote it: "difflab" (a run: raw and EMA weights) or "diffusers" (one set)

    @property
    def spec(self) -> DataSpec:
        """What the diffusion models (the codec's model space)."""
        return self.codec.model_spec


def run_codec(cfg: RunConfig, run_dir: Path | str | None = None) -> Codec:
    """The codec of a resolved run config; ``run_dir``: the run folder, where a latent run keeps its autoencoder's
    weights (without it a latent run's codec knows its spaces but cannot encode or decode)."""
    if cfg.spec is None:
        raise DifflabError("the run's config.json has no data description (spec); was it written by hand?")
    codec = build_codec(cfg.codec, codec_data_spec(cfg.codec, cfg.spec), run_dir)
    if codec.model_spec != cfg.spec:
        raise DifflabError(f"config.json's spec {cfg.spec.kind} {cfg.spec.shape} is not what its codec makes "
                           f"({codec.model_spec.kind} {codec.model_spec.shape}); restore the file")
    return codec


# What loading a model for the wrong role is answered with, by the role asked for.
TASK_MISMATCH = {
    "diffusion": "{run} is a noise-aware classifier (difflab train-classifier), not a generative model: sample a "
                 "diffusion run and name this one with --classifier",
    "classifier": "{run} is a diffusion model, not a classifier: --classifier takes a run of difflab train-classifier",
}
