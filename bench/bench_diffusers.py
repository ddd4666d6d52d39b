"""difflab's samplers beside diffusers' schedulers on the same exact model, noise and reference.

    pip install diffusers          # or: pip install -e .[bench]; the bench's dependency only, never difflab's
    python bench/bench_diffusers.py [--dims 2,64] [--nfe 5,10,20,50] [--n 20000] [--n-high 2000]

The model is the analytic Gaussian mixture of `difflab bench-samplers` (denoisers.bench_mixture) under difflab's
`ddpm` process with the linear schedule (T = 1000, beta 1e-4 .. 0.02), whose alphas_cumprod are diffusers'
DDPMScheduler defaults (the script prints the largest difference). Every sampler and scheduler starts from the
same x_T at t = 1 (timestep 999). Errors:
  * RMS against a reference solve of the probability-flow ODE from the same x_T (to t_min = 1/T, timestep 0,
    then the denoising step; pipelines.bench_samplers.reference_solve, ~1e-9), for the deterministic ones
    (every diffusers scheduler here is; difflab's are classified by running them);
  * sliced W2 to exact draws, beside its finite-sample floor (two exact draws): n = 20000 in 2-D (floor 0.027);
    in 64-D n = 2000 by default (an evaluation of the 64-D mixture at n = 20000 takes 0.3 s on one CPU thread),
    where RMS is the error to read.
difflab's side: every registered sampler (read from the registry, so new ones join when registered) with its
defaults, both values of every on/off option and the variants of VARIANTS, on every time grid; best per NFE.
diffusers' side: SCHEDULERS, each loop run as its pipelines run it (scale_model_input, model, step), with
num_inference_steps chosen so the number of model calls is closest to the target NFE. "Best at NFE k" takes
the rows whose actual NFE is at most k, on both sides.

How the exact model is read by a scheduler: one that indexes alphas_cumprod[k] (DDIM) is evaluated at difflab's
time t = (k + 1) / T; one that keeps sigmas (sigma = sqrt((1 - abar) / abar), VE scale; Euler, Heun and LMS
feed x / sqrt(sigma^2 + 1) and fractional timesteps, DPM-Solver with Karras sigmas steps with sigmas between
the integer timesteps it rounds to) is evaluated at the noise level it steps with, sigmas[i]: difflab's time at
log-SNR -2 log sigma (process.time_at_log_snr). A check verifies the mapping: diffusers' DDIM (float64 tables)
against difflab's ddim on the same timesteps, and diffusers' Euler against difflab's ddim on the times of its
sigmas (DDIM is Euler in the VE scale; agreement limited by the float32 sample Euler's step keeps); both are
printed at every run.

The loop's cost over the network's (the issue's 3% target) is bench/bench_overhead.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from difflab.cli.bench import progress
from difflab.cli.common import positive_ints
from difflab.denoisers import GaussianMixtureDenoiser, bench_mixture
from difflab.errors import DifflabError
from difflab.pipelines.bench_samplers import (BenchCase, BenchRow, SamplerSpec, bench_case, make_case, one_thread,
                                              parse_sampler_spec)
from difflab.process import DDPMProcess
from difflab.process.base import as_time
from difflab.samplers import SAMPLERS, SPACINGS, check_options, get_sampler, sampler_options

NFES = (5, 10, 20, 50)
DIMS = (2, 64)
N_LOW, N_HIGH = 20000, 2000          # samples in 2-D (n >= 20000: the floor well below the errors) and in 64-D
TARGET_RATIO, TARGET_FLOOR = 0.8, 2.0
TARGET_NFES = (10, 20)
# Variants worth comparing besides each sampler's defaults and both values of every on/off option (skipped
# where the sampler is not registered or does not take the option).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "unipc": [{"order": o, "variant": v} for o in (1, 2, 3) for v in ("bh1", "bh2")],
    "ddpm": [{"variance": "beta"}],
    "ddim": [{"eta": 1.0}],
}


@dataclass(frozen=True)
class Scheduler:
    """A diffusers scheduler class with the options it runs with; ``ve``: its sample is x / alpha."""

    label: str
    cls: str
    options: tuple[tuple[str, Any], ...] = ()
    ve: bool = False


# Defaults throughout (beta_schedule="linear", 1e-4 .. 0.02, prediction_type="epsilon"), except DDIM's: its default
# clip_sample=True clamps x0_hat to [-1, 1], an image range this data leaves, so clip_sample=False; and its default
# timestep_spacing="leading" starts at timestep 1000 - 1000/N (900 for N = 10), treating x_T as x_900: both
# spacings run, "trailing" (which starts at 999, like every other scheduler here) being the fair one.
NO_CLIP = ("clip_sample", False)
SCHEDULERS = (
    Scheduler("DDIM (trailing)", "DDIMScheduler", (("timestep_spacing", "trailing"), NO_CLIP)),
    Scheduler("DDIM (leading, default)", "DDIMScheduler", (NO_CLIP,)),
    Scheduler("Euler", "EulerDiscreteScheduler", ve=True),
    Scheduler("Heun", "HeunDiscreteScheduler", ve=True),
    Scheduler("DPM++ 2M", "DPMSolverMultistepScheduler"),
    Scheduler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", (("use_karras_sigmas", True),)),
    Scheduler("UniPC", "UniPCMultistepScheduler"),
    Scheduler("LMS", "LMSDiscreteScheduler", ve=True),
    Scheduler("DEIS", "DEISMultistepScheduler"),
)


def make_scheduler(s: Scheduler) -> Any:
    import diffusers.schedulers as schedulers
    return getattr(schedulers, s.cls)(**dict(s.options))


# --- reading the exact model the way a scheduler means it ------------------------------------------------------
def time_at_sigma(process: DDPMProcess, sigma: float) -> Tensor:
    """difflab's time at VE noise level sigma = sigma_vp / alpha, i.e. at log-SNR -2 log sigma."""
    return process.time_at_log_snr(as_time(-2.0 * math.log(sigma)))


