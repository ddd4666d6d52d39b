"""Restore and edit images with a trained run: DPS, RePaint and SR3 restorations of measured images, with their
metrics; DDIM inversion and interpolation; SDEdit variations.

The measurements (random masks and measurement noise) depend only on the images and MEASUREMENT_SEED, never on
--seed, so different seeds draw different restorations of the same measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from difflab.condition import Condition
from difflab.data.folder import PIL_MODES, load_folder, read_image
from difflab.denoisers import Denoiser
from difflab.denoisers.dps import DEFAULT_DPS_SCALE, PosteriorSampling
from difflab.errors import DifflabError
from difflab.metrics.fid import fid_from_features
from difflab.metrics.restoration import psnr, ssim
from difflab.pipelines.run import DIGIT_SETS, LoadedModel, default_condition, is_conditional, load_run_data, \
    low_resolution_condition
from difflab.pipelines.sample import check_finite, make_denoiser, resolve_clip
from difflab.restoration import METHODS
from difflab.restoration.inversion import ddim_decode, ddim_invert, sdedit_start, slerp
from difflab.operators import AveragePool, Operator, build_operator
from difflab.rng import PerSampleNoise
from difflab.samplers import check_options, get_sampler, time_grid
from difflab.samplers.repaint import DEFAULT_JUMP, DEFAULT_RESAMPLE, sample_repaint

HELD_OUT = "held-out"
MEASUREMENT_SEED = 0
MIN_FID_IMAGES = 50         # FID of fewer restorations than this is not reported (its covariance is too noisy)


def sr_scale(model: LoadedModel) -> int | None:
    """The factor of an SR3 run (difflab train --task sr), else None."""
    return model.config.data.sr_scale


def input_images(model: LoadedModel, images: Sequence[str], n: int | None = None, option: str = "--images") -> Tensor:
    """The images to restore or edit, (N, C, H, W) in [-1, 1] at the run's size and channels: ``held-out`` (the
    run's data set's test split), or image files and folders (read like a data set, all their images)."""
    spec = model.codec.data_spec
    if spec.kind != "pixels":
        raise DifflabError(f"restoration works on images; this run models {spec.kind}")
    C, H, _ = spec.shape
    if list(images) == [HELD_OUT]:
        x = load_run_data(model.config, split="test").data
    else:
        parts = []
        for name in images:
            path = Path(name).expanduser()
            if name == HELD_OUT:
                raise DifflabError(f"{option} {HELD_OUT} stands alone: give it or files and folders, not both")
            if path.is_dir():
                parts.append(load_folder(path, split="all", image_size=H, channels=C).data)
            elif path.is_file():
                parts.append(read_image(path, H, PIL_MODES[C])[None])
            else:
                raise DifflabError(f"{option} {name}: no such file or folder (give image files, folders or "
                                   f"{HELD_OUT})")
        x = torch.cat(parts)
    return x[:n] if n is not None else x


def measure(operator: Operator, x: Tensor, sigma_y: float) -> Tensor:
    """y = A(x) + sigma_y n, image i's noise from its own generator under MEASUREMENT_SEED."""
    if sigma_y < 0:
        raise DifflabError(f"--noise (the measurement noise's std) must be >= 0, got {sigma_y}")
    clean = operator(x)
    noise = PerSampleNoise.for_items(MEASUREMENT_SEED, 0, len(x)).randn(tuple(clean.shape[1:])) if sigma_y else None
    return operator.measure(x, sigma_y, noise)


def run_operator(model: LoadedModel, task: str | None, n: int, **options: Any) -> Operator:
    """The measurement of ``task`` for n images of the run (an SR3 run: its own factor, the default)."""
    scale = sr_scale(model)
    shape = model.codec.data_spec.shape
    if scale is not None:
        if task not in (None, f"sr{scale}"):
            raise DifflabError(f"this SR3 run restores x{scale} super-resolution (--task sr{scale}), not {task}")
        return AveragePool(scale, f"sr{scale}")
    if task is None:
        raise DifflabError("give --task (what was done to the images: inpaint-box, sr4, ...)")
    return build_operator(task, shape, n, seed=MEASUREMENT_SEED, **options)


@dataclass
class Sampling:
    """How restorations and edits are drawn (as in difflab sample)."""

    sampler: str = "ddim"
    steps: int = 50
    spacing: str = "uniform"
    t_min: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 256
    clip: bool | None = None
    progress: bool = False


@dataclass
class Restored:
    x: Tensor          # (N, C, H, W) restorations
    nfe: int           # network evaluations per image
    seconds: float


class Decoded(Operator):
    """A measurement of decoded latents, A(D(z)): how DPS reads a pixel-space measurement with a latent run
    (Latent DPS; Rombach et al. 2022's decoder, Chung et al. 2023's guidance through it). Not linear."""

    def __init__(self, operator: Operator, decode: Callable[[Tensor], Tensor]) -> None:
        self.operator, self.decode, self.name = operator, decode, operator.name

    def __call__(self, z: Tensor) -> Tensor:
        return self.operator(self.decode(z))


