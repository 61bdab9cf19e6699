"""Helpers for integration tests: real producers and consumers on the test broker."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream_monitor.app import Application
from stream_monitor.config import MonitorConfig


def monitor_config(bootstrap: str, names: dict[str, str], **extra: Any) -> MonitorConfig:
    """A MonitorConfig on the test's own topics and group, metrics on an ephemeral port."""
    return MonitorConfig.model_validate(
        {
            "bootstrap_servers": bootstrap,
            "group_id": names["group"],
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
            "topics": {k: names[k] for k in ("predictions", "labels", "alerts", "dead_letter")},
            **extra,
        }
    )


def produce_all(bootstrap: str, records: Any) -> int:
    """Produce ``(topic, key, value)`` triples and wait until every one is acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10, "message.max.bytes": 4_000_000})
    errors: list[Any] = []
    n = 0
    for topic, key, value in records:
        while True:
            try:
                p.produce(
                    topic,
                    value=value,
                    key=key,
                    on_delivery=lambda err, _m: errors.append(err) if err else None,
                )
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        p.poll(0)
    assert p.flush(60) == 0, "producer did not drain"
    assert not errors, f"delivery errors: {errors[:3]}"
    return n


def read_all(bootstrap: str, topic: str, *, idle: float = 3.0, timeout: float = 60.0) -> list[Any]:
    """Read a topic from the beginning (read_committed) until it stays idle for ``idle`` s."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
    )
    assigned: list[bool] = []
    c.subscribe([topic], on_assign=lambda _c, parts: assigned.append(bool(parts)))
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        # The idle clock starts only once partitions are assigned (a group join takes seconds).
        while time.monotonic() < deadline and (not assigned or time.monotonic() - last < idle):
            if not assigned:
                last = time.monotonic()
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    out.append(m)
                    last = time.monotonic()
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(str(m.error()))
    finally:
        c.close()
    return out


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return [
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        c.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and parse it with prometheus_client's own parser."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def running_app(cfg: MonitorConfig) -> Iterator[Application]:
    """Run an Application on a thread; stop it and re-raise its error at the end."""
    app = Application(cfg)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            app.run()
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=target, name="app", daemon=True)
    t.start()
    try:
        wait_until(lambda: app.server is not None or bool(failure), 30, "the metrics server")
        yield app
    finally:
        app.stop()
        t.join(60)
        assert not t.is_alive(), "application did not stop within 60 s"
    if failure:
        raise failure[0]
