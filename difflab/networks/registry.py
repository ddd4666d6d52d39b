"""Backbones by name, presets by name, and the one function that builds a network from its JSON config.

A backbone is one file (its config dataclass with ``fitted(spec, num_classes)``, its presets, its module)
plus one entry in BACKBONES. Configs are sized for the run's data description (DataSpec), so nothing
outside this package needs to know which backbone a run uses.

Each backbone has a role: a "denoiser" maps (x, noise level, condition) to a tensor shaped like x (what
diffusion trains); a "classifier" maps (x, noise level) to K logits of p(y | x_t) (what classifier guidance
reads). Preset names are unique across roles; PRESETS, DEFAULT_PRESETS and presets_for without a role mean
the denoisers (the choices of ``difflab train --model``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.io import typed_fields
from difflab.networks.base import Network
from difflab.networks.classifier import CLASSIFIER_PRESETS, EncoderClassifier, EncoderClassifierConfig
from difflab.networks.mlp import MLP, MLP_PRESETS, MLPConfig
from difflab.networks.unet import UNET_PRESETS, UNet, UNetConfig

AUTO = "auto"
DENOISER, CLASSIFIER = "denoiser", "classifier"
ROLES = (DENOISER, CLASSIFIER)


@dataclass(frozen=True)
class Backbone:
    network: type[Network]             # built as network(config)
    config: type                       # its config dataclass; config.fitted(spec, num_classes) sizes it
    presets: dict[str, Any]            # preset name -> config
    layout: str                        # the DataSpec.layout it models: "image" or "vector"
    title: str                         # its name in messages
    role: str                          # one of ROLES: what its output is (see the module docstring)


BACKBONES: dict[str, Backbone] = {
    "unet": Backbone(UNet, UNetConfig, UNET_PRESETS, "image", "U-Net", DENOISER),
    "mlp": Backbone(MLP, MLPConfig, MLP_PRESETS, "vector", "MLP", DENOISER),
    "unet-encoder": Backbone(EncoderClassifier, EncoderClassifierConfig, CLASSIFIER_PRESETS, "image",
                             "U-Net encoder classifier", CLASSIFIER),
}
# The preset "auto" picks for each role and data layout; a layout missing: no backbone of that role models it
# (classifier guidance on points would need an MLP classifier, which difflab does not have).
DEFAULT_PRESETS_BY_ROLE: dict[str, dict[str, str]] = {DENOISER: {"image": "tiny", "vector": "mlp"},
                                                      CLASSIFIER: {"image": "classifier-tiny"}}
DEFAULT_PRESETS: dict[str, str] = DEFAULT_PRESETS_BY_ROLE[DENOISER]          # --model auto of difflab train

PRESETS_BY_ROLE: dict[str, dict[str, str]] = {                               # role -> preset -> backbone
    role: {preset: kind for kind, b in BACKBONES.items() if b.role == role for preset in b.presets} for role in ROLES}
PRESETS: dict[str, str] = PRESETS_BY_ROLE[DENOISER]                          # the denoisers: --model choices
# What a role is for, in messages.
_PURPOSE = {DENOISER: "diffusion", CLASSIFIER: "classifier guidance"}


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise DifflabError(f"unknown network role {role!r}; expected one of {', '.join(ROLES)}")


def presets_for(layout: str, role: str = DENOISER) -> list[str]:
    """The presets of ``role`` for data of ``layout`` ("image" or "vector")."""
    _check_role(role)
    return [p for p, kind in PRESETS_BY_ROLE[role].items() if BACKBONES[kind].layout == layout]


def _no_backbone(role: str, spec: DataSpec) -> DifflabError:
    layouts = sorted({b.layout for b in BACKBONES.values() if b.role == role})
    return DifflabError(f"{_PURPOSE[role]} needs {' or '.join(layouts)} data, and this data is "
                        f"{spec.kind} {spec.shape}")


def resolve_preset(preset: str, spec: DataSpec, role: str = DENOISER) -> str:
    """``preset``, or the default preset of ``role`` for the data's layout when it is "auto"."""
    _check_role(role)
    if preset != AUTO:
        return preset
    if spec.layout not in DEFAULT_PRESETS_BY_ROLE[role]:
        raise _no_backbone(role, spec)
    return DEFAULT_PRESETS_BY_ROLE[role][spec.layout]


def network_config(preset: str, spec: DataSpec, num_classes: int | None = None, role: str = DENOISER,
                   **overrides: Any) -> dict:
    """The JSON config of a preset of ``role`` ("auto": the role's default for the data) sized for data of
    ``spec``. A denoiser reads ``num_classes`` labels (None: unconditional); a classifier outputs
    ``num_classes`` logits, so it needs them."""
    preset = resolve_preset(preset, spec, role)
    presets = PRESETS_BY_ROLE[role]
    if preset not in presets:
        other = next((r for r in ROLES if preset in PRESETS_BY_ROLE[r]), None)
        problem = f"model {preset!r} is a {other}, not a {role}" if other else f"unknown model {preset!r}"
        raise DifflabError(f"{problem}; choose one of {', '.join((AUTO, *presets))}")
    kind = presets[preset]
    backbone = BACKBONES[kind]
    if backbone.layout != spec.layout:
        fits = ", ".join(presets_for(spec.layout, role))
        if not fits:
            raise _no_backbone(role, spec)
        raise DifflabError(f"model {preset!r} is a {backbone.title} for {backbone.layout} data, and this data is "
                           f"{spec.kind} {spec.shape}; use --model auto or one of {fits}")
    if role == CLASSIFIER and num_classes is None:
        raise DifflabError("a classifier needs labelled data: the number of classes is not known")
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
