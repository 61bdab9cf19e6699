"""Checkpoint: both delivery guarantees, step by step, against recording fakes.

The fake producer queues records on ``produce`` and delivers them only when served (``flush``,
``poll``, ``commit_transaction``), calling the ``on_delivery`` callbacks like librdkafka serving
delivery reports. It follows librdkafka's transaction state machine (no produce outside a
transaction, no nested ``begin_transaction``...). Producer, consumer and acks write to one shared
ordered log, so the order of every effect is asserted directly.
"""

from __future__ import annotations

import contextlib
import random
import threading
import types
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream_monitor import checkpoint as checkpoint_module
from stream_monitor.checkpoint import Checkpoint, OutputRecord, TransactionAborted

Log = list[tuple[Any, ...]]

#: What ``consumer.consumer_group_metadata()`` returns; must reach send_offsets_to_transaction.
GROUP_METADATA = object()


class FakeKafkaError:
    """Quacks like ``confluent_kafka.KafkaError`` (what ``KafkaException.args[0]`` holds)."""

    def __init__(
        self, code: int, reason: str, *, retriable: bool = False, abortable: bool = False
    ) -> None:
        self._code = code
        self.reason = reason
        self._retriable = retriable
        self._abortable = abortable

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self.reason

    def retriable(self) -> bool:
        return self._retriable

    def txn_requires_abort(self) -> bool:
        return self._abortable

    def __str__(self) -> str:
        return self.reason


def not_enough_replicas() -> FakeKafkaError:
    return FakeKafkaError(KafkaError.NOT_ENOUGH_REPLICAS, "Broker: Not enough in-sync replicas")


def timed_out() -> FakeKafkaError:
    return FakeKafkaError(KafkaError._TIMED_OUT, "Local: Timed out", retriable=True)


def abortable() -> FakeKafkaError:
    return FakeKafkaError(
        KafkaError.INVALID_PRODUCER_EPOCH,
        "Broker: Producer attempted an operation with an old epoch",
        abortable=True,
    )


def fatal() -> FakeKafkaError:
    return FakeKafkaError(KafkaError._FENCED, "Local: This instance has been fenced")


def bad_state(what: str) -> KafkaException:
    return KafkaException(FakeKafkaError(KafkaError._STATE, f"Local: Erroneous state: {what}"))


def test_kafka_exception_carries_an_arbitrary_error_object() -> None:
    # the fakes below rely on it: Checkpoint reads exc.args[0] as the KafkaError
    err = timed_out()
    assert KafkaException(err).args[0] is err