def noise_time(scheduler: Any, process: DDPMProcess, i: int, timestep: Tensor) -> Tensor:
    """The time the i-th model call of ``scheduler`` means: sigmas[i] where it keeps sigmas, else (k + 1) / T."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None:
        return as_time((int(timestep) + 1) / process.T)
    return time_at_sigma(process, float(sigmas[i]))


def run_scheduler(s: Scheduler, model: GaussianMixtureDenoiser, x: Tensor, steps: int,
                  float64_tables: bool = False) -> tuple[Tensor, int]:
    """(x_0, model calls) of the scheduler's loop from x (difflab's x_T at t = 1, VP scale)."""
    process, scheduler = model.process, make_scheduler(s)
    if float64_tables:                           # DDIM reads alphas_cumprod[k] and final_alpha_cumprod only
        scheduler.alphas_cumprod = process.alpha_bar[1:].clone()
    scheduler.set_timesteps(steps)
    sample = x * math.sqrt(1.0 + float(scheduler.sigmas[0]) ** 2) if s.ve else x.clone()   # x / alpha(t = 1)
    nfe = 0
    for i, k in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(sample, k)
        eps = model(model_input, noise_time(scheduler, process, i, k)).eps
        nfe += 1
        sample = scheduler.step(eps, k, sample).prev_sample
    return sample.to(torch.float64), nfe


def calls_per_steps(s: Scheduler, steps: int) -> int:
    scheduler = make_scheduler(s)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def steps_for(s: Scheduler, target: int) -> int:
    """num_inference_steps whose model calls are closest to ``target`` (ties: fewer)."""
    return min(range(1, target + 2), key=lambda n: (abs(calls_per_steps(s, n) - target), n))


# --- checks ----------------------------------------------------------------------------------------------------
def table_difference(process: DDPMProcess) -> float:
    from diffusers.schedulers import DDPMScheduler
    ours = process.alpha_bar[1:]
    return float((DDPMScheduler(beta_schedule="linear").alphas_cumprod.double() - ours).abs().max())


def check_mapping(model: GaussianMixtureDenoiser, x: Tensor, steps: int = 10) -> dict[str, float]:
    """Max |diffusers - difflab| of DDIM and Euler against difflab's ddim on the same noise levels."""
    process, ddim = model.process, get_sampler("ddim")
    trailing = SCHEDULERS[0]
    sch = make_scheduler(trailing)
    sch.set_timesteps(steps)
    ts = torch.cat([(sch.timesteps.double() + 1) / process.T, torch.zeros(1, dtype=torch.float64)])
    ddim_diff = float((run_scheduler(trailing, model, x, steps, float64_tables=True)[0]
                       - ddim(model, x, ts).x).abs().max())
    euler = next(s for s in SCHEDULERS if s.cls == "EulerDiscreteScheduler")
    sch = make_scheduler(euler)
    sch.set_timesteps(steps)
    ts = torch.cat([torch.stack([time_at_sigma(process, float(sig)) for sig in sch.sigmas[:-1]]),
                    torch.zeros(1, dtype=torch.float64)])
    euler_diff = float((run_scheduler(euler, model, x, steps)[0] - ddim(model, x, ts).x).abs().max())
    return {"ddim": ddim_diff, "euler": euler_diff}


