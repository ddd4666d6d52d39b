"""A run's configuration: typed dataclasses, saved as config.json and read back without running code.

:meth:`RunConfig.resolved` is the one place where the rules that fill a run's configuration live: the
network preset and size for the data, every process option written out, the flow path's t_max for targets
that divide by alpha, the time sampling for the process, the image channels a super-resolution run's network
reads. :func:`migrate` reads configs of older versions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from difflab import __version__
from difflab.codecs import build_codec
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError, one_line
from difflab.io import atomic_write_text, fits, read_json, typed_fields
from difflab.networks import AUTO, network_config, resolve_preset
from difflab.networks.autoencoder import DOWNSAMPLE_FACTORS, AutoencoderConfig
from difflab.networks.discriminator import PatchDiscriminatorConfig
from difflab.networks.embeddings import PROCESS_TIME
from difflab.objectives import ALPHA_DIVIDING_TARGETS, DiffusionObjective
from difflab.process import PROCESSES, build_process, process_options
from difflab.process.base import as_time
from difflab.training import TrainerConfig

CONFIG = "config.json"
TASKS = ("diffusion", "classifier")   # a generative model, or a noise-aware classifier p(y | x_t) for guidance
# The probability of training on the null condition when a conditional run does not say (Ho & Salimans 2022
# found 0.1 - 0.2 best).
DEFAULT_COND_DROP = 0.1
# Where a path reaches alpha = 0 (flow at t = 1), eps and score targets cannot recover x_0: their runs stop
# the path here unless --t-max says otherwise.
T_MAX_FOR_ALPHA_DIVIDING_TARGETS = 0.999


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"          # built-in name, image folder or .npz file
    image_size: int | None = None    # resize images to this size (None: native size; folders default to 32)
    channels: int | None = None      # 1 (gray) or 3 (RGB); None: the dataset's own
    class_cond: bool = False         # train a class-conditional model on the dataset's labels
    text_encoder: str | None = None  # train a text-conditional model on captions, read by this frozen encoder
    sr_scale: int | None = None      # super-resolution (SR3): condition on the images average-pooled by this
                                     # factor and upsampled back; None: not a super-resolution run

    def __post_init__(self) -> None:
        if self.class_cond and self.text_encoder is not None:
            raise DifflabError("--class-cond and --text each say what the model is conditioned on: choose one")
        if self.sr_scale is not None:
            if self.sr_scale < 2:
                raise DifflabError(f"--scale is a super-resolution factor of 2 or more, got {self.sr_scale}")
            if self.text_encoder is not None:
                raise DifflabError("--task sr conditions on a low-resolution image, not on captions: drop --text")


@dataclass(frozen=True)
class PreviewConfig:
    """How the sample grids written during training are drawn."""

    sampler: str = "ddim"
    steps: int = 50
    n: int = 64
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    """Metrics logged during training (eval.jsonl), on samples drawn as the preview grids are."""

    every: int = 0                   # steps between evaluations; 0 = never
    n: int = 500                     # samples per evaluation
    features: str = "builtin"        # builtin | inception
    inception_weights: str | None = None
    fid_resamples: int = 10


C = TypeVar("C", bound="RunFolderConfig")


class RunFolderConfig:
    """What a run folder's config.json is to its dataclass: written whole (atomically), read back through the
    subclass's ``from_dict``, which checks every key."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, run_dir: Path) -> None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(run_dir) / CONFIG, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls: type[C], run_dir: Path) -> C:
        path = Path(run_dir) / CONFIG
        return cls.from_dict(read_json(path), str(path))


