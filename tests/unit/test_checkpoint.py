"""Checkpoint: produce -> flush (acks) -> store_offsets, with retries, against recording fakes.

The fake producer queues records on ``produce`` and delivers them only on ``flush`` (calling the
``on_delivery`` callbacks, like librdkafka serving delivery reports), so every effect is
observable in one shared, ordered log.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from stream_monitor.checkpoint import Checkpoint, OutputRecord

Log = list[tuple[Any, ...]]


class FakeKafkaError:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class FakeProducer:
    """Implements stream_monitor.kafka.protocols.ProducerLike.

    ``fail(value, attempt)`` decides whether a delivery fails; ``stuck`` keeps records in flight
    forever (flush returns how many are left); ``buffer_errors`` makes that many ``produce``
    calls raise BufferError (local queue full).
    """

    def __init__(
        self,
        log: Log,
        *,
        fail: Callable[[bytes, int], bool] = lambda value, attempt: False,
        stuck: bool = False,
        buffer_errors: int = 0,
    ) -> None:
        self.log = log
        self.fail = fail
        self.stuck = stuck
        self.buffer_errors = buffer_errors
        self.attempts: Counter[bytes] = Counter()
        self.in_flight: list[tuple[bytes, int, Callable[[Any, Any], None] | None]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: Any = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
        timestamp: int = 0,
    ) -> None:
        assert value is not None
        if self.buffer_errors > 0:
            self.buffer_errors -= 1
            self.log.append(("buffer_full", value))
            raise BufferError("Local: Queue full")
        self.attempts[value] += 1
        self.log.append(("produce", topic, key, value, headers))
        self.in_flight.append((value, self.attempts[value], on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        self.log.append(("poll", timeout))
        return 0

    def flush(self, timeout: float = -1.0) -> int:
        self.log.append(("flush", timeout))
        if self.stuck:
            return len(self.in_flight)
        batch, self.in_flight = self.in_flight, []
        for value, attempt, cb in batch:
            err = (
                FakeKafkaError("Broker: Not enough in-sync replicas")
                if self.fail(value, attempt)
                else None
            )
            self.log.append(("failed" if err else "delivered", value))
            if cb is not None:
                cb(err, None)
        return 0


class FakeConsumer:
    """Implements stream_monitor.kafka.protocols.ConsumerLike (only store_offsets is used)."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def store_offsets(self, *, offsets: Any) -> None:
        self.log.append(
            ("store_offsets", sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))
        )

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        raise AssertionError("Checkpoint must not consume")

    def commit(self, *, offsets: Any = None, asynchronous: bool = True) -> Any:
        raise AssertionError("Checkpoint must not commit; it only stores offsets")

    def close(self) -> None:
        raise AssertionError("Checkpoint must not close the consumer")


def _record(log: Log, value: bytes, topic: str = "alerts") -> OutputRecord:
    return OutputRecord(
        topic,
        key=b"k-" + value,
        value=value,
        headers=[("h", b"1")],
        on_ack=lambda: log.append(("on_ack", value)),
    )


def _checkpoint(
    log: Log,
    producer: FakeProducer,
    stop: threading.Event | None = None,
    failures: list[str] | None = None,
) -> Checkpoint:
    return Checkpoint(
        producer,
        FakeConsumer(log),
        stop or threading.Event(),
        on_failure=None if failures is None else failures.append,
        retry_backoff=0.0,
    )


def test_order_is_produce_then_flush_then_store_offsets() -> None:
    log: Log = []
    ck = _checkpoint(log, FakeProducer(log))
    ck.add_output(_record(log, b"a"))
    ck.add_output(_record(log, b"b", topic="dead-letter"))
    ck.add_offset("predictions", 0, 10)
    ck.add_offset("labels", 0, 4)
    assert log == []  # nothing happens before commit
    assert ck.commit() is True
    assert log == [
        ("produce", "alerts", b"k-a", b"a", [("h", b"1")]),
        ("produce", "dead-letter", b"k-b", b"b", [("h", b"1")]),
        ("flush", 1.0),
        ("delivered", b"a"),
        ("on_ack", b"a"),
        ("delivered", b"b"),
        ("on_ack", b"b"),
        ("store_offsets", [("labels", 0, 5), ("predictions", 0, 11)]),
    ]