# --- the two sides -----------------------------------------------------------------------------------------------
def difflab_specs(names: list[str] | None = None) -> list[SamplerSpec]:
    """Every registered sampler at its defaults, with each on/off option flipped, and the VARIANTS that apply."""
    specs: list[SamplerSpec] = []
    for name in names or list(SAMPLERS):
        defaults = sampler_options(name)
        options = [{}] + [{k: not v} for k, v in defaults.items() if isinstance(v, bool)]
        for variant in VARIANTS.get(name, []):
            try:
                check_options(name, variant)
            except DifflabError:
                continue
            options.append(variant)
        for o in options:
            spec = SamplerSpec(name, {k: v for k, v in o.items() if defaults.get(k) != v})
            if spec not in specs:
                specs.append(spec)
    return specs


@dataclass(frozen=True)
class Row:
    side: str             # "difflab" or "diffusers"
    name: str             # sampler spec or scheduler label
    grid: str
    target_nfe: int
    nfe: int
    rms: float | None
    sw2: float
    seconds: float


def difflab_rows(case: BenchCase, specs: list[SamplerSpec], nfes: Sequence[int], spacings: tuple[str, ...],
                 progress: Callable[[str], None]) -> list[Row]:
    rows: list[BenchRow] = bench_case(case, nfes, specs, spacings, progress)
    return [Row("difflab", r.sampler, r.spacing, r.target_nfe, r.nfe, r.rms, r.sw2, r.seconds) for r in rows]


def diffusers_rows(case: BenchCase, schedulers: tuple[Scheduler, ...], nfes: Sequence[int],
                   progress: Callable[[str], None]) -> list[Row]:
    rows = []
    for s in schedulers:
        progress(f"{case.key} diffusers {s.label}")
        for target in nfes:
            steps = steps_for(s, target)
            t0 = time.perf_counter()
            x0, nfe = run_scheduler(s, case.model, case.x, steps)
            seconds = time.perf_counter() - t0
            sw2, rms = case.score(x0)
            rows.append(Row("diffusers", s.label, f"steps={steps}", target, nfe, rms, sw2, seconds))
    return rows


# --- the table -----------------------------------------------------------------------------------------------------
def best(rows: list[Row], side: str, target: int, key: str) -> Row | None:
    """The row of ``side`` with the smallest ``key`` among those with actual NFE <= target."""
    cands = [r for r in rows if r.side == side and r.target_nfe == target and r.nfe <= target
             and getattr(r, key) is not None]
    return min(cands, key=lambda r: getattr(r, key)) if cands else None


