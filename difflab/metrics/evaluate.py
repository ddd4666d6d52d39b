"""The two entry points of the metrics layer: choose a feature extractor, and measure generated images.

    extractor = build_extractor("builtin", "digits")            # or "inception", inception_weights=FILE
    report = compute_metrics(images, extractor, "digits")        # reference: digits/train, cached
    print(report.table()); path.write_text(report.to_json())
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.metrics.classifier import BUILTIN_DATASETS, builtin_extractor
from difflab.metrics.features import DEFAULT_BATCH_SIZE, FeatureExtractor
from difflab.metrics.fid import feature_statistics, fid_bootstrap_interval, frechet_distance
from difflab.metrics.inception import inception_extractor
from difflab.metrics.inception_score import inception_score
from difflab.metrics.kid import kernel_inception_distance
from difflab.metrics.precision_recall import precision_recall
from difflab.metrics.report import MetricsReport
from difflab.metrics.stats_cache import reference_stats

FEATURE_KINDS: tuple[str, ...] = ("builtin", "inception")


@dataclass(frozen=True)
class MetricOptions:
    """How much resampling each metric does. Subset size and splits shrink to fit small sets."""

    fid_resamples: int = 50       # bootstrap resamples for the FID interval (each costs one sqrtm)
    fid_level: float = 0.95
    kid_subsets: int = 100        # Binkowski et al.: 100 subsets of 1000
    kid_subset_size: int = 1000
    is_splits: int = 10           # Salimans et al.: 10 splits
    pr_k: int = 3                 # Kynkaanniemi et al.: k = 3
    seed: int = 0                 # for the bootstrap and the KID subsets

    def validate(self) -> None:
        checks = [("fid_resamples", self.fid_resamples >= 2, ">= 2"), ("fid_level", 0 < self.fid_level < 1, "in (0, 1)"),
                  ("kid_subsets", self.kid_subsets >= 1, ">= 1"), ("kid_subset_size", self.kid_subset_size >= 2, ">= 2"),
                  ("is_splits", self.is_splits >= 1, ">= 1"), ("pr_k", self.pr_k >= 1, ">= 1")]
        for name, ok, rule in checks:
            if not ok:
                raise DifflabError(f"--{name.replace('_', '-')} is out of range: it must be {rule}, "
                                   f"got {getattr(self, name)}")


def build_extractor(kind: str, dataset: str | None = None, *, inception_weights: Path | str | None = None,
                    cache_dir: Path | str | None = None, device: torch.device | str = "cpu",
                    batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> FeatureExtractor:
    """The extractor for ``--features kind``: "builtin" (the classifier of ``dataset``, one of
    BUILTIN_DATASETS, trained on first use) or "inception" (FID Inception-v3 from ``inception_weights``,
    default torch hub's cache)."""
    if kind == "builtin":
        if dataset not in BUILTIN_DATASETS:
            raise DifflabError(f"--features builtin exists for the data sets {', '.join(BUILTIN_DATASETS)}, not "
                               f"{dataset!r}; use --features inception")
        return builtin_extractor(dataset, cache_dir=cache_dir, device=device, batch_size=batch_size,
                                 progress=progress)
    if kind == "inception":
        return inception_extractor(inception_weights, device=device, batch_size=batch_size)
    raise DifflabError(f"unknown feature extractor {kind!r}; use one of {', '.join(FEATURE_KINDS)}")


def compute_metrics(generated: Tensor, extractor: FeatureExtractor, reference: str | Tensor, *,
                    split: str = "train", options: MetricOptions = MetricOptions(),
                    cache_dir: Path | str | None = None, use_cache: bool = True) -> MetricsReport:
    """FID (+ bootstrap interval), KID, IS, precision and recall of generated (N, C, H, W) in [-1, 1].

    reference: a data set name (its ``split`` is used; statistics cached per extractor) or reference
    images (N_r, C, H, W). IS is of the generated images alone.
    """
    options.validate()
    ref = reference_stats(extractor, reference, split=split, cache_dir=cache_dir, use_cache=use_cache)
    gen = extractor.extract(generated)
    n_gen, n_ref = len(gen.features), len(ref.features)
    if min(n_gen, n_ref) <= options.pr_k:
        raise DifflabError(f"metrics need more than k = {options.pr_k} images in each set; got {n_gen} generated "
                           f"and {n_ref} reference images")
    rng = np.random.default_rng(options.seed)
    mu, sigma = feature_statistics(gen.features)
    fid = frechet_distance(mu, sigma, ref.mu, ref.sigma)
    fid_interval = fid_bootstrap_interval(gen.features, ref.features, options.fid_resamples, options.fid_level, rng)
    subset_size = min(options.kid_subset_size, n_gen, n_ref)
    kid_mean, kid_std = kernel_inception_distance(gen.features, ref.features, options.kid_subsets, subset_size, rng)
    splits = min(options.is_splits, n_gen)
    # Shuffled first: images generated class by class would otherwise give splits of one class each.
    is_mean, is_std = inception_score(gen.probabilities[torch.from_numpy(rng.permutation(n_gen))], splits)
    precision, recall = precision_recall(ref.features, gen.features, options.pr_k)
    return MetricsReport(
        extractor=extractor.name, reference=ref.description, n_generated=n_gen, n_reference=n_ref,
        fid=fid, fid_interval=fid_interval, fid_level=options.fid_level, fid_resamples=options.fid_resamples,
        kid_mean=kid_mean, kid_std=kid_std, kid_subsets=options.kid_subsets, kid_subset_size=subset_size,
        is_mean=is_mean, is_std=is_std, is_splits=splits, precision=precision, recall=recall, pr_k=options.pr_k,
        extractor_info=dict(extractor.info))
