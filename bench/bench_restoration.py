"""How far DPS and RePaint land from the exact posterior, on Gaussian-mixture data (a perfectly trained model).

    python bench/bench_restoration.py [--quick] [--ys 3] [--n2d 5000] [--n64 2000] [--steps 100] [--threads 1]

For each task, --ys measurements y = A(x) + sigma_y n of x ~ data; for each y, N samples by each method and
N exact draws of p(x_0 | y) (restoration.posterior), their sliced Wasserstein-2 distance, and the floor: the
same distance between two independent exact sets of N. Tasks:

    2-D  (bench_mixture as the (1, 1, 2) image)   inpaint-half (x_1 measured, x_2 inferred) at sigma_y 0 and 0.1;
                                                   denoise at sigma_y 0.3
    64-D (bench_mixture as (1, 8, 8) images)      inpaint-box at sigma_y 0; sr4 and blur at sigma_y 0.05

Methods, on the DDPM process (linear schedule, T = 1000), --steps steps:
    dps paper zeta        the paper's step rule at zeta in 0.01 / 0.03 / 0.1 / 0.3, on the ddpm and ddim samplers
    dps gaussian          zeta = 1 / (2 sigma_y^2) weighting, the literal DPS likelihood (where sigma_y > 0)
    repaint               inpainting only: jump 10, resample 10 and resample 1 (no resampling), ancestral steps
    prior                 the unguided DDPM sampler: the distance a method must beat to have used y at all

The table: SW2 is the mean over the ys, floor the mean floor, ratio SW2 / floor (1 is an exact sampler), NFE the
denoiser evaluations per sample (a DPS evaluation includes a backward pass), seconds the wall time of all ys.
Runs in float64 on the CPU; --threads 1 is fastest on a busy machine (tiny tensors).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

from difflab.denoisers.dps import PosteriorSampling
from difflab.denoisers.mixture import GaussianMixtureDenoiser, bench_mixture
from difflab.metrics.sliced_wasserstein import projection_directions, sliced_w2
from difflab.process import build_process
from difflab.operators import build_operator
from difflab.restoration.posterior import mixture_posterior
from difflab.rng import GeneratorNoise
from difflab.samplers import get_sampler, time_grid
from difflab.samplers.repaint import sample_repaint

ZETAS = (0.01, 0.03, 0.1, 0.3)
DPS_SAMPLERS = ("ddpm", "ddim")
REPAINT_JUMP = 10
REPAINT_RESAMPLES = (10, 1)
GAUSSIAN_ZETA = 1.0


@dataclass(frozen=True)
class Task:
    name: str
    shape: tuple[int, ...]
    sigma_y: float

    @property
    def inpainting(self) -> bool:
        return self.name.startswith("inpaint")

    @property
    def label(self) -> str:
        return f"{math.prod(self.shape)}-D {self.name} sigma_y {self.sigma_y:g}"


TASKS = (Task("inpaint-half", (1, 1, 2), 0.0), Task("inpaint-half", (1, 1, 2), 0.1), Task("denoise", (1, 1, 2), 0.3),
         Task("inpaint-box", (1, 8, 8), 0.0), Task("sr4", (1, 8, 8), 0.05), Task("blur", (1, 8, 8), 0.05))


@dataclass(frozen=True)
class Method:
    name: str
    sampler: str
    kind: str            # "dps", "repaint" or "prior"
    rule: str = "paper"
    zeta: float = 0.0
    resample: int = 1


def methods(task: Task) -> list[Method]:
    out = [Method(f"dps paper zeta {z:g}", s, "dps", "paper", z) for s in DPS_SAMPLERS for z in ZETAS]
    if task.sigma_y > 0:
        out += [Method("dps gaussian", s, "dps", "gaussian", GAUSSIAN_ZETA) for s in DPS_SAMPLERS]
    if task.inpainting:
        out += [Method(f"repaint j{REPAINT_JUMP} r{r}", "repaint", "repaint", resample=r) for r in REPAINT_RESAMPLES]
    return out + [Method("prior (unguided)", "ddpm", "prior")]


def mixture(shape: tuple[int, ...]) -> GaussianMixtureDenoiser:
    m = bench_mixture(build_process({"name": "ddpm"}), math.prod(shape))
    return GaussianMixtureDenoiser(m.process, m.means, m.stds, m.weights, shape)


def draw(method: Method, m: GaussianMixtureDenoiser, op, y: torch.Tensor, sigma_y: float, n: int, steps: int,
         seed: int) -> tuple[torch.Tensor, int]:
    """n samples of one method for one measurement y (1, ...): (samples, NFE)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *m.example_shape, generator=g, dtype=torch.float64) * m.process.prior_std()
    ts, noise, ys = time_grid(m.process, steps), GeneratorNoise(g), y.expand(n, *y.shape[1:])
    if method.kind == "repaint":
        r = sample_repaint(m, x, ts, noise=noise, known=ys, mask=op.mask, jump=REPAINT_JUMP, resample=method.resample)
    else:
        denoiser = m if method.kind == "prior" else PosteriorSampling(m, op, ys, sigma_y, method.zeta, method.rule)
        r = get_sampler(method.sampler)(denoiser, x, ts, noise=noise)
    return r.x, r.nfe