def format_case(case: BenchCase, rows: list[Row], nfes: Sequence[int], n: int) -> tuple[str, dict[str, Any]]:
    dim = case.model.means.shape[1]
    out = [f"== {dim}-D mixture, ddpm linear (T = 1000), n = {n}: sliced W2 floor (two exact draws) = {case.floor:.4f};"
           f" reference solve accurate to {case.reference_error:.1e}", ""]
    summary: dict[str, Any] = {"dim": dim, "n": n, "floor": case.floor, "per_nfe": {}}
    for key, title in (("rms", "RMS to the reference solve (deterministic samplers)"), ("sw2", "sliced W2")):
        out.append(f"{title}: best at NFE <= k, difflab / diffusers")
        out.append(f"{'NFE':>4s}  {'difflab best':44s} {'error':>9s}  {'diffusers best':28s} {'error':>9s}  {'ratio':>6s}"
                   + ("  best/floor" if key == "sw2" else ""))
        for k in nfes:
            ours, theirs = best(rows, "difflab", k, key), best(rows, "diffusers", k, key)
            if ours is None or theirs is None:
                continue
            a, b = getattr(ours, key), getattr(theirs, key)
            ratio = a / b
            summary["per_nfe"].setdefault(k, {})[key] = {"difflab": [ours.name, ours.grid, ours.nfe, a],
                                                        "diffusers": [theirs.name, theirs.nfe, b], "ratio": ratio}
            floor = f"  {min(a, b) / case.floor:10.2f}" if key == "sw2" else ""
            out.append(f"{k:4d}  {ours.name + ' ' + ours.grid + f' ({ours.nfe})':44s} {a:9.2e}  "
                       f"{theirs.name + f' ({theirs.nfe})':28s} {b:9.2e}  {ratio:6.2f}{floor}")
        out.append("")
    out.append("every diffusers scheduler: RMS / sliced W2 (NFE)")
    out.append(f"{'scheduler':24s}" + "".join(f"{'NFE~' + str(k):>28s}" for k in nfes))
    for label in dict.fromkeys(r.name for r in rows if r.side == "diffusers"):
        cells = {r.target_nfe: r for r in rows if r.side == "diffusers" and r.name == label}
        out.append(f"{label:24s}" + "".join(f"{cells[k].rms:14.2e} / {cells[k].sw2:.4f} ({cells[k].nfe:2d})"
                                            if k in cells else f"{'-':>28s}" for k in nfes))
    out += ["", "every difflab sampler, best grid: RMS (deterministic) or sliced W2 (stochastic), grid, NFE"]
    names = list(dict.fromkeys(r.name for r in rows if r.side == "difflab"))
    width = max([24, *map(len, names)])
    out.append(f"{'sampler':{width}s}" + "".join(f"{'NFE~' + str(k):>30s}" for k in nfes))
    for name in names:
        cells = []
        for k in nfes:
            mine = [r for r in rows if r.side == "difflab" and r.name == name and r.target_nfe == k]
            key = "rms" if mine and mine[0].rms is not None else "sw2"
            r = min(mine, key=lambda r: getattr(r, key)) if mine else None
            cells.append(f"{key} {getattr(r, key):8.2e} {r.grid:>9s} ({r.nfe:2d})" if r else "-")
        out.append(f"{name:{width}s}" + "".join(f"{c:>30s}" for c in cells))
    return "\n".join(out), summary


