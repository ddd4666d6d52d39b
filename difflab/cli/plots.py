"""`difflab schedule` and `difflab noise`: pictures of the forward process."""

from __future__ import annotations

import argparse

import torch

from difflab.cli.common import option, optional, positive_int
from difflab.io import check_output_file, check_output_folder
from difflab.data import DATASET_NAMES, TOY_2D_NAMES
from difflab.process import SCHEDULES


def configure(name: str, p: argparse.ArgumentParser) -> None:
    {"schedule": configure_schedule, "noise": configure_noise, "flow2d": configure_flow2d}[name](p)


def configure_schedule(p: argparse.ArgumentParser) -> None:
    p.description = "Plot alpha_bar_t and log SNR(t) for the linear, cosine and linear-alpha-bar schedules."
    option(p, "--plot", "output PNG", "schedules.png")
    option(p, "--T", "number of DDPM steps", 1000, type=positive_int, dest="T")
    p.set_defaults(func=run_schedule)


def configure_noise(q: argparse.ArgumentParser) -> None:
    q.description = "Draw x_t = alpha_t x_0 + sigma_t eps for a few training images at times from 0 to 1."
    option(q, "--dataset", f"built-in dataset ({', '.join(DATASET_NAMES)}), an image folder or a .npz file", "digits")
    option(q, "--schedule", f"DDPM schedule ({', '.join(SCHEDULES)})", "linear", choices=SCHEDULES, metavar="NAME")
    option(q, "--n", "number of images", 6, type=positive_int)
    option(q, "--times", "number of time columns", 8, type=positive_int)
    optional(q, "--image-size", "resize images to this size", type=positive_int)
    option(q, "--seed", "seed for the images and the noise", 0, type=int)
    option(q, "--out", "output PNG", "noise.png")
    q.set_defaults(func=run_noise)


def configure_flow2d(f: argparse.ArgumentParser) -> None:
    f.description = ("Train (or reuse) two flow-matching MLPs on a 2-D toy set, one with independent and one with "
                     "minibatch-OT pairing of noise and data, and draw their sampling paths: the ODE and the SDE from "
                     "the same starting points, and the ODE of each coupling. Prints the straightness of each set of "
                     "paths (path length / distance travelled; 1 = straight).")
    option(f, "--dataset", f"2-D toy set ({', '.join(TOY_2D_NAMES)})", "moons", choices=TOY_2D_NAMES, metavar="NAME")
    option(f, "--train-steps", "training steps of each model", 3000, type=positive_int)
    option(f, "--paths", "number of paths drawn", 48, type=positive_int)
    option(f, "--steps", "sampler steps", 100, type=positive_int)
    option(f, "--seed", "seed for training and starting points", 0, type=int)
    option(f, "--runs", "folder that keeps the two trained models (reused when present)", "runs/flow2d")
    option(f, "--out", "output PNG", "flow2d.png")
    f.set_defaults(func=run_flow2d)


def run_schedule(a: argparse.Namespace) -> None:
    from difflab.process import DDPMProcess
    from difflab.viz import PLOT_SUFFIXES, plot_schedules

    check_output_file(a.plot, "--plot", PLOT_SUFFIXES)
    path = plot_schedules({s: DDPMProcess(s, a.T) for s in SCHEDULES}, a.plot)
    print(f"schedules -> {path}")


def run_noise(a: argparse.Namespace) -> None:
    from difflab.data import load_dataset
    from difflab.errors import DifflabError
    from difflab.process import DDPMProcess
    from difflab.viz import PLOT_SUFFIXES, plot_image_rows

    check_output_file(a.out, "--out", PLOT_SUFFIXES)
    data = load_dataset(a.dataset, image_size=a.image_size)
    if data.kind != "image":
        raise DifflabError(f"difflab noise draws images; {data.name!r} is a 2-D point set (try difflab flow2d)")
    process = DDPMProcess(a.schedule)
    g = torch.Generator().manual_seed(a.seed)
    n, K = min(a.n, len(data)), a.times
    x0 = data.data[torch.randperm(len(data), generator=g)[:n]]
    times = torch.linspace(0, 1, K, dtype=torch.float64)
    rows = []
    for j in range(n):
        eps = torch.randn((K,) + x0.shape[1:], generator=g)
        xt = process.marginal(x0[j].expand(K, *x0.shape[1:]), times, eps)
        rows.append((f"image {j}", xt))
    path = plot_image_rows(rows, times.tolist(), a.out,
                           title=f"forward process q(x_t | x_0), {process.schedule} schedule")
    print(f"forward process -> {path}")


def run_flow2d(a: argparse.Namespace) -> None:
    from difflab.pipelines.flow2d import flow2d
    from difflab.viz import PLOT_SUFFIXES

    check_output_file(a.out, "--out", PLOT_SUFFIXES)
    check_output_folder(a.runs, "--runs")

    res = flow2d(a.dataset, a.out, a.runs, train_steps=a.train_steps, n_paths=a.paths, sample_steps=a.steps,
                 seed=a.seed)
    for title, s in res.straightness.items():
        print(f"{title:40s} straightness {s:.4f}")
    print(f"paths -> {res.path}  (models in {', '.join(str(p) for p in res.runs.values())})")
