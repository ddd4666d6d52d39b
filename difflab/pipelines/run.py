"""A run folder as objects: its resolved config, its data, and its trained network with process and codec.

    RUN/config.json        RunConfig (read through config.migrate, so runs of older versions load)
    RUN/checkpoints/...    weights and trainer state (difflab.training.checkpoint)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from difflab.condition import Condition
from difflab.config import RunConfig, check_sr_scale
from difflab.data import ArrayDataset, load_dataset
from difflab.data.builtin import DIGIT_CLASS_NAMES
from difflab.data.registry import BUILTIN_IMAGES
from difflab.errors import DifflabError
from difflab.io import read_json
from difflab.networks import build_network
from difflab.process import build_process
from difflab.operators import AveragePool, upsample
from difflab.pipelines.model import TASK_MISMATCH, LoadedModel, run_codec
from difflab.text import TextEncoder, digit_captions, read_metadata_captions
from difflab.training import resolve_device
from difflab.training.checkpoint import load_weights, resolve_checkpoint, run_folder


DIGIT_SETS = tuple(BUILTIN_IMAGES)   # the built-in image sets: digits, labelled 0-9, captioned from their labels
# What asking a model without a data set of its own (a diffusers model) for its data is answered with.
WITHOUT_DATA = ("this model comes without a data set (a diffusers model): give difflab restore, invert or edit "
                "--images FILES, and difflab eval --reference DATA")
CAPTION_SEED = 0                    # which phrasing each example's caption gets (text.digit_captions)


def load_run_data(cfg: RunConfig, split: str = "train") -> ArrayDataset:
    """The run's data set (one split), at the size and channels the run was trained on."""
    d = cfg.data
    if not d.dataset:
        raise DifflabError(WITHOUT_DATA)
    return load_dataset(d.dataset, split=split, image_size=d.image_size, channels=d.channels)


def num_classes(cfg: RunConfig) -> int | None:
    """The number of classes a class-conditional run was trained on (or a classifier run tells apart), else None."""
    return cfg.network.get("num_classes") if cfg.data.class_cond or cfg.task == "classifier" else None


def is_conditional(cfg: RunConfig) -> bool:
    """Whether a diffusion run reads a condition (labels or a prompt): what classifier-free guidance needs."""
    return cfg.task == "diffusion" and (cfg.data.class_cond or cfg.data.text_encoder is not None)


def text_encoder(cfg: RunConfig, device: torch.device | str = "cpu") -> TextEncoder:
    """The frozen encoder a text run reads its prompts with."""
    if cfg.data.text_encoder is None:
        raise DifflabError("this run was not trained on text (difflab train --text); it takes no --prompt")
    return TextEncoder.load(cfg.data.text_encoder, device=device)


def data_captions(data: ArrayDataset) -> list[str]:
    """Each example's caption: for the built-in digit sets made from its label in varied phrasings, for an
    image folder read from its metadata.jsonl."""
    if data.name in DIGIT_SETS and data.labels is not None:
        return digit_captions(data.labels, seed=CAPTION_SEED)
    if data.files is not None:                   # an image folder: its name is its path
        return read_metadata_captions(Path(data.name), list(data.files))
    raise DifflabError(f"a text run needs captions: the built-in digit sets ({', '.join(DIGIT_SETS)}) have them, "
                       f"an image folder gets them from metadata.jsonl; {data.name!r} has none")


def low_resolution_condition(y: Tensor, size: int | tuple[int, int]) -> Condition:
    """What a super-resolution (SR3) network reads for a low-resolution measurement y (B, C, h, w): y brought
    back to the images' size (H, W) (an int: square) by bicubic interpolation, Condition(image=(B, C, H, W))."""
    return Condition(image=upsample(y, size))


def sr_conditions(cfg: RunConfig, images: Tensor) -> Condition:
    """The condition of each of ``images`` (N, C, H, W) in a super-resolution run of factor f = cfg.data.sr_scale:
    low_resolution_condition(A x, (H, W)) with A the f x f average pooling (the clean measurement, as SR3 trains)."""
    f, (H, W) = cfg.data.sr_scale, images.shape[-2:]
    check_sr_scale(f, H, W)
    return low_resolution_condition(AveragePool(f)(images), (H, W))