class FakeProducer:
    """Implements ``ProducerLike`` plus the transactional API of ``confluent_kafka.Producer``.

    ``fail(value, attempt)`` returns the delivery error of that attempt (None: acknowledged);
    ``queue_full(value)`` makes that ``produce`` call raise BufferError; ``stuck`` keeps records in
    flight (flush returns how many are left); ``errors[method]`` are raised, one per call, by
    the transactional methods.
    """

    def __init__(
        self,
        log: Log,
        *,
        transactional: bool = False,
        fail: Callable[[bytes, int], FakeKafkaError | None] = lambda value, attempt: None,
        queue_full: Callable[[bytes], bool] = lambda value: False,
        stuck: bool = False,
        errors: dict[str, list[FakeKafkaError]] | None = None,
    ) -> None:
        self.log = log
        self.transactional = transactional
        self.fail = fail
        self.queue_full = queue_full
        self.stuck = stuck
        self.errors = errors or {}
        self.attempts: Counter[bytes] = Counter()
        self.in_flight: list[tuple[bytes, int, Callable[[Any, Any], None] | None]] = []
        self.in_txn = False
        self.txn_failed = False

    # --- ProducerLike ---------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        partition: int = -1,  # PARTITION_UA, confluent_kafka's default
        headers: Any = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
        timestamp: int = 0,
    ) -> None:
        assert value is not None
        if self.transactional and not self.in_txn:
            raise bad_state("produce outside a transaction")
        if self.queue_full(value):
            self.log.append(("buffer_full", value))
            raise BufferError("Local: Queue full")
        self.attempts[value] += 1
        self.log.append(("produce", value, topic, key, headers, partition))
        self.in_flight.append((value, self.attempts[value], on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        self.log.append(("poll", timeout))
        return self._deliver()

    def flush(self, timeout: float = -1.0) -> int:
        self.log.append(("flush", timeout))
        if self.stuck:
            return len(self.in_flight)
        self._deliver()
        return 0

    def _deliver(self) -> int:
        batch, self.in_flight = self.in_flight, []
        for value, attempt, cb in batch:
            err = self.fail(value, attempt)
            self.log.append(("failed" if err else "delivered", value))
            if err is not None and self.in_txn:
                self.txn_failed = True  # librdkafka: the transaction becomes abortable
            if cb is not None:
                cb(err, None)
        return len(batch)

    # --- transactions ---------------------------------------------------------------------------
    def _scripted_error(self, method: str) -> None:
        pending = self.errors.get(method)
        if pending:
            raise KafkaException(pending.pop(0))

    def begin_transaction(self) -> None:
        self.log.append(("begin_transaction",))
        if self.in_txn:
            raise bad_state("a transaction is already open")
        self.in_txn = True
        self.txn_failed = False

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1.0
    ) -> None:
        assert all(isinstance(tp, TopicPartition) for tp in positions)
        self.log.append(
            (
                "send_offsets",
                sorted((tp.topic, tp.partition, tp.offset) for tp in positions),
                group_metadata,
                timeout,
            )
        )
        if not self.in_txn:
            raise bad_state("no open transaction")
        self._scripted_error("send_offsets_to_transaction")

    def commit_transaction(self, timeout: float = -1.0) -> None:
        self.log.append(("commit_transaction", timeout))
        if not self.in_txn:
            raise bad_state("no open transaction")
        self._deliver()  # commit_transaction flushes first
        self._scripted_error("commit_transaction")
        if self.txn_failed:
            raise KafkaException(
                FakeKafkaError(
                    KafkaError._MSG_TIMED_OUT, "Local: Message timed out", abortable=True
                )
            )
        self.in_txn = False
        self.log.append(("txn_committed",))

    def abort_transaction(self, timeout: float = -1.0) -> None:
        self.log.append(("abort_transaction", timeout))
        if not self.in_txn:
            raise bad_state("no open transaction")
        self._scripted_error("abort_transaction")
        self.in_flight = []  # purged
        self.in_txn = False


class FakeConsumer:
    """What Checkpoint may use of ``confluent_kafka.Consumer``: commit and group metadata."""

    def __init__(self, log: Log, *, commit_errors: list[FakeKafkaError] | None = None) -> None:
        self.log = log
        self.commit_errors = commit_errors or []

    def commit(
        self,
        message: Any = None,
        *,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> None:
        assert message is None and offsets is not None
        assert all(isinstance(tp, TopicPartition) for tp in offsets)
        self.log.append(
            ("commit", sorted((tp.topic, tp.partition, tp.offset) for tp in offsets), asynchronous)
        )
        if self.commit_errors:
            raise KafkaException(self.commit_errors.pop(0))

    def consumer_group_metadata(self) -> Any:
        return GROUP_METADATA

    def store_offsets(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("Checkpoint commits offsets; it must not only store them")

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Checkpoint must not consume")

    def close(self) -> None:
        raise AssertionError("Checkpoint must not close the consumer")


class Stop(threading.Event):
    """The monitor's stop event; ``wait`` records the backoff instead of sleeping.

    ``on_wait`` runs inside ``wait`` (e.g. a SIGTERM arriving during the backoff).
    """

    def __init__(self, *, on_wait: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.on_wait = on_wait

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.on_wait is not None:
            self.on_wait()
        return self.is_set()


def out(
    log: Log, value: bytes, topic: str = "alerts", *, partition: int | None = None
) -> OutputRecord:
    return OutputRecord(
        topic,
        key=b"k-" + value,
        value=value,
        headers=[("h", b"1")],
        on_ack=lambda: log.append(("on_ack", value)),
        partition=partition,
    )


def snap(log: Log, p: int) -> OutputRecord:
    return out(log, b"snap-%d" % p, "changelog", partition=p)


def produced(r: OutputRecord) -> tuple[Any, ...]:
    """The log entry of ``r`` produced as given (partition -1 when the record has none)."""
    part = -1 if r.partition is None else r.partition
    return ("produce", r.value, r.topic, r.key, r.headers, part)


def kinds(log: Log) -> list[str]:
    return [e[0] for e in log]


def first(log: Log, entry: tuple[Any, ...]) -> int:
    return log.index(entry)


def make(
    log: Log,
    producer: FakeProducer,
    *,
    stop: threading.Event | None = None,
    consumer: FakeConsumer | None = None,
    failures: list[str] | None = None,
    transactional: bool = False,
) -> Checkpoint:
    return Checkpoint(
        producer,
        consumer or FakeConsumer(log),
        stop if stop is not None else Stop(),
        transactional=transactional,
        on_failure=None if failures is None else failures.append,
        retry_backoff=0.25,
        timeout=7.0,
    )


def fail_first(*values: bytes, times: int = 1) -> Callable[[bytes, int], FakeKafkaError | None]:
    return lambda value, attempt: (
        not_enough_replicas() if value in values and attempt <= times else None
    )


def always_fail(value: bytes, attempt: int) -> FakeKafkaError:
    return not_enough_replicas()


# ================================================================================================
# at-least-once
# ================================================================================================


def test_alo_outputs_are_produced_at_once_then_snapshots_flush_and_offset_commit() -> None:
    log: Log = []
    ck = make(log, FakeProducer(log))
    a, b = out(log, b"a"), out(log, b"b", "dead-letter")
    assert ck.add_output(a) is True
    assert ck.add_output(b) is True
    assert log == [produced(a), produced(b)]  # produced immediately, not at the checkpoint
    ck.add_offset("predictions", 0, 10)
    ck.add_offset("labels", 1, 4)
    s3 = snap(log, 3)
    assert ck.commit([s3]) is True
    assert log == [
        produced(a),
        produced(b),
        ("produce", b"snap-3", "changelog", b"k-snap-3", [("h", b"1")], 3),
        ("flush", 1.0),
        ("delivered", b"a"),
        ("on_ack", b"a"),
        ("delivered", b"b"),
        ("on_ack", b"b"),
        ("delivered", b"snap-3"),
        ("on_ack", b"snap-3"),
        ("commit", [("labels", 1, 5), ("predictions", 0, 11)], False),
    ]


def test_alo_snapshot_partition_is_passed_and_absent_partition_is_not() -> None:
    log: Log = []
    ck = make(log, FakeProducer(log))
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 5, 0)
    assert ck.commit([snap(log, 5), snap(log, 0)]) is True
    parts = {e[1]: e[5] for e in log if e[0] == "produce"}
    assert parts == {b"a": -1, b"snap-5": 5, b"snap-0": 0}


def test_alo_failed_output_is_produced_again_before_offsets_are_committed() -> None:
    log: Log = []
    failures: list[str] = []
    producer = FakeProducer(log, fail=fail_first(b"b"))
    stop = Stop()
    ck = make(log, producer, stop=stop, failures=failures)
    recs = [out(log, b"a"), out(log, b"b", "dead-letter"), out(log, b"c")]
    for r in recs:
        ck.add_output(r)
    ck.add_offset("predictions", 1, 7)
    assert ck.commit([]) is True
    assert log == [
        *map(produced, recs),
        ("flush", 1.0),
        ("delivered", b"a"),
        ("on_ack", b"a"),
        ("failed", b"b"),
        ("delivered", b"c"),
        ("on_ack", b"c"),
        produced(recs[1]),  # only the failed record, once more
        ("flush", 1.0),
        ("delivered", b"b"),
        ("on_ack", b"b"),
        ("commit", [("predictions", 1, 8)], False),
    ]
    assert failures == ["dead-letter"]
    assert stop.waits == [0.25]  # one backoff before the retry


def test_alo_failed_snapshot_is_produced_again_before_offsets_are_committed() -> None:
    log: Log = []
    failures: list[str] = []
    producer = FakeProducer(log, fail=fail_first(b"snap-2", times=2))
    ck = make(log, producer, failures=failures)
    ck.add_output(out(log, b"a"))
    ck.add_offset("labels", 2, 3)
    s2 = snap(log, 2)
    assert ck.commit([s2]) is True
    assert producer.attempts[b"snap-2"] == 3
    assert log.count(produced(s2)) == 3
    assert failures == ["changelog", "changelog"]
    # the offsets wait for the third, acknowledged, attempt of the snapshot
    assert log[-3:] == [
        ("delivered", b"snap-2"),
        ("on_ack", b"snap-2"),
        ("commit", [("labels", 2, 4)], False),
    ]
    assert kinds(log).count("commit") == 1


def test_alo_retries_until_acknowledged_with_backoff_each_time() -> None:
    log: Log = []
    failures: list[str] = []
    stop = Stop()
    producer = FakeProducer(log, fail=fail_first(b"x", times=4))
    ck = make(log, producer, stop=stop, failures=failures)
    ck.add_output(out(log, b"x"))
    ck.add_offset("labels", 3, 0)
    assert ck.commit([]) is True
    assert producer.attempts[b"x"] == 5
    assert failures == ["alerts"] * 4
    assert stop.waits == [0.25] * 4
    assert kinds(log).count("on_ack") == 1
    assert log[-1] == ("commit", [("labels", 3, 1)], False)
    assert first(log, ("on_ack", b"x")) < len(log) - 1


def test_alo_stop_during_persistent_failures_returns_false_and_commits_nothing() -> None:
    log: Log = []
    stop = Stop()
    failures: list[str] = []

    def on_failure(topic: str) -> None:
        failures.append(topic)
        if len(failures) == 3:
            stop.set()  # the monitor is asked to stop during the third failed attempt

    producer = FakeProducer(log, fail=always_fail)
    ck = Checkpoint(producer, FakeConsumer(log), stop, on_failure=on_failure, retry_backoff=0.25)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    before = ck.last_commit
    assert ck.commit([snap(log, 0)]) is False
    assert producer.attempts[b"a"] == 2  # a and snap-0 failed twice: stop came with the 3rd
    assert "commit" not in kinds(log)
    assert "on_ack" not in kinds(log)
    # nothing was forgotten: the interval is still pending
    assert ck.has_pending() is True
    assert ck.pending_events == 1
    assert ck.last_commit == before


def test_alo_failed_records_are_kept_across_a_stopped_commit() -> None:
    # stop is set while a delivery keeps failing; once cleared, the next commit resends it
    log: Log = []
    stop = Stop()
    failing = [True]
    producer = FakeProducer(
        log, fail=lambda value, attempt: not_enough_replicas() if failing[0] else None
    )
    ck = make(log, producer, stop=stop)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 9)
    stop.set()
    assert ck.commit([]) is False
    assert "commit" not in kinds(log)
    stop.clear()
    failing[0] = False
    n = len(log)
    assert ck.commit([]) is True
    assert log[n:] == [
        ("flush", 1.0),
        produced(out(log, b"a")),
        ("flush", 1.0),
        ("delivered", b"a"),
        ("on_ack", b"a"),
        ("commit", [("predictions", 0, 10)], False),
    ]


def test_alo_stop_already_set_and_delivery_fails_returns_false() -> None:
    log: Log = []
    stop = Stop()
    stop.set()
    producer = FakeProducer(log, fail=always_fail)
    ck = make(log, producer, stop=stop)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit([]) is False
    assert producer.attempts[b"a"] == 1
    assert kinds(log) == ["produce", "flush", "failed"]


def test_alo_stop_set_but_everything_acknowledged_still_commits() -> None:
    # the final checkpoint at shutdown runs with stop set: acknowledged outputs let offsets through
    log: Log = []
    stop = Stop()
    stop.set()
    ck = make(log, FakeProducer(log), stop=stop)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit([snap(log, 0)]) is True
    assert log[-1] == ("commit", [("predictions", 0, 6)], False)


def test_alo_stop_while_flush_cannot_finish_returns_false() -> None:
    log: Log = []
    stop = Stop()
    stop.set()
    ck = make(log, FakeProducer(log, stuck=True), stop=stop)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit([]) is False
    # one regular flush, then one last bounded grace flush, then give up
    assert [e for e in log if e[0] == "flush"] == [("flush", 1.0), ("flush", 10.0)]
    assert not {"commit", "on_ack"} & set(kinds(log))


def test_alo_full_local_queue_is_polled_until_produce_succeeds() -> None:
    log: Log = []
    full = [2]

    def queue_full(value: bytes) -> bool:
        full[0] -= 1
        return full[0] >= 0

    producer = FakeProducer(log, queue_full=queue_full)
    ck = make(log, producer)
    assert ck.add_output(out(log, b"a")) is True
    ck.add_offset("predictions", 0, 0)
    assert ck.commit([]) is True
    assert kinds(log) == [
        "buffer_full",
        "poll",
        "buffer_full",
        "poll",
        "produce",
        "flush",
        "delivered",
        "on_ack",
        "commit",
    ]
    assert producer.attempts[b"a"] == 1


def test_alo_full_local_queue_and_stop_returns_false() -> None:
    log: Log = []
    stop = Stop()
    full = [True]
    left = [50]  # a commit that ignored stop would get through after 50 polls

    def queue_full(value: bytes) -> bool:
        left[0] -= 1
        return full[0] and left[0] >= 0

    producer = FakeProducer(log, queue_full=queue_full)
    ck = make(log, producer, stop=stop)
    ck.add_offset("predictions", 0, 5)
    stop.set()
    # an output that cannot be queued, then a snapshot that cannot be queued either
    assert ck.add_output(out(log, b"a")) is False
    assert ck.commit([snap(log, 0)]) is False
    assert "produce" not in kinds(log)
    assert "commit" not in kinds(log)
    assert ck.has_pending() is True


def test_alo_offsets_are_max_plus_one_per_partition() -> None:
    for seed in range(3):
        rng = random.Random(seed)
        marks = [
            (rng.choice(["predictions", "labels"]), rng.randrange(4), rng.randrange(10_000))
            for _ in range(500)
        ]
        expected: dict[tuple[str, int], int] = {}
        for topic, part, off in marks:  # brute force: the highest offset seen, plus one
            expected[(topic, part)] = max(expected.get((topic, part), -1), off + 1)
        log: Log = []
        ck = make(log, FakeProducer(log))
        for m in marks:
            ck.add_offset(*m)
        assert ck.pending_events == 500
        assert ck.commit([]) is True
        commits = [e for e in log if e[0] == "commit"]
        assert commits == [("commit", sorted((t, p, o) for (t, p), o in expected.items()), False)]
        assert len(expected) == 8


def test_alo_offset_zero_is_committed_as_one_and_lower_offsets_do_not_rewind() -> None:
    log: Log = []
    ck = make(log, FakeProducer(log))
    ck.add_offset("predictions", 0, 0)
    ck.add_offset("labels", 0, 8)
    ck.add_offset("labels", 0, 3)
    assert ck.commit([]) is True
    assert log[-1] == ("commit", [("labels", 0, 9), ("predictions", 0, 1)], False)


def test_alo_offset_commit_error_returns_false_and_keeps_the_interval() -> None:
    log: Log = []
    consumer = FakeConsumer(log, commit_errors=[timed_out()])
    ck = make(log, FakeProducer(log), consumer=consumer)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 5)
    before = ck.last_commit
    assert ck.commit([]) is False
    assert ck.has_pending() is True
    assert ck.pending_events == 1
    assert ck.last_commit == before
    assert ck.commit([]) is True  # the same offsets, again
    assert [e for e in log if e[0] == "commit"] == [("commit", [("predictions", 0, 6)], False)] * 2
    assert ck.has_pending() is False


def test_alo_commit_clears_the_interval() -> None:
    log: Log = []
    ck = make(log, FakeProducer(log))
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 1)
    assert ck.commit([]) is True
    n = len(log)
    assert ck.commit([]) is True  # nothing new: nothing produced, no offsets committed
    assert not {"produce", "commit"} & set(kinds(log[n:]))


