"""Data layer: every source (built-in, 2-D toy, image folder, .npz) becomes an in-memory ArrayDataset."""

from difflab.data.dataset import ArrayDataset
from difflab.data.registry import DATASET_NAMES, load_dataset
from difflab.data.toy2d import TOY_2D_NAMES

__all__ = ["ArrayDataset", "DATASET_NAMES", "TOY_2D_NAMES", "load_dataset"]
