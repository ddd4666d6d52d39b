"""Data parallel training under torchrun (gloo, 2 CPU processes): a 2-process run with B/2 examples per rank takes
the steps a 1-process run with batch B takes (up to float sums), and a 2-process run killed mid-run and resumed
ends bit for bit where an uninterrupted one does, though it streams its data from the disk cache (--loader memmap,
a worker per process) and the uninterrupted one holds it in memory. Plus the pieces: shared draws, rank slices,
RNG keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from helpers import run_state

from difflab.errors import DifflabError
from difflab.rng import BatchDraws
from difflab.training import Adversary, Trainer, TrainerConfig, read_log
from difflab.training.batches import RankRows
from difflab.training.checkpoint import rank_rng_key, rank_rng_states, resolve_checkpoint
from difflab.training.data_order import DataOrder
from difflab.training.distributed import Distributed

STEPS, KILL_AT, BATCH = 12, 10, 16
ARGS = ["--dataset", "digits.npz", "--steps", str(STEPS), "--batch-size", str(BATCH), "--checkpoint-every", "4",
        "--log-every", "1", "--sample-every", "0", "--preview-steps", "2", "--keep-checkpoints", "1", "--quiet"]
ROOT = Path(__file__).resolve().parents[2]
# Python run before the CLI in each process of a launch (torchrun starts this file's text as a script).
CLI = "\nimport sys\nfrom difflab.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
# Rank 1 kills the whole launch (torchrun and both workers) as it starts step KILL_AT: after the checkpoint of
# step 8, in the middle of training, with rank 0 anywhere in its step.
KILL = f"""
import os, signal
from difflab.training import trainer as t
real = t.Trainer.train_step
def train_step(self):
    if self.dist.rank == 1 and self.step == {KILL_AT}:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return real(self)
