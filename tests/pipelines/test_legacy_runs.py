"""Run folders written by difflab 0.1 (tests/fixtures/legacy_v0_1, made by make_v0_1_runs.py at commit d49c124)
still load, sample exactly as they did, and train on.

One expectation was re-recorded: euler_10 of the DDPM run, at difflab 0.5, when DDPMProcess began to give a grid
time i/T the alpha' of the cell below it instead of the one above (a bug fix for every ODE solver on DDPM)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import cli
from safetensors.torch import load_file

from difflab.pipelines.run import load_model
from difflab.pipelines.sample import sample_run

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1"
RUNS = ["digits-ddpm-classcond", "moons-flow"]


@pytest.mark.parametrize("run", RUNS)
def test_a_0_1_run_samples_what_it_sampled_then(run):
    expected = load_file(str(LEGACY / run / "expected_samples.safetensors"))
    ema, raw = load_model(LEGACY / run, device="cpu"), load_model(LEGACY / run, ema=False, device="cpu")
    for key, model in [("ddim_10", ema), ("euler_10", ema), ("ddpm_10", ema), ("raw_ddim_10", raw)]:
        sampler, steps = key.removeprefix("raw_").split("_")
        x = sample_run(model.network, model.process, model.config, sampler, int(steps), 8, 0).x
        torch.testing.assert_close(x, expected[key], rtol=1e-6, atol=1e-5, msg=f"{run} {key}")   # euler_10: |x| ~ 200


@pytest.mark.parametrize("run", RUNS)
def test_a_0_1_run_resumes_and_keeps_reading_the_process_time(run, tmp_path, capsys):
    copy = tmp_path / run
    shutil.copytree(LEGACY / run, copy)
    rc, out, err = cli(capsys, "train", "--resume", str(copy), "--steps", "34", "--quiet")
    assert rc == 0, err
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["version"] != "0.1.0" and cfg["network"]["noise_input"] == "t" and cfg["spec"]["kind"] in ("pixels", "points")
    assert (copy / "checkpoints" / "step_0000034").is_dir()
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(copy), "--n", "4", "--steps", "5",
                       "--out", str(tmp_path / "s.png"))
    assert rc == 0 and (tmp_path / "s.png").exists(), err
