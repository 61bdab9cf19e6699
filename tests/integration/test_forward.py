"""``stream-monitor forward`` on the real broker: alert events posted to a real local HTTP server
(and, when Debian's prometheus-alertmanager is installed, to a real Alertmanager), exactly as
the documented mappings say, surviving malformed records, retrying, leaving a record uncommitted
when stopped while waiting to retry it, and re-posting firing alerts to Alertmanager across a
restart."""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.alerts.forward import Forwarder
from stream_monitor.alerts.http_sinks import AlertmanagerSink, Delivery, PagerDutySink
from stream_monitor.alerts.routing import to_alertmanager, to_pagerduty
from stream_monitor.events.schema import AlertEvent
from stream_monitor.kafka.clients import ensure_topics

from .kafka_utils import committed_offsets, end_offsets, monitor_config, produce_all, wait_until

pytestmark = pytest.mark.integration

FAST = Delivery(timeout=5.0, retries=4, backoff=0.05, max_backoff=0.2)
PARTITIONS = 2


def _alert(key: str, status: str, *, feature: str | None = "amount", t: float = 0) -> AlertEvent:
    model, kind = key.split("/")[:2]
    return AlertEvent(
        alert_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}|{status}")),
        dedup_key=key,
        status=status,  # type: ignore[arg-type]
        severity="critical" if kind == "performance" else "warning",
        priority="P0" if kind == "performance" else "P1",
        model_id=model,
        kind=kind,  # type: ignore[arg-type]
        feature=feature,
        signal="psi" if kind == "data_drift" else "accuracy",
        value=0.4 if status == "firing" else 0.05,
        threshold=0.12,
        summary=f"{key} is {status}",
        window="count 1000",
        window_events=1000,
        labels={"team": "risk", "runbook_url": "https://runbooks.example.com/drift"},
        top_features=[feature] if feature else [],
        started_at=time.time() - 600,
        observed_at=time.time() - 300 + t,
        published_at=time.time(),
    )


def _record(topic: str, a: AlertEvent) -> tuple[str, bytes, bytes]:
    return topic, a.dedup_key.encode(), orjson.dumps(a.model_dump())


MALFORMED = [b"not json at all", b'{"status": "firing"}', b"[1, 2]"]


class Recorder(http.server.ThreadingHTTPServer):
    """A real HTTP server that records every request and answers ``statuses`` in turn."""

    def __init__(self, ok: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ok = ok
        self.statuses: list[int] = []
        self.requests: list[tuple[str, dict[str, str], Any, int]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def accepted(self) -> list[tuple[str, Any]]:
        with self.lock:
            return [(p, b) for p, _h, b, s in self.requests if s < 300]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            status = self.server.statuses.pop(0) if self.server.statuses else self.server.ok
            self.server.requests.append((self.path, dict(self.headers), body, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "success"}' if status < 300 else b'{"error": "busy"}')

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def recorder(request) -> Iterator[Recorder]:
    srv = Recorder(ok=getattr(request, "param", 200))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@contextmanager
def forwarding(fw: Forwarder) -> Iterator[Forwarder]:
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fw.run()
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=target, name="forwarder", daemon=True)
    t.start()
    try:
        yield fw
    finally:
        fw.stop()
        t.join(30)
        assert not t.is_alive(), "the forwarder did not stop within 30 s"
    if failure:
        raise failure[0]


def _create(bootstrap: str, topic: str) -> None:
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), [NewTopic(topic, PARTITIONS, 1)])


def _all_committed(bootstrap: str, group: str, topic: str) -> bool:
    """Every record of every partition committed (an empty partition has no offset)."""
    done = committed_offsets(bootstrap, group, topic, PARTITIONS)
    ends = end_offsets(bootstrap, topic, PARTITIONS)
    return all(c == e or (e == 0 and c < 0) for c, e in zip(done, ends, strict=True))


