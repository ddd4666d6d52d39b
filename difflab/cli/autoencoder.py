"""`difflab train-autoencoder`, `difflab eval-autoencoder`, `difflab autoencode`: the first stage of latent diffusion
(a KL or VQ autoencoder with a patch discriminator), its reconstruction quality, and reconstructions of given images."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from difflab.cli.common import finite_float, nonneg_int, option, optional, positive_int
from difflab.cli.train import RESUMABLE, TRAINER_FLAGS
from difflab.config import (AUTOENCODER_TRAINER, CONFIG, AutoencoderLossConfig, AutoencoderRunConfig, DataConfig,
                            updated)
from difflab.data import DATASET_NAMES
from difflab.errors import DifflabError, Interrupted
from difflab.io import check_output_file
from difflab.networks.autoencoder import DOWNSAMPLE_FACTORS, KINDS, AutoencoderConfig
from difflab.training.acceleration import PRECISIONS
from difflab.training.checkpoint import run_folder
from difflab.viz import GRID_SUFFIXES

SHOWN = 16           # images (columns) an autoencode picture shows; the PSNRs cover all of them
# the autoencoder's own options, the kind's alone, and where each goes in the config
KL_ONLY, VQ_ONLY = ("kl_weight",), ("codebook_size", "codebook_weight")
AUTOENCODER_FLAGS = ("downsample", "latent_channels", "base_channels", "codebook_size")
LOSS_FLAGS = ("reconstruction", "kl_weight", "codebook_weight", "disc_weight", "disc_start")
NOT_CONFIG = ("resume", "out", "quiet", "func", "command")


def configure(name: str, p: argparse.ArgumentParser) -> None:
    if name == "train-autoencoder":
        configure_train(p)
    elif name == "eval-autoencoder":
        p.description = ("Measure an autoencoder run's reconstructions D(E(x)) of held-out images (the test split): "
                         "PSNR, SSIM, reconstruction FID (reconstructions vs originals, on the built-in features of a "
                         "digit set, 50 images or more) and, for VQ, codebook usage and perplexity. Writes JSON.")
        p.add_argument("--checkpoint", required=True, metavar="DIR", help="autoencoder run folder or a step folder")
        option(p, "--n", "N held-out images spread over the test split (all, if there are fewer)", 1000,
               type=positive_int)
        optional(p, "--out", "output JSON", "RUN/eval-autoencoder.json")
        p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
        option(p, "--device", "auto, cpu, cuda or cuda:N", "auto")
        p.set_defaults(func=run_eval)
    else:
        p.description = ("Reconstruct images with an autoencoder run, optionally after adding Gaussian noise (std "
                         "--noise on the [-1, 1] scale, seeded): writes a picture with rows input, noisy and "
                         "reconstruction, and OUT.json; prints the PSNR of the noisy images and of the "
                         "reconstructions against the inputs.")
        p.add_argument("--checkpoint", required=True, metavar="DIR", help="autoencoder run folder or a step folder")
        p.add_argument("--images", nargs="+", default=["held-out"], metavar="PATH",
                       help="images: files, folders, or held-out (default: held-out, the run's test split)")
        option(p, "--n", "use only the first N images", SHOWN, type=positive_int)
        option(p, "--noise", "std of the Gaussian noise added before encoding (images in [-1, 1])", 0.0,
               type=finite_float)
        option(p, "--seed", "seed of that noise", 0, type=int)
        p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
        option(p, "--device", "auto, cpu, cuda or cuda:N", "auto")
        option(p, "--out", "output picture", "autoencoded.png")
        p.set_defaults(func=run_autoencode)


def configure_train(p: argparse.ArgumentParser) -> None:
    p.description = ("Train an autoencoder for latent diffusion (LDM's first stage): a KL-regularised or "
                     "vector-quantised encoder/decoder, with a PatchGAN discriminator from --disc-start on (VQGAN's "
                     "adaptive weight; no LPIPS term, its weights would need a download). Writes a run folder: "
                     "config.json, checkpoints/, log.jsonl, loss.png, reconstructions.png and "
                     "reconstructions/step_*.png (held-out images, their reconstructions below). Use it with "
                     "`difflab train --autoencoder RUN`.")
    ae, loss, t = AutoencoderConfig(), AutoencoderLossConfig(), AUTOENCODER_TRAINER
    optional(p, "--kind", "kl (KL-regularised Gaussian latent) or vq (vector-quantised, EMA codebook)", ae.kind,
             choices=KINDS)
    optional(p, "--dataset", f"built-in dataset ({', '.join(DATASET_NAMES)}), an image folder or a .npz file",
             DataConfig().dataset)
    optional(p, "--image-size", "resize images to this size (a multiple of --downsample)", type=positive_int)
    optional(p, "--channels", "1 (gray) or 3 (RGB)", type=int, choices=(1, 3))
    optional(p, "--downsample", "f: the latent is (C, H / f, W / f)", ae.downsample, type=int,
             choices=DOWNSAMPLE_FACTORS)
    optional(p, "--latent-channels", "C: channels of the latent", ae.latent_channels, type=positive_int)
    optional(p, "--base-channels", "width of the first level (doubled at the next ones)", ae.base_channels,
             type=positive_int)
    optional(p, "--codebook-size", "K: codes of a vq autoencoder", ae.codebook_size, type=positive_int)
    optional(p, "--reconstruction", "reconstruction loss: l1 (LDM, VQGAN) or l2", loss.reconstruction,
             choices=("l1", "l2"))
    optional(p, "--kl-weight", "weight of the KL term of a kl autoencoder, against the reconstruction error summed "
             "over pixels (as in LDM: 1e-6 is kl-f4's)", loss.kl_weight, type=finite_float)
    optional(p, "--codebook-weight", "weight of the commitment loss of a vq autoencoder", loss.codebook_weight,
             type=finite_float)
    optional(p, "--disc-weight", "weight of the GAN term (times the adaptive weight)", loss.disc_weight,
             type=finite_float)
    optional(p, "--disc-start", "step from which the discriminator trains and the GAN term counts", "half of --steps",
             type=nonneg_int)
    p.add_argument("--no-disc", action="store_true", default=None, help="no discriminator: reconstruction and "
                   "regulariser alone")
    optional(p, "--steps", "training steps (in total, when resuming)", t.steps, type=positive_int)
    optional(p, "--batch-size", "images per step", t.batch_size, type=positive_int)
    optional(p, "--lr", "Adam learning rate (autoencoder and discriminator)", t.lr, type=finite_float)
    optional(p, "--warmup", "linear learning-rate warm-up steps", t.warmup, type=nonneg_int)
    optional(p, "--weight-decay", "AdamW weight decay", t.weight_decay, type=finite_float)
    optional(p, "--grad-clip", "max gradient norm, 0 = off", t.grad_clip, type=finite_float)
    optional(p, "--ema-decay", "EMA decay of the autoencoder's weights", t.ema_decay, type=finite_float)
    optional(p, "--seed", "random seed (weights, data order, latent noise)", t.seed, type=int)
    optional(p, "--log-every", "steps between log.jsonl lines", t.log_every, type=positive_int)
    optional(p, "--checkpoint-every", "steps between checkpoints", t.checkpoint_every, type=positive_int)
    optional(p, "--keep-checkpoints", "newest checkpoints kept", t.keep_checkpoints, type=positive_int)
    optional(p, "--sample-every", "steps between reconstruction pictures, 0 = only at the end", t.sample_every,
             type=nonneg_int)
    optional(p, "--preview", "held-out images in the reconstruction pictures", AutoencoderRunConfig().preview,
             type=positive_int)
    optional(p, "--device", "auto, cpu, cuda or cuda:N", t.device)
    optional(p, "--precision", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16", t.precision,
             choices=PRECISIONS)
    optional(p, "--out", "run folder to create", "runs/<dataset>-ae-<kind>")
    optional(p, "--resume", "continue the run in this folder from its last checkpoint", metavar="DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def build_config(a: argparse.Namespace) -> AutoencoderRunConfig:
    """The run's config from the command line (options not given keep the config's defaults)."""
    kind = a.kind or AutoencoderConfig().kind
    wrong = [k for k in (VQ_ONLY if kind == "kl" else KL_ONLY) if getattr(a, k) is not None]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise DifflabError(f"{flags} does not apply to --kind {kind}")
    if a.no_disc and (a.disc_start is not None or a.disc_weight is not None):
        raise DifflabError("--no-disc trains without a discriminator: drop --disc-start and --disc-weight")
    base = AutoencoderRunConfig()
    autoencoder = AutoencoderConfig.from_json(base.autoencoder)
    autoencoder = updated(autoencoder, kind=kind, **{k: getattr(a, k) for k in AUTOENCODER_FLAGS})
    cfg = updated(
        base,
        data=updated(DataConfig(), dataset=a.dataset, image_size=a.image_size, channels=a.channels),
        autoencoder=autoencoder.to_json(),
        loss=updated(base.loss, **{k: getattr(a, k) for k in LOSS_FLAGS}),
        trainer=updated(base.trainer, **{k: getattr(a, k) for k in TRAINER_FLAGS}),
        preview=a.preview,
    )
    return replace(cfg, discriminator=None) if a.no_disc else cfg


def resumed_config(a: argparse.Namespace) -> AutoencoderRunConfig:
    """The run's saved config with only the options that may change on resume applied; --kind, if given, must be
    the run's."""
    if a.out is not None:
        raise DifflabError(f"--out cannot go with --resume: the run stays in {a.resume}; drop --out (to start a "
                           "new run elsewhere, leave out --resume)")
    run = run_folder(a.resume)
    if not (run / CONFIG).is_file():
        raise DifflabError(f"{run} is not a run folder (it has no {CONFIG}); start a run with `difflab "
                           f"train-autoencoder --out {run}`")
    cfg = AutoencoderRunConfig.load(run)
    if a.kind is not None and a.kind != cfg.kind:
        raise DifflabError(f"{run} is a {cfg.kind.upper()} autoencoder run, not {a.kind.upper()}: resume it with "
                           f"--kind {cfg.kind} (or without --kind), or start a {a.kind} run with another --out")
    given = [k for k, v in vars(a).items() if v is not None and k not in RESUMABLE and k not in NOT_CONFIG
             and k != "kind"]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        can = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE)
        raise DifflabError(f"{flags} cannot change when resuming (the run's config.json holds them); only {can} can")
    return updated(cfg, trainer=updated(cfg.trainer, **{k: getattr(a, k) for k in RESUMABLE}))


