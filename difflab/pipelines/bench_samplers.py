"""Every sampler against the exact answer: error and wall time against NFE on an analytic Gaussian mixture.

The model is :class:`GaussianMixtureDenoiser`, a "perfectly trained" denoiser, so every error is the
sampler's own. For each data dimension, process, sampler, time grid and target NFE:
  * the sampler gets the number of steps whose NFE is closest to the target (dopri5: the tolerance,
    rtol = atol, from :data:`DOPRI5_TOLERANCES` whose NFE on this batch is closest);
  * error = sliced Wasserstein-2 distance to as many exact draws; the finite-sample floor is the same
    distance between two exact draws;
  * for the deterministic solvers of the probability-flow ODE (ddim with eta = 0, euler, heun, rk4,
    dopri5) also the RMS error against a reference solve from the same noise (:func:`reference_solve`).
All samplers start from the same noise and draw their own noise from one generator (GeneratorNoise:
the per-sample generators of PerSampleNoise would dominate the wall time of a 2-D step). Wall time is
of the sampler call alone, on one torch thread (see :func:`one_thread`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from difflab.denoisers import GaussianMixtureDenoiser, bench_mixture
from difflab.errors import DifflabError
from difflab.metrics.sliced_wasserstein import projection_directions, sliced_w2
from difflab.process import PROCESSES, build_process
from difflab.rng import GeneratorNoise
from difflab.samplers import SAMPLERS, SPACINGS, SampleResult, get_sampler, time_grid

BENCH_NFE = (5, 10, 20, 50, 100, 200)
BENCH_DIMS = (2, 64)
ODE_SAMPLERS = ("ddim", "euler", "heun", "rk4", "dopri5")      # deterministic: compared with the reference solve
DOPRI5_TOLERANCES = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6)
REFERENCE_TOL = 1e-10


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the count. The analytic model's tensors are small
    (a few thousand rows): a second thread only adds synchronisation, and on a shared CPU it made a 2-D
    step ~15x slower (measured under load 5 on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the distance ------------------------------------------------------------------------------------
def rms(a: Tensor, b: Tensor) -> float:
    """Root mean square of a - b over every element."""
    return float(((a - b) ** 2).mean().sqrt())


# --- choosing steps for an NFE -----------------------------------------------------------------------
def nfe_of(sampler: str, model: GaussianMixtureDenoiser, steps: int, spacing: str, options: dict[str, Any]) -> int:
    """The NFE ``sampler`` spends on a grid of ``steps``: a dry run on one sample (grid samplers spend
    the same for any batch)."""
    x = torch.zeros(1, *model.example_shape, dtype=torch.float64)
    noise = GeneratorNoise(torch.Generator().manual_seed(0))
    return get_sampler(sampler)(model, x, time_grid(model.process, steps, spacing), noise=noise, **options).nfe


def steps_for_nfe(sampler: str, model: GaussianMixtureDenoiser, target: int, spacing: str,
                  options: dict[str, Any], max_steps: int | None = None) -> tuple[int, int]:
    """(steps, nfe) with the NFE closest to ``target`` (ties: fewer steps). NFE is affine in the steps
    for every grid sampler (N, 2N - 1, 4N - 3, (1 + M)(N - 1) + 1, MN + 1), so two dry runs place it."""
    n1, n2 = nfe_of(sampler, model, 1, spacing, options), nfe_of(sampler, model, 2, spacing, options)
    per = n2 - n1
    guess = max(1, round((target - (n1 - per)) / per))
    candidates = [s for s in (guess - 1, guess, guess + 1) if s >= 1 and (max_steps is None or s <= max_steps)]
    if not candidates:
        candidates = [max_steps or 1]
    best = min(candidates, key=lambda s: (abs(s * per + n1 - per - target), s))
    return best, nfe_of(sampler, model, best, spacing, options)


# --- the benchmark ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchRow:
    dim: int
    process: str
    sampler: str
    spacing: str           # "adaptive" for dopri5
    target_nfe: int
    nfe: int
    setting: str           # "steps=N" or "tol=..."
    sw2: float             # sliced W2 to exact draws
    rms: float | None      # RMS error against the reference solve (ODE solvers), else None
    seconds: float         # wall time of the sampler call


@dataclass
class BenchResult:
    rows: list[BenchRow] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)     # "dim/process" -> SW2 between two exact draws
    n: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "seconds": self.seconds, "floors": self.floors, "rows": [asdict(r) for r in self.rows]}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def reference_solve(model: GaussianMixtureDenoiser, x: Tensor) -> Tensor:
    """The probability-flow ODE solved from x at t_max to t_min to ~1e-10, then the denoising step.

    dopri5 with rtol = atol = REFERENCE_TOL; on the DDPM process, whose alpha'(t) jumps at every step i/T
    (log alpha_bar is piecewise linear), RK4 with one step between consecutive i/T instead: dopri5 spends
    ~10^5 NFE there resolving the jumps."""
    process = model.process
    if process.discrete_steps is not None:
        return get_sampler("rk4")(model, x, time_grid(process, process.discrete_steps)).x
    ends = torch.tensor([process.t_max, process.t_min, 0.0], dtype=torch.float64)
    return get_sampler("dopri5")(model, x, ends, rtol=REFERENCE_TOL, atol=REFERENCE_TOL).x


@torch.no_grad()
def bench_samplers(dims: Sequence[int] = BENCH_DIMS, nfes: Sequence[int] = BENCH_NFE, n: int = 2000,
                   processes: Sequence[str] = ("vp",), samplers: Sequence[str] = tuple(SAMPLERS),
                   spacings: Sequence[str] = SPACINGS, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> BenchResult:
    """Run every (dim, process, sampler, spacing, target NFE); see the module docstring."""
    for name in samplers:
        get_sampler(name)
    if n < 2 or any(d < 1 for d in dims) or any(k < 1 for k in nfes):
        raise DifflabError("--n must be >= 2, and --dims and --nfe must hold numbers >= 1")
    result, t_start = BenchResult(n=n), time.perf_counter()
    with one_thread():
        for dim in dims:
            for pname in processes:
                bench_case(result, bench_mixture(build_process({"name": pname}), dim), nfes, samplers, spacings,
                           seed, progress)
    result.seconds = time.perf_counter() - t_start
    return result


def bench_case(result: BenchResult, model: GaussianMixtureDenoiser, nfes: Sequence[int], samplers: Sequence[str],
               spacings: Sequence[str], seed: int, progress: Callable[[str], None] | None) -> None:
    """Append the rows of one (dimension, process) to ``result``."""
    process, dim, n = model.process, model.means.shape[1], result.n
    g = torch.Generator().manual_seed(seed)
    exact, exact2 = model.sample(n, g), model.sample(n, g)
    dirs = projection_directions(dim)
    result.floors[f"{dim}/{process.name}"] = sliced_w2(exact, exact2, dirs)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * process.prior_std()        # shared starting noise
    reference = reference_solve(model, x)
    ends = torch.tensor([process.t_max, process.t_min, 0.0], dtype=torch.float64)

    def run(sampler: str, ts: Tensor, options: dict[str, Any]) -> tuple[SampleResult, float]:
        noise = GeneratorNoise(torch.Generator().manual_seed(seed + 1))
        return timed(lambda: get_sampler(sampler)(model, x, ts, noise=noise, **options))

    def record(sampler: str, spacing: str, target: int, setting: str, ts: Tensor, options: dict[str, Any]) -> None:
        res, seconds = run(sampler, ts, options)
        result.rows.append(BenchRow(dim, process.name, sampler, spacing, target, res.nfe, setting,
                                    sliced_w2(res.x, exact, dirs),
                                    rms(res.x, reference) if sampler in ODE_SAMPLERS else None, seconds))

    for sampler in samplers:
        if progress:
            progress(f"{dim}-D {process.name} {sampler}")
        if sampler == "dopri5":                     # NFE set by the tolerance, and it depends on the batch
            sweep = {tol: run(sampler, ends, {"rtol": tol, "atol": tol})[0].nfe for tol in DOPRI5_TOLERANCES}
            for target in nfes:
                tol = min(sweep, key=lambda k: (abs(sweep[k] - target), -k))
                record(sampler, "adaptive", target, f"tol={tol:g}", ends, {"rtol": tol, "atol": tol})
            continue
        for spacing in spacings:
            for target in nfes:
                steps, _ = steps_for_nfe(sampler, model, target, spacing, {}, process.discrete_steps)
                record(sampler, spacing, target, f"steps={steps}", time_grid(process, steps, spacing), {})


# --- printing -----------------------------------------------------------------------------------------
def format_tables(result: BenchResult) -> str:
    """For each (dim, process): SW2 (actual NFE), RMS against the reference (ODE solvers), wall time in ms."""
    out: list[str] = []
    keys = sorted({(r.dim, r.process) for r in result.rows}, key=lambda k: (k[0], PROCESSES.index(k[1])))
    for dim, pname in keys:
        rows = [r for r in result.rows if (r.dim, r.process) == (dim, pname)]
        targets = sorted({r.target_nfe for r in rows})
        lines = list(dict.fromkeys((r.sampler, r.spacing) for r in rows))
        cell = {(r.sampler, r.spacing, r.target_nfe): r for r in rows}
        head = f"{'sampler':15s} {'grid':9s}" + "".join(f"{'NFE~' + str(k):>15s}" for k in targets)
        floor = result.floors[f"{dim}/{pname}"]
        out.append(f"== {dim}-D mixture, {pname} process, n = {result.n}: "
                   f"floor (SW2 between two exact draws) = {floor:.4f}")

        def table(title: str, text: Callable[[BenchRow], str | None]) -> None:
            body = []
            for sampler, spacing in lines:
                cells = [text(cell[sampler, spacing, k]) if (sampler, spacing, k) in cell else "" for k in targets]
                if any(c is not None for c in cells):
                    body.append(f"{sampler:15s} {spacing:9s}" + "".join(f"{c or '-':>15s}" for c in cells))
            if body:
                out.extend(["", title, head, *body])

        table("sliced W2 to exact samples (actual NFE)", lambda r: f"{r.sw2:.4f} ({r.nfe})")
        table("RMS error against the reference solve from the same noise (ODE solvers)",
              lambda r: None if r.rms is None else f"{r.rms:.2e} ({r.nfe})")
        table("wall time, ms", lambda r: f"{1e3 * r.seconds:.1f}")
        out.append("")
    out.append(f"total {result.seconds:.1f} s")
    return "\n".join(out)
