"""`difflab eval`: sample a run and measure FID, KID, IS, precision/recall, and optionally bits/dim."""

from __future__ import annotations

import argparse
import json

from difflab.cli.common import finite_float, option, optional, positive_int
from difflab.cli.sample import add_sampling_flags, resolve_sampling
from difflab.errors import DifflabError
from difflab.io import atomic_write_text, check_output_file, output_error
from difflab.metrics import FEATURE_KINDS, MetricOptions
from difflab.pipelines.evaluate import BPD_ESTIMATES
from difflab.process import GaussianProcess

DEFAULT_N = 1000


def configure(name: str, p: argparse.ArgumentParser) -> None:
    p.description = (
        "Draw --n samples from a run (any sampler) and compare them with the run's data set: FID with a bootstrap "
        "confidence interval, KID +- std, Inception Score, precision and recall (k = 3), on features of the built-in "
        "digit classifier or of the FID Inception-v3. Reference statistics are cached ($DIFFLAB_CACHE, default "
        "~/.cache/difflab). --bpd adds bits/dim of held-out test images: the DDPM variational bound (elbo) and the "
        "exact likelihood through the probability-flow ODE (ode).")
    add_sampling_flags(p, default_n=DEFAULT_N)
    m = MetricOptions()
    option(p, "--features", f"feature extractor ({', '.join(FEATURE_KINDS)}); builtin: a classifier difflab trains "
           "for digits and mnist5k", "builtin", choices=FEATURE_KINDS, metavar="KIND")
    optional(p, "--inception-weights", "pt_inception-2015-12-05-6726825d.pth or .safetensors for --features inception",
             "~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth", metavar="FILE")
    optional(p, "--reference", "the data set to compare with (and to take --bpd's held-out images from): a built-in "
             "name, an image folder or an .npz file, read at the model's image size and channels; needed for a "
             "diffusers model, which comes without one", "the run's own data set", metavar="DATA")
    option(p, "--split", "reference split of the data set (train, test, all)", "train",
           choices=("train", "test", "all"))
    option(p, "--fid-resamples", "bootstrap resamples for the FID interval", m.fid_resamples, type=positive_int)
    option(p, "--kid-subsets", "KID subsets", m.kid_subsets, type=positive_int)
    option(p, "--kid-subset-size", "images per KID subset", m.kid_subset_size, type=positive_int)
    option(p, "--is-splits", "Inception Score splits", m.is_splits, type=positive_int)
    p.add_argument("--bpd", nargs="?", const="auto", default=None, metavar="ESTIMATES",
                   help="also bits/dim on held-out test images: elbo, ode or elbo,ode (default when given "
                        "without a value: both for a process with discrete steps (ddpm), ode otherwise)")
    option(p, "--bpd-n", "held-out images for --bpd", 200, type=positive_int)
    optional(p, "--elbo-timesteps", "ELBO terms per image: all T by default, or an unbiased estimate from this many "
             "random steps", type=positive_int)
    option(p, "--ode-tol", "rtol = atol of the likelihood ODE solve", 1e-5, type=finite_float)
    optional(p, "--json", "write the results here as JSON", "RUN/eval-SAMPLER-STEPS.json in the evaluated run",
             metavar="FILE")
    p.set_defaults(func=run)


def bpd_estimates(value: str | None, process: GaussianProcess) -> tuple[str, ...]:
    if value is None:
        return ()
    if value == "auto":
        return ("elbo", "ode") if process.discrete_steps is not None else ("ode",)
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in names if v not in BPD_ESTIMATES]
    if bad or not names:
        raise DifflabError(f"--bpd takes {', '.join(BPD_ESTIMATES)} or both separated by a comma, got {value!r}")
    return names


def run(a: argparse.Namespace) -> None:
    from difflab.pipelines.evaluate import eval_path, evaluate, heldout_bpd, run_extractor, with_reference
    from difflab.viz import plot_tradeoff

    job = resolve_sampling(a)
    model, cfg = job.model, with_reference(job.model.config, a.reference)
    estimates = bpd_estimates(a.bpd, model.process)
    path = check_output_file(a.json if a.json else eval_path(model.run_dir, job.sampler, job.steps, a.raw, a.guidance),
                             "--json", (".json",))
    options = MetricOptions(fid_resamples=a.fid_resamples, kid_subsets=a.kid_subsets,
                            kid_subset_size=a.kid_subset_size, is_splits=a.is_splits)
    options.validate()
    extractor = run_extractor(cfg, a.features, a.inception_weights, device=job.kwargs["device"])
    results = [evaluate(model.network, model.process, cfg, sampler=job.sampler, steps=job.steps, n=job.n,
                        extractor=extractor, split=a.split, metric_options=options, step=model.step,
                        cond=job.request.cond, labels=job.request.labels, guidance=g, **job.kwargs)
               for g in job.guidance]
    if estimates:
        results[0].bpd = heldout_bpd(model.network, model.process, cfg, estimates, a.bpd_n, seed=job.kwargs["seed"],
                                     device=job.kwargs["device"], progress=job.kwargs["progress"],
                                     options={"elbo": {"timesteps": a.elbo_timesteps},
                                              "ode": {"rtol": a.ode_tol, "atol": a.ode_tol}})
    print(f"{model.checkpoint} (step {model.step}, {'raw' if a.raw else 'EMA'} weights)")
    for result in results:
        print(result.table())
    data = results[0].to_dict() if len(results) == 1 else {"guidance_sweep": [r.to_dict() for r in results]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    except OSError as e:
        raise output_error(path, e) from None
    print(f"results -> {path}")
    if len(results) > 1:
        reports = [r.report for r in results]
        panels = [("Inception Score (built-in features)" if a.features == "builtin" else "Inception Score", "FID",
                   [r.is_mean for r in reports], [r.fid for r in reports]),
                  ("recall (diversity)", "precision (fidelity)", [r.recall for r in reports],
                   [r.precision for r in reports])]
        if all(r.accuracy for r in results):
            panels.append(("guidance scale w", "accuracy of the asked-for class", a.guidance,
                           [r.accuracy["accuracy"] for r in results]))
        plot = plot_tradeoff(panels, [f"w={w:g}" for w in a.guidance], path.with_suffix(".png"),
                             title=f"guidance trade-off: {job.n} samples per scale, {job.sampler} {job.steps} steps")
        print(f"trade-off plot -> {plot}")