@dataclass(frozen=True)
class RunConfig(RunFolderConfig):
    data: DataConfig = field(default_factory=DataConfig)
    model: str = AUTO                                      # network preset; auto: the default for the data
    network: dict[str, Any] = field(default_factory=dict)  # the preset resolved for the data (filled at set-up)
    process: dict[str, Any] = field(default_factory=lambda: {"name": "ddpm"})
    objective: DiffusionObjective = field(default_factory=lambda: DiffusionObjective(time_sampling="auto"))
    codec: dict[str, Any] = field(default_factory=lambda: {"name": "identity"})
    spec: DataSpec | None = None                           # what the diffusion models (filled at set-up)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    task: str = "diffusion"                                # one of TASKS
    version: str = __version__

    def resolved(self, data_spec: DataSpec, num_classes: int | None = None,
                 context_dim: int | None = None) -> RunConfig:
        """This config made concrete for data of ``data_spec``. ``num_classes``: the labels' classes of a
        class-conditional run (or the classifier's outputs); ``context_dim``: the width of a text run's
        prompt embeddings."""
        if self.task not in TASKS:
            raise DifflabError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        codec = build_codec(self.codec, data_spec)
        spec = codec.model_spec
        process = build_process(self.process)
        alpha_max = float(process.alpha_sigma(as_time(process.t_max))[0])
        if (self.objective.target in ALPHA_DIVIDING_TARGETS and alpha_max == 0 and "t_max" not in self.process
                and "t_max" in process_options(process.name)):
            process = build_process({**self.process, "t_max": T_MAX_FOR_ALPHA_DIVIDING_TARGETS})
        objective = self.objective.resolved(process)
        sr = self.data.sr_scale
        if sr is not None:
            self._check_super_resolution(spec)
        conditional = self.task == "diffusion" and bool(num_classes or context_dim)   # on something it may drop
        if objective.cond_drop is None:
            objective = replace(objective, cond_drop=DEFAULT_COND_DROP if conditional else 0.0)
        elif objective.cond_drop and not conditional:
            if sr is not None:
                raise DifflabError("--cond-drop does not apply to --task sr alone: the low-resolution image is never "
                                   "dropped; leave it out (or add --class-cond to drop the labels)")
            raise DifflabError("--cond-drop drops the condition of a conditional model: add --class-cond or --text")
        overrides = {"context_dim": context_dim} if context_dim else {}
        if objective.learn_variance:
            if self.task != "diffusion" or spec.kind != "pixels":
                raise DifflabError("--learn-variance learns the reverse steps' variance of a pixel-space diffusion "
                                   "model (its bound's decoder is for 8-bit images): drop it for this run")
            overrides["out_channels"] = 2 * spec.shape[0]     # the target, then v (Nichol & Dhariwal 2021)
        if sr is not None:
            overrides["cond_channels"] = spec.shape[0]      # SR3: the upsampled low-resolution image, as many channels
        network = self.network or network_config(self.model, spec, num_classes, role=ROLES[self.task], **overrides)
        return replace(self, model=resolve_preset(self.model, spec, ROLES[self.task]), network=network, process=process.config(),
                       objective=objective, codec=codec.config(), spec=spec, version=__version__)

    def _check_super_resolution(self, spec: DataSpec) -> None:
        """A one-line error unless a super-resolution run can be trained on data of ``spec``."""
        f = self.data.sr_scale
        if self.task != "diffusion":
            raise DifflabError(f"--task sr trains a diffusion model; a {self.task} run takes no --scale")
        if spec.kind != "pixels":
            raise DifflabError(f"--task sr needs images, and this data is {spec.kind} {spec.shape}: use an image "
                               "data set")
        check_sr_scale(f, *spec.shape[1:])
        if self.evaluation.every:
            raise DifflabError("--eval-every measures unconditional samples, which a super-resolution run does not "
                               "draw: leave it out and score restorations with difflab restore")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> RunConfig:
        """A saved config (of this or an older version, see :func:`migrate`), checked whole: every key present
        and of its type, the process's every option given. Problems are one-line errors naming ``source``."""
        if not isinstance(d, dict):
            raise DifflabError(f"{source} should hold a JSON object")
        if d.get("task") == AUTOENCODER_TASK:
            run = Path(source).parent if Path(source).name == CONFIG else Path(source)
            raise DifflabError(f"{run} is an autoencoder run (difflab train-autoencoder), not a diffusion model: "
                               + AUTOENCODER_RUN_USE.format(run=run))
        values = typed_fields(cls, migrate(d), source)
        for key, section in SECTIONS.items():
            values[key] = section(**typed_fields(section, values[key], f"{source}: {key}"))
        values["spec"] = None if values["spec"] is None else _spec(values["spec"], source)
        _check_process(values["process"], source)
        return cls(**values)



ROLES = {"diffusion": "denoiser", "classifier": "classifier"}   # task -> the network registry's role
SECTIONS = {"data": DataConfig, "objective": DiffusionObjective, "trainer": TrainerConfig, "preview": PreviewConfig,
            "evaluation": EvalConfig}


