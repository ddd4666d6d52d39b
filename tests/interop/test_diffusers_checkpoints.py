"""diffusers checkpoints read by difflab (pipelines.diffusers_run, networks.diffusers_unet), checked against diffusers.

A tiny seeded random UNet2DModel (8 x 8, one channel) is saved with its scheduler as DDPMPipeline.save_pretrained
writes it, loaded by difflab, and sampled by both from the same noise:
  (a) difflab's ddim (eta 0) against diffusers' DDIMScheduler loop (as DDIMPipeline runs it), timestep_spacing
      trailing and leading, for the eps, x0 and v prediction types;
  (b) one DDPM ancestral step against DDPMScheduler.step with the same noise, variance_type fixed_small, fixed_large
      and learned_range, on the full grid and a respaced one;
  (c) the network adapter against the UNet called at the mapped timestep k = T t - 1;
  (d) what difflab refuses, each as a one-line error;
  (e) the commands: sample (dpmpp-2m and a trajectory), eval with --reference, restore with --images.
Tolerances are a few times the errors measured (stated at each); a one-step shift of the timestep mapping or the
wrong target naming is off by orders of magnitude more.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, cli
from torch import nn

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from difflab.condition import Condition
from difflab.errors import DifflabError
from difflab.metrics import FeatureExtractor
from difflab.parameterization import predict
from difflab.pipelines.bench_samplers import one_thread
from difflab.pipelines.run import check_classifier_fits, load_model
from difflab.pipelines.sample import make_denoiser
from difflab.process import DDPMProcess
from difflab.process.base import as_time
from difflab.samplers import get_sampler, time_grid
from difflab.samplers.ddpm import ancestral_step

T = 1000
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
DDIM_STEPS = 10
# Measured (CPU, float32 samples; max |difflab - diffusers| / max |diffusers| after 10 DDIM steps, trailing | leading):
#   diffusers' loop on difflab's float64 alphas_cumprod: eps 0 | 0, x0 0 | 0 (bit-identical), v 2.3e-7 | 1.5e-7
#   diffusers as shipped (its float32 alphas_cumprod):   eps 3.4e-7 | 2.2e-7, x0 1.5e-6 | 9.0e-6, v 2.7e-7 | 3.1e-7
DDIM_RTOL_SAME_TABLES, DDIM_RTOL = 1e-6, 3e-5
# Measured: max |difflab - diffusers| of one DDPM step from x ~ N(0, I) (k = 999, 500, 1, 0; respaced 900, 500, 0):
#   on difflab's float64 alphas_cumprod: <= 4.8e-7 (every prediction type and variance_type; most exactly 0)
#   diffusers as shipped: <= 1.8e-4, at k = 1, where its float32 beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} loses
#   4 digits to cancellation (its own rounding, not a mapping error: the float64-table row above is exact)
STEP_ATOL_SAME_TABLES, STEP_ATOL = 1e-6, 5e-4


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def tiny_unet(channels: int = 1, out_channels: int | None = None, num_class_embeds: int | None = None) -> UNet2DModel:
    """A seeded random UNet2DModel on 8 x 8 images (45k parameters; its untrained output is O(1))."""
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=out_channels or channels,
                       block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds).eval()


def save_pipeline(folder: Path, unet: UNet2DModel, **scheduler) -> Path:
    DDPMPipeline(unet, DDPMScheduler(**scheduler)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict[str, Path]:
    """One pipeline folder per prediction type (the same UNet), plus learned_range and class-conditional ones."""
    root = tmp_path_factory.mktemp("diffusers")
    out = {p: save_pipeline(root / p, tiny_unet(), prediction_type=p) for p in PREDICTIONS}
    out["learned_range"] = save_pipeline(root / "learned", tiny_unet(out_channels=2), variance_type="learned_range")
    out["classes"] = save_pipeline(root / "classes", tiny_unet(num_class_embeds=3))
    return out


@functools.cache
def loaded(folder: Path):
    """difflab's LoadedModel of a folder, loaded once per module (the tests read it and never change it)."""
    return load_model(folder, device="cpu")


