"""U-Net for images (Ho et al. 2020; Dhariwal & Nichol 2021): residual blocks with GroupNorm and SiLU,
multi-head self-attention at chosen levels, a sinusoidal noise-level embedding and an optional class
embedding; optional text conditioning by cross-attention to a context of token embeddings (Rombach et al.
2022, LDM); optional image conditioning by channels concatenated to the input (SR3, Saharia et al. 2021);
and its presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.condition import Condition, check_condition
from difflab.dataspec import DataSpec
from difflab.networks.base import Network
from difflab.networks.embeddings import LOG_SNR, NoiseClassEmbedding


@dataclass(frozen=True)
class LevelsConfig:
    """The shape every network built on the U-Net's encoder shares. Level l works at resolution
    image_size / 2^l with base_channels * channel_mults[l]."""

    in_channels: int = 1
    image_size: int = 32
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1,)  # level indices (0 = full resolution) with self-attention
    head_channels: int = 32                    # channels per attention head
    dropout: float = 0.0
    norm_groups: int = 32
    noise_input: str = LOG_SNR                 # what the noise level is: see networks.embeddings


@dataclass(frozen=True)
class UNetConfig(LevelsConfig):
    """Shape of a U-Net: the encoder's levels (LevelsConfig), mirrored by the decoder."""

    num_classes: int | None = None
    out_channels: int | None = None            # None: same as in_channels
    context_dim: int | None = None             # E of a text context (B, L, E) to cross-attend to; None: no text
    cross_attention_levels: tuple[int, ...] = (1,)  # levels with cross-attention (and always the middle block),
                                                    # used only when context_dim is set
    cond_channels: int = 0                     # channels of cond.image concatenated to x before conv_in (SR3's
                                               # upsampled low-resolution image); 0: no image

    def fitted(self, spec: DataSpec, num_classes: int | None = None) -> UNetConfig:
        """This config sized for examples of ``spec`` ((C, H, W) pixels or latents)."""
        return replace(self, in_channels=spec.shape[0], image_size=spec.shape[1], num_classes=num_classes)


UNET_PRESETS: dict[str, UNetConfig] = {
    # 0.70M parameters: the CPU default for 8x8 digits.
    "tiny": UNetConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,)),
    # 4.0M: 8x8 to 28x28 on a CPU with patience.
    "small": UNetConfig(base_channels=64, channel_mults=(1, 2), num_res_blocks=2, attention_levels=(1,)),
    # 15.3M: 28x28 / 32x32 on a GPU.
    "medium": UNetConfig(base_channels=96, channel_mults=(1, 2, 2), num_res_blocks=2, attention_levels=(1, 2),
                         cross_attention_levels=(1, 2)),
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


def encoder_levels(cfg: LevelsConfig, stage: Callable[[int, int, int], nn.Module]) -> tuple[nn.ModuleList, list[int]]:
    """The U-Net's encoder: per level, num_res_blocks ``stage(c_in, c_out, level)`` modules, then a stride-2 conv
    (not after the last level). Returns the modules and the channels after conv_in and after each module (the
    skips the decoder reads; the last is the middle block's width)."""
    ch0 = cfg.base_channels
    down, skips, ch = nn.ModuleList(), [ch0], ch0
    for level, mult in enumerate(cfg.channel_mults):
        for _ in range(cfg.num_res_blocks):
            down.append(stage(ch, ch0 * mult, level))
            ch = ch0 * mult
            skips.append(ch)
        if level < len(cfg.channel_mults) - 1:
            down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            skips.append(ch)
    return down, skips


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


