"""Autoencoders for latent diffusion (LDM's first stage): train one with an optional PatchGAN discriminator, load its
EMA weights, measure its reconstructions, and reconstruct (noised) images.

    RUN/config.json                 AutoencoderRunConfig (task "autoencoder")
    RUN/checkpoints/step_N/         the trainer's checkpoints: autoencoder and discriminator, raw and EMA
    RUN/log.jsonl, RUN/loss.png     losses: rec, kl / commitment, codebook usage and perplexity, g_adv, d_loss, ...
    RUN/reconstructions.png         held-out images (top row) and their reconstructions (below), newest
    RUN/reconstructions/step_N.png  the same at each --sample-every
    RUN/eval-autoencoder.json       evaluate_autoencoder's numbers

The objective is VQGAN's / LDM's without its perceptual term: LPIPS needs a VGG's weights, which would have to be
downloaded, so the reconstruction is L1 or L2 alone (sharper results come from the GAN term).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from difflab.autoencoder_losses import adaptive_weight, generator_adv_loss, hinge_d_loss, reconstruction_loss
from difflab.config import AutoencoderLossConfig, AutoencoderRunConfig
from difflab.data import ArrayDataset, load_dataset
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.io import check_output_folder, output_error, read_json
from difflab.networks.autoencoder import KINDS, Autoencoder, build_autoencoder, perplexity
from difflab.networks.discriminator import PatchDiscriminator
from difflab.rng import PerSampleNoise
from difflab.training import Adversary, Hook, Losses, Trainer, TrainResult, read_log, resolve_device
from difflab.training.checkpoint import CHECKPOINTS, clean_checkpoints, latest_checkpoint, load_weights, \
    resolve_checkpoint, run_folder
from difflab.training.distributed import launched_processes
from difflab.training.trainer import LOG, truncate_log
from difflab.viz import plot_loss_curve, save_grid

RECONSTRUCTIONS = "reconstructions"
EVAL_FILE = "eval-autoencoder.json"
DISCRIMINATOR_BETAS = (0.5, 0.9)    # taming-transformers' / LDM's Adam betas for the discriminator
PSNR_CAP = 100.0                    # dB: a perfect reconstruction's +inf is reported as this (as restore does)
MIN_FID_IMAGES = 50                 # rFID of fewer reconstructions than this is not reported (noisy covariance)
DEFAULT_EVAL_N = 1000
PREVIEW_COLUMNS = 16


class AutoencoderWithDiscriminator(nn.Module):
    """What the trainer trains: ``.autoencoder`` (the main parameters) and, for a GAN, ``.discriminator`` (the
    Adversary's); without a GAN it has no ``discriminator`` attribute at all."""

    def __init__(self, autoencoder: Autoencoder, discriminator: PatchDiscriminator | None = None) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        if discriminator is not None:
            self.discriminator = discriminator

    @property
    def has_discriminator(self) -> bool:
        return "discriminator" in self._modules


def build_training_module(cfg: AutoencoderRunConfig) -> AutoencoderWithDiscriminator:
    """The autoencoder (and discriminator) of a resolved config, with fresh weights."""
    disc = cfg.discriminator_config
    return AutoencoderWithDiscriminator(build_autoencoder(cfg.autoencoder_config),
                                        None if disc is None else PatchDiscriminator(disc))


def make_autoencoder_loss(loss: AutoencoderLossConfig):
    """The trainer's loss_fn(model, x, cond, generator, adversarial=False) -> Losses:

        main = L_rec + kl_weight * KL / (C H W)  (kl)  or  L_rec + codebook_weight * commitment  (vq)
               + disc_weight * lambda * L_G                     when ``adversarial`` (from disc_start)
        adversary = hinge loss of D on x and on the detached reconstruction (when ``adversarial``)

    lambda = ||grad L_rec|| / (||grad L_G|| + delta) at the decoder's last layer (VQGAN eq. 7), or 1 with
    adaptive_weight off. The key is 0: an autoencoder's loss has no noise level to bucket."""

    def loss_fn(model: AutoencoderWithDiscriminator, x: Tensor, cond: Any, generator: torch.Generator,
                adversarial: bool = False) -> Losses:
        ae = model.autoencoder
        out = ae(x, generator)
        rec = reconstruction_loss(out.reconstruction, x, loss.reconstruction)          # (B,)
        if ae.config.kind == "kl":
            regulariser = loss.kl_weight * out.regulariser / x[0].numel()            # LDM's KL weight, per pixel
        else:
            regulariser = loss.codebook_weight * out.regulariser
        main = rec + regulariser
        logs: dict[str, Tensor | float] = {"rec": rec.mean().detach(), **out.stats}
        adversary = None
        if adversarial and model.has_discriminator:
            D = model.discriminator
            g_adv = generator_adv_loss(D(out.reconstruction))                          # (B,)
            if loss.adaptive_weight:
                lam = adaptive_weight(rec.mean(), g_adv.mean(), ae.last_layer)
            else:
                lam = torch.ones((), device=x.device)
            main = main + loss.disc_weight * lam * g_adv
            logits_real, logits_fake = D(x.detach()), D(out.reconstruction.detach())
            adversary = hinge_d_loss(logits_real, logits_fake)                        # (B,)
            logs.update(g_adv=g_adv.mean().detach(), adaptive_weight=lam, d_loss=adversary.mean().detach(),
                        logits_real=logits_real.mean().detach(), logits_fake=logits_fake.mean().detach())
        return Losses(main, torch.zeros(x.shape[0], device=x.device), adversary=adversary, logs=logs)
    return loss_fn


# --- training -----------------------------------------------------------------------------------------------------

def load_images(cfg: AutoencoderRunConfig, split: str = "train") -> ArrayDataset:
    """The run's images (one split), at the size and channels it was trained on."""
    d = cfg.data
    return load_dataset(d.dataset, split=split, image_size=d.image_size, channels=d.channels)


def heldout_images(cfg: AutoencoderRunConfig, n: int | None) -> Tensor:
    """n images of the run's test split spread evenly over it (the split may be sorted by class; all with n None
    or n at least its size), (N, C, H, W) in [-1, 1]."""
    x = load_images(cfg, "test").data
    if n is None or n >= len(x):
        return x
    return x[torch.linspace(0, len(x) - 1, n).round().long()]


def paired_rows(originals: Tensor, reconstructions: Tensor, columns: int = PREVIEW_COLUMNS) -> tuple[Tensor, int]:
    """Originals and their reconstructions (each (n, C, H, W)) in grid order: rows of k = min(n, columns) images,
    a row of originals above the row of their reconstructions (a short last pair padded with white)."""
    n = len(originals)
    k = min(n, columns)
    rows = []
    for start in range(0, n, k):
        for images in (originals, reconstructions):
            row = images[start:start + k].to(reconstructions)
            rows += [row, row.new_ones(k - len(row), *row.shape[1:])]
    return torch.cat(rows), k


@torch.no_grad()
def reconstruct(ae: Autoencoder, x: Tensor, batch_size: int = 256) -> Tensor:
    """D(E(x)) of images x (N, C, H, W) with the deterministic latent (the KL posterior's mean; the VQ encoder's
    output, quantised by decode): what a latent diffusion model's samples go through. On the module's device,
    returned on the CPU."""
    device = next(ae.parameters()).device
    was_training = ae.training
    ae.eval()
    out = [ae.decode(ae.encode_latent(x[i:i + batch_size].to(device))).float().cpu()
           for i in range(0, len(x), batch_size)]
    ae.train(was_training)
    return torch.cat(out) if out else x.clone()


def train_autoencoder(cfg: AutoencoderRunConfig, run_dir: Path | str, resume: bool = False,
                      progress: bool = True) -> TrainResult:
    """Train (or, with resume, continue) the autoencoder run in ``run_dir``; returns its timing and final loss.

    As pipelines.train.train: everything (data, config, device, checkpoint, output folder) is checked before
    anything is written; a resumed run continues bit for bit; a run at its last step redoes its end-of-run
    pictures. One process: started by torchrun with several, it stops before doing anything."""
    if launched_processes() > 1:
        raise DifflabError("train-autoencoder trains in one process (its two optimizers step different parameter "
                           "sets, which DistributedDataParallel does not sync); start it without torchrun")
    run_dir = Path(run_dir)
    check_output_folder(run_dir, "--resume" if resume else "--out")
    data = load_images(cfg)
    cfg = cfg.resolved(data.spec)
    if cfg.spec != data.spec:
        raise DifflabError(f"the images ({data.spec.shape}) do not fit the run's config ({cfg.spec.shape}); was the "
                           "data set changed?")
    if cfg.trainer.batch_size > len(data):
        raise DifflabError(f"--batch-size {cfg.trainer.batch_size} is more than the {len(data)} training images; "
                           f"use at most {len(data)}")
    if cfg.preview < 1:
        raise DifflabError(f"the preview shows at least one held-out image, got {cfg.preview}")
    found = latest_checkpoint(run_dir)
    if not resume and found is not None:
        raise DifflabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out")
    heldout = heldout_images(cfg, cfg.preview)
    if len(heldout) == 0:               # a data set too small to hold any out: show training images
        heldout = data.data[:cfg.preview]
    torch.manual_seed(cfg.trainer.seed)     # the initial weights depend on --seed alone
    model = build_training_module(cfg)
    adversary = None
    if model.has_discriminator:
        adversary = Adversary(module="discriminator", start=cfg.loss.disc_start, betas=DISCRIMINATOR_BETAS)

    def on_sample(step: int, ema_model: nn.Module) -> None:
        images, nrow = paired_rows(heldout, reconstruct(ema_model.autoencoder, heldout).clamp(-1, 1))
        save_grid(images, run_dir / RECONSTRUCTIONS / f"step_{step:07d}.png", nrow=nrow)
        save_grid(images, run_dir / f"{RECONSTRUCTIONS}.png", nrow=nrow)
        plot_loss_curve(read_log(run_dir / LOG), run_dir / "loss.png")

    trainer = Trainer(model, make_autoencoder_loss(cfg.loss), data.data, None, cfg.trainer, run_dir,
                      hooks=[Hook(cfg.trainer.sample_every, on_sample)], adversary=adversary)
    if found is not None:
        trainer.resume_from(found)
    # Nothing has been written so far; from here on the run folder changes.
    try:
        cfg.save(run_dir)
        clean_checkpoints(run_dir / CHECKPOINTS, cfg.trainer.keep_checkpoints)
        truncate_log(run_dir / LOG, trainer.step)
    except OSError as e:
        raise output_error(e.filename or run_dir, e) from None
    return trainer.run_to_end(progress)


# --- loading ------------------------------------------------------------------------------------------------------

@dataclass
class LoadedAutoencoder:
    config: AutoencoderRunConfig
    module: Autoencoder               # (EMA) weights, eval mode, no discriminator
    checkpoint: Path
    step: int
    run_dir: Path

    @property
    def spec(self) -> DataSpec:
        """The images the autoencoder encodes (pixels (C, H, W) in [-1, 1])."""
        if self.config.spec is None:
            raise DifflabError(f"{self.run_dir}/config.json has no data description (spec); was it written by hand?")
        return self.config.spec

    @property
    def kind(self) -> str:
        return self.config.kind


def load_autoencoder(path: Path | str, kind: str | None = None, ema: bool = True,
                     device: torch.device | str = "cpu") -> LoadedAutoencoder:
    """An autoencoder run (its latest checkpoint) or one of its step folders -> its autoencoder with (EMA) weights,
    in eval mode, on ``device``. ``kind`` (kl or vq): what the run must be; a run of the other kind, or a run
    that is not an autoencoder's, is a one-line error."""
    if kind is not None and kind not in KINDS:
        raise DifflabError(f"unknown autoencoder kind {kind!r}; choose one of {', '.join(KINDS)}")
    ckpt = resolve_checkpoint(path)
    run_dir = run_folder(ckpt)
    cfg = AutoencoderRunConfig.load(run_dir)
    if kind is not None and cfg.kind != kind:
        raise DifflabError(f"{run_dir} is a {cfg.kind.upper()} autoencoder, not {kind.upper()}: give a "
                           f"{kind.upper()} run of `difflab train-autoencoder --kind {kind}`, or ask for {cfg.kind}")
    model = build_training_module(cfg)     # the checkpoint holds the discriminator too: load whole, keep the AE
    load_weights(model, ckpt / ("ema.safetensors" if ema else "model.safetensors"))
    step = int(read_json(ckpt / "trainer.json").get("step", 0))
    ae = model.autoencoder.to(resolve_device(str(device))).eval().requires_grad_(False)
    return LoadedAutoencoder(cfg, ae, ckpt, step, run_dir)


# --- measuring and using ------------------------------------------------------------------------------------------

def vq_usage(ae: Autoencoder, x: Tensor, batch_size: int = 256) -> dict[str, float]:
    """Of a VQ autoencoder on images x: the fraction of its K codes that some latent position uses, and the
    perplexity of the codes' frequencies (exp of their entropy)."""
    device = next(ae.parameters()).device
    K = ae.config.codebook_size
    counts = torch.zeros(K, dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            _, indices = ae.quantizer.quantize(ae.encode_latent(x[i:i + batch_size].to(device)))
            counts += torch.bincount(indices.flatten().cpu(), minlength=K).double()
    return {"codebook_usage": float((counts > 0).double().mean()), "perplexity": float(perplexity(counts)),
            "codebook_size": K}


def capped_psnr(x: Tensor, ref: Tensor) -> Tensor:
    """PSNR (B,) in dB of images in [-1, 1], +inf (a perfect reconstruction) capped at PSNR_CAP."""
    from difflab.metrics.restoration import psnr

    return psnr(x, ref).clamp_max(PSNR_CAP)


def evaluate_autoencoder(model: LoadedAutoencoder, n: int | None = DEFAULT_EVAL_N, batch_size: int = 256,
                         features: str | None = "builtin") -> dict[str, Any]:
    """Reconstruction quality on n held-out images (spread over the test split; all with n None): mean PSNR (dB,
    capped at 100) and SSIM of D(E(x)) (clamped to [-1, 1]) against x, the reconstruction FID (reconstructions vs
    originals, on the data set's built-in features, for the built-in digit sets and 50 images or more; else
    None), and for a VQ autoencoder the codebook usage and perplexity over all latent positions."""
    from difflab.metrics.restoration import ssim

    x = heldout_images(model.config, n)
    if len(x) == 0:
        raise DifflabError(f"{model.config.data.dataset!r} has no held-out (test) images to evaluate on")
    t0 = time.perf_counter()
    x_hat = reconstruct(model.module, x, batch_size).clamp(-1, 1)
    result: dict[str, Any] = {
        "checkpoint": str(model.checkpoint), "step": model.step, "kind": model.kind,
        "dataset": model.config.data.dataset, "latent_shape": list(model.module.config.latent_shape),
        "n": len(x), "psnr": float(capped_psnr(x_hat, x).mean()), "ssim": float(ssim(x_hat, x).mean()),
        "l1": float((x_hat - x).abs().mean()), "rfid": None}
    if features is not None and len(x) >= MIN_FID_IMAGES:
        result["rfid"] = reconstruction_fid(model, x, x_hat, features)
    if model.kind == "vq":
        result.update(vq_usage(model.module, x, batch_size))
    result["seconds"] = time.perf_counter() - t0
    return result


def reconstruction_fid(model: LoadedAutoencoder, x: Tensor, x_hat: Tensor, features: str = "builtin") -> float | None:
    """FID between reconstructions and their originals on ``features`` (the built-in classifier of the run's data
    set); None where the data set has no built-in features."""
    from difflab.metrics import BUILTIN_DATASETS, build_extractor, fid_from_features

    d = model.config.data
    if features == "builtin" and d.dataset not in BUILTIN_DATASETS:
        return None
    extractor = build_extractor(features, d.dataset, device=next(model.module.parameters()).device)
    return float(fid_from_features(extractor.features(x_hat), extractor.features(x)))


def input_images(model: LoadedAutoencoder, images: Sequence[str], n: int | None = None,
                 option: str = "--images") -> Tensor:
    """Images to autoencode at the run's size and channels: held-out (the test split) or files and folders; read
    as pipelines.restore.input_images reads them for a diffusion run."""
    from difflab.pipelines.restore import input_images as read

    # restore's reader asks a run for its data description (codec.data_spec) and its data (config.data); an
    # autoencoder's are its images'.
    return read(SimpleNamespace(codec=SimpleNamespace(data_spec=model.spec), config=model.config), images, n, option)


@dataclass
class Autoencoded:
    inputs: Tensor            # (N, C, H, W) in [-1, 1]
    noisy: Tensor             # inputs + sigma * eps (not clamped)
    reconstructions: Tensor   # D(E(noisy)), clamped to [-1, 1]
    psnr_noisy: float         # mean over images, dB against the inputs
    psnr_reconstruction: float
    noise: float
    seconds: float


def autoencode(model: LoadedAutoencoder, x: Tensor, noise: float = 0.0, seed: int = 0,
               batch_size: int = 256) -> Autoencoded:
    """Reconstruct images x (N, C, H, W) after adding Gaussian noise of std ``noise`` (on the [-1, 1] scale; image
    i's noise from its own generator under ``seed``), with the PSNR of the noisy images and of the reconstructions
    against x. For small sigma the noisy PSNR is about 10 log10(4 / sigma^2)."""
    if not (noise >= 0 and math.isfinite(noise)):
        raise DifflabError(f"--noise (the std of the Gaussian noise added, images in [-1, 1]) must be >= 0, got {noise}")
    t0 = time.perf_counter()
    noisy = x + noise * PerSampleNoise.for_items(seed, 0, len(x)).randn(tuple(x.shape[1:])) if noise else x.clone()
    x_hat = reconstruct(model.module, noisy, batch_size).clamp(-1, 1)
    return Autoencoded(x, noisy, x_hat, float(capped_psnr(noisy, x).mean()), float(capped_psnr(x_hat, x).mean()),
                       noise, time.perf_counter() - t0)


__all__ = ["Autoencoded", "AutoencoderWithDiscriminator", "LoadedAutoencoder",
           "autoencode", "build_training_module", "evaluate_autoencoder", "input_images", "load_autoencoder",
           "make_autoencoder_loss", "reconstruct", "train_autoencoder"]