def start_noise(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --- (a) DDIM --------------------------------------------------------------------------------------------------------
def diffusers_ddim(folder: Path, x: torch.Tensor, spacing: str, float64_tables: bool = False) -> torch.Tensor:
    """DDIMPipeline's loop (eta 0, clip_sample off), from x at its first timestep."""
    unet = loaded(folder).network.unet             # the UNet diffusers' from_pretrained built for difflab
    config = DDPMScheduler.load_config(folder / "scheduler")
    scheduler = DDIMScheduler.from_config(config, timestep_spacing=spacing, clip_sample=False)
    if float64_tables:
        scheduler.alphas_cumprod = DDPMProcess().alpha_bar[1:].clone()
    scheduler.set_timesteps(DDIM_STEPS)
    with torch.no_grad():
        for k in scheduler.timesteps:
            x = scheduler.step(unet(x, k).sample, k, x).prev_sample
    return x


def difflab_grid(spacing: str) -> torch.Tensor:
    """difflab's grid with diffusers' timesteps k at t = (k + 1) / T: trailing is the uniform grid from t_min = 1/N
    to 1; leading the uniform grid from 1/T to (T - T/N + 1)/T."""
    process = DDPMProcess()
    if spacing == "trailing":
        return time_grid(process, DDIM_STEPS, "uniform", t_min=1 / DDIM_STEPS)
    return time_grid(process, DDIM_STEPS, "uniform", t_max=(T - T // DDIM_STEPS + 1) / T)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_difflab_grids_are_diffusers_timesteps(spacing):
    scheduler = DDIMScheduler(timestep_spacing=spacing)
    scheduler.set_timesteps(DDIM_STEPS)
    expected = torch.cat([(scheduler.timesteps.double() + 1) / T, torch.zeros(1, dtype=torch.float64)])
    assert torch.equal(difflab_grid(spacing), expected)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_ddim_matches_diffusers(pipelines, prediction, spacing):
    model = loaded(pipelines[prediction])
    assert model.config.objective.target == PREDICTIONS[prediction]
    x = start_noise()
    denoiser = make_denoiser(model.network, model.process, model.config, clip=False)
    with torch.no_grad():
        ours = get_sampler("ddim")(denoiser, x, difflab_grid(spacing)).x
        # the same loop one timestep off (k read as step k or k + 2 instead of k + 1)
        shift = -1 / T if spacing == "trailing" else 1 / T
        off = get_sampler("ddim")(denoiser, x, torch.cat([difflab_grid(spacing)[:-1] + shift,
                                                          torch.zeros(1, dtype=torch.float64)])).x
    for float64_tables, rtol in ((True, DDIM_RTOL_SAME_TABLES), (False, DDIM_RTOL)):
        theirs = diffusers_ddim(pipelines[prediction], x, spacing, float64_tables)
        scale = theirs.abs().max()
        assert float((ours - theirs).abs().max() / scale) < rtol, float64_tables
        assert float((off - theirs).abs().max() / scale) > 100 * DDIM_RTOL


def test_clipped_ddim_matches_diffusers_clip_sample(pipelines):
    """difflab's --clip-x0 (x0 clamped to [-1, 1], eps recomputed from it) is diffusers' clip_sample with
    use_clipped_model_output (DDIMPipeline's default keeps the unclipped eps)."""
    model = loaded(pipelines["epsilon"])
    unet = model.network.unet
    scheduler = DDIMScheduler(timestep_spacing="trailing", clip_sample=True)
    scheduler.set_timesteps(DDIM_STEPS)
    x = theirs = start_noise()
    with torch.no_grad():
        for k in scheduler.timesteps:
            theirs = scheduler.step(unet(theirs, k).sample, k, theirs, use_clipped_model_output=True).prev_sample
        ours = get_sampler("ddim")(make_denoiser(model.network, model.process, model.config, clip=True), x,
                                   difflab_grid("trailing")).x
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < DDIM_RTOL      # measured 4.5e-6


# --- (b) one DDPM step ---------------------------------------------------------------------------------------------
class FixedNoise:
    def __init__(self, z: torch.Tensor) -> None:
        self.z = z

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.z.to(x)


VARIANCES = {"fixed_small": "posterior", "fixed_large": "beta", "learned_range": "learned"}


def ddpm_step_errors(folder: Path, prediction: str, variance_type: str, respaced: bool) -> dict[bool, float]:
    """max |difflab - diffusers| of one DDPM step from each of a few timesteps k (the same x and noise), with
    diffusers' steps on difflab's float64 alphas_cumprod (True) and on its own float32 ones (False)."""
    model = loaded(folder)
    schedulers = {}
    for float64_tables in (True, False):
        scheduler = DDPMScheduler(prediction_type=prediction, variance_type=variance_type, clip_sample=False)
        if float64_tables:                           # step() reads alphas_cumprod alone
            scheduler.alphas_cumprod = model.process.alpha_bar[1:].clone()
        scheduler.set_timesteps(10 if respaced else T)
        schedulers[float64_tables] = scheduler
    denoiser = make_denoiser(model.network, model.process, model.config, clip=False)
    denoiser.target = PREDICTIONS[prediction]        # the learned-variance network read as each prediction type too
    x, errors = start_noise(), {True: 0.0, False: 0.0}
    for k in [900, 500, 0] if respaced else [999, 500, 1, 0]:
        prev = int(schedulers[True].previous_timestep(k))
        t, s = (k + 1) / T, (prev + 1) / T if prev >= 0 else 0.0
        with torch.no_grad():
            out = model.network.unet(x, k).sample
            z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))       # the noise diffusers draws
            pred = denoiser(x, as_time(t))
            ours = pred.x0 if s == 0 else ancestral_step(model.process, x, pred, t, s, FixedNoise(z),
                                                         VARIANCES[variance_type])
            for float64_tables, scheduler in schedulers.items():
                theirs = scheduler.step(out, k, x, generator=torch.Generator().manual_seed(k)).prev_sample
                errors[float64_tables] = max(errors[float64_tables], float((ours - theirs).abs().max()))
    return errors


@pytest.mark.parametrize("variance_type", list(VARIANCES))
@pytest.mark.parametrize("prediction", list(PREDICTIONS))
def test_ddpm_step_matches_diffusers(pipelines, prediction, variance_type):
    folder = pipelines["learned_range" if variance_type == "learned_range" else prediction]
    for respaced in (False, True):
        errors = ddpm_step_errors(folder, prediction, variance_type, respaced)
        assert errors[True] < STEP_ATOL_SAME_TABLES and errors[False] < STEP_ATOL, (respaced, errors)


# --- (c) the adapter -----------------------------------------------------------------------------------------------
def adapter_output(model, x: torch.Tensor, t: float, cond: Condition | None = None) -> torch.Tensor:
    t_ = as_time(t, batch=len(x))
    with torch.no_grad():
        return predict(model.network, x, t_, model.process.coefficients(t_).expand_as(x), model.process, cond,
                       model.config.objective.target)


def test_the_adapter_is_the_unet_at_timestep_T_t_minus_1(pipelines):
    model = loaded(pipelines["epsilon"])
    unet, x = model.network.unet, start_noise()
    with torch.no_grad():
        for k in (0, 1, 250, 998, 999):
            assert torch.equal(adapter_output(model, x, (k + 1) / T), unet(x, k).sample), k   # exact on the grid
        for k in (0.5, 499.25, 998.5):      # between grid points: the continuous timestep (float32 log-SNR: 2e-7)
            diff = (adapter_output(model, x, (k + 1) / T) - unet(x, torch.tensor(k)).sample).abs().max()
            assert float(diff) < 1e-5, (k, float(diff))
        assert float((adapter_output(model, x, 501 / T) - unet(x, 501).sample).abs().max()) > 1e-4   # one step off


def test_class_labels_reach_the_unet_and_guidance_needs_a_null_class(pipelines):
    model = loaded(pipelines["classes"])
    assert model.config.data.class_cond and model.config.network["num_classes"] == 3
    x, labels = start_noise(3), torch.tensor([0, 1, 2])
    with torch.no_grad():
        expected = model.network.unet(x, 499, class_labels=labels).sample
    assert torch.equal(adapter_output(model, x, 500 / T, Condition(labels=labels)), expected)
    with pytest.raises(DifflabError, match="no null class"):
        adapter_output(model, x, 500 / T, Condition(labels=labels).null_like())


# --- schedules -------------------------------------------------------------------------------------------------------
SCHEDULES = [{"beta_schedule": "linear"},
             {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
             {"beta_schedule": "squaredcos_cap_v2"}, {"beta_schedule": "linear", "num_train_timesteps": 500},
             {"beta_schedule": "scaled_linear", "num_train_timesteps": 200}]


@pytest.mark.parametrize("options", SCHEDULES, ids=lambda o: "-".join(map(str, o.values())))
def test_schedules_read_as_difflab_processes_with_diffusers_alphas_cumprod(tmp_path, options):
    from difflab.pipelines.diffusers_run import scheduler_process

    scheduler = DDPMScheduler(**options)
    process, _, _ = scheduler_process(dict(scheduler.config), tmp_path)
    # diffusers' tables are float32 (measured: 2.5e-7 linear, 2.4e-7 scaled-linear, 3.0e-7 cosine)
    assert float((process.alpha_bar[1:] - scheduler.alphas_cumprod.double()).abs().max()) < 1e-6
    trained = DDPMScheduler(trained_betas=scheduler.betas.tolist(),
                            num_train_timesteps=scheduler.config.num_train_timesteps)
    assert scheduler_process(dict(trained.config), tmp_path)[0].config() == process.config()


def test_a_difflab_classifier_on_the_same_schedule_fits(pipelines):
    from difflab.config import RunConfig
    from difflab.pipelines.run import LoadedModel

    model = loaded(pipelines["epsilon"])
    default = RunConfig(task="classifier").resolved(model.spec, num_classes=10)   # --process ddpm, linear, T = 1000
    classifier = LoadedModel(default, nn.Identity(), model.process, model.codec, model.checkpoint, 0, model.run_dir)
    check_classifier_fits(model, classifier)


# --- (d) what is refused -------------------------------------------------------------------------------------------
def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def copy_pipeline(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, **changes) -> None:
    write_json(path, {**json.loads(path.read_text()), **changes})


def broken(case: str, src: Path, root: Path) -> Path:
    """A copy of the pipeline ``src`` broken as ``case`` says."""
    folder = copy_pipeline(src, root / case)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if case == "bin-only":
        weights.rename(weights.with_suffix(".bin"))
    elif case == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif case == "no-scheduler":
        (folder / "scheduler" / "scheduler_config.json").unlink()
        return folder / "unet"                          # a model folder: no scheduler_config.json beside it either
    elif case == "no-unet-config":
        (folder / "unet" / "config.json").unlink()
    elif case == "conditional-unet":
        edit_json(folder / "model_index.json", unet=["diffusers", "UNet2DConditionModel"])
    elif case == "latent":
        edit_json(folder / "model_index.json", _class_name="LDMPipeline", vqvae=["diffusers", "VQModel"])
    elif case == "sigmoid":
        edit_json(folder / "scheduler" / "scheduler_config.json", beta_schedule="sigmoid")
    elif case == "trained-betas":
        edit_json(folder / "scheduler" / "scheduler_config.json", trained_betas=[0.01] * (T - 1) + [0.02])
    elif case == "prediction":
        edit_json(folder / "scheduler" / "scheduler_config.json", prediction_type="flow")
    elif case == "learned":
        edit_json(folder / "scheduler" / "scheduler_config.json", variance_type="learned")
    elif case == "fourier":
        edit_json(folder / "unet" / "config.json", time_embedding_type="fourier")
    elif case == "channels":
        edit_json(folder / "scheduler" / "scheduler_config.json", variance_type="learned_range")
    elif case == "zero-snr":
        edit_json(folder / "scheduler" / "scheduler_config.json", rescale_betas_zero_snr=True)
    return folder


REFUSED = {
    "bin-only": ("only .bin", "convert"), "truncated": ("not a readable safetensors", "truncated"),
    "no-scheduler": ("no scheduler_config.json", "save the scheduler"),
    "no-unet-config": ("unet/config.json is missing", "save_pretrained"), "conditional-unet": ("UNet2DConditionModel",), "latent": ("LDMPipeline", "vqvae"),
    "sigmoid": ("'sigmoid'", "no difflab schedule"), "trained-betas": ("trained_betas match none",),
    "prediction": ("prediction_type 'flow'",), "learned": ("'learned'", "learned_range"),
    "fourier": ("fourier",), "channels": ("out_channels 1", "learned_range"), "zero-snr": ("rescale_betas_zero_snr",),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_difflab_cannot_read_is_a_one_line_error(capsys, pipelines, tmp_path, case):
    folder = broken(case, pipelines["epsilon"], tmp_path)
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(folder), "--n", "1", "--steps", "1",
                     "--out", str(tmp_path / "x.png"), "--quiet")
    assert_one_line_error(rc, err, *REFUSED[case])


def test_missing_diffusers_is_a_one_line_error(capsys, pipelines, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers.models.unets.unet_2d", None)    # import raises ImportError
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(pipelines["epsilon"]), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(rc, err, 'pip install "difflab[diffusers]"')


def test_a_diffusers_model_is_no_classifier_and_brings_no_data(capsys, pipelines, tmp_path):
    folder = str(pipelines["epsilon"])
    rc, _, err = cli(capsys, "sample", "--checkpoint", folder, "--classifier", folder, "--out", str(tmp_path / "x.png"))
    assert_one_line_error(rc, err, "not a classifier")
    rc, _, err = cli(capsys, "eval", "--checkpoint", folder, "--n", "8", "--steps", "1", "--quiet")
    assert_one_line_error(rc, err, "--reference DATA")
    rc, _, err = cli(capsys, "restore", "--checkpoint", folder, "--task", "denoise", "--quiet")
    assert_one_line_error(rc, err, "--images FILES")
    rc, _, err = cli(capsys, "sample", "--checkpoint", folder, "--guidance", "2", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(rc, err, "--guidance needs a conditional run")


# --- (e) the commands ------------------------------------------------------------------------------------------------
def test_the_user_command_samples_a_model_folder(capsys, pipelines, tmp_path):
    """The UNet's own folder (scheduler config in ../scheduler), the sampler of the issue, and a trajectory."""
    out = tmp_path / "hub.png"
    rc, text, err = cli(capsys, "sample", "--checkpoint", str(pipelines["v_prediction"] / "unet"), "--sampler",
                        "dpmpp-2m", "--steps", "5", "--n", "4", "--out", str(out), "--trajectory", "--quiet")
    assert rc == 0, err
    assert "(5 NFE)" in text and out.is_file() and (tmp_path / "hub_trajectory.png").is_file()
    assert "diffusers weights" in text and "EMA" not in text
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(pipelines["v_prediction"]), "--raw", "--quiet")
    assert_one_line_error(rc, err, "--raw", "drop --raw")


class PixelFeatures(nn.Module):
    """A stand-in feature network (the built-in digits classifier trains for minutes on first use)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = x.flatten(1)
        return f, f[:, :10]


def test_eval_and_restore_read_the_images_they_are_given(capsys, pipelines, tmp_path, monkeypatch):
    from PIL import Image

    from difflab.pipelines import evaluate
    monkeypatch.setattr(evaluate, "build_extractor", lambda *a, **k: FeatureExtractor("pixels", PixelFeatures()))
    folder = str(pipelines["epsilon"])
    result = tmp_path / "eval.json"
    rc, _, err = cli(capsys, "eval", "--checkpoint", folder, "--reference", "digits", "--n", "16", "--steps", "2",
                     "--fid-resamples", "2", "--kid-subsets", "2", "--kid-subset-size", "8", "--is-splits", "2",
                     "--json", str(result), "--quiet")
    assert rc == 0, err
    assert math.isfinite(json.loads(result.read_text())["fid"])
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("L", (8, 8), color=40 * i).save(images / f"{i}.png")
    rc, _, err = cli(capsys, "restore", "--checkpoint", folder, "--images", str(images), "--task", "inpaint-box",
                     "--steps", "3", "--out", str(tmp_path / "restored.png"), "--quiet")
    assert rc == 0, err
    assert (tmp_path / "restored.png").is_file()