def _spec(d: dict[str, Any], source: str) -> DataSpec:
    try:
        return DataSpec.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise DifflabError(f"{source}: spec is not a data description ({one_line(e)}); restore the file") from None


def _check_process(process: dict[str, Any], source: str) -> None:
    """Every option of the named process present and of its default's type (a run is sampled as what it was
    trained as, never with a default filled in silently)."""
    name = process.get("name")
    if name not in PROCESSES:
        raise DifflabError(f"{source}: process name {name!r} is not one of {', '.join(PROCESSES)}")
    options = process_options(name)
    missing = [k for k in options if k not in process]
    if missing:
        raise DifflabError(f"{source}: process lacks {', '.join(missing)}; restore the file or retrain")
    for key, default in options.items():
        if not fits(process[key], type(default)):
            raise DifflabError(f"{source}: process.{key} should be {type(default).__name__}, got {process[key]!r}")


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    """A config.json of an older difflab, brought to this version's keys (its meaning unchanged).

    0.1: networks read the process time t (now the log-SNR; ``noise_input`` says which), and the data
    description was implicit in the network config (a U-Net: pixels in [-1, 1]; an MLP: points).
    0.1 and 0.2: no text conditioning (U-Nets without cross-attention), no condition dropout, every run a
    diffusion model.
    0.1 to 0.3: no super-resolution runs (U-Nets read no image channels).
    0.1 to 0.4: no log-normal time sampling, no learned variance.
    0.1 to 0.5: trainers without --compile, --channels-last, --loader, --workers (see :func:`migrate_trainer`)."""
    d = dict(d)
    version = str(d.get("version", "0.1.0"))
    if version.startswith(("0.1.", "0.2.")):
        d.setdefault("task", "diffusion")
        if isinstance(d.get("data"), dict):
            d["data"] = {"text_encoder": None, **d["data"]}
        if isinstance(d.get("objective"), dict):
            d["objective"] = {"cond_drop": 0.0, **d["objective"]}
        if isinstance(d.get("network"), dict):
            d["network"] = {**V02_ADDED_FIELDS.get(d["network"].get("kind"), {}), **d["network"]}
    if version.startswith(("0.1.", "0.2.", "0.3.")):
        if isinstance(d.get("data"), dict):
            d["data"] = {"sr_scale": None, **d["data"]}
        if isinstance(d.get("network"), dict):
            d["network"] = {**V03_ADDED_FIELDS.get(d["network"].get("kind"), {}), **d["network"]}
    if version.startswith(("0.1.", "0.2.", "0.3.", "0.4.")) and isinstance(d.get("objective"), dict):
        d["objective"] = {**V04_ADDED_OBJECTIVE, **d["objective"]}
    d = migrate_trainer(d)
    if version.startswith("0.1."):
        d.setdefault("codec", {"name": "identity"})
        network = dict(d.get("network") or {})
        if network:
            network.setdefault("noise_input", PROCESS_TIME)
            d["network"] = network
        if network and "spec" not in d:
            d["spec"] = V01_SPECS[network["kind"]](network).to_dict()
    return d


def migrate_trainer(d: dict[str, Any]) -> dict[str, Any]:
    """A run config (diffusion, classifier or autoencoder) of 0.1 to 0.5 with the trainer fields 0.6 added, at
    the values those runs trained with (in memory, eager, contiguous)."""
    if str(d.get("version", "0.1.0")).startswith(("0.1.", "0.2.", "0.3.", "0.4.", "0.5.")) and \
            isinstance(d.get("trainer"), dict):
        d = {**d, "trainer": {**V05_ADDED_TRAINER, **d["trainer"]}}
    return d


# The trainer fields 0.6 added, with the values every earlier run had (frozen).
V05_ADDED_TRAINER = {"compile": False, "channels_last": False, "loader": "memory", "workers": 2}
# The network fields 0.3 added, by backbone, with the values a network of 0.1 or 0.2 had (frozen).
V02_ADDED_FIELDS = {"unet": {"context_dim": None, "cross_attention_levels": []}}
# The network fields 0.4 added, by backbone, with the values a network of 0.1 to 0.3 had (frozen).
V03_ADDED_FIELDS = {"unet": {"cond_channels": 0}}
# The objective fields 0.5 added, with the values every earlier run had (frozen).
V04_ADDED_OBJECTIVE = {"lognormal_mean": -1.2, "lognormal_std": 1.2, "learn_variance": False, "vlb_weight": 0.001}
# The data a 0.1 network modelled, read off its config (the backbones of 0.1 and their keys; frozen).
V01_SPECS = {"unet": lambda n: DataSpec.pixels(n["in_channels"], n["image_size"], n["image_size"]),
             "mlp": lambda n: DataSpec.points(n["dim"])}


