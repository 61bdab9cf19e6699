"""One batch of records from a consumer: wait for a few, then take what is already fetched.

A consume call waits (up to its timeout) for ``batch_size`` records, which bounds the latency of
live input: a batch is processed as soon as that many arrived. While the monitor drains a
backlog, every call returns a full ``batch_size``, and each batch pays the monitor's per-batch
work (per model, per feature, per detector) again; so after a full call, the records the client
has already fetched (librdkafka's prefetch queue) join the same batch, taken without waiting,
up to ``max_records``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["next_batch"]

M = TypeVar("M")


def next_batch(
    consume: Callable[[int, float], list[M]],
    *,
    batch_size: int,
    max_records: int,
    timeout: float,
    rebalances: Callable[[], int] = lambda: 0,
) -> list[M]:
    """``consume(batch_size, timeout)``, and while each call returned a full ``batch_size``,
    ``consume(n, 0)`` for up to ``max_records`` records in all.

    ``rebalances()`` counts the assignment changes so far (the consumer's rebalance callbacks
    run inside ``consume``). When one ran during a later call, the records taken before it
    belong to the assignment before it: a revoked partition is the next owner's to read from
    its checkpoint, and one assigned again restarts from its checkpoint too, so processing
    them would count them twice. They are dropped (their offsets were not committed) and the
    batch is what that call returned.

    >>> queue = list(range(7))
    >>> def consume(n, timeout):
    ...     taken = queue[:n]
    ...     del queue[:n]
    ...     return taken
    >>> next_batch(consume, batch_size=2, max_records=5, timeout=0.5)
    [0, 1, 2, 3, 4]
    >>> next_batch(consume, batch_size=2, max_records=5, timeout=0.5)
    [5, 6]
    """
    if batch_size < 1 or max_records < 1:
        raise ValueError(
            f"need batch_size >= 1 and max_records >= 1, got {batch_size}, {max_records}"
        )
    msgs = consume(batch_size, timeout)
    while len(msgs) % batch_size == 0 and 0 < len(msgs) < max_records:
        seen = rebalances()
        more = consume(min(batch_size, max_records - len(msgs)), 0.0)
        if rebalances() != seen:
            return more
        if not more:
            break
        msgs.extend(more)
    return msgs