def run_train(a: argparse.Namespace) -> None:
    from difflab.pipelines.autoencoder import train_autoencoder
    from difflab.training.checkpoint import latest_checkpoint

    if a.resume:
        cfg, out, resume = resumed_config(a), run_folder(a.resume), True
    else:
        cfg, resume = build_config(a), False
        out = Path(a.out or f"runs/{Path(cfg.data.dataset).stem or 'data'}-ae-{cfg.kind}")
    again = f"`difflab train-autoencoder --resume {out}`"
    try:
        res = train_autoencoder(cfg, out, resume=resume, progress=not a.quiet)
    except KeyboardInterrupt:
        kept = latest_checkpoint(out)
        if kept is None:
            raise Interrupted(f"interrupted before the first checkpoint; {again} starts the run again") from None
        raise Interrupted(f"interrupted; {out} keeps its checkpoint {kept.name}: continue with {again}") from None
    if res.steps == 0:
        print(f"{out} had already trained its steps; its end-of-run pictures are written")
    else:
        speed = f", {res.img_per_s:.0f} images/s" if res.img_per_s else ""
        loss = f", final loss {res.final_loss:.4f}" if res.final_loss is not None else ""
        print(f"trained {res.steps} steps in {res.seconds:.1f} s{speed}{loss}")
    print(f"run folder: {out}  (reconstructions.png, loss.png, log.jsonl, checkpoints/); measure it with "
          f"`difflab eval-autoencoder --checkpoint {out}`")


