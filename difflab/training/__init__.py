"""Training: a generic loop with EMA, checkpoints and exact resume."""

from difflab.training.ema import EMA
from difflab.training.trainer import Hook, Trainer, TrainerConfig, read_log, resolve_device

__all__ = ["EMA", "Hook", "Trainer", "TrainerConfig", "read_log", "resolve_device"]
