"""How often the cyclic garbage collector runs while events stream through.

A monitor allocates millions of short-lived objects (records, events, rows) next to a large,
long-lived state; at CPython's default threshold (a young collection every 700 allocations)
the collector's passes took about a tenth of the live monitor's time and a fifth of a
replay's (load_tests/bench_throughput.py, bench_replay.py). Events and rows form no reference
cycles, so collecting less often frees the same memory, only later.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["GC_THRESHOLD", "fewer_collections"]

#: Allocations between two young-generation collections while events stream through.
GC_THRESHOLD = 100_000


@contextlib.contextmanager
def fewer_collections(threshold: int = GC_THRESHOLD) -> Iterator[None]:
    """Run the young-generation collection every ``threshold`` allocations (never less often
    than the current setting) inside the block; the previous thresholds are restored after.

    Examples
    --------
    >>> before = gc.get_threshold()
    >>> with fewer_collections(50_000):
    ...     gc.get_threshold()[0] >= 50_000
    True
    >>> gc.get_threshold() == before
    True
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
