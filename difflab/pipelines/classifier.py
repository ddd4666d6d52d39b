"""A noise-aware classifier run (difflab train-classifier): how well it tells the classes apart at each noise level.

    RUN/accuracy.json   {"step": S, "n": N, "accuracy": {"t": accuracy, ...}} on the held-out split

Classifier guidance needs p(y | x_t) to be informative where the sampler asks for its gradient, so the
accuracy is measured on held-out images noised to several times along the process.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from difflab.codecs import Codec
from difflab.config import RunConfig
from difflab.denoisers import NetworkClassifier
from difflab.io import atomic_write_text, output_error
from difflab.pipelines.run import load_run_data
from difflab.process import GaussianProcess
from difflab.process.base import as_time

ACCURACY = "accuracy.json"
# Where along the process accuracy is measured: these fractions of the way from t_min to t_max.
ACCURACY_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9)


@torch.no_grad()
def classifier_accuracy(network: nn.Module, process: GaussianProcess, x0: Tensor, labels: Tensor,
                        times: list[float], seed: int = 0, batch_size: int = 500) -> dict[float, float]:
    """Fraction of x0 (N, ...) noised to each time t, x_t = alpha x0 + sigma eps, whose arg-max class is its label."""
    classifier = NetworkClassifier(network, process)
    device = next(network.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in times:
        right = 0
        for xb, yb in zip(x0.split(batch_size), labels.split(batch_size)):
            c = process.coefficients(as_time(t)).expand_as(xb)
            x_t = c.alpha * xb + c.sigma * torch.randn(xb.shape, generator=g)
            log_p = classifier.class_log_probs(x_t.to(device), as_time(t, device=device))
            right += int((log_p.argmax(1).cpu() == yb).sum())
        out[t] = right / len(labels)
    return out


def write_classifier_accuracy(network: nn.Module, process: GaussianProcess, cfg: RunConfig, path: Path,
                              step: int, codec: Codec | None = None) -> dict[float, float]:
    """A classifier run's held-out accuracy by noise level, written to ``path`` and shown; ``codec``: what the
    held-out images are encoded with first (a classifier of an autoencoder's latents), None for pixels."""
    test = load_run_data(cfg, split="test")
    x0 = test.data
    if codec is not None:
        with torch.no_grad():
            x0 = codec.encode(x0.to(next(network.parameters()).device)).cpu()
    times = [process.t_min + f * (process.t_max - process.t_min) for f in ACCURACY_FRACTIONS]
    was_training = network.training
    network.eval()
    try:
        acc = classifier_accuracy(network, process, x0, test.labels, times)
    finally:
        network.train(was_training)
    try:
        atomic_write_text(path, json.dumps({"step": step, "n": len(test), "accuracy": {f"{t:.4g}": a for t, a in acc.items()}},
                                           indent=1) + "\n")
    except OSError as e:
        raise output_error(path, e) from None
    tqdm.write(f"step {step}: held-out accuracy " + ", ".join(f"{a:.3f} at t = {t:.3g}" for t, a in acc.items()))
    return acc
