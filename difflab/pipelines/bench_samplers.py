"""Every sampler against the exact answer: error and wall time against NFE on an analytic Gaussian mixture.

The model is :class:`GaussianMixtureDenoiser`, a "perfectly trained" denoiser, so every error is the
sampler's own. For each data dimension, process, sampler, time grid and target NFE:
  * the sampler gets the number of steps whose NFE is closest to the target (dopri5: the tolerance,
    rtol = atol, from :data:`DOPRI5_TOLERANCES` whose NFE on this batch is closest);
  * error = sliced Wasserstein-2 distance to as many exact draws; the finite-sample floor is the same
    distance between two exact draws;
  * for every deterministic sampler (:func:`is_deterministic`: its samples do not depend on the noise it is
    handed, e.g. ddim with eta = 0, euler, heun, dpmpp-2m, dopri5) also the RMS error against a reference solve
    of the probability-flow ODE from the same noise (:func:`reference_solve`).
A sampler may be given with options, ``name:key=value:key=value`` (:func:`parse_sampler_spec`), so that
variants of one sampler are compared side by side. All samplers start from the same noise and draw their own
noise from one generator (GeneratorNoise: the per-sample generators of PerSampleNoise would dominate the wall
time of a 2-D step). Wall time is of the sampler call alone, on one torch thread (see :func:`one_thread`).

The low-noise mode (``low_noise=True``, ``--low-noise``) makes the errors resolvable: n >= LOW_NOISE_N, so the
finite-sample floor of the sliced W2 (the distance between two exact draws) lies well below the samplers'
errors, and the reference solve's own accuracy is measured (against a twice finer solve) and printed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from torchdiffeq import odeint

from difflab.denoisers import GaussianMixtureDenoiser, bench_mixture
from difflab.errors import DifflabError
from difflab.metrics.sliced_wasserstein import projection_directions, sliced_w2
from difflab.process import PROCESSES, build_process
from difflab.process.base import as_time
from difflab.rng import GeneratorNoise
from difflab.samplers import (SAMPLERS, SPACINGS, SampleResult, check_options, get_sampler, sampler_options,
                              time_grid)

BENCH_NFE = (5, 10, 20, 50, 100, 200)
BENCH_DIMS = (2, 64)
DOPRI5_TOLERANCES = (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6)
REFERENCE_TOL = 1e-10
LOW_NOISE_N = 20000          # samples in the low-noise mode (2-D bench mixture: floor 0.027, vs 0.049 at n = 2000)
REFERENCE_CHECK_ROWS = 256   # rows on which the low-noise mode measures the reference solve against a finer one
SPEC_SEPARATOR = ":"         # "unipc:order=3:variant=bh1"; a list of specs is separated by commas
BOOL_WORDS = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


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


# --- samplers with options ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler and the options it runs with (the others keep their defaults)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """"name" or "name:key=value:...", the form :func:`parse_sampler_spec` reads back."""
        return SPEC_SEPARATOR.join([self.name, *(f"{k}={format_value(v)}" for k, v in self.options.items())])

    @property
    def adaptive(self) -> bool:
        """Whether the NFE is set by a tolerance (dopri5), not by the grid's steps."""
        return "rtol" in sampler_options(self.name)


