"""Networks: they map (x, noise level, condition) to a tensor shaped like x and know nothing of the process.

    base.py         Network: the base every backbone shares (its config, the noise input it reads)
    embeddings.py   the noise-level and class embedding, how a network reads a Condition
    unet.py         U-Net and its presets          (image data: pixels or latents)
    mlp.py          MLP and its presets            (points)
    registry.py     backbones and presets by name; build_network(config)
"""

from difflab.networks.base import Network
from difflab.networks.embeddings import NOISE_INPUTS
from difflab.networks.mlp import MLP, MLPConfig
from difflab.networks.registry import (AUTO, BACKBONES, DEFAULT_PRESETS, PRESETS, build_network, network_config,
                                       resolve_preset)
from difflab.networks.unet import UNet, UNetConfig

__all__ = ["AUTO", "BACKBONES", "DEFAULT_PRESETS", "MLP", "MLPConfig", "NOISE_INPUTS", "Network", "PRESETS", "UNet",
           "UNetConfig", "build_network", "network_config", "resolve_preset"]
