"""Construction of confluent-kafka clients and the topics the monitor needs.

Every client gets the same connection settings (:func:`client_config`): the bootstrap servers,
the legacy ``[security]`` table, then ``[kafka]`` (any librdkafka property, secrets included),
and librdkafka's own log lines through Python logging (the ``stream_monitor.kafka.librdkafka``
logger, rate-limited), never straight to stderr.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.config import MonitorConfig
from stream_monitor.errors import ConfigError, TopicsNotReady

__all__ = [
    "DEAD_LETTER_MAX_BYTES",
    "LIBRDKAFKA_LOGGER",
    "MonitorAdmin",
    "RateLimitFilter",
    "check_input_topics",
    "client_config",
    "consumer_config",
    "ensure_input_topics",
    "ensure_output_topics",
    "ensure_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "producer_config",
    "with_defaults",
]

log = logging.getLogger(__name__)

#: Dead letters keep oversized originals byte for byte, so their topic accepts large records.
DEAD_LETTER_MAX_BYTES = 16 * 1024 * 1024


class RateLimitFilter(logging.Filter):
    """Passes the first record of each kind, then at most one per ``interval`` seconds, which
    says how many were dropped since the last one passed (the monitor's burst logging).

    A record's kind is its level and, for librdkafka's records (``"%s [%s] %s"`` with the
    facility first), the facility (``FAIL``, ``SSL``, ``SASL``...), else its format string. At
    most ``max_kinds`` kinds are remembered; past that, records of new kinds are dropped and
    counted in ``dropped``. DEBUG records always pass (librdkafka's ``debug`` contexts, asked
    for explicitly).

    Examples
    --------
    >>> now = [0.0]
    >>> f = RateLimitFilter(10.0, clock=lambda: now[0])
    >>> def rec(msg):
    ...     return logging.LogRecord("x", logging.ERROR, "", 0, "%s [%s] %s",
    ...                              ("FAIL", "rdkafka#consumer-1", msg), None)
    >>> [f.filter(rec("a")), f.filter(rec("b")), f.filter(rec("c"))]
    [True, False, False]
    >>> now[0] = 10.0
    >>> r = rec("d"); f.filter(r), r.getMessage()
    (True, 'FAIL [rdkafka#consumer-1] d (and 2 more since the last report)')
    """

    def __init__(
        self,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 256,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.max_kinds = max_kinds
        self.dropped = 0
        self._kinds: dict[tuple[int, str], list[float]] = {}  # kind -> [last, suppressed]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True
        args = record.args
        what = args[0] if isinstance(args, tuple) and args else record.msg
        kind = (record.levelno, str(what)[:64])
        now = self.clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is None:
                if len(self._kinds) >= self.max_kinds:
                    self.dropped += 1
                    return False
                self._kinds[kind] = [now, 0]
                return True
            if now - seen[0] < self.interval:
                seen[1] += 1
                self.dropped += 1
                return False
            suppressed = int(seen[1])
            seen[0], seen[1] = now, 0
        if suppressed:
            record.msg = f"{record.msg} (and %d more since the last report)"
            record.args = (*args, suppressed) if isinstance(args, tuple) else (suppressed,)
        return True


#: Every client's ``logger``: librdkafka's lines as Python log records (``FAIL [rdkafka#...]
#: ...``), a burst of one kind logged once per 10 s. Without it librdkafka writes to stderr.
LIBRDKAFKA_LOGGER = logging.getLogger("stream_monitor.kafka.librdkafka")
if not any(isinstance(f, RateLimitFilter) for f in LIBRDKAFKA_LOGGER.filters):
    LIBRDKAFKA_LOGGER.addFilter(RateLimitFilter(10.0))


def _base_config(cfg: MonitorConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": cfg.bootstrap_servers,
        "logger": LIBRDKAFKA_LOGGER,
        **cfg.security.client_config(),
    }


def client_config(cfg: MonitorConfig) -> dict[str, Any]:
    """Connection settings shared by every client: bootstrap servers, ``[security]``, then
    ``[kafka]`` (secrets revealed: never log this dict), and the Python ``logger``.

    >>> from stream_monitor.config import MonitorConfig
    >>> cfg = MonitorConfig.model_validate({"bootstrap_servers": "k:9093",
    ...     "kafka": {"security.protocol": "SASL_SSL", "sasl.password": "pw"}})
    >>> conf = client_config(cfg)
    >>> conf["security.protocol"], conf["sasl.password"], conf["logger"].name
    ('SASL_SSL', 'pw', 'stream_monitor.kafka.librdkafka')
    """
    return {**_base_config(cfg), **cfg.kafka.client_config()}


def with_defaults(
    cfg: MonitorConfig,
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A client's settings: :func:`client_config` with the client's own ``defaults`` under
    ``[kafka]`` (which wins over them) and ``overrides`` over everything."""
    return {
        **_base_config(cfg),
        **defaults,
        **cfg.kafka.client_config(),
        **(overrides or {}),
    }


def consumer_config(cfg: MonitorConfig) -> dict[str, Any]:
    """Consumer settings: no auto-commit (checkpoints commit offsets), read_committed."""
    return with_defaults(
        cfg,
        {
            "group.id": cfg.group_id,
            # Offsets are committed only by checkpoints, together with the state they match.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Range assignment gives one instance the same partition number of every input
            # topic, which the co-partitioned prediction/label join relies on.
            "partition.assignment.strategy": "range",
            "isolation.level": "read_committed",
            # Bounded prefetch: load_tests/RESULTS.md measured 849 -> 498 MiB peak RSS on a
            # backlog.
            "fetch.max.bytes": 8 * 1024 * 1024,
            "max.partition.fetch.bytes": 1024 * 1024,
            "queued.max.messages.kbytes": 16384,
            # With that bound, librdkafka's default (postpone a partition's next fetch by 1 s
            # once its queue is over the bound) starves the loop: a monitor reading 17 MB/s
            # empties 16 MB in about a second and then waits. A backlog of predictions and
            # labels drained 36,000-37,000 records/s with it and 45,700-47,700 with 50 ms, on
            # one core instead of 0.74-0.79 (load_tests/RESULTS.md, issue 13).
            "fetch.queue.backoff.ms": 50,
        },
        cfg.consumer_overrides,
    )


def producer_config(cfg: MonitorConfig) -> dict[str, Any]:
    return with_defaults(
        cfg,
        {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            # Room for the largest record we write: a changelog snapshot (64 MiB topic limit).
            "message.max.bytes": 64 * 1024 * 1024 + 65536,
            "compression.type": "lz4",
        },
        cfg.producer_overrides,
    )


def make_consumer(cfg: MonitorConfig, **callbacks: Any) -> Consumer:
    return Consumer({**consumer_config(cfg), **callbacks})


def make_producer(cfg: MonitorConfig, transactional_id: str | None = None) -> Producer:
    conf = producer_config(cfg)
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        conf.setdefault("transaction.timeout.ms", 60_000)
    return Producer(conf)


#: Metadata errors after which :meth:`MonitorAdmin.list_topics` asks again until its timeout.
_RETRIABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
    }
)


