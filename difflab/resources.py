"""The machine a job runs on: whether the job fits its memory (checked before it starts, instead of growing
until the system kills it), and where difflab keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

from difflab.errors import DifflabError

CACHE_ENV = "DIFFLAB_CACHE"


def cache_root(override: Path | str | None = None) -> Path:
    """``override``, else $DIFFLAB_CACHE, else ~/.cache/difflab (not created here)."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "difflab"

MEMORY_FRACTION = 0.5     # a job may plan to hold at most this share of the machine's memory


def physical_memory() -> int | None:
    """Bytes of memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Raise a one-line DifflabError if ``what`` would take more than MEMORY_FRACTION of the machine's memory."""
    total = physical_memory()
    if total is not None and nbytes > MEMORY_FRACTION * total:
        raise DifflabError(f"{what} would take {gigabytes(nbytes)} of memory, more than half of this machine's "
                           f"{gigabytes(total)}; {fix}")
