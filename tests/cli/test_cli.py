"""The command line: every user error is one line on stderr with exit status 2, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from difflab.cli.main import main
from helpers import assert_one_line_error, cli


@pytest.mark.parametrize("args,needles", [
    (["train", "--steps", "-3"], ["--steps", ">= 1"]),
    (["train", "--steps", "ten"], ["--steps", "whole number"]),
    (["train", "--model", "huge"], ["--model", "huge"]),
    (["train", "--lr", "nan"], ["--lr", "finite"]),
    (["train", "--ema-decay", "1.5", "--out", "x"], ["--ema-decay", "out of range"]),
    (["train", "--dataset", "/no/such/folder"], ["/no/such/folder"]),
    (["train", "--dataset", "moons", "--model", "tiny"], ["U-Net", "mlp"]),
    (["sample", "--checkpoint", "/no/such/run"], ["/no/such/run"]),
    (["sample", "--checkpoint", "x", "--sampler", "magic"], ["--sampler", "magic"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_bad_options_are_one_line(capsys, tmp_path, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(capsys, *args)
    assert_one_line_error(rc, err, *needles)


def test_bad_data_is_one_line_naming_the_file(capsys, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rc, _, err = cli(capsys, "train", "--dataset", str(folder), "--out", str(tmp_path / "run"))
    assert_one_line_error(rc, err, "broken.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = cli(capsys, "train", "--dataset", str(empty), "--out", str(tmp_path / "run2"))
    assert_one_line_error(rc, err, "no images")


def test_resume_rejects_changed_options(capsys, trained_run):
    rc, _, err = cli(capsys, "train", "--resume", str(trained_run), "--lr", "0.1")
    assert_one_line_error(rc, err, "--lr", "cannot change")


def test_sample_option_mismatch(capsys, trained_run, tmp_path):
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(trained_run), "--sampler", "ddpm", "--eta", "0.3")
    assert_one_line_error(rc, err, "--eta")
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(trained_run), "--label", "3")
    assert_one_line_error(rc, err, "--class-cond")


def test_sample_writes_grid_and_trajectory(capsys, trained_run, tmp_path):
    out = tmp_path / "s.png"
    rc, text, err = cli(capsys, "sample", "--checkpoint", str(trained_run), "--sampler", "ddpm", "--steps", "12",
                        "--n", "9", "--seed", "3", "--out", str(out), "--trajectory")
    assert rc == 0, err
    assert "12 NFE" in text and "EMA" in text
    grid = Image.open(out)
    assert grid.size == (3 * 33 + 1, 3 * 33 + 1)        # 3x3 cells of 8x8 images scaled x4 plus 1-px borders
    assert Image.open(tmp_path / "s_trajectory.png").size[0] > 300


def test_schedule_and_noise_plots(capsys, tmp_path):
    rc, _, err = cli(capsys, "schedule", "--plot", str(tmp_path / "sched.png"))
    assert rc == 0, err
    rc, _, err = cli(capsys, "noise", "--dataset", "digits", "--out", str(tmp_path / "noise.png"), "--n", "3")
    assert rc == 0, err
    for name in ("sched.png", "noise.png"):
        img = Image.open(tmp_path / name)
        assert img.size[0] > 400 and np.asarray(img).std() > 10


def test_console_script_error_has_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    res = subprocess.run([sys.executable, "-m", "difflab.cli.main", "sample", "--checkpoint", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert_one_line_error(res.returncode, res.stderr, "does not exist")


def test_train_help_has_a_flag_for_every_process_option_with_its_defaults(capsys):
    from difflab.process import PROCESSES, process_options

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]
    for name in PROCESSES:
        for option, default in process_options(name).items():
            flag = "--" + option.replace("_", "-")
            help_text = re.search(re.escape(flag) + r" \S+ (.*?\(default: [^)]*\))", text)
            assert help_text, flag
            assert str(default) in help_text.group(1) and name in help_text.group(1), (flag, help_text.group(1))
