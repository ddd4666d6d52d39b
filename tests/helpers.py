"""Helpers shared by tests in several folders (tests/ is on sys.path through conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from difflab.cli.main import main
from difflab.training.checkpoint import resolve_checkpoint


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        rc = main(list(args))
    except SystemExit as e:           # argparse exits for its own errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def run_state(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's newest checkpoint: weights, EMA weights, optimizer moments and RNG states."""
    ckpt = resolve_checkpoint(run)
    out = {}
    for name in ("model", "ema", "trainer"):
        out.update({f"{name}.{k}": v for k, v in load_file(str(ckpt / f"{name}.safetensors")).items()})
    return out
