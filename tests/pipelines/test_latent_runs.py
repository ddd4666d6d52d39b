"""Latent diffusion end to end: a tiny autoencoder on digits, a diffusion model trained on its latents
(difflab train --autoencoder), sampled with every sampler and decoded to images of the data's shape; the run keeps
its own copy of the autoencoder; resuming reads the cached latents; guidance, restoration, inversion and editing
work through the decoder; bad combinations are one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from conftest import tiny_config
from helpers import assert_one_line_error, cli
from difflab.codecs.autoencoder import WEIGHTS
from difflab.config import AutoencoderRunConfig, DataConfig, RunConfig
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.networks.autoencoder import AutoencoderConfig
from difflab.pipelines.autoencoder import load_autoencoder, train_autoencoder
from difflab.pipelines.run import load_model
from difflab.pipelines.sample import sample_run
from difflab.samplers import SAMPLERS
from difflab.training import TrainerConfig

LATENT = (2, 4, 4)      # digits 8x8, downsample 2, 2 latent channels


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    """A KL autoencoder of digits trained for 60 steps (no GAN): its reconstructions are rough, which is all a
    latent run's plumbing needs."""
    ae = AutoencoderConfig(kind="kl", latent_channels=LATENT[0], downsample=2, base_channels=16,
                           channel_mults=(1, 2), norm_groups=8)
    cfg = AutoencoderRunConfig(data=DataConfig("digits"), autoencoder=ae.to_json(), discriminator=None,
                               trainer=TrainerConfig(steps=60, batch_size=64, lr=2e-3, warmup=5, log_every=20,
                                                     checkpoint_every=60, sample_every=0), preview=4)
    out = tmp_path_factory.mktemp("ae") / "ae"
    train_autoencoder(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory, autoencoder):
    out = tmp_path_factory.mktemp("ldm") / "ldm"
    from difflab.pipelines.train import train
    cfg = replace(tiny_config(20), codec={"name": "autoencoder", "source": str(autoencoder)})
    train(cfg, out, progress=False)
    return out


def test_a_latent_run_records_its_codec_and_keeps_its_autoencoder(latent_run, autoencoder):
    cfg = RunConfig.load(latent_run)
    assert cfg.spec == DataSpec("latents", LATENT)
    assert cfg.codec["name"] == "autoencoder" and (latent_run / WEIGHTS).is_file()
    assert cfg.network["in_channels"] == LATENT[0] and cfg.network["image_size"] == LATENT[1]
    # s makes the training latents unit-variance: s std(E(x)) = 1
    ae = load_autoencoder(autoencoder)
    from difflab.pipelines.run import load_run_data
    with torch.no_grad():
        z = ae.module.encode_latent(load_run_data(cfg).data)
    assert abs(cfg.codec["scale"] * float(z.std()) - 1) < 1e-4
    # the copy decodes exactly as the autoencoder run does
    model = load_model(latent_run, device="cpu")
    z = torch.randn(3, *LATENT)
    with torch.no_grad():
        torch.testing.assert_close(model.codec.decode(z), ae.module.decode(z / cfg.codec["scale"]).clamp(-1, 1))


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_draws_latents_that_decode_to_images_of_the_data(latent_run, sampler):
    model = load_model(latent_run, device="cpu")
    out = sample_run(model.network, model.process, model.config, sampler, 4, 5, seed=0, codec=model.codec)
    assert out.x.shape == (5, 1, 8, 8)
    assert torch.isfinite(out.x).all() and out.x.min() >= -1 and out.x.max() <= 1


def test_resuming_reads_the_cached_latents_and_the_runs_own_copy(latent_run, autoencoder, tmp_path):
    from difflab.pipelines.latents import prepare_latents
    from difflab.pipelines.run import load_run_data
    cfg = RunConfig.load(latent_run)
    data = load_run_data(cfg)
    again, setup = prepare_latents(cfg, data, latent_run)
    assert setup.from_cache and setup.weights is None
    assert json.loads(json.dumps(again.codec)) == cfg.codec
    # the autoencoder's own run may move or train on: the latent run samples from its copy
    moved = tmp_path / "elsewhere"
    autoencoder.rename(moved)
    try:
        model = load_model(latent_run, device="cpu")
        assert torch.isfinite(sample_run(model.network, model.process, model.config, "ddim", 3, 2, 0,
                                         codec=model.codec).x).all()
    finally:
        moved.rename(autoencoder)


