"""`difflab sample`: draw samples from a trained run with any sampler."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from difflab.cli.common import (finite_float, float_or_inf, nonneg_int, on_off, option, optional, positive_int,
                                scales)
from difflab.errors import DifflabError
from difflab.io import check_output_file
from difflab.process.base import VARIANCES
from difflab.rng import SEED_STRIDE
from difflab.samplers import SAMPLERS, SPACINGS, StepInfo, sampler_options, time_grid
from difflab.samplers.dpm_solver import SOLVER_TYPES
from difflab.samplers.pc import CORRECTOR_RULES, PREDICTORS
from difflab.samplers.sde import DIFFUSIONS
from difflab.samplers.unipc import ORDERS, VARIANTS
from difflab.training.acceleration import PRECISIONS

TRAJECTORY_COLUMNS = 8
TRAJECTORY_SAMPLES = 4


@dataclass(frozen=True)
class SamplerFlag:
    """A command-line flag for the sampler option of the same name (e.g. --corrector-steps -> corrector_steps)."""

    option: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    def takers(self) -> list[str]:
        """The samplers that take this option."""
        return [name for name in SAMPLERS if self.option in sampler_options(name)]

    def defaults(self) -> str:
        """'0.0 for ddim, 1.0 for euler-maruyama': the defaults read from the samplers' signatures (one value where
        they agree)."""
        shown = {s: shown_value(sampler_options(s)[self.option]) for s in self.takers()}
        if len(set(shown.values())) == 1:
            return next(iter(shown.values()))
        return ", ".join(f"{value} for {s}" for s, value in shown.items())


def shown_value(value: Any) -> str:
    """A sampler option's default as the command line writes it (booleans as on/off)."""
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


SAMPLER_FLAGS = (
    SamplerFlag("eta", "noise scale: ddim 0 is deterministic, 1 the DDPM posterior noise; euler-maruyama "
                "scales the diffusion w(t), 0 is the Euler ODE; dpmpp-2m-sde 0 is dpmpp-2m", finite_float),
    SamplerFlag("variance", "DDPM step variance: posterior (beta-tilde_t), beta (beta_t), learned (the model's own, "
                "if it was trained to learn it), auto = learned where the model learned it, else posterior", choices=VARIANCES),
    SamplerFlag("diffusion", "reverse-SDE diffusion w(t): sde = g(t)^2 (the process's own reverse SDE), sigma = "
                "sigma(t) (bounded, as in SiT), auto = sigma where alpha(t_max) = 0 (flow), else sde",
                choices=DIFFUSIONS),
    SamplerFlag("predictor", "predictor of the predictor-corrector sampler", choices=PREDICTORS),
    SamplerFlag("corrector_steps", "Langevin corrector steps after each predictor step", nonneg_int),
    SamplerFlag("snr", "corrector signal-to-noise ratio r: step 2 a (r ||z|| / ||score||)^2", finite_float),
    SamplerFlag("corrector_rule", "corrector step: expected = 2 a (r sigma)^2 (the rule with the norms' values for "
                "noise-dominated x; keeps p_t in any dimension), per-sample = each sample's own norms (biased "
                "by (D + 2)/D in D dimensions)", choices=CORRECTOR_RULES),
    SamplerFlag("lower_order_final", "on: the multistep solvers take their last steps at lower order on grids of "
                "fewer than 15 steps (stabler few-step sampling); off: full order throughout", on_off),
    SamplerFlag("solver_type", "DPM-Solver++(2M) SDE's second-order term: midpoint or heun", choices=SOLVER_TYPES),
    SamplerFlag("order", "UniPC's predictor order (the corrector lifts it by one)", int, choices=ORDERS),
    SamplerFlag("variant", "UniPC's B(h): bh1 = h, bh2 = e^h - 1", choices=VARIANTS),
    SamplerFlag("s_churn", "EDM's S_churn: noise added back per step, gamma = min(S_churn / N, sqrt 2 - 1); 0 is "
                "the deterministic Heun sampler", finite_float),
    SamplerFlag("s_min", "EDM's S_min: churn only where sigma/alpha >= S_min", finite_float),
    SamplerFlag("s_max", "EDM's S_max: churn only where sigma/alpha <= S_max (inf: no bound)", float_or_inf),
    SamplerFlag("s_noise", "EDM's S_noise: the std of the added noise (slightly above 1 offsets detail loss)",
                finite_float),
    SamplerFlag("rtol", "relative tolerance of the adaptive solver", finite_float),
    SamplerFlag("atol", "absolute tolerance of the adaptive solver", finite_float),
    SamplerFlag("langevin_steps", "Langevin steps at each noise level", positive_int),
    SamplerFlag("step_size", "Langevin step size c: step e_i = c sigma(t_i)^2", finite_float),
)
STEPS_HELP = ("times on the grid above 0, from t_max down to --t-min; NFE = steps for ddpm, ddim, dpmpp-2m, dpmpp-3m, "
              "dpmpp-2m-sde, unipc, euler-maruyama and euler, 2 steps - 1 for heun, edm and dpmpp-2s, 4 steps - 3 for "
              "rk4, (1 + corrector-steps)(steps - 1) + 1 for pc, "
              "langevin-steps x steps + 1 for langevin; dopri5 uses only the ends (its tolerances set the NFE)")
