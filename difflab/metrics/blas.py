"""How many threads numpy/scipy's BLAS may use for the metrics' small matrix work."""

from __future__ import annotations

import contextlib

from threadpoolctl import threadpool_limits  # ships with scikit-learn, a difflab dependency

# Below this feature dimension the BLAS runs single-threaded: threads only add overhead on small matrices,
# and on a shared CPU they made a 128-d sqrtm 10-100x slower (measured: 4 ms vs 40 ms-1 s).
THREADED_MIN_DIM = 512


def blas_threads_for(dim: int) -> contextlib.AbstractContextManager:
    """A context in which numpy/scipy's BLAS uses one thread if dim < THREADED_MIN_DIM (else no change)."""
    return threadpool_limits(limits=1, user_api="blas") if dim < THREADED_MIN_DIM else contextlib.nullcontext()
