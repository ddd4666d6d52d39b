"""Shared fixtures: tiny runs trained once per session."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from difflab.config import PreviewConfig, RunConfig
from difflab.training import TrainerConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """difflab's cache (built-in classifiers, reference statistics) in a temporary folder shared by the session:
    no test writes to the home folder, and the digits classifier is trained once."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("difflab_cache")
        mp.setenv("DIFFLAB_CACHE", str(path))
        yield path


def tiny_config(steps: int = 20, **trainer) -> RunConfig:
    """The default run (digits, tiny U-Net, DDPM linear) made small enough for a test."""
    tc = replace(TrainerConfig(), steps=steps, batch_size=32, warmup=5, log_every=5, checkpoint_every=10,
                 sample_every=0, **trainer)
    return replace(RunConfig(), trainer=tc, preview=PreviewConfig(steps=5, n=16))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A digits run trained for 40 steps (shared by the sampling and CLI tests)."""
    from difflab.pipelines.train import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    train(tiny_config(40), out, progress=False)
    return out