SPACING_HELP = ("time grid: uniform in t, quadratic (dense near the data), karras (rho = 7 in sigma/alpha), "
                "logsnr (uniform in log alpha^2/sigma^2)")


def add_sampling_flags(p: argparse.ArgumentParser, default_n: int) -> None:
    """The options that say how to draw samples from a run: shared by `difflab sample` and `difflab eval`."""
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="run folder (uses its latest checkpoint), a step folder, or a diffusers "
                   "UNet2DModel pipeline or model folder (pip install \"difflab[diffusers]\")")
    option(p, "--sampler", f"sampler ({', '.join(SAMPLERS)})", "ddim", choices=tuple(SAMPLERS), metavar="NAME")
    option(p, "--n", "number of samples", default_n, type=positive_int)
    add_grid_flags(p, default_steps=50)
    optional(p, "--class", "the class to draw, for a class-conditional run, a text run on a digit set (prompts "
             "naming it) or with --classifier (--label is the same)", "a row of samples per class", type=int,
             dest="label")
    p.add_argument("--label", type=int, dest="label", help=argparse.SUPPRESS)     # the name of difflab 0.2
    optional(p, "--prompt", "what to draw, for a text run (\"\" draws unconditionally)", metavar="TEXT")
    optional(p, "--guidance", "classifier-free guidance scale w of a conditional run: w D(x, c) + (1 - w) D(x, null); "
             "1 is the model as trained, 0 unconditional, > 1 trades diversity for fidelity; several separated by "
             "commas (0,1,2,4) draw the same noise at each", "1", type=scales, metavar="W")
    p.add_argument("--guidance-interval", nargs=2, type=finite_float, default=None, metavar=("T_LO", "T_HI"),
                   help="guide only at times T_LO <= t <= T_HI (the conditional model elsewhere)")
    optional(p, "--classifier", "a noise-aware classifier run (difflab train-classifier) whose gradient steers "
             "the samples toward --class", metavar="DIR")
    optional(p, "--classifier-scale", "classifier guidance scale s: score + s grad log p(y | x_t)", "1.0",
             type=finite_float)
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    option(p, "--device", "auto, cpu, cuda or cuda:N", "auto")


