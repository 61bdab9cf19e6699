"""How one batch is gathered from a consumer (kafka/batches.py), on a scripted consume call;
tests/integration/test_backlog.py runs it on a real consumer."""

from __future__ import annotations

import pytest

from stream_monitor.kafka.batches import next_batch


class Fetched:
    """What a client has fetched: ``consume(n, timeout)`` takes up to ``n`` of it, and records
    each call; ``on_call[k]`` runs before the k-th call returns (a rebalance callback)."""

    def __init__(self, n: int, on_call: dict[int, object] | None = None) -> None:
        self.queue = list(range(n))
        self.calls: list[tuple[int, float]] = []
        self.on_call = on_call or {}
        self.rebalances = 0

    def consume(self, n: int, timeout: float) -> list[int]:
        self.calls.append((n, timeout))
        hook = self.on_call.get(len(self.calls))
        if hook is not None:
            self.rebalances += 1
            self.queue = list(hook)  # type: ignore[call-overload]
        taken = self.queue[:n]
        del self.queue[:n]
        return taken


def test_a_backlog_fills_the_batch_without_waiting():
    f = Fetched(25_000)
    batch = next_batch(f.consume, batch_size=2000, max_records=10_000, timeout=0.5)
    assert batch == list(range(10_000))
    # the first call waits, the others take what is there
    assert f.calls == [(2000, 0.5)] + [(2000, 0.0)] * 4


def test_live_input_is_one_call():
    f = Fetched(700)
    assert next_batch(f.consume, batch_size=2000, max_records=10_000, timeout=0.5) == list(
        range(700)
    )
    assert f.calls == [(2000, 0.5)]


def test_stops_at_the_first_short_call():
    f = Fetched(4500)
    assert len(next_batch(f.consume, batch_size=2000, max_records=10_000, timeout=0.5)) == 4500
    assert len(f.calls) == 3
    f = Fetched(4000)  # an empty call ends it too
    assert len(next_batch(f.consume, batch_size=2000, max_records=10_000, timeout=0.5)) == 4000
    assert f.calls[-1] == (2000, 0.0) and len(f.calls) == 3


def test_the_last_call_asks_for_the_rest_only():
    f = Fetched(10_000)
    assert len(next_batch(f.consume, batch_size=3000, max_records=7000, timeout=1.0)) == 7000
    assert [n for n, _ in f.calls] == [3000, 3000, 1000]
    assert f.queue == list(range(7000, 10_000))


def test_max_records_at_most_batch_size_is_one_call():
    f = Fetched(9000)
    assert len(next_batch(f.consume, batch_size=2000, max_records=1000, timeout=0.5)) == 2000
    assert len(f.calls) == 1


def test_records_taken_before_a_rebalance_are_dropped():
    # the 2nd call runs a rebalance: the first 2000 belong to the old assignment
    f = Fetched(8000, on_call={2: range(100, 103)})
    batch = next_batch(
        f.consume,
        batch_size=2000,
        max_records=10_000,
        timeout=0.5,
        rebalances=lambda: f.rebalances,
    )
    assert batch == [100, 101, 102]


def test_a_rebalance_in_the_first_call_keeps_its_records():
    f = Fetched(0, on_call={1: range(2000)})
    batch = next_batch(
        f.consume, batch_size=2000, max_records=3000, timeout=0.5, rebalances=lambda: f.rebalances
    )
    assert batch == list(range(2000))  # the first call's records come after its callback
    assert len(f.calls) == 2


@pytest.mark.parametrize(("size", "most"), [(0, 10), (10, 0)])
def test_sizes_must_be_positive(size, most):
    with pytest.raises(ValueError, match="batch_size"):
        next_batch(lambda n, t: [], batch_size=size, max_records=most, timeout=0.5)