def test_a_damaged_copy_of_the_autoencoder_is_a_one_line_error(latent_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(latent_run, run)
    blob = bytearray((run / WEIGHTS).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (run / WEIGHTS).write_bytes(bytes(blob))
    model = load_model(run, device="cpu")
    with pytest.raises(DifflabError, match="damaged"):
        sample_run(model.network, model.process, model.config, "ddim", 3, 2, 0, codec=model.codec)


def test_the_cli_trains_samples_restores_and_edits_a_latent_run(tmp_path, capsys, autoencoder, latent_run):
    run = tmp_path / "ldm"
    rc, out, err = cli(capsys, "train", "--dataset", "digits", "--autoencoder", str(autoencoder), "--steps", "10",
                       "--batch-size", "32", "--sample-every", "0", "--preview-steps", "3", "--class-cond",
                       "--out", str(run), "--quiet")
    assert rc == 0, err
    assert (run / "samples.png").is_file()
    png = tmp_path / "s.png"
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(run), "--sampler", "heun", "--steps", "3", "--n", "10",
                       "--guidance", "2", "--trajectory", "--out", str(png), "--quiet")
    assert rc == 0, err
    assert png.is_file() and png.with_name("s_trajectory.png").is_file()
    rc, out, err = cli(capsys, "eval", "--checkpoint", str(run), "--n", "50", "--steps", "3", "--sampler", "ddim",
                       "--json", str(tmp_path / "e.json"), "--quiet")
    assert rc == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["fid"] > 0
    # classifier guidance: a noise-aware classifier of the same latents steers the run
    clf = tmp_path / "clf"
    rc, out, err = cli(capsys, "train-classifier", "--dataset", "digits", "--autoencoder", str(autoencoder),
                       "--steps", "5", "--batch-size", "32", "--out", str(clf), "--quiet")
    assert rc == 0, err
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(latent_run), "--classifier", str(clf), "--steps", "3",
                       "--n", "10", "--out", str(tmp_path / "c.png"), "--quiet")
    assert rc == 0, err
    rc, out, err = cli(capsys, "restore", "--checkpoint", str(latent_run), "--task", "inpaint-box", "--method", "dps",
                       "--images", "held-out", "--n", "4", "--steps", "3", "--out", str(tmp_path / "r.png"),
                       "--quiet")
    assert rc == 0, err
    assert (tmp_path / "r.json").is_file()
    rc, out, err = cli(capsys, "invert", "--checkpoint", str(latent_run), "--images", "held-out", "--n", "3",
                       "--steps", "5", "--out", str(tmp_path / "i.png"))
    assert rc == 0, err
    rc, out, err = cli(capsys, "edit", "--checkpoint", str(latent_run), "--image", "held-out", "--strength", "0.5",
                       "--n", "3", "--steps", "3", "--out", str(tmp_path / "e.png"))
    assert rc == 0, err


def test_latent_runs_refuse_what_does_not_apply(tmp_path, capsys, autoencoder, latent_run):
    rc, _, err = cli(capsys, "restore", "--checkpoint", str(latent_run), "--task", "inpaint-box", "--method",
                     "repaint", "--images", "held-out", "--n", "2", "--out", str(tmp_path / "r.png"), "--quiet")
    assert_one_line_error(rc, err, "--method dps")
    rc, _, err = cli(capsys, "eval", "--checkpoint", str(latent_run), "--n", "50", "--steps", "3", "--bpd", "ode",
                     "--json", str(tmp_path / "e.json"), "--quiet")
    assert_one_line_error(rc, err, "latent")
    # an autoencoder of 8x8 images and 16x16 data
    rc, _, err = cli(capsys, "train", "--dataset", "digits", "--image-size", "16", "--autoencoder", str(autoencoder),
                     "--steps", "2", "--out", str(tmp_path / "x"), "--quiet")
    assert_one_line_error(rc, err, "--image-size 8 --channels 1")
    assert not (tmp_path / "x" / "config.json").exists()
    rc, _, err = cli(capsys, "train", "--dataset", "digits", "--autoencoder", str(latent_run), "--steps", "2",
                     "--out", str(tmp_path / "y"), "--quiet")
    assert_one_line_error(rc, err, "not an autoencoder")
    rc, _, err = cli(capsys, "train", "--dataset", "digits", "--autoencoder", str(autoencoder), "--task", "sr",
                     "--scale", "2", "--steps", "2", "--out", str(tmp_path / "z"), "--quiet")
    assert_one_line_error(rc, err, "without --autoencoder")
    rc, _, err = cli(capsys, "train", "--dataset", "digits", "--autoencoder", str(tmp_path / "nope"), "--steps", "2",
                     "--out", str(tmp_path / "w"), "--quiet")
    assert_one_line_error(rc, err, "train-autoencoder --out")
    rc, _, err = cli(capsys, "train", "--resume", str(latent_run), "--autoencoder", str(autoencoder), "--quiet")
    assert_one_line_error(rc, err, "--autoencoder")
