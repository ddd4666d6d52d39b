"""An image folder or .npz archive decoded once into a memory-mapped cache on disk: ``open_cached``.

    $DIFFLAB_CACHE (default ~/.cache/difflab)/images/<key>/pixels.bin     raw C-order (N, C, H, W) rows
                                                          /labels.npy     (N,) int64, if the source has labels
                                                          /meta.json      shape, dtype, names (CacheMeta)

The key is a SHA-256 over everything the rows depend on: the resolved source path; for a folder each image's
relative path, size and mtime_ns, for an .npz the archive's size and mtime_ns; image_size, channels, split and
FORMAT_VERSION. A changed, added or removed file therefore makes a new entry (old entries stay until the cache
folder is cleared). An entry is filled under a temporary name and renamed into place (a kill leaves no half
entry under the key); one that does not match its meta.json (wrong size, unreadable JSON, ...) is rebuilt with
a warning, never read. Builders of the same entry on one machine (the ranks of a torchrun job) take turns
through a lock file, so it is decoded once.

Rows equal, bit for bit, what ``load_dataset`` holds in memory for the same source and options:

- folders are decoded by ``read_pixels`` (the uint8 half of ``read_image``), stored uint8;
- .npz images go through the in-memory steps (split, scaling to [-1, 1], ``adapt_images``) a chunk of rows at
  a time and are stored uint8 when every value is exactly ``pixels_to_unit(k, 255)`` (uint8 archives, and
  float archives of k/255 values, kept at their own size and channels), else float32 (a resize or gray
  conversion, or other float values: 4 bytes a value). Save archives at the training size for uint8.

The built-in sets (digits, mnist5k) and 2-D point sets are small and stay in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from difflab.data.dataset import (
    ArrayDataset,
    adapt_images,
    check_image_options,
    check_split,
    pixels_to_unit,
    split_indices,
)
from difflab.data.folder import PIL_MODES, image_format, list_folder, read_pixels
from difflab.data.memmap import PIXEL_DTYPES, MemmapImages, PixelFile
from difflab.data.npz import (
    check_data_shape,
    labels_tensor,
    pixel_scale,
    scale_to_unit,
    to_channels_first,
)
from difflab.data.npz_stream import NpzLayout, npz_layout, read_chunks, read_labels
from difflab.data.registry import BUILTIN_IMAGES
from difflab.data.toy2d import TOY_2D_NAMES
from difflab.errors import DifflabError
from difflab.io import output_error, read_json, staged_folder, typed_fields
from difflab.resources import CACHE_ENV, cache_root, gigabytes

FORMAT_VERSION = 1
CACHE_KIND = "images"
PIXELS, LABELS, META = "pixels.bin", "labels.npy", "meta.json"
CHUNK_BYTES = 64 * 2**20            # float32 bytes of .npz rows converted at a time
POOL_MIN_FILES = 256                # fewer images are decoded in this process: a pool would cost more to start
MAX_DECODE_WORKERS = 8
LOADERS: tuple[str, ...] = ("memory", "memmap", "auto")
AUTO_MEMMAP_BYTES = 2 * 2**30       # "auto" streams a set whose float32 tensor would be larger than this


@dataclass(frozen=True)
class CacheMeta:
    """meta.json of an entry."""

    version: int
    key: str
    name: str                                    # the source as given (ArrayDataset.name)
    shape: tuple[int, ...]                       # (N, C, H, W)
    dtype: str                                   # one of PIXEL_DTYPES
    num_classes: int | None                      # labels.npy exists iff this is set
    class_names: tuple[str, ...] | None
    files: tuple[str, ...] | None


def open_cached(name: str, *, split: str = "train", image_size: int | None = None, channels: int | None = None,
                cache_dir: Path | str | None = None, progress: bool = True,
                decode_workers: int | None = None) -> MemmapImages:
    """``split`` of an image folder or .npz archive (options as in ``load_dataset``) as a memory-mapped cache,
    decoded now if no valid entry exists. decode_workers: processes decoding a folder (None: up to 8 for 256 or
    more images, else 0 = this process). progress: a progress bar while decoding."""
    check_split(split)
    check_image_options(image_size, channels)
    source = _source(name, split, image_size, channels)
    key = hashlib.sha256(json.dumps({"version": FORMAT_VERSION, **source.key_fields()}, sort_keys=True)
                         .encode()).hexdigest()
    folder = cache_root(cache_dir) / CACHE_KIND / key[:24]
    images = read_entry(folder, key)
    if images is not None:
        return images
    with _build_lock(folder):
        images = read_entry(folder, key, warn=False)          # another process may have built it meanwhile
        if images is None:
            try:
                with staged_folder(folder) as tmp:
                    meta = source.build(tmp, key, progress, decode_workers)
                    (tmp / META).write_text(json.dumps(asdict(meta)))
            except OSError as e:
                raise output_error(folder, e) from None
            images = read_entry(folder, key)
    if images is None:
        raise DifflabError(f"the image cache entry {folder} was written but cannot be read back; check the disk "
                           f"or set ${CACHE_ENV} to another folder")
    return images


def resolve_loader(loader: str, name: str, *, split: str = "train", image_size: int | None = None,
                   channels: int | None = None) -> str:
    """"memory" or "memmap" for the ``loader`` option: "auto" streams an image folder or .npz whose float32
    tensor would exceed AUTO_MEMMAP_BYTES and keeps everything else (built-in and point sets too) in memory."""
    if loader not in LOADERS:
        raise DifflabError(f"--loader must be one of {', '.join(LOADERS)}, got {loader!r}")
    if loader != "auto":
        return loader
    if name in BUILTIN_IMAGES or name in TOY_2D_NAMES:
        return "memory"
    path = Path(name).expanduser()
    if path.is_dir():
        size, n_channels = image_format(image_size, channels)
        n = len(list_folder(path, split).chosen)
        shape = (n, n_channels, size, size)
    elif path.is_file() and path.suffix.lower() == ".npz":
        layout = npz_layout(path)
        if len(layout.shape) == 2:
            return "memory"
        shape = NpzSource(path, split, image_size, channels, layout).shape
    else:
        return "memory"                                        # load_dataset gives the error
    return "memmap" if 4 * int(np.prod(shape)) > AUTO_MEMMAP_BYTES else "memory"


def read_entry(folder: Path, key: str, warn: bool = True) -> MemmapImages | None:
    """The entry in ``folder`` if it is whole and made for ``key``; None if absent or damaged (with a warning)."""
    if not folder.is_dir():
        return None
    try:
        meta = CacheMeta(**typed_fields(CacheMeta, read_json(folder / META), str(folder / META)))
        problem = _entry_problem(folder, meta, key)
        labels = None if problem or meta.num_classes is None else _read_entry_labels(folder, meta)
    except (DifflabError, OSError, ValueError) as e:
        problem = str(e)
    if problem:
        if warn:
            warnings.warn(f"rebuilding the damaged image cache entry {folder}: {problem}", stacklevel=3)
        return None
    return MemmapImages(PixelFile(folder / PIXELS, meta.shape, meta.dtype), labels=labels,
                        num_classes=meta.num_classes, name=meta.name, class_names=meta.class_names, files=meta.files)


def _entry_problem(folder: Path, meta: CacheMeta, key: str) -> str | None:
    """What is wrong with an entry whose meta.json reads as ``meta``, or None."""
    if meta.version != FORMAT_VERSION or meta.key != key:
        return f"it is for another key or format (version {meta.version})"
    if meta.dtype not in PIXEL_DTYPES or len(meta.shape) != 4 or min(meta.shape) < 1:
        return f"meta.json describes {meta.dtype} {meta.shape}, not image rows"
    expected = int(np.prod(meta.shape)) * np.dtype(meta.dtype).itemsize
    size = (folder / PIXELS).stat().st_size if (folder / PIXELS).exists() else None
    if size != expected:
        return f"{PIXELS} holds {size} bytes, not the {expected} of {meta.dtype} {meta.shape}"
    if meta.files is not None and len(meta.files) != meta.shape[0]:
        return f"meta.json names {len(meta.files)} files for {meta.shape[0]} rows"
    return None


def _read_entry_labels(folder: Path, meta: CacheMeta) -> torch.Tensor:
    labels = np.load(folder / LABELS, allow_pickle=False)
    if labels.shape != meta.shape[:1] or labels.dtype != np.int64 or labels.min() < 0 or \
            labels.max() >= meta.num_classes:
        raise ValueError(f"{LABELS} holds {labels.dtype} {labels.shape}, not {meta.shape[0]} class indices")
    return torch.from_numpy(labels)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<folder>.lock`` (where fcntl exists) while building ``folder``."""
    try:
        import fcntl
    except ImportError:                                  # not POSIX: concurrent builders each build
        yield
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _source(name: str, split: str, image_size: int | None, channels: int | None) -> FolderSource | NpzSource:
    """What to cache for ``name``: an image folder or an .npz of images; anything else is a DifflabError."""
    if name in BUILTIN_IMAGES or name in TOY_2D_NAMES:
        raise DifflabError(f"{name} is a small built-in set and stays in memory; use --loader memory (the disk "
                           "cache is for image folders and .npz files)")
    path = Path(name).expanduser()
    if path.is_dir():
        return FolderSource(name, split, image_size, channels)
    if path.is_file() and path.suffix.lower() == ".npz":
        return NpzSource(path, split, image_size, channels)
    raise DifflabError(f"{name}: no such image folder or .npz file to cache; give an image folder or an .npz path")


