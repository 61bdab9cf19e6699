"""The changelog topic on a real broker: creation and checks, and reading a partition's latest
record under read_committed (committed, aborted and open transactions; tombstones)."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from stream_monitor.errors import ConfigError
from stream_monitor.state import (
    ChangelogError,
    ChangelogTimeout,
    Snapshot,
    changelog_topic_name,
    decode_snapshot,
    encode_snapshot,
    ensure_changelog_topic,
    key_from_secret,
    read_latest,
)

pytestmark = pytest.mark.integration

KEY = key_from_secret("integration-test-secret-0123456789")


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def changelog(admin: AdminClient) -> str:
    """A fresh two-partition changelog topic."""
    name = changelog_topic_name(f"stream-monitor-{uuid.uuid4().hex[:10]}")
    ensure_changelog_topic(admin, name, 2)
    return name


@pytest.fixture
def txn_producer(kafka_bootstrap: str) -> Iterator[Producer]:
    p = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"changelog-test-{uuid.uuid4().hex}",
            "message.max.bytes": 64 * 1024 * 1024,
        }
    )
    p.init_transactions(30)
    yield p
    p.flush(30)


def _snap(partition: int, n: int) -> Snapshot:
    return Snapshot(
        partition=partition,
        offsets={"predictions": 100 * n, "labels": 10 * n},
        state={"v": 1, "partition": partition, "n": n, "name": f"snapshot-{n}-ü", "x": n / 3},
        created_at=1_700_000_000.0 + n,
    )


def _produce_txn(p: Producer, topic: str, snap: Snapshot, *, commit: bool) -> None:
    rkey, value, headers = encode_snapshot(snap, KEY)
    p.begin_transaction()
    p.produce(topic, value=value, key=rkey, headers=headers, partition=snap.partition)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def _produce_plain(bootstrap: str, topic: str, partition: int, key: bytes, value: Any) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value=value, key=key, partition=partition)
    assert p.flush(30) == 0


def _decoded(record: Any, partition: int) -> Any:
    assert record is not None
    key, value, headers = record
    return decode_snapshot(key, value, headers, KEY, expected_partition=partition)


# --- ensure_changelog_topic --------------------------------------------------------------------


def test_creates_a_compacted_topic(admin: AdminClient) -> None:
    name = changelog_topic_name(f"g-{uuid.uuid4().hex[:10]}")
    ensure_changelog_topic(admin, name, 3)
    meta = admin.list_topics(name, timeout=10).topics[name]
    assert len(meta.partitions) == 3
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([res])[res].result(30)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["max.message.bytes"].value == str(64 * 1024 * 1024)
    assert float(configs["min.cleanable.dirty.ratio"].value) == 0.1
    assert configs["segment.ms"].value == "3600000"


def test_second_call_is_a_no_op(admin: AdminClient, caplog: pytest.LogCaptureFixture) -> None:
    name = changelog_topic_name(f"g-{uuid.uuid4().hex[:10]}")
    ensure_changelog_topic(admin, name, 2)
    with caplog.at_level(logging.DEBUG, logger="stream_monitor.state.changelog"):
        ensure_changelog_topic(admin, name, 2)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    assert len(admin.list_topics(name, timeout=10).topics[name].partitions) == 2


def test_other_partition_count_is_a_config_error(admin: AdminClient) -> None:
    name = changelog_topic_name(f"g-{uuid.uuid4().hex[:10]}")
    ensure_changelog_topic(admin, name, 2)
    with pytest.raises(ConfigError, match=r"has 2 partitions but the input topics have 4"):
        ensure_changelog_topic(admin, name, 4)


def test_existing_uncompacted_topic_is_kept_with_a_warning(
    admin: AdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = changelog_topic_name(f"g-{uuid.uuid4().hex[:10]}")
    admin.create_topics([NewTopic(name, 2, 1, config={"cleanup.policy": "delete"})])[name].result(
        30
    )
    with caplog.at_level(logging.WARNING, logger="stream_monitor.state.changelog"):
        ensure_changelog_topic(admin, name, 2)
    assert any("not compacted" in r.getMessage() for r in caplog.records), caplog.text
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    assert admin.describe_configs([res])[res].result(30)["cleanup.policy"].value == "delete"


def test_invalid_replication_factor_is_a_config_error(admin: AdminClient) -> None:
    name = changelog_topic_name(f"g-{uuid.uuid4().hex[:10]}")
    with pytest.raises(ConfigError):
        ensure_changelog_topic(admin, name, 1, replication_factor=5)


# --- read_latest -------------------------------------------------------------------------------


def test_empty_partition_is_none(kafka_bootstrap: str, changelog: str) -> None:
    assert read_latest({"bootstrap.servers": kafka_bootstrap}, changelog, 1, timeout=30) is None


def test_committed_then_aborted_returns_the_committed(
    kafka_bootstrap: str, changelog: str, txn_producer: Producer
) -> None:
    conf = {"bootstrap.servers": kafka_bootstrap}
    _produce_txn(txn_producer, changelog, _snap(1, 1), commit=True)
    _produce_txn(txn_producer, changelog, _snap(1, 2), commit=True)
    _produce_txn(txn_producer, changelog, _snap(1, 3), commit=False)
    # Partition 0 is written too, later; it must not change partition 1's answer.
    _produce_txn(txn_producer, changelog, _snap(0, 4), commit=True)
    _produce_txn(txn_producer, changelog, _snap(0, 5), commit=True)

    assert _decoded(read_latest(conf, changelog, 1), 1) == _snap(1, 2)
    assert _decoded(read_latest(conf, changelog, 0), 0) == _snap(0, 5)


def test_only_aborted_records_is_none(
    kafka_bootstrap: str, changelog: str, txn_producer: Producer
) -> None:
    _produce_txn(txn_producer, changelog, _snap(1, 1), commit=False)
    assert read_latest({"bootstrap.servers": kafka_bootstrap}, changelog, 1) is None


def test_open_transaction_does_not_block_or_leak(
    kafka_bootstrap: str, changelog: str, txn_producer: Producer
) -> None:
    conf = {"bootstrap.servers": kafka_bootstrap}
    _produce_txn(txn_producer, changelog, _snap(1, 1), commit=True)
    rkey, value, headers = encode_snapshot(_snap(1, 2), KEY)
    txn_producer.begin_transaction()
    txn_producer.produce(changelog, value=value, key=rkey, headers=headers, partition=1)
    assert txn_producer.flush(30) == 0  # on the broker, but not committed
    try:
        start = time.monotonic()
        assert _decoded(read_latest(conf, changelog, 1, timeout=20), 1) == _snap(1, 1)
        assert time.monotonic() - start < 15
    finally:
        txn_producer.abort_transaction(30)


def test_round_trip_through_kafka(kafka_bootstrap: str, changelog: str) -> None:
    snap = Snapshot(
        partition=0,
        offsets={"predictions": 123456789, "labels": 0},
        state={"models": [{"model_id": "modèle-😀", "hist": [0.1, 2.5e-8, 1e300]}], "v": 1},
        created_at=1_712_345_678.987654,
    )
    rkey, value, headers = encode_snapshot(snap, KEY)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(changelog, value=value, key=rkey, headers=headers, partition=0)
    assert p.flush(30) == 0

    record = read_latest({"bootstrap.servers": kafka_bootstrap}, changelog, 0)
    assert record is not None
    assert record[0] == b"0"
    assert [name for name, _ in record[2]] == ["x-checkpoint-format", "x-hmac-sha256"]
    assert _decoded(record, 0) == snap


def _in_order(bootstrap: str, **extra: Any) -> tuple[Producer, list[Any]]:
    """A producer that writes a partition's records in the order they were produced, and the
    list its records' delivery errors go to. Without idempotence,
    a batch that fails right after the topic is created (its leader not ready yet) is retried
    after later batches were written: the partition's last record is then not the last one
    produced (seen in CI: the 386th of 500 came last)."""
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "on_delivery": delivered,
    }
    return Producer({**conf, **extra}), errors


def _sent(p: Producer, errors: list[Any]) -> None:
    """Wait for every record; fail if one was not delivered."""
    assert p.flush(30) == 0
    assert errors == []


def test_tombstone_counts_as_the_latest(kafka_bootstrap: str, changelog: str) -> None:
    conf = {"bootstrap.servers": kafka_bootstrap}
    rkey, value, headers = encode_snapshot(_snap(1, 1), KEY)
    p, errors = _in_order(kafka_bootstrap)
    p.produce(changelog, value=value, key=rkey, headers=headers, partition=1)
    p.produce(changelog, value=None, key=b"1", partition=1)
    _sent(p, errors)
    assert read_latest(conf, changelog, 1) == (b"1", None, [])
    refused = _decoded(read_latest(conf, changelog, 1), 1)
    assert refused.reason == "unsigned"


def test_many_records_returns_the_last(kafka_bootstrap: str, changelog: str) -> None:
    p, errors = _in_order(kafka_bootstrap, **{"linger.ms": 5})
    for n in range(1, 501):
        rkey, value, headers = encode_snapshot(_snap(0, n), KEY)
        p.produce(changelog, value=value, key=rkey, headers=headers, partition=0)
    _sent(p, errors)
    record = read_latest({"bootstrap.servers": kafka_bootstrap}, changelog, 0)
    assert _decoded(record, 0) == _snap(0, 500)


def test_config_is_not_modified_and_group_settings_are_overridden(
    kafka_bootstrap: str, changelog: str
) -> None:
    _produce_plain(kafka_bootstrap, changelog, 0, b"0", b"raw")
    conf = {
        "bootstrap.servers": kafka_bootstrap,
        "group.id": "the-monitor-group",
        "enable.auto.commit": True,
        "isolation.level": "read_uncommitted",
        "enable.partition.eof": False,
    }
    before = dict(conf)
    assert read_latest(conf, changelog, 0, timeout=20) == (b"0", b"raw", [])
    assert conf == before
    # Nothing was committed for the caller's group.

    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "the-monitor-group"})
    try:
        [tp] = c.committed([TopicPartition(changelog, 0)], timeout=10)
        assert tp.offset < 0
    finally:
        c.close()


def test_unknown_partition_is_an_error_not_a_hang(kafka_bootstrap: str, changelog: str) -> None:
    start = time.monotonic()
    with pytest.raises(ChangelogError):
        read_latest({"bootstrap.servers": kafka_bootstrap}, changelog, 7, timeout=10)
    assert time.monotonic() - start < 12


def test_unknown_topic_is_an_error_not_a_hang(kafka_bootstrap: str) -> None:
    start = time.monotonic()
    with pytest.raises(ChangelogError):
        read_latest(
            {"bootstrap.servers": kafka_bootstrap}, f"missing-{uuid.uuid4().hex}", 0, timeout=10
        )
    assert time.monotonic() - start < 12


def test_unreachable_broker_times_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    start = time.monotonic()
    with pytest.raises(ChangelogTimeout):
        read_latest({"bootstrap.servers": f"127.0.0.1:{port}"}, "changelog", 0, timeout=2)
    assert time.monotonic() - start < 6
