"""A noise-aware image classifier p_phi(y | x_t, t) for classifier guidance: the encoder half of the U-Net.

Dhariwal & Nichol (2021, sec. 4.1) train "the downsampling trunk of the UNet model with an attention pool at
the 8x8 layer" on noisy images x_t and steer sampling with its gradient (their eq. for the guided score):

    grad_x log p(x_t | y) = grad_x log p(x_t) + grad_x log p_phi(y | x_t, t)

This network is that trunk: the U-Net's noise-level embedding, conv_in, its encoder levels (ResBlock and
SelfAttention from networks.unet, built the same way) and its middle block, then GroupNorm + SiLU, a GLOBAL
AVERAGE POOL (their code's "adaptive" pooling; not the attention pool of their released classifiers) and a
zero-initialised linear layer to K logits. It reads no condition: the label is its output, not its input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import Tensor, nn

from difflab.condition import Condition, check_condition
from difflab.dataspec import DataSpec
from difflab.networks.base import Network
from difflab.networks.embeddings import NoiseClassEmbedding
from difflab.networks.unet import LevelsConfig, ResBlock, SelfAttention, encoder_levels, group_norm, zero_init


@dataclass(frozen=True)
class EncoderClassifierConfig(LevelsConfig):
    """Shape of the encoder classifier: the U-Net's encoder levels (LevelsConfig) and K logits."""

    num_classes: int = 10                      # K: the number of logits

    def fitted(self, spec: DataSpec, num_classes: int | None = None) -> EncoderClassifierConfig:
        """This config sized for examples of ``spec`` ((C, H, W) pixels or latents) and ``num_classes`` logits
        (None keeps the preset's)."""
        return replace(self, in_channels=spec.shape[0], image_size=spec.shape[1],
                       num_classes=self.num_classes if num_classes is None else num_classes)


CLASSIFIER_PRESETS: dict[str, EncoderClassifierConfig] = {
    # 0.32M parameters (10 classes): the encoder and middle block of the U-Net's "tiny".
    "classifier-tiny": EncoderClassifierConfig(base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                                               attention_levels=(1,)),
    # 1.75M: the encoder and middle block of the U-Net's "small".
    "classifier-small": EncoderClassifierConfig(base_channels=64, channel_mults=(1, 2), num_res_blocks=2,
                                                attention_levels=(1,)),
}


class EncoderClassifier(Network):
    """Logits f(x, noise): x (B, C, H, W), noise (B,) noise levels, cond None (it reads no condition)
    -> (B, K); log p_phi(y | x_t, t) = log_softmax(f). Any H, W: the features are averaged over positions."""

    def __init__(self, config: EncoderClassifierConfig) -> None:
        super().__init__()
        self.config = cfg = config
        if cfg.num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {cfg.num_classes}")
        ch0, groups = cfg.base_channels, cfg.norm_groups
        emb_dim = 4 * ch0
        self.embed = NoiseClassEmbedding(ch0, emb_dim, None, cfg.noise_input)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, cfg.dropout, groups)

        def attention(c: int, level: int) -> nn.Module:
            return SelfAttention(c, cfg.head_channels, groups) if level in cfg.attention_levels else nn.Identity()

        def stage(c_in: int, c_out: int, level: int) -> nn.ModuleList:
            return nn.ModuleList([block(c_in, c_out), attention(c_out, level)])

        self.down, skips = encoder_levels(cfg, stage)                # the U-Net's encoder
        ch = skips[-1]
        self.mid1, self.mid_attn, self.mid2 = block(ch, ch), SelfAttention(ch, cfg.head_channels, groups), block(ch, ch)
        # Dhariwal & Nichol's "adaptive" head: norm, SiLU, average pool, zero-initialised projection, so an
        # untrained classifier says p(y | x_t) = 1/K everywhere and steers nothing.
        self.norm_out = group_norm(ch, groups)
        self.head = zero_init(nn.Linear(ch, cfg.num_classes))

    def forward(self, x: Tensor, noise: Tensor, cond: Condition | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"EncoderClassifier expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if noise.shape != x.shape[:1]:
            raise ValueError(f"EncoderClassifier expects noise levels ({x.shape[0]},), got {tuple(noise.shape)}")
        check_condition(cond, "classifier")
        emb = self.embed(noise)                                     # (B, 4 C0)
        h = self.conv_in(x)                                         # (B, C0, H, W)
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, emb))
            else:
                h = layer(h)                                        # (B, C, H/2, W/2)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)        # (B, C, H', W')
        h = F.silu(self.norm_out(h)).mean(dim=(-2, -1))             # global average pool: (B, C)
        return self.head(h)                                         # (B, K)