def check_sr_scale(scale: int, height: int, width: int) -> None:
    """A one-line error unless super-resolution by ``scale`` fits images of height x width (each side a multiple)."""
    if height % scale or width % scale:
        raise DifflabError(f"--scale {scale} does not divide the {height}x{width} images: use --image-size with a "
                           f"multiple of {scale} (e.g. {max(scale, height // scale * scale)}) or another --scale")


def updated(obj: Any, **changes: Any) -> Any:
    """dataclasses.replace, ignoring changes whose value is None (options the user did not give)."""
    return replace(obj, **{k: v for k, v in changes.items() if v is not None})


# --- autoencoder runs (latent diffusion's first stage) ------------------------------------------------------------

AUTOENCODER_TASK = "autoencoder"
AUTOENCODER_RUN_USE = ("use it with `difflab train --autoencoder {run}`, `difflab eval-autoencoder --checkpoint {run}` "
                       "or `difflab autoencode --checkpoint {run}`")
# An autoencoder run's trainer: Adam at a fixed rate trains digits in a few CPU minutes (LDM's 4.5e-6 x batch size
# is for days of GPU training).
AUTOENCODER_TRAINER = TrainerConfig(steps=2000, batch_size=64, lr=5e-4, warmup=100, ema_decay=0.999,
                                    checkpoint_every=500, sample_every=500)
# The patch discriminator of an autoencoder run: pix2pix's, narrower (its n_layers is lowered to fit the images).
AUTOENCODER_DISCRIMINATOR = {"in_channels": 1, "base_channels": 32, "n_layers": 3, "norm": "batch"}
MIN_LOGIT_MAP = 4      # the discriminator keeps at most as many stride-2 layers as leave a 4 x 4 logit map


@dataclass(frozen=True)
class AutoencoderLossConfig:
    """The autoencoder's objective (Esser et al. 2021, VQGAN; Rombach et al. 2022, LDM), per example:

        L = L_rec + kl_weight * KL / (C H W)            (kl)    L_rec: mean |x_hat - x| (l1) or (x_hat - x)^2 (l2)
        L = L_rec + codebook_weight * commitment        (vq)
          + disc_weight * lambda * L_G                  from step disc_start; lambda: VQGAN's adaptive weight (eq. 7),
                                                        or 1 with adaptive_weight off

    LDM weighs the KL against the reconstruction error summed over an image's pixels; L_rec here is their mean, so
    the KL is divided by the pixel count C H W too, and kl_weight means what it means in LDM (1e-6: kl-f4)."""

    reconstruction: str = "l1"          # l1 | l2
    kl_weight: float = 1e-6
    codebook_weight: float = 1.0        # of the commitment loss (the codebook itself is learned by EMA)
    disc_weight: float = 0.5
    disc_start: int | None = None       # None: half the training steps (written out when the run starts)
    adaptive_weight: bool = True

    def __post_init__(self) -> None:
        if self.reconstruction not in ("l1", "l2"):
            raise DifflabError(f"--reconstruction must be l1 or l2, got {self.reconstruction!r}")
        for name in ("kl_weight", "codebook_weight", "disc_weight"):
            value = getattr(self, name)
            if not (value >= 0 and value != float("inf")):
                raise DifflabError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
        if self.disc_start is not None and self.disc_start < 0:
            raise DifflabError(f"--disc-start must be >= 0, got {self.disc_start}")


