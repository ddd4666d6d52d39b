"""Forward processes: Gaussian paths x_t = alpha(t) x_0 + sigma(t) eps on t in [0, 1]."""

from __future__ import annotations

import inspect
from typing import Any

from difflab.errors import DifflabError
from difflab.process.base import REVERSE_VARIANCES, GaussianProcess, PathCoefficients, as_time, expand_to
from difflab.process.ddpm import DDPMProcess
from difflab.process.flow import FlowProcess
from difflab.process.schedules import SCHEDULES
from difflab.process.sde import VEProcess, VPProcess

_CLASSES: dict[str, type[GaussianProcess]] = {"ddpm": DDPMProcess, "vp": VPProcess, "ve": VEProcess,
                                              "flow": FlowProcess}
PROCESSES = tuple(_CLASSES)


def process_class(name: str) -> type[GaussianProcess]:
    if name not in _CLASSES:
        raise DifflabError(f"unknown process {name!r}; choose one of {', '.join(PROCESSES)}")
    return _CLASSES[name]


def process_options(name: str) -> dict[str, Any]:
    """The options of process ``name`` and their defaults, read from its constructor's signature,
    e.g. {"beta_min": 0.1, "beta_max": 20.0, "t_min": 0.001} for "vp"."""
    params = list(inspect.signature(process_class(name).__init__).parameters.values())[1:]   # skip self
    return {p.name: p.default for p in params}


def build_process(config: dict) -> GaussianProcess:
    """Rebuild a process from its :meth:`GaussianProcess.config` dict (a JSON object, never code)."""
    kwargs = dict(config)
    name = kwargs.pop("name", None)
    cls = process_class(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise DifflabError(f"bad option for process {name!r} ({e})") from None


__all__ = ["GaussianProcess", "PathCoefficients", "DDPMProcess", "VPProcess", "VEProcess", "FlowProcess",
           "REVERSE_VARIANCES", "SCHEDULES", "PROCESSES", "as_time", "build_process", "expand_to", "process_class",
           "process_options"]
