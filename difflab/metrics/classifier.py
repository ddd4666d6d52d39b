"""The built-in feature extractor for the built-in digit sets: a small CNN trained by difflab.

One classifier per data set ("digits" 8x8, "mnist5k" 28x28), trained on the data set's train split
with a fixed seed and recipe on first use, then cached:

    $DIFFLAB_CACHE/classifiers/DATASET-KEY/tensors.safetensors   weights
                                          /meta.json             recipe, test accuracy, training time

KEY hashes the recipe, so a changed recipe trains a new classifier. Its features for FID/KID/PR are the
globally pooled last convolution (penultimate layer, like Inception's pool3); its softmax is used for IS.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.data import load_dataset
from difflab.data.dataset import convert_channels, resize_images
from difflab.errors import DifflabError
from difflab.metrics.disk_cache import read_entry, write_entry
from difflab.resources import cache_root
from difflab.metrics.features import DEFAULT_BATCH_SIZE, FeatureExtractor

NUM_CLASSES = 10
BACKGROUND = -1.0  # the value of an empty pixel in [-1, 1] images: padding for shifts
FORMAT = 1         # bump when the architecture or the training loop changes: old caches are not reused


@dataclass(frozen=True)
class ClassifierRecipe:
    """Everything that determines a trained classifier besides the data set."""

    widths: tuple[int, int, int] = (32, 64, 128)  # channels of the three stages; the last is the feature size
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3              # peak AdamW learning rate, cosine-decayed to 0 over training
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    max_shift: int = 1            # random translation by up to this many pixels (augmentation)
    seed: int = 0


RECIPES: dict[str, ClassifierRecipe] = {
    "digits": ClassifierRecipe(epochs=20),
    "mnist5k": ClassifierRecipe(widths=(16, 32, 64), epochs=8, max_shift=2),
}
BUILTIN_DATASETS: tuple[str, ...] = tuple(RECIPES)


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DigitClassifier(nn.Module):
    """x (B, C, H, W) in [-1, 1] -> (features (B, widths[2]), logits (B, 10)).

    Input is converted to gray and resized to image_size (as load_dataset does) when it differs.
    Stages: 2 convs + 2x2 max-pool, 2 convs + 2x2 max-pool, 1 conv + global average pool; then linear.
    """

    def __init__(self, image_size: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_size = image_size
        w0, w1, w2 = widths
        self.body = nn.Sequential(
            conv_bn_relu(1, w0), conv_bn_relu(w0, w0), nn.MaxPool2d(2),     # (B, w0, S/2, S/2)
            conv_bn_relu(w0, w1), conv_bn_relu(w1, w1), nn.MaxPool2d(2),    # (B, w1, S/4, S/4)
            conv_bn_relu(w1, w2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),    # (B, w2)
        )
        self.head = nn.Linear(w2, NUM_CLASSES)

    def preprocess(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1, S, S) in [-1, 1]."""
        x = convert_channels(x.clamp(-1, 1), 1)
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            x = resize_images(x.float().cpu().contiguous(), self.image_size).to(x.device)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(self.preprocess(x))  # (B, D)
        return features, self.head(features)


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image of x (B, C, H, W) by its own random (dy, dx) in [-max_shift, max_shift]^2."""
    if max_shift == 0:
        return x
    s = max_shift
    padded = F.pad(x, (s, s, s, s), value=BACKGROUND)
    dy, dx = torch.randint(0, 2 * s + 1, (2, len(x)), generator=generator)
    h, w = x.shape[2:]
    out = torch.empty_like(x)
    for oy in range(2 * s + 1):
        for ox in range(2 * s + 1):
            chosen = (dy == oy) & (dx == ox)
            out[chosen] = padded[chosen, :, oy:oy + h, ox:ox + w]
    return out


@torch.no_grad()
def accuracy(model: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of images (N, C, H, W) whose arg-max class equals labels (N,)."""
    model.eval()
    predicted = torch.cat([model(batch)[1].argmax(1) for batch in images.split(DEFAULT_BATCH_SIZE)])
    return (predicted == labels).float().mean().item()


