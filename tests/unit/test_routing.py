"""Mappings of alert events to PagerDuty Events API v2 and Alertmanager, and the HTTP sinks'
HTTP delivery (retries, backoff, giving up) against a real local HTTP server."""

from __future__ import annotations

import http.server
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from stream_monitor import cli
from stream_monitor.alerts.http_sinks import (
    AlertmanagerSink,
    Delivery,
    PagerDutySink,
    post_json,
)
from stream_monitor.alerts.routing import (
    alertname,
    iso8601,
    label_name,
    pagerduty_dedup_key,
    to_alertmanager,
    to_pagerduty,
)
from stream_monitor.alerts.tracker import dedup_key
from stream_monitor.events.schema import PRIORITY, AlertEvent, AlertSignal

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def alert(**extra: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "alert_id": "2b9f6a4e-8c1d-5f3a-9e7b-1c2d3e4f5a6b",
        "dedup_key": "fraud/data_drift/-@region=eu",
        "status": "firing",
        "severity": "warning",
        "priority": "P1",
        "model_id": "fraud",
        "model_version": "2026.11.1",
        "kind": "data_drift",
        "feature": "amount",
        "segment": "region=eu",
        "signal": "psi",
        "value": 0.41,
        "threshold": 0.12,
        "baseline": None,
        "summary": "The inputs of model 'fraud' drifted in segment region=eu.",
        "window": "count 1000",
        "window_events": 1000,
        "rule": "inputs",
        "labels": {
            "team": "risk",
            "on-call.rotation": "ml",
            "severity": "page",  # clashes with ours: ours wins
            "runbook_url": "https://runbooks.example.com/drift",
            "dashboard_url": "https://grafana.example.com/d/drift",
        },
        "signals": [
            AlertSignal(feature="amount", signal="psi", value=0.41, threshold=0.12, breached=True),
            AlertSignal(feature="country", signal="psi", value=0.2, threshold=0.12, breached=True),
        ],
        "signals_total": 3,
        "top_features": ["amount", "country"],
        "model_drift_score": 0.6,
        "suggested_action": "investigate_data_pipeline",
        "started_at": 1795305600.0,
        "observed_at": 1795305660.0,
        "published_at": 1795305661.0,
    }
    fields.update(extra)
    return AlertEvent(**fields)


# --- PagerDuty ------------------------------------------------------------------------------
def test_pagerduty_trigger_carries_what_a_responder_needs():
    body = to_pagerduty(alert(), "R0UTING", client_url="https://grafana.example.com")
    assert body == {
        "routing_key": "R0UTING",
        "event_action": "trigger",
        "dedup_key": "fraud/data_drift/-@region=eu",
        "payload": {
            "summary": "The inputs of model 'fraud' drifted in segment region=eu.",
            "source": "stream-monitor",
            "severity": "warning",
            "timestamp": "2026-11-22T00:01:00.000Z",
            "component": "fraud",
            "group": "data_drift",
            "class": "psi",
            "custom_details": {
                "alert_id": "2b9f6a4e-8c1d-5f3a-9e7b-1c2d3e4f5a6b",
                "status": "firing",
                "dedup_key": "fraud/data_drift/-@region=eu",
                "priority": "P1",
                "model_id": "fraud",
                "model_version": "2026.11.1",
                "kind": "data_drift",
                "segment": "region=eu",
                "feature": "amount",
                "signal": "psi",
                "value": 0.41,
                "threshold": 0.12,
                "window": "count 1000",
                "window_events": 1000,
                "top_features": ["amount", "country"],
                "model_drift_score": 0.6,
                "signals": [
                    {
                        "feature": "amount",
                        "signal": "psi",
                        "kind": None,
                        "value": 0.41,
                        "threshold": 0.12,
                        "baseline": None,
                        "breached": True,
                    },
                    {
                        "feature": "country",
                        "signal": "psi",
                        "kind": None,
                        "value": 0.2,
                        "threshold": 0.12,
                        "baseline": None,
                        "breached": True,
                    },
                ],
                "signals_total": 3,
                "suggested_action": "investigate_data_pipeline",
                "rule": "inputs",
                "labels": alert().labels,
                "retrain": False,
                "started_at": "2026-11-22T00:00:00.000Z",
                "description": (
                    "psi of feature 'amount' is 0.41 against threshold 0.12 over window "
                    "count 1000 (1000 events). Top drifting features: amount, country. "
                    "Model drift score: 0.6. Segment: region=eu. "
                    "Suggested action: investigate data pipeline."
                ),
            },
        },
        "client": "stream-monitor",
        "client_url": "https://grafana.example.com",
        "links": [
            {"href": "https://runbooks.example.com/drift", "text": "Runbook"},
            {"href": "https://grafana.example.com/d/drift", "text": "Dashboard"},
        ],
    }
    orjson.dumps(body)  # JSON-serialisable as is


