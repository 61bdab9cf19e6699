"""How many threads the BLAS library behind numpy and scipy runs while events stream through.

A member uses one core: more throughput comes from more members of the consumer group, not
from threads. The matrix products of a batch are small (``stage_numeric``'s per-slot rank
sums, the multivariate test's Gram matrices), but OpenBLAS splits them over every core, and
its worker thread then spins while it waits for more work. Draining scenario A of
load_tests/bench_throughput.py, that worker took 0.21-0.28 of a core beside the loop's
0.96 (57 against 39 µs of CPU per record); a member whose pod is limited to one core would
have lost that share of its quota. So the loop runs with one BLAS thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits

__all__ = ["one_blas_thread"]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the BLAS libraries that are loaded (numpy's and scipy's OpenBLAS, MKL) with one
    thread inside the block; their previous settings are restored after. A library loaded
    inside the block keeps its own setting (the monitor imports numpy and scipy before).

    Examples
    --------
    >>> import numpy  # loads its OpenBLAS
    >>> from threadpoolctl import threadpool_info
    >>> def blas_threads():
    ...     return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    >>> before = blas_threads()
    >>> with one_blas_thread():
    ...     blas_threads()
    {1}
    >>> blas_threads() == before
    True
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield
