"""Codecs: the layer between data and the diffusion (identity for pixels and points; autoencoders later)."""

from __future__ import annotations

from typing import Any

from difflab.codecs.base import Codec, IdentityCodec
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError

CODECS = {"identity": IdentityCodec}


def build_codec(config: dict[str, Any], spec: DataSpec) -> Codec:
    """Rebuild a codec from its JSON ``config``; ``spec`` is the space the run's diffusion models."""
    name = config.get("name")
    if name not in CODECS:
        raise DifflabError(f"unknown codec {name!r} in config.json; expected one of {', '.join(CODECS)}")
    return CODECS[name](spec)


__all__ = ["CODECS", "Codec", "IdentityCodec", "build_codec"]
