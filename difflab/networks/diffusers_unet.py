"""A diffusers ``UNet2DModel`` read as a difflab network: f(x, log-SNR, condition) -> the UNet's output.

diffusers' DDPM timestep k (0-based) noises with alphas_cumprod[k] = prod_{j <= k} (1 - beta_j), which is difflab's
alpha_bar_{k+1}: timestep k is difflab's step i = k + 1, at time t = (k + 1) / T. The adapter inverts the log-SNR
difflab passes on the schedule's path (given: DDPMProcess.time_at_log_snr, exact on the grid, log alpha_bar
interpolated between) and hands the UNet the continuous timestep

    k = T t - 1

(UNet2DModel embeds float timesteps; off the grid it reads the sinusoidal embedding in between). The log-SNR
arrives in float32, which places a grid time up to ~3e-5 steps off its integer: timesteps within SNAP_STEPS of an
integer are rounded to it, so on the grid the UNet sees exactly the integer diffusers' own loops pass.

Its output is the UNet's, in difflab's naming of the scheduler's prediction_type (epsilon -> eps, sample -> x0,
v_prediction -> v; diffusers' v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 is difflab's alpha eps - sigma x0),
and for variance_type "learned_range" twice the channels: the target, then r, whose frac = (r + 1) / 2 is
difflab's learned-variance v (parameterization.split_variance). diffusers is not imported here: the UNet arrives
built (pipelines.diffusers_run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from difflab.condition import NULL_LABEL, Condition, check_condition
from difflab.errors import DifflabError
from difflab.networks.base import Network
from difflab.networks.embeddings import LOG_SNR

SNAP_STEPS = 1e-3      # timesteps this close to an integer are that integer (float32 log-SNR: ~3e-5 steps off)
NO_NULL_CLASS = ("this diffusers UNet2DModel reads a class label (num_class_embeds) and has no null class: "
                 "classifier-free guidance (--guidance) and unconditional draws (restore, invert, edit) need one; "
                 "sample it with --class or a row per class")


@dataclass(frozen=True)
class DiffusersUNetConfig:
    """What difflab needs to know of the wrapped UNet (its own config.json says the rest)."""

    in_channels: int
    out_channels: int
    num_classes: int | None = None     # num_class_embeds of a class-conditional UNet
    noise_input: str = LOG_SNR


class DiffusersUNet(Network):
    """``unet`` (a diffusers UNet2DModel) read at the timesteps ``timestep_at`` gives for float64 log-SNRs: the
    continuous k = T t(lambda) - 1 of its schedule's path (pipelines.diffusers_run builds it from the DDPM
    process; a network itself knows no process)."""

    def __init__(self, unet: nn.Module, timestep_at: Callable[[Tensor], Tensor], config: DiffusersUNetConfig) -> None:
        super().__init__()
        self.unet, self.timestep_at, self.config = unet, timestep_at, config

    def timesteps(self, noise: Tensor) -> Tensor:
        """(B,) log-SNRs -> (B,) float32 diffusers timesteps k = T t(lambda) - 1 (see the module docstring)."""
        k = self.timestep_at(noise.double())
        near = k.round()
        return torch.where((k - near).abs() < SNAP_STEPS, near, k).float()

    def forward(self, x: Tensor, noise: Tensor, cond: Condition | None = None) -> Tensor:
        """x (B, C, H, W), noise (B,) log-SNR -> the UNet's output (B, C or 2C, H, W)."""
        check_condition(cond, "diffusers UNet2DModel", labels=self.config.num_classes is not None)
        labels = None
        if self.config.num_classes is not None:
            labels = cond.labels if cond is not None else None
            if labels is None or bool((labels == NULL_LABEL).any()):
                raise DifflabError(NO_NULL_CLASS)
            labels = labels.to(x.device)
        return self.unet(x, self.timesteps(noise).to(x.device), class_labels=labels).sample
