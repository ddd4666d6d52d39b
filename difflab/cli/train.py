"""`difflab train`: train a model on a dataset, or continue a run with --resume."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.common import add, finite_float, nonneg_int, positive_int
from difflab.config import DataConfig, EvalConfig, PreviewConfig, RunConfig, updated
from difflab.data import DATASET_NAMES
from difflab.errors import DifflabError
from difflab.networks import PRESETS
from difflab.objectives import COUPLINGS, TIME_SAMPLINGS, WEIGHTINGS, DiffusionObjective
from difflab.parameterization import TARGETS
from difflab.process import PROCESSES, SCHEDULES, FlowProcess, VEProcess, VPProcess
from difflab.samplers import SAMPLERS
from difflab.training import TrainerConfig

TRAINER_FLAGS = ("steps", "batch_size", "lr", "warmup", "weight_decay", "grad_clip", "ema_decay", "seed",
                 "log_every", "checkpoint_every", "sample_every", "device", "precision")
# options that may change when a run is resumed (the rest must match the run's config.json)
RESUMABLE = ("steps", "log_every", "checkpoint_every", "sample_every", "device")
EVAL_FLAGS = {"eval_every": "every", "eval_n": "n", "eval_features": "features", "inception_weights": "inception_weights"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a diffusion model", description=(
        "Train a diffusion model and write a run folder: config.json, checkpoints/ (safetensors), log.jsonl, "
        "loss.png and sample grids (samples.png, samples/step_*.png)."))
    d, t, r = DataConfig(), TrainerConfig(), RunConfig()
    vp, ve, flow = VPProcess(), VEProcess(), FlowProcess()
    add(p, "--dataset", f"built-in dataset ({', '.join(DATASET_NAMES)}), an image folder or a .npz file", d.dataset)
    add(p, "--image-size", "resize images to this size", type=positive_int)
    add(p, "--channels", "1 (gray) or 3 (RGB)", type=int, choices=(1, 3))
    p.add_argument("--class-cond", action="store_true", default=None, help="condition on the dataset's labels")
    add(p, "--model", f"network preset ({', '.join(PRESETS)})", r.model, choices=PRESETS, metavar="PRESET")
    add(p, "--process", f"forward process ({', '.join(PROCESSES)})", r.process["name"], choices=PROCESSES,
        metavar="NAME")
    add(p, "--schedule", f"DDPM beta schedule ({', '.join(SCHEDULES)}); ddpm only", r.process["schedule"],
        choices=SCHEDULES, metavar="NAME")
    add(p, "--T", "number of DDPM steps; ddpm only", r.process["T"], type=positive_int, dest="T")
    add(p, "--beta-min", "VP-SDE beta(0); vp only", vp.beta_min, type=finite_float)
    add(p, "--beta-max", "VP-SDE beta(1); vp only", vp.beta_max, type=finite_float)
    add(p, "--sigma-min", "VE-SDE sigma(0); ve only", ve.sigma_min, type=finite_float)
    add(p, "--sigma-max", "VE-SDE sigma(1); ve only", ve.sigma_max, type=finite_float)
    add(p, "--t-min", f"smallest training time (vp {vp.t_min:g}, ve {ve.t_min:g}, flow {flow.t_min:g}); vp, ve, flow",
        type=finite_float)
    add(p, "--t-max", "largest time of the flow path (1, or 0.999 for eps/score targets, which need alpha > 0); "
        "flow only", type=finite_float)
    add(p, "--target", f"what the network predicts ({', '.join(TARGETS)})", r.objective.target, choices=TARGETS,
        metavar="NAME")
    add(p, "--weighting", f"loss weighting lambda(t) ({', '.join(WEIGHTINGS)})", r.objective.weighting,
        choices=WEIGHTINGS, metavar="NAME")
    add(p, "--min-snr-gamma", "gamma of the min-snr weighting", r.objective.min_snr_gamma, type=finite_float)
    add(p, "--time-sampling", f"training times ({', '.join(TIME_SAMPLINGS)}); discrete t = i/T needs ddpm",
        "discrete for ddpm, else continuous", choices=TIME_SAMPLINGS, metavar="HOW")
    add(p, "--coupling", f"noise-data pairing ({', '.join(COUPLINGS)}); ot: exact minibatch optimal transport, "
        "flow only", r.objective.coupling, choices=COUPLINGS, metavar="HOW")
    add(p, "--steps", "training steps (in total, when resuming)", t.steps, type=positive_int)
    add(p, "--batch-size", "examples per step", t.batch_size, type=positive_int)
    add(p, "--lr", "AdamW learning rate", t.lr, type=finite_float)
    add(p, "--warmup", "linear learning-rate warm-up steps", t.warmup, type=nonneg_int)
    add(p, "--weight-decay", "AdamW weight decay", t.weight_decay, type=finite_float)
    add(p, "--grad-clip", "max gradient norm, 0 = off", t.grad_clip, type=finite_float)
    add(p, "--ema-decay", "EMA decay of the weights", t.ema_decay, type=finite_float)
    add(p, "--seed", "random seed (weights, data order, noise)", t.seed, type=int)
    add(p, "--log-every", "steps between log.jsonl lines", t.log_every, type=positive_int)
    add(p, "--checkpoint-every", "steps between checkpoints", t.checkpoint_every, type=positive_int)
    add(p, "--sample-every", "steps between sample grids, 0 = only at the end", t.sample_every, type=nonneg_int)
    add(p, "--preview-sampler", "sampler for those grids", PreviewConfig().sampler, choices=tuple(SAMPLERS),
        metavar="NAME")
    add(p, "--preview-steps", "sampler steps for those grids", PreviewConfig().steps, type=positive_int)
    ev = EvalConfig()
    add(p, "--eval-every", "steps between evaluations of the EMA model (FID, KID, IS, precision/recall of "
        "--eval-n samples drawn like the preview grids, logged to eval.jsonl); 0 = never", ev.every, type=nonneg_int)
    add(p, "--eval-n", "samples per evaluation", ev.n, type=positive_int)
    add(p, "--eval-features", "feature extractor for those metrics (builtin, inception)", ev.features,
        choices=("builtin", "inception"), metavar="KIND")
    add(p, "--inception-weights", "FID Inception-v3 weights for --eval-features inception", metavar="FILE")
    add(p, "--device", "auto, cpu, cuda or cuda:N", t.device)
    add(p, "--precision", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16", t.precision,
        choices=("auto", "fp32", "bf16"))
    add(p, "--out", "run folder to create", "runs/<dataset>")
    add(p, "--resume", "continue the run in this folder from its last checkpoint", metavar="DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# the options of each process: flag name -> config key
PROCESS_OPTIONS = {"ddpm": ("schedule", "T"), "vp": ("beta_min", "beta_max", "t_min"),
                   "ve": ("sigma_min", "sigma_max", "t_min"), "flow": ("t_min", "t_max")}
ALL_PROCESS_OPTIONS = sorted({k for keys in PROCESS_OPTIONS.values() for k in keys})


def process_config(a: argparse.Namespace) -> dict:
    """The process's JSON config from the options that apply to it; others given are an error."""
    name = a.process or RunConfig().process["name"]
    wrong = [k for k in ALL_PROCESS_OPTIONS if getattr(a, k) is not None and k not in PROCESS_OPTIONS[name]]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise DifflabError(f"{flags} does not apply to --process {name}")
    config = dict(RunConfig().process) if name == "ddpm" else {"name": name}
    config.update({k: getattr(a, k) for k in PROCESS_OPTIONS[name] if getattr(a, k) is not None})
    if name == "flow" and "t_max" not in config and a.target in ("eps", "score"):
        config["t_max"] = 0.999        # alpha(1) = 0: an eps prediction at pure noise says nothing of x_0
    return config


