"""Data parallel training across processes started by ``torchrun`` (PyTorch's own launcher).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR/MASTER_PORT) in every process it starts;
:func:`from_environment` reads them and joins the process group: nccl on GPUs (one per process, the
LOCAL_RANK-th), gloo on CPUs. Without them (a plain ``difflab train``) it is one process, rank 0 of 1, and
nothing here talks to anything.

What each process does is the trainer's business (difflab.training.trainer): the same global batch order on
every rank, each rank its own equal slice, gradients averaged by DistributedDataParallel, rank 0 alone
writing. This module only holds the process's place in the group and the few collectives the trainer needs.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from difflab.errors import DifflabError

# A rank waits this long for the others (rank 0's sample grids and evaluations run while they wait).
TIMEOUT = datetime.timedelta(minutes=60)
ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Distributed:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes (checkpoints, logs, pictures) and talks to the user."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there is more than one process (a process group to talk to)."""
        return self.world > 1

    def device(self, name: str) -> str:
        """The device this process trains on for --device ``name``: with several processes on CUDA, the
        LOCAL_RANK-th GPU (``cuda`` and ``auto`` both mean that); anything else as given."""
        if self.active and (name == "cuda" or (name == "auto" and torch.cuda.is_available())):
            return f"cuda:{self.local_rank}"
        return name

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_gather(self, x: Tensor) -> Tensor:
        """(world * n, ...) the ranks' (n, ...) tensors (the same shape on every rank) in rank order."""
        if not self.active:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def all_finite(self, x: Tensor) -> bool:
        """Whether ``x`` is finite on every rank (one vote each, so all ranks stop together)."""
        ok = torch.isfinite(x).all().to(torch.int32).reshape(1)
        if self.active:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. building a cache on disk), then the others (reading it)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the loss calls: ``model`` itself in one process, else DistributedDataParallel around it,
        which averages the gradients over the ranks during backward."""
        if not self.active:
            return model
        return DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def shutdown(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


class DataParallel(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that reads the network's own attributes (e.g. ``noise_input``) through."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def launched_processes() -> int:
    """How many processes torchrun started for this run (WORLD_SIZE; 1 without torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def from_environment(device: str = "auto") -> Distributed:
    """This process's place as torchrun described it in the environment, joining the process group when there
    are several (nccl for CUDA, gloo otherwise); one process without torchrun."""
    if not all(k in os.environ for k in ENV):
        return Distributed()
    try:
        place = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    except ValueError:
        raise DifflabError("RANK, LOCAL_RANK and WORLD_SIZE must be whole numbers; start several processes with "
                           "torchrun (it sets them)") from None
    if not place.active:
        return place
    if not dist.is_available():
        raise DifflabError("this PyTorch build has no torch.distributed; install a build with it to train in "
                           "several processes")
    cuda = place.device(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available() or place.local_rank >= torch.cuda.device_count():
            raise DifflabError(f"process {place.rank} wants GPU {place.local_rank} and this machine has "
                               f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}; start at most "
                               "one process per GPU (--nproc-per-node), or --device cpu")
        torch.cuda.set_device(place.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return place
