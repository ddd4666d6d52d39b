"""Latent diffusion's codec (Rombach et al. 2022, LDM): the diffusion runs on z = s E(x) and samples decode as
x = D(z / s), with E, D a trained KL or VQ autoencoder (difflab train-autoencoder) and s the scale factor that
gives the training latents unit variance (LDM sec. 4.3.2: s = 1 / std(E(x)) over the data).

A latent run keeps its own copy of the autoencoder's weights (RUN/autoencoder.safetensors, the SHA-256 of its
tensors in the codec's config), so it samples even after the autoencoder's run folder has moved or trained on. The config:

    {"name": "autoencoder", "network": AutoencoderConfig JSON, "scale": s, "weights": "autoencoder.safetensors",
     "sha256": io.tensors_sha256 of the weights, "source": the checkpoint folder it was copied from}

Built without its run folder (``folder=None``, as RunConfig.resolved does to size the networks), the codec
knows its spaces but cannot encode or decode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.dataspec import DataSpec
from difflab.errors import DifflabError, one_line
from difflab.io import read_tensors, tensors_sha256
from difflab.networks.autoencoder import Autoencoder, AutoencoderConfig, build_autoencoder

WEIGHTS = "autoencoder.safetensors"     # where a latent run keeps its autoencoder's weights
KEYS = ("name", "network", "scale", "weights", "sha256", "source")
CHUNK = 256                             # images or latents per encoder / decoder call when no gradient is needed


def autoencoder_spec(config: AutoencoderConfig) -> DataSpec:
    """The images an autoencoder of ``config`` reads: pixels (C, H, W) in [-1, 1]."""
    return DataSpec.pixels(config.in_channels, config.image_size, config.image_size)


def check_fits(config: AutoencoderConfig, spec: DataSpec, source: str = "the autoencoder") -> None:
    """A one-line error unless the autoencoder reads the images of ``spec`` (channels and size)."""
    want = autoencoder_spec(config)
    if spec != want:
        C, H, W = want.shape
        raise DifflabError(f"{source} encodes {C}-channel {H}x{W} images and the data are {spec.kind} "
                           f"{spec.shape}: train with --image-size {H} --channels {C}, or train an autoencoder on "
                           "this data set")


class AutoencoderCodec:
    """z = scale * E(x) (B, C, h, w); x = clamp(D(z / scale)) (B, C_in, H, W), clamped to the data's range."""

    name = "autoencoder"

    def __init__(self, data_spec: DataSpec, config: dict[str, Any], folder: Path | str | None = None) -> None:
        missing = [k for k in KEYS if k not in config]
        if missing:
            raise DifflabError(f"the autoencoder codec in config.json lacks {', '.join(missing)}; restore the file or "
                               "train the latent run again")
        self.network = AutoencoderConfig.from_json(config["network"])
        check_fits(self.network, data_spec)
        scale = config["scale"]
        if not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise DifflabError(f"the autoencoder codec's scale must be a positive number, got {scale!r}; restore "
                               "config.json")
        self.scale, self.weights, self.sha256, self.source = float(scale), config["weights"], config["sha256"], \
            config["source"]
        self.data_spec = data_spec
        self.model_spec = DataSpec("latents", self.network.latent_shape)
        self.folder = None if folder is None else Path(folder)
        self._module: Autoencoder | None = None

    @property
    def module(self) -> Autoencoder:
        """The autoencoder, its weights read (and checked against their SHA-256) at first use; frozen, eval mode."""
        if self._module is None:
            if self.folder is None:
                raise DifflabError("this autoencoder codec was built without its run folder: load the run "
                                   "(pipelines.run.load_model) to encode or decode")
            path = self.folder / self.weights
            module = build_autoencoder(self.network)
            tensors = read_tensors(path)
            if tensors_sha256(tensors) != self.sha256:
                raise DifflabError(f"the autoencoder weights {path} are damaged (their SHA-256 differs from the one in "
                                   "config.json); restore the run folder")
            try:
                module.load_state_dict(tensors)
            except RuntimeError as e:
                raise DifflabError(f"the autoencoder weights {path} do not fit its config ({one_line(e)}); restore "
                                   "the run folder") from None
            self._module = module.eval().requires_grad_(False)
        return self._module

    def attach(self, module: Autoencoder) -> AutoencoderCodec:
        """Use ``module`` (already holding this codec's weights) instead of reading them from the run folder."""
        self._module = module.eval().requires_grad_(False)
        return self

    def _on(self, x: Tensor) -> Autoencoder:
        module = self.module
        if next(module.parameters()).device != x.device:
            module.to(x.device)
        return module

    def _chunked(self, fn, x: Tensor) -> Tensor:
        """fn over x in chunks of CHUNK when no gradient is needed (bounded memory), whole otherwise."""
        if torch.is_grad_enabled() and x.requires_grad or len(x) <= CHUNK:
            return fn(x)
        return torch.cat([fn(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])

    def unscaled(self, x: Tensor) -> Tensor:
        """E(x): images (B, C_in, H, W) -> the autoencoder's latents (B, C, h, w), before scaling."""
        return self._chunked(self._on(x).encode_latent, x)

    def encode(self, x: Tensor) -> Tensor:
        """z = scale * E(x)."""
        return self.scale * self.unscaled(x)

    def decode(self, z: Tensor) -> Tensor:
        """x = D(z / scale), clamped to the data's value range (as LDM clamps before writing images)."""
        module = self._on(z)
        x = self._chunked(lambda b: module.decode(b / self.scale), z)
        lo, hi = self.data_spec.value_range
        return x.clamp(lo, hi)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "network": self.network.to_json(), "scale": self.scale, "weights": self.weights,
                "sha256": self.sha256, "source": self.source}
