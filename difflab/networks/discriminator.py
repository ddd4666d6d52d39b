"""PatchGAN discriminator (Isola et al. 2017, pix2pix's NLayerDiscriminator), as VQGAN (Esser et al. 2021) and LDM
use it to sharpen an autoencoder's reconstructions: one logit per overlapping patch, not one per image.

Layers: conv 4x4 stride 2 + LeakyReLU(0.2); n_layers - 1 times conv 4x4 stride 2 + norm + LeakyReLU(0.2) (widths
base, 2 base, 4 base, ... capped at 8 base); conv 3x3 stride 1 + norm + LeakyReLU(0.2); conv 3x3 stride 1 -> 1 logit.
pix2pix ends with two 4x4 stride-1 convs, which shrink the map by one pixel each; the 3x3 ones here keep its size,
so an H x W image gives an (H / 2^n_layers) x (W / 2^n_layers) map (rounded down): 1x1 for 8x8 digits with
n_layers = 3, 3x3 for 28x28. Each logit sees a receptive field of 7 * 2^n_layers - 2 pixels a side (r -> 2 r + 2
per stride-2 layer from r = 5): 12, 26, 54, 110 for n_layers = 1..4 (pix2pix's 70 for n_layers = 3 with 4x4 ends).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from difflab.errors import DifflabError
from difflab.io import typed_fields

NORMS = ("batch", "group")
MAX_WIDTH_MULT = 8     # pix2pix caps the width at 8 base channels


@dataclass(frozen=True)
class PatchDiscriminatorConfig:
    in_channels: int = 1
    base_channels: int = 64
    n_layers: int = 3                          # stride-2 convolutions: the map is H / 2^n_layers a side
    norm: str = "batch"                        # "batch" (pix2pix, VQGAN) or "group" (no batch statistics)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise DifflabError(f"unknown discriminator norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        for name in ("in_channels", "base_channels", "n_layers"):
            if getattr(self, name) < 1:
                raise DifflabError(f"discriminator {name} must be >= 1, got {getattr(self, name)}")

    @property
    def receptive_field(self) -> int:
        """Pixels a side that one output logit sees: 7 * 2^n_layers - 2."""
        return 7 * 2**self.n_layers - 2

    def output_size(self, size: int) -> int:
        """The side of the logit map for an input side ``size``: each stride-2 4x4 conv (padding 1) maps s to
        floor(s / 2)."""
        for _ in range(self.n_layers):
            size //= 2
        return size

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> PatchDiscriminatorConfig:
        return cls(**typed_fields(cls, values, "the discriminator config"))


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(min(32, channels), channels)


class PatchDiscriminator(nn.Module):
    """x (B, C, H, W) -> patch logits (B, 1, H / 2^n_layers, W / 2^n_layers); positive = judged real."""

    def __init__(self, config: PatchDiscriminatorConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch = cfg.base_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for n in range(1, cfg.n_layers):
            out = cfg.base_channels * min(2**n, MAX_WIDTH_MULT)
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1, bias=False), _norm(cfg.norm, out), nn.LeakyReLU(0.2)]
            ch = out
        out = cfg.base_channels * min(2**cfg.n_layers, MAX_WIDTH_MULT)
        layers += [nn.Conv2d(ch, out, 3, padding=1, bias=False), _norm(cfg.norm, out), nn.LeakyReLU(0.2),
                   nn.Conv2d(out, 1, 3, padding=1)]
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix / VQGAN's init: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"PatchDiscriminator expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if min(self.config.output_size(s) for s in x.shape[-2:]) < 1:
            raise DifflabError(f"a discriminator with n_layers={self.config.n_layers} needs images of at least "
                               f"{2**self.config.n_layers} pixels a side, got {tuple(x.shape[-2:])}; lower n_layers")
        return self.layers(x)
