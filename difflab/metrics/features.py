"""The feature-extractor interface every metric reads from.

A *feature network* is an ``nn.Module`` whose forward maps images (B, C, H, W) in [-1, 1] to
``(features (B, D), logits (B, K))``, doing its own preprocessing (channels, size). ``FeatureExtractor``
wraps one: it runs it in batches without gradients, on a chosen device, and names it, so that the
metrics (features for FID/KID/precision/recall, class probabilities for IS) and the reference-statistics
cache (keyed by ``name`` and ``fingerprint``) never see the network itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from difflab.io import tensors_sha256
from difflab.errors import DifflabError

DEFAULT_BATCH_SIZE = 200


@dataclass(frozen=True, eq=False)
class Extracted:
    """features (N, D) float32 and probabilities (N, K) float32 (rows sum to 1), on the CPU."""

    features: Tensor
    probabilities: Tensor


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 (hex) over the names, dtypes, shapes and bytes of ``module``'s state dict."""
    return tensors_sha256(module.state_dict())


@dataclass(eq=False)
class FeatureExtractor:
    """A named feature network run in batches.

    name: identifies the extractor in reports and cache keys (e.g. "builtin-digits", "inception-v3-fid").
    info: what a report states about it (e.g. the built-in classifier's test accuracy), JSON-serialisable.
    """

    name: str
    network: nn.Module
    batch_size: int = DEFAULT_BATCH_SIZE
    device: torch.device | str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DifflabError(f"feature batch size must be >= 1, got {self.batch_size}")
        self.network = self.network.to(self.device).eval().requires_grad_(False)

    @property
    def fingerprint(self) -> str:
        """Hash of the network's weights (computed once: the weights must not change afterwards)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.network)
        return self._fingerprint

    @torch.no_grad()
    def extract(self, images: Tensor) -> Extracted:
        """images (N, C, H, W), C in {1, 3}, values in [-1, 1] -> features (N, D), probabilities (N, K)."""
        check_images(images, self.name)
        features, probabilities = [], []
        for batch in images.split(self.batch_size):
            f, logits = self.network(batch.to(self.device, torch.float32))  # (B, D), (B, K)
            features.append(f.float().cpu())
            probabilities.append(torch.softmax(logits.double(), dim=1).float().cpu())
        return Extracted(torch.cat(features), torch.cat(probabilities))

    def features(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, D) features."""
        return self.extract(images).features

    def probabilities(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, K) class probabilities."""
        return self.extract(images).probabilities


def check_images(images: Tensor, what: str) -> None:
    """Raise DifflabError unless ``images`` is a non-empty (N, C, H, W) float tensor with C in {1, 3}."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DifflabError(f"{what} needs images shaped (N, C, H, W) with C = 1 or 3, got {shape}")
    if len(images) == 0:
        raise DifflabError(f"{what} got no images")
    if not images.is_floating_point():
        raise DifflabError(f"{what} needs float images in [-1, 1], got {images.dtype}; convert uint8 "
                           "pixels p with p / 127.5 - 1")