def test_pagerduty_resolve_carries_only_what_the_api_needs():
    body = to_pagerduty(alert(status="resolved"), "R0UTING")
    assert body == {
        "routing_key": "R0UTING",
        "event_action": "resolve",
        "dedup_key": "fraud/data_drift/-@region=eu",
    }


@pytest.mark.parametrize("severity", ["critical", "warning", "info"])
def test_pagerduty_severity(severity):
    body = to_pagerduty(alert(severity=severity, priority=PRIORITY[severity]), "K")
    assert body["payload"]["severity"] == severity
    assert severity in {"critical", "error", "warning", "info"}


def test_pagerduty_limits():
    long_model = "m" * 400
    key = dedup_key(long_model, "data_drift", "amount")
    a = alert(model_id=long_model, dedup_key=key, summary="s" * 5000, labels={})
    body = to_pagerduty(a, "K")
    assert len(body["payload"]["summary"]) == 1024
    assert body["payload"]["summary"].endswith("…")
    assert len(body["dedup_key"]) == 255
    # The resolve finds its trigger: the same truncated key.
    assert (
        to_pagerduty(a.model_copy(update={"status": "resolved"}), "K")["dedup_key"]
        == (body["dedup_key"])
    )
    # Keys that share the first 238 characters stay distinct, and the full key is kept.
    other = dedup_key(long_model, "data_drift", "country")
    assert pagerduty_dedup_key(other) != body["dedup_key"]
    assert body["payload"]["custom_details"]["dedup_key"] == key
    assert "links" not in body and "client_url" not in body
    assert pagerduty_dedup_key("x" * 255) == "x" * 255


# --- Alertmanager ---------------------------------------------------------------------------
def test_alertmanager_firing():
    am = to_alertmanager(alert(), generator_url="http://monitor:9108/metrics")
    assert am["labels"] == {
        "alertname": "StreamMonitorDataDrift",
        "model": "fraud",
        "kind": "data_drift",
        "severity": "warning",
        "priority": "P1",
        "rule": "inputs",
        "dedup_key": "fraud/data_drift/-@region=eu",
        "segment": "region=eu",
        "team": "risk",
        "on_call_rotation": "ml",
    }
    assert am["annotations"] == {
        "summary": "The inputs of model 'fraud' drifted in segment region=eu.",
        "description": to_pagerduty(alert(), "K")["payload"]["custom_details"]["description"],
        "suggested_action": "investigate_data_pipeline",
        "signal": "psi",
        "value": "0.41",
        "threshold": "0.12",
        "feature": "amount",
        "window": "count 1000",
        "window_events": "1000",
        "top_features": "amount, country",
        "model_drift_score": "0.6",
        "model_version": "2026.11.1",
        "alert_id": "2b9f6a4e-8c1d-5f3a-9e7b-1c2d3e4f5a6b",
        "runbook_url": "https://runbooks.example.com/drift",
        "dashboard_url": "https://grafana.example.com/d/drift",
    }
    assert am["startsAt"] == "2026-11-22T00:00:00.000Z"
    assert "endsAt" not in am
    assert am["generatorURL"] == "http://monitor:9108/metrics"
    for name, value in {**am["labels"], **am["annotations"]}.items():
        assert LABEL_NAME.fullmatch(name) and isinstance(value, str)


def test_alertmanager_labels_are_stable_through_a_grouped_incident():
    # With alerts.group_features the dedup key has no feature and the lead signal may change:
    # Alertmanager must see one alert (one label set) from firing to resolved.
    firing = to_alertmanager(alert())
    resolved = to_alertmanager(
        alert(status="resolved", feature="country", signal="psi", value=0.01, top_features=[])
    )
    assert firing["labels"] == resolved["labels"]
    assert "feature" not in firing["labels"]
    assert resolved["endsAt"] == iso8601(1795305660.0)


def test_alertmanager_feature_label_when_the_incident_is_one_features():
    a = alert(dedup_key=dedup_key("fraud", "data_drift", "amount", "region=eu"))
    assert to_alertmanager(a)["labels"]["feature"] == "amount"
    a = alert(dedup_key=dedup_key("fraud", "data_drift", "amount"), segment=None)
    am = to_alertmanager(a)
    assert am["labels"]["feature"] == "amount" and "segment" not in am["labels"]


