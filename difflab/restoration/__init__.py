"""Restoration and editing with a trained model, on the measurement operators of ``difflab.operators``
(inpainting, super-resolution, deblurring, denoising). DPS is a denoiser wrapper (``denoisers.dps``) and RePaint
a sampler (``samplers.repaint``); this package holds what sits above them:

    inversion.py   DDIM inversion, spherical interpolation of noises, SDEdit's start
    posterior.py   p(x_0 | y) of Gaussian-mixture data in closed form: the reference restorations are tested against
"""

from difflab.restoration.posterior import GaussianMixturePosterior, mixture_posterior

# How a run restores measured images (difflab.pipelines.restore): diffusion posterior sampling, RePaint, or an
# SR3 run's own conditional model.
METHODS = ("dps", "repaint", "sr3")

__all__ = ["GaussianMixturePosterior", "METHODS", "mixture_posterior"]
