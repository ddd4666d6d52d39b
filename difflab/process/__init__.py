"""Forward processes: Gaussian paths x_t = alpha(t) x_0 + sigma(t) eps on t in [0, 1]."""

from __future__ import annotations

from difflab.errors import DifflabError
from difflab.process.base import GaussianProcess, PathCoefficients, as_time, expand_to
from difflab.process.ddpm import DDPMProcess
from difflab.process.flow import FlowProcess
from difflab.process.schedules import SCHEDULES
from difflab.process.sde import VEProcess, VPProcess

_CLASSES: dict[str, type[GaussianProcess]] = {"ddpm": DDPMProcess, "vp": VPProcess, "ve": VEProcess,
                                              "flow": FlowProcess}
PROCESSES = tuple(_CLASSES)


def build_process(config: dict) -> GaussianProcess:
    """Rebuild a process from its :meth:`GaussianProcess.config` dict (a JSON object, never code)."""
    kwargs = dict(config)
    name = kwargs.pop("name", None)
    if name not in _CLASSES:
        raise DifflabError(f"unknown process {name!r}; choose one of {', '.join(PROCESSES)}")
    try:
        return _CLASSES[name](**kwargs)
    except TypeError as e:
        raise DifflabError(f"bad option for process {name!r} ({e})") from None


__all__ = ["GaussianProcess", "PathCoefficients", "DDPMProcess", "VPProcess", "VEProcess", "FlowProcess",
           "SCHEDULES", "PROCESSES", "build_process", "as_time", "expand_to"]
