"""What the diffusion runs on: data -> codec.encode -> objective -> ... -> sampler -> codec.decode -> data.

A codec maps the user's data (``data_spec``, e.g. pixels (3, 32, 32) in [-1, 1]) to the space the diffusion
models (``model_spec``: the same pixels for the identity codec; an autoencoder's latents otherwise) and back.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

from difflab.dataspec import DataSpec


class Codec(Protocol):
    name: str
    data_spec: DataSpec      # the data a user gives and gets back
    model_spec: DataSpec     # what the diffusion models: networks are sized for it, samplers draw it

    def encode(self, x: Tensor) -> Tensor:
        """(B, *data_spec.shape) -> (B, *model_spec.shape)."""

    def decode(self, z: Tensor) -> Tensor:
        """(B, *model_spec.shape) -> (B, *data_spec.shape)."""

    def config(self) -> dict[str, Any]:
        """The JSON that rebuilds this codec with :func:`difflab.codecs.build_codec`."""


class IdentityCodec:
    """Diffusion on the data itself (pixels or points): encode and decode return their input."""

    name = "identity"

    def __init__(self, spec: DataSpec) -> None:
        self.data_spec = self.model_spec = spec

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z

    def config(self) -> dict[str, Any]:
        return {"name": self.name}
