"""Matplotlib figures written to PNG: loss curves, schedules, trajectories, the forward process, 2-D samples.

Uses matplotlib's object API with the Agg canvas, so no display or pyplot state is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from difflab.io import output_error
from difflab.process import GaussianProcess
from difflab.viz.images import to_uint8

PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")   # what matplotlib writes a figure as


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as e:
        raise output_error(path, e) from None
    return path


def plot_loss_curve(records: Sequence[dict], path: Path | str) -> Path:
    """Training loss against step (log scale), and the last window's loss per noise-level bucket."""
    fig = Figure(figsize=(10, 3.6))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["loss"] for r in records], lw=1.2)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    ax.grid(alpha=0.3)
    buckets = [v for v in records[-1]["loss_by_t"]] if records else []
    centers = [(b + 0.5) / len(buckets) for b in range(len(buckets))]
    ax2.bar(centers, [np.nan if v is None else v for v in buckets], width=0.9 / max(1, len(buckets)))
    ax2.set(xlabel="noise level t", ylabel="loss", title=f"loss by t at step {steps[-1] if steps else 0}")
    return _save(fig, path)


def plot_schedules(processes: dict[str, GaussianProcess], path: Path | str, n: int = 500) -> Path:
    """alpha_bar(t) = alpha^2 and log SNR(t) = log(alpha^2/sigma^2) for each named process, side by side."""
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for name, proc in processes.items():
        t = torch.linspace(proc.t_min, proc.t_max, n, dtype=torch.float64)
        alpha, sigma = proc.alpha_sigma(t)
        ax1.plot(t, alpha**2, label=name)
        ax2.plot(t, 2 * (torch.log(alpha) - torch.log(sigma)), label=name)
    ax1.set(xlabel="t", ylabel=r"$\bar\alpha_t = \alpha_t^2$", title="signal kept")
    ax2.set(xlabel="t", ylabel=r"$\log\,\mathrm{SNR}(t) = \log \alpha_t^2/\sigma_t^2$", title="signal-to-noise ratio")
    for a in (ax1, ax2):
        a.grid(alpha=0.3)
        a.legend()
    return _save(fig, path)


def _show(ax, img: np.ndarray) -> None:
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_tradeoff(panels: Sequence[tuple[str, str, Sequence[float], Sequence[float]]], labels: Sequence[str],
                  path: Path | str, title: str = "") -> Path:
    """Curves through labelled points, one panel per (x name, y name, xs, ys): e.g. FID against Inception Score
    as the guidance scale (the labels) grows, the fidelity/diversity trade-off."""
    fig = Figure(figsize=(4.6 * len(panels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (x_name, y_name, xs, ys) in zip(axes, panels):
        ax.plot(xs, ys, "o-", lw=1.2, ms=4)
        for x, y, label in zip(xs, ys, labels):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(xlabel=x_name, ylabel=y_name)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_image_rows(rows: Sequence[tuple[str, Tensor]], times: Sequence[float], path: Path | str,
                    title: str = "") -> Path:
    """A strip of images: each row (label, (K, C, H, W)) against K columns titled with their times."""
    return plot_labelled_rows(rows, path, [f"t={t:.3g}" for t in times], title)


def plot_labelled_rows(rows: Sequence[tuple[str, Tensor]], path: Path | str,
                       column_titles: Sequence[str] | None = None, title: str = "") -> Path:
    """Rows of images, each (label, (K_r, C, H, W)) with its label on the left; columns optionally titled.
    A row shorter than the longest leaves its last cells empty."""
    K = max(len(imgs) for _, imgs in rows)
    fig = Figure(figsize=(1.1 * K + 1.2, 1.2 * len(rows) + 0.5))
    axes = np.atleast_2d(fig.subplots(len(rows), K, squeeze=False))
    for r, (label, imgs) in enumerate(rows):
        arr = to_uint8(imgs)
        for k in range(K):
            if k < len(arr):
                _show(axes[r, k], arr[k])
            else:
                axes[r, k].axis("off")
            if r == 0 and column_titles is not None:
                axes[r, k].set_title(column_titles[k], fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_points(groups: Sequence[tuple[str, Tensor]], path: Path | str, lim: float | None = None) -> Path:
    """Scatter plots of 2-D point sets (N, 2), one panel per (title, points)."""
    fig = Figure(figsize=(3.4 * len(groups), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    for ax, (title, pts) in zip(axes, groups):
        p = pts.detach().float().cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=1.5, alpha=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
        if lim:
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim))
    return _save(fig, path)


def plot_paths_2d(panels: Sequence[tuple[str, Tensor]], data: Tensor, path: Path | str, title: str = "") -> Path:
    """One panel per (title, paths (K, n, 2)): the data in grey, each path as a line from its start
    (small dot, noise) to its end (large dot, sample)."""
    fig = Figure(figsize=(3.6 * len(panels), 3.9))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    d = data.detach().float().cpu().numpy()
    lim = float(np.abs(d).max()) * 1.15
    for ax, (name, paths) in zip(axes, panels):
        p = paths.detach().float().cpu().numpy()              # (K, n, 2)
        ax.scatter(d[:, 0], d[:, 1], s=1, c="0.8", zorder=0)
        for j in range(p.shape[1]):
            ax.plot(p[:, j, 0], p[:, j, 1], lw=0.7, alpha=0.8, color=f"C{j % 10}")
        ax.scatter(p[0, :, 0], p[0, :, 1], s=4, c="k", zorder=3)
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=12, c="C3", zorder=3)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[])
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