def test_pending_state_and_discard() -> None:
    log: Log = []
    ck = make(log, FakeProducer(log))
    assert ck.has_pending() is False
    assert ck.pending_events == 0
    ck.add_offset("predictions", 0, 1)
    ck.add_offset("predictions", 0, 2)
    ck.add_offset("labels", 1, 0)
    assert ck.has_pending() is True
    assert ck.pending_events == 3  # input events, not partitions
    ck.discard()
    assert ck.has_pending() is False
    assert ck.pending_events == 0
    ck.add_output(out(log, b"a"))  # an output alone is pending too
    assert ck.has_pending() is True
    assert ck.pending_events == 0
    ck.discard()
    assert ck.has_pending() is False
    assert ck.commit([]) is True
    assert "commit" not in kinds(log)  # the discarded offsets are never committed


def test_discard_forgets_failed_records() -> None:
    log: Log = []
    producer = FakeProducer(log, fail=fail_first(b"a"))
    ck = make(log, producer)
    ck.add_output(out(log, b"a"))
    producer.poll(0)  # the failure is reported before the checkpoint
    ck.discard()  # e.g. partitions lost: the interval is gone
    ck.add_offset("predictions", 0, 0)
    assert ck.commit([]) is True
    assert producer.attempts[b"a"] == 1