def run_eval(a: argparse.Namespace) -> None:
    from difflab.cli.restore import write_json
    from difflab.pipelines.autoencoder import EVAL_FILE, evaluate_autoencoder, load_autoencoder

    out = None if a.out is None else check_output_file(a.out, "--out", (".json",))
    model = load_autoencoder(a.checkpoint, ema=not a.raw, device=a.device)
    out = out or check_output_file(model.run_dir / EVAL_FILE, "--out", (".json",))
    result = evaluate_autoencoder(model, a.n)
    write_json(out, result)
    rfid = "n/a (needs a built-in digit set and 50 images)" if result["rfid"] is None else f"{result['rfid']:.3f}"
    print(f"{model.kind} autoencoder {model.run_dir} (step {model.step}), {result['n']} held-out images: "
          f"PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}, rFID {rfid}")
    if model.kind == "vq":
        print(f"  codebook usage {result['codebook_usage']:.3f} of {result['codebook_size']} codes, perplexity "
              f"{result['perplexity']:.1f}")
    print(f"-> {out}")


def run_autoencode(a: argparse.Namespace) -> None:
    from difflab.cli.restore import write_json
    from difflab.pipelines.autoencoder import autoencode, input_images, load_autoencoder
    from difflab.viz import plot_labelled_rows

    out = check_output_file(a.out, "--out", GRID_SUFFIXES)
    if a.noise < 0:
        raise DifflabError(f"--noise is the std of the noise added and must be >= 0, got {a.noise}")
    model = load_autoencoder(a.checkpoint, ema=not a.raw, device=a.device)
    x = input_images(model, a.images, a.n)
    res = autoencode(model, x, a.noise, a.seed)
    k = min(len(x), SHOWN)
    rows = [("input", x[:k])]
    if a.noise:
        rows.append((f"noisy (sigma {a.noise:g})", res.noisy[:k]))
    rows.append(("reconstruction", res.reconstructions[:k]))
    title = f"{model.kind} autoencoder, f = {model.module.config.downsample}, latent {model.module.config.latent_shape}"
    path = plot_labelled_rows(rows, out, title=title)
    record = {"checkpoint": str(model.checkpoint), "step": model.step, "kind": model.kind, "n": len(x),
              "noise": a.noise, "seed": a.seed, "psnr_reconstruction": res.psnr_reconstruction,
              "psnr_noisy": res.psnr_noisy if a.noise else None, "seconds": res.seconds}
    json_path = write_json(out, record)
    noisy = f"noisy {res.psnr_noisy:.2f} dB, " if a.noise else ""
    print(f"{len(x)} images, noise sigma {a.noise:g}: PSNR to the inputs {noisy}reconstruction "
          f"{res.psnr_reconstruction:.2f} dB -> {path}, {json_path}")
