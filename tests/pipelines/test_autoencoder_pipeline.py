"""Autoencoder runs (latent diffusion's first stage): training reaches a reconstruction error, a resumed GAN run is
bit-identical, the loss's adaptive weight is VQGAN's eq. 7, VQ logs its codebook, the loaders refuse other runs."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_state
from difflab.autoencoder_losses import ADAPTIVE_DELTA, generator_adv_loss, reconstruction_loss
from difflab.config import AutoencoderLossConfig, AutoencoderRunConfig, DataConfig, RunConfig
from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.networks.autoencoder import AutoencoderConfig, KLAutoencoder
from difflab.pipelines.autoencoder import (LoadedAutoencoder, autoencode,
                                           build_training_module, evaluate_autoencoder, load_autoencoder,
                                           make_autoencoder_loss, reconstruct, train_autoencoder)
from difflab.training import TrainerConfig, read_log

TINY_AE = AutoencoderConfig(base_channels=16, attention=False)
TINY_TRAINER = TrainerConfig(steps=8, batch_size=16, lr=2e-3, warmup=2, log_every=1, checkpoint_every=4,
                             sample_every=4, ema_decay=0.9, device="cpu")


def tiny_config(kind: str = "kl", gan: bool = True, **trainer) -> AutoencoderRunConfig:
    disc = {"in_channels": 1, "base_channels": 8, "n_layers": 3, "norm": "batch"} if gan else None
    return AutoencoderRunConfig(autoencoder=replace(TINY_AE, kind=kind, codebook_size=32).to_json(),
                                discriminator=disc, loss=AutoencoderLossConfig(disc_start=2),
                                trainer=replace(TINY_TRAINER, **trainer), preview=8)


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory) -> Path:
    """80 digits as an .npz data set (72 to train on, 8 held out)."""
    path = tmp_path_factory.mktemp("data") / "digits80.npz"
    x = load_dataset("digits").data[:80]
    np.savez(path, images=x.numpy())
    return path


def test_a_kl_autoencoder_without_kl_or_gan_learns_to_reconstruct_its_images(tmp_path, few_digits):
    cfg = replace(tiny_config(gan=False, steps=120, batch_size=24, checkpoint_every=120, sample_every=0,
                              log_every=20), data=DataConfig(dataset=str(few_digits)),
                  loss=AutoencoderLossConfig(kl_weight=0.0, reconstruction="l2"))
    train_autoencoder(cfg, tmp_path, progress=False)
    model = load_autoencoder(tmp_path, kind="kl", ema=False)
    x = load_dataset(str(few_digits)).data
    start_error = reconstruct(build_training_module(model.config).autoencoder, x).sub(x).abs().mean()
    error = reconstruct(model.module, x).sub(x).abs().mean()
    assert start_error > 0.5
    assert error < 0.2, f"mean |x_hat - x| {error:.3f} after 120 steps"
    log = read_log(tmp_path / "log.jsonl")
    assert log[-1]["rec"] < 0.3 * log[0]["rec"]
    assert "g_adv" not in log[-1] and "adversary_loss" not in log[-1]
    assert not hasattr(model.module, "discriminator") and not model.module.training


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_a_gan_run_stopped_and_resumed_is_bit_identical(tmp_path, kind):
    """8 steps at once == 4 steps, a fresh process state, 4 more; the discriminator starts at step 2."""
    cfg = tiny_config(kind)
    train_autoencoder(cfg, tmp_path / "once", progress=False)
    train_autoencoder(replace(cfg, trainer=replace(cfg.trainer, steps=4)), tmp_path / "twice", progress=False)
    torch.manual_seed(1234)
    saved = AutoencoderRunConfig.load(tmp_path / "twice")
    train_autoencoder(replace(saved, trainer=replace(saved.trainer, steps=8)), tmp_path / "twice", resume=True,
                      progress=False)
    a, b = run_state(tmp_path / "once"), run_state(tmp_path / "twice")
    assert a.keys() == b.keys()
    assert any(k.startswith("trainer.adversary.state.") for k in a)
    assert any(k.startswith("model.discriminator.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = read_log(tmp_path / "once" / "log.jsonl")
    assert [r["step"] for r in read_log(tmp_path / "twice" / "log.jsonl")] == list(range(1, 9))
    assert "g_adv" not in log[1] and {"g_adv", "d_loss", "adaptive_weight"} <= log[2].keys()
    for run in ("once", "twice"):
        assert (tmp_path / run / "reconstructions.png").is_file() and (tmp_path / run / "loss.png").is_file()
        assert sorted(p.name for p in (tmp_path / run / "reconstructions").iterdir()) == \
            ["step_0000004.png", "step_0000008.png"]


def test_the_loss_weighs_the_gan_term_by_vqgans_adaptive_weight():
    cfg = tiny_config().resolved(load_dataset("digits").spec)
    torch.manual_seed(0)
    model = build_training_module(cfg)
    x = load_dataset("digits").data[:8]
    ae, D = model.autoencoder, model.discriminator
    for adaptive in (True, False):
        loss = replace(cfg.loss, adaptive_weight=adaptive, kl_weight=0.3)
        out = make_autoencoder_loss(loss)(model, x, None, torch.Generator().manual_seed(5), adversarial=True)
        # the same reconstruction again, from the same generator
        ref = ae(x, torch.Generator().manual_seed(5))
        rec = reconstruction_loss(ref.reconstruction, x, "l1")
        g_adv = generator_adv_loss(D(ref.reconstruction))
        g_rec, = torch.autograd.grad(rec.mean(), ae.last_layer, retain_graph=True)
        g_gan, = torch.autograd.grad(g_adv.mean(), ae.last_layer, retain_graph=True)
        lam = g_rec.norm() / (g_gan.norm() + ADAPTIVE_DELTA) if adaptive else torch.tensor(1.0)
        assert float(out.logs["adaptive_weight"]) == pytest.approx(float(lam), rel=1e-5)
        want = rec + 0.3 * ref.regulariser / 64 + loss.disc_weight * lam * g_adv
        torch.testing.assert_close(out.main, want.detach(), rtol=1e-5, atol=1e-6)
        assert out.adversary.shape == (8,) and {"d_loss", "g_adv", "rec", "kl"} <= out.logs.keys()
    before = make_autoencoder_loss(cfg.loss)(model, x, None, torch.Generator().manual_seed(5), adversarial=False)
    assert before.adversary is None and "g_adv" not in before.logs


def test_a_vq_run_logs_its_codebook_and_evaluates_it(tmp_path):
    train_autoencoder(tiny_config("vq", gan=False, steps=6, sample_every=0), tmp_path, progress=False)
    log = read_log(tmp_path / "log.jsonl")
    assert all({"codebook_usage", "perplexity", "commitment"} <= r.keys() for r in log)
    assert all(0 < r["codebook_usage"] <= 1 and 1 <= r["perplexity"] <= 32 for r in log)
    model = load_autoencoder(tmp_path, kind="vq")
    result = evaluate_autoencoder(model, n=60)
    assert result["n"] == 60 and result["codebook_size"] == 32
    assert 0 < result["codebook_usage"] <= 1 and 1 <= result["perplexity"] <= 32
    assert result["rfid"] is not None and result["rfid"] > 0


class Perfect(KLAutoencoder):
    """An autoencoder whose latent is the image itself: D(E(x)) = x."""

    def encode_latent(self, x):
        return x

    def decode(self, z):
        return z


def test_a_perfect_reconstruction_has_capped_psnr_ssim_one_and_no_fid(tmp_path):
    cfg = tiny_config(gan=False).resolved(load_dataset("digits").spec)
    model = LoadedAutoencoder(cfg, Perfect(cfg.autoencoder_config).eval(), tmp_path, 0, tmp_path)
    result = evaluate_autoencoder(model, n=100)
    assert result["psnr"] == 100.0 and result["ssim"] == pytest.approx(1.0) and result["l1"] == 0.0
    assert abs(result["rfid"]) < 1e-3
    assert {"checkpoint", "step", "kind", "n", "psnr", "ssim", "rfid", "latent_shape", "seconds"} <= result.keys()
    x = load_dataset("digits", split="test").data[:64]
    for sigma in (0.02, 0.05):
        res = autoencode(model, x, noise=sigma, seed=3)
        assert res.psnr_noisy == pytest.approx(10 * np.log10(4 / sigma**2), abs=0.5)
        assert res.psnr_reconstruction < 100
        assert torch.equal(res.noisy, autoencode(model, x, noise=sigma, seed=3).noisy)


def test_loading_refuses_the_other_kind_and_other_runs(tmp_path):
    train_autoencoder(tiny_config("vq", gan=True, steps=2, sample_every=0), tmp_path / "vq", progress=False)
    with pytest.raises(DifflabError, match=r"^\S*vq is a VQ autoencoder, not KL: "):
        load_autoencoder(tmp_path / "vq", kind="kl")
    loaded = load_autoencoder(tmp_path / "vq" / "checkpoints" / "step_0000002", kind="vq")
    assert loaded.step == 2 and loaded.spec.shape == (1, 8, 8) and loaded.config.discriminator is not None
    assert not any(name.startswith("discriminator") for name, _ in loaded.module.named_parameters())
    with pytest.raises(DifflabError, match="unknown autoencoder kind 'ae'"):
        load_autoencoder(tmp_path / "vq", kind="ae")
    shutil.copytree(tmp_path / "vq", tmp_path / "diffusion")
    RunConfig().save(tmp_path / "diffusion")
    with pytest.raises(DifflabError, match=r"diffusion is a diffusion run, not an autoencoder"):
        load_autoencoder(tmp_path / "diffusion")
    with pytest.raises(DifflabError, match=r"vq is an autoencoder run \(difflab train-autoencoder\), not a diffusion "
                                           r"model: use it with `difflab train --autoencoder"):
        RunConfig.load(tmp_path / "vq")


def test_training_checks_before_writing(tmp_path):
    with pytest.raises(DifflabError, match="--downsample 4 does not divide the 10x10 images: use --image-size 8 or 12"):
        train_autoencoder(replace(tiny_config(), data=DataConfig(image_size=10),
                                  autoencoder=replace(TINY_AE, downsample=4).to_json()), tmp_path / "a")
    with pytest.raises(DifflabError, match="takes no labels"):
        train_autoencoder(replace(tiny_config(), data=DataConfig(class_cond=True)), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