def test_last_commit_moves_only_on_success(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(checkpoint_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    log: Log = []
    consumer = FakeConsumer(log, commit_errors=[timed_out()])
    ck = make(log, FakeProducer(log), consumer=consumer)
    assert ck.last_commit == 100.0
    ck.add_offset("predictions", 0, 0)
    now[0] = 105.0
    assert ck.commit([]) is False
    assert ck.last_commit == 100.0
    now[0] = 107.0
    assert ck.commit([]) is True
    assert ck.last_commit == 107.0


def test_abort_without_transaction_only_forgets_the_interval() -> None:
    log: Log = []
    ck = make(log, FakeProducer(log))
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 0)
    ck.abort()
    assert ck.has_pending() is False
    assert "abort_transaction" not in kinds(log)


# ================================================================================================
# exactly-once
# ================================================================================================


def eos(log: Log, **kw: Any) -> tuple[Checkpoint, FakeProducer]:
    stop = kw.pop("stop", None)
    producer = FakeProducer(log, transactional=True, **kw)
    return make(log, producer, stop=stop, transactional=True), producer


def test_eos_order_begin_produce_snapshots_send_offsets_commit() -> None:
    log: Log = []
    ck, producer = eos(log)
    a, b = out(log, b"a"), out(log, b"b", "dead-letter")
    assert ck.add_output(a) is True
    assert log == [("begin_transaction",), produced(a)]  # the transaction opens lazily
    assert ck.add_output(b) is True
    ck.add_offset("predictions", 0, 10)
    ck.add_offset("labels", 2, 4)
    ck.add_offset("predictions", 0, 12)
    s2 = snap(log, 2)
    assert ck.commit([s2]) is True
    assert log == [
        ("begin_transaction",),
        produced(a),
        produced(b),
        ("produce", b"snap-2", "changelog", b"k-snap-2", [("h", b"1")], 2),
        ("send_offsets", [("labels", 2, 5), ("predictions", 0, 13)], GROUP_METADATA, 7.0),
        ("commit_transaction", 7.0),
        ("delivered", b"a"),
        ("on_ack", b"a"),
        ("delivered", b"b"),
        ("on_ack", b"b"),
        ("delivered", b"snap-2"),
        ("on_ack", b"snap-2"),
        ("txn_committed",),
    ]
    assert producer.in_txn is False
    assert ck.has_pending() is False
    assert ck.pending_events == 0


def test_eos_offsets_only_interval_opens_a_transaction_at_commit() -> None:
    log: Log = []
    ck, _ = eos(log)
    ck.add_offset("predictions", 1, 0)
    assert log == []
    assert ck.commit([snap(log, 1)]) is True
    assert kinds(log)[:4] == ["begin_transaction", "produce", "send_offsets", "commit_transaction"]
    assert log[-1] == ("txn_committed",)


def test_eos_commit_with_nothing_pending_is_a_no_op() -> None:
    log: Log = []
    ck, _ = eos(log)
    assert ck.has_pending() is False
    assert ck.commit([]) is True
    assert log == []
    # and again after a real commit
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 0)
    assert ck.commit([]) is True
    n = len(log)
    assert ck.commit([]) is True
    assert log[n:] == []


