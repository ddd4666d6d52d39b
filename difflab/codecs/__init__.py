"""Codecs: the layer between data and the diffusion: identity for pixels and points, an autoencoder's latents for
latent diffusion (codecs/autoencoder.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difflab.codecs.autoencoder import AutoencoderCodec, autoencoder_spec
from difflab.codecs.base import Codec, IdentityCodec
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError

CODECS = {"identity": IdentityCodec, "autoencoder": AutoencoderCodec}


def build_codec(config: dict[str, Any], spec: DataSpec, folder: Path | str | None = None) -> Codec:
    """Rebuild a codec from its JSON ``config``; ``spec`` is the data the user gives and gets back; ``folder``:
    the run folder holding a codec's weights (None: a codec that can tell its spaces but not encode with weights)."""
    name = config.get("name")
    if name not in CODECS:
        raise DifflabError(f"unknown codec {name!r} in config.json; expected one of {', '.join(CODECS)}")
    if name == "identity":
        return IdentityCodec(spec)
    return CODECS[name](spec, config, folder)


def codec_data_spec(config: dict[str, Any], model_spec: DataSpec) -> DataSpec:
    """The data a codec of ``config`` gives back, for a run whose diffusion models ``model_spec`` (what
    config.json records): the same for the identity codec, the autoencoder's images for an autoencoder codec."""
    if config.get("name") == AutoencoderCodec.name and isinstance(config.get("network"), dict):
        from difflab.networks.autoencoder import AutoencoderConfig
        return autoencoder_spec(AutoencoderConfig.from_json(config["network"]))
    return model_spec


__all__ = ["CODECS", "AutoencoderCodec", "Codec", "IdentityCodec", "build_codec", "codec_data_spec"]