def add_grid_flags(p: argparse.ArgumentParser, default_steps: int) -> None:
    """How a sampler runs, whatever is drawn (samples, restorations, edits): the grid, the seed, the batch size,
    each sampler's options, clipping, the progress bar."""
    option(p, "--steps", STEPS_HELP, default_steps, type=positive_int)
    option(p, "--spacing", f"{SPACING_HELP}", "uniform", choices=SPACINGS, metavar="NAME")
    optional(p, "--t-min", "smallest time above 0 on the grid, where the denoising step starts", "the process's t_min",
             type=finite_float, dest="t_min")
    option(p, "--seed", f"seed; sample i uses seed*{SEED_STRIDE} + i", 0, type=int)
    option(p, "--batch-size", "samples per batch", 256, type=positive_int)
    for f in SAMPLER_FLAGS:   # None unless given: a sampler rejects options it does not take
        optional(p, f.flag, f"{f.help}; for {', '.join(f.takers())}", f.defaults(), type=f.type, choices=f.choices,
                 dest=f.option)
    p.add_argument("--clip-x0", dest="clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clamp the x0 prediction to the data's range (default: on for ddpm/ddim on pixels)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def configure(name: str, p: argparse.ArgumentParser) -> None:
    p.description = (
        "Sample a trained run (its EMA weights unless --raw) and write a PNG grid. The same --seed gives the "
        "same images whatever --batch-size: sample i draws its noise from its own generator (dopri5 aside: its "
        "adaptive steps are chosen for the whole batch). Any sampler works with any trained target and process.")
    add_sampling_flags(p, default_n=64)
    add_acceleration_flags(p)
    p.add_argument("--trajectory", action="store_true",
                   help="also write OUT_trajectory.png: x_t and the predicted x_0 at a few times from T down to 0")
    option(p, "--out", "output PNG", "samples.png")
    p.set_defaults(func=run)


def add_acceleration_flags(p: argparse.ArgumentParser) -> None:
    """How the network runs while sampling (the same samples up to rounding): its precision, torch.compile,
    channels-last weights (training.acceleration)."""
    option(p, "--precision", "the network's precision: fp32, bf16 (bf16 autocast of the network alone, CUDA only; "
           "the sampling loop stays float64) or auto (bf16 on CUDA, fp32 on the CPU)", "fp32", choices=PRECISIONS)
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile: its first call at each batch shape (a last, "
                        "smaller batch too) waits for the compilation, tens of seconds; pays off for many samples")
    p.add_argument("--channels-last", action="store_true",
                   help="store the U-Net's convolution weights channels-last (N, H, W, C), so its convolutions run in "
                        "that layout; image networks only")


def accelerated_network(a: argparse.Namespace, network: torch.nn.Module) -> torch.nn.Module:
    """The module to call for the run's ``network`` as add_acceleration_flags asked (``network`` itself by
    default); it shares the network's weights."""
    from difflab.training.acceleration import accelerate, autocast_enabled

    device = next(network.parameters()).device
    return accelerate(network, compile=a.compile, channels_last=a.channels_last,
                      autocast=autocast_enabled(a.precision, device))


@dataclass
class Sampling:
    """What add_sampling_flags parsed, resolved: the loaded model, what is asked for, the guidance scales, and
    the keyword arguments of sample_run."""

    model: Any                     # pipelines.run.LoadedModel
    sampler: str
    steps: int
    n: int                         # samples per guidance scale (a row per class rounds --n to the classes)
    request: Any                   # pipelines.run.Request: condition, requested labels, row length
    guidance: list[Any]            # pipelines.sample.Guidance per scale
    kwargs: dict[str, Any]         # seed, device, clip, batch_size, spacing, t_min, options, progress, codec


def resolve_sampling(a: argparse.Namespace) -> Sampling:
    """Load the run (and its classifier) and check the sampling options; every mistake is a one-line DifflabError."""
    from difflab.denoisers import NetworkClassifier
    from difflab.pipelines.run import NEEDS_RESTORE, check_classifier_fits, is_conditional, load_model, \
        num_classes, requested_condition
    from difflab.pipelines.sample import Guidance

    options = chosen_options(a, a.sampler)
    model = load_model(a.checkpoint, ema=not a.raw, device=a.device)
    if a.raw and model.source != "difflab":
        raise DifflabError(f"--raw picks a difflab run's raw weights over its EMA ones; {a.checkpoint} is a "
                           f"{model.source} checkpoint with one set of weights: drop --raw")
    if model.config.data.sr_scale is not None:          # it restores images rather than drawing them from noise
        raise DifflabError(NEEDS_RESTORE.format(run=model.run_dir))
    device = next(model.network.parameters()).device
    ws = a.guidance if a.guidance is not None else [1.0]
    if a.guidance is not None and not is_conditional(model.config):
        raise DifflabError("--guidance needs a conditional run (difflab train --class-cond or --text); steer an "
                           "unconditional run with --classifier")
    if a.guidance_interval is not None and a.guidance is None:
        raise DifflabError("--guidance-interval sets where --guidance applies: give --guidance too")
    classifier, classes = None, None
    if a.classifier is not None:
        clf = load_model(a.classifier, ema=not a.raw, device=a.device, task="classifier")
        check_classifier_fits(model, clf)
        classifier, classes = NetworkClassifier(clf.network, clf.process), num_classes(clf.config)
    elif a.classifier_scale is not None:
        raise DifflabError("--classifier-scale needs --classifier RUN")
    request = requested_condition(model.config, a.n, label=a.label, prompt=a.prompt, classes=classes)
    guidance = [Guidance(w, tuple(a.guidance_interval) if a.guidance_interval else None, classifier,
                         a.classifier_scale if a.classifier_scale is not None else 1.0) for w in ws]
    kwargs = dict(seed=a.seed, device=device, clip=a.clip, batch_size=a.batch_size, spacing=a.spacing,
                  t_min=a.t_min, options=options, progress=not a.quiet, codec=model.codec)
    return Sampling(model, a.sampler, a.steps, request.n or a.n, request, guidance, kwargs)


def chosen_options(a: argparse.Namespace, sampler: str) -> dict[str, Any]:
    """The sampler options given on the command line; a one-line error for one the sampler does not take."""
    takes = sampler_options(sampler)
    options = {}
    for f in SAMPLER_FLAGS:
        value = getattr(a, f.option)
        if value is None:
            continue
        if f.option not in takes:
            raise DifflabError(f"{f.flag} applies to --sampler {' or '.join(f.takers())} only, not {sampler}")
        options[f.option] = value
    return options


class TrajectoryRecorder:
    """Keeps (t, x, x0_hat) of the first TRAJECTORY_SAMPLES samples at up to TRAJECTORY_COLUMNS times spread
    over the grid: the first reported state at or below each chosen grid time (grid samplers report every
    grid time; dopri5 reports its evaluations, trial stages included, so earlier times are skipped)."""

    def __init__(self, grid: torch.Tensor) -> None:
        above = grid[grid > 0]
        pick = torch.linspace(0, len(above) - 1, min(TRAJECTORY_COLUMNS, len(above))).round().long().unique()
        self.times = above[pick].tolist()                       # decreasing
        self.columns: list[tuple[float, torch.Tensor, torch.Tensor]] = []

    def __call__(self, info: StepInfo) -> None:
        k = len(self.columns)
        if k < len(self.times) and info.t <= self.times[k] * (1 + 1e-9) and (k == 0 or info.t < self.columns[-1][0]):
            self.columns.append((info.t, info.x[:TRAJECTORY_SAMPLES].cpu(), info.x0[:TRAJECTORY_SAMPLES].cpu()))


def weights_read(model: Any, raw: bool) -> str:
    """Which weights a sampling of ``model`` (a pipelines.model.LoadedModel) read, for its summary line."""
    if model.source != "difflab":
        return f"{model.source} weights"
    return f"step {model.step}, {'raw' if raw else 'EMA'} weights"


def run(a: argparse.Namespace) -> None:
    from difflab.pipelines.sample import picture_suffixes, sample_run, save_samples
    from difflab.viz import PLOT_SUFFIXES, plot_image_rows, plot_points

    job = resolve_sampling(a)
    model, sampler, steps, n = job.model, job.sampler, job.steps, job.n
    data_spec = model.codec.data_spec
    if a.trajectory and data_spec.kind != "pixels":
        raise DifflabError(f"--trajectory draws images; this run models {data_spec.kind} (for 2-D points use difflab flow2d)")
    if a.trajectory and len(job.guidance) > 1:
        raise DifflabError("--trajectory follows one sampling run: give a single --guidance scale")
    check_output_file(a.out, "--out", picture_suffixes(data_spec))
    recorder = TrajectoryRecorder(time_grid(model.process, steps, a.spacing, a.t_min))

    def record(start: int) -> TrajectoryRecorder | None:
        return recorder if start == 0 and a.trajectory else None

    device = job.kwargs["device"]
    network = accelerated_network(a, model.network)
    outs = [sample_run(network, model.process, model.config, sampler, steps, n, cond=job.request.cond,
                       guidance=g, callback=record, **job.kwargs) for g in job.guidance]
    x = torch.cat([o.x for o in outs])
    if len(outs) == 1:
        path = save_samples(x, Path(a.out), data_spec, nrow=job.request.nrow)
    elif picture_suffixes(data_spec) == PLOT_SUFFIXES:
        path = plot_points([(f"w = {g.scale:g}", o.x) for g, o in zip(job.guidance, outs)], Path(a.out))
    else:
        path = save_samples(x, Path(a.out), data_spec, nrow=n)                  # a row per guidance scale
    seconds = sum(o.seconds for o in outs)
    steered = ", ".join(filter(None, [
        f"guidance {','.join(f'{g.scale:g}' for g in job.guidance)}" if a.guidance is not None else "",
        f"classifier scale {job.guidance[0].classifier_scale:g}" if a.classifier else ""]))
    print(f"{len(x)} samples with {sampler} ({outs[0].nfe} NFE){' ' + steered if steered else ''} in {seconds:.2f} s "
          f"from {model.checkpoint} ({weights_read(model, a.raw)}) -> {path}"
          + (f" (a row per scale: {', '.join(f'{g.scale:g}' for g in job.guidance)})" if len(outs) > 1 else ""))
    if a.trajectory:
        out = outs[0]
        decode = model.codec.decode          # a latent run's x_t and x0_hat are shown decoded
        with torch.no_grad():
            columns = [(t, decode(x.to(device)).cpu(), decode(x0.to(device)).cpu()) for t, x, x0 in recorder.columns]
        times = [t for t, _, _ in columns] + [0.0]
        rows = []
        for j in range(min(TRAJECTORY_SAMPLES, n)):
            rows.append((f"x_t #{j}", torch.stack([x[j] for _, x, _ in columns] + [out.x[j]])))
            rows.append((f"x0_hat #{j}", torch.stack([x0[j] for _, _, x0 in columns] + [out.x[j]])))
        traj = path.with_name(path.stem + "_trajectory.png")
        plot_image_rows(rows, times, traj, title=f"{sampler}, {out.nfe} NFE: x_t and the predicted x_0")
        print(f"trajectory -> {traj}")