def test_eos_next_output_after_a_commit_begins_a_new_transaction() -> None:
    log: Log = []
    ck, _ = eos(log)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 0)
    assert ck.commit([]) is True
    assert ck.has_pending() is False
    n = len(log)
    ck.add_output(out(log, b"b"))
    assert log[n:] == [("begin_transaction",), produced(out(log, b"b"))]
    assert ck.has_pending() is True  # an output alone is pending
    ck.add_offset("predictions", 0, 1)
    assert ck.commit([]) is True
    assert kinds(log).count("begin_transaction") == 2
    assert kinds(log).count("txn_committed") == 2
    sent = [e[1] for e in log if e[0] == "send_offsets"]
    assert sent == [[("predictions", 0, 1)], [("predictions", 0, 2)]]


def test_eos_open_transaction_left_by_a_stopped_commit_is_still_pending() -> None:
    # a snapshot that cannot be queued at stop leaves the transaction open: it still needs a
    # commit or an abort, so it must not look settled
    log: Log = []
    stop = Stop()
    stop.set()
    ck, producer = eos(log, stop=stop, queue_full=lambda value: True)
    assert ck.commit([snap(log, 0)]) is False
    assert producer.in_txn is True
    assert ck.has_pending() is True
    assert "commit_transaction" not in kinds(log)


