"""U-Net for images (Ho et al. 2020; Dhariwal & Nichol 2021): residual blocks with GroupNorm and SiLU,
multi-head self-attention at chosen levels, a sinusoidal noise-level embedding and an optional class
embedding; and its presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.condition import Condition
from difflab.dataspec import DataSpec
from difflab.networks.base import Network
from difflab.networks.embeddings import LOG_SNR, NoiseClassEmbedding, check_condition


@dataclass(frozen=True)
class UNetConfig:
    """Shape of a U-Net. Level l works at resolution image_size / 2^l with base_channels * channel_mults[l]."""

    in_channels: int = 1
    image_size: int = 32
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1,)  # level indices (0 = full resolution) with self-attention
    head_channels: int = 32                    # channels per attention head
    dropout: float = 0.0
    num_classes: int | None = None
    norm_groups: int = 32
    out_channels: int | None = None            # None: same as in_channels
    noise_input: str = LOG_SNR                 # what the noise level is: see networks.embeddings

    def fitted(self, spec: DataSpec, num_classes: int | None = None) -> UNetConfig:
        """This config sized for examples of ``spec`` ((C, H, W) pixels or latents)."""
        return replace(self, in_channels=spec.shape[0], image_size=spec.shape[1], num_classes=num_classes)


UNET_PRESETS: dict[str, UNetConfig] = {
    # 0.70M parameters: the CPU default for 8x8 digits.
    "tiny": UNetConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,)),
    # 4.0M: 8x8 to 28x28 on a CPU with patience.
    "small": UNetConfig(base_channels=64, channel_mults=(1, 2), num_res_blocks=2, attention_levels=(1,)),
    # 15.3M: 28x28 / 32x32 on a GPU.
    "medium": UNetConfig(base_channels=96, channel_mults=(1, 2, 2), num_res_blocks=2, attention_levels=(1, 2)),
    # Ho et al. (2020) CIFAR-10 model, 35.7M: attention at 16x16, dropout 0.1.
    "ddpm-cifar10": UNetConfig(base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                               attention_levels=(1,), dropout=0.1),
}


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so its residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """h = conv(silu(gn(x))) + W emb;  out = skip(x) + conv(dropout(silu(gn(h))))."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int, head_channels: int, groups: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)                 # softmax(q k^T / sqrt(d)) v
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(Network):
    """eps/x0/v/... predictor f(x, noise, cond): x (B, C, H, W), noise (B,) noise levels, cond with (B,) labels
    or None -> (B, C_out, H, W)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch0, groups = cfg.base_channels, cfg.norm_groups
        emb_dim = 4 * ch0
        self.embed = NoiseClassEmbedding(ch0, emb_dim, cfg.num_classes, cfg.noise_input)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, cfg.dropout, groups)

        def attention(c: int, level: int) -> nn.Module:
            return SelfAttention(c, cfg.head_channels, groups) if level in cfg.attention_levels else nn.Identity()

        # Encoder: per level, num_res_blocks (ResBlock, attention) pairs, then a stride-2 conv.
        self.down, skips, ch = nn.ModuleList(), [ch0], ch0
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList([block(ch, ch0 * mult), attention(ch0 * mult, level)]))
                ch = ch0 * mult
                skips.append(ch)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1, self.mid_attn, self.mid2 = block(ch, ch), SelfAttention(ch, cfg.head_channels, groups), block(ch, ch)

        # Decoder: per level, num_res_blocks + 1 blocks, each taking one skip; then upsampling.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleList([block(ch + skips.pop(), ch0 * mult), attention(ch0 * mult, level)]))
                ch = ch0 * mult
            if level > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after nearest-neighbour upsampling
        self.norm_out = group_norm(ch, groups)
        self.conv_out = zero_init(nn.Conv2d(ch, cfg.out_channels or cfg.in_channels, 3, padding=1))

    def forward(self, x: Tensor, noise: Tensor, cond: Condition | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"UNet expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        check_condition(cond, "U-Net", labels=bool(self.config.num_classes))
        emb = self.embed(noise, cond)                               # (B, 4 C0)
        h = self.conv_in(x)                                         # (B, C0, H, W)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, emb))
            else:
                h = layer(h)                                        # (B, C, H/2, W/2)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), emb))
            else:
                h = layer(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))  # back to the skip's size
        return self.conv_out(F.silu(self.norm_out(h)))
