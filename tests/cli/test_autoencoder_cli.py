"""`difflab train-autoencoder`, `eval-autoencoder`, `autoencode`: what they write, and one-line errors (exit 2, no
traceback) for wrong input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, cli

TINY = ("--dataset", "digits", "--batch-size", "16", "--base-channels", "16", "--device", "cpu", "--quiet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A KL run with its discriminator from step 2, and a VQ run without one, trained through the CLI."""
    from difflab.cli.main import main

    tmp = tmp_path_factory.mktemp("autoencoder_cli")
    kl, vq = tmp / "kl", tmp / "vq"
    assert main(["train-autoencoder", *TINY, "--kind", "kl", "--steps", "4", "--disc-start", "2",
                 "--sample-every", "2", "--checkpoint-every", "2", "--out", str(kl)]) == 0
    assert main(["train-autoencoder", *TINY, "--kind", "vq", "--codebook-size", "32", "--steps", "2", "--no-disc",
                 "--out", str(vq)]) == 0
    return {"kl": kl, "vq": vq}


def test_train_autoencoder_writes_a_run_folder(runs):
    kl, vq = runs["kl"], runs["vq"]
    for name in ("config.json", "log.jsonl", "loss.png", "reconstructions.png", "checkpoints"):
        assert (kl / name).exists(), name
    assert sorted(p.name for p in (kl / "reconstructions").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    cfg = json.loads((kl / "config.json").read_text())
    assert cfg["task"] == "autoencoder" and cfg["autoencoder"]["kind"] == "kl" and cfg["loss"]["disc_start"] == 2
    assert cfg["autoencoder"]["base_channels"] == 16 and cfg["discriminator"]["in_channels"] == 1
    cfg = json.loads((vq / "config.json").read_text())
    assert cfg["discriminator"] is None and cfg["autoencoder"]["codebook_size"] == 32


def test_resume_continues_and_keeps_the_kind(runs, capsys):
    rc, out, err = cli(capsys, "train-autoencoder", "--resume", str(runs["vq"]), "--kind", "vq", "--steps", "3",
                       "--quiet")
    assert rc == 0, err
    assert "trained 1 steps" in out
    assert [json.loads(line)["step"] for line in (runs["vq"] / "log.jsonl").read_text().splitlines()][-1] == 3


def test_eval_autoencoder_writes_its_numbers(runs, capsys, tmp_path):
    rc, out, err = cli(capsys, "eval-autoencoder", "--checkpoint", str(runs["kl"]), "--n", "60", "--device", "cpu")
    assert rc == 0, err
    result = json.loads((runs["kl"] / "eval-autoencoder.json").read_text())
    assert {"n", "psnr", "ssim", "rfid", "l1", "kind", "step", "checkpoint", "latent_shape"} <= result.keys()
    assert result["n"] == 60 and result["step"] == 4 and result["latent_shape"] == [4, 4, 4]
    assert 0 < result["psnr"] < 100 and -1 <= result["ssim"] <= 1 and result["rfid"] > 0
    assert "PSNR" in out and "rFID" in out
    rc, out, err = cli(capsys, "eval-autoencoder", "--checkpoint", str(runs["vq"]), "--out", str(tmp_path / "e.json"))
    assert rc == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n"] == 180 and 0 < result["codebook_usage"] <= 1 and result["perplexity"] >= 1
    assert "codebook usage" in out


def test_autoencode_draws_input_noisy_and_reconstruction(runs, capsys, tmp_path):
    out_png = tmp_path / "ae.png"
    sigma = 0.05
    rc, out, err = cli(capsys, "autoencode", "--checkpoint", str(runs["kl"]), "--n", "64", "--noise", str(sigma),
                       "--out", str(out_png), "--device", "cpu")
    assert rc == 0, err
    assert out_png.is_file() and out_png.stat().st_size > 0
    record = json.loads(out_png.with_suffix(".json").read_text())
    assert record["n"] == 64 and record["noise"] == sigma
    assert record["psnr_noisy"] == pytest.approx(10 * np.log10(4 / sigma**2), abs=0.5)   # 32.0 dB
    assert record["psnr_reconstruction"] < record["psnr_noisy"]
    assert "noisy" in out and "reconstruction" in out
    rc, out, err = cli(capsys, "autoencode", "--checkpoint", str(runs["vq"]), "--n", "3", "--out",
                       str(tmp_path / "clean.png"))
    assert rc == 0, err
    assert json.loads((tmp_path / "clean.json").read_text())["psnr_noisy"] is None


@pytest.mark.parametrize("args,needles", [
    (["train-autoencoder", "--kind", "ae"], ["invalid choice: 'ae'"]),
    (["train-autoencoder", *TINY, "--image-size", "10", "--downsample", "4"],
     ["--downsample 4 does not divide the 10x10 images", "--image-size 8 or 12"]),
    (["train-autoencoder", *TINY, "--codebook-size", "8"], ["--codebook-size does not apply to --kind kl"]),
    (["train-autoencoder", *TINY, "--no-disc", "--disc-start", "3"], ["--no-disc", "drop --disc-start"]),
    (["train-autoencoder", "--resume", "{vq}", "--kind", "kl"], ["is a VQ autoencoder run, not KL", "--kind vq"]),
    (["train-autoencoder", "--resume", "{vq}", "--lr", "0.1"], ["--lr cannot change when resuming"]),
    (["train-autoencoder", "--resume", "{diffusion}"], ["is a diffusion run, not an autoencoder"]),
    (["eval-autoencoder", "--checkpoint", "{diffusion}"], ["is a diffusion run, not an autoencoder"]),
    (["autoencode", "--checkpoint", "{diffusion}"], ["is a diffusion run, not an autoencoder"]),
    (["autoencode", "--checkpoint", "{kl}", "--noise", "-1"], ["--noise", "must be >= 0"]),
    (["sample", "--checkpoint", "{kl}"], ["is an autoencoder run", "difflab train --autoencoder"]),
])
def test_wrong_input_is_one_line(runs, trained_run, capsys, tmp_path, args, needles):
    places = {"kl": str(runs["kl"]), "vq": str(runs["vq"]), "diffusion": str(trained_run)}
    argv = [a.format(**places) for a in args]
    if argv[0] == "train-autoencoder" and "--resume" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    rc, _, err = cli(capsys, *argv)
    assert_one_line_error(rc, err, *needles)
    assert list(tmp_path.iterdir()) == []