def test_eos_retriable_commit_error_is_retried_then_succeeds() -> None:
    log: Log = []
    stop = Stop()
    ck, _ = eos(log, stop=stop, errors={"commit_transaction": [timed_out(), timed_out()]})
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    assert ck.commit([]) is True
    assert [e for e in log if e[0] == "commit_transaction"] == [("commit_transaction", 7.0)] * 3
    assert stop.waits == [0.25, 0.25]
    assert kinds(log).count("send_offsets") == 1
    assert "abort_transaction" not in kinds(log)
    assert log[-1] == ("txn_committed",)
    assert ck.has_pending() is False


def test_eos_retriable_commit_error_gives_up_after_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(checkpoint_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))

    def advance() -> None:
        now[0] += 1.0

    log: Log = []
    stop = Stop(on_wait=advance)
    ck, _ = eos(log, stop=stop, errors={"commit_transaction": [timed_out()] * 1000})
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    with pytest.raises(KafkaException) as info:
        ck.commit([])
    assert info.value.args[0].retriable()
    attempts = kinds(log).count("commit_transaction")
    assert 2 <= attempts < 1000  # retried, but not forever (deadline: 10 x timeout)
    assert ck.has_pending() is True


@pytest.mark.parametrize("step", ["commit_transaction", "send_offsets_to_transaction"])
def test_eos_abortable_error_aborts_and_discards_the_interval(step: str) -> None:
    log: Log = []
    ck, producer = eos(log, errors={step: [abortable()]})
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    before = ck.last_commit
    with pytest.raises(TransactionAborted, match="old epoch"):
        ck.commit([snap(log, 0)])
    assert log[-1] == ("abort_transaction", 7.0)
    assert "txn_committed" not in kinds(log)
    assert producer.in_txn is False
    assert ck.has_pending() is False
    assert ck.pending_events == 0
    assert ck.last_commit == before
    # the next interval starts a new transaction with only its own offsets
    ck.add_output(out(log, b"b"))
    ck.add_offset("predictions", 0, 4)
    assert ck.commit([]) is True
    sent = [e for e in log if e[0] == "send_offsets"]
    assert sent[-1][1] == [("predictions", 0, 5)]
    assert kinds(log).count("begin_transaction") == 2
    assert log[-1] == ("txn_committed",)


