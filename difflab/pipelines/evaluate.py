"""Evaluate a trained run: sample it, measure the samples against its data set, optionally its likelihood.

    result = evaluate(network, process, cfg, sampler="ddim", steps=50, n=1000, seed=0,
                      extractor=build_extractor("builtin", "digits"))
    print(result.table()); eval_path(run_dir, "ddim", 50).write_text(json.dumps(result.to_dict()))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from difflab.config import RunConfig
from difflab.errors import DifflabError
from difflab.metrics import FeatureExtractor, MetricOptions, MetricsReport, build_extractor, compute_metrics
from difflab.pipelines.run import WITHOUT_DATA, data_conditions, load_run_data, run_codec
from difflab.pipelines.sample import make_denoiser, sample_run
from difflab.process import GaussianProcess
from difflab.rng import PerSampleNoise
from difflab.samplers.base import CountingDenoiser

BPD_ESTIMATES = ("elbo", "ode")
BUILTIN_PREFIX = "builtin-"    # the built-in digit classifiers' extractor names: their classes are the digits


def eval_path(run_dir: Path, sampler: str, steps: int, raw: bool = False, scales: list[float] | None = None) -> Path:
    """Where an evaluation's JSON goes by default: into the evaluated run, named by how it was sampled
    (eval-ddim-50[-raw][-w0,1,2,4].json)."""
    guided = f"-w{','.join(f'{w:g}' for w in scales)}" if scales else ""
    return Path(run_dir) / f"eval-{sampler}-{steps}{'-raw' if raw else ''}{guided}.json"


@dataclass
class EvalResult:
    """The metrics of n samples, how they were drawn, and (optionally) bits/dim on held-out data."""

    report: MetricsReport
    sampler: str
    steps: int
    nfe: int
    sampling_seconds: float
    step: int | None = None
    bpd: dict[str, dict[str, Any]] = field(default_factory=dict)   # estimate -> summary
    guidance: dict[str, Any] | None = None     # how the samples were steered (scale, interval, classifier scale)
    accuracy: dict[str, Any] | None = None     # the built-in classifier's accuracy against the requested classes

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "sampler": self.sampler, "steps": self.steps, "nfe": self.nfe,
                "sampling_seconds": self.sampling_seconds, **self.report.to_dict(), "bpd": self.bpd,
                "guidance": self.guidance, "accuracy": self.accuracy}

    def table(self) -> str:
        lines = [self.report.table(),
                 f"  {'sampling':<10} {self.sampler}, {self.steps} steps, {self.nfe} NFE, "
                 f"{self.sampling_seconds:.1f} s for {self.report.n_generated} samples"]
        if self.guidance:
            g = self.guidance
            interval = f" for t in [{g['interval'][0]:g}, {g['interval'][1]:g}]" if g["interval"] else ""
            classifier = f", classifier scale s = {g['classifier_scale']:g}" if g["classifier_scale"] is not None else ""
            lines.append(f"  {'guidance':<10} classifier-free w = {g['scale']:g}{interval}{classifier}")
        if self.accuracy:
            per = " ".join(f"{a:.2f}" for a in self.accuracy["per_class"])
            lines.append(f"  {'accuracy':<10} {self.accuracy['accuracy']:.4f} of the samples are classified as the "
                         f"class they were asked for (per class: {per})")
        for name, s in self.bpd.items():
            lines.append(f"  {'bpd ' + name:<10} {s['bpd']:.4f} +- {s['sem']:.4f} (standard error) on "
                         f"{s['n']} held-out images, {s['nfe']:.0f} NFE each, {s['seconds']:.1f} s")
        return "\n".join(lines)


def require_images(cfg: RunConfig, what: str) -> None:
    """Raise a one-line DifflabError unless the run generates images (pixels, after its codec)."""
    kind = run_codec(cfg).data_spec.kind
    if kind != "pixels":
        raise DifflabError(f"{what} need a model of images; this run models {kind} (try difflab sample)")


def run_extractor(cfg: RunConfig, features: str, inception_weights: str | None = None,
                  device: torch.device | str = "cpu") -> FeatureExtractor:
    """The feature extractor for a run's data: the built-in classifier of its data set, or Inception-v3."""
    require_images(cfg, "image metrics")
    return build_extractor(features, cfg.data.dataset, inception_weights=inception_weights, device=device,
                           progress=True)


def with_reference(cfg: RunConfig, reference: str | None) -> RunConfig:
    """The run's config comparing with ``reference`` (a built-in name, image folder or .npz, read at the model's image
    size and channels; --reference of difflab eval) instead of its own data set. None: the run's own data set, which
    a model without one (a diffusers model) does not have: a one-line error asking for a reference."""
    if reference is None:
        if not cfg.data.dataset:
            raise DifflabError(WITHOUT_DATA)
        return cfg
    require_images(cfg, "--reference images")
    C, H, W = run_codec(cfg).data_spec.shape
    if H != W:
        raise DifflabError(f"--reference is read at the model's image size, and its images are {H} x {W}: difflab "
                           "reads data sets at square sizes")
    return replace(cfg, data=replace(cfg.data, dataset=reference, image_size=H, channels=C))


