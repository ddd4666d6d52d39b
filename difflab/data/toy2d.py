"""2-D toy point sets (the FFJORD / torchcfm toy densities), each coordinate of std of order 1.

Every generator maps (n, rng) to float64 points (n, 2) and int labels (n,) or None. The splits are
independent draws with fixed seeds, never the user's seed: "train" has n_points, "test" ceil(n_points / 9)
(about 10 % of the whole), "all" is both concatenated.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from difflab.data.dataset import ArrayDataset, check_split, is_int_at_least
from difflab.errors import DifflabError

Points = tuple[np.ndarray, np.ndarray | None]  # (n, 2) float64, (n,) int64 or None
SPLIT_SEEDS = {"train": 0, "test": 1}
TEST_DIVISOR = 9  # test = n_points / 9 = 10 % of train + test


def moons(n: int, rng: np.random.RandomState) -> Points:
    """Two interleaved half circles (sklearn make_moons, noise 0.1), scaled by 2; label = which moon."""
    label = rng.randint(0, 2, size=n)
    theta = rng.uniform(0.0, math.pi, size=n)
    upper = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    lower = np.stack([1.0 - np.cos(theta), 0.5 - np.sin(theta)], axis=1)
    x = np.where(label[:, None] == 0, upper, lower) + 0.1 * rng.standard_normal((n, 2))
    return x * 2.0 + np.array([-1.0, -0.2]), label


def swissroll(n: int, rng: np.random.RandomState) -> Points:
    """The (x, z) plane of sklearn's swiss roll (noise 1.0), divided by 5; no labels."""
    t = 1.5 * math.pi * (1.0 + 2.0 * rng.uniform(size=n))  # the roll's angle, 1.5 pi .. 4.5 pi
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + rng.standard_normal((n, 2))
    return x / 5.0, None


def eight_gaussians(n: int, rng: np.random.RandomState) -> Points:
    """Eight Gaussians (std 0.5) on a circle of radius 4, all divided by sqrt(2); label = which centre."""
    label = rng.randint(0, 8, size=n)
    angle = label * (math.pi / 4)
    centres = 4.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centres + 0.5 * rng.standard_normal((n, 2))) / math.sqrt(2.0), label


def checkerboard(n: int, rng: np.random.RandomState) -> Points:
    """Uniform on the 8 dark squares of a 4x4 board over [-4, 4]^2; label = which square (0..7)."""
    label = rng.randint(0, 8, size=n)
    column = label // 2
    row = 2 * (label % 2) + column % 2  # dark squares: row + column even
    cell = np.stack([column, row], axis=1) - 2.0 + rng.uniform(size=(n, 2))
    return cell * 2.0, label


def rings(n: int, rng: np.random.RandomState) -> Points:
    """Four concentric circles of radius 0.75, 1.5, 2.25, 3 (noise 0.08); label = which ring, inner 0."""
    label = rng.randint(0, 4, size=n)
    radius = 0.75 * (label + 1)
    angle = rng.uniform(0.0, 2 * math.pi, size=n)
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return x + 0.08 * rng.standard_normal((n, 2)), label


# name -> (generator, number of classes or None)
TOY_2D: dict[str, tuple[Callable[[int, np.random.RandomState], Points], int | None]] = {
    "moons": (moons, 2),
    "swissroll": (swissroll, None),
    "8gaussians": (eight_gaussians, 8),
    "checkerboard": (checkerboard, 8),
    "rings": (rings, 4),
}
TOY_2D_NAMES: tuple[str, ...] = tuple(TOY_2D)


def load_toy2d(name: str, *, split: str = "train", n_points: int = 20000) -> ArrayDataset:
    """The toy set ``name`` as points: data (N, 2) float32, labels (N,) int64 or None."""
    if name not in TOY_2D:
        raise DifflabError(f"unknown 2-D toy set {name!r}; use one of {', '.join(TOY_2D_NAMES)}")
    check_split(split)
    if not is_int_at_least(n_points, 1):
        raise DifflabError(f"n_points must be a positive integer, got {n_points!r}")
    parts = ["train", "test"] if split == "all" else [split]
    drawn = [_draw(name, part, n_points) for part in parts]
    x = np.concatenate([points for points, _ in drawn])
    labels = None if drawn[0][1] is None else np.concatenate([lab for _, lab in drawn])
    return ArrayDataset(data=torch.from_numpy(x.astype(np.float32)),
                        labels=None if labels is None else torch.from_numpy(labels.astype(np.int64)),
                        num_classes=TOY_2D[name][1], name=name)


def _draw(name: str, split: str, n_points: int) -> Points:
    """Points of one split ("train" or "test") from its fixed seed."""
    n = n_points if split == "train" else math.ceil(n_points / TEST_DIVISOR)
    generate = TOY_2D[name][0]
    return generate(n, np.random.RandomState(SPLIT_SEEDS[split]))
