"""Autoencoders for latent diffusion (Rombach et al. 2022, LDM): the diffusion runs on z = E(x), (B, C, h, w) with
h = H / f, and samples are decoded by D(z).

Encoder and decoder are LDM's (taming-transformers' ``Encoder`` / ``Decoder``): residual blocks with GroupNorm and
SiLU, stride-2 convolutions down and nearest-neighbour upsampling + conv up, a middle block [res, self-attention,
res] at the lowest resolution, and 1x1 ``quant_conv`` / ``post_quant_conv`` around the latent. Two regularisers:

  kl  KLAutoencoder: q(z | x) = N(mu, diag(s^2)), penalised by KL(q || N(0, I)) (LDM's "KL-reg", sec. 3 / App. G).
  vq  VQAutoencoder: z_q = the nearest of K codes (van den Oord et al. 2017, VQ-VAE), codebook learned by EMA
      (their App. A.1; Razavi et al. 2019, VQ-VAE-2), straight-through gradients, beta-weighted commitment loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.io import typed_fields
from difflab.networks.unet import LevelsConfig, SelfAttention, encoder_levels, group_norm

KINDS = ("kl", "vq")
DOWNSAMPLE_FACTORS = (1, 2, 4, 8)
LOGVAR_RANGE = (-30.0, 20.0)    # LDM's DiagonalGaussianDistribution clamps log s^2 to this


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of an autoencoder. Level l works at resolution image_size / 2^l with base_channels * channel_mults[l];
    there are log2(downsample) + 1 levels, so the latent is (latent_channels, image_size / downsample, same)."""

    kind: str = "kl"                           # "kl" or "vq": see the module docstring
    in_channels: int = 1
    image_size: int = 8
    latent_channels: int = 4                   # C of the latent
    downsample: int = 2                        # f: 1, 2, 4 or 8
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)   # width per level; the first log2(downsample) + 1 are used
    num_res_blocks: int = 1
    attention: bool = True                     # self-attention in the middle block (the lowest resolution)
    norm_groups: int = 32
    dropout: float = 0.0
    # vq only
    codebook_size: int = 256                   # K
    commitment_beta: float = 0.25              # beta of the commitment loss
    ema_decay: float = 0.99                    # gamma of the codebook EMA
    dead_code_threshold: float = 1.0           # a code whose EMA count N_k falls below this is restarted; 0: never

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DifflabError(f"unknown autoencoder kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.downsample not in DOWNSAMPLE_FACTORS:
            raise DifflabError(f"autoencoder downsample must be one of {DOWNSAMPLE_FACTORS}, got {self.downsample}")
        if self.image_size < 1 or self.image_size % self.downsample:
            raise DifflabError(f"image size {self.image_size} is not divisible by the autoencoder's downsample "
                               f"{self.downsample}; resize the images or pick a factor that divides it")
        for name in ("in_channels", "latent_channels", "base_channels", "num_res_blocks", "norm_groups",
                     "codebook_size"):
            if getattr(self, name) < 1:
                raise DifflabError(f"autoencoder {name} must be >= 1, got {getattr(self, name)}")
        if len(self.channel_mults) < self.levels or min(self.channel_mults) < 1:
            raise DifflabError(f"autoencoder channel_mults {self.channel_mults} needs {self.levels} positive entries "
                               f"for downsample {self.downsample}; give one multiplier per level")
        if not 0 <= self.dropout < 1:
            raise DifflabError(f"autoencoder dropout is a probability in [0, 1), got {self.dropout}")
        if not 0 < self.ema_decay < 1:
            raise DifflabError(f"autoencoder ema_decay must be in (0, 1), e.g. 0.99, got {self.ema_decay}")
        if self.commitment_beta < 0 or self.dead_code_threshold < 0:
            raise DifflabError("autoencoder commitment_beta and dead_code_threshold must be >= 0, got "
                               f"{self.commitment_beta} and {self.dead_code_threshold}")

    @property
    def levels(self) -> int:
        """log2(downsample) + 1 resolutions, from image_size down to the latent's."""
        return int(math.log2(self.downsample)) + 1

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one example's latent."""
        side = self.image_size // self.downsample
        return self.latent_channels, side, side

    def fitted(self, spec: DataSpec) -> AutoencoderConfig:
        """This config sized for images of ``spec`` ((C, H, W) pixels, H == W)."""
        return replace(self, in_channels=spec.shape[0], image_size=spec.shape[1])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> AutoencoderConfig:
        """The config :meth:`to_json` wrote (JSON lists become tuples); every field must be there, of its type."""
        return cls(**typed_fields(cls, values, "the autoencoder config"))


@dataclass
class AutoencoderOutput:
    """What ``forward`` returns: the reconstruction (B, C_in, H, W), the regulariser (B,) the objective adds (KL of
    the posterior, or the commitment loss), and detached scalar statistics to log."""

    reconstruction: Tensor
    regulariser: Tensor
    stats: dict[str, Tensor]


class ResidualBlock(nn.Module):
    """out = skip(x) + conv(dropout(silu(gn(conv(silu(gn(x))))))): the U-Net's ResBlock without a time embedding
    (LDM's ResnetBlock with temb_channels = 0)."""

    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


def middle_block(channels: int, cfg: AutoencoderConfig) -> nn.Sequential:
    """[res, single-head self-attention (or identity), res] at the lowest resolution (LDM's mid block)."""
    attention = SelfAttention(channels, channels, cfg.norm_groups) if cfg.attention else nn.Identity()
    return nn.Sequential(ResidualBlock(channels, channels, cfg.norm_groups, cfg.dropout), attention,
                         ResidualBlock(channels, channels, cfg.norm_groups, cfg.dropout))


class Encoder(nn.Module):
    """x (B, C_in, H, W) -> (B, out_channels, H / f, W / f): conv_in, the U-Net's encoder levels (residual blocks,
    a stride-2 conv between levels), the middle block, GroupNorm, SiLU, conv_out."""

    def __init__(self, cfg: AutoencoderConfig, out_channels: int) -> None:
        super().__init__()
        levels = LevelsConfig(base_channels=cfg.base_channels, channel_mults=cfg.channel_mults[:cfg.levels],
                              num_res_blocks=cfg.num_res_blocks)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)

        def stage(c_in: int, c_out: int, level: int) -> ResidualBlock:
            return ResidualBlock(c_in, c_out, cfg.norm_groups, cfg.dropout)

        down, skips = encoder_levels(levels, stage)
        self.down = nn.Sequential(*down)
        ch = skips[-1]
        self.mid = middle_block(ch, cfg)
        self.norm_out = group_norm(ch, cfg.norm_groups)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))                    # (B, ch, H / f, W / f)
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv: (B, C, h, w) -> (B, C, 2h, 2w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """z (B, C, h, w) -> (B, C_in, h f, w f): conv_in, the middle block, per level (lowest first) num_res_blocks + 1
    residual blocks and an upsampling (not after the full resolution), GroupNorm, SiLU, conv_out."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults[:cfg.levels]]
        ch = widths[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = middle_block(ch, cfg)
        up: list[nn.Module] = []
        for level in reversed(range(cfg.levels)):
            for _ in range(cfg.num_res_blocks + 1):
                up.append(ResidualBlock(ch, widths[level], cfg.norm_groups, cfg.dropout))
                ch = widths[level]
            if level > 0:
                up.append(Upsample(ch))
        self.up = nn.Sequential(*up)
        self.norm_out = group_norm(ch, cfg.norm_groups)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))                       # (B, base_channels * mult_0, H, W)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))), each (B, C, h, w)."""

    mean: Tensor
    logvar: Tensor

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        """(B, 2C, h, w) = [mean; log-variance] -> the posterior, log s^2 clamped to [-30, 20] as in LDM."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(*LOGVAR_RANGE))

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + s * eps, eps ~ N(0, I) (the reparameterisation trick): (B, C, h, w)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def kl(self) -> Tensor:
        """(B,) KL(q || N(0, I)) = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2) over the latent's C h w entries."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class Autoencoder(nn.Module):
    """What every autoencoder offers the diffusion and its trainer:

      encode_latent(x) -> z (B, C, h, w)   the deterministic latent the diffusion runs on
      decode(z) -> x (B, C_in, H, W)
      forward(x, generator) -> AutoencoderOutput(reconstruction, regulariser (B,), stats)

    Subclasses build the encoder with ``encoder_channels`` outputs and add their regulariser.
    """

    config: AutoencoderConfig

    def __init__(self, config: AutoencoderConfig, encoder_channels: int) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, encoder_channels)
        self.quant_conv = nn.Conv2d(encoder_channels, encoder_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)
        self.decoder = Decoder(config)

    @property
    def last_layer(self) -> Tensor:
        """The decoder's last weight: the adaptive GAN weight of Esser et al. (2021, eq. 7) compares gradients there."""
        return self.decoder.conv_out.weight

    def check_images(self, x: Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"this autoencoder encodes (B, {c}, {s}, {s}) images, got {tuple(x.shape)}")

    def check_latents(self, z: Tensor) -> None:
        if z.ndim != 4 or tuple(z.shape[1:]) != self.config.latent_shape:
            raise ValueError(f"this autoencoder decodes (B, {', '.join(map(str, self.config.latent_shape))}) "
                             f"latents, got {tuple(z.shape)}")

    def encode_latent(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> AutoencoderOutput:
        raise NotImplementedError


class KLAutoencoder(Autoencoder):
    """KL-regularised autoencoder: the encoder outputs 2C channels, the mean and log-variance of q(z | x)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config, 2 * config.latent_channels)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """x (B, C_in, H, W) -> q(z | x) over (B, C, h, w)."""
        self.check_images(x)
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x)))

    def encode_latent(self, x: Tensor) -> Tensor:
        """The posterior mean (B, C, h, w): deterministic, and the point the decoder was trained around."""
        return self.encode(x).mean

    def decode(self, z: Tensor) -> Tensor:
        self.check_latents(z)
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> AutoencoderOutput:
        """Reconstruction D(z) of a sample z ~ q(z | x) (always sampled, as in the ELBO) and KL(q || N(0, I)) (B,)."""
        posterior = self.encode(x)
        kl = posterior.kl()
        stats = {"kl": kl.mean().detach(), "posterior_std": posterior.std.mean().detach()}
        return AutoencoderOutput(self.decode(posterior.sample(generator)), kl, stats)


@dataclass
class QuantizerOutput:
    """z_q (B, C, h, w) with straight-through gradients, the commitment loss (B,), the code indices (B, h, w), and
    the batch's codebook usage (fraction of the K codes chosen at least once), perplexity exp(-sum_k p_k log p_k)
    and number of restarted dead codes (0-dim, detached)."""

    z_q: Tensor
    commitment: Tensor
    indices: Tensor
    usage: Tensor
    perplexity: Tensor
    restarted: Tensor


def perplexity(counts: Tensor) -> Tensor:
    """exp(-sum_k p_k log p_k), p_k = counts_k / sum(counts) (0 log 0 = 0): the number of codes a uniform usage of
    that entropy would need."""
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with an EMA codebook (van den Oord et al. 2017, eq. 1 and App. A.1).

    The codebook e (K, C), the EMA counts N_k (K,) and sums m_k (K, C) are buffers (in the state dict, so a resumed
    run continues exactly), not parameters: in training mode ``forward`` updates them from the batch instead of a
    codebook loss. They start at N_k = 1, m_k = e_k ~ N(0, I), one pseudo-vector per code, so e = m / N from step 0.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, decay: float = 0.99,
                 dead_code_threshold: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.decay, self.dead_code_threshold, self.eps = beta, decay, dead_code_threshold, eps
        codebook = torch.randn(num_codes, dim)
        self.register_buffer("codebook", codebook)                    # e_k
        self.register_buffer("cluster_size", torch.ones(num_codes))   # N_k
        self.register_buffer("embed_sum", codebook.clone())           # m_k
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))   # EMA steps taken: seeds the restarts

    def nearest(self, flat: Tensor) -> Tensor:
        """(M, C) vectors -> (M,) index of the nearest code, argmin_k ||z - e_k||^2 (eq. 1; ties: the lowest k)."""
        e = self.codebook.to(flat.dtype)
        distance = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)[None]   # (M, K)
        return distance.argmin(dim=1)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, C, h, w) -> z_q (B, C, h, w) with straight-through gradients, indices (B, h, w)."""
        B, C, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)                   # (M, C), M = B h w
        indices = self.nearest(flat.detach())
        z_q = self.codebook[indices].to(z.dtype).reshape(B, h, w, C).permute(0, 3, 1, 2)
        # Straight-through estimator (sec. 3.1): forward z_q, backward d/dz_q copied to z.
        return z + (z_q - z).detach(), indices.reshape(B, h, w)

    def forward(self, z: Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        """Quantise z (B, C, h, w); in training mode, then update the codebook (see :meth:`update`)."""
        z_q, indices = self.quantize(z)
        # Commitment loss beta ||z - sg(z_q)||^2 (eq. 3), averaged over the latent's C h w entries as VQ-VAE's and
        # VQGAN's code do, so beta = 0.25 weighs it like the mean-reduced reconstruction loss.
        commitment = self.beta * (z - z_q.detach()).pow(2).flatten(1).mean(1)
        counts = torch.bincount(indices.flatten(), minlength=self.num_codes).to(z.dtype)   # n_k
        restarted = torch.zeros((), device=z.device)
        if self.training:
            restarted = self.update(z.detach().permute(0, 2, 3, 1).reshape(-1, self.dim), indices.flatten(), generator)
        return QuantizerOutput(z_q, commitment, indices, (counts > 0).float().mean(), perplexity(counts),
                               restarted)

    @torch.no_grad()
    def update(self, flat: Tensor, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One EMA step of the codebook from M vectors (M, C) and their codes (M,); returns how many dead codes
        were restarted.

            N_k <- gamma N_k + (1 - gamma) n_k,   m_k <- gamma m_k + (1 - gamma) sum_{i: k_i = k} z_i   (App. A.1)
            N~_k = (N_k + eps) / (n + K eps) n,  n = sum_k N_k                                  (Laplace smoothing)
            e_k = m_k / N~_k

        Then every code with N_k < dead_code_threshold is restarted (Dhariwal et al. 2020, Jukebox): e_k <- a random
        z_i of this batch, N_k <- threshold, m_k <- N_k e_k; a restarted code the next batch leaves unused falls
        below the threshold again. The random z_i come from ``generator``, or, without one, from a generator seeded
        with the number of updates so far, so a run (and a resumed run) is reproducible.
        """
        K, gamma = self.num_codes, self.decay
        flat = flat.to(self.codebook.dtype)
        onehot = F.one_hot(indices, K).to(flat.dtype)                 # (M, K)
        self.cluster_size.mul_(gamma).add_(onehot.sum(0), alpha=1 - gamma)
        self.embed_sum.mul_(gamma).add_(onehot.T @ flat, alpha=1 - gamma)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + K * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < self.dead_code_threshold
        restarted = dead.sum()
        if restarted > 0:
            if generator is None:
                generator = torch.Generator(device=flat.device).manual_seed(int(self.updates))
            pick = torch.randint(flat.shape[0], (int(restarted),), generator=generator, device=flat.device)
            self.codebook[dead] = flat[pick]
            self.cluster_size[dead] = self.dead_code_threshold
            self.embed_sum[dead] = self.dead_code_threshold * flat[pick]
        self.updates += 1
        return restarted.float()


class VQAutoencoder(Autoencoder):
    """Vector-quantised autoencoder: encoder -> quant_conv -> z_e -> VectorQuantizer -> post_quant_conv -> decoder."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config, config.latent_channels)
        self.quantizer = VectorQuantizer(config.codebook_size, config.latent_channels, config.commitment_beta,
                                         config.ema_decay, config.dead_code_threshold)

    def encode_latent(self, x: Tensor) -> Tensor:
        """The encoder output z_e BEFORE quantisation (B, C, h, w). LDM's VQ models do the same (VQModelInterface:
        the diffusion runs on continuous latents and the decoder quantises), so a sampler's output need not lie on
        the codebook: ``decode`` snaps it there."""
        self.check_images(x)
        return self.quant_conv(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """Quantise z (B, C, h, w) to its nearest codes (no codebook update), then decode -> (B, C_in, H, W)."""
        self.check_latents(z)
        z_q, _ = self.quantizer.quantize(z)
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> AutoencoderOutput:
        """Reconstruction through the quantiser and the commitment loss (B,); in training mode the codebook's EMA
        update and dead-code restarts (drawn from ``generator``) happen here."""
        q = self.quantizer(self.encode_latent(x), generator)
        stats = {"codebook_usage": q.usage.detach(), "perplexity": q.perplexity.detach(),
                 "restarted_codes": q.restarted, "commitment": q.commitment.mean().detach()}
        return AutoencoderOutput(self.decoder(self.post_quant_conv(q.z_q)), q.commitment, stats)


AUTOENCODERS: dict[str, type[Autoencoder]] = {"kl": KLAutoencoder, "vq": VQAutoencoder}


def build_autoencoder(config: AutoencoderConfig) -> Autoencoder:
    """The autoencoder of ``config.kind``."""
    return AUTOENCODERS[config.kind](config)
