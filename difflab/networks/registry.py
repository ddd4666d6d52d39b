"""Backbones by name, presets by name, and the one function that builds a network from its JSON config.

A backbone is one file (its config dataclass with ``fitted(spec, num_classes)``, its presets, its module)
plus one entry in BACKBONES. Configs are sized for the run's data description (DataSpec), so nothing
outside this package needs to know which backbone a run uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.io import typed_fields
from difflab.networks.base import Network
from difflab.networks.mlp import MLP, MLP_PRESETS, MLPConfig
from difflab.networks.unet import UNET_PRESETS, UNet, UNetConfig

AUTO = "auto"


@dataclass(frozen=True)
class Backbone:
    network: type[Network]             # built as network(config)
    config: type                       # its config dataclass; config.fitted(spec, num_classes) sizes it
    presets: dict[str, Any]            # preset name -> config
    layout: str                        # the DataSpec.layout it models: "image" or "vector"
    title: str                         # its name in messages


BACKBONES: dict[str, Backbone] = {
    "unet": Backbone(UNet, UNetConfig, UNET_PRESETS, "image", "U-Net"),
    "mlp": Backbone(MLP, MLPConfig, MLP_PRESETS, "vector", "MLP"),
}
# The preset --model auto picks for each data layout.
DEFAULT_PRESETS: dict[str, str] = {"image": "tiny", "vector": "mlp"}

PRESETS: dict[str, str] = {preset: kind for kind, b in BACKBONES.items() for preset in b.presets}   # -> backbone


def presets_for(layout: str) -> list[str]:
    return [p for p, kind in PRESETS.items() if BACKBONES[kind].layout == layout]


def resolve_preset(preset: str, spec: DataSpec) -> str:
    """``preset``, or the default preset for the data's layout when it is "auto"."""
    return DEFAULT_PRESETS[spec.layout] if preset == AUTO else preset


def network_config(preset: str, spec: DataSpec, num_classes: int | None = None, **overrides: Any) -> dict:
    """The JSON config of a preset ("auto": the default for the data) sized for data of ``spec``."""
    preset = resolve_preset(preset, spec)
    if preset not in PRESETS:
        raise DifflabError(f"unknown model {preset!r}; choose one of {', '.join((AUTO, *PRESETS))}")
    kind = PRESETS[preset]
    backbone = BACKBONES[kind]
    if backbone.layout != spec.layout:
        fits = ", ".join(presets_for(spec.layout))
        raise DifflabError(f"model {preset!r} is a {backbone.title} for {backbone.layout} data, and this data is "
                           f"{spec.kind} {spec.shape}; use --model auto or one of {fits}")
    try:
        cfg = replace(backbone.presets[preset].fitted(spec, num_classes), **overrides)
    except TypeError as e:
        raise DifflabError(f"bad model option for {preset!r}: {e}") from None
    return {"kind": kind, **asdict(cfg)}


def build_network(config: dict) -> nn.Module:
    """Build a network from the dict :func:`network_config` made (read from JSON: lists become tuples). Every
    field of the backbone's config must be there, of its type: a missing one is an error, never a default."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in BACKBONES:
        raise DifflabError(f"unknown network kind {kind!r} in model config; expected one of {', '.join(BACKBONES)}")
    backbone = BACKBONES[kind]
    values = typed_fields(backbone.config, config, f"the {kind} config")
    try:
        return backbone.network(backbone.config(**values))
    except (TypeError, ValueError) as e:
        raise DifflabError(f"the {kind} config does not build a network ({e}); is config.json edited by hand?") from None