def test_commit_clears_the_batch() -> None:
    log: Log = []
    ck = _checkpoint(log, FakeProducer(log))
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 1)
    assert ck.commit() is True
    n = len(log)
    assert ck.commit() is True  # nothing new: nothing produced, nothing stored
    assert len(log) == n


def test_offsets_only_batch_stores_without_producing() -> None:
    log: Log = []
    ck = _checkpoint(log, FakeProducer(log))
    ck.add_offset("predictions", 2, 99)
    assert ck.commit() is True
    assert log == [("store_offsets", [("predictions", 2, 100)])]


def test_failed_delivery_is_produced_again_and_offsets_wait_for_it() -> None:
    log: Log = []
    failures: list[str] = []
    producer = FakeProducer(log, fail=lambda value, attempt: value == b"b" and attempt == 1)
    ck = _checkpoint(log, producer, failures=failures)
    for v in (b"a", b"b", b"c"):
        ck.add_output(_record(log, v, topic="alerts" if v != b"b" else "dead-letter"))
    ck.add_offset("predictions", 1, 7)
    assert ck.commit() is True
    assert log == [
        ("produce", "alerts", b"k-a", b"a", [("h", b"1")]),
        ("produce", "dead-letter", b"k-b", b"b", [("h", b"1")]),
        ("produce", "alerts", b"k-c", b"c", [("h", b"1")]),
        ("flush", 1.0),
        ("delivered", b"a"),
        ("on_ack", b"a"),
        ("failed", b"b"),
        ("delivered", b"c"),
        ("on_ack", b"c"),
        # only the failed record is produced again
        ("produce", "dead-letter", b"k-b", b"b", [("h", b"1")]),
        ("flush", 1.0),
        ("delivered", b"b"),
        ("on_ack", b"b"),
        ("store_offsets", [("predictions", 1, 8)]),
    ]
    assert failures == ["dead-letter"]


def test_repeated_failures_retry_until_success() -> None:
    log: Log = []
    failures: list[str] = []
    producer = FakeProducer(log, fail=lambda value, attempt: attempt <= 4)
    ck = _checkpoint(log, producer, failures=failures)
    ck.add_output(_record(log, b"x"))
    ck.add_offset("labels", 3, 0)
    assert ck.commit() is True
    assert producer.attempts[b"x"] == 5
    assert failures == ["alerts"] * 4
    events = [e[0] for e in log]
    assert events.count("on_ack") == 1
    # the offsets are stored once, after the only successful delivery
    assert events.index("store_offsets") == len(events) - 1
    assert events.index("on_ack") < events.index("store_offsets")
    assert log[-1] == ("store_offsets", [("labels", 3, 1)])


def test_stop_while_deliveries_keep_failing_returns_false_and_stores_nothing() -> None:
    log: Log = []
    stop = threading.Event()
    failures: list[str] = []

    def on_failure(topic: str) -> None:
        failures.append(topic)
        if len(failures) == 3:
            stop.set()  # the monitor is asked to stop during the third failed attempt

    producer = FakeProducer(log, fail=lambda value, attempt: True)
    ck = Checkpoint(producer, FakeConsumer(log), stop, on_failure=on_failure, retry_backoff=0.0)
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit() is False
    assert producer.attempts[b"a"] == 3
    assert not any(e[0] == "store_offsets" for e in log)
    assert not any(e[0] == "on_ack" for e in log)


