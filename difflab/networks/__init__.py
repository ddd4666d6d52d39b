"""Networks: they map (x, t, y) to a tensor shaped like x and know nothing of the process."""

from difflab.networks.mlp import MLP, MLPConfig
from difflab.networks.presets import MLP_PRESETS, PRESETS, UNET_PRESETS, build_network, network_config
from difflab.networks.unet import UNet, UNetConfig

__all__ = ["MLP", "MLPConfig", "UNet", "UNetConfig", "MLP_PRESETS", "UNET_PRESETS", "PRESETS",
           "build_network", "network_config"]
