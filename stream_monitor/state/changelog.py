"""The compacted changelog topic that holds partition-state checkpoints (thin Kafka I/O).

The changelog has exactly one partition per input partition; the checkpoint of input
partition ``p`` is written with record key ``str(p)`` to changelog partition ``p`` (see
:mod:`stream_monitor.state.envelope`). Compaction keeps the latest record of each key, so
restoring a partition means reading its changelog partition to the end and taking the last
record. Records are returned raw: authenticate them with
:func:`~stream_monitor.state.envelope.decode_snapshot` before using them.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from stream_monitor.errors import ConfigError, StreamMonitorError

__all__ = [
    "CHANGELOG_MAX_MESSAGE_BYTES",
    "CHANGELOG_TOPIC_CONFIG",
    "ChangelogError",
    "ChangelogTimeout",
    "Record",
    "changelog_topic_name",
    "ensure_changelog_topic",
    "read_by_key",
    "read_latest",
]

log = logging.getLogger(__name__)

#: Largest checkpoint record the changelog topic accepts (64 MiB). Producers writing
#: checkpoints need ``message.max.bytes`` at least this large to use it.
CHANGELOG_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Topic configuration of a changelog created by :func:`ensure_changelog_topic`.
CHANGELOG_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(CHANGELOG_MAX_MESSAGE_BYTES),
    # Compact eagerly and roll segments hourly: only the latest checkpoint of a key matters,
    # and the active segment is never compacted.
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": "3600000",
}

#: A raw changelog record: ``(key, value, headers)``; ``value`` is None for a tombstone.
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]

# Errors that no amount of waiting fixes: reading gives up at once instead of at the timeout.
_PERMANENT_READ_ERRORS = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)
# Topic-creation errors that mean the request or the permissions are wrong.
_CONFIG_CREATE_ERRORS = frozenset(
    {
        KafkaError.INVALID_PARTITIONS,
        KafkaError.INVALID_REPLICATION_FACTOR,
        KafkaError.INVALID_REPLICA_ASSIGNMENT,
        KafkaError.INVALID_CONFIG,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


class ChangelogError(StreamMonitorError):
    """The changelog topic could not be read or inspected."""


class ChangelogTimeout(ChangelogError):
    """Reading or inspecting the changelog did not finish within the timeout."""


def changelog_topic_name(group_id: str) -> str:
    """The changelog topic of a consumer group.

    Parameters
    ----------
    group_id
        The monitor's consumer group id.

    Returns
    -------
    str
        ``f"{group_id}-changelog"``.

    Examples
    --------
    >>> changelog_topic_name("stream-monitor")
    'stream-monitor-changelog'
    """
    return f"{group_id}-changelog"


def _error_of(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    """Consumed headers as a list of ``(name, bytes | None)`` (confluent-kafka gives a list of
    tuples with bytes values; the looser shapes its type stubs allow are normalised)."""
    items = raw.items() if isinstance(raw, dict) else (raw or [])
    return [(k, v.encode("utf-8") if isinstance(v, str) else v) for k, v in items]


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _partition_count(admin: AdminClient, name: str, deadline: float) -> int | None:
    """The partition count of ``name``, or None if the topic does not exist."""
    try:
        topics = admin.list_topics(timeout=max(_remaining(deadline), 0.1)).topics
    except KafkaException as exc:
        raise ChangelogTimeout(
            f"could not list topics to check changelog topic {name!r}: {exc}"
        ) from exc
    tm = topics.get(name)
    if tm is None:
        return None
    if tm.error is not None and tm.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return None
    return len(tm.partitions)


def _create(
    admin: AdminClient, name: str, partitions: int, replication_factor: int, deadline: float
) -> bool:
    """Create the topic; return False if it already existed (another instance was faster)."""
    new = NewTopic(name, partitions, replication_factor, config=dict(CHANGELOG_TOPIC_CONFIG))
    fut = admin.create_topics([new], operation_timeout=max(_remaining(deadline), 0.1))[name]
    try:
        fut.result(timeout=max(_remaining(deadline), 0.1))
    except KafkaException as exc:
        err = _error_of(exc)
        code = err.code() if err is not None else None
        if code == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        if code in _CONFIG_CREATE_ERRORS:
            raise ConfigError(f"cannot create changelog topic {name!r}: {exc}") from exc
        raise ChangelogError(f"cannot create changelog topic {name!r}: {exc}") from exc
    except TimeoutError as exc:  # concurrent.futures.TimeoutError is TimeoutError since 3.11
        raise ChangelogTimeout(f"creating changelog topic {name!r} timed out") from exc
    log.info(
        "created changelog topic topic=%s partitions=%d replication_factor=%d",
        name,
        partitions,
        replication_factor,
    )
    return True


def _warn_unless_compacted(admin: AdminClient, name: str, deadline: float) -> None:
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        configs = admin.describe_configs([res])[res].result(timeout=max(_remaining(deadline), 0.1))
        policy = configs["cleanup.policy"].value or ""
    except (KafkaException, KeyError, TimeoutError) as exc:
        log.warning("could not check cleanup.policy of changelog topic topic=%s: %s", name, exc)
        return
    policies = {p.strip() for p in policy.split(",")}
    if "compact" not in policies:
        log.warning(
            "changelog topic is not compacted topic=%s cleanup.policy=%s: old checkpoints are "
            "kept until retention deletes them, then deleted even if they are the latest; "
            "set cleanup.policy=compact",
            name,
            policy,
        )
    elif "delete" in policies:
        log.warning(
            "changelog topic also deletes by retention topic=%s cleanup.policy=%s: the "
            "checkpoint of a partition not checkpointed within retention.ms will be lost; "
            "set cleanup.policy=compact",
            name,
            policy,
        )


def ensure_changelog_topic(
    admin: AdminClient,
    name: str,
    partitions: int,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create the compacted changelog topic if it does not exist, and check it if it does.

    A new topic gets :data:`CHANGELOG_TOPIC_CONFIG` (``cleanup.policy=compact``, 64 MiB
    ``max.message.bytes``, ``min.cleanable.dirty.ratio=0.1``, ``segment.ms=3600000``). An
    existing topic is left as it is: its partition count must be ``partitions``, and a warning
    is logged if it is not compacted.

    Parameters
    ----------
    admin
        An admin client of the cluster.
    name
        The changelog topic (:func:`changelog_topic_name`).
    partitions
        The partition count of the input topics: one changelog partition per input partition.
    replication_factor
        Replication factor of a new topic (-1 for the broker default).
    timeout
        Overall time limit in seconds.

    Raises
    ------
    ValueError
        If ``partitions`` < 1.
    ConfigError
        If the topic exists with another partition count, or the broker refuses to create it
        as asked (invalid replication factor, policy, authorization).
    ChangelogError
        If the cluster cannot be reached or answers with another error
        (:class:`ChangelogTimeout` when ``timeout`` runs out).

    Examples
    --------
    >>> from confluent_kafka.admin import AdminClient
    >>> admin = AdminClient({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    >>> ensure_changelog_topic(admin, "stream-monitor-changelog", partitions=0)
    Traceback (most recent call last):
    ...
    ValueError: partitions must be >= 1, got 0
    >>> try:  # nothing listens on port 1: gives up after the timeout, never hangs
    ...     ensure_changelog_topic(admin, "stream-monitor-changelog", 6, timeout=0.5)
    ... except ChangelogError as exc:
    ...     print(type(exc).__name__)
    ChangelogTimeout
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    deadline = time.monotonic() + timeout
    count = _partition_count(admin, name, deadline)
    if count is None and _create(admin, name, partitions, replication_factor, deadline):
        return
    while count is None:  # lost a creation race: wait until the metadata shows the topic
        if _remaining(deadline) <= 0:
            raise ChangelogTimeout(f"changelog topic {name!r} exists but has no metadata yet")
        time.sleep(0.1)
        count = _partition_count(admin, name, deadline)
    if count != partitions:
        raise ConfigError(
            f"changelog topic {name!r} has {count} partitions but the input topics have "
            f"{partitions}: the changelog needs exactly one partition per input partition. "
            "Delete the changelog topic (the monitor then rebuilds its state from the input) "
            "or use another consumer group"
        )
    _warn_unless_compacted(admin, name, deadline)


def read_by_key(
    client_config: dict[str, Any],
    topic: str,
    partition: int,
    timeout: float = 30.0,
) -> dict[bytes | None, Record]:
    """Read one changelog partition as :func:`read_latest` does; return the latest record of
    each key (a key whose latest record is a tombstone is left out): the checkpoint and the
    label-join chunks of one input partition."""
    found = _read(client_config, topic, partition, timeout, by_key=True)
    assert isinstance(found, dict)
    return found


def read_latest(
    client_config: dict[str, Any],
    topic: str,
    partition: int,
    timeout: float = 30.0,
) -> Record | None:
    """Read one changelog partition from the beginning to its end; return its last record.

    A standalone consumer reads the partition (``assign``, no group membership, no offset
    commit) with ``isolation.level=read_committed``, so aborted and still-open transactions are
    invisible. It stops at the partition-EOF event, not at an offset: under read_committed the
    end can lie beyond the last data record (transaction markers) or before the high watermark
    (an open transaction). It returns the last record read, a tombstone (``value`` None)
    included; compaction keeps the latest record of each key, and a monitor's changelog
    partition holds several (the checkpoint and its label-join chunks): the monitor reads it
    with :func:`read_by_key`. The partition must not be written while it
    is read (its monitor instance owns it), otherwise the end may keep moving.

    Parameters
    ----------
    client_config
        librdkafka settings of the cluster (``bootstrap.servers``, security); consumer settings
        that this function relies on are overridden. Not modified.
    topic
        The changelog topic.
    partition
        The changelog partition (= the input partition number).
    timeout
        Overall time limit in seconds.

    Returns
    -------
    tuple or None
        ``(key, value, headers)`` of the last record (``headers`` is ``[]`` when it has none),
        or None if the partition has no committed record.

    Raises
    ------
    ConfigError
        If ``client_config`` is not a valid librdkafka consumer configuration.
    ChangelogTimeout
        If the end of the partition was not reached within ``timeout``.
    ChangelogError
        If the topic or partition does not exist or may not be read.

    Examples
    --------
    >>> try:  # nothing listens on port 1: gives up after the timeout, never hangs
    ...     read_latest({"bootstrap.servers": "127.0.0.1:1", "log_level": 0},
    ...                 "stream-monitor-changelog", 0, timeout=0.5)
    ... except ChangelogError as exc:
    ...     print(type(exc).__name__)
    ChangelogTimeout
    """
    found = _read(client_config, topic, partition, timeout, by_key=False)
    assert not isinstance(found, dict)
    return found


def _read(
    client_config: dict[str, Any], topic: str, partition: int, timeout: float, *, by_key: bool
) -> Record | dict[bytes | None, Record] | None:
    deadline = time.monotonic() + timeout
    conf = {
        **client_config,
        "group.id": f"stream-monitor-changelog-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        # The broker holds an empty fetch this long; the EOF event comes with such a fetch.
        "fetch.wait.max.ms": 100,
    }
    tp = TopicPartition(topic, partition)
    where = f"changelog {topic!r} partition {partition}"
    try:
        consumer = Consumer(conf)
    except KafkaException as exc:
        raise ConfigError(f"cannot create a consumer to read {where}: {exc}") from exc
    try:
        while True:
            try:
                low, high = consumer.get_watermark_offsets(
                    tp, timeout=max(_remaining(deadline), 0.1), cached=False
                )
                break
            except KafkaException as exc:
                err = _error_of(exc)
                if err is not None and err.code() in _PERMANENT_READ_ERRORS:
                    raise ChangelogError(f"cannot read {where}: {exc}") from exc
                # A new topic has no leader for a moment (NOT_LEADER_FOR_PARTITION): retry.
                if _remaining(deadline) <= 0.2:
                    raise ChangelogTimeout(f"cannot get the offsets of {where}: {exc}") from exc
                time.sleep(0.2)
        if high <= low:
            log.debug("changelog partition is empty topic=%s partition=%d", topic, partition)
            return {} if by_key else None
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        last: Record | None = None
        latest: dict[bytes | None, Record] = {}
        n_read = 0
        last_offset = -1
        while True:
            remaining = _remaining(deadline)
            if remaining <= 0:
                raise ChangelogTimeout(
                    f"{where}: end not reached within {timeout} s ({n_read} records read, "
                    f"last offset {last_offset}, high watermark {high})"
                )
            # poll, not consume: a batch consume waits out its whole timeout when fewer
            # messages than asked for arrive, which is always the case at the end.
            msg = consumer.poll(min(remaining, 0.5))
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                if msg.topic() == topic and msg.partition() == partition:
                    last = (msg.key(), msg.value(), _headers(msg.headers()))
                    if by_key:
                        if last[1] is None:
                            latest.pop(last[0], None)
                        else:
                            latest[last[0]] = last
                    n_read += 1
                    last_offset = msg.offset() or 0
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                if msg.topic() == topic and msg.partition() == partition:
                    # The end queried before reading (the last stable offset, as the
                    # consumer reads read_committed) cannot move back: an end-of-partition
                    # event before it came early (seen once at 344 of 500 records just
                    # flushed), and the rest is still to read.
                    if (msg.offset() or 0) < high:
                        continue
                    log.debug(
                        "read changelog partition topic=%s partition=%d records=%d "
                        "last_offset=%d end=%s",
                        topic,
                        partition,
                        n_read,
                        last_offset,
                        msg.offset(),
                    )
                    return latest if by_key else last
                continue
            if err.fatal() or err.code() in _PERMANENT_READ_ERRORS:
                raise ChangelogError(f"cannot read {where}: {err}")
            # Transient (broker down, leader moving): librdkafka retries by itself.
            log.debug("transient error reading %s: %s", where, err)
    finally:
        consumer.close()
