"""The HTTP alert sinks (Alertmanager, PagerDuty) against a real local HTTP server: what they post
is routing.py's mapping, retries, giving up, stopping while waiting to retry, Alertmanager's
re-posting of firing alerts, and building them from the command line's flags."""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from stream_monitor import cli
from stream_monitor.alerts.forward import Forwarder
from stream_monitor.alerts.http_sinks import (
    PAGERDUTY_URL,
    AlertmanagerSink,
    Delivery,
    DeliveryStopped,
    HttpAlertSink,
    PagerDutySink,
    sinks_from_args,
)
from stream_monitor.alerts.routing import to_alertmanager, to_pagerduty
from stream_monitor.alerts.sinks import AlertSink
from stream_monitor.config import MonitorConfig
from stream_monitor.errors import ConfigError
from stream_monitor.events.schema import AlertEvent, AlertSignal

FAST = Delivery(timeout=2.0, retries=3, backoff=0.01, max_backoff=0.02)
#: Waits 30 s before its first retry: only a stop ends that wait quickly.
SLOW = Delivery(timeout=2.0, retries=5, backoff=30.0)
GENERATOR = "http://monitor:9108/metrics"


def alert(key: str = "fraud/data_drift/-", status: str = "firing", **extra: Any) -> AlertEvent:
    model, kind = key.split("/")[:2]
    fields: dict[str, Any] = {
        "alert_id": f"{key}|{status}",
        "dedup_key": key,
        "status": status,
        "severity": "warning",
        "priority": "P1",
        "model_id": model,
        "kind": kind,
        "feature": "amount",
        "signal": "psi",
        "value": 0.41 if status == "firing" else 0.05,
        "threshold": 0.12,
        "summary": f"{key} is {status}",
        "window": "count 1000",
        "window_events": 1000,
        "labels": {"team": "risk", "runbook_url": "https://runbooks.example.com/drift"},
        "signals": [
            AlertSignal(feature="amount", signal="psi", value=0.41, threshold=0.12, breached=True)
        ],
        "top_features": ["amount"],
        "started_at": 1795305600.0,
        "observed_at": 1795305660.0 if status == "firing" else 1795305720.0,
        "published_at": 1795305721.0,
    }
    fields.update(extra)
    return AlertEvent.model_validate(fields)


