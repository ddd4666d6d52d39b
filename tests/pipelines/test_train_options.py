"""`difflab train` with every process and target: the options reach config.json and the run samples."""

from __future__ import annotations

import json

import pytest
import torch

from difflab.cli.main import main
from difflab.pipelines.run import load_model
from difflab.pipelines.sample import sample_run

QUICK = ["--steps", "6", "--batch-size", "16", "--warmup", "2", "--log-every", "3", "--checkpoint-every", "6",
         "--sample-every", "0", "--preview-steps", "3", "--quiet"]


def train(tmp_path, *args: str) -> dict:
    out = tmp_path / "run"
    assert main(["train", *args, *QUICK, "--out", str(out)]) == 0
    return json.loads((out / "config.json").read_text())


@pytest.mark.parametrize("process,target", [("vp", "v"), ("ve", "eps"), ("flow", "velocity"), ("flow", "x0"),
                                            ("ddpm", "score"), ("ve", "edm")])
def test_each_process_and_target_trains_and_samples(tmp_path, process, target):
    cfg = train(tmp_path, "--process", process, "--target", target)
    assert cfg["process"]["name"] == process and cfg["objective"]["target"] == target
    expected = "lognormal" if target == "edm" else "discrete" if process == "ddpm" else "continuous"
    assert cfg["objective"]["time_sampling"] == expected
    m = load_model(tmp_path / "run", device="cpu")
    out = sample_run(m.network, m.process, m.config, "ddim", 4, 3, seed=0, device="cpu")
    assert out.x.shape == (3, 1, 8, 8) and torch.isfinite(out.x).all()


def test_process_options_reach_the_config(tmp_path):
    cfg = train(tmp_path, "--process", "ve", "--sigma-max", "20", "--t-min", "1e-4", "--weighting", "sigma2")
    assert cfg["process"] == {"name": "ve", "sigma_min": 0.01, "sigma_max": 20.0, "t_min": 1e-4}
    assert cfg["objective"]["weighting"] == "sigma2"


def test_flow_with_eps_keeps_alpha_positive(tmp_path):
    cfg = train(tmp_path, "--process", "flow", "--target", "eps")
    assert cfg["process"]["t_max"] == 0.999


def test_ot_coupling_on_points(tmp_path):
    cfg = train(tmp_path, "--dataset", "moons", "--model", "mlp-small", "--process", "flow", "--target", "velocity",
                "--coupling", "ot")
    assert cfg["objective"]["coupling"] == "ot" and cfg["network"]["kind"] == "mlp"


@pytest.mark.parametrize("args,needle", [
    (["--process", "vp", "--schedule", "cosine"], "--schedule does not apply to --process vp"),
    (["--process", "ddpm", "--sigma-max", "3"], "--sigma-max does not apply"),
    (["--process", "vp", "--time-sampling", "discrete"], "--time-sampling continuous"),
    (["--coupling", "ot"], "--process flow"),
    (["--process", "flow", "--target", "eps", "--t-max", "1"], "--t-max"),
    (["--process", "vp", "--beta-min", "30"], "beta_min < beta_max"),
])
def test_bad_combinations_are_one_line(tmp_path, capsys, args, needle):
    assert main(["train", *args, *QUICK, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("dataset,kind,shape", [("moons", "mlp", (3, 2)), ("digits", "unet", (3, 1, 8, 8))])
def test_the_default_model_follows_the_data(tmp_path, dataset, kind, shape):
    cfg = train(tmp_path, "--dataset", dataset)
    assert cfg["model"] in ("mlp", "tiny") and cfg["network"]["kind"] == kind
    assert cfg["spec"]["kind"] == ("points" if dataset == "moons" else "pixels")
    m = load_model(tmp_path / "run", device="cpu")
    assert sample_run(m.network, m.process, m.config, "euler", 3, 3, seed=0).x.shape == shape