class MonitorAdmin(AdminClient):  # type: ignore[misc]
    """An ``AdminClient`` whose ``list_topics`` failure names the client's last error (an SSL
    handshake or SASL failure says more than "Failed to get metadata"), and which serves its
    queued log lines and error events at least once a second while ``list_topics`` waits (an
    admin client is otherwise polled by no one, and its log lines would wait in its queue)."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.last_error: str | None = None
        full: dict[str, Any] = {**conf, "error_cb": self._on_error}
        super().__init__(full)

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        deadline = time.monotonic() + timeout if timeout >= 0 else None
        while True:
            step = -1.0 if deadline is None else min(1.0, max(deadline - time.monotonic(), 0.0))
            try:
                return super().list_topics(topic, timeout=step)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                self.poll(0)  # serves the log lines and the error callback
                retriable = err is not None and err.code() in _RETRIABLE
                if retriable and deadline is not None and time.monotonic() < deadline:
                    continue
                last = self.last_error
                if err is None or not last or last in err.str():
                    raise
                raise KafkaException(KafkaError(err.code(), f"{err.str()} ({last})")) from None
            finally:
                self.poll(0)


def make_admin(cfg: MonitorConfig) -> AdminClient:
    return MonitorAdmin(client_config(cfg))


def _list_topics(admin: AdminClient, timeout: float) -> dict[str, Any]:
    try:
        topics: dict[str, Any] = admin.list_topics(timeout=timeout).topics
        return topics
    finally:
        admin.poll(0)  # the admin's log lines wait in its queue until it is polled


def ensure_topics(admin: AdminClient, wanted: list[NewTopic], timeout: float = 30.0) -> None:
    """Create the topics of ``wanted`` that do not exist yet (existing ones are left alone).

    A replication factor of -1 takes the broker's ``default.replication.factor``."""
    existing = _list_topics(admin, timeout)
    missing = [nt for nt in wanted if nt.topic not in existing]
    if not missing:
        return
    try:
        for topic, fut in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                fut.result()
                log.info("created topic topic=%s", topic)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    finally:
        admin.poll(0)  # the admin's log lines wait in its queue until it is polled