def test_eos_failed_delivery_aborts_the_transaction() -> None:
    log: Log = []
    failures: list[str] = []
    producer = FakeProducer(log, transactional=True, fail=fail_first(b"a"))
    ck = make(log, producer, transactional=True, failures=failures)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    with pytest.raises(TransactionAborted):
        ck.commit([])
    assert failures == ["alerts"]
    assert producer.attempts[b"a"] == 1  # not produced again into a doomed transaction
    assert "abort_transaction" in kinds(log)
    assert ck.has_pending() is False


def test_eos_fatal_error_propagates_without_abort() -> None:
    log: Log = []
    ck, _ = eos(log, errors={"commit_transaction": [fatal()]})
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    with pytest.raises(KafkaException) as info:
        ck.commit([])
    assert info.value.args[0].code() == KafkaError._FENCED
    assert kinds(log).count("commit_transaction") == 1  # not retried
    assert "abort_transaction" not in kinds(log)


def test_eos_abort_aborts_the_open_transaction() -> None:
    log: Log = []
    ck, producer = eos(log)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    ck.abort()
    assert log[-1] == ("abort_transaction", 7.0)
    assert producer.in_txn is False
    assert ck.has_pending() is False
    ck.abort()  # nothing open: no second abort_transaction
    assert kinds(log).count("abort_transaction") == 1