def test_forward_to_alertmanager(kafka_bootstrap, topic_names, recorder):
    t = topic_names
    topic, group = t["alerts"], f"{t['group']}-forward"
    _create(kafka_bootstrap, topic)
    a_firing = _alert("fraud/data_drift/-", "firing")
    a_resolved = _alert("fraud/data_drift/-", "resolved", feature="country", t=60)
    b_firing = _alert("churn/performance/-", "firing", feature=None)
    produce_all(
        kafka_bootstrap,
        [
            _record(topic, a_firing),
            (topic, b"junk", MALFORMED[0]),
            _record(topic, a_resolved),
            (topic, b"fraud/data_drift/-", MALFORMED[1]),
            (topic, None, MALFORMED[2]),
            _record(topic, b_firing),
        ],
    )
    cfg = monitor_config(kafka_bootstrap, t)

    def sink(**kw: Any) -> AlertmanagerSink:
        return AlertmanagerSink(
            recorder.url, generator_url="http://monitor/metrics", delivery=FAST, **kw
        )

    fw = Forwarder(cfg, [sink()], group_id=group, from_beginning=True)
    with forwarding(fw):
        wait_until(lambda: len(recorder.accepted()) >= 3, 60, "three alerts posted")
        wait_until(lambda: _all_committed(kafka_bootstrap, group, topic), 30, "offsets committed")
    bodies = [b for _p, b in recorder.accepted()]
    assert {p for p, _b in recorder.accepted()} == {"/api/v2/alerts"}
    expected = [
        [to_alertmanager(x, generator_url="http://monitor/metrics")]
        for x in (a_firing, a_resolved, b_firing)
    ]
    assert sorted(map(orjson.dumps, bodies)) == sorted(map(orjson.dumps, expected))
    # One incident stays on one partition: its firing is posted before its resolve.
    assert bodies.index(expected[0]) < bodies.index(expected[1])
    assert bodies[bodies.index(expected[1])][0]["endsAt"]
    assert recorder.requests[0][1]["Content-Type"] == "application/json"
    assert fw.stats.posted == 3 and fw.stats.skipped == 3 and fw.stats.failed == 0

    # A restarted forwarder (same group) reads nothing new, yet re-posts the alert still
    # firing -- learnt from the partitions it is assigned -- so Alertmanager does not resolve it
    # after its resolve_timeout; the resolved one is not re-posted.
    n = len(recorder.requests)
    fw2 = Forwarder(cfg, [sink(resend_seconds=0.5)], group_id=group)
    with forwarding(fw2):
        wait_until(lambda: len(recorder.accepted()) >= n + 2, 60, "two re-posts")
        resent = [b for _p, b in recorder.accepted()[n:]]
        assert all(b == expected[2] for b in resent)
        b_resolved = _alert("churn/performance/-", "resolved", feature=None, t=60)
        produce_all(kafka_bootstrap, [_record(topic, b_resolved)])
        b_end = [to_alertmanager(b_resolved, generator_url="http://monitor/metrics")]
        wait_until(lambda: any(b == b_end for _p, b in recorder.accepted()), 60, "resolve")
        m = len(recorder.requests)
        time.sleep(1.5)  # resolved: nothing left to re-post
        assert len(recorder.requests) == m
    assert fw2.stats.posted == 1 and fw2.stats.resent >= 2


@pytest.mark.parametrize("recorder", [202], indirect=True)
def test_forward_to_pagerduty_retries_and_survives_malformed_records(
    kafka_bootstrap, topic_names, recorder
):
    t = topic_names
    topic, group = t["alerts"], f"{t['group']}-forward"
    _create(kafka_bootstrap, topic)
    firing = _alert("fraud/performance/-", "firing", feature=None)
    resolved = _alert("fraud/performance/-", "resolved", feature=None, t=60)
    produce_all(
        kafka_bootstrap,
        [
            (topic, b"fraud/performance/-", MALFORMED[0]),
            _record(topic, firing),
            _record(topic, resolved),
        ],
    )
    recorder.statuses[:] = [503, 429]  # PagerDuty busy: retried, then accepted
    dest = PagerDutySink("R0UTING", url=f"{recorder.url}/v2/enqueue", source="test", delivery=FAST)
    fw = Forwarder(monitor_config(kafka_bootstrap, t), [dest], group_id=group, from_beginning=True)
    with forwarding(fw):
        wait_until(lambda: len(recorder.accepted()) >= 2, 60, "trigger and resolve posted")
        wait_until(lambda: _all_committed(kafka_bootstrap, group, topic), 30, "offsets committed")
    assert recorder.accepted() == [
        ("/v2/enqueue", to_pagerduty(firing, "R0UTING", source="test")),
        (
            "/v2/enqueue",
            {
                "routing_key": "R0UTING",
                "event_action": "resolve",
                "dedup_key": "fraud/performance/-",
            },
        ),
    ]
    assert [s for *_x, s in recorder.requests] == [503, 429, 202, 202]
    assert fw.stats.posted == 2 and fw.stats.skipped == 1 and fw.stats.attempts == 4


