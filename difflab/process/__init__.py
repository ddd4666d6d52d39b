"""Forward processes: Gaussian paths x_t = alpha(t) x_0 + sigma(t) eps on t in [0, 1]."""

from __future__ import annotations

from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, PathCoefficients, as_time, expand_to
from difflab.process.ddpm import DDPMProcess
from difflab.process.schedules import SCHEDULES

PROCESSES = ("ddpm",)


def build_process(config: dict) -> GaussianProcess:
    """Rebuild a process from its :meth:`GaussianProcess.config` dict (a JSON object, never code)."""
    kwargs = dict(config)
    name = kwargs.pop("name", None)
    if name == "ddpm":
        return DDPMProcess(**kwargs)
    raise DifflabError(f"unknown process {name!r}; choose one of {', '.join(PROCESSES)}")


__all__ = ["GaussianProcess", "PathCoefficients", "DDPMProcess", "SCHEDULES", "PROCESSES",
           "build_process", "as_time", "expand_to"]