def target_checks(summaries: list[dict[str, Any]]) -> str:
    out = ["== targets"]
    for s in summaries:
        for k in TARGET_NFES:
            for key in ("rms", "sw2"):
                cell = s["per_nfe"].get(k, {}).get(key)
                if cell:
                    ok = "pass" if cell["ratio"] <= TARGET_RATIO else "FAIL"
                    out.append(f"{s['dim']:3d}-D NFE {k:3d} {key:4s}: difflab/diffusers = {cell['ratio']:.2f} "
                               f"(<= {TARGET_RATIO}) {ok}")
        cell = s["per_nfe"].get(10, {}).get("sw2")
        if s["dim"] == 2 and cell:
            ratio = cell["difflab"][3] / s["floor"]
            out.append(f"  2-D NFE  10 best sliced W2 / floor = {ratio:.2f} (difflab; diffusers "
                       f"{cell['diffusers'][2] / s['floor']:.2f}) (<= {TARGET_FLOOR}) "
                       f"{'pass' if ratio <= TARGET_FLOOR else 'FAIL'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=positive_ints, default=DIMS, help="data dimensions (default: 2,64)")
    p.add_argument("--nfe", type=positive_ints, default=NFES, help="target NFE (default: 5,10,20,50)")
    p.add_argument("--n", type=int, default=N_LOW, help=f"samples in 2-D (default: {N_LOW})")
    p.add_argument("--n-high", type=int, default=N_HIGH, help=f"samples above 2-D (default: {N_HIGH})")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and exact draws (default: 0)")
    p.add_argument("--samplers", help="difflab sampler specs, comma-separated (default: every registered sampler "
                   "and its variants)")
    p.add_argument("--spacings", default=",".join(SPACINGS), help="difflab time grids (default: all)")
    p.add_argument("--schedulers", help="diffusers schedulers by label, comma-separated (default: all)")
    p.add_argument("--json", help="also write every row and the summary to this file")
    a = p.parse_args(argv)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        sys.exit("error: this bench needs diffusers: pip install diffusers (or pip install -e .[bench])")
    try:
        specs = ([parse_sampler_spec(s) for s in a.samplers.split(",")] if a.samplers else difflab_specs())
    except DifflabError as e:
        sys.exit(f"error: --samplers: {e}")
    schedulers = SCHEDULERS if not a.schedulers else tuple(s for s in SCHEDULERS if s.label in a.schedulers.split(","))
    spacings = tuple(a.spacings.split(","))
    process = DDPMProcess(schedule="linear", T=1000)
    t_start = time.perf_counter()
    with one_thread(), torch.no_grad():
        print(f"diffusers {diffusers.__version__}; ddpm linear T = 1000: max |alphas_cumprod - diffusers "
              f"DDPMScheduler(beta_schedule='linear')| = {table_difference(process):.1e} (diffusers' table is float32)")
        model2 = bench_mixture(process, 2)
        x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * process.prior_std()
        mapping = check_mapping(model2, x)
        print(f"mapping check, max |diffusers - difflab ddim| on the same noise levels (10 steps): DDIM {mapping['ddim']:.1e} "
              f"(float64 tables), Euler {mapping['euler']:.1e} (its step keeps a float32 sample)")
        print(f"difflab: {len(specs)} sampler specs x {len(spacings)} grids; diffusers: {len(schedulers)} schedulers\n")
        summaries, all_rows = [], []
        for dim in a.dims:
            n = a.n if dim == 2 else a.n_high
            t0 = time.perf_counter()
            progress(f"{dim}-D: reference solve, n = {n}")
            case = make_case(bench_mixture(process, dim), n, a.seed, check_reference=True)
            rows = diffusers_rows(case, schedulers, a.nfe, progress) + difflab_rows(case, specs, a.nfe, spacings, progress)
            text, summary = format_case(case, rows, a.nfe, n)
            summary["seconds"] = time.perf_counter() - t0
            print(text + f"\n({dim}-D took {summary['seconds']:.0f} s)\n", flush=True)
            summaries.append(summary)
            all_rows += [{"dim": dim, **asdict(r)} for r in rows]
        print(target_checks(summaries))
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"summaries": summaries, "rows": all_rows, "mapping": mapping}, indent=1))


if __name__ == "__main__":
    main()
