"""The delivery guarantee, written in one place.

``Checkpoint.commit()`` makes a batch's effects durable in this order:

1. every output record of the batch (alert events, dead letters) has been produced;
2. the producer is flushed and every record acknowledged by the broker (``acks=all``); records
   that failed are produced again, with backoff, until acknowledged or the monitor stops;
3. only then are the input offsets of the batch stored; the consumer's background auto-commit
   (or the synchronous commit at revocation and shutdown) commits stored offsets only.

So an input record's offset is never committed before the outputs it caused are in Kafka:
at-least-once. A crash between 2 and 3 redelivers the batch and may publish an alert twice; its
``alert_id`` is deterministic, so consumers deduplicate on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from stream_monitor.kafka.protocols import ConsumerLike, ProducerLike

__all__ = ["Checkpoint", "OutputRecord"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
    on_ack: Callable[[], None] | None = None


class Checkpoint:
    """Collects one batch's outputs and input offsets, and commits them in the order above."""

    def __init__(
        self,
        producer: ProducerLike,
        consumer: ConsumerLike,
        stop: threading.Event,
        on_failure: Callable[[str], None] | None = None,
        retry_backoff: float = 0.5,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._stop = stop
        self._on_failure = on_failure
        self._backoff = retry_backoff
        self._outputs: list[OutputRecord] = []
        self._offsets: dict[tuple[str, int], int] = {}

    def add_output(self, record: OutputRecord) -> None:
        self._outputs.append(record)

    def add_offset(self, topic: str, partition: int, offset: int) -> None:
        """Mark ``offset`` of ``topic``/``partition`` as processed (the next to read is +1)."""
        key = (topic, partition)
        if offset + 1 > self._offsets.get(key, -1):
            self._offsets[key] = offset + 1

    def commit(self) -> bool:
        """Run steps 1-3. Returns False if the monitor was stopped before every output was
        acknowledged, in which case no offset was stored (the batch will be redelivered)."""
        pending = self._outputs
        while pending:
            failed: list[OutputRecord] = []
            for rec in pending:
                if not self._produce(rec, failed):
                    return False  # stopped while the local queue stayed full
            while self._producer.flush(1.0) > 0:
                if self._stop.is_set() and self._producer.flush(10.0) > 0:
                    return False
            if failed:
                if self._stop.is_set():
                    return False
                log.warning("delivery failed, retrying records=%d", len(failed))
                self._stop.wait(self._backoff)
            pending = failed
        self._outputs = []
        if self._offsets:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
            )
            self._offsets = {}
        return True

    def _produce(self, rec: OutputRecord, failed: list[OutputRecord]) -> bool:
        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failed.append(rec)
                if self._on_failure is not None:
                    self._on_failure(rec.topic)
                log.warning("delivery error topic=%s error=%s", rec.topic, err)
            elif rec.on_ack is not None:
                rec.on_ack()

        while True:
            try:
                self._producer.produce(
                    rec.topic,
                    value=rec.value,
                    key=rec.key,
                    headers=rec.headers,
                    on_delivery=delivered,
                )
                return True
            except BufferError:
                if self._stop.is_set():
                    return False
                self._producer.poll(0.1)

    def discard(self) -> None:
        """Forget the batch (partitions lost): nothing produced, nothing stored."""
        self._outputs = []
        self._offsets = {}
