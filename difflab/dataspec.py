"""What a run models, recorded once at set-up: the data description every layer asks instead of guessing.

    DataSpec("pixels", (C, H, W), value_range=(-1.0, 1.0))   images, scaled to [-1, 1]
    DataSpec("latents", (C, H, W))                           an autoencoder's latents (no fixed range)
    DataSpec("points", (D,))                                 points in R^D (the 2-D toy sets)

Pipelines ask it for the example shape, whether x0 predictions may be clamped (``clip_range``: only data
with a known range), whether image metrics apply (``kind == "pixels"``); networks ask it for their input
layout. Stored in config.json as {"kind", "shape", "value_range"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

KINDS = ("pixels", "latents", "points")
PIXEL_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class DataSpec:
    kind: str                                       # one of KINDS
    shape: tuple[int, ...]                          # one example: (C, H, W) or (D,)
    value_range: tuple[float, float] | None = None  # (lo, hi) the data lies in, or None (unbounded)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown data kind {self.kind!r}; one of {', '.join(KINDS)}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.value_range is not None:
            object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        rank = 1 if self.kind == "points" else 3
        if len(self.shape) != rank or min(self.shape) < 1:
            raise ValueError(f"{self.kind} need a shape of {rank} positive sizes, got {self.shape}")

    @classmethod
    def pixels(cls, channels: int, height: int, width: int) -> DataSpec:
        return cls("pixels", (channels, height, width), PIXEL_RANGE)

    @classmethod
    def points(cls, dim: int) -> DataSpec:
        return cls("points", (dim,))

    @property
    def layout(self) -> str:
        """"image" for (C, H, W) examples, "vector" for (D,): what a network's input layer must fit."""
        return "vector" if self.kind == "points" else "image"

    @property
    def clip_range(self) -> tuple[float, float] | None:
        """Where an x0 prediction may be clamped: the data's value range, if it has one."""
        return self.value_range

    def check(self, x: Tensor, what: str = "data") -> None:
        """Raise ValueError unless x is a batch (B, *shape)."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{what} of shape {tuple(x.shape)} is not a batch of {self.kind} {self.shape}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape),
                "value_range": None if self.value_range is None else list(self.value_range)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        return cls(d["kind"], tuple(d["shape"]), None if d.get("value_range") is None else tuple(d["value_range"]))
