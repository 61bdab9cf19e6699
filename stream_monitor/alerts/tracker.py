"""The alert lifecycle: an incident per (model, kind, feature), opened once, resolved once.

Several signals may speak about one incident (the PSI of a window and the change detectors of the
same feature): the first that breaches opens it; it resolves only when every signal that spoke
about it has cleared (each with its own, lower, resolve threshold: hysteresis).

Examples
--------
>>> from stream_monitor.alerts.observation import Observation
>>> def obs(v):
...     return Observation("m", "data_drift", "age", "psi", v, 0.25, v > 0.25, v < 0.1, 1.0)
>>> t = AlertTracker()
>>> [a.status for v in (0.05, 0.4, 0.5, 0.2, 0.3, 0.05) for a in t.observe(obs(v))]
['firing', 'resolved']
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from stream_monitor.alerts.observation import Observation
from stream_monitor.events.schema import AlertEvent, Severity

__all__ = ["AlertTracker", "dedup_key"]

SNAPSHOT_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c1c52-3f5e-4a53-9a59-2f0c6e3b9d11")

SEVERITY: dict[str, Severity] = {
    "data_drift": "warning",
    "prediction_drift": "warning",
    "data_quality": "warning",
    "concept_drift": "critical",
    "performance": "critical",
}

_WHAT = {
    "data_drift": "input feature {feature!r} of model {model!r} drifted",
    "prediction_drift": "output {feature!r} of model {model!r} drifted",
    "data_quality": "data quality of feature {feature!r} of model {model!r} degraded",
    "concept_drift": "errors of model {model!r} rose",
    "performance": "performance of model {model!r} decayed",
}


#: Model-level signals (no feature): the model drift score, new fields in the payload.
_WHAT_MODEL = {
    "data_drift": "the inputs of model {model!r} drifted",
    "data_quality": "the payload of model {model!r} carries fields unknown to the reference",
}


def dedup_key(model_id: str, kind: str, feature: str | None, segment: str | None = None) -> str:
    """The key of one incident; also the Kafka key of its alert events.

    >>> dedup_key("m", "data_drift", "age"), dedup_key("m", "performance", None, "region=eu")
    ('m/data_drift/age', 'm/performance/-@region=eu')
    """
    key = f"{model_id}/{kind}/{feature or '-'}"
    return key if segment is None else f"{key}@{segment}"


@dataclass
class _Incident:
    model_id: str
    kind: str
    feature: str | None
    segment: str | None = None
    seq: int = 0
    firing: bool = False
    started_at: float = 0.0
    #: Signals that have spoken during the current incident, and whether each has cleared.
    cleared: dict[str, bool] = field(default_factory=dict)


class AlertTracker:
    """Turns a stream of observations into firing and resolved alert events."""

    def __init__(self) -> None:
        self._incidents: dict[str, _Incident] = {}

    def observe(self, o: Observation) -> list[AlertEvent]:
        key = dedup_key(o.model_id, o.kind, o.feature, o.segment)
        inc = self._incidents.get(key)
        if inc is None:
            if not o.breached:
                return []  # nothing to remember: keeps state to incidents that ever happened
            inc = self._incidents[key] = _Incident(o.model_id, o.kind, o.feature, o.segment)
        if not inc.firing:
            if not o.breached:
                return []
            inc.seq += 1
            inc.firing = True
            inc.started_at = o.observed_at
            inc.cleared = {o.signal: False}
            return [self._event(key, inc, o, "firing")]
        if o.cleared:
            inc.cleared[o.signal] = True
        elif o.breached:
            inc.cleared[o.signal] = False
        else:  # between the two thresholds: the signal keeps its state (a new one is not clear)
            inc.cleared.setdefault(o.signal, False)
        if all(inc.cleared.values()):
            inc.firing = False
            return [self._event(key, inc, o, "resolved")]
        return []

    def firing(self) -> list[tuple[str, str, str | None]]:
        """(model_id, kind, feature) of the whole-model incidents firing now."""
        return [
            (i.model_id, i.kind, i.feature)
            for i in self._incidents.values()
            if i.firing and i.segment is None
        ]

    def firing_segments(self) -> list[tuple[str, str, str | None, str]]:
        """(model_id, kind, feature, segment) of the segment incidents firing now."""
        return [
            (i.model_id, i.kind, i.feature, i.segment)
            for i in self._incidents.values()
            if i.firing and i.segment is not None
        ]

    def _event(self, key: str, inc: _Incident, o: Observation, status: str) -> AlertEvent:
        template = (
            _WHAT[o.kind] if o.feature is not None else _WHAT_MODEL.get(o.kind, _WHAT[o.kind])
        )
        what = template.format(feature=o.feature, model=o.model_id)
        if o.segment is not None:
            what = f"{what} in segment {o.segment}"
        if status == "firing" and o.signal == "change_detectors":
            summary = (
                f"{what[0].upper()}{what[1:]}: {o.value:.0f} change detectors (ADWIN, "
                "Page-Hinkley) agree that its distribution shifted away from the reference."
            )
        elif status == "firing":
            summary = (
                f"{what[0].upper()}{what[1:]}: {o.signal} is {o.value:.4g}, "
                f"above its threshold {o.threshold:.4g}"
                + (f" over the last {o.window_events} events." if o.window_events else ".")
            )
        else:
            summary = f"Resolved: {what}, and every signal is back ({o.signal} is {o.value:.4g})."
        return AlertEvent(
            alert_id=str(uuid.uuid5(_NAMESPACE, f"{key}|{inc.seq}|{status}")),
            dedup_key=key,
            status=status,  # type: ignore[arg-type]
            severity=SEVERITY[o.kind],
            model_id=o.model_id,
            model_version=o.model_version,
            kind=o.kind,
            feature=o.feature,
            segment=o.segment,
            signal=o.signal,
            value=o.value,
            threshold=o.threshold,
            summary=summary,
            window_events=o.window_events,
            started_at=inc.started_at,
            observed_at=o.observed_at,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "incidents": {
                k: [
                    i.model_id,
                    i.kind,
                    i.feature,
                    i.seq,
                    i.firing,
                    i.started_at,
                    i.cleared,
                    i.segment,
                ]
                for k, i in self._incidents.items()
            },
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any]) -> AlertTracker:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported alert-tracker snapshot version {d.get('v')!r}")
        t = cls()
        for k, row in d["incidents"].items():
            model_id, kind, feature, seq, firing, started, cleared = row[:7]
            segment = row[7] if len(row) > 7 else None
            t._incidents[k] = _Incident(
                model_id, kind, feature, segment, seq, firing, started, dict(cleared)
            )
        return t
