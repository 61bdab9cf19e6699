"""``MonitorClient``: log predictions and labels from a model service without ever blocking it.

A model service calls :meth:`MonitorClient.log_prediction` next to each prediction it serves and
:meth:`MonitorClient.log_label` when the ground truth is known. Each call checks the event
against the wire contract (docs/wire-contract.md; JSON Schemas in
``docs/schemas/prediction-event.schema.json`` and ``docs/schemas/label-event.schema.json``) with
the monitor's own decoder, so a malformed event raises :class:`InvalidEvent` (a ``ValueError``)
at the call, where the bug is, instead of becoming a dead letter in the monitor. Then the event
is handed to a confluent-kafka ``Producer``, which batches it (``linger.ms``) and sends it from
its own thread.

Kafka trouble never reaches the caller: a full local queue (the broker is slow or down) drops
the event and counts it, a produce error or a failed delivery is counted and logged (once per
burst), and nothing waits for the broker except :meth:`MonitorClient.flush` and
:meth:`MonitorClient.close` at shutdown. :attr:`MonitorClient.stats` reads the counters.

On the wire (exactly what the monitor expects): a JSON object per record value, the record key
is the ``model_id`` (UTF-8) on both topics, so a model's predictions and labels land on the same
partition number of the co-partitioned topics, and the record timestamp is the event time in
milliseconds. The event id is a UUID4 unless the caller gives one; timestamps default to the
wall clock, sent as Unix seconds. Sampling (``sample_rate``) is decided by a hash of the event
id, so the label of a sampled prediction is sent and the label of a skipped one is skipped, in
any process.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from confluent_kafka import KafkaException, Producer

from stream_monitor.errors import StreamMonitorError
from stream_monitor.events.decode import DeadLetter, decode_record
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.kafka.protocols import ProducerLike
from stream_monitor.kafka.records import RawRecord

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_PRODUCER_CONFIG",
    "ClientStats",
    "InvalidEvent",
    "MonitorClient",
    "is_sampled",
]

log = logging.getLogger(__name__)

#: The monitor's default ``limits.max_event_bytes``: a larger event would be a dead letter.
DEFAULT_MAX_EVENT_BYTES = 1_048_576

#: Producer settings of the client; ``producer_config`` overrides any of them.
DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "client.id": "stream-monitor-client",
    # Batching: monitoring events are not latency-critical, larger batches cost the service less.
    "linger.ms": 100,
    "compression.type": "lz4",
    "acks": "all",
    "enable.idempotence": True,
    # The bounded local queue: past either bound, produce() raises BufferError and the client
    # drops the event (counted) instead of blocking the model API.
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 65_536,
    # How long an event may wait for the broker (e.g. through a broker restart) before it is
    # counted as a failed delivery.
    "message.timeout.ms": 120_000,
}

_LOG_EVERY_S = 60.0


class InvalidEvent(StreamMonitorError, ValueError):
    """The event breaks the wire contract (a bug of the caller): it was not sent."""


@dataclass(frozen=True, slots=True)
class ClientStats:
    """The counters of a :class:`MonitorClient` at one moment.

    Every logged event ends in exactly one of: ``sampled_out``, ``dropped_queue_full``,
    ``dropped_closed``, ``produce_errors``, or queued (``predictions_queued`` /
    ``labels_queued``); a queued one later in ``delivered`` or ``delivery_failed``, or is still
    ``in_queue``.
    """

    #: Predictions handed to the producer.
    predictions_queued: int
    #: Labels handed to the producer.
    labels_queued: int
    #: Events (predictions and labels) skipped by sampling.
    sampled_out: int
    #: Events dropped because the producer's local queue was full.
    dropped_queue_full: int
    #: Events logged after :meth:`MonitorClient.close`.
    dropped_closed: int
    #: Events the producer refused (a ``KafkaException`` from ``produce``).
    produce_errors: int
    #: Events acknowledged by the broker.
    delivered: int
    #: Events whose delivery failed (timed out, refused by the broker, purged at close).
    delivery_failed: int
    #: Errors the Kafka client reported outside deliveries (e.g. all brokers down).
    client_errors: int
    #: What the producer still holds: events not yet acknowledged, and the protocol requests
    #: and delivery reports waiting with them (``len(producer)``); 0 once all is delivered.
    in_queue: int
    #: The last Kafka error seen (produce, delivery or client), if any.
    last_error: str | None

    @property
    def dropped(self) -> int:
        """Events lost before reaching the producer's queue (not counting sampling)."""
        return self.dropped_queue_full + self.dropped_closed + self.produce_errors


