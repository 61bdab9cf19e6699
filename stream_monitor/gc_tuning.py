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
import time
from collections.abc import Callable, Iterator

__all__ = ["GC_THRESHOLD", "fewer_collections"]

#: Allocations between two young-generation collections while events stream through.
GC_THRESHOLD = 100_000


@contextlib.contextmanager
def fewer_collections(
    threshold: int = GC_THRESHOLD, on_pause: Callable[[int, float], None] | None = None
) -> Iterator[None]:
    """Run the young-generation collection every ``threshold`` allocations (never less often
    than the current setting) inside the block; the previous thresholds are restored after.

    ``on_pause(generation, seconds)`` is called after each collection in the block, with how
    long it held the interpreter (every thread waits for it: a full collection, generation 2,
    walks every object the collector tracks).

    Examples
    --------
    >>> before = gc.get_threshold()
    >>> pauses = []
    >>> with fewer_collections(50_000, on_pause=lambda g, s: pauses.append((g, s >= 0))):
    ...     gc.get_threshold()[0] >= 50_000, gc.collect() >= 0
    (True, True)
    >>> gc.get_threshold() == before, (2, True) in pauses
    (True, True)
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold), *old[1:])
    hook = None if on_pause is None else _PauseHook(on_pause)
    if hook is not None:
        gc.callbacks.append(hook)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        if hook is not None:
            gc.callbacks.remove(hook)


class _PauseHook:
    """A ``gc.callbacks`` entry timing each collection (collections do not nest)."""

    __slots__ = ("_on_pause", "_started")

    def __init__(self, on_pause: Callable[[int, float], None]) -> None:
        self._on_pause = on_pause
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._on_pause(info["generation"], time.perf_counter() - self._started)
