"""A folder of image files (searched recursively) as a data set; first-level subfolders are classes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from difflab.data.dataset import ArrayDataset, check_images_fit, fit_square, pixels_to_unit, split_indices
from difflab.errors import DifflabError, one_line

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
# Hugging Face "imagefolder" metadata (captions and the like, read by other layers): expected, not skipped.
METADATA_FILES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv")
DEFAULT_IMAGE_SIZE = 32
DEFAULT_CHANNELS = 3
PIL_MODES = {1: "L", 3: "RGB"}
MAX_NAMED_SKIPS = 5


def load_folder(root: str | Path, *, split: str = "train", image_size: int | None = None,
                channels: int | None = None) -> ArrayDataset:
    """Images under ``root``: data (N, C, S, S) in [-1, 1], S = image_size (default 32), C = channels (3).

    Files are taken in sorted path order; ``files`` records each row's path relative to ``root``. If every
    image lies under a first-level subfolder, the label is the index of that subfolder's name in sorted
    order; otherwise labels is None. Only the images of ``split`` are decoded.
    """
    listing = list_folder(root, split)
    size, n_channels = image_format(image_size, channels)
    check_images_fit(len(listing.chosen), n_channels, size, size)
    data = torch.stack([read_image(path, size, PIL_MODES[n_channels]) for path in listing.chosen])
    return ArrayDataset(data=data, labels=listing.labels, num_classes=listing.num_classes, name=str(listing.root),
                        class_names=listing.class_names, files=listing.relative_files)


@dataclass(frozen=True, eq=False)
class FolderListing:
    """The images of one split of a folder, before decoding: ``files`` are all images (the split depends on
    their number), ``chosen`` those of the split in row order, ``labels`` (M,) int64 of the chosen ones or None."""

    root: Path
    files: list[Path]
    chosen: list[Path]
    labels: torch.Tensor | None
    class_names: tuple[str, ...] | None

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    @property
    def relative_files(self) -> tuple[str, ...]:
        """Each chosen file relative to ``root``, with "/" separators."""
        return tuple(path.relative_to(self.root).as_posix() for path in self.chosen)


def list_folder(root: str | Path, split: str) -> FolderListing:
    """The images of ``split`` under ``root`` (see load_folder); raises DifflabError for a missing folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DifflabError(f"image folder {root} does not exist or is not a directory; check the path")
    files = find_images(root)
    labels, class_names = folder_labels(root, files)
    index = split_indices(len(files), split, str(root))
    return FolderListing(root=root, files=files, chosen=[files[i] for i in index.tolist()],
                         labels=None if labels is None else labels[index], class_names=class_names)


def image_format(image_size: int | None, channels: int | None) -> tuple[int, int]:
    """(size, channels) with a folder's defaults (32, 3) for the options left unset."""
    return (DEFAULT_IMAGE_SIZE if image_size is None else image_size,
            DEFAULT_CHANNELS if channels is None else channels)


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` in sorted order; hidden entries and metadata files ignored, other files
    skipped with a warning."""
    images, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or relative.name in METADATA_FILES:
            continue
        (images if path.suffix.lower() in IMAGE_SUFFIXES else skipped).append(relative)
    if skipped:
        named = ", ".join(str(p) for p in skipped[:MAX_NAMED_SKIPS])
        more = f" and {len(skipped) - MAX_NAMED_SKIPS} more" if len(skipped) > MAX_NAMED_SKIPS else ""
        warnings.warn(f"skipping {len(skipped)} non-image file(s) in {root}: {named}{more}", stacklevel=3)
    if not images:
        raise DifflabError(f"no images ({'/'.join(IMAGE_SUFFIXES)}) found in {root}; "
                           "point to a folder that holds image files")
    return [root / p for p in images]


def folder_labels(root: Path, files: list[Path]) -> tuple[torch.Tensor | None, tuple[str, ...] | None]:
    """(N,) int64 labels and sorted class names from the first-level subfolders, or (None, None)."""
    tops = [f.relative_to(root).parts for f in files]
    if any(len(parts) < 2 for parts in tops):  # an image directly in root: no class structure
        return None, None
    class_names = tuple(sorted({parts[0] for parts in tops}))
    lookup = {name: i for i, name in enumerate(class_names)}
    return torch.tensor([lookup[parts[0]] for parts in tops], dtype=torch.int64), class_names


def read_image(path: Path, size: int, mode: str) -> torch.Tensor:
    """Decode ``path`` to (C, size, size) float32 in [-1, 1]: shorter side resized, centre-cropped."""
    return pixels_to_unit(read_pixels(path, size, mode), 255.0)


def read_pixels(path: Path, size: int, mode: str) -> np.ndarray:
    """Decode ``path`` to (C, size, size) uint8 (C = 1 for mode "L", 3 for "RGB"): shorter side resized,
    centre-cropped. A file Pillow cannot read is a one-line DifflabError naming it."""
    try:
        with Image.open(path) as image:
            image = widen_to_8bit(ImageOps.exif_transpose(image)).convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DifflabError(f"{path}: not a readable image ({one_line(e)}); remove or fix it") from e
    pixels = np.asarray(fit_square(image, size))  # (S, S) or (S, S, 3) uint8
    return np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))


def widen_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit gray (Pillow modes "I;16*", "I") -> "L", scaling 0..65535 to 0..255; convert() would clip."""
    if not image.mode.startswith("I"):
        return image
    wide = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8))