t.Trainer.train_step = train_step
"""


def launch(tmp: Path, args: list[str], processes: int, prelude: str = "") -> subprocess.CompletedProcess:
    """`difflab ARGS` in one process, or under `torchrun --standalone --nproc-per-node N` (its own session, so
    a kill of its process group reaches nothing else)."""
    script = tmp / f"cli_{abs(hash(prelude))}.py"
    script.write_text(textwrap.dedent(prelude) + CLI)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", DIFFLAB_CACHE=str(tmp / "cache"), PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    launcher = [sys.executable, str(script)] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), str(script)]
    return subprocess.run([*launcher, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=300,
                          start_new_session=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    one, two, killed = tmp / "one", tmp / "two", tmp / "killed"
    digits = load_digits().images                                   # (1797, 8, 8) in 0..16
    np.savez(tmp / "digits.npz", images=np.round(digits * 255 / 16).astype(np.uint8))
    for out, n in ((one, 1), (two, 2)):
        res = launch(tmp, ["train", *ARGS, "--out", str(out)], n)
        assert res.returncode == 0, res.stderr[-2000:]
    res = launch(tmp, ["train", *ARGS, "--out", str(killed), "--loader", "memmap", "--workers", "1"], 2, prelude=KILL)
    assert res.returncode != 0                       # killed
    assert resolve_checkpoint(killed).name == "step_0000008"
    res = launch(tmp, ["train", "--resume", str(killed), "--quiet"], 2)
    assert res.returncode == 0, res.stderr[-2000:]
    return {"one": one, "two": two, "killed": killed}


def test_two_processes_with_half_batches_take_the_steps_of_one_process(runs):
    one, two = run_state(runs["one"]), run_state(runs["two"])
    for name in ("model", "ema"):
        keys = [k for k in one if k.startswith(name + ".")]
        assert keys and all(k in two for k in keys)
        scale = max(one[k].abs().max().item() for k in keys)
        diff = max((one[k] - two[k]).abs().max().item() for k in keys)
        assert diff < 1e-5 * scale, (name, diff, scale)      # measured 8.6e-8 of the largest weight after 12 steps
    # the same examples and draws: each step's loss and its 10 noise-level buckets agree
    log1, log2 = read_log(runs["one"] / "log.jsonl"), read_log(runs["two"] / "log.jsonl")
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == list(range(1, STEPS + 1))
    for a, b in zip(log1, log2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert [x is None for x in a["loss_by_t"]] == [x is None for x in b["loss_by_t"]]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    # rank 0 alone wrote: one log line per step, and rank 1's RNG states are in the checkpoint
    assert "trainer.rng.rank1.generator" in two and "trainer.rng.rank1.generator" not in one
    assert json.loads((resolve_checkpoint(runs["two"]) / "trainer.json").read_text())["world_size"] == 2


def test_a_two_process_run_killed_and_resumed_ends_bit_for_bit_like_an_uninterrupted_one(runs):
    final, reference = run_state(runs["killed"]), run_state(runs["two"])
    assert resolve_checkpoint(runs["killed"]).name == f"step_{STEPS:07d}"
    assert final.keys() == reference.keys()
    assert [k for k in final if not torch.equal(final[k], reference[k])] == []
    log = read_log(runs["killed"] / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    assert all(r["load_img_per_s"] > 0 for r in log)              # the loader's throughput, in every line


def test_the_ranks_draws_are_slices_of_one_draw_for_the_whole_batch():
    g = torch.Generator().manual_seed(3)
    whole = [torch.randn(8, 3, generator=g), torch.rand(8, generator=g), torch.randint(1, 9, (8,), generator=g)]
    shares = []
    for rank in range(2):
        g = torch.Generator().manual_seed(3)
        d = BatchDraws(g, slice(4 * rank, 4 * rank + 4), 8)
        shares.append([d.randn((4, 3)), d.rand((4,)), d.randint(1, 9, (4,))])
    for i, full in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][i], shares[1][i]]), full)
    with pytest.raises(ValueError, match="share of 3 rows"):
        BatchDraws(torch.Generator(), slice(0, 4), 8).randn((3,))


def test_rank_rows_split_each_global_batch_into_equal_disjoint_slices():
    order = DataOrder(50, 12, seed=1)
    for step in (0, 3, 4, 9):
        parts = [RankRows(order, r, 3)(step) for r in range(3)]
        assert [len(p) for p in parts] == [4, 4, 4]
        assert torch.equal(torch.cat(parts), order.batch(step))
    assert torch.equal(RankRows(order)(5), order.batch(5))


def test_rank_rng_states_read_each_ranks_own_and_fall_back_to_rank_zeros():
    base = {"rng.generator": torch.zeros(2), "rng.torch": torch.ones(2)}
    tensors = {**base, **{rank_rng_key(k, 1): v + 5 for k, v in base.items()}}
    assert rank_rng_states(tensors, 0).keys() == base.keys()
    assert torch.equal(rank_rng_states(tensors, 1)["rng.torch"], torch.full((2,), 6.0))
    assert torch.equal(rank_rng_states(tensors, 2)["rng.torch"], base["rng.torch"])   # resumed on more ranks


def test_a_global_batch_that_does_not_split_evenly_and_adversarial_runs_are_refused(tmp_path):
    net = torch.nn.Linear(2, 2)
    place = Distributed(rank=0, world=3)                # checked before any process group is needed
    with pytest.raises(DifflabError, match="--batch-size 8 .* multiple of 3"):
        Trainer(net, lambda *a: None, torch.randn(16, 2), None, TrainerConfig(batch_size=8), tmp_path, dist=place)
    model = torch.nn.ModuleDict({"g": torch.nn.Linear(2, 2), "discriminator": torch.nn.Linear(2, 1)})
    with pytest.raises(DifflabError, match="one process"):
        Trainer(model, lambda *a, **k: None, torch.randn(16, 2), None, TrainerConfig(batch_size=6), tmp_path,
                adversary=Adversary(), dist=place)


def test_an_interrupted_run_is_told_to_resume_as_it_was_started(monkeypatch):
    from difflab.cli.train import resume_command

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resume_command("train-classifier", Path("runs/c")) == "difflab train-classifier --resume runs/c"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resume_command("train", Path("runs/d")) == "torchrun <the same options> -m difflab train --resume runs/d"
