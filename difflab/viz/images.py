"""Image grids: tensors in [-1, 1] to PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from difflab.io import output_error

GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")      # what Pillow writes a grid of images as


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8, rounding (x + 1) * 127.5."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid_array(x: Tensor, nrow: int | None = None, pad: int = 1, scale: int | None = None) -> np.ndarray:
    """Tile (B, C, H, W) images into one (rows*H', cols*W', C) uint8 array with ``pad`` white pixels between.

    ``scale`` enlarges each image by pixel repetition (default: so each cell is at least 32 pixels)."""
    imgs = to_uint8(x)
    B, H, W, C = imgs.shape
    scale = scale or max(1, math.ceil(32 / max(H, W)))
    imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
    H, W = H * scale, W * scale
    cols = nrow or math.ceil(math.sqrt(B))
    rows = math.ceil(B / cols)
    out = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, C), 255, dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, cols)
        out[pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = imgs[i]
    return out


def save_grid(x: Tensor, path: Path | str, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write a grid of (B, C, H, W) images in [-1, 1] as an image file (format from the suffix, GRID_SUFFIXES)."""
    arr = grid_array(x, nrow, scale=scale)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
    except OSError as e:
        raise output_error(path, e) from None
    return path
