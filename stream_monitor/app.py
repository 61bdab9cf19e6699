"""The application: consume both input topics in batches, monitor, publish, commit.

One loop iteration is one batch:

    consume -> decode (ok | dead letter) -> PartitionState.process -> alert events
            -> Checkpoint.commit (produce, wait for acks, store offsets)

State belongs to partitions: each assigned partition number of the predictions topic (and the
same partition of the co-partitioned labels topic) has one ``PartitionState``, created on
assignment and dropped on revocation (a later release checkpoints it to a changelog topic).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from stream_monitor.checkpoint import Checkpoint, OutputRecord
from stream_monitor.config import MonitorConfig
from stream_monitor.errors import ConfigError, TopicsNotReady
from stream_monitor.events.decode import DeadLetter, dead_letter_headers, decode_record
from stream_monitor.events.schema import AlertEvent, LabelEvent, PredictionEvent
from stream_monitor.kafka import clients
from stream_monitor.metrics.collector import StateCollector
from stream_monitor.metrics.instruments import Instruments
from stream_monitor.metrics.server import HealthState, MetricsServer
from stream_monitor.monitor.partition import PartitionState

__all__ = ["Application"]

log = logging.getLogger(__name__)


class _BurstLog:
    """Logs the first occurrence, then at most one summary per ``interval`` seconds."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.last = float("-inf")
        self.suppressed = 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            extra = (
                f" (and {self.suppressed} more since the last report)" if self.suppressed else ""
            )
            log.warning(msg + extra, *args)
            self.last = now
            self.suppressed = 0
        else:
            self.suppressed += 1


