"""`difflab sample --compile / --channels-last / --precision`: the same images as without, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from helpers import assert_one_line_error, cli
from PIL import Image

from difflab.pipelines.bench_samplers import one_thread

SAMPLE = ("--sampler", "ddim", "--steps", "4", "--n", "6", "--batch-size", "4", "--quiet")


@pytest.fixture(scope="module")
def run10(tmp_path_factory) -> Path:
    from difflab.pipelines.train import train

    out = tmp_path_factory.mktemp("runs") / "digits10"
    with one_thread():
        train(tiny_config(10), out, progress=False)
    return out


def sample_png(capsys, run: Path, out: Path, *flags: str) -> np.ndarray:
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(run), *SAMPLE, "--out", str(out), *flags)
    assert rc == 0, err
    return np.asarray(Image.open(out)).astype(int)


def assert_same_image(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: a pixel may land one 8-bit level apart, and only a few do."""
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01


def test_channels_last_samples_the_same_image(capsys, run10, tmp_path):
    ref = sample_png(capsys, run10, tmp_path / "plain.png")
    assert_same_image(sample_png(capsys, run10, tmp_path / "cl.png", "--channels-last", "--precision", "fp32"), ref)
    assert_same_image(sample_png(capsys, run10, tmp_path / "auto.png", "--precision", "auto"), ref)   # fp32 on the CPU
    other = sample_png(capsys, run10, tmp_path / "seed.png", "--seed", "1")
    assert np.abs(other - ref).max() > 1                      # the comparison can tell two samplings apart


def test_compile_reaches_torch_compile(capsys, run10, tmp_path, monkeypatch):
    """--compile hands the network to torch.compile (a spy here: a real compile takes a minute on this CPU;
    tests/training/test_acceleration.py checks that a compiled U-Net computes what the eager one does)."""
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append((type(module).__name__, kw)) or module)
    ref = sample_png(capsys, run10, tmp_path / "plain.png")
    assert compiled == []
    assert_same_image(sample_png(capsys, run10, tmp_path / "compiled.png", "--compile", "--channels-last"), ref)
    assert compiled == [("UNet", {"dynamic": False})]


@pytest.mark.parametrize("flags,needles", [
    (["--precision", "bf16"], ["--precision bf16", "CUDA"]),
    (["--precision", "fp16"], ["--precision", "fp16"]),
])
def test_bad_acceleration_flags_are_one_line(capsys, run10, flags, needles):
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(run10), "--n", "2", "--steps", "2", *flags)
    assert_one_line_error(rc, err, *needles)
