"""Reference feature statistics, computed once per (data, extractor) and cached on disk.

    $DIFFLAB_CACHE/reference_stats/DATASET-SPLIT-EXTRACTOR-KEY/tensors.safetensors  features, mu, sigma
                                                              /meta.json            what KEY was made of

KEY hashes the data set name, the split, the reference images themselves (so an edited image folder is
not mistaken for the old one), the extractor's name and a hash of its weights (so a retrained or different
network gets a new entry).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.metrics.disk_cache import read_entry, write_entry
from difflab.resources import cache_root
from difflab.metrics.features import FeatureExtractor, check_images
from difflab.metrics.fid import feature_statistics

FORMAT = 1  # bump when what is stored changes
MAX_SLUG = 40


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """features (N, D) float32 (for KID, precision/recall, the FID bootstrap); mu (D,), sigma (D, D) float64."""

    features: Tensor
    mu: np.ndarray
    sigma: np.ndarray
    description: str   # e.g. "digits/train"
    key: str
    from_cache: bool


def data_hash(images: Tensor) -> str:
    """SHA-256 (hex) of a float32 image tensor's shape and bytes."""
    x = images.detach().cpu().float().contiguous()
    digest = hashlib.sha256(str(tuple(x.shape)).encode())
    digest.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def reference_images(reference: str | Tensor, split: str) -> tuple[Tensor, str, str]:
    """(images (N, C, H, W), description, slug for the cache folder name) of a data set name or a tensor."""
    if isinstance(reference, Tensor):
        check_images(reference, "the reference set")
        return reference, f"{len(reference)} given images", "images"
    dataset = load_dataset(reference, split=split)
    if dataset.kind != "image":
        raise DifflabError(f"{reference} is a 2-D point set; image metrics need an image data set")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(reference).name or reference)[-MAX_SLUG:]
    return dataset.data, f"{reference}/{split}", f"{slug}-{split}"


def stats_key(description: str, images_sha: str, extractor: FeatureExtractor) -> str:
    """SHA-256 (hex) of everything the statistics depend on."""
    text = json.dumps({"reference": description, "data": images_sha, "extractor": extractor.name,
                       "weights": extractor.fingerprint, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _from_entry(folder: Path, key: str, description: str) -> ReferenceStats | None:
    """The statistics cached in ``folder`` if they are whole and made for ``key``, else None."""
    entry = read_entry(folder)
    if entry is None:
        return None
    tensors, meta = entry
    if meta.get("key") != key or not {"features", "mu", "sigma"} <= set(tensors):
        return None
    features, mu, sigma = tensors["features"], tensors["mu"].numpy(), tensors["sigma"].numpy()
    d = features.shape[1] if features.dim() == 2 else -1
    if mu.shape != (d,) or sigma.shape != (d, d):
        return None
    return ReferenceStats(features, mu, sigma, description, key, from_cache=True)


def reference_stats(extractor: FeatureExtractor, reference: str | Tensor, *, split: str = "train",
                    cache_dir: Path | str | None = None, use_cache: bool = True) -> ReferenceStats:
    """Statistics of the reference images under ``extractor``: from the cache if present, else computed
    (and cached when use_cache). reference: a data set name for load_dataset (with ``split``) or images
    (N, C, H, W) in [-1, 1]."""
    images, description, slug = reference_images(reference, split)
    key = stats_key(description, data_hash(images), extractor)
    folder = cache_root(cache_dir) / "reference_stats" / f"{slug}-{extractor.name}-{key[:16]}"
    if use_cache:
        cached = _from_entry(folder, key, description)
        if cached is not None:
            return cached
    features = extractor.features(images)  # (N, D)
    mu, sigma = feature_statistics(features)
    if use_cache:
        meta = {"key": key, "reference": description, "extractor": extractor.name,
                "weights_sha256": extractor.fingerprint, "n": len(features), "format": FORMAT}
        write_entry(folder, {"features": features, "mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma)},
                    meta)
    return ReferenceStats(features, mu, sigma, description, key, from_cache=False)
