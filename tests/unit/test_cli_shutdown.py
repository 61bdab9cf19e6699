"""After SIGTERM (``Application.stop``), the final checkpoint, leaving the group and the last
flush get a bounded time: a Kafka call that blocks (the broker is gone) does not hold the exit.
tests/integration/test_shutdown.py runs the real process."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.app import Application
from stream_monitor.config import MonitorConfig


class FakeConsumer:
    def __init__(self, release: threading.Event | None = None) -> None:
        self.release = release
        self.calls: list[str] = []

    def close(self) -> None:
        self.calls.append("close")
        if self.release is not None:
            self.release.wait(60)  # as librdkafka's close waits for an unreachable broker
        self.calls.append("closed")


class FakeProducer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def flush(self, timeout: float) -> int:
        self.calls.append(f"flush {timeout:g}")
        return 0


def _app() -> Application:
    cfg = MonitorConfig(bootstrap_servers="127.0.0.1:1")
    return Application(cfg, registry=CollectorRegistry(), serve_metrics=False, shutdown_timeout=3.0)


def test_a_clean_shutdown_closes_then_flushes(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    app.health.broker_reachable = True
    consumer = FakeConsumer()
    app._producer = FakeProducer(consumer.calls)
    with caplog.at_level(logging.WARNING, logger="stream_monitor.app"):
        app._shut_down(consumer)
    assert consumer.calls == ["close", "closed", "flush 3"]
    assert not caplog.records


def test_a_blocked_close_does_not_hold_the_exit(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    app.health.broker_reachable = False  # what the client's error callback says
    release = threading.Event()
    consumer = FakeConsumer(release)
    app._producer = FakeProducer(consumer.calls)
    try:
        with caplog.at_level(logging.ERROR, logger="stream_monitor.app"):
            app._shut_down(consumer)  # returns although close() is still blocked
        assert consumer.calls == ["close"]
        messages = [r.getMessage() for r in caplog.records]
        assert messages == [
            "the final checkpoint did not finish within 1 s: stopping without it (a restart "
            "resumes from the last committed checkpoint)"
        ]
    finally:
        release.set()


def test_a_failing_close_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    app.health.broker_reachable = True

    class Broken(FakeConsumer):
        def close(self) -> Any:
            raise RuntimeError("consumer already closed")

    consumer = Broken()
    app._producer = FakeProducer(consumer.calls)
    with caplog.at_level(logging.WARNING, logger="stream_monitor.app"):
        app._shut_down(consumer)
    assert [r.getMessage() for r in caplog.records] == [
        "closing the clients failed: RuntimeError: consumer already closed"
    ]