def bench_task(task: Task, ys: int, n: int, steps: int) -> list[tuple[Method, float, float, int, float]]:
    """Per method: (method, mean SW2, mean floor, NFE, seconds) over ``ys`` measurements."""
    m, op = mixture(task.shape), build_operator(task.name, task.shape)
    dirs = projection_directions(math.prod(task.shape))
    measured = []
    for i in range(ys):
        g = torch.Generator().manual_seed(1000 + i)
        x = m.sample(1, g)
        y = op.measure(x, task.sigma_y, torch.randn(op(x).shape, generator=g, dtype=torch.float64))
        exact_g = torch.Generator().manual_seed(2000 + i)
        post = mixture_posterior(m, op, y, task.sigma_y)
        a, b = post.sample(n, exact_g), post.sample(n, exact_g)
        measured.append((y, a, sliced_w2(a, b, dirs)))
    floor = sum(f for *_, f in measured) / ys
    rows = []
    for method in methods(task):
        t0, d, nfe = time.perf_counter(), 0.0, 0
        for i, (y, exact, _) in enumerate(measured):
            x, nfe = draw(method, m, op, y, task.sigma_y, n, steps, seed=3000 + i)
            d += sliced_w2(x, exact, dirs) / ys
        rows.append((method, d, floor, nfe, time.perf_counter() - t0))
        print(f"  {task.label:<28} {method.name:<24} {method.sampler:<8} SW2 {d:.4f}  floor {floor:.4f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 y, N = 500 (2-D) and 300 (64-D), 50 steps")
    p.add_argument("--ys", type=int, default=3, help="measurements per task (default 3)")
    p.add_argument("--n2d", type=int, default=5000, help="samples per y and method in 2-D (default 5000)")
    p.add_argument("--n64", type=int, default=2000, help="samples per y and method in 64-D (default 2000)")
    p.add_argument("--steps", type=int, default=100, help="sampler steps (default 100)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    a = p.parse_args()
    if a.quick:
        a.ys, a.n2d, a.n64, a.steps = 1, 500, 300, 50
    torch.set_num_threads(a.threads)
    print(f"{a.ys} measurements per task, N = {a.n2d} (2-D) / {a.n64} (64-D) samples per y, {a.steps} steps, "
          f"ddpm process, {a.threads} thread(s)")
    table = []
    for task in TASKS:
        table += [(task, *row) for row in bench_task(task, a.ys, a.n2d if task.shape == (1, 1, 2) else a.n64,
                                                     a.steps)]
    print(f"\n| {'task':<28} | {'method':<24} | {'sampler':<8} | {'SW2':>7} | {'floor':>7} | {'ratio':>6} | "
          f"{'NFE':>5} | {'seconds':>7} |")
    print(f"|{'-' * 30}|{'-' * 26}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 7}|{'-' * 9}|")
    for task, method, d, floor, nfe, seconds in table:
        print(f"| {task.label:<28} | {method.name:<24} | {method.sampler:<8} | {d:7.4f} | {floor:7.4f} | "
              f"{d / floor:6.1f} | {nfe:5d} | {seconds:7.1f} |")


if __name__ == "__main__":
    main()
