"""A diffusers folder read as a difflab run: its UNet2DModel as a network, its scheduler config as a DDPMProcess.

Two layouts are read:

    PIPELINE/model_index.json                    (DDPMPipeline.save_pretrained: DDPMPipeline, DDIMPipeline, ...)
    PIPELINE/unet/config.json, unet/diffusion_pytorch_model.safetensors
    PIPELINE/scheduler/scheduler_config.json

    MODEL/config.json, MODEL/diffusion_pytorch_model.safetensors   (UNet2DModel.save_pretrained)
    MODEL/scheduler_config.json or MODEL/../scheduler/scheduler_config.json

The scheduler's training schedule (num_train_timesteps, beta_schedule linear | scaled_linear | squaredcos_cap_v2,
or trained_betas equal to one of them) becomes difflab's DDPM process with the same alphas_cumprod; its
prediction_type becomes the target (epsilon -> eps, sample -> x0, v_prediction -> v), its variance_type
learned_range difflab's learned variance. Its sampling settings (timestep_spacing, clip_sample, set_alpha_to_one,
variance_type fixed_small/fixed_large, ...) are not the model's: difflab's own sampler options choose them.

Loading never runs code: weights are read from safetensors only, and diffusers (imported here alone, lazily)
builds the UNet from its config.json.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from safetensors import SafetensorError, safe_open

from difflab.config import DataConfig, RunConfig
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError, one_line
from difflab.io import read_json
from difflab.networks.diffusers_unet import DiffusersUNet, DiffusersUNetConfig
from difflab.objectives import DiffusionObjective
from difflab.pipelines.model import TASK_MISMATCH, LoadedModel, run_codec
from difflab.process import DDPMProcess
from difflab.training import resolve_device

MODEL_INDEX, MODEL_CONFIG, SCHEDULER_CONFIG = "model_index.json", "config.json", "scheduler_config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
UNET_CLASS = "UNet2DModel"
NETWORK_KIND = "diffusers-unet2d"          # RunConfig.network["kind"] of a diffusers model (built here, not registered)
NO_DATASET = ""                            # RunConfig.data.dataset of a diffusers model: it comes with no data set
INSTALL = 'reading a diffusers model needs diffusers: pip install "difflab[diffusers]"'
TARGETS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
# diffusers' beta_schedule -> difflab's schedule (their defaults: cosine s = 0.008, max_beta = 0.999 on both sides)
SCHEDULES = {"linear": "linear", "scaled_linear": "scaled-linear", "squaredcos_cap_v2": "cosine"}
# diffusers' defaults of the schedulers that have betas (DDPMScheduler, DDIMScheduler, Euler, DPM-Solver, ...)
BETA_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}
# pipeline parts that make it a latent or text-to-image pipeline, which difflab does not read
LATENT_PARTS = ("vae", "vqvae", "text_encoder", "tokenizer", "transformer")
# how close trained_betas must be to a named schedule to be it (diffusers keeps betas in float32)
TRAINED_BETAS_RTOL = 1e-5
BETA_DIGITS = 6          # significant digits of trained_betas' ends that name a schedule's beta_start and beta_end


def is_diffusers_folder(path: Path | str) -> bool:
    """Whether ``path`` is a diffusers pipeline (model_index.json) or model folder (a config.json diffusers wrote)."""
    path = Path(path)
    if (path / MODEL_INDEX).is_file():
        return True
    try:
        config = json.loads((path / MODEL_CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "_diffusers_version" in config


def load_diffusers_model(path: Path | str, device: str = "auto", task: str = "diffusion") -> LoadedModel:
    """A diffusers folder -> LoadedModel (its UNet in eval mode; step 0). One-line DifflabErrors for what difflab
    cannot read, saying what to do."""
    path = Path(path)
    if task != "diffusion":
        raise DifflabError(TASK_MISMATCH[task].format(run=path))
    unet_dir, scheduler_file = locate_parts(path)
    unet_config = read_part(unet_dir / MODEL_CONFIG)
    process, target, learned = scheduler_process(read_part(scheduler_file), scheduler_file)
    spec, num_classes, out_channels = check_unet_config(unet_config, unet_dir / MODEL_CONFIG, learned)
    cfg = run_config(spec, process, target, learned, num_classes, unet_dir)
    net_config = DiffusersUNetConfig(spec.shape[0], out_channels, num_classes)
    network = DiffusersUNet(load_unet(unet_dir), partial(diffusers_timestep, process), net_config)
    return LoadedModel(cfg, network.to(resolve_device(device)).eval(), process, run_codec(cfg), unet_dir / WEIGHTS,
                       0, path, source="diffusers")


def diffusers_timestep(process: DDPMProcess, log_snr: Tensor) -> Tensor:
    """diffusers' continuous timestep k = T t(lambda) - 1 of log-SNRs (B,) on ``process``'s path (its step
    i = k + 1; networks.diffusers_unet)."""
    return process.time_at_log_snr(log_snr) * process.T - 1


# --- the folder --------------------------------------------------------------------------------------------------

def locate_parts(path: Path) -> tuple[Path, Path]:
    """(the UNet's folder, its scheduler_config.json) of a pipeline or model folder."""
    if (path / MODEL_INDEX).is_file():
        index = read_json(path / MODEL_INDEX)
        name = index.get("_class_name", "a pipeline")
        latent = [p for p in LATENT_PARTS if index.get(p)]
        if latent:
            raise DifflabError(f"{path} is {name} with a {latent[0]}: difflab reads pixel-space pipelines of a "
                               f"{UNET_CLASS} and its scheduler (DDPMPipeline, DDIMPipeline), not latent or text ones")
        unet = index.get("unet")
        if not (isinstance(unet, list) and len(unet) == 2):
            raise DifflabError(f"{path / MODEL_INDEX} names no unet: difflab reads pipelines of a {UNET_CLASS} and "
                               "its scheduler (DDPMPipeline.save_pretrained writes them)")
        if unet[1] != UNET_CLASS:
            raise DifflabError(f"{path}'s unet is a {unet[1]}; difflab reads an unconditional or class-conditional "
                               f"{UNET_CLASS} (a DDPMPipeline's)")
        return path / "unet", path / "scheduler" / SCHEDULER_CONFIG
    for scheduler in (path / SCHEDULER_CONFIG, path / "scheduler" / SCHEDULER_CONFIG,
                      path.parent / "scheduler" / SCHEDULER_CONFIG):
        if scheduler.is_file():
            return path, scheduler
    raise DifflabError(f"{path} holds a diffusers model but no {SCHEDULER_CONFIG} beside it or in ../scheduler: "
                       "difflab needs the training schedule; save the scheduler the model was trained with there "
                       "(e.g. DDPMScheduler(...).save_pretrained(DIR))")


def read_part(path: Path) -> dict[str, Any]:
    """A config the folder must hold, or a one-line error saying how to complete it."""
    if not path.is_file():
        raise DifflabError(f"{path} is missing: the diffusers folder is incomplete; save it again with save_pretrained "
                           "(e.g. DDPMPipeline(unet, scheduler).save_pretrained(DIR))")
    return read_json(path)


def scheduler_process(config: dict[str, Any], source: Path) -> tuple[DDPMProcess, str, bool]:
    """(DDPM process with the scheduler's alphas_cumprod, difflab's target, whether the variance is learned)."""
    name = config.get("_class_name", "the scheduler")
    c = {**BETA_DEFAULTS, **config}
    if "beta_schedule" not in config and "trained_betas" not in config:
        raise DifflabError(f"{source}: {name} has no beta schedule (beta_schedule or trained_betas); difflab reads "
                           "the DDPM-family schedulers (DDPMScheduler, DDIMScheduler, ...)")
    if c.get("rescale_betas_zero_snr"):
        raise DifflabError(f"{source}: rescale_betas_zero_snr makes alphas_cumprod reach 0 (infinite noise), which "
                           "difflab's DDPM process cannot represent")
    T = c["num_train_timesteps"]
    if not (isinstance(T, int) and T >= 2):
        raise DifflabError(f"{source}: num_train_timesteps must be an integer >= 2, got {T!r}")
    if c.get("trained_betas") is not None:
        process = matching_process(c["trained_betas"], T, source)
    elif c["beta_schedule"] in SCHEDULES:
        process = named_process(SCHEDULES[c["beta_schedule"]], T, c["beta_start"], c["beta_end"])
    else:
        raise DifflabError(f"{source}: beta_schedule {c['beta_schedule']!r} has no difflab schedule; difflab reads "
                           f"{', '.join(SCHEDULES)} (or trained_betas equal to one of them)")
    prediction = c.get("prediction_type", "epsilon")
    if prediction not in TARGETS:
        raise DifflabError(f"{source}: prediction_type {prediction!r} is not one difflab reads "
                           f"({', '.join(TARGETS)})")
    variance = c.get("variance_type")
    if variance == "learned":
        raise DifflabError(f"{source}: variance_type 'learned' (the log-variance itself) has no difflab equivalent; "
                           "difflab reads learned_range (Nichol & Dhariwal's interpolation)")
    return process, TARGETS[prediction], variance == "learned_range"


def named_process(schedule: str, T: int, beta_start: float, beta_end: float) -> DDPMProcess:
    """diffusers' schedule as difflab's: its betas are stated for T steps, difflab's linear ones for 1000 (then
    rescaled by 1000/T), so beta_start and beta_end are scaled by T/1000."""
    if schedule == "cosine":
        return DDPMProcess("cosine", T)
    scale = T / 1000
    try:
        return DDPMProcess(schedule, T, beta_start=beta_start * scale, beta_end=beta_end * scale)
    except DifflabError as e:
        raise DifflabError(f"the scheduler's {schedule} schedule (beta_start {beta_start}, beta_end {beta_end}, "
                           f"T = {T}) is not one difflab can run: {e}") from None


def matching_process(trained_betas: Any, T: int, source: Path) -> DDPMProcess:
    """The named schedule whose betas equal ``trained_betas`` (to float32 precision), else a one-line error."""
    try:
        betas = torch.as_tensor(trained_betas, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise DifflabError(f"{source}: trained_betas is not a list of numbers") from None
    if betas.shape != (T,):
        raise DifflabError(f"{source}: trained_betas holds {betas.numel()} values for num_train_timesteps {T}")
    # the ends as written in a config (diffusers' float32 betas carry ~7 digits: 1e-4 is stored as 9.99999974e-05)
    beta_start, beta_end = (float(f"{float(b):.{BETA_DIGITS}g}") for b in (betas[0], betas[-1]))
    for schedule in SCHEDULES.values():
        try:
            process = named_process(schedule, T, beta_start, beta_end)
        except DifflabError:
            continue
        if torch.allclose(process.betas, betas, rtol=TRAINED_BETAS_RTOL, atol=0):
            return process
    raise DifflabError(f"{source}: trained_betas match none of difflab's schedules ({', '.join(SCHEDULES.values())}); "
                       "difflab cannot represent this model's schedule")


def check_unet_config(config: dict[str, Any], source: Path, learned: bool) -> tuple[DataSpec, int | None, int]:
    """(the pixels it models, its classes or None, its output channels), or a one-line error for a UNet difflab
    does not read."""
    name = config.get("_class_name")
    if name != UNET_CLASS:
        raise DifflabError(f"{source} describes a {name}; difflab reads a pixel-space {UNET_CLASS} (a DDPMPipeline's "
                           "unet), not conditional or latent UNets")
    if config.get("time_embedding_type", "positional") != "positional":
        raise DifflabError(f"{source}: time_embedding_type {config['time_embedding_type']!r} reads noise levels, not "
                           "DDPM timesteps (a score-SDE model); difflab reads positional timestep embeddings")
    classes = config.get("num_class_embeds")
    if classes is not None and config.get("class_embed_type") is not None:
        raise DifflabError(f"{source}: class_embed_type {config['class_embed_type']!r} does not embed class indices; "
                           "difflab reads class labels through num_class_embeds alone")
    size, C = config.get("sample_size"), config.get("in_channels", 3)
    out = config.get("out_channels", 3)
    if size is None:
        raise DifflabError(f"{source} has no sample_size: difflab needs the image size the UNet was trained at")
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    if out != (2 * C if learned else C):
        what = "learned_range variance needs 2 x in_channels" if learned else "a fixed variance needs in_channels"
        raise DifflabError(f"{source}: out_channels {out} for in_channels {C} ({what}; a UNet with 2 x in_channels "
                           "outputs needs the scheduler's variance_type learned_range)")
    return DataSpec.pixels(C, H, W), classes, out


def run_config(spec: DataSpec, process: DDPMProcess, target: str, learned: bool, num_classes: int | None,
               unet_dir: Path) -> RunConfig:
    """The RunConfig difflab would have written for this model: pixels of ``spec``, the process and target, labels
    when it reads them (never dropped: a UNet2DModel has no null class), no data set."""
    C, H, W = spec.shape
    data = DataConfig(dataset=NO_DATASET, image_size=H if H == W else None, channels=C,
                      class_cond=num_classes is not None)
    network = {"kind": NETWORK_KIND, "num_classes": num_classes, "source": str(unet_dir)}
    objective = DiffusionObjective(target=target, time_sampling="discrete", learn_variance=learned, cond_drop=0.0)
    return RunConfig(data=data, model=NETWORK_KIND, network=network, process=process.config(),
                     objective=objective).resolved(spec, num_classes)


def load_unet(unet_dir: Path) -> torch.nn.Module:
    """The UNet2DModel of ``unet_dir`` from its safetensors weights (never a pickle)."""
    weights = unet_dir / WEIGHTS
    if not weights.is_file():
        if any(unet_dir.glob("*.bin")):
            raise DifflabError(f"{unet_dir} holds only .bin (pickle) weights, which difflab never loads (a pickle can "
                               "run code): convert them once where you trust the file, e.g. UNet2DModel.from_pretrained"
                               "(DIR).save_pretrained(DIR) writes diffusion_pytorch_model.safetensors")
        raise DifflabError(f"{unet_dir} has no {WEIGHTS}: save the UNet with save_pretrained")
    try:
        with safe_open(str(weights), "pt"):            # the header, checked against the file's size
            pass
    except (SafetensorError, OSError) as e:
        raise DifflabError(f"{weights} is not a readable safetensors file ({one_line(e)}); it may be truncated: "
                           "download or save it again") from None
    try:
        from diffusers.models.unets.unet_2d import UNet2DModel
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        raise DifflabError(INSTALL) from None
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(logging.ERROR)      # its notes on accelerate are not the user's business here
    try:
        return UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True, local_files_only=True,
                                           low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise DifflabError(f"{unet_dir}: the weights do not load into the {UNET_CLASS} of its config.json "
                           f"({one_line(e)[:300]}); save the model again with save_pretrained") from None
    finally:
        diffusers_logging.set_verbosity(level)