def ensure_output_topics(admin: AdminClient, cfg: MonitorConfig, timeout: float = 30.0) -> None:
    """Create the alerts, dead-letter (and retrain, when set) topics when they do not exist."""
    t = cfg.topics
    retrain = (
        []
        if t.retrain is None
        else [NewTopic(t.retrain, t.output_partitions, t.output_replication_factor)]
    )
    ensure_topics(
        admin,
        [
            *retrain,
            NewTopic(t.alerts, t.output_partitions, t.output_replication_factor),
            NewTopic(
                t.dead_letter,
                t.output_partitions,
                t.output_replication_factor,
                config={"max.message.bytes": str(DEAD_LETTER_MAX_BYTES + 65536)},
            ),
        ],
        timeout,
    )


def ensure_input_topics(
    cluster: str | MonitorConfig,
    *,
    partitions: int,
    predictions: str = "predictions",
    labels: str = "labels",
    max_message_bytes: int = 4 * 1024 * 1024,
    replication_factor: int = -1,
) -> None:
    """Create co-partitioned input topics (for the simulator, demos and tests).

    ``cluster``: bootstrap servers, or a configuration (its ``[kafka]`` settings apply)."""
    if isinstance(cluster, MonitorConfig):
        admin = make_admin(cluster)
    else:
        conf: dict[str, Any] = {"bootstrap.servers": cluster, "logger": LIBRDKAFKA_LOGGER}
        admin = AdminClient(conf)
    topic_conf = {"max.message.bytes": str(max_message_bytes)}
    ensure_topics(
        admin,
        [
            NewTopic(t, partitions, replication_factor, config=topic_conf)
            for t in (predictions, labels)
        ],
    )


def check_input_topics(admin: AdminClient, cfg: MonitorConfig, timeout: float = 10.0) -> int:
    """Check that both input topics exist and are co-partitioned; return the partition count.

    Raises ``TopicsNotReady`` while a topic is missing, ``ConfigError`` when the partition
    counts differ (a model's labels would land on another instance than its predictions).
    """
    meta = _list_topics(admin, timeout)
    t = cfg.topics
    counts = {}
    for name in (t.predictions, t.labels):
        tm = meta.get(name)
        if tm is None or tm.error is not None or not tm.partitions:
            raise TopicsNotReady(f"input topic {name!r} does not exist yet")
        counts[name] = len(tm.partitions)
    if counts[t.predictions] != counts[t.labels]:
        raise ConfigError(
            f"topics {t.predictions!r} ({counts[t.predictions]} partitions) and {t.labels!r} "
            f"({counts[t.labels]} partitions) are not co-partitioned: give them the same "
            "partition count and key both by model_id"
        )
    return counts[t.predictions]
