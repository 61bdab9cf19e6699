"""What the package's compiled kernels share: numba compilation, and the layout of many
streams laid end to end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

__all__ = ["compiled", "offsets"]


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


def offsets(lengths: Sequence[int]) -> np.ndarray:
    """Where each of arrays of these lengths starts when they are laid end to end, and their
    total last: array ``s`` is ``[offsets[s]:offsets[s + 1]]``, as the kernels read streams
    and buckets.

    >>> offsets([3, 0, 2]).tolist()
    [0, 3, 3, 5]
    """
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out