def is_latent_model(model: LoadedModel) -> bool:
    """Whether the run's diffusion runs on an autoencoder's latents."""
    return model.codec.model_spec != model.codec.data_spec


def null_condition(model: LoadedModel, n: int) -> Condition | None:
    """What a restoration conditions a run on: nothing for an unconditional run, the null condition of a
    conditional one (its unconditional branch: restoration asks for no class)."""
    return default_condition(model.config, n).null_like() if is_conditional(model.config) else None


def restore(model: LoadedModel, method: str, operator: Operator, y: Tensor, sigma_y: float, how: Sampling, *,
            scale: float = DEFAULT_DPS_SCALE, rule: str = "paper", jump: int = DEFAULT_JUMP,
            resample: int = DEFAULT_RESAMPLE, device: torch.device | str = "cpu") -> Restored:
    """Restorations of the N measurements y by ``method``: "dps" (any sampler), "repaint" (inpainting; its own
    ancestral steps), "sr3" (an SR3 run; any sampler). Image i draws its noise from its own generator."""
    if method not in METHODS:
        raise DifflabError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if (method == "sr3") != (sr_scale(model) is not None):
        raise DifflabError("--method sr3 needs an SR3 run (difflab train --task sr), and an SR3 run restores by sr3"
                           if method == "sr3" else "this is an SR3 run: it restores with --method sr3 (the default)")
    if method == "repaint" and operator.mask is None:
        raise DifflabError(f"RePaint fills in missing pixels: use an inpainting --task, not {operator.name}")
    if method == "repaint" and is_latent_model(model):
        raise DifflabError("RePaint pastes the known pixels into x_t, and this run's x_t are latents: restore it "
                           "with --method dps (guided through the decoder)")
    if method != "repaint":
        check_options(how.sampler, how.options)
    process, spec = model.process, model.spec
    ts = time_grid(process, how.steps, how.spacing, how.t_min)
    clip = resolve_clip(how.clip, spec, how.sampler)
    N, out, nfe, t0 = len(y), [], 0, time.perf_counter()
    cond = null_condition(model, N)
    batches = range(0, N, how.batch_size)
    for start in tqdm(batches, disable=not how.progress or len(batches) < 2, desc=f"restoring {N} with {method}"):
        rows = slice(start, min(N, start + how.batch_size))
        noise = PerSampleNoise.for_items(how.seed, rows.start, rows.stop, device)
        x = noise.randn(spec.shape) * process.prior_std()
        y_b = y[rows].to(device)
        c = None if cond is None else cond[rows].to(device)
        op = operator.rows(rows)
        if method == "sr3":
            image = low_resolution_condition(y_b, tuple(spec.shape[-2:]))
            c = image if c is None else Condition(labels=c.labels, context=c.context, context_mask=c.context_mask,
                                                  image=image.image)
            denoiser = make_denoiser(model.network, process, model.config, clip)
        elif method == "dps":
            if is_latent_model(model):
                op = Decoded(op, model.codec.decode)
            denoiser = make_denoiser(model.network, process, model.config, clip,
                                     wrap=lambda d, op=op, y_b=y_b: PosteriorSampling(d, op, y_b, sigma_y, scale, rule))
        else:
            denoiser = make_denoiser(model.network, process, model.config, clip=False)
        with torch.no_grad():
            if method == "repaint":
                res = sample_repaint(denoiser, x, ts, noise=noise, cond=c, known=y_b, mask=op.mask, jump=jump,
                                     resample=resample)
            else:
                res = get_sampler(how.sampler)(denoiser, x, ts, noise=noise, cond=c, **how.options)
            out.append(model.codec.decode(res.x).cpu())
        nfe = max(nfe, res.nfe)
    x = torch.cat(out).to(torch.float32)
    check_finite(x, f"{method} restorations ({how.sampler}, {how.steps} steps)")
    return Restored(x, nfe, time.perf_counter() - t0)


def restoration_metrics(x: Tensor, truth: Tensor, y: Tensor, operator: Operator,
                        features: Callable[[Tensor], Tensor] | None = None) -> dict[str, Any]:
    """Mean PSNR (dB), SSIM and measurement residual ||y - A(x)|| of restorations x (N, C, H, W) against the
    ground truth; FID between the restored and the true set on ``features`` when there are MIN_FID_IMAGES."""
    result = {"n": len(x), "psnr": float(psnr(x, truth).clamp_max(100).mean()), "ssim": float(ssim(x, truth).mean()),
              "residual": float(operator.residual(y, x).mean())}
    if features is not None and len(x) >= MIN_FID_IMAGES:
        result["fid"] = fid_from_features(features(x), features(truth))
    return result