def test_forward_gives_up_and_moves_on(kafka_bootstrap, topic_names, recorder):
    t = topic_names
    topic, group = t["alerts"], f"{t['group']}-forward"
    _create(kafka_bootstrap, topic)
    first = _alert("fraud/performance/-", "firing", feature=None)
    second = _alert("fraud/performance/-", "resolved", feature=None, t=60)
    produce_all(kafka_bootstrap, [_record(topic, first), _record(topic, second)])
    recorder.statuses[:] = [500] * (FAST.retries + 1)  # the first alert never gets through
    dest = PagerDutySink("K", url=recorder.url, delivery=FAST)
    fw = Forwarder(monitor_config(kafka_bootstrap, t), [dest], group_id=group, from_beginning=True)
    with forwarding(fw):
        wait_until(lambda: len(recorder.accepted()) >= 1, 60, "the second alert posted")
        wait_until(lambda: _all_committed(kafka_bootstrap, group, topic), 30, "offsets committed")
    assert fw.stats.failed == 1 and fw.stats.posted == 1
    assert recorder.accepted() == [("/", to_pagerduty(second, "K"))]


def test_forward_stop_during_backoff_leaves_the_record_uncommitted(
    kafka_bootstrap, topic_names, recorder
):
    t = topic_names
    topic, group = t["alerts"], f"{t['group']}-forward"
    _create(kafka_bootstrap, topic)
    a = _alert("fraud/performance/-", "firing", feature=None)
    produce_all(kafka_bootstrap, [_record(topic, a)])
    cfg = monitor_config(kafka_bootstrap, t)
    recorder.statuses[:] = [503]  # busy: the forwarder waits 30 s to retry ...
    slow = Delivery(timeout=5.0, retries=8, backoff=30.0)
    sink = PagerDutySink("K", url=recorder.url, delivery=slow)
    fw = Forwarder(cfg, [sink], group_id=group, from_beginning=True)
    with forwarding(fw):
        wait_until(lambda: len(recorder.requests) >= 1, 60, "the first attempt")
        stopping = time.monotonic()  # ... and is stopped (as by SIGTERM) while it waits
    assert time.monotonic() - stopping < 15, "the stop waited for the backoff"
    assert fw.stats.attempts == 1 and fw.stats.posted == fw.stats.failed == 0
    assert all(c < 0 for c in committed_offsets(kafka_bootstrap, group, topic, PARTITIONS))

    # Not committed: a restarted forwarder posts it.
    fw2 = Forwarder(
        cfg,
        [PagerDutySink("K", url=recorder.url, delivery=FAST)],
        group_id=group,
        from_beginning=True,
    )
    with forwarding(fw2):
        wait_until(lambda: len(recorder.accepted()) >= 1, 60, "posted after the restart")
        wait_until(lambda: _all_committed(kafka_bootstrap, group, topic), 30, "offsets committed")
    assert recorder.accepted() == [("/", to_pagerduty(a, "K"))]
    assert fw2.stats.posted == 1


