"""The commands of `difflab`, named here without importing them (so `difflab --help` and a mistyped command
answer at once, before PyTorch loads): each module defines ``configure(name, parser)`` for its commands."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str      # the difflab.cli module that configures and runs it
    help: str        # one line for `difflab --help`


COMMANDS: dict[str, Command] = {
    "train": Command("difflab.cli.train", "train a diffusion model"),
    "train-classifier": Command("difflab.cli.train", "train a noise-aware classifier for classifier guidance"),
    "sample": Command("difflab.cli.sample", "draw samples from a trained run"),
    "restore": Command("difflab.cli.restore", "restore measured images: inpainting, super-resolution, deblurring "
                       "(DPS, RePaint, SR3)"),
    "invert": Command("difflab.cli.restore", "DDIM inversion of images to noise, and interpolation between them"),
    "edit": Command("difflab.cli.restore", "SDEdit: variations of an image by noising it part way and denoising"),
    "train-autoencoder": Command("difflab.cli.autoencoder", "train a KL or VQ autoencoder for latent diffusion"),
    "eval-autoencoder": Command("difflab.cli.autoencoder", "measure an autoencoder: PSNR, SSIM, rFID, codebook usage"),
    "autoencode": Command("difflab.cli.autoencoder", "reconstruct (noised) images with an autoencoder run"),
    "eval": Command("difflab.cli.evaluate", "measure a trained run: FID, KID, IS, precision/recall, bits/dim"),
    "schedule": Command("difflab.cli.plots", "plot alpha_bar_t and the SNR of the DDPM schedules"),
    "noise": Command("difflab.cli.plots", "draw the forward process on training images"),
    "flow2d": Command("difflab.cli.plots", "draw 2-D sampling paths: ODE vs SDE, independent vs OT coupling"),
    "bench-samplers": Command("difflab.cli.bench", "error and wall time against NFE of every sampler on an exact model"),
}