def test_alertmanager_ends_at_is_clamped():
    # Event time ahead of the wall clock: end at publication, not in the future.
    a = alert(status="resolved", observed_at=1795309999.0, published_at=1795305700.0)
    assert to_alertmanager(a)["endsAt"] == iso8601(1795305700.0)
    # Never before startsAt (Alertmanager refuses an alert that ends before it starts).
    a = alert(status="resolved", started_at=1795305600.0, published_at=1795305000.0)
    assert to_alertmanager(a)["endsAt"] == to_alertmanager(a)["startsAt"]


def test_label_names_are_sanitised():
    for raw, clean in [
        ("team", "team"),
        ("on-call.team", "on_call_team"),
        ("équipe", "_quipe"),
        ("9lives", "_9lives"),
        ("", "_"),
        ("a b", "a_b"),
    ]:
        assert label_name(raw) == clean
        assert LABEL_NAME.fullmatch(clean)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("data_drift", "StreamMonitorDataDrift"),
        ("prediction_drift", "StreamMonitorPredictionDrift"),
        ("concept_drift", "StreamMonitorConceptDrift"),
        ("performance", "StreamMonitorPerformance"),
        ("data_quality", "StreamMonitorDataQuality"),
    ],
)
def test_alertname(kind, name):
    assert alertname(kind) == name


# --- HTTP delivery --------------------------------------------------------------------------
class _Server(http.server.ThreadingHTTPServer):
    statuses: list[int]
    bodies: list[Any]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(orjson.loads(body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.statuses, srv.bodies = [], []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


FAST = Delivery(timeout=2.0, retries=3, backoff=0.01, max_backoff=0.02)


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/api/v2/alerts"


def test_post_retries_5xx_and_429_then_succeeds(server):
    server.statuses[:] = [503, 429]
    assert post_json(_url(server), [{"a": 1}], FAST) == "ok"
    assert server.bodies == [[{"a": 1}]] * 3


def test_post_gives_up_on_4xx_at_once(server):
    server.statuses[:] = [400]
    assert post_json(_url(server), {"a": 1}, FAST) == "failed"
    assert len(server.bodies) == 1


def test_post_gives_up_after_its_retries(server):
    server.statuses[:] = [500] * 10
    assert post_json(_url(server), {"a": 1}, FAST) == "failed"
    assert len(server.bodies) == FAST.retries + 1


def test_post_retries_connection_errors_and_stops_when_asked():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    attempts: list[int] = []
    url = f"http://127.0.0.1:{port}/"
    assert post_json(url, {}, FAST, on_attempt=lambda: attempts.append(1)) == "failed"
    assert len(attempts) == FAST.retries + 1
    stop = threading.Event()
    stop.set()
    slow = Delivery(timeout=1.0, retries=5, backoff=30.0)
    assert post_json(url, {}, slow, stop=stop) == "stopped"


def test_sink_endpoints_and_bodies():
    am = AlertmanagerSink("http://am:9093/")
    assert am.endpoint == "http://am:9093/api/v2/alerts"
    assert AlertmanagerSink("http://am/api/v2/alerts").endpoint.count("api") == 1
    assert am.body(alert()) == [to_alertmanager(alert())]
    pd = PagerDutySink("K")
    assert pd.endpoint == "https://events.pagerduty.com/v2/enqueue"
    assert pd.body(alert()) == to_pagerduty(alert(), "K")
    with pytest.raises(ValueError):
        PagerDutySink("")
    with pytest.raises(ValueError):
        AlertmanagerSink("")


def test_cli_needs_a_routing_key_for_pagerduty(monkeypatch, capsys):
    monkeypatch.delenv("STREAM_MONITOR_PAGERDUTY_ROUTING_KEY", raising=False)
    assert cli.main(["alerts", "--format", "pagerduty"]) == 2
    assert cli.main(["forward", "--to", "pagerduty"]) == 2
    assert cli.main(["forward", "--to", "alertmanager"]) == 2
    assert "--routing-key" in capsys.readouterr().err


def test_cli_formats_an_alert_record():
    value = orjson.dumps(alert().model_dump())
    ns = cli.build_parser().parse_args(["alerts", "--format", "alertmanager"])
    assert orjson.loads(cli._format_alert(ns, value)) == to_alertmanager(alert())
    ns = cli.build_parser().parse_args(["alerts", "--format", "pagerduty", "--routing-key", "K"])
    assert orjson.loads(cli._format_alert(ns, value)) == to_pagerduty(alert(), "K")
    ns = cli.build_parser().parse_args(["alerts"])
    line = cli._format_alert(ns, value)
    assert "FIRING   [warning] fraud/data_drift/-@region=eu: The inputs" in line