@pytest.mark.parametrize("recorder", [202], indirect=True)
def test_cli_forward_and_alerts_format(kafka_bootstrap, topic_names, recorder, tmp_path):
    t = topic_names
    topic = t["alerts"]
    _create(kafka_bootstrap, topic)
    firing = _alert("fraud/data_drift/-", "firing")
    resolved = _alert("fraud/data_drift/-", "resolved", t=60)
    produce_all(
        kafka_bootstrap, [_record(topic, firing), (topic, b"x", b"{"), _record(topic, resolved)]
    )
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'bootstrap_servers = "{kafka_bootstrap}"\n[topics]\nalerts = "{topic}"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_monitor",
            "forward",
            "--config",
            str(cfg),
            "--to",
            "pagerduty",
            "--routing-key",
            "K",
            "--url",
            f"{recorder.url}/v2/enqueue",
            "--group-id",
            f"{t['group']}-cli",
            "--from-beginning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: len(recorder.accepted()) >= 2 or proc.poll() is not None, 60, "posts")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert [b for _p, b in recorder.accepted()] == [
        to_pagerduty(firing, "K"),
        to_pagerduty(resolved, "K"),
    ]
    assert "not an alert event" in out

    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_monitor",
            "alerts",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--topic",
            topic,
            "--from-beginning",
            "--format",
            "alertmanager",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert tail.stdout is not None
        deadline = time.monotonic() + 60
        while len(lines) < 2 and time.monotonic() < deadline:
            line = tail.stdout.readline()
            if not line:
                break
            lines.append(line)
        tail.send_signal(signal.SIGTERM)
        tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert [json.loads(x) for x in lines] == [to_alertmanager(firing), to_alertmanager(resolved)]


# --- a real Alertmanager (Debian's prometheus-alertmanager) ----------------------------------
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if ALERTMANAGER is None:
        pytest.skip("prometheus-alertmanager is not installed (deploy/local/setup.sh installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "alertmanager.yml"
    conf.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={conf}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "alertmanager.log").read_text())
        try:
            return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    try:
        wait_until(ready, 30, "Alertmanager ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _active_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        return json.loads(resp.read())


def test_forward_to_a_real_alertmanager(kafka_bootstrap, topic_names, alertmanager):
    t = topic_names
    topic, group = t["alerts"], f"{t['group']}-forward"
    _create(kafka_bootstrap, topic)
    a = _alert("fraud/data_drift/-", "firing")
    b_firing = _alert("churn/performance/-", "firing", feature=None)
    b_resolved = _alert("churn/performance/-", "resolved", feature=None, t=60)
    produce_all(
        kafka_bootstrap,
        [_record(topic, x) for x in (a, b_firing)]
        + [(topic, b"junk", MALFORMED[0]), _record(topic, b_resolved)],
    )
    dest = AlertmanagerSink(alertmanager, generator_url="http://monitor/metrics", delivery=FAST)
    fw = Forwarder(monitor_config(kafka_bootstrap, t), [dest], group_id=group, from_beginning=True)
    with forwarding(fw):
        wait_until(lambda: fw.stats.posted == 3, 60, "three alerts accepted by Alertmanager")
        # The junk record sits on a partition of its own (its key), which may be read after
        # the others: every offset committed means it was handled (skipped) too.
        wait_until(lambda: _all_committed(kafka_bootstrap, group, topic), 30, "offsets committed")
        active = _active_alerts(alertmanager)
    assert fw.stats.failed == 0 and fw.stats.skipped == 1
    # Only the alert still firing is active, with our labels and annotations as posted.
    expected = to_alertmanager(a, generator_url="http://monitor/metrics")
    assert [x["labels"] for x in active] == [expected["labels"]]
    got = active[0]
    assert got["annotations"] == expected["annotations"]
    assert got["generatorURL"] == expected["generatorURL"]
    assert got["status"]["state"] == "active"
    assert got["labels"]["alertname"] == "StreamMonitorDataDrift"
    assert got["labels"]["team"] == "risk" and "runbook_url" in got["annotations"]
    # Alertmanager echoes startsAt in its own precision: compare the instants.
    assert got["startsAt"].rstrip("Z")[:23] == expected["startsAt"].rstrip("Z")[:23]
