"""`difflab sample`: draw samples from a trained run with any sampler."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.cli.common import add, finite_float, positive_int
from difflab.errors import DifflabError
from difflab.samplers import SAMPLERS, SPACINGS, StepInfo
from difflab.samplers.ddpm import VARIANCES

TRAJECTORY_COLUMNS = 8
TRAJECTORY_SAMPLES = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained run", description=(
        "Sample a trained run (its EMA weights unless --raw) and write a PNG grid. The same --seed gives the "
        "same images whatever --batch-size: sample i draws its noise from its own generator."))
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="run folder (uses its latest checkpoint) or a step folder")
    add(p, "--sampler", f"sampler ({', '.join(SAMPLERS)})", "ddim", choices=tuple(SAMPLERS), metavar="NAME")
    add(p, "--steps", "sampling steps (denoiser evaluations for ddpm/ddim)", 50, type=positive_int)
    add(p, "--spacing", f"time grid spacing ({', '.join(SPACINGS)})", "uniform", choices=SPACINGS, metavar="NAME")
    add(p, "--n", "number of samples", 64, type=positive_int)
    add(p, "--seed", "seed; sample i uses seed*1000003 + i", 0, type=int)
    add(p, "--batch-size", "samples per batch", 256, type=positive_int)
    add(p, "--eta", "DDIM noise: 0 deterministic, 1 = DDPM posterior noise", 0.0, type=finite_float)
    add(p, "--variance", f"DDPM step variance: posterior (beta-tilde_t) or beta (beta_t)", "posterior",
        choices=VARIANCES)
    add(p, "--label", "class label for a class-conditional model (default: cycle through the classes)", type=int)
    p.add_argument("--clip-x0", dest="clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clamp the x0 prediction to [-1, 1] (default: on for ddpm/ddim on images)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--trajectory", action="store_true",
                   help="also write OUT_trajectory.png: x_t and the predicted x_0 at a few times from T down to 0")
    add(p, "--device", "auto, cpu, cuda or cuda:N", "auto")
    add(p, "--out", "output PNG", "samples.png")
    p.set_defaults(func=run)


def sampler_options(a: argparse.Namespace) -> dict:
    if a.sampler == "ddim":
        return {"eta": a.eta if a.eta is not None else 0.0}
    if a.sampler == "ddpm":
        return {"variance": a.variance or "posterior"}
    return {}


def run(a: argparse.Namespace) -> None:
    from difflab.pipelines.sample import default_labels, load_model, sample_run, save_samples
    from difflab.viz import plot_image_rows

    if a.eta is not None and a.sampler != "ddim":
        raise DifflabError("--eta applies to --sampler ddim only")
    if a.variance is not None and a.sampler not in ("ddpm", None):
        raise DifflabError("--variance applies to --sampler ddpm only")
    sampler, steps, n = a.sampler or "ddim", a.steps or 50, a.n or 64
    a.sampler = sampler
    model = load_model(a.checkpoint, ema=not a.raw, device=a.device or "auto")
    if a.label is not None:
        K = model.config.network.get("num_classes")
        if not K:
            raise DifflabError("--label needs a class-conditional run (trained with --class-cond)")
        if not 0 <= a.label < K:
            raise DifflabError(f"--label must lie in [0, {K - 1}], got {a.label}")
    device = next(model.network.parameters()).device
    frames: dict[int, tuple[float, torch.Tensor, torch.Tensor]] = {}
    total = steps
    keep = set(torch.linspace(0, total - 1, min(TRAJECTORY_COLUMNS, total)).round().long().tolist())

    def record(start: int):
        def cb(info: StepInfo) -> None:
            if info.index in keep:
                frames[info.index] = (info.t, info.x[:TRAJECTORY_SAMPLES].cpu(), info.x0[:TRAJECTORY_SAMPLES].cpu())
        return cb if start == 0 and a.trajectory else None

    out = sample_run(model.network, model.process, model.config, sampler, steps, n, a.seed or 0, device=device,
                     clip=a.clip, batch_size=a.batch_size or 256, spacing=a.spacing or "uniform",
                     options=sampler_options(a), labels=default_labels(model.config, n, a.label), callback=record)
    path = save_samples(out.x, Path(a.out or "samples.png"))
    print(f"{n} samples with {sampler} ({out.nfe} NFE) in {out.seconds:.2f} s from {model.checkpoint} "
          f"(step {model.step}, {'raw' if a.raw else 'EMA'} weights) -> {path}")
    if a.trajectory:
        if len(model.example_shape) != 3:
            raise DifflabError("--trajectory draws images; for 2-D data use difflab flow2d")
        idx = sorted(frames)
        times = [frames[i][0] for i in idx] + [0.0]
        k = min(TRAJECTORY_SAMPLES, n)
        rows = []
        for j in range(k):
            rows.append((f"x_t #{j}", torch.stack([frames[i][1][j] for i in idx] + [out.x[j]])))
            rows.append((f"x0_hat #{j}", torch.stack([frames[i][2][j] for i in idx] + [out.x[j]])))
        traj = path.with_name(path.stem + "_trajectory.png")
        plot_image_rows(rows, times, traj, title=f"{sampler}, {steps} steps: x_t and the predicted x_0")
        print(f"trajectory -> {traj}")
