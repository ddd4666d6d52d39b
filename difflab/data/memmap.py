"""Images read from a memory-mapped cache on disk instead of held in memory, and the trainer's source of them.

    images = open_cached("photos/", split="train", image_size=64)      # difflab.data.image_cache
    source = StreamingSource(images, workers=4)                         # a training.batches.BatchSource
    for batch in source.stream(range(start, steps), RankRows(order)):  # (b, C, H, W) float32 in [-1, 1]
        ...
    source.pop_stats()        # {"load_img_per_s": ..., "load_mb_per_s": ..., "load_wait_s": ...}

The cache holds the rows as stored pixels: uint8 (the value k stands for ``pixels_to_unit(k, 255)``) or, where
the in-memory values are not of that form, float32 in [-1, 1]. Either way a batch equals, bit for bit, the rows
of the in-memory data set that ``load_dataset`` gives for the same source and options.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from difflab.data.dataset import ArrayDataset, pixels_to_unit
from difflab.dataspec import DataSpec

# The dtypes a cache stores rows in; uint8 rows are pixel values 0..255, float32 rows are already in [-1, 1].
PIXEL_DTYPES: tuple[str, ...] = ("uint8", "float32")
DEFAULT_PREFETCH = 4                      # batches each loader worker prepares ahead
Indices = Callable[[int], Tensor]         # the trainer's rows of one step (difflab.training.batches.Indices)


@dataclass(frozen=True)
class PixelFile:
    """A raw C-order array file of ``shape`` (N, C, H, W) and ``dtype`` (one of PIXEL_DTYPES)."""

    path: Path
    shape: tuple[int, int, int, int]
    dtype: str

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:])) * np.dtype(self.dtype).itemsize

    def open(self) -> np.memmap:
        """The file as a read-only memory map: pages are read from disk as rows are touched."""
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape)


def rows_to_unit(pixels: np.ndarray, index: np.ndarray) -> Tensor:
    """Rows ``index`` of stored pixels (N, C, H, W) -> float32 (len(index), C, H, W) in [-1, 1], in that order.

    uint8 goes through ``pixels_to_unit(x, 255)``, exactly as the in-memory loaders convert. The rows are read in
    sorted order (sequential for the disk) and put back in the order asked."""
    order = np.argsort(index, kind="stable")
    raw = np.empty((len(index), *pixels.shape[1:]), dtype=pixels.dtype)
    raw[order] = pixels[index[order]]
    return pixels_to_unit(raw, 255.0) if raw.dtype == np.uint8 else torch.from_numpy(raw)


class MemmapImages:
    """An image data set whose pixels stay on disk: the metadata of an ArrayDataset, and ``pixels``, the
    (N, C, H, W) rows as a read-only memory map (see PIXEL_DTYPES). Made by ``image_cache.open_cached``."""

    def __init__(self, pixel_file: PixelFile, labels: Tensor | None, num_classes: int | None, name: str,
                 class_names: tuple[str, ...] | None = None, files: tuple[str, ...] | None = None) -> None:
        self.pixel_file, self.labels, self.num_classes, self.name = pixel_file, labels, num_classes, name
        self.class_names, self.files = class_names, files
        self.pixels = pixel_file.open()

    kind = "image"

    @property
    def example_shape(self) -> tuple[int, int, int]:
        return self.pixel_file.shape[1:]

    @property
    def spec(self) -> DataSpec:
        """The data description: pixels (C, H, W) in [-1, 1]."""
        return DataSpec.pixels(*self.example_shape)

    def __len__(self) -> int:
        return self.pixel_file.shape[0]

    def rows(self, index: Tensor | np.ndarray) -> Tensor:
        """Rows ``index`` as float32 (len(index), C, H, W) in [-1, 1]."""
        return rows_to_unit(self.pixels, np.asarray(index, dtype=np.int64))

    def to_memory(self) -> ArrayDataset:
        """Every row in memory, as the ArrayDataset ``load_dataset`` gives (for small sets and tests)."""
        return ArrayDataset(data=self.rows(np.arange(len(self))), labels=self.labels, num_classes=self.num_classes,
                            name=self.name, class_names=self.class_names, files=self.files)


class StepBatches(Dataset):
    """Item k is the whole batch of step ``steps[k]``: (rows ``indices(steps[k])`` as float32 in [-1, 1], seconds
    this process spent preparing it, bytes it read). Picklable without its memory map, which each loader
    worker opens for itself."""

    def __init__(self, pixel_file: PixelFile, steps: range, indices: Indices) -> None:
        self.pixel_file, self.steps, self.indices = pixel_file, steps, indices
        self._pixels: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, k: int) -> tuple[Tensor, float, int]:
        start = time.perf_counter()
        if self._pixels is None:
            self._pixels = self.pixel_file.open()
        index = self.indices(self.steps[k]).numpy()
        batch = rows_to_unit(self._pixels, index)                   # (b, C, H, W)
        return batch, time.perf_counter() - start, len(index) * self.pixel_file.row_bytes

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}               # never pickle the mapped pixels themselves


class StreamingSource:
    """A BatchSource (difflab.training.batches) that reads each step's rows from a :class:`MemmapImages`.

    A torch DataLoader over :class:`StepBatches` (batch_size=None, no shuffling): ``workers`` processes (0: the
    training process itself) prepare whole batches, each up to ``prefetch`` ahead, in step order. The rows are
    a function of the step alone, so a stream may start at any step (exact resume). The workers live as long
    as one ``stream`` call; batches are pinned when CUDA is present.

    ``pop_stats()`` reports, since its last call:

    - ``load_img_per_s``: images prepared per second of loader time, where loader time is the time spent
      inside the item function (gathering rows from the memory map, page faults on a cold cache included,
      and converting to float32), summed over workers. It is the rate of one worker; with W workers in
      parallel the loader can deliver up to about W times as much. It leaves out pinning and the transfer
      between processes.
    - ``load_mb_per_s``: megabytes (10^6) of stored pixels read per second of the same loader time.
    - ``load_wait_s``: seconds the training loop spent waiting for its next batch: the stall loading caused.
      Near 0 means loading keeps up; if it is large, add workers.
    """

    def __init__(self, images: MemmapImages, workers: int = 2, prefetch: int = DEFAULT_PREFETCH,
                 pin_memory: bool | None = None) -> None:
        if workers < 0 or prefetch < 1:
            raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {workers} and {prefetch}")
        self.images, self.workers, self.prefetch = images, workers, prefetch
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._images = self._bytes = 0
        self._seconds = self._wait = 0.0

    def __len__(self) -> int:
        return len(self.images)

    def stream(self, steps: range, indices: Indices) -> Iterator[Tensor]:
        """The batch of each step in ``steps``, in order: rows ``indices(step)``, float32 (b, C, H, W)."""
        # Its own generator: a DataLoader seeds its workers from torch's global RNG otherwise, and a resumed run,
        # which starts one stream more, would continue with another global RNG state (dropout's) than the original.
        loader = DataLoader(StepBatches(self.images.pixel_file, steps, indices), batch_size=None, shuffle=False,
                            num_workers=self.workers, prefetch_factor=self.prefetch if self.workers else None,
                            pin_memory=self.pin_memory, generator=torch.Generator())
        batches = iter(loader)
        try:
            while True:
                asked = time.perf_counter()
                try:
                    batch, seconds, nbytes = next(batches)
                except StopIteration:
                    return
                self._wait += time.perf_counter() - asked
                self._images += len(batch)
                self._seconds += seconds
                self._bytes += nbytes
                yield batch
        finally:
            del batches                      # stops the workers now, not when the generator is collected

    def pop_stats(self) -> dict[str, float]:
        """Loading figures since the last call (see the class docstring); {} if no batch was loaded."""
        if self._images == 0:
            return {}
        seconds = max(self._seconds, 1e-9)
        stats = {"load_img_per_s": self._images / seconds, "load_mb_per_s": self._bytes / seconds / 1e6,
                 "load_wait_s": self._wait}
        self._images = self._bytes = 0
        self._seconds = self._wait = 0.0
        return stats
