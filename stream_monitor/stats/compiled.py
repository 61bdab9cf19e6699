"""numba compilation as the package's kernels use it."""

from __future__ import annotations

from typing import Any

import numba

__all__ = ["compiled"]


def compiled(fn: Any) -> Any:
    """``fn`` compiled by numba at its first call, its machine code kept in numba's cache (the
    package's ``__pycache__``, or ``NUMBA_CACHE_DIR``) for the next process. Where neither is
    writable (a container's read-only file system without a cache volume) numba refuses to
    cache: then each process compiles it again (seconds; see
    :func:`stream_monitor.stats.drift.warm_up`)."""
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(fn)
