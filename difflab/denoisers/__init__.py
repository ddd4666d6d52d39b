"""Denoisers: anything a sampler can call, D(x_t, t, cond) -> Prediction(x0, eps).

    base.py       the Denoiser protocol and Prediction (x0, eps, and any target derived from them)
    network.py    a trained network + its process + its target
    clipping.py   x0 clamped to the data's range
    mixture.py    the exact denoiser of Gaussian-mixture data (the "perfectly trained model" of tests and bench)
    guidance.py   classifier-free guidance and classifier guidance (a noise-aware classifier's gradient)

A wrapper that steers or restores a model (guidance, posterior sampling, inpainting) takes a Denoiser and
is a Denoiser itself, so it composes with every sampler; such wrappers belong in this package.
"""

from difflab.denoisers.base import Denoiser, Prediction
from difflab.denoisers.clipping import ClippedDenoiser
from difflab.denoisers.guidance import ClassifierFreeGuidance, ClassifierGuidance, NetworkClassifier
from difflab.denoisers.mixture import GaussianMixtureDenoiser, bench_mixture, class_mixture
from difflab.denoisers.network import NetworkDenoiser

__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance", "ClippedDenoiser", "Denoiser", "GaussianMixtureDenoiser", "NetworkClassifier", "NetworkDenoiser", "Prediction", "bench_mixture",
           "class_mixture"]