def data_conditions(cfg: RunConfig, data: ArrayDataset, encoder: TextEncoder | None = None) -> Condition | None:
    """What each example is conditioned on (a classifier: what it learns to tell): its label in a
    class-conditional or classifier run, its encoded caption in a text run, its low-resolution version in a
    super-resolution run (with its label, if the run is class-conditional too), else nothing."""
    if cfg.data.text_encoder is not None and cfg.task == "diffusion":
        return (encoder or text_encoder(cfg)).encode(data_captions(data))
    image = None
    if cfg.data.sr_scale is not None:
        if data.kind != "image":
            raise DifflabError(f"--task sr needs images, and {data.name!r} is a set of {data.kind}: use an image "
                               "data set")
        image = sr_conditions(cfg, data.data).image
    if not (cfg.data.class_cond or cfg.task == "classifier"):
        return None if image is None else Condition(image=image)
    if data.labels is None:
        what = "a classifier" if cfg.task == "classifier" else "--class-cond"
        raise DifflabError(f"{what} needs labels, and dataset {data.name!r} has none")
    return Condition(labels=data.labels, image=image)


def condition_classes(cfg: RunConfig) -> int | None:
    """How many classes a conditional run can be asked for: its labels' classes, or the digits of a text run on
    a digit set (prompts naming them); None otherwise."""
    if cfg.data.class_cond:
        return num_classes(cfg)
    if cfg.data.text_encoder is not None and cfg.data.dataset in DIGIT_SETS:
        return len(DIGIT_CLASS_NAMES)
    return None


def class_rows(K: int, n: int) -> Tensor:
    """Labels for a grid with a row per class: max(1, round(n / K)) samples of each of the K classes, in
    class order (so K x that many samples, not exactly n)."""
    return torch.arange(K).repeat_interleave(max(1, round(n / K)))


def label_condition(cfg: RunConfig, labels: Tensor, encoder: TextEncoder | None = None) -> Condition:
    """The condition asking for classes ``labels`` (n,): the labels themselves for a class-conditional run; for
    a text run on a digit set, prompts naming them (the captions' phrasings)."""
    if cfg.data.text_encoder is None:
        return Condition(labels=labels)
    if cfg.data.dataset not in DIGIT_SETS:
        raise DifflabError(f"this text run was trained on {cfg.data.dataset!r}, whose classes have no captions; "
                           "give --prompt")
    return (encoder or text_encoder(cfg)).encode(digit_captions(labels, seed=CAPTION_SEED))


@dataclass(frozen=True)
class Request:
    """What samples are asked for: their condition, the class each is asked for when there is one (to score
    the samples against), and the row length of their picture (a row per class) when it has one."""

    cond: Condition | None
    labels: Tensor | None
    nrow: int | None

    @property
    def n(self) -> int | None:
        return len(self.cond) if self.cond is not None else None


def requested_condition(cfg: RunConfig, n: int, *, label: int | None = None, prompt: str | None = None,
                        classes: int | None = None, encoder: TextEncoder | None = None) -> Request:
    """What n samples of a run are asked for. ``label``: one class for all; ``prompt``: one prompt for all (a
    text run; "" is the null condition); ``classes``: the classes of a classifier that steers the run.
    Without a label or prompt, a run conditioned on classes (or steered by a classifier) draws a row per
    class (class_rows: about n samples)."""
    text = cfg.data.text_encoder is not None
    if prompt is not None:
        if not text:
            raise DifflabError("--prompt needs a text run (difflab train --text); this run reads "
                               + ("class labels: use --class" if cfg.data.class_cond else "no condition"))
        if label is not None:
            raise DifflabError("give --prompt or --class, not both")
        cond = (encoder or text_encoder(cfg)).encode([prompt] * n)
        return Request(cond, None, None)
    K = condition_classes(cfg)
    if classes is not None:
        if K is not None and K != classes:
            raise DifflabError(f"the classifier tells {classes} classes apart and the model {K}: train the classifier "
                               "on the model's data set")
        K = classes
    if K is None:
        if label is not None:
            raise DifflabError("--class needs a class-conditional run (difflab train --class-cond), a text run on a "
                               "digit set, or a --classifier to steer an unconditional run")
        if text:
            raise DifflabError("this text run was trained on captions of its own: give --prompt")
        return Request(None, None, None)
    if label is not None and not 0 <= label < K:
        raise DifflabError(f"--class must lie in [0, {K - 1}] for this {K}-class model, got {label}")
    labels = torch.full((n,), label, dtype=torch.long) if label is not None else class_rows(K, n)
    nrow = None if label is not None else len(labels) // K
    if cfg.data.class_cond or text:
        cond = label_condition(cfg, labels, encoder)
        if classes is not None and cond.labels is None:      # a text run steered by a classifier: it reads both
            cond = Condition(labels=labels, context=cond.context, context_mask=cond.context_mask)
    else:
        cond = Condition(labels=labels)                       # for the classifier; the model reads none
    return Request(cond, labels, nrow)