def feature_network(model: LoadedModel, device: torch.device | str = "cpu") -> Callable[[Tensor], Tensor] | None:
    """The built-in features of the run's data set (for restoration FID), or None where there are none."""
    if model.config.data.dataset not in DIGIT_SETS:
        return None
    from difflab.pipelines.evaluate import run_extractor
    return run_extractor(model.config, "builtin", device=device).features


def measurement_picture(operator: Operator, y: Tensor, image_shape: tuple[int, ...]) -> Tensor:
    """A measurement shown as images (N, C, H, W): a low-resolution one enlarged by pixel repetition; an
    inpainting one as it is, its missing pixels 0 (mid-gray, apart from the black and white of digits)."""
    if y.shape[-2:] != tuple(image_shape[-2:]):
        return torch.nn.functional.interpolate(y, size=tuple(image_shape[-2:]), mode="nearest")
    return y


# --- editing ---------------------------------------------------------------------------------------------------

def editing_condition(model: LoadedModel, n: int) -> Condition | None:
    """The (null) condition of n images an edit draws; an SR3 run, which needs a low-resolution image, is refused."""
    if sr_scale(model) is not None:
        raise DifflabError("an SR3 run needs a low-resolution image to sample from: use difflab restore")
    return null_condition(model, n)


def deterministic_denoiser(model: LoadedModel, n: int) -> tuple[Denoiser, Condition | None]:
    """The run's denoiser for inversion and decoding (no clipping: it would break the ODE's invertibility) and
    the (null) condition of n images."""
    cond = editing_condition(model, n)
    return make_denoiser(model.network, model.process, model.config, clip=False), cond


@torch.no_grad()
def invert(model: LoadedModel, x: Tensor, steps: int, spacing: str = "uniform",
           device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, int]:
    """DDIM inversion of images x (N, C, H, W) on a grid of ``steps``: (noise z, the reconstruction decoded from
    z, NFE of the inversion)."""
    denoiser, cond = deterministic_denoiser(model, len(x))
    ts = time_grid(model.process, steps, spacing)
    x = model.codec.encode(x.to(device))       # a latent run inverts the images' latents
    z, nfe = ddim_invert(denoiser, x, ts, cond)
    return z.cpu(), model.codec.decode(ddim_decode(denoiser, z, ts, cond)).cpu(), nfe


@torch.no_grad()
def interpolate(model: LoadedModel, z_a: Tensor, z_b: Tensor, frames: int, steps: int, spacing: str = "uniform",
                device: torch.device | str = "cpu") -> Tensor:
    """``frames`` images (frames, C, H, W) decoded from the spherical interpolation of two inverted noises."""
    denoiser, cond = deterministic_denoiser(model, frames)
    z = slerp(z_a.to(device), z_b.to(device), torch.linspace(0, 1, frames))
    return model.codec.decode(ddim_decode(denoiser, z, time_grid(model.process, steps, spacing), cond)).cpu()


def edit(model: LoadedModel, x: Tensor, strength: float, n: int, how: Sampling,
         device: torch.device | str = "cpu") -> Restored:
    """SDEdit: n variations of one image x (C, H, W): noised to t0 = ``strength`` (each variation its own noise)
    and sampled back to t = 0 with ``how``'s sampler on a grid of ``how.steps`` times from t0."""
    process = model.process
    if not process.t_min < strength <= process.t_max:
        raise DifflabError(f"--strength must lie in ({process.t_min:g}, {process.t_max:g}], got {strength}")
    check_options(how.sampler, how.options)
    cond = editing_condition(model, n)
    denoiser = make_denoiser(model.network, process, model.config, resolve_clip(how.clip, model.spec, how.sampler))
    ts = time_grid(process, how.steps, how.spacing, how.t_min, t_max=strength)
    t0, out, nfe = time.perf_counter(), [], 0
    with torch.no_grad():
        x = model.codec.encode(x[None].to(device))[0]     # a latent run edits the image's latent
    for start in range(0, n, how.batch_size):
        rows = slice(start, min(n, start + how.batch_size))
        noise = PerSampleNoise.for_items(how.seed, rows.start, rows.stop, device)
        x_t0 = sdedit_start(denoiser, x[None].expand(rows.stop - rows.start, *x.shape).to(device), ts,
                            noise.randn(tuple(x.shape)))
        with torch.no_grad():
            res = get_sampler(how.sampler)(denoiser, x_t0, ts, noise=noise, cond=None if cond is None else cond[rows],
                                           **how.options)
            out.append(model.codec.decode(res.x).cpu())
        nfe = max(nfe, res.nfe)
    edited = torch.cat(out)
    check_finite(edited, f"SDEdit variations ({how.sampler}, {how.steps} steps)")
    return Restored(edited, nfe, time.perf_counter() - t0)


__all__ = ["HELD_OUT", "Restored", "Sampling", "edit", "input_images", "interpolate", "invert", "measure",
           "restoration_metrics", "restore", "run_operator"]
