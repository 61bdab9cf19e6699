"""Where alert events go: sinks that take the alerts of one batch.

``stream-monitor run`` writes them to the alerts topic (and, for rules with ``retrain = true``,
a trigger to the retrain topic) inside the checkpoint's transaction: :class:`KafkaAlertSink`.
``stream-monitor replay`` writes the same JSON, one alert per line: :class:`JsonLinesAlertSink`.
Both serialise with :func:`alert_value`, so a replayed timeline and the topic hold the same
bytes for the same alert. A new destination is one more class with ``write`` and ``close``.
The HTTP ones, :class:`~stream_monitor.alerts.http_sinks.AlertmanagerSink` and
:class:`~stream_monitor.alerts.http_sinks.PagerDutySink` (alerts/http_sinks.py), are fed from the
topic by ``stream-monitor forward`` (alerts/forward.py) rather than by ``run``, so that a
transaction that aborts never pages anybody.

Examples
--------
>>> import io
>>> from stream_monitor.events.schema import AlertEvent
>>> a = AlertEvent.model_validate({
...     "alert_id": "a1", "dedup_key": "m/data_drift/x", "status": "firing",
...     "severity": "warning", "priority": "P1", "kind": "data_drift", "model_id": "m",
...     "feature": "x", "signal": "psi", "value": 0.4, "threshold": 0.2,
...     "summary": "x drifted", "started_at": 1.0, "observed_at": 1.0, "retrain": True})
>>> out: list = []
>>> KafkaAlertSink(out.append, "alerts", "retrain").write([a])
>>> [(r.topic, r.key) for r in out]
[('alerts', b'm/data_drift/x'), ('retrain', b'm')]
>>> buf = io.BytesIO()
>>> JsonLinesAlertSink(buf).write([a])
>>> buf.getvalue() == alert_value(a) + b"\\n" == out[0].value + b"\\n"
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO, Protocol

import orjson

from stream_monitor.checkpoint import OutputRecord
from stream_monitor.events.schema import AlertEvent, RetrainTrigger

__all__ = [
    "AlertSink",
    "JsonLinesAlertSink",
    "KafkaAlertSink",
    "alert_value",
]

_JSON = ("content-type", b"application/json")


class AlertSink(Protocol):
    """A destination of alert events."""

    def write(self, alerts: Sequence[AlertEvent]) -> None:
        """Take the alerts of one batch, in order."""
        ...

    def close(self) -> None:
        """Release what the sink holds (nothing is written after this)."""
        ...


def alert_value(alert: AlertEvent) -> bytes:
    """The JSON of an alert event, as the alerts topic and ``alerts.jsonl`` hold it."""
    return orjson.dumps(alert.model_dump())


class KafkaAlertSink:
    """Alert events (key: ``dedup_key``) and retrain triggers (key: ``model_id``, only with a
    ``retrain_topic``) handed to ``add_output``: the checkpoint, which produces them in the
    transaction that commits the input offsets they came from."""

    def __init__(
        self,
        add_output: Callable[[OutputRecord], None],
        alerts_topic: str,
        retrain_topic: str | None,
    ) -> None:
        self._add = add_output
        self.alerts_topic = alerts_topic
        self.retrain_topic = retrain_topic

    def write(self, alerts: Sequence[AlertEvent]) -> None:
        for a in alerts:
            key, headers = a.dedup_key.encode(), [_JSON, ("alert-id", a.alert_id.encode())]
            self._add(OutputRecord(self.alerts_topic, key, alert_value(a), headers))
            if a.retrain and self.retrain_topic is not None:
                trigger = orjson.dumps(RetrainTrigger.from_alert(a).model_dump())
                self._add(OutputRecord(self.retrain_topic, a.model_id.encode(), trigger, [_JSON]))

    def close(self) -> None:
        pass


class JsonLinesAlertSink:
    """One alert event per line of a binary file (the caller opens and closes it)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def write(self, alerts: Sequence[AlertEvent]) -> None:
        for a in alerts:
            self._out.write(alert_value(a) + b"\n")

    def close(self) -> None:
        self._out.flush()
