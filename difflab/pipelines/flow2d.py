"""Pictures of 2-D sampling paths: the probability-flow ODE against the reverse SDE from the same starting
points, and flow matching trained with independent against minibatch-OT pairing.

Two small flow-matching MLPs (velocity target) are trained on a 2-D toy set, one per coupling, and kept
in ``runs_dir`` so a second call reuses them. Straightness of a path x(t_N) -> ... -> x(0) is
(sum of its segment lengths) / ||x(0) - x(t_N)||: 1 for a straight line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from difflab.config import DataConfig, PreviewConfig, RunConfig
from difflab.data import TOY_2D_NAMES, load_dataset
from difflab.errors import DifflabError
from difflab.objectives import DiffusionObjective
from difflab.pipelines.run import load_model
from difflab.pipelines.sample import make_denoiser
from difflab.pipelines.train import train
from difflab.rng import PerSampleNoise
from difflab.samplers import get_sampler, time_grid
from difflab.samplers.base import StepInfo
from difflab.training import TrainerConfig
from difflab.training.checkpoint import CHECKPOINTS
from difflab.viz import plot_paths_2d

COUPLINGS = ("independent", "ot")


@dataclass
class Flow2dResult:
    path: Path
    straightness: dict[str, float]   # panel title -> mean straightness of its paths
    runs: dict[str, Path]            # coupling -> run folder


def flow_run_config(dataset: str, coupling: str, steps: int, seed: int) -> RunConfig:
    """A flow-matching MLP (velocity target) on a 2-D set with the given coupling."""
    trainer = replace(TrainerConfig(), steps=steps, batch_size=256, lr=1e-3, warmup=100, seed=seed,
                      checkpoint_every=steps, sample_every=0, log_every=max(1, steps // 20))
    return replace(RunConfig(), data=DataConfig(dataset=dataset), model="mlp",
                   process={"name": "flow", "t_min": 1e-3, "t_max": 1.0},
                   objective=DiffusionObjective("velocity", time_sampling="continuous", coupling=coupling),
                   trainer=trainer, preview=PreviewConfig(sampler="euler", steps=50, n=2000))


def trained_flow(run_dir: Path, dataset: str, coupling: str, steps: int, seed: int, progress: bool) -> Path:
    """The run folder of a trained flow model, training it first unless it is already there."""
    if not (run_dir / CHECKPOINTS).exists():
        train(flow_run_config(dataset, coupling, steps, seed), run_dir, progress=progress)
    return run_dir


def sample_paths(run_dir: Path, sampler: str, steps: int, n: int, seed: int) -> Tensor:
    """(steps + 1, n, 2) positions from the noise at t_max down to the sample at t = 0."""
    model = load_model(run_dir, device="cpu")
    denoiser = make_denoiser(model.network, model.process, model.config, clip=False)
    noise = PerSampleNoise.for_items(seed, 0, n)
    x = noise.randn(model.spec.shape, torch.float64) * model.process.prior_std()
    frames: list[Tensor] = []

    def record(info: StepInfo) -> None:
        frames.append(info.x.detach().clone())

    with torch.no_grad():
        out = get_sampler(sampler)(denoiser, x, time_grid(model.process, steps), noise=noise, callback=record)
    return torch.stack(frames + [out.x])


def straightness(paths: Tensor) -> float:
    """Mean over paths (K, n, 2) of (length of the path) / (distance from its start to its end)."""
    length = (paths[1:] - paths[:-1]).norm(dim=-1).sum(0)
    chord = (paths[-1] - paths[0]).norm(dim=-1).clamp_min(1e-12)
    return float((length / chord).mean())


def flow2d(dataset: str, out: Path | str, runs_dir: Path | str, *, train_steps: int = 3000, n_paths: int = 48,
           sample_steps: int = 100, seed: int = 0, progress: bool = True) -> Flow2dResult:
    """Train (or reuse) the two flow models and draw the four panels to ``out``."""
    if dataset not in TOY_2D_NAMES:
        raise DifflabError(f"flow2d draws 2-D paths; choose a 2-D set ({', '.join(TOY_2D_NAMES)}), not {dataset!r}")
    runs_dir = Path(runs_dir)
    runs = {c: trained_flow(runs_dir / f"{dataset}-{c}", dataset, c, train_steps, seed, progress) for c in COUPLINGS}
    panels = [
        ("ODE (heun), independent coupling", runs["independent"], "heun"),
        ("SDE (euler-maruyama), same start", runs["independent"], "euler-maruyama"),
        ("ODE (euler), independent coupling", runs["independent"], "euler"),
        ("ODE (euler), minibatch OT coupling", runs["ot"], "euler"),
    ]
    data = load_dataset(dataset, split="test").data
    drawn, scores = [], {}
    for title, run, sampler in panels:
        paths = sample_paths(run, sampler, sample_steps, n_paths, seed)
        scores[title] = straightness(paths)
        drawn.append((f"{title}\nstraightness {scores[title]:.3f}", paths))
    path = plot_paths_2d(drawn, data, out, title=f"{dataset}: paths from noise (t = 1) to data (t = 0)")
    return Flow2dResult(path, scores, runs)
