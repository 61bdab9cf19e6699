"""Forward alert events from Kafka to HTTP alert sinks (``stream-monitor forward``).

A consumer group of its own (``stream-monitor-forward`` by default) reads the alerts topic
(``read_committed``, so an aborted transaction of ``stream-monitor run`` pages nobody) and hands
each alert to one or more :class:`~stream_monitor.alerts.http_sinks.HttpAlertSink`
(:class:`~stream_monitor.alerts.http_sinks.AlertmanagerSink`,
:class:`~stream_monitor.alerts.http_sinks.PagerDutySink`, built from the command line by
:func:`~stream_monitor.alerts.http_sinks.sinks_from_args`), which POST it as
:mod:`stream_monitor.alerts.routing` maps it, with their delivery policy (timeout, retries with
backoff, giving up). A record's offset is committed only after every sink settled it (posted or
given up), so a crash re-posts (both APIs are idempotent for a repeated alert); a stop while a
sink waits to retry leaves the record uncommitted. A record that is not an alert event is logged
and skipped.

Between records the forwarder calls every sink's ``tick``: the Alertmanager sink re-posts the
alerts still firing every ``resend_seconds`` (Alertmanager resolves an alert that is not posted
again after its ``resolve_timeout``; Prometheus re-sends for the same reason). When a sink
remembers firing alerts (``remembers_firing``), the forwarder reads each partition it is
assigned up to the group's committed offset (alerts are few) and hands those alerts to the
sinks' ``restore``, so that a restart or a rebalance does not let Alertmanager resolve them on
its own; the incidents of a revoked partition go to the sinks' ``forget`` (the partition's new
owner re-posts them).

Examples
--------
>>> from stream_monitor.alerts.http_sinks import PagerDutySink
>>> from stream_monitor.config import MonitorConfig
>>> cfg = MonitorConfig(bootstrap_servers="127.0.0.1:9092")
>>> fw = Forwarder(cfg, [PagerDutySink("KEY", url="http://127.0.0.1:9/")])
>>> fw.topic, fw.group_id, fw.stats.posted, fw.stats.attempts
('alerts', 'stream-monitor-forward', 0, 0)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pydantic import ValidationError

from stream_monitor.alerts.http_sinks import HttpAlertSink
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import AlertEvent
from stream_monitor.kafka.clients import client_config

__all__ = [
    "DEFAULT_GROUP_ID",
    "ForwardStats",
    "Forwarder",
]

log = logging.getLogger(__name__)

DEFAULT_GROUP_ID = "stream-monitor-forward"


@dataclass
class ForwardStats:
    """Counters of one forwarder (also logged when it stops): alerts ``posted`` and ``failed``
    (given up) and ``resent``, and HTTP requests made (``attempts``), summed over its sinks (an
    alert posted to two sinks counts twice); records ``skipped`` as not alert events."""

    posted: int = 0
    failed: int = 0
    skipped: int = 0
    resent: int = 0
    attempts: int = 0


@dataclass
class Forwarder:
    """Consume the alerts topic and deliver every alert to each of ``sinks``; see the module
    doc.

    Parameters
    ----------
    cfg
        Bootstrap servers, security, consumer overrides and the alerts topic.
    sinks
        Where alerts go, each in turn (at least one); the forwarder stops and closes them.
    topic
        Default: ``cfg.topics.alerts``.
    group_id
        The consumer group, whose committed offsets say what was delivered.
    from_beginning
        Where a new group starts: the oldest retained alert, or only new ones (the default).
    """

    cfg: MonitorConfig
    sinks: Sequence[HttpAlertSink]
    topic: str | None = None
    group_id: str = DEFAULT_GROUP_ID
    from_beginning: bool = False

    def __post_init__(self) -> None:
        self.sinks = tuple(self.sinks)
        if not self.sinks:
            raise ValueError("a forwarder needs at least one sink")
        self._stop = threading.Event()
        self._skipped = 0
        #: The partition of each incident last seen firing (to forget it when revoked).
        self._partition_of: dict[str, int] = {}
        if self.topic is None:
            self.topic = self.cfg.topics.alerts

    @property
    def stats(self) -> ForwardStats:
        """The counters so far (a snapshot)."""
        out = ForwardStats(skipped=self._skipped)
        for sink in self.sinks:
            c = sink.counts
            out.posted += c.posted
            out.failed += c.failed
            out.resent += c.resent
            out.attempts += c.attempts
        return out

    # --- lifecycle ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop soon: at once if a sink waits to retry (that record stays uncommitted)."""
        self._stop.set()
        for sink in self.sinks:
            sink.stop()

    def _consumer_config(self, group_id: str, reset: str) -> dict[str, Any]:
        return {
            **client_config(self.cfg),
            **self.cfg.consumer_overrides,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": reset,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }

    def run(self) -> ForwardStats:
        """Forward until :meth:`stop`; return the counters."""
        assert self.topic is not None
        reset = "earliest" if self.from_beginning else "latest"
        consumer = Consumer(self._consumer_config(self.group_id, reset))
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "forwarding topic=%s group=%s to=%s",
            self.topic,
            self.group_id,
            ", ".join(map(repr, self.sinks)),
        )
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is not None and not self._handle(consumer, msg):
                    break
                for sink in self.sinks:
                    sink.tick()
        finally:
            consumer.close()
            for sink in self.sinks:
                sink.close()
            log.info("forwarder stopped %s", self.stats)
        return self.stats

    # --- one record ---------------------------------------------------------------------------
    def _handle(self, consumer: Consumer, msg: Any) -> bool:
        """Deliver one record; False when stopped before it was settled (nothing committed)."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error=%s", err)
            return True
        alert = _parse(msg.value())
        if alert is None:
            self._skipped += 1
            log.warning(
                "skipping a record that is not an alert event partition=%d offset=%d",
                msg.partition(),
                msg.offset(),
            )
        elif not self._deliver(alert, msg.partition()):
            return False
        try:
            consumer.commit(message=msg, asynchronous=False)
        except Exception as exc:  # a rebalance in progress: the record may be posted again
            log.warning("offset commit failed partition=%d: %s", msg.partition(), exc)
        return True

    def _deliver(self, alert: AlertEvent, partition: int) -> bool:
        """Hand ``alert`` to every sink; False when one was stopped before settling it."""
        for sink in self.sinks:
            if sink.deliver(alert) == "stopped":
                return False
        self._track(alert, partition)
        return True

    def _track(self, alert: AlertEvent, partition: int) -> None:
        if alert.status != "resolved":  # firing or updated
            self._partition_of[alert.dedup_key] = partition
        else:
            self._partition_of.pop(alert.dedup_key, None)

    # --- rebalances ---------------------------------------------------------------------------
    def _on_revoke(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in parts}
        keys = [k for k, p in self._partition_of.items() if p in gone]
        for key in keys:
            del self._partition_of[key]
        for sink in self.sinks:
            sink.forget(keys)

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        if not parts or not any(sink.remembers_firing for sink in self.sinks):
            return
        ends: dict[int, int] = {}
        try:
            for tp in consumer.committed(parts, timeout=10):
                if tp.offset >= 0:
                    ends[tp.partition] = tp.offset
                elif not self.from_beginning:  # a new group starts at the end: learn it all
                    ends[tp.partition] = consumer.get_watermark_offsets(tp, timeout=10)[1]
        except Exception as exc:
            log.warning("could not read committed offsets to find firing alerts: %s", exc)
            return
        ends = {p: e for p, e in ends.items() if e > 0}
        if not ends:
            return
        delivered = self._rebuild(ends)
        for alert, partition in delivered:
            self._track(alert, partition)
        for sink in self.sinks:
            sink.restore(a for a, _p in delivered)  # the firing ones are re-posted at once
        found = sum(1 for p in self._partition_of.values() if p in ends)
        log.info("firing alerts found on assignment n=%d", found)

    def _rebuild(self, ends: dict[int, int], timeout: float = 30.0) -> list[tuple[AlertEvent, int]]:
        """Read partitions up to ``ends`` (exclusive): the latest alert of each incident
        delivered before (an incident stays on one partition), with its partition."""
        assert self.topic is not None
        conf = self._consumer_config(f"{self.group_id}-rebuild", "earliest")
        conf["enable.partition.eof"] = True
        reader = Consumer(conf)
        pending = dict(ends)
        latest: dict[str, tuple[AlertEvent, int]] = {}
        reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline:
                for m in reader.consume(500, 0.5):
                    p, offset, err = m.partition(), m.offset(), m.error()
                    if p is None or p not in pending:
                        continue
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.pop(p, None)
                        continue
                    if offset is None or offset >= pending[p]:
                        pending.pop(p, None)
                        continue
                    alert = _parse(m.value())
                    if alert is not None:
                        latest[alert.dedup_key] = (alert, p)
                    if offset + 1 >= pending[p]:
                        pending.pop(p, None)
        finally:
            reader.close()
        if pending:
            log.warning("gave up reading firing alerts of partitions=%s", sorted(pending))
        return list(latest.values())


def _parse(value: bytes | None) -> AlertEvent | None:
    if not value:
        return None
    try:
        return AlertEvent.model_validate(orjson.loads(value))
    except (orjson.JSONDecodeError, ValidationError, TypeError):
        return None