def test_stop_already_set_and_delivery_fails_returns_false() -> None:
    log: Log = []
    stop = threading.Event()
    stop.set()
    producer = FakeProducer(log, fail=lambda value, attempt: True)
    ck = _checkpoint(log, producer, stop=stop)
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit() is False
    assert producer.attempts[b"a"] == 1
    assert [e[0] for e in log] == ["produce", "flush", "failed"]


def test_stop_set_and_deliveries_succeed_still_commits() -> None:
    # the final commit at shutdown runs with stop set: acknowledged outputs let offsets through
    log: Log = []
    stop = threading.Event()
    stop.set()
    ck = _checkpoint(log, FakeProducer(log), stop=stop)
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit() is True
    assert log[-1] == ("store_offsets", [("predictions", 0, 6)])


def test_stop_while_flush_cannot_finish_returns_false() -> None:
    log: Log = []
    stop = threading.Event()
    stop.set()
    ck = _checkpoint(log, FakeProducer(log, stuck=True), stop=stop)
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit() is False
    # one regular flush, then one last bounded grace flush, then give up
    assert [e for e in log if e[0] == "flush"] == [("flush", 1.0), ("flush", 10.0)]
    assert not any(e[0] in ("store_offsets", "on_ack") for e in log)


def test_full_local_queue_is_polled_until_produce_succeeds() -> None:
    log: Log = []
    producer = FakeProducer(log, buffer_errors=2)
    ck = _checkpoint(log, producer)
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 0)
    assert ck.commit() is True
    assert [e[0] for e in log] == [
        "buffer_full",
        "poll",
        "buffer_full",
        "poll",
        "produce",
        "flush",
        "delivered",
        "on_ack",
        "store_offsets",
    ]
    assert producer.attempts[b"a"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_offsets_stored_are_max_plus_one_per_partition(seed: int) -> None:
    rng = random.Random(seed)
    marks = [
        (rng.choice(["predictions", "labels"]), rng.randrange(4), rng.randrange(10_000))
        for _ in range(500)
    ]
    expected: dict[tuple[str, int], int] = {}
    for topic, part, off in marks:  # brute force: the highest offset seen, plus one
        expected[(topic, part)] = max(expected.get((topic, part), -1), off + 1)
    log: Log = []
    ck = _checkpoint(log, FakeProducer(log))
    for m in marks:
        ck.add_offset(*m)
    assert ck.commit() is True
    stored = [e for e in log if e[0] == "store_offsets"]
    assert stored == [("store_offsets", sorted((t, p, o) for (t, p), o in expected.items()))]
    assert len(expected) == 8


def test_offset_zero_is_stored_as_one() -> None:
    log: Log = []
    ck = _checkpoint(log, FakeProducer(log))
    ck.add_offset("predictions", 0, 0)
    ck.commit()
    assert log == [("store_offsets", [("predictions", 0, 1)])]


def test_discard_forgets_outputs_and_offsets() -> None:
    log: Log = []
    ck = _checkpoint(log, FakeProducer(log))
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    ck.discard()
    assert ck.commit() is True
    assert log == []


def test_stop_is_honoured_while_the_local_queue_is_full() -> None:
    log: Log = []
    stop = threading.Event()
    stop.set()
    released = threading.Event()

    class AlwaysFull(FakeProducer):
        def produce(
            self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any
        ) -> None:
            if not released.is_set():
                raise BufferError("Local: Queue full")
            super().produce(topic, value, key, **kw)

        def poll(self, timeout: float = 0.0) -> int:
            released.wait(timeout)  # a real poll blocks up to its timeout
            return 0

    ck = _checkpoint(log, AlwaysFull(log), stop=stop)
    ck.add_output(_record(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(ck.commit()), daemon=True)
    worker.start()
    try:
        worker.join(1.0)
        assert not worker.is_alive(), "commit() still spinning on BufferError after stop"
        assert result == [False]
    finally:
        released.set()  # let a stuck commit finish so no thread outlives the test
        worker.join(5.0)
