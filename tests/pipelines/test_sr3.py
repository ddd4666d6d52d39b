"""SR3 super-resolution runs (Saharia et al. 2021): the config that records them, the conditions they train on,
a short run end to end, and the one-line errors of `difflab train --task sr` and of sampling such a run.

The digits run (--scale 2, 200 steps, about 30 s on two cores) is enough for the model to lean on its condition:
its x0 prediction from a noisy image is far closer to the truth given that image's low-resolution version
than given another image's, so the test fails if the condition is ignored.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, cli
from PIL import Image

from difflab import __version__
from difflab.condition import Condition
from difflab.config import DataConfig, EvalConfig, RunConfig, migrate
from difflab.data import ArrayDataset
from difflab.dataspec import DataSpec
from difflab.denoisers import NetworkDenoiser
from difflab.errors import DifflabError
from difflab.objectives import DiffusionObjective
from difflab.pipelines.run import (data_conditions, load_model, load_run_data, low_resolution_condition,
                                   preview_request)
from difflab.operators import upsample

DIGITS, RGB, MOONS = DataSpec.pixels(1, 8, 8), DataSpec.pixels(3, 16, 16), DataSpec.points(2)
LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1"
TRAIN = ("--steps", "200", "--batch-size", "32", "--sample-every", "0", "--checkpoint-every", "200",
         "--preview-steps", "10", "--quiet")


def sr_config(scale: int = 2, **data) -> RunConfig:
    return replace(RunConfig(), data=DataConfig(sr_scale=scale, **data))


# ------------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("spec", [DIGITS, RGB], ids=lambda s: f"{s.shape}")
def test_a_resolved_sr_run_reads_the_data_channels_and_never_drops_them(spec):
    cfg = sr_config().resolved(spec)
    assert cfg.network["cond_channels"] == spec.shape[0] and cfg.network["in_channels"] == spec.shape[0]
    assert cfg.network["out_channels"] is None and cfg.task == "diffusion"
    assert cfg.objective.cond_drop == 0.0
    assert RunConfig().resolved(spec).network["cond_channels"] == 0


def test_a_class_conditional_sr_run_drops_its_labels_only():
    cfg = sr_config(class_cond=True).resolved(DIGITS, num_classes=10)
    assert cfg.objective.cond_drop == 0.1 and cfg.network["num_classes"] == 10 and cfg.network["cond_channels"] == 1


def test_an_sr_config_round_trips_through_its_file(tmp_path):
    cfg = sr_config(4).resolved(RGB)
    cfg.save(tmp_path)
    back = RunConfig.load(tmp_path)
    assert json.loads(json.dumps(back.to_dict())) == json.loads(json.dumps(cfg.to_dict()))
    assert back.data.sr_scale == 4 and back.network["cond_channels"] == 3
    assert migrate(cfg.to_dict()) == cfg.to_dict()           # a 0.4 config is left as it is


def test_a_0_3_config_migrates_to_no_super_resolution():
    """A 0.3.0 config: a current one without the keys 0.4 added."""
    d = json.loads(json.dumps(RunConfig(data=DataConfig(class_cond=True)).resolved(DIGITS, 10).to_dict()))
    del d["data"]["sr_scale"], d["network"]["cond_channels"]
    d["version"] = "0.3.0"
    cfg = RunConfig.from_dict(d)
    assert cfg.data.sr_scale is None and cfg.network["cond_channels"] == 0 and cfg.version == "0.3.0"
    with pytest.raises(DifflabError, match="sr_scale"):        # a 0.4 config must have it
        RunConfig.from_dict({**d, "version": "0.4.0"})


@pytest.mark.parametrize("run", ["digits-ddpm-classcond", "moons-flow"])
def test_a_0_1_config_migrates_to_no_super_resolution(run):
    cfg = RunConfig.from_dict(json.loads((LEGACY / run / "config.json").read_text()))
    assert cfg.data.sr_scale is None
    assert cfg.network.get("cond_channels", 0) == 0 and ("cond_channels" in cfg.network) == run.startswith("digits")


@pytest.mark.parametrize("make,spec,match", [
    (lambda: sr_config(), MOONS, "needs images"),
    (lambda: sr_config(4), DataSpec.pixels(1, 10, 10), "--scale 4 does not divide the 10x10"),
    (lambda: replace(sr_config(), evaluation=EvalConfig(every=100)), DIGITS, "--eval-every"),
    (lambda: replace(sr_config(), objective=DiffusionObjective(cond_drop=0.2, time_sampling="auto")), DIGITS,
     "--cond-drop"),
    (lambda: sr_config(text_encoder="some-encoder"), DIGITS, "--text"),
    (lambda: sr_config(1), DIGITS, "--scale"),
])
def test_sr_configs_that_cannot_train_are_refused_in_one_line(make, spec, match):
    with pytest.raises(DifflabError, match=match):
        make().resolved(spec)


# -------------------------------------------------------------------------------------------------- conditions
def test_low_resolution_condition_upsamples_the_measurement():
    y = torch.randn(3, 1, 4, 4)
    cond = low_resolution_condition(y, 8)
    assert isinstance(cond, Condition) and cond.labels is None and cond.image.shape == (3, 1, 8, 8)
    torch.testing.assert_close(cond.image, upsample(y, 8), rtol=0, atol=0)
    flat = low_resolution_condition(torch.full((1, 3, 2, 2), 0.25), 8).image      # a flat image stays flat
    torch.testing.assert_close(flat, torch.full((1, 3, 8, 8), 0.25))


def test_an_sr_run_trains_on_each_image_s_clean_low_resolution_version():
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    data = ArrayDataset(x, torch.arange(5), 5, "toy")
    cond = data_conditions(sr_config(4).resolved(DIGITS), data)
    assert cond.labels is None
    torch.testing.assert_close(cond.image, upsample(torch.nn.functional.avg_pool2d(x, 4), 8), rtol=0, atol=0)
    both = data_conditions(sr_config(2, class_cond=True).resolved(DIGITS, 5), data)
    assert torch.equal(both.labels, torch.arange(5)) and both.image.shape == x.shape
    dropped = both.drop(torch.tensor([True, False, True, False, False]))
    assert dropped.labels.tolist() == [-1, 1, -1, 3, 4] and dropped.image is both.image
    first = preview_request(sr_config(2, class_cond=True), 3, examples=both)
    assert first.n == 3 and torch.equal(first.cond.image, both.image[:3]) and first.labels.tolist() == [0, 1, 2]


# -------------------------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from difflab.cli.main import main

    out = tmp_path_factory.mktemp("sr3") / "digits-sr2"
    assert main(["train", "--dataset", "digits", "--task", "sr", "--scale", "2", "--out", str(out), *TRAIN]) == 0
    return out


def test_the_run_records_its_factor_and_previews_held_out_restorations(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["sr_scale"] == 2 and cfg["task"] == "diffusion" and cfg["version"] == __version__
    assert cfg["network"]["cond_channels"] == 1 and cfg["objective"]["cond_drop"] == 0.0
    w, h = Image.open(run / "samples.png").size   # 64 held-out images: 8 groups of 3 rows (input, SR3, truth) of 8
    assert h > 2.5 * w


def test_the_model_reads_its_low_resolution_condition(run):
    """x0_hat of noisy held-out images: given their own low-resolution versions it is far closer to the truth than
    given another image's (each row's condition moved to the next row)."""
    m = load_model(run, device="cpu")
    test = load_run_data(m.config, "test")
    x0, cond = test.data, data_conditions(m.config, test)
    other = cond[torch.roll(torch.arange(len(x0)), 1)]
    denoiser = NetworkDenoiser(m.network, m.process, m.config.objective.target)
    t = torch.tensor(0.1, dtype=torch.float64)                        # sigma about 0.3 on the default ddpm path
    alpha, sigma = m.process.alpha_sigma(t)
    x_t = (alpha * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))).float()
    with torch.no_grad():
        right = float(((denoiser(x_t, t, cond).x0 - x0) ** 2).mean())
        wrong = float(((denoiser(x_t, t, other).x0 - x0) ** 2).mean())
    assert right < 0.5 * wrong, (right, wrong)


def test_resuming_keeps_the_run_s_factor_and_refuses_a_new_one(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rc, out, err = cli(capsys, "train", "--resume", str(copy), "--task", "sr", "--scale", "4")
    assert_one_line_error(rc, err, "--task", "--scale", "cannot change when resuming")
    rc, out, err = cli(capsys, "train", "--resume", str(copy), "--steps", "205", "--quiet")
    assert rc == 0, err
    assert RunConfig.load(copy).data.sr_scale == 2


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sampling_or_evaluating_an_sr_run_points_to_difflab_restore(run, tmp_path, capsys, command):
    rc, out, err = cli(capsys, command, "--checkpoint", str(run), "--n", "4", "--steps", "2",
                       *(["--out", str(tmp_path / "x.png")] if command == "sample" else []))
    assert_one_line_error(rc, err, "super-resolution", f"difflab restore --checkpoint {run} --images held-out")


# ------------------------------------------------------------------------------------------- one-line errors
@pytest.mark.parametrize("args,needles", [
    (["--scale", "2"], ["--scale", "--task sr"]),
    (["--task", "diffusion", "--scale", "2"], ["--scale", "--task sr"]),
    (["--task", "sr"], ["--task sr", "--scale 2"]),
    (["--task", "sr", "--scale", "2", "--dataset", "moons"], ["--task sr", "images"]),
    (["--task", "sr", "--scale", "4", "--image-size", "10"], ["--scale 4", "10x10"]),
    (["--task", "sr", "--scale", "2", "--text"], ["--task sr", "--text"]),
    (["--task", "sr", "--scale", "2", "--cond-drop", "0.1"], ["--cond-drop", "--task sr"]),
    (["--task", "sr", "--scale", "2", "--eval-every", "100"], ["--eval-every", "difflab restore"]),
    (["--task", "sr", "--scale", "3"], ["--scale", "invalid choice"]),
])
def test_wrong_sr_training_options_are_one_line_errors(tmp_path, capsys, args, needles):
    rc, out, err = cli(capsys, "train", "--dataset", "digits", *args, "--steps", "1", "--out", str(tmp_path / "x"))
    assert_one_line_error(rc, err, *needles)
    assert not (tmp_path / "x").exists()
