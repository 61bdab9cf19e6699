"""Pydantic models of the wire contract (see docs/wire-contract.md).

Examples
--------
>>> e = PredictionEvent.model_validate({
...     "event_id": "e1", "model_id": "m", "timestamp": "2026-11-22T00:00:00Z",
...     "features": {"age": 41, "country": "fr", "vip": True, "income": None},
...     "prediction": {"label": 1, "score": 0.93}})
>>> e.timestamp
1795305600.0
>>> e.prediction_score(), e.prediction_label()
(0.93, '1')
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

__all__ = [
    "AlertEvent",
    "AlertKind",
    "AlertStatus",
    "FeatureValue",
    "LabelEvent",
    "PredictionEvent",
    "ScoredPrediction",
    "Severity",
]

MAX_ID_LENGTH = 256
MAX_FEATURES_PER_EVENT = 2048


def _to_unix_seconds(v: Any) -> float:
    """Accept Unix seconds (int or float) or an RFC 3339 string; return Unix seconds."""
    if isinstance(v, bool):
        raise ValueError("timestamp must be Unix seconds or an RFC 3339 string, not a boolean")
    if isinstance(v, int | float):
        if not (0 <= v < 1e11):
            raise ValueError("timestamp must be Unix seconds (did you send milliseconds?)")
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError as exc:
            raise ValueError(f"timestamp {v!r} is not RFC 3339") from exc
        if dt.tzinfo is None:
            raise ValueError(f"timestamp {v!r} has no UTC offset (RFC 3339 requires one)")
        return dt.timestamp()
    raise ValueError("timestamp must be Unix seconds or an RFC 3339 string")


Timestamp = Annotated[float, BeforeValidator(_to_unix_seconds)]
Identifier = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
FeatureValue = StrictFloat | StrictInt | StrictBool | StrictStr | None
Scalar = StrictFloat | StrictInt | StrictBool | StrictStr


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ScoredPrediction(_Event):
    """A classifier output: the predicted class and its score."""

    label: Scalar
    score: StrictFloat | StrictInt


class PredictionEvent(_Event):
    """One prediction served by a model API (topic ``predictions``, key = ``model_id``)."""

    event_id: Identifier
    model_id: Identifier
    model_version: Annotated[StrictStr, Field(max_length=MAX_ID_LENGTH)] | None = None
    timestamp: Timestamp
    features: Annotated[dict[str, FeatureValue], Field(max_length=MAX_FEATURES_PER_EVENT)]
    prediction: StrictFloat | StrictInt | StrictBool | StrictStr | ScoredPrediction
    segments: dict[str, StrictStr] | None = None

    def prediction_score(self) -> float | None:
        """The numeric output (a regression value or a classifier's score), if any."""
        p = self.prediction
        if isinstance(p, ScoredPrediction):
            return float(p.score)
        if isinstance(p, int | float) and not isinstance(p, bool):
            return float(p)
        return None

    def prediction_label(self) -> str | None:
        """The predicted class as a string, if the model is a classifier."""
        p = self.prediction
        if isinstance(p, ScoredPrediction):
            return _label_str(p.label)
        if isinstance(p, str | bool):
            return _label_str(p)
        return None


class LabelEvent(_Event):
    """Ground truth for one earlier prediction (topic ``labels``, key = ``model_id``)."""

    event_id: Identifier
    model_id: Identifier
    timestamp: Timestamp
    label: Scalar


def _label_str(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


AlertStatus = Literal["firing", "resolved"]
AlertKind = Literal[
    "data_drift", "prediction_drift", "concept_drift", "performance", "data_quality"
]
Severity = Literal["critical", "warning", "info"]


class AlertEvent(_Event):
    """An alert published to the ``alerts`` topic, keyed by ``dedup_key``.

    ``alert_id`` is deterministic for one transition of one incident, so it doubles as the
    idempotency key: a redelivered alert (at-least-once) carries the same ``alert_id``.
    """

    alert_id: str
    dedup_key: str
    status: AlertStatus
    severity: Severity
    model_id: str
    model_version: str | None = None
    kind: AlertKind
    feature: str | None
    #: ``key=value`` of a configured segment (``model_version=v2`` for a version), or null.
    segment: str | None = None
    signal: str
    value: float
    threshold: float
    summary: str
    window_events: int | None = None
    started_at: float = Field(description="event time the incident started (Unix seconds)")
    observed_at: float = Field(description="event time of the observation (Unix seconds)")
    published_at: float | None = Field(default=None, description="wall clock at publication")
    schema_version: int = 1