def format_value(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def parse_sampler_spec(text: str) -> SamplerSpec:
    """"name" or "name:key=value:key=value" -> SamplerSpec; each value is read as the type of the option's
    default (bool: on/off/true/false/1/0). A DifflabError of one line for an unknown sampler or option, a part
    that is not key=value, or a value of the wrong type. Option names may be written with - for _."""
    name, *parts = [part.strip() for part in text.strip().split(SPEC_SEPARATOR)]
    get_sampler(name)
    defaults, options = sampler_options(name), {}
    for part in parts:
        key, eq, value = (piece.strip() for piece in part.partition("="))
        if not eq or not key or not value:
            raise DifflabError(f"{text!r}: {part!r} is not key=value (write e.g. unipc{SPEC_SEPARATOR}order=3"
                               f"{SPEC_SEPARATOR}variant=bh1)")
        key = key.replace("-", "_")
        check_options(name, {key: value})
        options[key] = option_value(value, defaults[key], f"{text!r}: {key}")
    return SamplerSpec(name, options)


def option_value(text: str, default: Any, where: str) -> Any:
    """``text`` read as the type of ``default`` (an int option also takes "3.0"; a None default: int, float or str)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in BOOL_WORDS:
                raise ValueError
            return BOOL_WORDS[text.lower()]
        if isinstance(default, int):
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = "on or off" if isinstance(default, bool) else f"a number ({type(default).__name__})"
        raise DifflabError(f"{where} must be {kind}, got {text!r}") from None
    if default is None:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def as_spec(sampler: str | SamplerSpec) -> SamplerSpec:
    return sampler if isinstance(sampler, SamplerSpec) else parse_sampler_spec(sampler)


def is_deterministic(spec: SamplerSpec, model: GaussianMixtureDenoiser) -> bool:
    """Whether ``spec``'s samples are a function of the starting noise alone, found by running it, so that a
    sampler joins the RMS comparison without a hand-kept list: on a 3-step grid and 4 rows it must give the
    same samples with two different noise generators and with noise=None (a stochastic sampler refuses None:
    samplers.base.require_noise). A bad option value raises its DifflabError here."""
    process = model.process
    x = torch.randn(4, *model.example_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = time_grid(process, 3, "uniform")
    fn = get_sampler(spec.name)

    def draw(noise: GeneratorNoise | None) -> Tensor:
        return fn(model, x * process.prior_std(), ts, noise=noise, **spec.options).x

    first = draw(GeneratorNoise(torch.Generator().manual_seed(1)))
    if not torch.equal(first, draw(GeneratorNoise(torch.Generator().manual_seed(2)))):
        return False
    try:
        return torch.equal(first, draw(None))
    except DifflabError:
        return False


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
    sampler: str           # the sampler's spec, "name" or "name:key=value:..."
    spacing: str           # "adaptive" for dopri5
    target_nfe: int
    nfe: int
    setting: str           # "steps=N" or "tol=..."
    sw2: float             # sliced W2 to exact draws
    rms: float | None      # RMS error against the reference solve (deterministic samplers), else None
    seconds: float         # wall time of the sampler call


@dataclass
class BenchResult:
    rows: list[BenchRow] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)     # "dim/process" -> SW2 between two exact draws
    n: int = 0
    seconds: float = 0.0
    low_noise: bool = False
    # "dim/process" -> max |reference - a twice finer solve| on REFERENCE_CHECK_ROWS rows (low-noise mode only)
    reference_errors: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "seconds": self.seconds, "low_noise": self.low_noise, "floors": self.floors,
                "reference_errors": self.reference_errors, "rows": [asdict(r) for r in self.rows]}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def reference_solve(model: GaussianMixtureDenoiser, x: Tensor, refine: int = 1) -> Tensor:
    """The probability-flow ODE solved from x at t_max to t_min to ~1e-10, then the denoising step.

    dopri5 with rtol = atol = REFERENCE_TOL (``refine`` = 2: / 100, to measure the reference's own error). On a
    discrete process (DDPM), whose alpha'(t) jumps at every step i/T (log alpha_bar is piecewise linear in t),
    the ODE is solved in the noise level instead (:func:`solve_in_log_sigma`), where it is smooth."""
    process = model.process
    tol = REFERENCE_TOL / 100 ** (refine - 1)
    if process.discrete_steps is not None:
        return solve_in_log_sigma(model, x, tol)
    ends = torch.tensor([process.t_max, process.t_min, 0.0], dtype=torch.float64)
    return get_sampler("dopri5")(model, x, ends, rtol=tol, atol=tol).x


def solve_in_log_sigma(model: GaussianMixtureDenoiser, x: Tensor, tol: float) -> Tensor:
    """The probability-flow ODE in y = x / alpha and u = log(sigma / alpha), from t_max to t_min, by dopri5
    (torchdiffeq), then the denoising step x0_hat(x, t_min). With s = sigma / alpha the ODE reads

        dy/ds = (y - x0_hat) / s        (Karras et al. 2022, eq. 4 with s(t) = t),  so  dy/du = y - x0_hat,

    the same curve for every parameterization of time (the path enters only through lambda = -2u), and
    smooth in u however alpha(t) is interpolated. Needs alpha(t_max) > 0."""
    process = model.process
    t_max, t_min = as_time(process.t_max), as_time(process.t_min)
    (a_max, s_max), (a_min, s_min) = process.alpha_sigma(t_max), process.alpha_sigma(t_min)

    def rhs(u: Tensor, y: Tensor) -> Tensor:
        t = process.time_at_log_snr(-2.0 * u)                         # lambda = log(alpha^2 / sigma^2) = -2u
        alpha = process.alpha_sigma(t)[0]
        return y - model(alpha * y, t).x0

    span = torch.stack([torch.log(s_max / a_max), torch.log(s_min / a_min)]).to(torch.float64)
    y = odeint(rhs, x / a_max, span, rtol=tol, atol=tol, method="dopri5")[-1]
    return model(a_min * y, t_min).x0


@dataclass
class BenchCase:
    """One (mixture, n, seed): the shared starting noise x at t_max, the reference solve from it, exact draws
    and the finite-sample floor; :meth:`score` grades samples drawn from x."""

    model: GaussianMixtureDenoiser
    x: Tensor                      # (n, D) starting noise, already scaled by the prior std
    reference: Tensor              # (n, D) the probability-flow ODE solved from x
    exact: Tensor                  # (n, D) exact draws of the data
    directions: Tensor             # projections of the sliced W2
    floor: float                   # sliced W2 between two exact draws of n
    seed: int
    reference_error: float | None = None

    @property
    def key(self) -> str:
        return f"{self.model.means.shape[1]}/{self.model.process.name}"

    def score(self, samples: Tensor, deterministic: bool = True) -> tuple[float, float | None]:
        """(sliced W2 to the exact draws, RMS against the reference solve or None if not ``deterministic``)."""
        return sliced_w2(samples, self.exact, self.directions), rms(samples, self.reference) if deterministic else None


def make_case(model: GaussianMixtureDenoiser, n: int, seed: int, check_reference: bool = False) -> BenchCase:
    """Draw the case's noise and exact samples from ``seed`` and solve the reference; ``check_reference`` also
    measures the reference against a twice finer solve on its first REFERENCE_CHECK_ROWS rows."""
    process, dim = model.process, model.means.shape[1]
    g = torch.Generator().manual_seed(seed)
    exact, exact2 = model.sample(n, g), model.sample(n, g)
    dirs = projection_directions(dim)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * process.prior_std()        # shared starting noise
    case = BenchCase(model, x, reference_solve(model, x), exact, dirs, sliced_w2(exact, exact2, dirs), seed)
    if check_reference:
        rows = slice(0, REFERENCE_CHECK_ROWS)
        case.reference_error = float((reference_solve(model, x[rows], refine=2) - case.reference[rows]).abs().max())
    return case


@torch.no_grad()
def bench_samplers(dims: Sequence[int] = BENCH_DIMS, nfes: Sequence[int] = BENCH_NFE, n: int = 2000,
                   processes: Sequence[str] = ("vp",), samplers: Sequence[str | SamplerSpec] = tuple(SAMPLERS),
                   spacings: Sequence[str] = SPACINGS, seed: int = 0, low_noise: bool = False,
                   progress: Callable[[str], None] | None = None) -> BenchResult:
    """Run every (dim, process, sampler, spacing, target NFE); see the module docstring. ``samplers`` are names
    or specs "name:key=value:..."; ``low_noise`` raises n to at least LOW_NOISE_N and checks the reference."""
    specs = [as_spec(s) for s in samplers]
    if n < 2 or any(d < 1 for d in dims) or any(k < 1 for k in nfes):
        raise DifflabError("--n must be >= 2, and --dims and --nfe must hold numbers >= 1")
    n = max(n, LOW_NOISE_N) if low_noise else n
    result, t_start = BenchResult(n=n, low_noise=low_noise), time.perf_counter()
    with one_thread():
        for pname in processes:                          # a bad option value fails here, before any long run
            probe = bench_mixture(build_process({"name": pname}), 2)
            for spec in specs:
                is_deterministic(spec, probe)
        for dim in dims:
            for pname in processes:
                case = make_case(bench_mixture(build_process({"name": pname}), dim), n, seed, low_noise)
                result.floors[case.key] = case.floor
                if case.reference_error is not None:
                    result.reference_errors[case.key] = case.reference_error
                result.rows += bench_case(case, nfes, specs, spacings, progress)
    result.seconds = time.perf_counter() - t_start
    return result


def bench_case(case: BenchCase, nfes: Sequence[int], specs: Sequence[SamplerSpec], spacings: Sequence[str],
               progress: Callable[[str], None] | None = None) -> list[BenchRow]:
    """The rows of one case: every spec on every spacing at every target NFE."""
    model, rows = case.model, []
    process, dim = model.process, model.means.shape[1]
    ends = torch.tensor([process.t_max, process.t_min, 0.0], dtype=torch.float64)

    def run(spec: SamplerSpec, ts: Tensor, options: dict[str, Any]) -> tuple[SampleResult, float]:
        noise = GeneratorNoise(torch.Generator().manual_seed(case.seed + 1))
        return timed(lambda: get_sampler(spec.name)(model, case.x, ts, noise=noise, **{**spec.options, **options}))

    def record(spec: SamplerSpec, spacing: str, target: int, setting: str, res: SampleResult, seconds: float,
               deterministic: bool) -> None:
        rows.append(BenchRow(dim, process.name, spec.label, spacing, target, res.nfe, setting,
                             *case.score(res.x, deterministic), seconds))

    for spec in specs:
        if progress:
            progress(f"{dim}-D {process.name} {spec.label}")
        deterministic = is_deterministic(spec, model)
        if spec.adaptive:                    # NFE set by the tolerance, and it depends on the batch
            sweep = {tol: run(spec, ends, {"rtol": tol, "atol": tol}) for tol in DOPRI5_TOLERANCES}
            for target in nfes:
                tol = min(sweep, key=lambda k: (abs(sweep[k][0].nfe - target), -k))
                record(spec, "adaptive", target, f"tol={tol:g}", *sweep[tol], deterministic)
            continue
        for spacing in spacings:
            for target in nfes:
                steps, _ = steps_for_nfe(spec.name, model, target, spacing, spec.options, process.discrete_steps)
                record(spec, spacing, target, f"steps={steps}", *run(spec, time_grid(process, steps, spacing), {}),
                       deterministic)
    return rows


# --- printing -----------------------------------------------------------------------------------------
def format_tables(result: BenchResult) -> str:
    """For each (dim, process): SW2 (actual NFE), RMS against the reference (deterministic samplers), wall time
    in ms."""
    out: list[str] = []
    keys = sorted({(r.dim, r.process) for r in result.rows}, key=lambda k: (k[0], PROCESSES.index(k[1])))
    for dim, pname in keys:
        rows = [r for r in result.rows if (r.dim, r.process) == (dim, pname)]
        targets = sorted({r.target_nfe for r in rows})
        lines = list(dict.fromkeys((r.sampler, r.spacing) for r in rows))
        cell = {(r.sampler, r.spacing, r.target_nfe): r for r in rows}
        width = max([15, *(len(r.sampler) for r in rows)])
        head = f"{'sampler':{width}s} {'grid':9s}" + "".join(f"{'NFE~' + str(k):>15s}" for k in targets)
        floor = result.floors[f"{dim}/{pname}"]
        out.append(f"== {dim}-D mixture, {pname} process, n = {result.n}: "
                   f"floor (SW2 between two exact draws) = {floor:.4f}")
        if result.low_noise:
            out.append(f"   low-noise mode: n >= {LOW_NOISE_N}; reference solve accurate to "
                       f"{result.reference_errors[f'{dim}/{pname}']:.1e} (max |difference| to a twice finer solve, "
                       f"{REFERENCE_CHECK_ROWS} rows)")

        def table(title: str, text: Callable[[BenchRow], str | None]) -> None:
            body = []
            for sampler, spacing in lines:
                cells = [text(cell[sampler, spacing, k]) if (sampler, spacing, k) in cell else "" for k in targets]
                if any(c is not None for c in cells):
                    body.append(f"{sampler:{width}s} {spacing:9s}" + "".join(f"{c or '-':>15s}" for c in cells))
            if body:
                out.extend(["", title, head, *body])

        table("sliced W2 to exact samples (actual NFE)", lambda r: f"{r.sw2:.4f} ({r.nfe})")
        table("RMS error against the reference solve from the same noise (deterministic samplers)",
              lambda r: None if r.rms is None else f"{r.rms:.2e} ({r.nfe})")
        table("wall time, ms", lambda r: f"{1e3 * r.seconds:.1f}")
        out.append("")
    out.append(f"total {result.seconds:.1f} s")
    return "\n".join(out)
