"""Faster ways to run a network on the same weights: torch.compile, channels-last memory, bf16 autocast.

:func:`accelerate` returns the module to *call*; it shares its parameters with the plain network, which stays
the one to save, average (EMA) and load, so checkpoints never see torch.compile's ``_orig_mod.`` keys.

    compile        torch.compile(network, dynamic=False): Inductor kernels (C++ on the CPU, Triton on CUDA),
                   built at the first call of each input shape (tens of seconds), then reused
    channels_last  the convolution weights stored (N, H, W, C); every convolution then runs channels-last and
                   hands its output on in that layout (the input needs no conversion: a convolution follows
                   its weight's layout on the CPU and in cuDNN). Image networks only.
    autocast       the network's forward under bf16 autocast (CUDA): for sampling, where the sampling loop stays
                   in its own dtype (float64) and only the network runs in bf16. Training has its own autocast
                   around the loss (training.trainer), so it leaves this off.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from difflab.errors import DifflabError

PRECISIONS = ("auto", "fp32", "bf16")     # auto: bf16 autocast on CUDA, fp32 on the CPU
NO_COMPILE = "run without --compile"


def autocast_enabled(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device``: auto on CUDA, bf16 (CUDA only), never fp32."""
    if precision not in PRECISIONS:
        raise DifflabError(f"--precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {precision!r}")
    if precision == "bf16" and device.type != "cuda":
        raise DifflabError("--precision bf16 needs a CUDA device; use --precision fp32 on the CPU")
    return device.type == "cuda" and precision != "fp32"


class Accelerated(nn.Module):
    """``network`` called through torch.compile and/or under bf16 autocast. It holds ``network`` as its one
    submodule (so parameters(), train() and eval() reach it) and reads its other attributes (noise_input,
    config) through it; its own state_dict is not what a run saves: save ``network``."""

    def __init__(self, network: nn.Module, *, compiled: bool, autocast: bool) -> None:
        super().__init__()
        self.network = network
        self.autocast = autocast
        # Not registered as a submodule: it wraps ``network`` itself, whose parameters are already ours.
        object.__setattr__(self, "_run", torch.compile(network, dynamic=False) if compiled else network)
        self.compiled = compiled

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        context = (torch.autocast(x.device.type, dtype=torch.bfloat16) if self.autocast
                   else contextlib.nullcontext())                # never autocast(enabled=False): it would switch
        with context:                                            # off a caller's autocast (the trainer's)
            if not self.compiled:
                return self._run(x, *args, **kwargs)
            try:
                return self._run(x, *args, **kwargs)
            except compile_errors() as e:
                raise DifflabError(f"torch.compile failed ({first_line(e)}); {NO_COMPILE}") from None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "network":          # not set yet (or being unpickled): nothing to read through
                raise
            return getattr(self.network, name)


def accelerate(network: nn.Module, *, compile: bool = False, channels_last: bool = False,
               autocast: bool = False) -> nn.Module:
    """The module to call for ``network`` (already on its device): ``network`` itself when nothing is asked or
    only ``channels_last`` (its weights are converted in place), else an :class:`Accelerated` around it. The
    parameters are shared: an optimizer step on ``network`` changes what the returned module computes.

    Under DistributedDataParallel, accelerate the inner module and wrap the result, DDP(accelerate(network)):
    torch.compile does not trace DDP's hooks well and splits the graph at DDP's buckets itself."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        raise DifflabError("accelerate the module inside DistributedDataParallel and wrap the result: "
                           "DDP(accelerate(network, ...))")
    if channels_last:
        to_channels_last(network)
    if compile:
        check_compiler(parameter_device(network))
    return Accelerated(network, compiled=compile, autocast=autocast) if compile or autocast else network


def to_channels_last(network: nn.Module) -> None:
    """Store ``network``'s 4-D weights channels-last, in place; a one-line error for a network without any
    (an MLP on points has no spatial layout to change)."""
    if not any(p.ndim == 4 for p in network.parameters()):
        raise DifflabError(f"--channels-last changes how image networks' convolutions store their weights; this "
                           f"{type(network).__name__} has no convolutions: leave it out")
    network.to(memory_format=torch.channels_last)


def parameter_device(network: nn.Module) -> torch.device:
    param = next(network.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def check_compiler(device: torch.device) -> None:
    """A one-line error where torch.compile's default backend (Inductor) cannot build kernels for ``device``:
    Dynamo unsupported on this Python, no C++ compiler (CPU), or no Triton (CUDA)."""
    if not torch._dynamo.is_dynamo_supported():
        raise DifflabError(f"torch.compile does not support this Python or platform; {NO_COMPILE}")
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            raise DifflabError(f"torch.compile on CUDA needs Triton (pip install triton); {NO_COMPILE}")
    elif device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
            from torch._inductor.exc import InvalidCxxCompiler
        except ImportError:        # another PyTorch layout: a failure then shows at the first call
            return
        try:
            get_cpp_compiler()
        except InvalidCxxCompiler:
            raise DifflabError("torch.compile on the CPU needs a C++ compiler (g++ or clang++ on PATH, or $CXX); "
                               f"install one or {NO_COMPILE}") from None


def compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean torch.compile could not build the network (not an error of the network)."""
    from torch._dynamo.exc import BackendCompilerFailed
    errors: list[type[BaseException]] = [BackendCompilerFailed]
    try:
        from torch._inductor.exc import CppCompileError, InductorError, InvalidCxxCompiler
        errors += [CppCompileError, InductorError, InvalidCxxCompiler]
    except ImportError:
        pass
    return tuple(errors)


def first_line(error: BaseException, limit: int = 200) -> str:
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return text if len(text) <= limit else text[:limit - 3] + "..."
