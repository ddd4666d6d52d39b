"""Named network sizes and the one function that builds a network from its JSON config."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any

from torch import nn

from difflab.errors import DifflabError
from difflab.networks.mlp import MLP, MLPConfig
from difflab.networks.unet import UNet, UNetConfig

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
MLP_PRESETS: dict[str, MLPConfig] = {
    "mlp-small": MLPConfig(hidden=128, depth=3),
    "mlp": MLPConfig(hidden=256, depth=4),
}
PRESETS = tuple(UNET_PRESETS) + tuple(MLP_PRESETS)


def network_config(preset: str, example_shape: tuple[int, ...], num_classes: int | None = None,
                   **overrides: Any) -> dict:
    """The JSON config of a preset sized for examples of ``example_shape`` ((C, H, W) or (D,))."""
    if preset in UNET_PRESETS:
        if len(example_shape) != 3:
            raise DifflabError(f"model {preset!r} is a U-Net for images; for 2-D points use one of {', '.join(MLP_PRESETS)}")
        cfg: Any = replace(UNET_PRESETS[preset], in_channels=example_shape[0], image_size=example_shape[1],
                           num_classes=num_classes)
        kind = "unet"
    elif preset in MLP_PRESETS:
        if len(example_shape) != 1:
            raise DifflabError(f"model {preset!r} is an MLP for points; for images use one of {', '.join(UNET_PRESETS)}")
        cfg, kind = replace(MLP_PRESETS[preset], dim=example_shape[0], num_classes=num_classes), "mlp"
    else:
        raise DifflabError(f"unknown model {preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        cfg = replace(cfg, **overrides)
    except TypeError as e:
        raise DifflabError(f"bad model option for {preset!r}: {e}") from None
    return {"kind": kind, **asdict(cfg)}


_KINDS: dict[str, tuple[type, type]] = {"unet": (UNet, UNetConfig), "mlp": (MLP, MLPConfig)}


def build_network(config: dict) -> nn.Module:
    """Build a network from the dict :func:`network_config` made (read from JSON: lists become tuples)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in _KINDS:
        raise DifflabError(f"unknown network kind {kind!r} in model config; expected one of {', '.join(_KINDS)}")
    cls, cfg_cls = _KINDS[kind]
    names = {f.name for f in fields(cfg_cls)}
    unknown = set(config) - names
    if unknown:
        raise DifflabError(f"unknown {kind} config keys {sorted(unknown)}; is the checkpoint from a newer difflab?")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return cls(cfg_cls(**values))
