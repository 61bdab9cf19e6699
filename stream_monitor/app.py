"""The application: consume both input topics in batches, monitor, publish, checkpoint.

    consume -> decode (ok | dead letter) -> PartitionState.process -> alert events
            -> produce outputs -> every interval: Checkpoint.commit (state, outputs, offsets)

The loop and the batch live here; what is kept per assigned partition (its state, restore from
the changelog, positions, the snapshot to rewind to) is ``stream_monitor/assignment.py``, the
event-time alignment of the two inputs ``stream_monitor/alignment.py``, and the order of the
commit steps, per processing guarantee, ``stream_monitor/checkpoint.py``. On revocation the
partitions are checkpointed first.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from confluent_kafka import KafkaError, TopicPartition
from prometheus_client import CollectorRegistry

from stream_monitor.alerts.sinks import AlertSink, KafkaAlertSink
from stream_monitor.alignment import LabelAlignment
from stream_monitor.assignment import Assignment
from stream_monitor.blas_threads import one_blas_thread
from stream_monitor.checkpoint import (
    Checkpoint,
    OutputRecord,
    ProducerWedged,
    TransactionAborted,
)
from stream_monitor.config import MonitorConfig
from stream_monitor.errors import ConfigError, TopicsNotReady
from stream_monitor.events.decode import (
    DeadLetter,
    ModelBatches,
    dead_letter_headers,
    decode_by_model,
    decode_labels,
    deserializer_for,
    processing_error,
)
from stream_monitor.events.live import AnyLabel, AnyPrediction
from stream_monitor.events.schema import AlertEvent
from stream_monitor.gc_tuning import fewer_collections
from stream_monitor.kafka import clients
from stream_monitor.kafka.batches import next_batch
from stream_monitor.metrics.collector import StateCollector
from stream_monitor.metrics.instruments import Instruments
from stream_monitor.metrics.reads import OwnerReads
from stream_monitor.metrics.server import HealthState, MetricsServer
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.reference import load_profiles
from stream_monitor.state import (
    changelog_topic_name,
    ensure_changelog_topic,
    key_from_secret,
)
from stream_monitor.stats.drift import warm_up

__all__ = ["Application"]

log = logging.getLogger(__name__)

_TIMESTAMP = attrgetter("timestamp")
#: How often a wait for a blocking admin call looks for a stop.
_STOP_POLL_SECONDS = 0.1


class _BurstLog:
    """Logs the first occurrence, then at most one summary per ``interval`` seconds."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.last = float("-inf")
        self.suppressed = 0

    def __call__(self, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> None:
        """``extra``: structured fields of the record (``--log-format json`` writes them)."""
        now = self.clock()
        if now - self.last >= self.interval:
            more = f" (and {self.suppressed} more since the last report)" if self.suppressed else ""
            log.warning(msg + more, *args, extra={**(extra or {}), "suppressed": self.suppressed})
            self.last = now
            self.suppressed = 0
        else:
            self.suppressed += 1


class Application:
    """Runs the monitor against a Kafka cluster until ``stop()`` is called.

    Every I/O dependency can be injected: the registry (a fresh one per instance by default)
    and the clock.
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        serve_metrics: bool = True,
        on_alert: Callable[[AlertEvent], None] | None = None,
        alert_sinks: Sequence[AlertSink] | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.cfg = cfg
        #: Longest the final checkpoint, leaving the group and the last flush may take after
        #: ``stop()`` (1 s while the broker is unreachable): then the monitor exits without
        #: them, and a restart resumes from the last committed checkpoint.
        self.shutdown_timeout = shutdown_timeout
        #: Reference profiles by (model_id, model_version), read once at start (ConfigError).
        self.profiles = load_profiles(cfg.references)
        #: The input format (ConfigError for an unknown one, before anything starts).
        self.deserializer = deserializer_for(cfg.input_format)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self.metrics = Instruments(self.registry)
        self.health = HealthState(cfg.health.max_loop_stall_seconds)
        key = cfg.checkpoint.hmac_key
        hmac = key_from_secret(key.get_secret_value()) if key else None
        #: The assigned partitions: their states, positions and last committed snapshots.
        self.assignment = Assignment(
            cfg,
            self.profiles,
            self.metrics,
            changelog=cfg.checkpoint.enabled,
            hmac=hmac,
            changelog_topic=cfg.checkpoint.topic or changelog_topic_name(cfg.group_id),
            keep_rewind_point=self.exactly_once,
            clock=clock,
        )
        #: Scrapes read the state on the loop's thread, between batches; the loop answers
        #: within a consume timeout when idle, so waiting a little longer falls back to the
        #: lock only when it is stuck (a long batch, a rebalance).
        self.reads = OwnerReads(self.lock, timeout=cfg.batch_timeout_seconds + 0.5)
        self.registry.register(StateCollector(lambda: self.states, self.reads))
        self.stop_event = threading.Event()
        self.on_alert = on_alert
        #: Where each batch's alert events go (default: the alerts and retrain topics, in the
        #: checkpoint's transaction). A sink writes at processing time: one that does not take
        #: part in the checkpoint sees the alerts of a batch whose transaction may abort.
        self.alert_sinks: list[AlertSink] = (
            list(alert_sinks)
            if alert_sinks is not None
            else [KafkaAlertSink(self._add_output, cfg.topics.alerts, cfg.topics.retrain)]
        )
        self._serve_metrics = serve_metrics
        self.server: MetricsServer | None = None
        self._dead_log = _BurstLog(10.0, clock)
        self._failure_log = _BurstLog(10.0, clock)
        self._client_log = _BurstLog(10.0, clock)
        self._lag_at = 0.0
        self._ckpt: Checkpoint | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self.instance_id = cfg.instance_id or socket.gethostname()
        #: Labels partitions paused while they run ahead of their predictions partition.
        self.alignment = LabelAlignment(cfg, self.metrics.label_pauses.inc)
        #: Effects that count only once committed (metrics, callbacks).
        self._on_commit: list[Callable[[], None]] = []
        #: Rebalance callbacks run so far (a batch must not span an assignment change).
        self._rebalances = 0

    @property
    def exactly_once(self) -> bool:
        return self.cfg.processing_guarantee == "exactly_once"

    @property
    def states(self) -> dict[int, PartitionState]:
        """The state of each assigned partition number (read it under :attr:`lock`)."""
        return self.assignment.states

    @property
    def lock(self) -> threading.Lock:
        """Held while the states change (processing, assignment, rewind) and while scraped."""
        return self.assignment.lock

    @property
    def changelog_topic(self) -> str:
        return self.assignment.changelog_topic

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
        self.health.cycle()  # the start-up counts as a cycle: /healthz watches it too
        try:
            with fewer_collections(on_pause=self.metrics.observe_gc), one_blas_thread():
                self._run()
        finally:
            self.health.alive = False
            for sink in self.alert_sinks:
                sink.close()
            if self.server is not None:
                self.server.stop()
            log.info("stopped")

    def _run(self) -> None:
        cfg = self.cfg
        admin = clients.make_admin(cfg)
        partitions = self._wait_for_topics(admin)
        if partitions is None:
            return
        self.health.allow(90.0)  # before the first cycle: the changelog topic, init_transactions
        began = time.monotonic()
        warm_up()  # the detectors' compiled loops, before a batch of a live stream waits for them
        log.info("detector kernels ready in %.1f s", time.monotonic() - began)
        if self.assignment.changelog:
            ensure_changelog_topic(
                admin, self.changelog_topic, partitions, cfg.checkpoint.replication_factor
            )
        else:
            log.warning(
                "checkpoint.enabled is false: state is not checkpointed, so a restart or "
                "rebalance re-learns references and detectors"
            )
        producer = self._new_producer()
        consumer = clients.make_consumer(cfg, error_cb=self._on_client_error)
        self._consumer = consumer
        self._ckpt = Checkpoint(
            producer,
            consumer,
            self.stop_event,
            transactional=self.exactly_once,
            on_failure=lambda t: self.metrics.delivery_failures.labels(topic=t).inc(),
            timeout=cfg.checkpoint.commit_timeout_seconds,
        )
        log.info(
            "starting group=%s instance=%s guarantee=%s changelog=%s",
            cfg.group_id,
            self.instance_id,
            cfg.processing_guarantee,
            self.changelog_topic if self.assignment.changelog else "-",
        )
        try:
            consumer.subscribe(
                [cfg.topics.predictions, cfg.topics.labels],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.reads.started()
            while not self.stop_event.is_set():
                self.reads.serve()
                msgs = self._consume(consumer)
                if msgs:
                    self.process_batch(msgs)
                if msgs or self.alignment.paused:
                    self.alignment.align(consumer, self.states)
                self._producer.poll(0)
                if self._due():
                    self.checkpoint()
                self._update_lag(consumer)
                self.health.cycle()
        finally:
            self.reads.stopped()
            self.health.reason = "stopping"
            self._shut_down(consumer)

    def _consume(self, consumer: Any) -> list[Any]:
        """One batch (:func:`stream_monitor.kafka.batches.next_batch`): what a consume call
        returns within ``batch_timeout_seconds``, and while draining a backlog, the records
        already fetched, up to ``batch_max_records``."""
        cfg = self.cfg
        return next_batch(
            consumer.consume,
            batch_size=cfg.batch_size,
            max_records=cfg.batch_max_records,
            timeout=cfg.batch_timeout_seconds,
            rebalances=lambda: self._rebalances,
        )

    def _shut_down(self, consumer: Any) -> None:
        """The final checkpoint, leaving the group and the last flush, within
        :attr:`shutdown_timeout` (1 s while the broker is unreachable): their Kafka calls
        block for their own timeouts (up to a minute) when the broker is gone."""

        def steps() -> None:
            try:
                self.checkpoint()
            except Exception as exc:  # nothing committed: a restart re-reads the interval
                log.error("final checkpoint failed: %s: %s", type(exc).__name__, exc)
            try:
                consumer.close()  # leaves the group: revocation checkpoints nothing more
                self._producer.flush(self.shutdown_timeout)
            except Exception as exc:
                log.warning("closing the clients failed: %s: %s", type(exc).__name__, exc)

        budget = self.shutdown_timeout if self.health.broker_reachable else 1.0
        worker = threading.Thread(target=steps, name="shutdown", daemon=True)
        worker.start()
        worker.join(budget)
        if worker.is_alive():
            log.error(
                "the final checkpoint did not finish within %.0f s: stopping without it (a "
                "restart resumes from the last committed checkpoint)",
                budget,
            )

    def _new_producer(self) -> Any:
        cfg = self.cfg
        txn_id = f"{cfg.group_id}-{self.instance_id}" if self.exactly_once else None
        producer = clients.make_producer(cfg, transactional_id=txn_id)
        if txn_id is not None:
            producer.init_transactions(60.0)  # also fences a predecessor with the same id
        self._producer = producer
        return producer

    def _wait_for_topics(self, admin: Any) -> int | None:
        while not self.stop_event.is_set():
            self.health.cycle()
            try:
                n = self._unless_stopped(lambda: self._check_topics(admin))
                if n is None:
                    return None
                self.health.broker_reachable = True
                return n
            except TopicsNotReady as exc:
                self.health.broker_reachable = True
                self.health.reason = str(exc)
                log.info("waiting: %s", exc)
            except ConfigError:
                raise
            except Exception as exc:  # any client error means: retry later
                self.health.broker_reachable = False
                self.health.reason = f"broker unreachable: {exc}"
                log.warning("waiting for the broker error=%s", exc)
            self.stop_event.wait(2.0)
        return None

    def _check_topics(self, admin: Any) -> int:
        clients.ensure_output_topics(admin, self.cfg)
        return clients.check_input_topics(admin, self.cfg)

    def _unless_stopped(self, call: Callable[[], int]) -> int | None:
        """``call()`` on a helper thread, None as soon as :meth:`stop` is called. An
        unreachable broker blocks the admin calls for their whole timeout (30 s), and a signal
        handler runs only once the main thread is back in Python: here it waits in slices."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = call()
            except BaseException as exc:  # re-raised on the loop's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name="admin", daemon=True)
        worker.start()
        while worker.is_alive():
            if self.stop_event.wait(_STOP_POLL_SECONDS):
                return None  # the call ends on its own timeout; nothing waits for it
        if "error" in box:
            raise box["error"]
        return int(box["value"])

    # --- checkpoints --------------------------------------------------------------------------
    def _due(self) -> bool:
        ckpt = self._ckpt
        if ckpt is None or not ckpt.has_pending():
            return False
        c = self.cfg.checkpoint
        return (
            ckpt.pending_events >= c.interval_events
            or time.monotonic() - ckpt.last_commit >= c.interval_seconds
        )

    def checkpoint(self) -> bool:
        """Commit state snapshots, outputs and offsets of everything processed so far."""
        ckpt = self._ckpt
        if ckpt is None or not ckpt.has_pending():
            return True
        started = time.perf_counter()
        # its transactional calls may retry for 10 timeouts, the last one block for 2
        self.health.allow(12 * self.cfg.checkpoint.commit_timeout_seconds)
        pending = self.assignment.prepare()
        try:
            ok = ckpt.commit(pending.records)
        except ProducerWedged as exc:
            self.metrics.transactions_aborted.inc()
            log.error("replacing the transactional producer: %s (librdkafka #5511)", exc)
            ckpt.replace_producer(self._new_producer())
            self._rewind()
            return False
        except TransactionAborted as exc:
            self.metrics.transactions_aborted.inc()
            log.warning("rewinding to the last checkpoint after an aborted transaction: %s", exc)
            self._rewind()
            return False
        if not ok:
            self.metrics.checkpoint_failures.labels(reason="not_acknowledged").inc()
            return False
        self.assignment.committed(pending)
        effects, self._on_commit = self._on_commit, []
        for effect in effects:
            effect()
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        for r in pending.records:
            self.metrics.checkpoint_bytes.observe(len(r.value or b""))
        return True

    def _rewind(self) -> None:
        """After an aborted transaction: state back to the last checkpoint, inputs re-read."""
        self._on_commit = []
        for tp in self.assignment.rewind():
            self._seek_or_hold(tp)

    def _seek_or_hold(self, tp: TopicPartition) -> None:
        """Seek back to ``tp.offset``; if that fails, stop reading the partition (its state
        went back, so reading on from where the consumer is would skip input) until a
        rebalance reassigns it from the committed offsets; if even that fails, stop."""
        try:
            self._consumer.seek(tp)
            return
        except Exception as exc:
            log.error(
                "seek of %s[%d] to %d failed (%s: %s): pausing it until it is reassigned",
                tp.topic,
                tp.partition,
                tp.offset,
                type(exc).__name__,
                exc,
            )
        try:
            self._consumer.pause([tp])
        except Exception as exc:
            log.critical("cannot pause %s[%d] either (%s): stopping", tp.topic, tp.partition, exc)
            self.stop_event.set()

    # --- rebalances ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        timeout = self.cfg.checkpoint.restore_timeout_seconds
        self.health.allow(timeout * (1 + len(partitions)))  # committed offsets, restores
        self.assignment.assign(partitions, lambda tps: consumer.committed(tps, timeout=timeout))
        consumer.assign(partitions)
        self.alignment.assigned()
        self._set_assignment_gauges()
        self.health.partitions_assigned = bool(partitions)
        self.health.reason = "ready" if partitions else "no partitions assigned"
        log.info("assigned partitions=%s", _fmt(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        self.checkpoint()
        self._drop(partitions)
        log.info("revoked partitions=%s", _fmt(partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._rebalances += 1
        if self._ckpt is not None:
            try:
                self._ckpt.abort()
            except Exception as exc:  # the broker aborts it when the transaction times out
                log.warning("abort after lost partitions failed: %s: %s", type(exc).__name__, exc)
        self._on_commit = []
        self._drop(partitions)
        log.warning("lost partitions=%s", _fmt(partitions))

    def _drop(self, partitions: list[TopicPartition]) -> None:
        gone, kept = self.assignment.drop(partitions)
        with self.lock:
            self.alignment.forget(gone, kept)
        self._set_assignment_gauges()
        self.health.partitions_assigned = bool(self.assignment.assigned)
        for topic, part in gone:
            with contextlib.suppress(KeyError):  # never had a lag sample
                self.metrics.consumer_lag.remove(topic, str(part))

    def _set_assignment_gauges(self) -> None:
        for topic in (self.cfg.topics.predictions, self.cfg.topics.labels):
            n = sum(1 for tp in self.assignment.assigned if tp.topic == topic)
            self.metrics.assigned_partitions.labels(topic=topic).set(n)

    def _on_client_error(self, err: KafkaError) -> None:
        self.metrics.consumer_errors.inc()
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.health.broker_reachable = False
            self.health.reason = f"broker unreachable: {err.str()}"
        self._client_log("kafka client error=%s", err.str())

    # --- the batch ----------------------------------------------------------------------------
    def _add_output(self, rec: OutputRecord) -> None:
        assert self._ckpt is not None
        self._ckpt.add_output(rec)

    def _hold_back_labels(
        self,
        consumer: Any,
        labels: dict[int, list[AnyLabel]],
        preds_newest: dict[int, float],
        origin: dict[int, Any],
        dead: list[DeadLetter],
        label_msgs: list[Any],
        offsets: tuple[dict[tuple[str, int], int], ...],
    ) -> list[DeadLetter]:
        """Cut each labels partition of the batch where its labels run ahead of their
        predictions (:meth:`LabelAlignment.cuts`), in place: its labels, and its offsets
        ``(first, last, count)``, keep only what comes before the cut, and so do the dead
        letters returned; the partition is held back from the cut (:meth:`LabelAlignment.hold`).
        """
        times = {part: list(map(_TIMESTAMP, events)) for part, events in labels.items()}
        cuts = self.alignment.cuts(consumer, self.states, times, preds_newest)
        if not cuts:
            return dead
        topic = self.cfg.topics.labels
        held: dict[int, int] = {}
        for part, i in cuts.items():
            held[part] = offset = origin[id(labels[part][i])].offset()
            self.alignment.hold(consumer, part, offset)
            del labels[part][i:]
            if not labels[part]:
                del labels[part]
        first, last, count = offsets
        for part, cut in held.items():  # only what was taken counts, and is committed
            key = (topic, part)
            taken = [m.offset() for m in label_msgs if m.partition() == part and m.offset() < cut]
            if taken:
                first[key], last[key], count[key] = min(taken), max(taken), len(taken)
            else:
                del first[key], last[key], count[key]
        return [
            d
            for d in dead
            if d.topic != topic or d.partition not in held or d.offset < held[d.partition]
        ]

    def process_batch(self, msgs: list[Any]) -> list[AlertEvent]:
        """Decode, monitor and produce the outputs of one batch; return its alert events.

        Outputs are committed by the next checkpoint (see ``stream_monitor/checkpoint.py``).
        """
        started = time.perf_counter()
        cfg = self.cfg
        assert self._ckpt is not None
        ckpt = self._ckpt
        preds: dict[int, list[AnyPrediction]] = {}
        labels: dict[int, list[AnyLabel]] = {}
        dead: list[DeadLetter] = []
        origin: dict[int, Any] = {}
        pred_topic, max_bytes = cfg.topics.predictions, cfg.limits.max_event_bytes
        fmt = self.deserializer
        states = self.states
        advance = self.assignment.advance
        # Per topic-partition of this batch: the first and the last offset, and how many.
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        count: dict[tuple[str, int], int] = {}
        pred_msgs: dict[int, list[Any]] = {}  # per partition
        label_msgs: list[Any] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.metrics.consumer_errors.inc()
                    log.warning("consume error=%s", err.str())
                continue
            topic, part, offset = m.topic(), m.partition(), m.offset()
            if part not in states:
                continue  # a record of a partition no longer assigned: not ours to process
            key = (topic, part)
            n = count.get(key)
            if n is None:
                first[key] = last[key] = offset
                count[key] = 1
            else:
                count[key] = n + 1
                if offset > last[key]:
                    last[key] = offset
            if topic == pred_topic:
                part_msgs = pred_msgs.get(part)
                if part_msgs is None:
                    pred_msgs[part] = [m]
                else:
                    part_msgs.append(m)
            else:
                label_msgs.append(m)
        # Predictions decoded per partition model by model (their columns read while the
        # decoder builds them); labels in one call. Dead letters: a partition's in the order
        # they were consumed.
        by_model: dict[int, ModelBatches] = {}
        for part, records in pred_msgs.items():
            grouped = by_model[part] = decode_by_model(
                records, max_bytes=max_bytes, deserializer=fmt
            )
            dead.extend(grouped.dead)
            if grouped.by_model:
                preds[part] = grouped.events()
        decoded: list[Any] = decode_labels(label_msgs, max_bytes=max_bytes, deserializer=fmt)
        for m, ev in zip(label_msgs, decoded, strict=True):
            if type(ev) is DeadLetter:
                dead.append(ev)
            else:
                origin[id(ev)] = m  # its record, should processing it fail
                part = m.partition()
                part_events = labels.get(part)
                if part_events is None:
                    labels[part] = [ev]
                else:
                    part_events.append(ev)
        # the newest event time of each partition's predictions (the alignment's clock)
        preds_newest = {part: max(map(_TIMESTAMP, events)) for part, events in preds.items()}
        if labels and self._consumer is not None:
            offsets = (first, last, count)
            dead = self._hold_back_labels(
                self._consumer, labels, preds_newest, origin, dead, label_msgs, offsets
            )
        consumed: dict[str, int] = {}
        for key, n in count.items():
            topic, part = key
            consumed[topic] = consumed.get(topic, 0) + n
            ckpt.add_offsets(topic, part, last[key], n)
            advance(key, first[key], last[key])
        labels_newest = {part: max(map(_TIMESTAMP, events)) for part, events in labels.items()}
        newest: dict[str, float] = {}
        for topic, by_part in ((pred_topic, preds_newest), (cfg.topics.labels, labels_newest)):
            for part, t in by_part.items():
                newest[topic] = max(newest.get(topic, 0.0), t)
                self.alignment.observe(topic, part, t)
        alerts: list[AlertEvent] = []
        with self.lock:
            for part in sorted(preds.keys() | labels.keys()):
                state = self.states[part]
                alerts.extend(
                    state.process(preds.get(part, []), labels.get(part, []), by_model.get(part))
                )
                failures = state.take_failures()
                if failures and part in by_model:  # the predictions' records too
                    for model_id, events in by_model[part].by_model.items():
                        records = by_model[part].records[model_id]
                        origin.update(zip(map(id, events), records, strict=True))
                for failure in failures:
                    # The traceback at debug level; a burst-limited warning names the error.
                    log.debug("processing failed partition=%d", part, exc_info=failure.error)
                    self._failure_log(
                        "processing failed partition=%d records=%d error=%s: dead-lettered "
                        "with reason processing_error",
                        part,
                        len(failure.events),
                        f"{type(failure.error).__name__}: {failure.error}",
                    )
                    dead.extend(
                        processing_error(origin[id(e)], failure.error) for e in failure.events
                    )
        for topic, n in consumed.items():
            self.metrics.events_consumed.labels(topic=topic).inc(n)
        for dl in dead:
            self.metrics.events_invalid.labels(topic=dl.topic, reason=dl.reason).inc()
            self._dead_log(
                "dead letter reason=%s topic=%s partition=%d offset=%d detail=%s",
                dl.reason,
                dl.topic,
                dl.partition,
                dl.offset,
                dl.detail[:200],
                extra={
                    "reason": dl.reason,
                    "topic": dl.topic,
                    "partition": dl.partition,
                    "offset": dl.offset,
                },
            )
            ckpt.add_output(
                OutputRecord(
                    cfg.topics.dead_letter, dl.key, dl.value or b"", dead_letter_headers(dl)
                )
            )
            self._on_commit.append(self.metrics.dead_letters_published.inc)
        now = self.clock()
        published = [a.model_copy(update={"published_at": now}) for a in alerts]
        for a in published:
            log.info(
                "alert status=%s kind=%s model=%s feature=%s signal=%s value=%.4g",
                a.status,
                a.kind,
                a.model_id,
                a.feature,
                a.signal,
                a.value,
            )
            self._on_commit.append(
                self.metrics.alerts_published.labels(kind=a.kind, status=a.status).inc
            )
            if a.retrain and cfg.topics.retrain is not None:
                self._on_commit.append(self.metrics.retrain_triggers.inc)
            if self.on_alert is not None:
                self._on_commit.append(lambda a=a: self.on_alert(a))  # type: ignore[misc]
        if published:
            for sink in self.alert_sinks:
                sink.write(published)
        for topic, ts in newest.items():
            self.metrics.last_event_timestamp.labels(topic=topic).set(ts)
        self.metrics.batch_events.observe(len(msgs))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.last_batch_timestamp.set(now)
        self.health.broker_reachable = True
        return published

    def _update_lag(self, consumer: Any) -> None:
        now = self.clock()
        assigned = self.assignment.assigned
        if now - self._lag_at < 1.0 or not assigned:
            return
        self._lag_at = now
        try:
            for tp in consumer.position(list(assigned)):
                if tp.offset < 0:
                    continue
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    self.metrics.consumer_lag.labels(
                        topic=tp.topic, partition=str(tp.partition)
                    ).set(max(0, high - tp.offset))
        except Exception as exc:  # lag is best effort
            log.debug("lag update failed error=%s", exc)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"