# --- a real HTTP server -----------------------------------------------------------------------
class Recorder(http.server.ThreadingHTTPServer):
    """Records every POST (path, headers, JSON body) and answers ``statuses`` in turn, then
    200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.statuses: list[int] = []
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.lock = threading.Lock()
        self.arrived = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def bodies(self) -> list[Any]:
        with self.lock:
            return [b for _p, _h, b in self.requests]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers), body))
            status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")
        self.server.arrived.set()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    srv = Recorder()
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def am_sink(srv: Recorder, **kw: Any) -> AlertmanagerSink:
    return AlertmanagerSink(
        srv.url, generator_url=GENERATOR, delivery=kw.pop("delivery", FAST), **kw
    )


# --- what is posted -------------------------------------------------------------------------
def test_alertmanager_sink_posts_routings_mapping(server):
    firing, resolved = alert(), alert(status="resolved")
    sink: AlertSink = am_sink(server)
    sink.write([firing, resolved])
    sink.close()
    assert [p for p, _h, _b in server.requests] == ["/api/v2/alerts"] * 2
    assert server.bodies == [
        [to_alertmanager(firing, generator_url=GENERATOR)],
        [to_alertmanager(resolved, generator_url=GENERATOR)],
    ]
    assert server.bodies[1][0]["endsAt"] and "endsAt" not in server.bodies[0][0]
    assert server.requests[0][1]["Content-Type"] == "application/json"


def test_pagerduty_sink_posts_routings_mapping(server):
    firing, resolved = alert(), alert(status="resolved")
    sink = PagerDutySink(
        "R0UTING",
        url=f"{server.url}/v2/enqueue",
        source="monitor-eu",
        client_url="http://grafana/d/x",
        delivery=FAST,
    )
    sink.write([firing, resolved])
    assert [p for p, _h, _b in server.requests] == ["/v2/enqueue"] * 2
    assert server.bodies == [
        to_pagerduty(firing, "R0UTING", source="monitor-eu", client_url="http://grafana/d/x"),
        to_pagerduty(resolved, "R0UTING", source="monitor-eu", client_url="http://grafana/d/x"),
    ]
    assert [b["event_action"] for b in server.bodies] == ["trigger", "resolve"]
    assert sink.counts.posted == 2 and sink.counts.attempts == 2 and sink.counts.failed == 0
    assert "R0UTING" not in repr(sink)  # the key is a secret: not in logs
    assert PagerDutySink("K").endpoint == PAGERDUTY_URL


# --- delivery outcomes ----------------------------------------------------------------------
@pytest.mark.parametrize("make", [am_sink, lambda s: PagerDutySink("K", url=s.url, delivery=FAST)])
def test_retry_on_503_then_success(server, make):
    sink: HttpAlertSink = make(server)
    server.statuses[:] = [503]
    assert sink.deliver(alert()) == "ok"
    assert len(server.bodies) == 2 and server.bodies[0] == server.bodies[1] == sink.body(alert())
    assert (sink.counts.posted, sink.counts.failed, sink.counts.attempts) == (1, 0, 2)


def test_give_up_on_400_and_move_on(server):
    sink = PagerDutySink("K", url=server.url, delivery=FAST)
    server.statuses[:] = [400]
    assert sink.deliver(alert()) == "failed"
    assert len(server.bodies) == 1  # not retried
    server.statuses[:] = [400]
    first, second = alert("a/data_drift/-"), alert("b/data_drift/-")
    sink.write([first, second])  # a given-up alert is not an error: the batch goes on
    assert server.bodies[1:] == [to_pagerduty(first, "K"), to_pagerduty(second, "K")]
    assert (sink.counts.posted, sink.counts.failed, sink.counts.attempts) == (1, 2, 3)


def test_give_up_after_the_last_retry(server):
    sink = am_sink(server)
    server.statuses[:] = [500] * 10
    assert sink.deliver(alert()) == "failed"
    assert len(server.bodies) == FAST.retries + 1 == sink.counts.attempts


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def test_stop_during_backoff(server):
    sink = am_sink(server, delivery=SLOW)
    server.statuses[:] = [503] * 10
    t, result = _in_thread(lambda: sink.deliver(alert()))
    assert server.arrived.wait(10)
    started = time.monotonic()
    sink.stop()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - started < 5  # not the 30 s backoff
    assert result == ["stopped"]
    assert (sink.counts.posted, sink.counts.failed, sink.counts.attempts) == (0, 0, 1)
    assert sink.firing == []  # a stopped alert is not settled: not remembered either


def test_write_raises_when_stopped_and_posts_nothing_after(server):
    sink = PagerDutySink("K", url=server.url, delivery=SLOW)
    server.statuses[:] = [503] * 10
    t, result = _in_thread(lambda: sink.write([alert("a/data_drift/-"), alert("b/data_drift/-")]))
    assert server.arrived.wait(10)
    sink.stop()
    t.join(10)
    assert not t.is_alive()
    assert len(result) == 1 and isinstance(result[0], DeliveryStopped)
    assert "a/data_drift/-|firing" in str(result[0])
    assert [b["dedup_key"] for b in server.bodies] == ["a/data_drift/-"]  # b never tried


def test_the_forwarders_stop_stops_its_sinks(server):
    sinks = [am_sink(server, delivery=SLOW), PagerDutySink("K", url=server.url, delivery=SLOW)]
    fw = Forwarder(MonitorConfig(bootstrap_servers="127.0.0.1:9"), sinks)
    server.statuses[:] = [503] * 10
    t, result = _in_thread(lambda: sinks[1].deliver(alert()))
    assert server.arrived.wait(10)
    fw.stop()
    t.join(10)
    assert not t.is_alive() and result == ["stopped"]
    server.statuses[:] = [503]
    assert sinks[0].deliver(alert()) == "stopped"  # for good: no wait after the first attempt
    assert fw.stats.attempts == 2 and fw.stats.posted == fw.stats.failed == 0
    with pytest.raises(ValueError):
        Forwarder(MonitorConfig(bootstrap_servers="127.0.0.1:9"), [])


# --- Alertmanager: firing alerts are re-posted ----------------------------------------------
def test_alertmanager_resends_what_is_still_firing(server):
    sink = am_sink(server, resend_seconds=60.0)
    a, b = alert("a/data_drift/-"), alert("b/data_drift/-")
    sink.write([a, b])
    assert sink.tick() == 0 and len(server.bodies) == 2  # not due yet
    t = time.monotonic()
    assert sink.tick(t + 61) == 2
    items = [to_alertmanager(x, generator_url=GENERATOR) for x in (a, b)]
    assert server.bodies[-1] == items  # one POST of every firing alert
    assert sink.tick(t + 62) == 0  # the next one is due 60 s after this one
    sink.write([alert("a/data_drift/-", "resolved")])
    assert sink.firing == ["b/data_drift/-"]
    assert sink.tick(t + 122) == 1 and server.bodies[-1] == items[1:]
    sink.write([alert("b/data_drift/-", "resolved")])
    n = len(server.bodies)
    assert sink.tick(t + 183) == 0 and len(server.bodies) == n  # nothing left to re-post
    assert sink.counts.resent == 3 and sink.counts.posted == 4


def test_alertmanager_resends_a_given_up_firing_alert(server):
    sink = am_sink(server)
    server.statuses[:] = [400]
    a = alert()
    assert sink.deliver(a) == "failed"
    assert sink.firing == [a.dedup_key]  # settled (given up): another chance at the next tick
    assert sink.tick(time.monotonic() + sink.resend_seconds) == 1
    assert server.bodies[-1] == [to_alertmanager(a, generator_url=GENERATOR)]


def test_alertmanager_ends_a_firing_alert_whose_labels_changed(server):
    sink = am_sink(server)
    firing = alert()
    resolved = alert(status="resolved", labels={"team": "ml"})  # the rule's labels changed
    sink.write([firing, resolved])
    was = to_alertmanager(firing, generator_url=GENERATOR)
    now = to_alertmanager(resolved, generator_url=GENERATOR)
    assert was["labels"] != now["labels"]
    assert server.bodies == [[was], [now], [{**was, "endsAt": now["endsAt"]}]]
    assert sink.firing == []


def test_alertmanager_restore_and_forget(server):
    sink = am_sink(server)
    a, b, c = (alert(f"{m}/data_drift/-") for m in "abc")
    restored = [a, b, c, alert("b/data_drift/-", "resolved")]
    assert sink.restore(restored) == 2
    assert server.bodies == []  # learnt, not posted
    assert sink.tick() == 2  # re-posted at once, not after resend_seconds
    assert server.bodies == [[to_alertmanager(x, generator_url=GENERATOR) for x in (a, c)]]
    sink.forget(["a/data_drift/-", "z/data_drift/-"])
    assert sink.firing == ["c/data_drift/-"]
    assert sink.restore([]) == 0 and sink.tick() == 0  # the next re-post is not due
    sink.close()
    assert sink.firing == []


def test_alertmanager_updated_is_reposted_as_firing_with_new_annotations(server):
    sink = am_sink(server)
    firing = alert()
    updated = alert(
        status="updated",
        feature="country",
        value=0.3,
        top_features=["amount", "country"],
        summary="Updated: now also country psi",
    )
    sink.write([firing, updated])
    was = to_alertmanager(firing, generator_url=GENERATOR)
    now = to_alertmanager(updated, generator_url=GENERATOR)
    assert "endsAt" not in now and now["labels"] == was["labels"]  # the same alert, still firing
    assert now["annotations"]["top_features"] == "amount, country"
    assert server.bodies == [[was], [now]]
    assert sink.firing == [firing.dedup_key]
    assert sink.tick(time.monotonic() + sink.resend_seconds) == 1
    assert server.bodies[-1] == [now]  # the re-post tells the current picture
    # a restart learns the latest event of the incident
    other = am_sink(server)
    assert other.restore([firing, updated]) == 1
    assert other.tick() == 1 and server.bodies[-1] == [now]
    sink.write([alert(status="resolved")])
    assert sink.firing == [] and "endsAt" in server.bodies[-1][0]


def test_alertmanager_update_with_other_labels_ends_the_old_alert(server):
    sink = am_sink(server)
    firing = alert()
    updated = alert(status="updated", severity="critical", priority="P0")
    sink.write([firing, updated])
    was = to_alertmanager(firing, generator_url=GENERATOR)
    now = to_alertmanager(updated, generator_url=GENERATOR)
    assert server.bodies[:2] == [[was], [now]]
    [[ended]] = server.bodies[2:]
    assert ended["labels"] == was["labels"] and ended["endsAt"] >= was["startsAt"]
    assert sink.firing == [firing.dedup_key]


def test_pagerduty_updated_is_a_trigger_of_the_same_dedup_key(server):
    sink = PagerDutySink("K", url=server.url, delivery=FAST)
    sink.write([alert(), alert(status="updated", incident_id="i-1"), alert(status="resolved")])
    actions = [(b["event_action"], b["dedup_key"]) for b in server.bodies]
    assert actions == [("trigger", "fraud/data_drift/-")] * 2 + [("resolve", "fraud/data_drift/-")]
    details = server.bodies[1]["payload"]["custom_details"]
    assert (details["status"], details["incident_id"]) == ("updated", "i-1")


def test_pagerduty_keeps_no_firing_state(server):
    sink = PagerDutySink("K", url=server.url, delivery=FAST)
    sink.write([alert()])
    assert not sink.remembers_firing and AlertmanagerSink.remembers_firing
    assert sink.restore([alert()]) == 0 and sink.tick(float("inf")) == 0
    sink.forget(["fraud/data_drift/-"])
    assert len(server.bodies) == 1


# --- from the command line ------------------------------------------------------------------
def test_sinks_from_the_forward_commands_flags(monkeypatch):
    monkeypatch.delenv("STREAM_MONITOR_PAGERDUTY_ROUTING_KEY", raising=False)
    parse = cli.build_parser().parse_args
    flags = "--to alertmanager --url http://am:9093 --resend-seconds 15 --timeout 3 --retries 2"
    args = parse(["forward", *flags.split(), "--generator-url", GENERATOR])
    [am] = sinks_from_args(args)
    assert isinstance(am, AlertmanagerSink)
    assert am.endpoint == "http://am:9093/api/v2/alerts" and am.resend_seconds == 15.0
    assert am.delivery == Delivery(timeout=3.0, retries=2)
    assert am.body(alert()) == [to_alertmanager(alert(), generator_url=GENERATOR)]

    args = parse(["forward", "--to", "pagerduty", "--routing-key", "K", "--source", "eu"])
    [pd] = sinks_from_args(args)
    assert isinstance(pd, PagerDutySink) and pd.endpoint == PAGERDUTY_URL
    assert pd.body(alert()) == to_pagerduty(alert(), "K", source="eu")
    assert pd.delivery == Delivery()

    with pytest.raises(ConfigError, match="--routing-key"):
        sinks_from_args(parse(["forward", "--to", "pagerduty"]))
    with pytest.raises(ConfigError, match="--url"):
        sinks_from_args(parse(["forward", "--to", "alertmanager"]))


def test_sinks_from_another_commands_flags():
    # Flags a command does not define count as not given; several destinations at once.
    ns = argparse.Namespace(to=["pagerduty", "alertmanager"], url="http://x", routing_key="K")
    pd, am = sinks_from_args(ns)
    assert (type(pd), type(am)) == (PagerDutySink, AlertmanagerSink)
    assert pd.endpoint == "http://x" and am.endpoint == "http://x/api/v2/alerts"
    assert am.resend_seconds == 60.0 and pd.delivery == am.delivery == Delivery()
    with pytest.raises(ConfigError, match="slack"):
        sinks_from_args(argparse.Namespace(to="slack"))


# --- the same sinks in a backtest ---------------------------------------------------------------
def test_replay_posts_its_alerts_to_the_sink_the_flags_name(server, tmp_path):
    """`stream-monitor replay --to alertmanager --url ...` posts every alert of the backtest,
    in order, as `forward` would post it from the topic (alerts.jsonl is the same list)."""
    from stream_monitor.simulate import TrafficGenerator

    preds, labels = tmp_path / "p.jsonl", tmp_path / "l.jsonl"
    gen = TrafficGenerator(seed=21, drift_at=6_000, rate=100.0, start_time=1_700_000_000.0)
    with open(preds, "wb") as fp, open(labels, "wb") as fl:
        for r in gen.events(12_000):
            (fp if r.topic == "predictions" else fl).write(r.value + b"\n")
    cfg = tmp_path / "monitor.toml"
    cfg.write_text('bootstrap_servers = "unused:9092"\n[drift.window]\nsize = 500\n')
    out = tmp_path / "out"
    rc = cli.main(
        [
            "replay", "--config", str(cfg), "--predictions", str(preds), "--labels",
            str(labels), "--out", str(out), "--to", "alertmanager", "--url", server.url,
            "--generator-url", GENERATOR, "--retries", "0",
        ]
    )  # fmt: skip
    assert rc == 0
    timeline = [
        AlertEvent.model_validate(orjson.loads(line))
        for line in (out / "alerts.jsonl").read_bytes().splitlines()
    ]
    assert timeline, "the drift at event 6,000 raises alerts"
    assert server.bodies == [[to_alertmanager(a, generator_url=GENERATOR)] for a in timeline]
