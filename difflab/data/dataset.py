"""The in-memory data set every source returns, and the steps every source shares.

Shared steps, written once: the fixed train/test split (``split_indices``, ``take_split``), pixel values
to [-1, 1] (``pixels_to_unit``), resizing / channel conversion (``fit_square``, ``adapt_images``) and
option checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageOps

from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.resources import check_memory

SPLITS: tuple[str, ...] = ("train", "test", "all")
TEST_FRACTION = 0.1
# The split never depends on the user's seed: a test set must be the same on every machine and run.
SPLIT_SEED = 0
MIN_IMAGE_SIZE = 4
CHANNEL_CHOICES: tuple[int, ...] = (1, 3)
RESAMPLE = Image.Resampling.BICUBIC
# ITU-R 601-2 luma, the weights Pillow uses for RGB -> "L", so every source converts to gray alike.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True, eq=False)  # eq=False: a field-wise __eq__ on tensors would raise, not compare
class ArrayDataset:
    """A whole data set held in memory.

    data: (N, C, H, W) float32 in [-1, 1] for images; (N, 2) float32 for 2-D point sets.
    labels: (N,) int64 in [0, num_classes), or None.
    files: each row's file, relative to the source folder with "/" separators (image folders), or None.
    """

    data: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int | None
    name: str
    class_names: tuple[str, ...] | None = None
    files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.files is not None and len(self.files) != len(self.data):
            raise ValueError(f"files has {len(self.files)} names for {len(self.data)} examples")
        if self.data.dim() not in (2, 4):
            raise ValueError(f"data must be (N, C, H, W) or (N, 2), got shape {tuple(self.data.shape)}")
        if self.labels is not None:
            if self.labels.shape != (len(self.data),) or self.labels.dtype != torch.int64:
                raise ValueError(f"labels must be ({len(self.data)},) int64, got {tuple(self.labels.shape)} "
                                 f"{self.labels.dtype}")
            if self.num_classes is None:
                raise ValueError("num_classes is required when labels are given")

    @property
    def kind(self) -> str:
        """"image" for (N, C, H, W) data, "points" for (N, 2) data."""
        return "image" if self.data.dim() == 4 else "points"

    @property
    def spec(self) -> DataSpec:
        """The data description: pixels (C, H, W) in [-1, 1], or points (D,)."""
        if self.kind == "image":
            return DataSpec.pixels(*self.example_shape)
        return DataSpec.points(self.example_shape[0])

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) or (2,)."""
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return len(self.data)


def check_split(split: str) -> None:
    """Raise DifflabError unless ``split`` is one of SPLITS."""
    if split not in SPLITS:
        raise DifflabError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def num_test(n: int) -> int:
    """Size of the test split of n examples: 10 %, rounded up."""
    return math.ceil(n * TEST_FRACTION)


def split_indices(n: int, split: str, source: str) -> torch.Tensor:
    """Sorted (M,) int64 indices of ``split`` among the n examples of ``source`` (named in errors).

    "train" and "test" partition range(n); raises DifflabError if the split is empty.
    """
    check_split(split)
    if split == "all":
        chosen = np.arange(n)
    else:
        # RandomState, not default_rng: its stream is frozen by NumPy's policy (NEP 19), so the split is too.
        perm = np.random.RandomState(SPLIT_SEED).permutation(n)
        chosen = perm[: num_test(n)] if split == "test" else perm[num_test(n):]
    if len(chosen) == 0:
        raise DifflabError(f"split {split!r} of {source} is empty ({n} examples in all); "
                           "add data or use split='all'")
    return torch.from_numpy(np.sort(chosen)).long()


def take_split(dataset: ArrayDataset, split: str) -> ArrayDataset:
    """The rows of ``dataset`` in ``split`` (see split_indices)."""
    index = split_indices(len(dataset), split, dataset.name)
    labels = None if dataset.labels is None else dataset.labels[index]
    files = None if dataset.files is None else tuple(dataset.files[i] for i in index.tolist())
    return replace(dataset, data=dataset.data[index], labels=labels, files=files)


def pixels_to_unit(pixels: np.ndarray, max_value: float) -> torch.Tensor:
    """Pixel values in [0, max_value] -> float32 tensor in [-1, 1], same shape."""
    x = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / np.float32(max_value))
    return (x * 2 - 1).clamp_(-1, 1)


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side of ``image`` to ``size`` and centre-crop to size x size (any Pillow mode)."""
    return ImageOps.fit(image, (size, size), method=RESAMPLE, centering=(0.5, 0.5))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, C, size, size) in [-1, 1], each channel through ``fit_square``."""
    n, c = images.shape[:2]
    planes = images.reshape(n * c, *images.shape[2:]).numpy()
    out = np.stack([np.asarray(fit_square(Image.fromarray(p), size)) for p in planes])
    # Bicubic overshoots at sharp edges; clamp back into the data range.
    return torch.from_numpy(out).reshape(n, c, size, size).clamp_(-1, 1)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) with C in {1, 3} -> (N, channels, H, W): gray is repeated, RGB is mixed to luma."""
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def adapt_images(dataset: ArrayDataset, image_size: int | None, channels: int | None) -> ArrayDataset:
    """Convert an image data set to ``channels`` and resize to image_size x image_size (None: keep)."""
    n, c, h, w = dataset.data.shape
    check_images_fit(n, channels or c, image_size or h, image_size or w)
    data = dataset.data.float()
    if channels is not None:
        data = convert_channels(data, channels)
    if image_size is not None and tuple(data.shape[2:]) != (image_size, image_size):
        data = resize_images(data.contiguous(), image_size)
    return replace(dataset, data=data)


def check_image_options(image_size: int | None, channels: int | None) -> None:
    """Raise DifflabError unless image_size is None or >= 4 and channels is None, 1 or 3."""
    if image_size is not None and not is_int_at_least(image_size, MIN_IMAGE_SIZE):
        raise DifflabError(f"--image-size (image_size) must be a whole number >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if channels is not None and channels not in CHANNEL_CHOICES:
        raise DifflabError(f"--channels (channels) must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def check_images_fit(n: int, channels: int, height: int, width: int) -> None:
    """Raise DifflabError if n images of that size, held in memory as float32, would not fit the machine."""
    check_memory(4.0 * n * channels * height * width, f"{n} images of {channels} x {height} x {width} in memory",
                 "use a smaller --image-size")


def is_int_at_least(value: object, minimum: int) -> bool:
    """True for a true integer (not a bool) >= minimum."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
