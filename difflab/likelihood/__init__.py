"""Likelihoods in bits/dim: the DDPM variational bound and the exact probability-flow ODE NLL.

    elbo_bpd(denoiser, x0, ...) -> ElboResult         any denoiser on a DDPMProcess (Ho et al. 2020, eq. 5)
    ode_bpd(denoiser, x0, ...)  -> LikelihoodResult   any process (Song et al. 2021, App. D; FFJORD)

Both take data x0 (B, ...) = 2 p / 255 - 1 and return per-example bits/dim on the 8-bit scale, with
``.summary()`` giving mean, standard error, NFE and seconds.
"""

from __future__ import annotations

from difflab.likelihood.bpd import BIN_WIDTH, DEQUANTIZATIONS, dequantize, nats_to_bpd
from difflab.likelihood.elbo import DECODERS, ElboResult, elbo_bpd, elbo_terms, prior_kl, step_terms
from difflab.likelihood.gaussian import discretized_gaussian_log_likelihood, gaussian_log_likelihood, normal_kl
from difflab.likelihood.ode_nll import CLOCKS, DIVERGENCES, PROBES, ode_bpd, ode_nll
from difflab.likelihood.result import LikelihoodResult

__all__ = ["BIN_WIDTH", "CLOCKS", "DECODERS", "DEQUANTIZATIONS", "DIVERGENCES", "PROBES", "ElboResult",
           "LikelihoodResult", "dequantize", "discretized_gaussian_log_likelihood", "elbo_bpd", "elbo_terms", "gaussian_log_likelihood",
           "nats_to_bpd", "normal_kl", "ode_bpd", "ode_nll", "prior_kl", "step_terms"]