@dataclass(frozen=True)
class AutoencoderRunConfig(RunFolderConfig):
    """An autoencoder run (RUN/config.json with task "autoencoder"): the images, the autoencoder (its
    AutoencoderConfig as JSON), the patch discriminator (PatchDiscriminatorConfig as JSON; None: no GAN), the loss,
    the trainer, how many held-out images the reconstruction pictures show, and the images' DataSpec."""

    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: dict[str, Any] = field(default_factory=lambda: AutoencoderConfig().to_json())
    discriminator: dict[str, Any] | None = field(default_factory=lambda: dict(AUTOENCODER_DISCRIMINATOR))
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    trainer: TrainerConfig = field(default_factory=lambda: AUTOENCODER_TRAINER)
    preview: int = 16                   # held-out images in reconstructions.png
    spec: DataSpec | None = None        # the images (filled at set-up)
    task: str = AUTOENCODER_TASK
    version: str = __version__

    @property
    def kind(self) -> str:
        """kl or vq."""
        return self.autoencoder_config.kind

    @property
    def autoencoder_config(self) -> AutoencoderConfig:
        return AutoencoderConfig.from_json(self.autoencoder)

    @property
    def discriminator_config(self) -> PatchDiscriminatorConfig | None:
        return None if self.discriminator is None else PatchDiscriminatorConfig.from_json(self.discriminator)

    def resolved(self, data_spec: DataSpec) -> AutoencoderRunConfig:
        """This config made concrete for images of ``data_spec``: the autoencoder and discriminator sized for them
        (the discriminator's n_layers lowered to leave at least a 4 x 4 logit map), disc_start written out."""
        if self.task != AUTOENCODER_TASK:
            raise DifflabError(f"an autoencoder run has task {AUTOENCODER_TASK!r}, not {self.task!r}")
        d = self.data
        if d.class_cond or d.text_encoder is not None or d.sr_scale is not None:
            raise DifflabError("an autoencoder learns the images alone: it takes no labels, captions or --scale")
        if data_spec.kind != "pixels":
            raise DifflabError(f"an autoencoder needs images, and this data is {data_spec.kind} {data_spec.shape}: use "
                               "an image data set")
        C, H, W = data_spec.shape
        ae = self.autoencoder_config
        if H != W:
            raise DifflabError(f"the autoencoder takes square images, got {H}x{W}: give --image-size")
        check_downsample(ae.downsample, H)
        ae = ae.fitted(data_spec)
        disc = self.discriminator_config
        if disc is not None:
            fit = max(1, min(disc.n_layers, math.floor(math.log2(max(H / MIN_LOGIT_MAP, 1)))))
            disc = replace(disc, in_channels=C, n_layers=fit)
        loss = self.loss
        if loss.disc_start is None:
            loss = replace(loss, disc_start=self.trainer.steps // 2)
        return replace(self, autoencoder=ae.to_json(), discriminator=None if disc is None else disc.to_json(),
                       loss=loss, spec=data_spec, version=__version__)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> AutoencoderRunConfig:
        """A saved autoencoder config, checked whole; a diffusion run's config is a one-line error saying so."""
        if not isinstance(d, dict):
            raise DifflabError(f"{source} should hold a JSON object")
        task = d.get("task", "diffusion")
        if task != AUTOENCODER_TASK:
            run = Path(source).parent if Path(source).name == CONFIG else Path(source)
            what = "noise-aware classifier (difflab train-classifier)" if task == "classifier" else f"{task} run"
            raise DifflabError(f"{run} is a {what}, not an autoencoder: give a run of `difflab train-autoencoder`")
        values = typed_fields(cls, migrate_trainer(d), source)
        for key, section in AUTOENCODER_SECTIONS.items():
            values[key] = section(**typed_fields(section, values[key], f"{source}: {key}"))
        values["spec"] = None if values["spec"] is None else _spec(values["spec"], source)
        try:
            AutoencoderConfig.from_json(values["autoencoder"])
            if values["discriminator"] is not None:
                PatchDiscriminatorConfig.from_json(values["discriminator"])
        except DifflabError as e:
            raise DifflabError(f"{source}: {e}") from None
        return cls(**values)



AUTOENCODER_SECTIONS = {"data": DataConfig, "loss": AutoencoderLossConfig, "trainer": TrainerConfig}


def check_downsample(factor: int, size: int) -> None:
    """A one-line error unless an autoencoder downsampling by ``factor`` fits images of ``size`` pixels a side."""
    if size % factor:
        lower, upper = size // factor * factor, (size // factor + 1) * factor
        sizes = f"{lower} or {upper}" if lower else str(upper)
        fits_ = [f for f in DOWNSAMPLE_FACTORS if size % f == 0]
        raise DifflabError(f"--downsample {factor} does not divide the {size}x{size} images: use --image-size {sizes} "
                           f"(a multiple of {factor}) or --downsample {' or '.join(map(str, fits_))}")
