"""``load_dataset``: a built-in name, an image folder or an .npz path -> ArrayDataset of one split."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from difflab.data.builtin import load_digits, load_mnist5k
from difflab.data.dataset import ArrayDataset, adapt_images, check_image_options, check_split, take_split
from difflab.data.folder import load_folder
from difflab.data.npz import load_npz
from difflab.data.toy2d import TOY_2D_NAMES, load_toy2d
from difflab.errors import DifflabError

BUILTIN_IMAGES: dict[str, Callable[[], ArrayDataset]] = {"digits": load_digits, "mnist5k": load_mnist5k}
DATASET_NAMES: tuple[str, ...] = (*BUILTIN_IMAGES, *TOY_2D_NAMES)


def load_dataset(name: str, *, split: str = "train", image_size: int | None = None,
                 channels: int | None = None, n_points: int = 20000) -> ArrayDataset:
    """Load ``split`` ("train" 90 %, "test" 10 %, "all") of a built-in set, image folder or .npz file.

    Built-in names win over paths of the same name (write "./digits" for a folder called digits).
    image_size / channels resize and convert images (folders default to 32 and 3; other sources keep
    their own); they are an error for 2-D point sets. n_points is the size of a toy set's "train" split.
    """
    check_split(split)
    check_image_options(image_size, channels)
    if name in TOY_2D_NAMES:
        _reject_image_options(name, image_size, channels)
        return load_toy2d(name, split=split, n_points=n_points)
    if name in BUILTIN_IMAGES:
        return adapt_images(take_split(BUILTIN_IMAGES[name](), split), image_size, channels)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_folder(path, split=split, image_size=image_size, channels=channels)
    if path.is_file() and path.suffix.lower() == ".npz":
        dataset = take_split(load_npz(path), split)
        if dataset.kind == "points":
            _reject_image_options(name, image_size, channels)
            return dataset
        return adapt_images(dataset, image_size, channels)
    if path.is_file():
        raise DifflabError(f"data file {name} is not an .npz archive; save arrays with numpy.savez or "
                           "point to an image folder")
    raise DifflabError(f"unknown data set {name!r}: not a built-in ({', '.join(DATASET_NAMES)}) and no such "
                       "folder or .npz file; give a built-in name, an image folder or an .npz path")


def _reject_image_options(name: str, image_size: int | None, channels: int | None) -> None:
    """Raise DifflabError if image options were given for the 2-D point set ``name``."""
    if image_size is not None or channels is not None:
        raise DifflabError(f"{name} is a 2-D point set; image_size and channels apply only to images, "
                           "leave them unset")