class Application:
    """Runs the monitor against a Kafka cluster until ``stop`` is set.

    Every I/O dependency can be injected: the registry (a fresh one per instance by default),
    the clock, and the client factories.
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        serve_metrics: bool = True,
        on_alert: Callable[[AlertEvent], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self.metrics = Instruments(self.registry)
        self.health = HealthState()
        self.lock = threading.Lock()
        self.states: dict[int, PartitionState] = {}
        self.registry.register(StateCollector(lambda: self.states, self.lock))
        self.stop_event = threading.Event()
        self.on_alert = on_alert
        self._serve_metrics = serve_metrics
        self.server: MetricsServer | None = None
        self._dead_log = _BurstLog(10.0, clock)
        self._lag_at = 0.0
        self._assigned: list[TopicPartition] = []
        self._consumer: Any = None
        self._checkpoint: Checkpoint | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        cfg = self.cfg
        if self._serve_metrics:
            self.server = MetricsServer(
                self.registry, self.health, cfg.metrics_host, cfg.metrics_port
            )
            self.server.start()
            log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, self.server.port)
        admin = clients.make_admin(cfg)
        self._wait_for_topics(admin)
        if self.stop_event.is_set():
            self._shutdown_server()
            return
        producer = clients.make_producer(cfg)
        consumer = clients.make_consumer(cfg, error_cb=self._on_client_error)
        self._consumer = consumer
        self._checkpoint = Checkpoint(
            producer,
            consumer,
            self.stop_event,
            on_failure=lambda t: self.metrics.delivery_failures.labels(topic=t).inc(),
        )
        try:
            consumer.subscribe(
                [cfg.topics.predictions, cfg.topics.labels],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info(
                "consuming group=%s topics=%s,%s",
                cfg.group_id,
                cfg.topics.predictions,
                cfg.topics.labels,
            )
            while not self.stop_event.is_set():
                msgs = consumer.consume(cfg.batch_size, cfg.batch_timeout_seconds)
                if msgs:
                    self.process_batch(msgs)
                self._update_lag(consumer)
        finally:
            self.health.alive = False
            self.health.reason = "stopping"
            if self._checkpoint.commit():
                _commit_sync(consumer)
            consumer.close()
            producer.flush(10.0)
            self._shutdown_server()
            log.info("stopped")

    def _shutdown_server(self) -> None:
        if self.server is not None:
            self.server.stop()

    def _wait_for_topics(self, admin: Any) -> None:
        while not self.stop_event.is_set():
            try:
                clients.ensure_output_topics(admin, self.cfg)
                clients.check_input_topics(admin, self.cfg)
                self.health.broker_reachable = True
                return
            except TopicsNotReady as exc:
                self.health.broker_reachable = True
                self.health.reason = str(exc)
                log.info("waiting: %s", exc)
            except ConfigError:
                raise
            except Exception as exc:
                self.health.broker_reachable = False
                self.health.reason = f"broker unreachable: {exc}"
                log.warning("waiting for the broker error=%s", exc)
            self.stop_event.wait(2.0)

    # --- rebalances ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        with self.lock:
            for tp in partitions:
                if tp.partition not in self.states:
                    self.states[tp.partition] = PartitionState(tp.partition, self.cfg)
            self._assigned = list(partitions)
        self._set_assignment_gauges()
        self.health.partitions_assigned = bool(partitions)
        self.health.reason = "ready" if partitions else "no partitions assigned"
        log.info("assigned partitions=%s", _fmt(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._checkpoint is not None and self._checkpoint.commit():
            _commit_sync(consumer)
        self._drop(partitions)
        log.info("revoked partitions=%s", _fmt(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._checkpoint is not None:
            self._checkpoint.discard()
        self._drop(partitions)
        log.warning("lost partitions=%s", _fmt(partitions))

    def _drop(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        with self.lock:
            self._assigned = [tp for tp in self._assigned if (tp.topic, tp.partition) not in gone]
            kept = {tp.partition for tp in self._assigned}
            for p in list(self.states):
                if p not in kept:
                    del self.states[p]
        self._set_assignment_gauges()
        self.health.partitions_assigned = bool(self._assigned)
        for topic, part in gone:
            with contextlib.suppress(KeyError):  # never had a lag sample
                self.metrics.consumer_lag.remove(topic, str(part))

    def _set_assignment_gauges(self) -> None:
        for topic in (self.cfg.topics.predictions, self.cfg.topics.labels):
            n = sum(1 for tp in self._assigned if tp.topic == topic)
            self.metrics.assigned_partitions.labels(topic=topic).set(n)

    def _on_client_error(self, err: KafkaError) -> None:
        self.metrics.consumer_errors.inc()
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.health.broker_reachable = False
            self.health.reason = f"broker unreachable: {err.str()}"
        log.warning("kafka client error=%s", err.str())

    # --- the batch ----------------------------------------------------------------------------
    def process_batch(self, msgs: list[Any]) -> list[AlertEvent]:
        """Decode, monitor, publish and commit one batch; return the alerts it published."""
        started = time.perf_counter()
        cfg = self.cfg
        assert self._checkpoint is not None
        ckpt = self._checkpoint
        preds: dict[int, list[PredictionEvent]] = {}
        labels: dict[int, list[LabelEvent]] = {}
        dead: list[DeadLetter] = []
        newest: dict[str, float] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.metrics.consumer_errors.inc()
                    log.warning("consume error=%s", err.str())
                continue
            topic = m.topic()
            self.metrics.events_consumed.labels(topic=topic).inc()
            ckpt.add_offset(topic, m.partition(), m.offset())
            if topic == cfg.topics.predictions:
                ev = decode_record(m, kind="prediction", max_bytes=cfg.limits.max_event_bytes)
                if isinstance(ev, PredictionEvent):
                    preds.setdefault(m.partition(), []).append(ev)
            else:
                ev = decode_record(m, kind="label", max_bytes=cfg.limits.max_event_bytes)
                if isinstance(ev, LabelEvent):
                    labels.setdefault(m.partition(), []).append(ev)
            if isinstance(ev, DeadLetter):
                dead.append(ev)
            else:
                newest[topic] = max(newest.get(topic, 0.0), ev.timestamp)
        alerts: list[AlertEvent] = []
        with self.lock:
            for part in sorted(preds.keys() | labels.keys()):
                state = self.states.get(part)
                if state is None:  # a record of a partition no longer assigned
                    continue
                alerts.extend(state.process(preds.get(part, []), labels.get(part, [])))
        for dl in dead:
            self.metrics.events_invalid.labels(topic=dl.topic, reason=dl.reason).inc()
            self._dead_log(
                "dead letter reason=%s topic=%s partition=%d offset=%d detail=%s",
                dl.reason,
                dl.topic,
                dl.partition,
                dl.offset,
                dl.detail[:200],
            )
            ckpt.add_output(
                OutputRecord(
                    cfg.topics.dead_letter,
                    dl.key,
                    dl.value or b"",
                    dead_letter_headers(dl),
                    on_ack=self.metrics.dead_letters_published.inc,
                )
            )
        now = self.clock()
        published = []
        for a in alerts:
            a = a.model_copy(update={"published_at": now})
            published.append(a)
            log.info(
                "alert status=%s kind=%s model=%s feature=%s signal=%s value=%.4g",
                a.status,
                a.kind,
                a.model_id,
                a.feature,
                a.signal,
                a.value,
            )
            ckpt.add_output(
                OutputRecord(
                    cfg.topics.alerts,
                    a.dedup_key.encode(),
                    orjson.dumps(a.model_dump()),
                    [("content-type", b"application/json"), ("alert-id", a.alert_id.encode())],
                    on_ack=self.metrics.alerts_published.labels(kind=a.kind, status=a.status).inc,
                )
            )
        ckpt.commit()
        for topic, ts in newest.items():
            self.metrics.last_event_timestamp.labels(topic=topic).set(ts)
        self.metrics.batch_events.observe(len(msgs))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.last_batch_timestamp.set(now)
        self.health.broker_reachable = True
        if self.on_alert is not None:
            for a in published:
                self.on_alert(a)
        return published

    def _update_lag(self, consumer: Any) -> None:
        now = self.clock()
        if now - self._lag_at < 1.0 or not self._assigned:
            return
        self._lag_at = now
        try:
            for tp in consumer.position(list(self._assigned)):
                if tp.offset < 0:
                    continue
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    self.metrics.consumer_lag.labels(
                        topic=tp.topic, partition=str(tp.partition)
                    ).set(max(0, high - tp.offset))
        except Exception as exc:
            log.debug("lag update failed error=%s", exc)


def _commit_sync(consumer: Any) -> None:
    """Commit the stored offsets now; having nothing new to commit is not an error."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            log.warning("synchronous commit failed error=%s", exc)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"