class CrossAttention(nn.Module):
    """Multi-head attention from the H*W positions to a context of L tokens, with a residual connection
    (Rombach et al. 2022, LDM, sec. 3.3): q = W_q gn(x), k = W_k ln(c), v = W_v ln(c),
    out = x + W_o softmax(q k^T / sqrt(d) + mask) v.

    A learned null key/value pair is prepended to every context and never masked: a row whose tokens are all
    masked (the null condition, the empty prompt) attends to it alone instead of to nothing (a softmax over
    no keys is 0/0), and masked tokens never change the result.
    """

    def __init__(self, channels: int, context_dim: int, head_channels: int, groups: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.context_norm = nn.LayerNorm(context_dim)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.null_kv = nn.Parameter(torch.randn(2, channels) / math.sqrt(channels))   # [k; v] of the null token
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """x (B, C, H, W), context (B, L, E), mask (B, L) bool (True = a token) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        heads, d = self.heads, C // self.heads
        q = self.q(self.norm(x)).reshape(B, heads, d, H * W).transpose(-1, -2)       # (B, heads, HW, d)
        kv = self.kv(self.context_norm(context))                                     # (B, L, 2C)
        kv = torch.cat([self.null_kv.expand(B, 1, 2, C).reshape(B, 1, 2 * C), kv], dim=1)   # (B, 1 + L, 2C)
        k, v = kv.reshape(B, -1, 2, heads, d).permute(2, 0, 3, 1, 4)                 # each (B, heads, 1 + L, d)
        keep = torch.cat([mask.new_ones(B, 1), mask], dim=1)[:, None, None, :]       # (B, 1, 1, 1 + L)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)                  # masked logits -> -inf
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(Network):
    """eps/x0/v/... predictor f(x, noise, cond): x (B, C, H, W), noise (B,) noise levels, cond with (B,) labels
    and/or a context (B, L, E) with its mask (B, L) and/or an image (B, cond_channels, H, W), or None
    -> (B, C_out, H, W).

    A U-Net built with ``context_dim`` cross-attends to the context after the self-attention of each level in
    ``cross_attention_levels`` and in the middle block; without a context it reads the null condition.
    A U-Net built with ``cond_channels`` reads conv_in([x; image]) (SR3): the image is part of its input, so
    every call must carry one.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch0, groups = cfg.base_channels, cfg.norm_groups
        if cfg.context_dim is not None:
            if cfg.context_dim < 1:
                raise ValueError(f"context_dim must be >= 1, got {cfg.context_dim}")
            outside = sorted(set(cfg.cross_attention_levels) - set(range(len(cfg.channel_mults))))
            if outside:
                raise ValueError(f"cross_attention_levels {outside} are not levels of channel_mults "
                                 f"{cfg.channel_mults}")
        if cfg.cond_channels < 0:
            raise ValueError(f"cond_channels must be >= 0, got {cfg.cond_channels}")
        emb_dim = 4 * ch0
        self.embed = NoiseClassEmbedding(ch0, emb_dim, cfg.num_classes, cfg.noise_input)
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.cond_channels, ch0, 3, padding=1)

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, cfg.dropout, groups)

        def attention(c: int, level: int) -> nn.Module:
            return SelfAttention(c, cfg.head_channels, groups) if level in cfg.attention_levels else nn.Identity()

        def cross_attention(c: int) -> CrossAttention:
            return CrossAttention(c, cfg.context_dim, cfg.head_channels, groups)

        def stage(c_in: int, c_out: int, level: int) -> nn.ModuleList:
            """[ResBlock, self-attention or Identity] and, in a text U-Net at a cross-attention level, a third
            module (so a U-Net without text has exactly the parameter names it always had)."""
            modules = [block(c_in, c_out), attention(c_out, level)]
            if cfg.context_dim is not None and level in cfg.cross_attention_levels:
                modules.append(cross_attention(c_out))
            return nn.ModuleList(modules)

        self.down, skips = encoder_levels(cfg, stage)
        ch = skips[-1]
        self.mid1, self.mid_attn, self.mid2 = block(ch, ch), SelfAttention(ch, cfg.head_channels, groups), block(ch, ch)
        self.mid_cross = cross_attention(ch) if cfg.context_dim is not None else None

        # Decoder: per level, num_res_blocks + 1 blocks, each taking one skip; then upsampling.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(stage(ch + skips.pop(), ch0 * mult, level))
                ch = ch0 * mult
            if level > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after nearest-neighbour upsampling
        self.norm_out = group_norm(ch, groups)
        self.conv_out = zero_init(nn.Conv2d(ch, cfg.out_channels or cfg.in_channels, 3, padding=1))

    def forward(self, x: Tensor, noise: Tensor, cond: Condition | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"UNet expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        check_condition(cond, "U-Net", labels=bool(self.config.num_classes), context=bool(self.config.context_dim),
                        image=bool(self.config.cond_channels))
        emb = self.embed(noise, cond)                               # (B, 4 C0)
        context = self.read_context(x, cond)                        # ((B, L, E), (B, L)) or None
        image = self.read_image(x, cond)                            # (B, C_cond, H, W) or None

        def run(stage: nn.ModuleList, h: Tensor) -> Tensor:
            h = stage[1](stage[0](h, emb))
            return stage[2](h, *context) if len(stage) == 3 else h

        h = self.conv_in(x if image is None else torch.cat([x, image], dim=1))   # (B, C0, H, W)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = run(layer, h)
            else:
                h = layer(h)                                        # (B, C, H/2, W/2)
            hs.append(h)
        h = self.mid_attn(self.mid1(h, emb))
        if self.mid_cross is not None:
            h = self.mid_cross(h, *context)
        h = self.mid2(h, emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = run(layer, torch.cat([h, hs.pop()], dim=1))
            else:
                h = layer(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))  # back to the skip's size
        return self.conv_out(F.silu(self.norm_out(h)))

    def read_context(self, x: Tensor, cond: Condition | None) -> tuple[Tensor, Tensor] | None:
        """The context (B, L, E) and mask (B, L) cross-attention reads, on x's device and dtype; no context
        in ``cond`` is the null condition (one masked token). None for a U-Net without text."""
        E = self.config.context_dim
        if E is None:
            return None
        B = x.shape[0]
        if cond is None or cond.context is None:
            return x.new_zeros(B, 1, E), torch.zeros(B, 1, dtype=torch.bool, device=x.device)
        if cond.context.shape[0] != B or cond.context.shape[2] != E:
            raise ValueError(f"this U-Net reads a context (B={B}, L, E={E}), got {tuple(cond.context.shape)}")
        return cond.context.to(device=x.device, dtype=x.dtype), cond.context_mask.to(x.device)

    def read_image(self, x: Tensor, cond: Condition | None) -> Tensor | None:
        """The image (B, cond_channels, H, W) concatenated to x, on x's device and dtype; None for a U-Net built
        without cond_channels."""
        C = self.config.cond_channels
        if not C:
            return None
        expected = (x.shape[0], C, *x.shape[-2:])
        image = cond.image if cond is not None else None
        if image is None or tuple(image.shape) != expected:
            got = "none" if image is None else tuple(image.shape)
            raise ValueError(f"this U-Net reads an image condition of shape {expected} (e.g. the upsampled "
                             f"low-resolution image of super-resolution), got {got}")
        return image.to(device=x.device, dtype=x.dtype)
