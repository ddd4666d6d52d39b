"""Sample-quality metrics: FID, KID, IS, precision/recall on features from a pluggable extractor.

    features.py          the extractor interface (name, features, probabilities, batching)
    classifier.py        built-in extractor: a small CNN per built-in digit set, trained and cached
    inception.py         the FID Inception-v3 (pytorch-fid weights, read from a local file)
    fid.py kid.py inception_score.py precision_recall.py   one metric each, on features
    stats_cache.py       reference statistics cached on disk per data set and extractor
    disk_cache.py        the cache folder and its atomic entries
    blas.py              single-threaded BLAS for small matrices
    report.py            MetricsReport: the numbers, their uncertainty, JSON and a table
    evaluate.py          build_extractor and compute_metrics: the entry points
    restoration.py       PSNR and SSIM of a restored image against its reference (torchmetrics, imported lazily)
"""

from difflab.metrics.classifier import BUILTIN_DATASETS, builtin_classifier, builtin_extractor
from difflab.metrics.evaluate import FEATURE_KINDS, MetricOptions, build_extractor, compute_metrics
from difflab.metrics.features import Extracted, FeatureExtractor
from difflab.metrics.fid import feature_statistics, fid_from_features, frechet_distance
from difflab.metrics.inception import default_weights_path, inception_extractor, load_inception
from difflab.metrics.inception_score import inception_score
from difflab.metrics.kid import kernel_inception_distance
from difflab.metrics.precision_recall import precision_recall
from difflab.metrics.report import MetricsReport
from difflab.metrics.restoration import psnr, ssim
from difflab.metrics.stats_cache import ReferenceStats, reference_stats

__all__ = ["BUILTIN_DATASETS", "FEATURE_KINDS", "Extracted", "FeatureExtractor", "MetricOptions", "MetricsReport",
           "ReferenceStats", "build_extractor", "builtin_classifier", "builtin_extractor", "compute_metrics",
           "default_weights_path", "feature_statistics", "fid_from_features", "frechet_distance",
           "inception_extractor", "inception_score", "kernel_inception_distance", "load_inception",
           "precision_recall", "psnr", "reference_stats", "ssim"]
