"""difflab: diffusion and flow-matching generative models of images."""

__version__ = "0.6.0"
