"""Networks: they map (x, noise level, condition) to a tensor shaped like x and know nothing of the process
(autoencoders and the discriminator aside: images to latents and back, images to patch logits).

    base.py         Network: the base every backbone shares (its config, the noise input it reads)
    embeddings.py   the noise-level and class embedding, how a network reads a Condition
    unet.py         U-Net and its presets          (image data: pixels or latents)
    mlp.py          MLP and its presets            (points)
    classifier.py   the U-Net's encoder as a noise-aware classifier p(y | x_t) (classifier guidance)
    autoencoder.py  KL and VQ autoencoders (latent diffusion's first stage; not yet wired into a codec)
    discriminator.py  the patch discriminator (PatchGAN) of autoencoder training
    diffusers_unet.py a diffusers UNet2DModel read as a network (its timesteps from the log-SNR)
    registry.py     backbones and presets by name; build_network(config)
"""

from difflab.networks.base import Network
from difflab.networks.embeddings import NOISE_INPUTS
from difflab.networks.mlp import MLP, MLPConfig
from difflab.networks.classifier import EncoderClassifier, EncoderClassifierConfig
from difflab.networks.registry import (AUTO, BACKBONES, CLASSIFIER, DEFAULT_PRESETS, DEFAULT_PRESETS_BY_ROLE, DENOISER,
                                       PRESETS, PRESETS_BY_ROLE, ROLES, build_network, network_config, presets_for,
                                       resolve_preset)
from difflab.networks.unet import UNet, UNetConfig

__all__ = ["AUTO", "BACKBONES", "CLASSIFIER", "DEFAULT_PRESETS", "DEFAULT_PRESETS_BY_ROLE", "DENOISER",
           "EncoderClassifier", "EncoderClassifierConfig", "MLP", "MLPConfig", "NOISE_INPUTS", "Network", "PRESETS",
           "PRESETS_BY_ROLE", "ROLES", "UNet", "UNetConfig", "build_network", "network_config", "presets_for",
           "resolve_preset"]