def run_reference(cfg: RunConfig, split: str) -> str | Tensor:
    """The run's data set by name (its cached statistics) when it loads at its own size, else its images."""
    d = cfg.data
    if d.image_size is None and d.channels is None:
        return d.dataset
    return load_run_data(cfg, split=split).data


def class_accuracy(probabilities: Tensor, labels: Tensor) -> dict[str, Any]:
    """How often the arg-max of classifier probabilities (N, K) is the requested label (N,): overall and per class
    (NaN for a class nobody asked for)."""
    right = (probabilities.argmax(1) == labels).double()
    per_class = [float(right[labels == k].mean()) if bool((labels == k).any()) else float("nan")
                 for k in range(probabilities.shape[1])]
    return {"accuracy": float(right.mean()), "per_class": per_class, "n": len(labels)}


def evaluate(network: nn.Module, process: GaussianProcess, cfg: RunConfig, *, sampler: str, steps: int, n: int,
             seed: int, extractor: FeatureExtractor, split: str = "train",
             metric_options: MetricOptions = MetricOptions(), device: torch.device | str = "cpu",
             step: int | None = None, labels: Tensor | None = None, **sample_kwargs: Any) -> EvalResult:
    """Draw n samples with ``sampler`` (sample_kwargs: their condition and guidance, ...) and measure them against
    the run's ``split``; with ``labels`` (n,), the classes they were asked for, also how often the built-in
    digit classifier sees the asked-for class."""
    require_images(cfg, "image metrics")
    out = sample_run(network, process, cfg, sampler, steps, n, seed, device=device, **sample_kwargs)
    report = compute_metrics(out.x, extractor, run_reference(cfg, split), split=split, options=metric_options)
    accuracy = None
    if labels is not None and extractor.name.startswith(BUILTIN_PREFIX):
        accuracy = class_accuracy(extractor.probabilities(out.x), labels)
    g = sample_kwargs.get("guidance")
    steering = None if g is None else {"scale": g.scale, "interval": g.interval,
                                       "classifier_scale": g.classifier_scale if g.classifier is not None else None}
    return EvalResult(report, sampler, steps, out.nfe, out.seconds, step, guidance=steering, accuracy=accuracy)


def heldout_bpd(network: nn.Module, process: GaussianProcess, cfg: RunConfig, estimates: tuple[str, ...], n: int,
                seed: int = 0, device: torch.device | str = "cpu", batch_size: int = 100,
                options: dict[str, dict[str, Any]] | None = None, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Bits/dim of the first n test images by each estimate ("elbo": DDPM variational bound, ddpm runs only;
    "ode": exact NLL through the probability-flow ODE). ``options[estimate]`` goes to elbo_bpd / ode_bpd.
    Example i draws its noise from its own generator (rng.derived_seed(seed, i)), in batches of ``batch_size``.
    ``progress``: a bar on stderr counting the network evaluations, with their rate."""
    from difflab.likelihood import LikelihoodResult, elbo_bpd, ode_bpd

    unknown = set(estimates) - set(BPD_ESTIMATES)
    if unknown:
        raise DifflabError(f"unknown bits/dim estimate {sorted(unknown)}; choose from {', '.join(BPD_ESTIMATES)}")
    if "elbo" in estimates and process.discrete_steps is None:
        raise DifflabError(f"the ELBO in bits/dim is for ddpm runs; this run's process is {process.name}: use --bpd ode")
    require_images(cfg, "bits/dim of 8-bit images")
    if cfg.codec.get("name") != "identity":
        raise DifflabError("bits/dim of a latent run would be a likelihood of its latents, not of the images (the "
                           "decoder has no density); evaluate it without --bpd")
    test = load_run_data(cfg, split="test")
    x0 = test.data[:n]
    conditions = data_conditions(cfg, test)
    denoiser = make_denoiser(network, process, cfg, clip=False)
    estimate = {"elbo": elbo_bpd, "ode": ode_bpd}
    out: dict[str, dict[str, Any]] = {}
    for name in estimates:
        parts = []
        with tqdm(disable=not progress, unit="eval", desc=f"bits/dim ({name}) of {len(x0)} images",
                  dynamic_ncols=True) as bar:
            counted = CountingDenoiser(denoiser, on_call=bar.update)
            for start in range(0, len(x0), batch_size):
                xb = x0[start:start + batch_size].to(device)
                cond = conditions[start:start + len(xb)].to(device) if conditions is not None else None
                noise = PerSampleNoise.for_items(seed, start, start + len(xb), device)
                with torch.no_grad():
                    parts.append(estimate[name](counted, xb, cond=cond, noise=noise, **(options or {}).get(name, {})))
        out[name] = LikelihoodResult.cat(parts).summary()
    return out