def build_config(a: argparse.Namespace) -> RunConfig:
    base = RunConfig()
    process = process_config(a)
    time_sampling = a.time_sampling or ("discrete" if process["name"] == "ddpm" else "continuous")
    return updated(
        base,
        data=updated(DataConfig(), dataset=a.dataset, image_size=a.image_size, channels=a.channels,
                     class_cond=a.class_cond),
        model=a.model, process=process,
        objective=updated(DiffusionObjective(), target=a.target, weighting=a.weighting, coupling=a.coupling,
                          min_snr_gamma=a.min_snr_gamma, time_sampling=time_sampling),
        trainer=updated(TrainerConfig(), **{k: getattr(a, k) for k in TRAINER_FLAGS}),
        preview=updated(PreviewConfig(), sampler=a.preview_sampler, steps=a.preview_steps),
        evaluation=eval_config(EvalConfig(), a),
    )


def eval_config(base: EvalConfig, a: argparse.Namespace) -> EvalConfig:
    return updated(base, **{key: getattr(a, flag) for flag, key in EVAL_FLAGS.items()})


def resumed_config(a: argparse.Namespace) -> RunConfig:
    """The run's saved config with only the options that may change on resume applied."""
    given = [k for k, v in vars(a).items() if v is not None and k not in RESUMABLE and k not in EVAL_FLAGS
             and k not in ("resume", "out", "quiet", "func", "command")]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        can = ", ".join("--" + k.replace("_", "-") for k in (*RESUMABLE, *EVAL_FLAGS))
        raise DifflabError(f"{flags} cannot change when resuming (the run's config.json holds them); only {can} can")
    cfg = RunConfig.load(Path(a.resume))
    return updated(cfg, trainer=updated(cfg.trainer, **{k: getattr(a, k) for k in RESUMABLE}),
                   evaluation=eval_config(cfg.evaluation, a))


def run(a: argparse.Namespace) -> None:
    from difflab.pipelines.train import train

    if a.resume:
        cfg, out, resume = resumed_config(a), Path(a.resume), True
    else:
        cfg = build_config(a)
        out = Path(a.out or f"runs/{Path(cfg.data.dataset).stem or 'data'}")
        resume = False
    res = train(cfg, out, resume=resume, progress=not a.quiet)
    speed = f", {res.img_per_s:.0f} images/s" if res.img_per_s else ""
    loss = f", final loss {res.final_loss:.4f}" if res.final_loss is not None else ""
    print(f"trained {res.steps} steps in {res.seconds:.1f} s{speed}{loss}")
    print(f"run folder: {out}  (samples.png, loss.png, log.jsonl, checkpoints/)")
