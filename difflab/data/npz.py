"""A NumPy .npz archive as a data set: images (or 2-D points) and optional integer labels.

Accepted data (key "images" or "x", else the archive's only non-label array):
  (N, H, W) gray; (N, C, H, W) or (N, H, W, C) with C in {1, 3} (channels-first wins when both fit);
  (N, 2) points, kept as they are. Image values: uint8 0..255, or float in [0, 1] or in [-1, 1].
Labels (key "labels" or "y", optional): (N,) non-negative integers.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from numpy.lib.npyio import NpzFile

from difflab.data.dataset import CHANNEL_CHOICES, ArrayDataset, pixels_to_unit
from difflab.errors import DifflabError, one_line

DATA_KEYS: tuple[str, ...] = ("images", "x")
LABEL_KEYS: tuple[str, ...] = ("labels", "y")
# A class-conditional network holds one embedding row per class: labels beyond this are not class indices.
MAX_CLASSES = 100_000
# What np.load / NpzFile raise for a damaged, truncated or pickled archive.
READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def load_npz(path: str | Path) -> ArrayDataset:
    """All rows of the archive: data (N, C, H, W) in [-1, 1] or (N, 2) points; labels (N,) int64 or None."""
    path = Path(path).expanduser()
    array, labels = read_arrays(path)
    check_data_shape(path, array)
    data = points_tensor(path, array) if array.ndim == 2 else images_to_unit(path, to_channels_first(path, array))
    label_tensor = None if labels is None else labels_tensor(path, labels, len(array))
    num_classes = None if label_tensor is None else int(label_tensor.max()) + 1
    return ArrayDataset(data=data, labels=label_tensor, num_classes=num_classes, name=str(path))


def read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(data array, labels array or None) read from the archive at ``path``."""
    check_archive(path)
    try:
        # Our own file handle: np.load(path) leaks its handle when the zip directory is unreadable.
        with open(path, "rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, NpzFile):
                raise DifflabError(f"{path}: not an .npz archive; save the arrays with numpy.savez")
            with archive:
                keys = list(archive.files)
                labels_at = label_key(keys)
                data = archive[data_key(path, keys)]
                labels = None if labels_at is None else archive[labels_at]
    except READ_ERRORS as e:
        raise read_error(path, e) from e
    return data, labels


def check_archive(path: Path) -> None:
    """Raise DifflabError unless ``path`` is a file in zip format (what numpy.savez writes)."""
    if not path.is_file():
        raise DifflabError(f"{path}: no such .npz file; check the path")
    if not zipfile.is_zipfile(path):
        raise DifflabError(f"{path}: not an .npz archive (numpy.savez writes a zip archive; this file is not one); "
                           "save the arrays with numpy.savez")


def read_error(path: Path, error: BaseException) -> DifflabError:
    """The one-line error for an archive that cannot be read (one of READ_ERRORS)."""
    return DifflabError(f"{path}: cannot read the .npz archive ({one_line(error)}); re-create it with numpy.savez")


def label_key(keys: list[str]) -> str | None:
    """The key of the labels array ("labels" or "y"), or None."""
    return next((k for k in LABEL_KEYS if k in keys), None)


def data_key(path: Path, keys: list[str]) -> str:
    """The key of the data array: "images" or "x", else the only key that is not a label key."""
    for key in DATA_KEYS:
        if key in keys:
            return key
    others = [k for k in keys if k not in LABEL_KEYS]
    if len(others) != 1:
        raise DifflabError(f"{path}: cannot tell which array holds the data (keys: {', '.join(keys) or 'none'}); "
                           f"store it under 'images' or 'x'")
    return others[0]


def to_channels_first(path: Path, array: np.ndarray) -> np.ndarray:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3} -> (N, C, H, W), laid out contiguously (a
    transposed view would make channels-last tensors, whose convolutions round differently)."""
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and array.shape[1] in CHANNEL_CHOICES:
        return array
    if array.ndim == 4 and array.shape[3] in CHANNEL_CHOICES:
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    raise _shape_error(path, array)


def images_to_unit(path: Path, images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) uint8 0..255 or float in [0, 1] or [-1, 1] -> float32 in [-1, 1]."""
    low, high = (float(images.min()), float(images.max())) if images.dtype.kind == "f" else (0.0, 0.0)
    return scale_to_unit(images, pixel_scale(path, images.dtype, low, high))


def pixel_scale(path: Path, dtype: np.dtype, low: float, high: float) -> float | None:
    """The ``max_value`` of pixels_to_unit for images of ``dtype`` whose values span [low, high] (uint8: 255,
    float in [0, 1]: 1), or None for floats already in [-1, 1]; any other dtype or range is a DifflabError."""
    if dtype == np.uint8:
        return 255.0
    if dtype.kind == "f":
        if 0.0 <= low and high <= 1.0:  # NaN fails both tests
            return 1.0
        if -1.0 <= low and high <= 1.0:
            return None
        found = f"{dtype} values in [{low:g}, {high:g}]"
    else:
        found = f"dtype {dtype}"
    raise DifflabError(f"{path}: images must be uint8 (0..255) or float in [0, 1] or [-1, 1], got {found}; "
                       "rescale the array and save it again")


def scale_to_unit(images: np.ndarray, scale: float | None) -> torch.Tensor:
    """Images -> float32 in [-1, 1]: pixels_to_unit(images, scale), or a float32 copy when scale is None."""
    return torch.from_numpy(np.array(images, dtype=np.float32)) if scale is None else pixels_to_unit(images, scale)


def points_tensor(path: Path, points: np.ndarray) -> torch.Tensor:
    """(N, 2) finite numbers -> (N, 2) float32, values unchanged."""
    if points.shape[1] != 2 or points.dtype.kind not in "fiu":
        raise _shape_error(path, points)
    if not np.isfinite(points).all():
        raise DifflabError(f"{path}: the points contain NaN or infinite values; remove them")
    return torch.from_numpy(np.array(points, dtype=np.float32))


def labels_tensor(path: Path, labels: np.ndarray, n: int) -> torch.Tensor:
    """(N,) non-negative integer labels (any integer dtype, or integral floats) -> (N,) int64."""
    integral = labels.dtype.kind in "biu" or (labels.dtype.kind == "f" and np.isfinite(labels).all()
                                               and bool((labels == np.round(labels)).all()))
    if labels.shape != (n,) or not integral or (n > 0 and labels.min() < 0):
        raise DifflabError(f"{path}: labels must be ({n},) non-negative integers, got {labels.dtype} of shape "
                           f"{labels.shape}; fix the 'labels'/'y' array or leave it out")
    if n > 0 and labels.max() >= MAX_CLASSES:
        raise DifflabError(f"{path}: labels must be class indices below {MAX_CLASSES}, got {labels.max():.0f}; "
                           "number the classes 0, 1, ..., K-1")
    return torch.from_numpy(np.array(labels, dtype=np.int64))


def check_data_shape(path: Path, array: np.ndarray) -> None:
    """Raise DifflabError unless the data array has 2 (points), 3 or 4 (images) dimensions and N >= 1."""
    if array.ndim not in (2, 3, 4) or array.shape[0] == 0:
        raise _shape_error(path, array)


def _shape_error(path: Path, array: np.ndarray) -> DifflabError:
    """The error for a data array of a shape (or, for points, a dtype) that is not accepted."""
    return DifflabError(f"{path}: data array of shape {array.shape} ({array.dtype}) is not accepted; use "
                        "(N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3 for images, (N, 2) numbers for "
                        "points, N >= 1")