def test_eos_never_commits_offsets_through_the_consumer() -> None:
    log: Log = []
    ck, _ = eos(log)
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    assert ck.commit([]) is True
    assert not {"commit", "flush"} & set(kinds(log))


# ================================================================================================
# bugs
# ================================================================================================


def acked_before_offsets(log: Log, value: bytes) -> bool:
    """True if no offsets were committed, or ``value`` was acknowledged before they were."""
    done = [i for i, e in enumerate(log) if e[0] in ("commit", "txn_committed")]
    if not done:
        return True
    acked = [i for i, e in enumerate(log) if e == ("delivered", value)]
    return bool(acked) and acked[0] < done[0]


def test_alo_output_not_queued_at_stop_is_lost_by_the_next_commit() -> None:
    log: Log = []
    stop = Stop()
    full = [True]
    producer = FakeProducer(log, queue_full=lambda value: full[0])
    ck = make(log, producer, stop=stop)
    ck.add_offset("predictions", 0, 5)
    stop.set()
    assert ck.add_output(out(log, b"a")) is False  # (app.process_batch ignores this result)
    full[0] = False  # the queue drains; the final checkpoint at shutdown runs
    ck.commit([])
    assert acked_before_offsets(log, b"a"), log


def test_eos_output_not_queued_at_stop_is_lost_by_the_next_commit() -> None:
    log: Log = []
    stop = Stop()
    full = [True]
    ck, _ = eos(log, stop=stop, queue_full=lambda value: full[0])
    ck.add_offset("predictions", 0, 5)
    stop.set()
    assert ck.add_output(out(log, b"a")) is False
    full[0] = False
    with contextlib.suppress(TransactionAborted):  # an acceptable outcome: nothing committed
        ck.commit([])
    assert acked_before_offsets(log, b"a"), log


def test_alo_retry_interrupted_by_stop_forgets_the_rest_of_the_failed_records() -> None:
    log: Log = []
    full = [False]

    def sigterm_with_full_queue() -> None:
        stop.set()  # stop arrives during the retry backoff ...
        full[0] = True  # ... while the local queue is full

    stop = Stop(on_wait=sigterm_with_full_queue)
    producer = FakeProducer(log, fail=fail_first(b"a", b"b"), queue_full=lambda value: full[0])
    ck = make(log, producer, stop=stop)
    ck.add_output(out(log, b"a"))
    ck.add_output(out(log, b"b"))
    ck.add_offset("predictions", 0, 5)
    assert ck.commit([]) is False
    full[0] = False  # the final checkpoint at shutdown, queue drained, stop still set
    ck.commit([])
    assert acked_before_offsets(log, b"a"), log
    assert acked_before_offsets(log, b"b"), log


def test_eos_retriable_send_offsets_error_is_not_retried() -> None:
    log: Log = []
    ck, _ = eos(log, errors={"send_offsets_to_transaction": [timed_out()]})
    ck.add_output(out(log, b"a"))
    ck.add_offset("predictions", 0, 3)
    assert ck.commit([]) is True
    assert kinds(log).count("send_offsets") == 2
    assert log[-1] == ("txn_committed",)
