"""/healthz: honest liveness. It fails (503, with the reason) when the processing loop has not
completed a cycle for ``health.max_loop_stall_seconds`` beyond what the step under way may take,
and stays green through a slow checkpoint or restore."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.app import Application
from stream_monitor.config import MonitorConfig
from stream_monitor.metrics.server import HealthState, MetricsServer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_follows_the_loop_cycles() -> None:
    clock = FakeClock()
    h = HealthState(max_loop_stall_seconds=60, clock=clock)
    assert h.liveness() == (True, "starting")
    h.cycle()
    clock.now += 60
    assert h.liveness() == (True, "ok")  # at the limit, not past it
    clock.now += 0.5
    ok, why = h.liveness()
    assert not ok
    assert why == "the processing loop has not completed a cycle for 60 s (limit 60 s)"
    h.cycle()  # the loop came back
    assert h.liveness() == (True, "ok")
    h.alive = False
    assert h.liveness() == (False, "stopping")


def test_a_long_step_with_an_allowance_stays_alive_until_it_runs_out() -> None:
    clock = FakeClock()
    h = HealthState(max_loop_stall_seconds=60, clock=clock)
    h.cycle()
    h.allow(360)  # a checkpoint at the default commit timeout (12 x 30 s)
    h.allow(120)  # and a restore in the same cycle
    clock.now += 500
    assert h.liveness() == (True, "ok")
    clock.now += 41
    assert h.liveness()[1] == (
        "the processing loop has not completed a cycle for 541 s (limit 540 s)"
    )
    h.cycle()  # the allowance ends with the cycle
    clock.now += 61
    assert not h.liveness()[0]
    h.allow(-5)  # never shortens the limit
    assert h.allowance == 0


def test_the_application_takes_the_limit_from_the_config() -> None:
    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "127.0.0.1:1", "health": {"max_loop_stall_seconds": 5}}
    )
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    assert app.health.max_loop_stall_seconds == 5
    default = Application(
        MonitorConfig(bootstrap_servers="127.0.0.1:1"),
        registry=CollectorRegistry(),
        serve_metrics=False,
    )
    assert default.health.max_loop_stall_seconds == 60
    with pytest.raises(ValueError):
        MonitorConfig.model_validate(
            {"bootstrap_servers": "x:1", "health": {"max_loop_stall_seconds": 0}}
        )


@pytest.fixture
def served() -> Iterator[tuple[HealthState, FakeClock, int]]:
    clock = FakeClock()
    health = HealthState(max_loop_stall_seconds=60, clock=clock)
    server = MetricsServer(CollectorRegistry(), health, "127.0.0.1", 0)
    server.start()
    try:
        yield health, clock, server.port
    finally:
        server.stop()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_answers_503_with_the_reason_when_the_loop_is_stuck(
    served: tuple[HealthState, FakeClock, int],
) -> None:
    health, clock, port = served
    assert _get(port, "/healthz") == (200, "starting\n")
    health.cycle()
    assert _get(port, "/healthz") == (200, "ok\n")
    clock.now += 90  # the loop's last cycle is 90 s old: stuck
    status, body = _get(port, "/healthz")
    assert status == 503
    assert body == "the processing loop has not completed a cycle for 90 s (limit 60 s)\n"
    # readiness is a separate question, answered as before
    assert _get(port, "/readyz") == (503, "starting\n")
    health.cycle()
    assert _get(port, "/healthz") == (200, "ok\n")