def train_classifier(dataset: str, recipe: ClassifierRecipe) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train on ``dataset``'s train split with ``recipe`` on the CPU; returns (model in eval mode, info).

    info holds the recipe, the test-split accuracy, the split sizes and the training time. The global RNG
    is left untouched: initialisation and batches draw from the recipe's seed.
    """
    train, test = load_dataset(dataset, split="train"), load_dataset(dataset, split="test")
    if train.labels is None or test.labels is None or train.num_classes != NUM_CLASSES:
        raise DifflabError(f"the built-in classifier needs a labelled 10-class digit set, not {dataset!r}")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = DigitClassifier(train.data.shape[-1], recipe.widths)
    generator = torch.Generator().manual_seed(recipe.seed)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(train), generator=generator)
        for index in order.split(recipe.batch_size):
            x = random_shift(train.data[index], recipe.max_shift, generator)
            loss = F.cross_entropy(model(x)[1], train.labels[index], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    info = {"kind": "builtin classifier", "dataset": dataset, "recipe": recipe_json(recipe), "format": FORMAT,
            "test_accuracy": accuracy(model, test.data, test.labels), "n_train": len(train),
            "n_test": len(test), "train_seconds": round(seconds, 2), "image_size": int(train.data.shape[-1])}
    return model.eval(), info


def recipe_json(recipe: ClassifierRecipe) -> dict[str, Any]:
    """The recipe as it reads back from JSON (tuples become lists), so fresh and cached info compare equal."""
    return json.loads(json.dumps(asdict(recipe)))


def recipe_key(dataset: str, recipe: ClassifierRecipe) -> str:
    """First 12 hex digits of SHA-256 over the data set name, FORMAT and the recipe."""
    text = json.dumps({"dataset": dataset, "format": FORMAT, "recipe": recipe_json(recipe)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_classifier(folder: Path, dataset: str, recipe: ClassifierRecipe) -> tuple[DigitClassifier, dict] | None:
    """The classifier cached in ``folder``, or None if absent, damaged or made for another data set or recipe."""
    entry = read_entry(folder)
    if entry is None:
        return None
    tensors, info = entry
    made_for = (info.get("dataset"), info.get("recipe"), info.get("format"))
    if made_for != (dataset, recipe_json(recipe), FORMAT) or not isinstance(info.get("image_size"), int):
        return None
    model = DigitClassifier(info["image_size"], recipe.widths)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        return None
    return model.eval(), info


def builtin_classifier(dataset: str, *, cache_dir: Path | str | None = None,
                       progress: bool = False) -> tuple[DigitClassifier, dict[str, Any]]:
    """The classifier of ``dataset`` ("digits" or "mnist5k") and its info: from the cache, else trained
    (seconds to a minute on a CPU) and cached. progress: say on stderr when training."""
    if dataset not in RECIPES:
        raise DifflabError(f"the built-in feature extractor exists for {', '.join(BUILTIN_DATASETS)}, not "
                           f"{dataset!r}; use the Inception features (--features inception) for other data")
    recipe = RECIPES[dataset]
    folder = cache_root(cache_dir) / "classifiers" / f"{dataset}-{recipe_key(dataset, recipe)}"
    cached = load_classifier(folder, dataset, recipe)
    if cached is not None:
        return cached
    if progress:
        print(f"training the built-in {dataset} classifier for the metrics (once; cached in {folder})",
              file=sys.stderr)
    model, info = train_classifier(dataset, recipe)
    if progress:
        print(f"built-in {dataset} classifier: test accuracy {info['test_accuracy']:.4f} "
              f"({info['n_test']} held-out images), trained in {info['train_seconds']:.1f} s", file=sys.stderr)
    write_entry(folder, model.state_dict(), info)
    return model, info


def builtin_extractor(dataset: str, *, cache_dir: Path | str | None = None, device: torch.device | str = "cpu",
                      batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> FeatureExtractor:
    """FeatureExtractor "builtin-DATASET" over the built-in classifier of ``dataset``."""
    model, info = builtin_classifier(dataset, cache_dir=cache_dir, progress=progress)
    return FeatureExtractor(f"builtin-{dataset}", model, batch_size=batch_size, device=device, info=info)
