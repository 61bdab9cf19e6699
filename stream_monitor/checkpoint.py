"""The delivery guarantee, written in one place.

Between two checkpoints the application produces its outputs (alert events, dead letters) as
batches are processed and records the input offsets it has processed. ``Checkpoint.commit()``
then makes everything since the previous checkpoint durable, in this order:

``exactly_once`` (a Kafka transaction spans the whole interval):

1. the outputs are already in the open transaction;
2. the state snapshots of every partition touched since the last checkpoint are produced to the
   changelog topic, in the same transaction;
3. the input offsets are added to the transaction (``send_offsets_to_transaction``, fenced by
   the consumer group's metadata);
4. the transaction is committed. Outputs, state and offsets become visible together or not at
   all: a ``read_committed`` consumer of ``alerts`` sees each alert once. If the commit fails
   with an abortable error the transaction is aborted and the caller rewinds its state to the
   last committed snapshots and seeks back to their offsets (``TransactionAborted``).

``at_least_once``:

1. the outputs and the state snapshots are produced;
2. the producer is flushed and every record acknowledged (``acks=all``); failed records are
   produced again, with backoff, until acknowledged or the monitor stops;
3. only then are the input offsets committed, synchronously.

A crash before 3 replays the interval from the last snapshot: alerts may be published twice, with
the same deterministic ``alert_id`` (the idempotency key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream_monitor.errors import StreamMonitorError
from stream_monitor.kafka.protocols import ConsumerLike, ProducerLike

__all__ = ["Checkpoint", "OutputRecord", "ProducerWedged", "TransactionAborted"]

log = logging.getLogger(__name__)


class TransactionAborted(StreamMonitorError):
    """The open transaction was aborted: state must be rewound to the last checkpoint."""


class ProducerWedged(TransactionAborted):
    """A transactional call did not return within twice its timeout.

    librdkafka can block ``send_offsets_to_transaction`` forever once the broker that was the
    group coordinator disappeared from the metadata (librdkafka issue #5511, seen here after a
    single broker restart). The caller replaces the producer: a new one with the same
    ``transactional.id`` fences the stuck one and the coordinator aborts its transaction, so the
    caller rewinds exactly as after an abort.
    """


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    on_ack: Callable[[], None] | None = None
    partition: int | None = None


class Checkpoint:
    """Collects the outputs and input offsets since the last checkpoint and commits them.

    ``consumer`` is used for ``commit`` (at-least-once) and ``consumer_group_metadata``
    (exactly-once); ``transactional`` selects the guarantee (the producer must then have a
    ``transactional.id`` and ``init_transactions()`` must have been called).
    """

    def __init__(
        self,
        producer: ProducerLike,
        consumer: ConsumerLike,
        stop: threading.Event,
        *,
        transactional: bool = False,
        on_failure: Callable[[str], None] | None = None,
        retry_backoff: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._stop = stop
        self.transactional = transactional
        self._on_failure = on_failure
        self._backoff = retry_backoff
        self._timeout = timeout
        self._offsets: dict[tuple[str, int], int] = {}
        #: Records whose delivery failed (at-least-once: produced again before the commit).
        self._failed: list[OutputRecord] = []
        self._unconfirmed = 0
        self._in_txn = False
        self.pending_events = 0
        self.last_commit = time.monotonic()

    # --- collecting ---------------------------------------------------------------------------
    def add_output(self, record: OutputRecord) -> bool:
        """Produce ``record`` now (inside the open transaction when transactional). Returns
        False if the monitor stopped while the local producer queue stayed full."""
        if self.transactional:
            self._begin()
        self._unconfirmed += 1
        if not self._produce(record):
            self._failed.append(record)  # never queued: must not be committed past
            return False
        return True

    def add_offset(self, topic: str, partition: int, offset: int) -> None:
        """Mark ``offset`` of ``topic``/``partition`` as processed (the next to read is +1)."""
        key = (topic, partition)
        if offset + 1 > self._offsets.get(key, -1):
            self._offsets[key] = offset + 1
        self.pending_events += 1

    def add_offsets(self, topic: str, partition: int, offset: int, count: int) -> None:
        """:meth:`add_offset` of ``count`` records of ``topic``/``partition`` whose highest
        offset is ``offset``."""
        key = (topic, partition)
        if offset + 1 > self._offsets.get(key, -1):
            self._offsets[key] = offset + 1
        self.pending_events += count

    def has_pending(self) -> bool:
        return bool(self._offsets or self._unconfirmed or self._in_txn)

    # --- committing ---------------------------------------------------------------------------
    def commit(self, snapshots: list[OutputRecord]) -> bool:
        """Run the steps of the module docstring. Returns False if the monitor was stopped
        before everything was acknowledged (nothing was committed: the interval is replayed).
        Raises ``TransactionAborted`` when the transaction had to be aborted."""
        ok = self._commit_txn(snapshots) if self.transactional else self._commit_plain(snapshots)
        if ok:
            self.discard()
            self.last_commit = time.monotonic()
        return ok

    def _commit_plain(self, snapshots: list[OutputRecord]) -> bool:
        for rec in snapshots:
            if not self._produce(rec):
                return False
        while True:
            if not self._flush():
                return False
            failed, self._failed = self._failed, []
            if not failed:
                break
            if self._stop.is_set():
                self._failed = failed
                return False
            log.warning("delivery failed, retrying records=%d", len(failed))
            self._stop.wait(self._backoff)
            for i, rec in enumerate(failed):
                if not self._produce(rec):
                    self._failed.extend(failed[i:])
                    return False
        if self._offsets:
            tps = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
            try:
                self._consumer.commit(offsets=tps, asynchronous=False)
            except KafkaException as exc:
                log.warning("offset commit failed error=%s", exc)
                return False
        return True

    def _flush(self) -> bool:
        while self._producer.flush(1.0) > 0:
            if self._stop.is_set() and self._producer.flush(10.0) > 0:
                return False
        return True

    def _commit_txn(self, snapshots: list[OutputRecord]) -> bool:
        if not self._offsets and not snapshots and not self._in_txn:
            return True
        self._begin()
        for rec in snapshots:
            if not self._produce(rec):
                return False
        if self._failed:  # an output never reached the producer: this interval cannot commit
            self.abort()
            raise TransactionAborted("an output could not be queued before the commit")
        try:
            if self._offsets:
                tps = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
                meta = self._consumer.consumer_group_metadata()
                producer: Any = self._producer
                self._retrying(
                    lambda: self._bounded(
                        lambda: producer.send_offsets_to_transaction(tps, meta, self._timeout),
                        "send_offsets_to_transaction",
                    )
                )
            self._retrying(
                lambda: self._bounded(
                    lambda: self._producer.commit_transaction(self._timeout),  # type: ignore[attr-defined]
                    "commit_transaction",
                )
            )
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.txn_requires_abort():
                log.warning("transaction aborted error=%s", err)
                self.abort()
                raise TransactionAborted(str(err)) from exc
            raise
        self._in_txn = False
        return True

    def _bounded(self, op: Callable[[], Any], what: str) -> Any:
        """Run a blocking transactional call with a deadline (see ``ProducerWedged``)."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = op()
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"txn-{what}", daemon=True)
        worker.start()
        worker.join(2 * self._timeout)
        if worker.is_alive():
            self._in_txn = False
            self.discard()
            raise ProducerWedged(f"{what} did not return within {2 * self._timeout:.0f} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def replace_producer(self, producer: ProducerLike) -> None:
        """Use a new producer (after ``ProducerWedged``); nothing is pending any more."""
        self._producer = producer
        self._in_txn = False
        self.discard()

    def _retrying(self, op: Callable[[], Any]) -> None:
        deadline = time.monotonic() + 10 * self._timeout
        while True:
            try:
                op()
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not err.retriable() or time.monotonic() > deadline or self._stop.is_set():
                    raise
                log.info("retrying transaction step error=%s", err)
                self._stop.wait(self._backoff)

    def abort(self) -> None:
        """Abort the open transaction (if any) and forget the interval."""
        if self._in_txn:
            try:
                self._producer.abort_transaction(self._timeout)  # type: ignore[attr-defined]
            except KafkaException as exc:
                log.warning("abort failed error=%s", exc)
                raise
        self._in_txn = False
        self.discard()

    def discard(self) -> None:
        """Forget the interval: what was committed, or what is lost with the partitions."""
        self._offsets = {}
        self._failed = []
        self._unconfirmed = 0
        self.pending_events = 0

    # --- producing ----------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._in_txn:
            self._producer.begin_transaction()  # type: ignore[attr-defined]
            self._in_txn = True

    def _produce(self, rec: OutputRecord) -> bool:
        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self._failed.append(rec)
                if self._on_failure is not None:
                    self._on_failure(rec.topic)
                log.warning("delivery error topic=%s error=%s", rec.topic, err)
            elif rec.on_ack is not None:
                rec.on_ack()

        kwargs: dict[str, Any] = {}
        if rec.partition is not None:
            kwargs["partition"] = rec.partition
        while True:
            try:
                self._producer.produce(
                    rec.topic,
                    value=rec.value,
                    key=rec.key,
                    headers=rec.headers,
                    on_delivery=delivered,
                    **kwargs,
                )
                return True
            except BufferError:
                if self._stop.is_set():
                    return False
                self._producer.poll(0.1)
