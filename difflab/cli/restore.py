"""`difflab restore`, `difflab invert`, `difflab edit`: restore measured images (DPS, RePaint, SR3), invert images
to noise and interpolate between them (DDIM), and draw variations of an image (SDEdit)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.common import finite_float, option, optional, positive_int, positive_ints, scales
from difflab.cli.sample import SPACING_HELP, add_grid_flags, chosen_options
from difflab.errors import DifflabError
from difflab.io import atomic_write_text, check_output_file, output_error
from difflab.operators import TASKS
from difflab.restoration import METHODS
from difflab.samplers import SAMPLERS, SPACINGS
from difflab.viz import GRID_SUFFIXES

DEFAULT_SAMPLER = "ddpm"   # restore: DPS on ancestral steps, as in its paper
EDIT_SAMPLER = "ddim"
SHOWN = 16          # images (columns) a restoration picture shows; the metrics cover all of them


def add_model_flags(p: argparse.ArgumentParser, images_help: str, default_n: int | None) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="run folder (its latest checkpoint) or a step folder")
    p.add_argument("--images", nargs="+", default=["held-out"], metavar="PATH",
                   help=images_help + " (default: held-out, the run's data set's test split)")
    if default_n is None:
        optional(p, "--n", "use only the first N images", "all", type=positive_int)
    else:
        option(p, "--n", "use only the first N images", default_n, type=positive_int)
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    option(p, "--device", "auto, cpu, cuda or cuda:N", "auto")


def add_draw_flags(p: argparse.ArgumentParser, default_sampler: str, default_steps: int) -> None:
    """Sampling options; --sampler stays None unless given (RePaint refuses one), ``default_sampler`` applies."""
    optional(p, "--sampler", f"sampler ({', '.join(SAMPLERS)})", default_sampler, choices=tuple(SAMPLERS),
             metavar="NAME")
    add_grid_flags(p, default_steps)


def configure(name: str, p: argparse.ArgumentParser) -> None:
    if name == "restore":
        p.description = (
            "Measure images (inpainting mask, super-resolution, blur, noise: y = A(x) + sigma n) and restore them "
            "with a trained run: DPS (any sampler), RePaint (inpainting, its own resampling steps) or an SR3 run. "
            "Writes a picture with rows ground truth, measurement, trivial baseline and restoration, and OUT.json; "
            "prints PSNR, SSIM, the measurement residual ||y - A(x)|| and, for 50 or more images of a digit set, "
            "FID on the built-in features. The measurements are the same for every --seed.")
        add_model_flags(p, "images to restore: files, folders, or held-out", default_n=None)
        optional(p, "--task", f"what was done to the images ({', '.join(TASKS)})", "an SR3 run's own sr factor",
                 choices=TASKS, metavar="TASK")
        option(p, "--noise", "measurement noise std sigma_y (images in [-1, 1])", 0.0, type=finite_float)
        optional(p, "--method", f"restoration method ({', '.join(METHODS)})", "sr3 for an SR3 run, else dps",
                 choices=METHODS, metavar="NAME")
        option(p, "--dps-scale", "DPS step size zeta", 0.1, type=finite_float)
        option(p, "--dps-rule", "DPS step rule: paper (zeta / ||y - A(x0_hat)|| per DDPM-1000 step, as a score shift) "
               "or gaussian (zeta / (2 sigma_y^2), needs --noise > 0)", "paper", choices=("paper", "gaussian"))
        option(p, "--jump", "RePaint: steps walked down before each jump back", 10, type=positive_int)
        option(p, "--resample", "RePaint: walks of each jumped stretch (1 = no resampling)", 10, type=positive_int)
        option(p, "--fraction", "inpaint-random: fraction of the pixels removed", 0.7, type=finite_float)
        option(p, "--blur-size", "blur: kernel size (odd)", 5, type=positive_int)
        option(p, "--blur-width", "blur: the Gaussian kernel's std in pixels", 1.0, type=finite_float)
        add_draw_flags(p, DEFAULT_SAMPLER, 100)
        option(p, "--out", "output picture", "restored.png")
        p.set_defaults(func=run_restore)
    elif name == "invert":
        p.description = (
            "DDIM inversion: run the deterministic DDIM ODE from each image up to noise, decode it back, and report "
            "the reconstruction error (RMS and PSNR) for each --steps. With --interpolate K and two images, decode "
            "K spherical interpolations of their noises into a strip.")
        add_model_flags(p, "images to invert: files, folders, or held-out", default_n=8)
        option(p, "--steps", "DDIM steps of the inversion and of the decoding; several separated by commas "
               "(10,50,200) report the error of each, the picture uses the last", "50", type=positive_ints)
        option(p, "--spacing", SPACING_HELP, "uniform", choices=SPACINGS, metavar="NAME")
        optional(p, "--interpolate", "frames of a spherical interpolation between two images' noises", type=positive_int,
                 metavar="K")
        option(p, "--out", "output picture", "inverted.png")
        p.set_defaults(func=run_invert)
    else:
        p.description = (
            "SDEdit: noise an image to time t0 = --strength and sample it back to t = 0, --n times with different "
            "noise: variations that keep the image's layout (strength near 0) or only its gist (near 1).")
        p.add_argument("--checkpoint", required=True, metavar="DIR", help="run folder or a step folder")
        p.add_argument("--image", required=True, metavar="FILE", help="the image to edit (or held-out: the first "
                       "test image)")
        option(p, "--strength", "t0 in (t_min, 1]: how much of the image is noised away; several separated by "
               "commas (0.2,0.4,0.6) draw a row each", "0.5", type=scales)
        option(p, "--n", "variations", 8, type=positive_int)
        p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
        option(p, "--device", "auto, cpu, cuda or cuda:N", "auto")
        add_draw_flags(p, EDIT_SAMPLER, 50)
        option(p, "--out", "output picture", "variations.png")
        p.set_defaults(func=run_edit)


def sampling(a: argparse.Namespace, sampler: str):
    from difflab.pipelines.restore import Sampling

    return Sampling(sampler, a.steps, a.spacing, a.t_min, chosen_options(a, sampler), a.seed, a.batch_size, a.clip,
                    not a.quiet)


def load(a: argparse.Namespace):
    from difflab.pipelines.run import load_model

    model = load_model(a.checkpoint, ema=not a.raw, device=a.device)
    return model, next(model.network.parameters()).device


def write_json(path: Path, record: dict) -> Path:
    """``record`` as JSON beside ``path`` (path with the suffix .json; a .json path itself), atomically."""
    out = path.with_suffix(".json")
    try:
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    except OSError as e:
        raise output_error(out, e) from None
    return out


def run_restore(a: argparse.Namespace) -> None:
    from difflab.pipelines.restore import (feature_network, input_images, measure, measurement_picture,
                                           restoration_metrics, restore, run_operator, sr_scale)
    from difflab.viz import plot_labelled_rows

    out = check_output_file(a.out, "--out", GRID_SUFFIXES)
    model, device = load(a)
    method = a.method or ("sr3" if sr_scale(model) is not None else "dps")
    if method == "repaint" and a.sampler is not None:
        raise DifflabError("RePaint takes its own ancestral (DDPM) steps: leave out --sampler")
    a.sampler = a.sampler or DEFAULT_SAMPLER
    truth = input_images(model, a.images, a.n)
    n, shape = len(truth), tuple(truth.shape[1:])
    operator = run_operator(model, a.task, n, fraction=a.fraction, blur_size=a.blur_size, blur_width=a.blur_width)
    y = measure(operator, truth, a.noise)
    restored = restore(model, method, operator, y, a.noise, sampling(a, a.sampler), scale=a.dps_scale,
                       rule=a.dps_rule, jump=a.jump, resample=a.resample, device=device)
    features = feature_network(model, device)
    baseline = operator.baseline(y, shape).clamp(-1, 1)
    results = {"baseline": restoration_metrics(baseline, truth, y, operator, features),
               method: restoration_metrics(restored.x, truth, y, operator, features)}
    k = min(n, SHOWN)
    rows = [("ground truth", truth[:k]), ("measurement", measurement_picture(operator, y[:k], shape)),
            ("baseline", baseline[:k]), (method, restored.x[:k])]
    sampler = "repaint" if method == "repaint" else a.sampler
    how = f"jump {a.jump}, resample {a.resample}" if method == "repaint" else sampler
    title = f"{operator.name}, sigma_y = {a.noise:g}: {method} ({how}, {restored.nfe} NFE)"
    path = plot_labelled_rows(rows, out, title=title)
    record = {"checkpoint": str(model.checkpoint), "task": operator.name, "noise": a.noise, "method": method,
              "sampler": sampler, "steps": a.steps, "nfe": restored.nfe, "seconds": restored.seconds, "seed": a.seed,
              "dps": {"scale": a.dps_scale, "rule": a.dps_rule} if method == "dps" else None,
              "repaint": {"jump": a.jump, "resample": a.resample} if method == "repaint" else None,
              "metrics": results}
    json_path = write_json(out, record)
    print(f"{n} images, {operator.name} (sigma_y = {a.noise:g}), {method} ({how}, {restored.nfe} NFE) in "
          f"{restored.seconds:.1f} s -> {path}, {json_path}")
    for name, m in results.items():
        fid = f", FID {m['fid']:.3f}" if "fid" in m else ""
        print(f"  {name:<10} PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, residual {m['residual']:.4f}{fid}")


def run_invert(a: argparse.Namespace) -> None:
    import torch.nn.functional as F

    from difflab.metrics.restoration import psnr
    from difflab.pipelines.restore import input_images, interpolate, invert
    from difflab.viz import plot_labelled_rows

    out = check_output_file(a.out, "--out", GRID_SUFFIXES)
    model, device = load(a)
    x = input_images(model, a.images, a.n)
    if a.interpolate is not None and len(x) != 2:
        raise DifflabError(f"--interpolate goes between two images; --images gave {len(x)}")
    record = {"checkpoint": str(model.checkpoint), "n": len(x), "errors": []}
    for steps in a.steps:
        z, back, nfe = invert(model, x, steps, a.spacing, device)
        rms = float((back - x).pow(2).mean().sqrt())
        db = float(psnr(back, x).clamp_max(100).mean())
        record["errors"].append({"steps": steps, "rms": rms, "psnr": db, "nfe": 2 * nfe + 1})
        print(f"DDIM inversion, {steps} steps: reconstruction RMS {rms:.4f}, PSNR {db:.2f} dB on {len(x)} images "
              f"({nfe} NFE to invert, {nfe + 1} to decode)")
    if a.interpolate is not None:
        frames = interpolate(model, z[0], z[1], a.interpolate, a.steps[-1], a.spacing, device)
        rows = [("inputs", x), ("slerp", frames)]
        title = f"spherical interpolation of DDIM-inverted noises ({a.steps[-1]} steps)"
    else:
        shown, label = (z / z.abs().amax((1, 2, 3), keepdim=True)).clamp(-1, 1), "inverted z"
        if shown.shape[1:] != x.shape[1:]:      # a latent run's noise: its first channel, enlarged
            shown = F.interpolate(shown[:, :1], size=tuple(x.shape[-2:]), mode="nearest")
            shown, label = shown.expand(-1, x.shape[1], -1, -1), "inverted z (latent channel 0)"
        rows = [("input", x), (label, shown), ("decoded", back)]
        title = f"DDIM inversion and reconstruction ({a.steps[-1]} steps)"
    path = plot_labelled_rows(rows, out, title=title)
    print(f"-> {path}, {write_json(out, record)}")


def run_edit(a: argparse.Namespace) -> None:
    from difflab.metrics.restoration import psnr
    from difflab.pipelines.restore import edit, input_images
    from difflab.viz import plot_labelled_rows

    out = check_output_file(a.out, "--out", GRID_SUFFIXES)
    model, device = load(a)
    x = input_images(model, [a.image], 1, option="--image")[0]
    a.sampler = a.sampler or EDIT_SAMPLER
    rows = [("input", x[None])]
    for strength in a.strength:
        varied = edit(model, x, strength, a.n, sampling(a, a.sampler), device)
        db = float(psnr(varied.x, x[None].expand_as(varied.x)).clamp_max(100).mean())
        rows.append((f"t0 = {strength:g}", varied.x))
        print(f"{a.n} variations at strength {strength:g} with {a.sampler} ({varied.nfe} NFE) in "
              f"{varied.seconds:.1f} s, mean PSNR to the input {db:.2f} dB")
    path = plot_labelled_rows(rows, out, title=f"SDEdit with {a.sampler}, {a.steps} steps from each t0")
    print(f"-> {path}")
