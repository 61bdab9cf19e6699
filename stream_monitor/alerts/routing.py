"""Alert events for pager tooling: PagerDuty Events API v2 and Alertmanager.

Pure functions from an :class:`~stream_monitor.events.schema.AlertEvent` to the body another
tool accepts as is (documented in docs/alerts.md). The JSON Schemas of the events are
generated in :mod:`stream_monitor.events.json_schemas`.

Examples
--------
>>> a = AlertEvent(
...     alert_id="0d5e7a4c-5a1f-5b9e-9a57-3a8f1b2c4d5e", dedup_key="fraud/data_drift/-",
...     status="firing", severity="warning", priority="P1", model_id="fraud",
...     kind="data_drift", feature="amount", signal="psi", value=0.41, threshold=0.12,
...     summary="The inputs of model 'fraud' drifted.", window="count 1000",
...     window_events=1000, top_features=["amount", "country"],
...     suggested_action="investigate_data_pipeline",
...     labels={"team": "risk", "runbook_url": "https://runbooks.example.com/drift"},
...     started_at=1795305600.0, observed_at=1795305660.0)
>>> pd = to_pagerduty(a, "R0UTINGKEY")
>>> pd["event_action"], pd["dedup_key"], pd["payload"]["severity"], pd["links"][0]["text"]
('trigger', 'fraud/data_drift/-', 'warning', 'Runbook')
>>> am = to_alertmanager(a)
>>> am["labels"]["alertname"], am["labels"]["team"], am["startsAt"], "endsAt" in am
('StreamMonitorDataDrift', 'risk', '2026-11-22T00:00:00.000Z', False)
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from typing import Any

from stream_monitor.alerts.tracker import dedup_key as incident_key
from stream_monitor.events.schema import AlertEvent

__all__ = [
    "LINK_LABELS",
    "PAGERDUTY_DEDUP_KEY_MAX",
    "PAGERDUTY_SEVERITY",
    "PAGERDUTY_SUMMARY_MAX",
    "alertname",
    "iso8601",
    "label_name",
    "pagerduty_dedup_key",
    "to_alertmanager",
    "to_pagerduty",
]

#: Limits of the PagerDuty Events API v2 (developer.pagerduty.com, "Send an Alert Event").
PAGERDUTY_DEDUP_KEY_MAX = 255
PAGERDUTY_SUMMARY_MAX = 1024
#: PagerDuty accepts critical, error, warning and info; ours map one to one (error is unused).
PAGERDUTY_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}
#: Rule labels that are links: PagerDuty ``links`` and Alertmanager annotations, not labels.
LINK_LABELS = {"runbook_url": "Runbook", "dashboard_url": "Dashboard"}
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL_BAD_CHAR = re.compile(r"[^a-zA-Z0-9_]")
#: Alertmanager labels the mapping sets itself; a rule label of the same name is dropped.
_RESERVED_LABELS = frozenset(
    {
        "alertname",
        "model",
        "kind",
        "severity",
        "priority",
        "rule",
        "dedup_key",
        "segment",
        "feature",
    }
)


# --- shared ---------------------------------------------------------------------------------
def iso8601(ts: float) -> str:
    """Unix seconds as RFC 3339 / ISO 8601 UTC with milliseconds.

    >>> iso8601(1795305600.25)
    '2026-11-22T00:00:00.250Z'
    """
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def _what_moved(a: AlertEvent) -> str:
    """One sentence: what moved, by how much, against which threshold, over which window."""
    subject = f"{a.signal} of feature {a.feature!r}" if a.feature else a.signal
    text = f"{subject} is {_num(a.value)} against threshold {_num(a.threshold)}"
    if a.baseline is not None:
        text += f" (baseline {_num(a.baseline)})"
    if a.window:
        text += f" over window {a.window}"
    if a.window_events is not None:
        text += f" ({a.window_events} events)"
    text += "."
    if a.top_features:
        text += " Top drifting features: " + ", ".join(a.top_features) + "."
    if a.model_drift_score is not None:
        text += f" Model drift score: {_num(a.model_drift_score)}."
    if a.segment:
        text += f" Segment: {a.segment}."
    text += f" Suggested action: {a.suggested_action.replace('_', ' ')}."
    return text


# --- PagerDuty Events API v2 ----------------------------------------------------------------
def pagerduty_dedup_key(key: str) -> str:
    """``key`` if it fits PagerDuty's 255 characters; otherwise its first 238 characters, ``#``
    and 16 hex digits of its SHA-256: stable, so the resolve finds its trigger, and distinct for
    long keys that share a prefix.

    >>> pagerduty_dedup_key("m/data_drift/age")
    'm/data_drift/age'
    >>> k = pagerduty_dedup_key("m/data_drift/" + "x" * 300)
    >>> len(k), k[-17:] == "#" + k[-16:], k == pagerduty_dedup_key("m/data_drift/" + "x" * 300)
    (255, True, True)
    """
    if len(key) <= PAGERDUTY_DEDUP_KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"{key[: PAGERDUTY_DEDUP_KEY_MAX - 17]}#{digest}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_pagerduty(
    alert: AlertEvent,
    routing_key: str,
    *,
    source: str = "stream-monitor",
    client_url: str | None = None,
) -> dict[str, Any]:
    """The PagerDuty Events API v2 body (POST https://events.pagerduty.com/v2/enqueue).

    A firing alert is a ``trigger`` with everything a responder needs in ``custom_details``
    (fields that are null in the event are left out); an ``updated`` alert is a ``trigger``
    too: with the same ``dedup_key`` it goes to the open incident (PagerDuty adds it to the
    incident's alert and its log) instead of opening another; a resolved alert is a
    ``resolve`` with only ``routing_key``, ``event_action`` and ``dedup_key``, as the API asks.

    >>> r = AlertEvent(alert_id="a2", dedup_key="m/performance/-", status="resolved",
    ...                severity="critical", priority="P0", model_id="m", kind="performance",
    ...                feature=None, signal="accuracy", value=0.91, threshold=0.85,
    ...                summary="Resolved.", started_at=0.0, observed_at=60.0)
    >>> to_pagerduty(r, "KEY")
    {'routing_key': 'KEY', 'event_action': 'resolve', 'dedup_key': 'm/performance/-'}
    """
    key = pagerduty_dedup_key(alert.dedup_key)
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    details: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "incident_id": alert.incident_id,
        "status": alert.status,
        "dedup_key": alert.dedup_key,
        "priority": alert.priority,
        "model_id": alert.model_id,
        "model_version": alert.model_version,
        "kind": alert.kind,
        "segment": alert.segment,
        "feature": alert.feature,
        "signal": alert.signal,
        "value": alert.value,
        "threshold": alert.threshold,
        "baseline": alert.baseline,
        "window": alert.window,
        "window_events": alert.window_events,
        "top_features": alert.top_features,
        "model_drift_score": alert.model_drift_score,
        "signals": [s.model_dump() for s in alert.signals],
        "signals_total": alert.signals_total,
        "suggested_action": alert.suggested_action,
        "rule": alert.rule,
        "labels": alert.labels,
        "retrain": alert.retrain,
        "started_at": iso8601(alert.started_at),
        "description": _what_moved(alert),
    }
    payload: dict[str, Any] = {
        "summary": _truncate(alert.summary or _what_moved(alert), PAGERDUTY_SUMMARY_MAX),
        "source": source,
        "severity": PAGERDUTY_SEVERITY[alert.severity],
        "timestamp": iso8601(alert.observed_at),
        "component": alert.model_id,
        "group": alert.kind,
        "class": alert.signal,
        "custom_details": {k: v for k, v in details.items() if v is not None},
    }
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": payload,
        "client": "stream-monitor",
    }
    if client_url:
        body["client_url"] = client_url
    links = [
        {"href": alert.labels[name], "text": text}
        for name, text in LINK_LABELS.items()
        if alert.labels.get(name)
    ]
    if links:
        body["links"] = links
    return body


# --- Alertmanager ---------------------------------------------------------------------------
def label_name(name: str) -> str:
    """A valid Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``): every other character
    becomes ``_``, and a leading digit (or an empty name) gets a ``_`` prefix.

    >>> label_name("team"), label_name("on-call.team"), label_name("1st"), label_name("")
    ('team', 'on_call_team', '_1st', '_')
    """
    if _LABEL_NAME.fullmatch(name):
        return name
    clean = _LABEL_BAD_CHAR.sub("_", name)
    return clean if clean and not clean[0].isdigit() else f"_{clean}"


def alertname(kind: str) -> str:
    """``StreamMonitor`` and the kind in CamelCase.

    >>> alertname("data_drift"), alertname("performance")
    ('StreamMonitorDataDrift', 'StreamMonitorPerformance')
    """
    return "StreamMonitor" + "".join(p[:1].upper() + p[1:] for p in kind.split("_"))


def to_alertmanager(alert: AlertEvent, *, generator_url: str | None = None) -> dict[str, Any]:
    """One element of the body of Alertmanager's ``POST /api/v2/alerts`` (a list).

    Alertmanager identifies an alert by its label set, so the labels hold only what stays the
    same through an incident: ``alertname``, ``model``, ``kind``, ``severity``, ``priority``,
    ``rule``, ``dedup_key``, ``segment`` (when there is one), ``feature`` (only when the
    incident is that one feature's: with ``alerts.group_features`` the event's feature is the
    strongest signal's, which may change by the time the incident resolves) and the rule's
    routing labels (names sanitised with :func:`label_name`; ours win a clash; ``runbook_url``
    and ``dashboard_url`` become annotations). Everything else is an annotation.

    A firing alert has no ``endsAt``: Alertmanager resolves it after its ``resolve_timeout``
    unless it is posted again (the forwarder re-posts firing alerts, see docs/alerts.md). An
    ``updated`` alert is the same alert posted again (same labels, no ``endsAt``) with its new
    annotations. A resolved alert ends at ``observed_at``, clamped to no later than
    ``published_at`` (a clock ahead of the wall clock would otherwise hold it open) and no
    earlier than ``startsAt``.

    >>> r = AlertEvent(alert_id="a2", dedup_key="m/performance/-@region=eu", status="resolved",
    ...                severity="critical", priority="P0", model_id="m", kind="performance",
    ...                feature=None, segment="region=eu", signal="accuracy", value=0.91,
    ...                threshold=0.85, summary="Resolved.", labels={"on-call.team": "ml"},
    ...                started_at=0.0, observed_at=60.0, published_at=61.0)
    >>> am = to_alertmanager(r, generator_url="http://monitor:9108/metrics")
    >>> sorted(am["labels"].items())  # doctest: +NORMALIZE_WHITESPACE
    [('alertname', 'StreamMonitorPerformance'), ('dedup_key', 'm/performance/-@region=eu'),
     ('kind', 'performance'), ('model', 'm'), ('on_call_team', 'ml'), ('priority', 'P0'),
     ('rule', 'default'), ('segment', 'region=eu'), ('severity', 'critical')]
    >>> am["startsAt"], am["endsAt"], am["generatorURL"]
    ('1970-01-01T00:00:00.000Z', '1970-01-01T00:01:00.000Z', 'http://monitor:9108/metrics')
    """
    labels: dict[str, str] = {
        "alertname": alertname(alert.kind),
        "model": alert.model_id,
        "kind": alert.kind,
        "severity": alert.severity,
        "priority": alert.priority,
        "rule": alert.rule,
        "dedup_key": alert.dedup_key,
    }
    if alert.segment is not None:
        labels["segment"] = alert.segment
    if alert.feature is not None and alert.dedup_key == incident_key(
        alert.model_id, alert.kind, alert.feature, alert.segment
    ):
        labels["feature"] = alert.feature
    for name, value in alert.labels.items():
        clean = label_name(name)
        if name not in LINK_LABELS and clean not in _RESERVED_LABELS:
            labels.setdefault(clean, str(value))

    annotations: dict[str, str] = {
        "summary": alert.summary,
        "description": _what_moved(alert),
        "suggested_action": alert.suggested_action,
        "signal": alert.signal,
        "value": _num(alert.value),
        "threshold": _num(alert.threshold),
    }
    optional = {
        "feature": alert.feature,
        "baseline": None if alert.baseline is None else _num(alert.baseline),
        "window": alert.window,
        "window_events": None if alert.window_events is None else str(alert.window_events),
        "top_features": ", ".join(alert.top_features) or None,
        "model_drift_score": (
            None if alert.model_drift_score is None else _num(alert.model_drift_score)
        ),
        "model_version": alert.model_version,
        "alert_id": alert.alert_id,
        "incident_id": alert.incident_id,
    }
    annotations.update({k: v for k, v in optional.items() if v is not None})
    for name in LINK_LABELS:
        if alert.labels.get(name):
            annotations[name] = alert.labels[name]

    out: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso8601(alert.started_at),
    }
    if alert.status == "resolved":
        end = alert.observed_at
        if alert.published_at is not None:
            end = min(end, alert.published_at)
        out["endsAt"] = iso8601(max(end, alert.started_at))
    if generator_url:
        out["generatorURL"] = generator_url
    return out