def is_sampled(event_id: str, rate: float) -> bool:
    """Whether the events of ``event_id`` are sent at sampling ``rate``: the same answer for a
    prediction and its label, in every process (a BLAKE2b hash of the id, not Python's
    ``hash``).

    >>> is_sampled("fraud-17", 1.0), is_sampled("fraud-17", 0.0)
    (True, False)
    >>> is_sampled("fraud-17", 0.5) == is_sampled("fraud-17", 0.5)
    True
    >>> sum(is_sampled(f"e{i}", 0.25) for i in range(10_000)) / 10_000  # doctest: +ELLIPSIS
    0.2...
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 18_446_744_073_709_551_616  # 2**64


class MonitorClient:
    """Send prediction and label events to the monitor's Kafka topics, never blocking.

    Parameters
    ----------
    bootstrap_servers
        The Kafka cluster (``host:port,...``), unless ``producer`` is given.
    predictions_topic, labels_topic
        The monitor's input topics (``topics.predictions`` and ``topics.labels``).
    model_id, model_version
        Defaults for a service that serves one model; each call may name another.
    sample_rate
        The share of events sent, in [0, 1], decided per event id (:func:`is_sampled`).
    producer_config
        librdkafka settings added to (or replacing) :data:`DEFAULT_PRODUCER_CONFIG`: security,
        ``queue.buffering.max.messages`` (the local queue), ``linger.ms``...
    max_event_bytes
        The monitor's ``limits.max_event_bytes``: a larger event raises :class:`InvalidEvent`.
    producer
        A producer to use instead of building one (tests, or a service's own producer).
    clock
        Event time (Unix seconds) of events logged without a ``timestamp``.

    Examples
    --------
    A list stands in for Kafka here; give ``bootstrap_servers`` in a service.

    >>> class ListProducer:
    ...     def __init__(self): self.records = []
    ...     def produce(self, topic, value=None, key=None, *, on_delivery=None, timestamp=0):
    ...         self.records.append((topic, key, value, timestamp))
    ...     def poll(self, timeout=0): return 0
    ...     def flush(self, timeout=0): return 0
    ...     def __len__(self): return 0
    >>> kafka = ListProducer()
    >>> with MonitorClient(producer=kafka, model_id="fraud", clock=lambda: 1795305600.0) as c:
    ...     eid = c.log_prediction(features={"amount": 35.2, "country": "fr"},
    ...                            prediction={"label": 0, "score": 0.07}, event_id="tx-17")
    ...     c.log_label("tx-17", 0)
    True
    >>> for topic, key, value, ts_ms in kafka.records:
    ...     print(topic, key, ts_ms, orjson.loads(value))  # doctest: +NORMALIZE_WHITESPACE
    predictions b'fraud' 1795305600000 {'event_id': 'tx-17', 'model_id': 'fraud',
        'timestamp': 1795305600.0, 'features': {'amount': 35.2, 'country': 'fr'},
        'prediction': {'label': 0, 'score': 0.07}}
    labels b'fraud' 1795305600000 {'event_id': 'tx-17', 'model_id': 'fraud',
        'timestamp': 1795305600.0, 'label': 0}

    A bad event raises at the call (a ``ValueError``), and nothing is sent:

    >>> try:
    ...     c.log_prediction(features={"amount": 1.0}, prediction=1.0, model_id="")
    ... except InvalidEvent as e:
    ...     print(e)
    invalid prediction event: model_id: String should have at least 1 character
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        predictions_topic: str = "predictions",
        labels_topic: str = "labels",
        model_id: str | None = None,
        model_version: str | None = None,
        sample_rate: float = 1.0,
        producer_config: Mapping[str, Any] | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        producer: ProducerLike | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], not {sample_rate}")
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be positive")
        self.predictions_topic = predictions_topic
        self.labels_topic = labels_topic
        self.model_id = model_id
        self.model_version = model_version
        self.sample_rate = float(sample_rate)
        self.max_event_bytes = max_event_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._counts = dict.fromkeys(
            (
                "predictions_queued",
                "labels_queued",
                "sampled_out",
                "dropped_queue_full",
                "dropped_closed",
                "produce_errors",
                "delivered",
                "delivery_failed",
                "client_errors",
            ),
            0,
        )
        self._last_error: str | None = None
        # per counter: when it was last logged, and how many since (logged once per burst)
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        if producer is None:
            if not bootstrap_servers and not (producer_config or {}).get("bootstrap.servers"):
                raise ValueError("give bootstrap_servers (or a producer)")
            conf: dict[str, Any] = {**DEFAULT_PRODUCER_CONFIG}
            if bootstrap_servers:
                conf["bootstrap.servers"] = bootstrap_servers
            conf.update(producer_config or {})
            conf.setdefault("error_cb", self._on_client_error)
            # librdkafka's own log lines go to Python logging (served by poll), not stderr.
            conf.setdefault("logger", logging.getLogger(f"{__name__}.librdkafka"))
            producer = Producer(conf)
        self._producer: ProducerLike = producer

    # --- logging events ---------------------------------------------------------------------
    def log_prediction(
        self,
        *,
        features: Mapping[str, Any],
        prediction: Any,
        model_id: str | None = None,
        model_version: str | None = None,
        segments: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timestamp: float | datetime | str | None = None,
    ) -> str:
        """Send one prediction event; return its event id (give it to :meth:`log_label`).

        Parameters
        ----------
        features
            Feature name -> number, string, bool or None (missing). NumPy scalars are taken as
            their Python values and a float NaN as missing; an infinity is refused.
        prediction
            A number (regression output or score), a class (string or bool), or
            ``{"label": class, "score": number}``.
        model_id, model_version
            Default to the client's.
        segments
            Segment key -> value (e.g. ``{"region": "eu"}``), optional.
        event_id
            Unique per model (e.g. the request id); a UUID4 when omitted.
        timestamp
            Event time: Unix seconds, an aware ``datetime`` or an RFC 3339 string; now when
            omitted.

        Raises
        ------
        InvalidEvent
            The event breaks the wire contract; nothing was sent. Kafka trouble never raises.
        """
        if event_id is None:
            event_id = str(uuid.uuid4())
        doc = {
            "event_id": event_id,
            "model_id": self.model_id if model_id is None else model_id,
            "timestamp": self._event_time(timestamp),
            "features": _features(features),
            "prediction": _prediction(prediction),
        }
        # optional fields only when set: smaller records, and the decoder's usual layout
        version = self.model_version if model_version is None else model_version
        if version is not None:
            doc["model_version"] = version
        if segments is not None:
            doc["segments"] = _segments(segments)
        self._send("prediction", doc)
        return event_id

    def log_label(
        self,
        event_id: str,
        label: Any,
        *,
        model_id: str | None = None,
        timestamp: float | datetime | str | None = None,
    ) -> bool:
        """Send the ground truth of the prediction ``event_id`` of ``model_id`` (default: the
        client's); return whether it was queued (False when sampled out or dropped).

        ``label`` is the true class (string, bool or number) or a regression target.

        Raises
        ------
        InvalidEvent
            The event breaks the wire contract; nothing was sent. Kafka trouble never raises.
        """
        doc = {
            "event_id": event_id,
            "model_id": self.model_id if model_id is None else model_id,
            "timestamp": self._event_time(timestamp),
            "label": _output(label, "label"),
        }
        return self._send("label", doc)

    # --- shutdown and counters --------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for queued events to be delivered; return how many
        are still queued. For shutdown: the log calls themselves never wait."""
        if self._closed:
            return 0
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> int:
        """Flush for up to ``timeout`` seconds, then give up on what is left (counted in
        ``delivery_failed``); return that number. Later log calls are counted as
        ``dropped_closed``. Idempotent."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        lost = remaining = int(self._producer.flush(timeout))
        purge = getattr(self._producer, "purge", None)
        if remaining and purge is not None:
            with self._lock:
                failed_before = self._counts["delivery_failed"]
            purge()
            self._producer.flush(0)  # serves the purged events' delivery reports
            with self._lock:
                lost = self._counts["delivery_failed"] - failed_before
        if lost:
            log.warning("closed with %d monitoring events undelivered: dropped", lost)
        if isinstance(self._producer, Producer) and hasattr(self._producer, "close"):
            self._producer.close()  # nothing is left to flush
        return lost

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def stats(self) -> ClientStats:
        """The counters now (see :class:`ClientStats`), after serving the delivery reports
        that arrived since the last call (without waiting)."""
        if not self._closed:
            self._poll()
        size = getattr(self._producer, "__len__", None)
        in_queue = 0 if self._closed or size is None else int(size())
        with self._lock:
            return ClientStats(**self._counts, in_queue=in_queue, last_error=self._last_error)

    def __enter__(self) -> MonitorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"MonitorClient(predictions_topic={self.predictions_topic!r}, "
            f"labels_topic={self.labels_topic!r}, model_id={self.model_id!r}, "
            f"sample_rate={self.sample_rate})"
        )

    # --- internals --------------------------------------------------------------------------
    def _event_time(self, timestamp: float | datetime | str | None) -> Any:
        if timestamp is None:
            return self._clock()
        if isinstance(timestamp, datetime):
            if timestamp.tzinfo is None:
                raise InvalidEvent("timestamp is a naive datetime; give it a time zone (UTC)")
            return timestamp.timestamp()
        return _plain(timestamp)

    def _send(self, kind: Literal["prediction", "label"], doc: dict[str, Any]) -> bool:
        try:
            value = orjson.dumps(doc)
        except TypeError as exc:
            raise InvalidEvent(f"invalid {kind} event: {exc}") from None
        topic = self.predictions_topic if kind == "prediction" else self.labels_topic
        decoded = decode_record(
            RawRecord(value, topic=topic), kind=kind, max_bytes=self.max_event_bytes
        )
        if isinstance(decoded, DeadLetter):
            raise InvalidEvent(f"invalid {kind} event: {decoded.detail}")
        event: PredictionEvent | LabelEvent = decoded
        if not is_sampled(event.event_id, self.sample_rate):
            self._count("sampled_out")
            return False
        if self._closed:
            self._count("dropped_closed")
            return False
        try:
            self._producer.produce(
                topic,
                value=value,
                key=event.model_id.encode(),
                on_delivery=self._on_delivery,
                timestamp=round(event.timestamp * 1000),
            )
        except BufferError:
            self._count("dropped_queue_full", "local producer queue is full")
            return False
        except (KafkaException, RuntimeError) as exc:  # RuntimeError: the producer was closed
            self._count("produce_errors", f"produce failed: {exc}")
            return False
        else:
            self._count("predictions_queued" if kind == "prediction" else "labels_queued")
            return True
        finally:
            self._poll()

    def _poll(self) -> None:
        try:
            self._producer.poll(0)
        except (KafkaException, RuntimeError) as exc:
            self._count("client_errors", f"poll failed: {exc}")

    def _count(self, what: str, error: str | None = None) -> None:
        with self._lock:
            self._counts[what] += 1
            if error is None:
                return
            self._last_error = error
            now = time.monotonic()
            if now - self._last_log.get(what, -math.inf) < _LOG_EVERY_S:
                self._unlogged[what] = self._unlogged.get(what, 0) + 1
                return
            self._last_log[what] = now
            suppressed = self._unlogged.pop(what, 0)
        log.warning(
            "stream-monitor client trouble counter=%s error=%r more_since_last_message=%d "
            "(logged at most once a minute per counter; Kafka trouble is never raised)",
            what,
            error,
            suppressed,
        )

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is None:
            self._count("delivered")
        else:
            self._count("delivery_failed", f"delivery failed: {err}")

    def _on_client_error(self, err: Any) -> None:
        self._count("client_errors", f"kafka client error: {err}")