def preview_request(cfg: RunConfig, n: int, encoder: TextEncoder | None = None,
                    examples: Condition | None = None) -> Request:
    """What the pictures and evaluations drawn while training ask for: a row per class for a run conditioned on
    classes; for a text run on other data the first n ``examples`` (the training captions); for a
    super-resolution run the first n ``examples`` (images' low-resolution versions, with their labels in a
    class-conditional run); else nothing."""
    if cfg.data.sr_scale is not None:
        if examples is None or examples.image is None:
            raise DifflabError("a super-resolution preview restores images: give their low-resolution conditions")
        return Request(examples[:n], examples.labels[:n] if examples.labels is not None else None, None)
    if cfg.data.text_encoder is not None and cfg.data.dataset not in DIGIT_SETS and examples is not None:
        return Request(examples[:n], None, None)
    return requested_condition(cfg, n, encoder=encoder)


def default_condition(cfg: RunConfig, n: int, encoder: TextEncoder | None = None) -> Condition | None:
    """The condition of n samples of a conditional run: its classes cycled 0, 1, ..., K-1 (for a text run on a
    digit set, prompts naming them); None for an unconditional run. A super-resolution run has none: its
    condition is the images to restore (low_resolution_condition)."""
    if cfg.data.sr_scale is not None:
        raise DifflabError("a super-resolution run restores the images its condition holds: pass "
                           "low_resolution_condition(y, size) as cond (as difflab restore does)")
    if not is_conditional(cfg):
        return None
    K = condition_classes(cfg)
    if K is None:
        raise DifflabError("this text run needs a prompt: give --prompt")
    return label_condition(cfg, torch.arange(n) % K, encoder)


# What sampling a super-resolution run from nothing but noise is answered with.
NEEDS_RESTORE = ("{run} is a super-resolution run (difflab train --task sr): it restores low-resolution images rather "
                 "than drawing new ones; use `difflab restore --checkpoint {run} --images held-out`")

def load_model(path: Path | str, ema: bool = True, device: str = "auto", task: str = "diffusion") -> LoadedModel:
    """A run folder (its latest checkpoint) or a step folder -> network with (EMA) weights, in eval mode.
    ``task``: what the run must be (a diffusion model, or a classifier for guidance). A diffusers pipeline or model
    folder is read as a run too (pipelines.diffusers_run)."""
    from difflab.pipelines.diffusers_run import is_diffusers_folder, load_diffusers_model
    if is_diffusers_folder(path):
        return load_diffusers_model(path, device, task)
    ckpt = resolve_checkpoint(path)
    run_dir = run_folder(ckpt)
    cfg = RunConfig.load(run_dir)
    if cfg.task != task:
        raise DifflabError(TASK_MISMATCH[task].format(run=run_dir))
    network = build_network(cfg.network)
    load_weights(network, ckpt / ("ema.safetensors" if ema else "model.safetensors"))
    step = int(read_json(ckpt / "trainer.json").get("step", 0))
    return LoadedModel(cfg, network.to(resolve_device(device)).eval(), build_process(cfg.process),
                       run_codec(cfg, run_dir), ckpt, step, run_dir)


def check_classifier_fits(model: LoadedModel, classifier: LoadedModel) -> None:
    """A one-line error unless ``classifier`` was trained on the model's process and data shape (its gradient
    is taken at the model's x_t and t)."""
    if classifier.config.process != model.config.process:
        raise DifflabError(f"the classifier {classifier.run_dir} was trained on process {classifier.config.process}, "
                           f"the model on {model.config.process}: train the classifier with the model's process "
                           "options (difflab train-classifier --process ...)")
    if classifier.spec != model.spec:
        raise DifflabError(f"the classifier {classifier.run_dir} reads {classifier.spec.kind} {classifier.spec.shape}, "
                           f"the model makes {model.spec.kind} {model.spec.shape}: train the classifier on the "
                           "model's data set and image size")
    if classifier.config.codec.get("sha256") != model.config.codec.get("sha256"):
        raise DifflabError(f"the classifier {classifier.run_dir} and the model read latents of different "
                           "autoencoders: train the classifier with the model's --autoencoder")
