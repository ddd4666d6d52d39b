"""Training: a generic loop with EMA, checkpoints and exact resume."""

from difflab.training.ema import EMA
from difflab.training.trainer import Adversary, Hook, Losses, Trainer, TrainerConfig, TrainResult, read_log, resolve_device

__all__ = ["EMA", "Adversary", "Hook", "Losses", "Trainer", "TrainerConfig", "TrainResult", "read_log", "resolve_device"]