def _plain(v: Any) -> Any:
    """A NumPy (or other) scalar as its Python value; anything else unchanged."""
    t = type(v)
    if t is float or t is int or t is str or t is bool or v is None:
        return v
    item = getattr(v, "item", None)
    if item is not None and callable(item) and not isinstance(v, Mapping):
        try:
            return item()
        except (TypeError, ValueError):
            return v
    return v


def _features(features: Mapping[str, Any]) -> Any:
    if not isinstance(features, Mapping):
        raise InvalidEvent(f"features must be a mapping, not {type(features).__name__}")
    out = {}
    for name, raw in features.items():
        v = _plain(raw)
        if type(v) is float and not math.isfinite(v):
            if math.isnan(v):
                v = None  # missing, as pandas and NumPy spell it
            else:
                raise InvalidEvent(f"feature {name!r} is {v}: numbers must be finite")
        out[name] = v
    return out


def _segments(segments: Mapping[str, str]) -> Any:
    if not isinstance(segments, Mapping):
        raise InvalidEvent(f"segments must be a mapping, not {type(segments).__name__}")
    return dict(segments)


def _output(v: Any, what: str) -> Any:
    v = _plain(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise InvalidEvent(f"{what} is {v}: numbers must be finite")
    return v


def _prediction(p: Any) -> Any:
    if isinstance(p, Mapping):
        return {k: _output(v, f"prediction {k}") for k, v in p.items()}
    return _output(p, "prediction")
