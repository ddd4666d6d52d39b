"""Checks that a job fits the machine before it starts, instead of growing until the system kills it."""

from __future__ import annotations

import os

from difflab.errors import DifflabError

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
