"""Training: the loss falls, resume is bit-identical, checkpoints survive kills and reject corruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from helpers import run_state
from difflab.errors import DifflabError
from difflab.pipelines.train import train
from difflab.training import Trainer, TrainerConfig, read_log
from difflab.training.checkpoint import resolve_checkpoint


def test_short_training_lowers_the_loss(tmp_path):
    res = train(tiny_config(60, lr=2e-3), tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in log] == list(range(5, 61, 5))
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert res.steps == 60 and res.img_per_s > 0
    # every log line carries the loss per noise-level bucket (10 buckets over t)
    assert len(log[-1]["loss_by_t"]) == 10
    for name in ("config.json", "samples.png", "loss.png"):
        assert (tmp_path / "run" / name).exists()
    ckpt = resolve_checkpoint(tmp_path / "run")
    assert ckpt.name == "step_0000060"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "ema.safetensors", "trainer.safetensors",
                                                 "trainer.json"}


def test_resume_is_bit_identical(tmp_path):
    """2N steps in one go == N steps, resume, N more: every weight, EMA weight, Adam moment and RNG state."""
    cfg = tiny_config(16, lr=2e-3)
    train(cfg, tmp_path / "once", progress=False)
    half = replace(cfg, trainer=replace(cfg.trainer, steps=8))
    train(half, tmp_path / "twice", progress=False)
    train(cfg, tmp_path / "twice", resume=True, progress=False)
    a, b = run_state(tmp_path / "once"), run_state(tmp_path / "twice")
    assert a.keys() == b.keys() and len(a) > 50
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the resumed log has each step once
    steps = [r["step"] for r in read_log(tmp_path / "twice" / "log.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 16


def test_same_seed_same_run_whatever_the_global_rng(tmp_path):
    """A run is a function of its config: the initial weights come from --seed, not from the process's RNG."""
    cfg = tiny_config(4, lr=2e-3)
    torch.manual_seed(123)
    train(cfg, tmp_path / "a", progress=False)
    torch.randn(1000)                                  # another state of the global RNG
    train(cfg, tmp_path / "b", progress=False)
    a, b = run_state(tmp_path / "a"), run_state(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    other = replace(cfg, trainer=replace(cfg.trainer, seed=cfg.trainer.seed + 1))
    train(other, tmp_path / "c", progress=False)
    c = run_state(tmp_path / "c")
    assert not torch.equal(a["model.conv_in.weight"], c["model.conv_in.weight"])


def test_fresh_run_refuses_existing_folder(tmp_path, trained_run):
    with pytest.raises(DifflabError, match="--resume"):
        train(tiny_config(5), trained_run, progress=False)


def test_truncated_checkpoint_is_named(tmp_path):
    train(tiny_config(10), tmp_path / "run", progress=False)
    weights = resolve_checkpoint(tmp_path / "run") / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    from difflab.pipelines.run import load_model
    with pytest.raises(DifflabError, match="ema.safetensors.*corrupt or truncated"):
        load_model(tmp_path / "run")
    cfg = tiny_config(20)
    with pytest.raises(DifflabError, match="corrupt or truncated"):
        train(cfg, tmp_path / "run", resume=True, progress=False)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    net = torch.nn.Linear(2, 2)
    calls = {"n": 0}

    def loss_fn(model, x, y, g):
        calls["n"] += 1
        loss = model(x).pow(2).mean(1)
        if calls["n"] == 7:
            loss = loss * float("nan")
        return loss, torch.zeros(x.shape[0])

    cfg = TrainerConfig(steps=20, batch_size=4, checkpoint_every=3, log_every=1, sample_every=0)
    trainer = Trainer(net, loss_fn, torch.randn(16, 2), None, cfg, tmp_path)
    with pytest.raises(DifflabError, match=r"loss is nan at step 7.*step_0000006"):
        trainer.run(progress=False)
    ckpt = resolve_checkpoint(tmp_path)
    assert ckpt.name == "step_0000006"
    state = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values())


def test_sigkill_at_any_moment_leaves_a_resumable_run(tmp_path):
    """Kill a real training process while it writes checkpoints every step; resume and finish."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "difflab.cli.main", "train", "--out", str(run), "--steps", "400",
           "--batch-size", "8", "--checkpoint-every", "1", "--log-every", "1", "--sample-every", "0",
           "--preview-steps", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "checkpoints" / "latest").exists():
        time.sleep(0.1)
    time.sleep(1.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpt = resolve_checkpoint(run)                   # a complete checkpoint is there
    step = int(ckpt.name.split("_")[1])
    assert 1 <= step < 400
    res = subprocess.run([sys.executable, "-m", "difflab.cli.main", "train", "--resume", str(run),
                          "--steps", str(step + 3), "--quiet"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert resolve_checkpoint(run).name == f"step_{step + 3:07d}"
    assert not list((run / "checkpoints").glob(".tmp_*"))


def test_leftovers_of_interrupted_writes_are_cleaned_and_the_newest_complete_checkpoint_found(tmp_path):
    from difflab.training.checkpoint import CHECKPOINTS, clean_checkpoints, latest_checkpoint

    train(tiny_config(20), tmp_path / "run", progress=False)      # step_0000010 and step_0000020
    root = tmp_path / "run" / CHECKPOINTS
    (root / ".latest.x1y2").write_text("step_0000010\n")             # a half-written `latest`
    (root / ".tmp_step_0000030_abc").mkdir()                        # a half-written checkpoint
    (root / "step_0000005").mkdir()                                 # a half-pruned old one
    (root / "step_0000005" / "ema.safetensors").write_bytes(b"")
    (root / "latest").unlink()                                      # killed before `latest`
    assert latest_checkpoint(tmp_path / "run").name == "step_0000020"
    assert resolve_checkpoint(root).name == "step_0000020"         # the checkpoints folder itself works too
    clean_checkpoints(root, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step_0000010", "step_0000020"]


def test_the_run_folder_of_a_run_its_checkpoints_or_a_step_folder():
    from difflab.training.checkpoint import run_folder

    for given in ("runs/a", "runs/a/checkpoints", "runs/a/checkpoints/step_0000500"):
        assert run_folder(given) == Path("runs/a")
    assert run_folder("checkpoints/a") == Path("checkpoints/a")        # a run kept in a folder named checkpoints