def _new_pixels(tmp: Path, shape: tuple[int, ...], dtype: str) -> np.memmap:
    """A zero-filled (sparse) raw array file tmp/PIXELS, after checking the disk has room for it."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    free = shutil.disk_usage(tmp).free
    if nbytes > free:
        raise DifflabError(f"the image cache needs {gigabytes(nbytes)} but {tmp.parent} has {gigabytes(free)} "
                           f"free; free space or set ${CACHE_ENV} to a larger disk")
    return np.memmap(tmp / PIXELS, dtype=dtype, mode="w+", shape=shape)


def _close_pixels(pixels: np.memmap) -> None:
    """Flush the map and fsync its file, so the rename that publishes the entry publishes the rows."""
    pixels.flush()
    with open(pixels.filename, "rb+") as file:
        os.fsync(file.fileno())


def _write_labels(tmp: Path, labels: torch.Tensor | None) -> None:
    if labels is not None:
        np.save(tmp / LABELS, labels.numpy().astype(np.int64), allow_pickle=False)


def _bar(total: int, name: str, progress: bool) -> tqdm:
    return tqdm(total=total, unit="img", desc=f"caching {name}", disable=not progress, dynamic_ncols=True)


class FolderSource:
    """The images of one split of a folder, at image_size x image_size (default 32) and channels (default 3)."""

    def __init__(self, name: str, split: str, image_size: int | None, channels: int | None) -> None:
        self.name, self.split = name, split
        self.listing = list_folder(name, split)
        self.size, self.channels = image_format(image_size, channels)

    def key_fields(self) -> dict:
        root = self.listing.root
        files = [(path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns)
                 for path, stat in ((p, p.stat()) for p in self.listing.files)]
        return {"kind": "folder", "source": str(root.resolve()), "files": files, "image_size": self.size,
                "channels": self.channels, "split": self.split}

    def build(self, tmp: Path, key: str, progress: bool, decode_workers: int | None) -> CacheMeta:
        chosen = self.listing.chosen
        shape = (len(chosen), self.channels, self.size, self.size)
        pixels = _new_pixels(tmp, shape, "uint8")
        decode = partial(read_pixels, size=self.size, mode=PIL_MODES[self.channels])
        workers = decode_workers if decode_workers is not None else \
            (min(MAX_DECODE_WORKERS, os.cpu_count() or 1) if len(chosen) >= POOL_MIN_FILES else 0)
        with contextlib.ExitStack() as stack, _bar(len(chosen), self.name, progress) as bar:
            if workers > 0:
                pool = stack.enter_context(multiprocessing.Pool(workers))
                decoded = pool.imap(decode, chosen, chunksize=16)
            else:
                decoded = map(decode, chosen)
            for i, row in enumerate(decoded):            # rows go to disk as they come: no set in memory
                pixels[i] = row
                bar.update()
        _close_pixels(pixels)
        _write_labels(tmp, self.listing.labels)
        return CacheMeta(version=FORMAT_VERSION, key=key, name=str(self.listing.root), shape=shape, dtype="uint8",
                         num_classes=self.listing.num_classes, class_names=self.listing.class_names,
                         files=self.listing.relative_files)


class _NotBytes(Exception):
    """A converted chunk holds a value that is not pixels_to_unit(k, 255): store float32 instead."""


class NpzSource:
    """The images of one split of an .npz archive, read CHUNK_BYTES of float32 rows at a time."""

    def __init__(self, path: Path, split: str, image_size: int | None, channels: int | None,
                 layout: NpzLayout | None = None) -> None:
        self.path, self.split, self.image_size, self.channels = path, split, image_size, channels
        self.layout = npz_layout(path) if layout is None else layout
        dummy = np.broadcast_to(np.zeros((), self.layout.dtype), self.layout.shape)   # the shape, no memory
        check_data_shape(path, dummy)
        if dummy.ndim == 2:
            raise DifflabError(f"{path} holds 2-D points, which stay in memory; use --loader memory")
        _, c, h, w = to_channels_first(path, dummy).shape
        self.index = split_indices(self.layout.shape[0], split, str(path))
        self.shape = (len(self.index), channels or c, image_size or h, image_size or w)

    def key_fields(self) -> dict:
        stat = self.path.stat()
        return {"kind": "npz", "source": str(self.path.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "image_size": self.image_size, "channels": self.channels,
                "split": self.split}

    def build(self, tmp: Path, key: str, progress: bool, decode_workers: int | None) -> CacheMeta:
        labels = read_labels(self.layout)
        all_labels = None if labels is None else labels_tensor(self.path, labels, self.layout.shape[0])
        num_classes = None if all_labels is None else int(all_labels.max()) + 1
        scale = self._scale(progress)
        try:
            dtype = self._write(tmp, scale, "uint8", progress)
        except _NotBytes:
            dtype = self._write(tmp, scale, "float32", progress)
        _write_labels(tmp, None if all_labels is None else all_labels[self.index])
        return CacheMeta(version=FORMAT_VERSION, key=key, name=str(self.path), shape=self.shape, dtype=dtype,
                         num_classes=num_classes, class_names=None, files=None)

    def _chunk_rows(self) -> int:
        return max(1, CHUNK_BYTES // (4 * int(np.prod(self.layout.shape[1:]))))

    def _scale(self, progress: bool) -> float | None:
        """pixel_scale of the whole array: for floats, one pass over it for its min and max."""
        low = high = 0.0
        if self.layout.dtype.kind == "f":
            low, high = np.inf, -np.inf
            with _bar(self.layout.shape[0], f"{self.path} (value range)", progress) as bar:
                for _, chunk in read_chunks(self.layout, self._chunk_rows()):
                    low, high = np.minimum(low, chunk.min()), np.maximum(high, chunk.max())   # NaN propagates
                    bar.update(len(chunk))
        return pixel_scale(self.path, self.layout.dtype, float(low), float(high))

    def _write(self, tmp: Path, scale: float | None, dtype: str, progress: bool) -> str:
        """Fill tmp/PIXELS with the split's rows as ``dtype``; raises _NotBytes if uint8 cannot hold them."""
        pixels = _new_pixels(tmp, self.shape, dtype)
        chosen = np.zeros(self.layout.shape[0], dtype=bool)
        chosen[self.index.numpy()] = True
        out = 0
        with _bar(len(self.index), str(self.path), progress) as bar:
            for start, chunk in read_chunks(self.layout, self._chunk_rows()):
                rows = chunk[chosen[start:start + len(chunk)]]
                if len(rows) == 0:
                    continue
                x = scale_to_unit(to_channels_first(self.path, rows), scale)
                x = adapt_images(ArrayDataset(x, None, None, str(self.path)), self.image_size, self.channels).data
                pixels[out:out + len(x)] = x.numpy() if dtype == "float32" else _exact_bytes(x)
                out += len(x)
                bar.update(len(x))
        _close_pixels(pixels)
        return dtype


def _exact_bytes(x: torch.Tensor) -> np.ndarray:
    """uint8 k with pixels_to_unit(k, 255) == x exactly, element for element; raises _NotBytes if there are none."""
    k = ((x + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).numpy()
    if not torch.equal(pixels_to_unit(k, 255.0), x):
        raise _NotBytes
    return k
