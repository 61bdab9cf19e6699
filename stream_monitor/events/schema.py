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
    model_validator,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "PRIORITY",
    "AlertEvent",
    "AlertKind",
    "AlertSignal",
    "AlertStatus",
    "FeatureValue",
    "LabelEvent",
    "PredictionEvent",
    "Priority",
    "RetrainTrigger",
    "ScoredPrediction",
    "Severity",
    "SuggestedAction",
    "label_str",
    "label_strs",
]

MAX_ID_LENGTH = 256
#: Longest feature name, segment key or value, model version and class label (characters):
#: they become metric label values and snapshot keys, so their size is bounded; an event with a
#: longer one is refused (dead letter ``validation_error``), never truncated.
MAX_NAME_LENGTH = 128
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
        return _to_unix_seconds(dt.timestamp())  # the same range as numbers
    raise ValueError("timestamp must be Unix seconds or an RFC 3339 string")


Timestamp = Annotated[float, BeforeValidator(_to_unix_seconds)]
Identifier = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Name = Annotated[StrictStr, Field(max_length=MAX_NAME_LENGTH)]
FeatureValue = StrictFloat | StrictInt | StrictBool | StrictStr | None
#: A class label (or a regression value): a string one is a name, bounded.
Scalar = StrictFloat | StrictInt | StrictBool | Name


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
    model_version: Name | None = None
    timestamp: Timestamp
    features: Annotated[dict[Name, FeatureValue], Field(max_length=MAX_FEATURES_PER_EVENT)]
    prediction: StrictFloat | StrictInt | StrictBool | Name | ScoredPrediction
    segments: dict[Name, Name] | None = None

    def prediction_score(self) -> float | None:
        """The numeric output (a regression value or a classifier's score), if any."""
        p = self.prediction
        if type(p) is ScoredPrediction:
            return float(p.score)
        if type(p) is float:
            return p
        if isinstance(p, ScoredPrediction):
            return float(p.score)
        if isinstance(p, int | float) and not isinstance(p, bool):
            return float(p)
        return None

    def prediction_label(self) -> str | None:
        """The predicted class as a string, if the model is a classifier."""
        p = self.prediction
        if type(p) is ScoredPrediction:
            label = p.label
            return label if type(label) is str else label_str(label)
        if isinstance(p, ScoredPrediction):
            return label_str(p.label)
        if isinstance(p, str | bool):
            return label_str(p)
        return None


class LabelEvent(_Event):
    """Ground truth for one earlier prediction (topic ``labels``, key = ``model_id``)."""

    event_id: Identifier
    model_id: Identifier
    timestamp: Timestamp
    label: Scalar


def label_str(v: object) -> str:
    """A class label as text, the one spelling predictions and labels are compared in.

    >>> label_str(True), label_str(1.0), label_str(2), label_str("yes")
    ('true', '1', '2', 'yes')
    """
    t = type(v)
    if t is str:
        return v  # type: ignore[return-value]
    if t is int:
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


AlertStatus = Literal["firing", "updated", "resolved"]
AlertKind = Literal[
    "data_drift", "prediction_drift", "concept_drift", "performance", "data_quality"
]
Severity = Literal["critical", "warning", "info"]
#: How severities are documented for on-call: critical is P0 (page now), warning P1 (today),
#: info P2 (review).
PRIORITY: dict[str, str] = {"critical": "P0", "warning": "P1", "info": "P2"}
Priority = Literal["P0", "P1", "P2"]
SuggestedAction = Literal[
    "investigate_data_pipeline", "retrain", "roll_back", "check_labels", "investigate"
]


class _Output(BaseModel):
    """What the monitor publishes: finite numbers only, and every field in the JSON Schema's
    ``required`` (the monitor always sends them all)."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        allow_inf_nan=False,
        json_schema_serialization_defaults_required=True,
    )


class AlertSignal(_Output):
    """One signal that spoke in an incident: a feature's statistic, the model drift score..."""

    feature: str | None = Field(description="the feature, or null for a model-level signal")
    signal: str = Field(description="the statistic or metric, e.g. psi, accuracy")
    kind: AlertKind | None = Field(
        default=None,
        description="the signal's own kind when the incident gathers several (a performance "
        "incident lists its concept-drift signals); null in schema_version 2",
    )
    value: float
    threshold: float
    baseline: float | None = Field(
        default=None, description="what the value is compared with (reference mean, baseline)"
    )
    breached: bool = Field(description="whether it breached its rule in its last observation")


class AlertEvent(_Output):
    """An alert published to the ``alerts`` topic, keyed by ``dedup_key``.

    ``incident_id`` is a random UUID drawn when the incident opens, kept through restarts
    and shared by its ``firing``, ``updated`` and ``resolved`` events; ``alert_id`` is
    derived from it, the status and the event's sequence in the incident, so it doubles as the
    idempotency key: a redelivered alert (at-least-once) carries the same ``alert_id``.
    ``signal``, ``feature``, ``value`` and ``threshold`` describe the signal that made the
    transition; ``signals`` lists every signal of the incident (the features of a model that
    drift together share one incident, and so do its performance and concept-drift signals),
    the strongest first.
    """

    alert_id: str
    incident_id: str | None = Field(
        default=None,
        description="the incident (a random UUID drawn when it opens), shared by its firing, "
        "updated and resolved events; null in schema_version 2",
    )
    dedup_key: str
    status: AlertStatus
    severity: Severity
    priority: Priority = Field(description="critical = P0, warning = P1, info = P2")
    model_id: str
    model_version: str | None = None
    kind: AlertKind
    feature: str | None
    #: ``key=value`` of a configured segment (``model_version=v2`` for a version), or null.
    segment: str | None = None
    signal: str
    value: float
    threshold: float
    baseline: float | None = Field(
        default=None, description="the baseline a relative rule compares with, when it has one"
    )
    summary: str
    window_events: int | None = None
    window: str | None = Field(
        default=None, description="the window the value was computed over, e.g. 'count 1000'"
    )
    rule: str = Field(default="default", description="the configured rule that judged it")
    labels: dict[str, str] = Field(
        default_factory=dict, description="routing labels of the rule (team, runbook_url, ...)"
    )
    signals: list[AlertSignal] = Field(
        default_factory=list, description="every signal of the incident, strongest first"
    )
    signals_total: int = Field(default=0, description="signals in the incident (before capping)")
    top_features: list[str] = Field(
        default_factory=list, description="features of the incident, strongest first"
    )
    model_drift_score: float | None = Field(
        default=None, description="the model's importance-weighted share of drifting features"
    )
    suggested_action: SuggestedAction = "investigate"
    retrain: bool = Field(
        default=False, description="the rule asks for retraining (see the retrain topic)"
    )
    started_at: float = Field(description="event time the incident started (Unix seconds)")
    observed_at: float = Field(description="event time of the observation (Unix seconds)")
    published_at: float | None = Field(default=None, description="wall clock at publication")
    #: 3 since ``updated`` events and ``incident_id``; 2 is still read (events on the topic
    #: from before an upgrade).
    schema_version: Literal[2, 3] = 3

    @model_validator(mode="after")
    def _priority_follows_severity(self) -> AlertEvent:
        if PRIORITY[self.severity] != self.priority:
            raise ValueError(
                f"priority {self.priority} does not match severity {self.severity} "
                f"({PRIORITY[self.severity]})"
            )
        return self


class RetrainTrigger(_Output):
    """A compact event on the retrain topic (``topics.retrain``) when a rule with
    ``retrain = true`` fires: enough for a training pipeline to start, keyed by ``model_id``."""

    trigger_id: str = Field(description="equals the alert_id of the firing alert")
    model_id: str
    model_version: str | None = None
    reason: str = Field(description="kind/signal that fired, e.g. performance/accuracy")
    dedup_key: str
    segment: str | None = None
    features: list[str] = Field(default_factory=list)
    observed_at: float = Field(description="event time of the observation (Unix seconds)")
    schema_version: Literal[1] = 1

    @classmethod
    def from_alert(cls, a: AlertEvent) -> RetrainTrigger:
        """The trigger of a firing alert whose rule asks for retraining."""
        return cls(
            trigger_id=a.alert_id,
            model_id=a.model_id,
            model_version=a.model_version,
            reason=f"{a.kind}/{a.signal}",
            dedup_key=a.dedup_key,
            segment=a.segment,
            features=list(a.top_features),
            observed_at=a.observed_at,
        )


def label_strs(labels: list[Any]) -> list[str]:
    """``[label_str(v) for v in labels]``, without a Python call per label when all are
    strings or all are ints (0/1 labels), which ``label_str`` leaves as they are / writes
    as ``str`` does.

    >>> label_strs([1, 0]), label_strs(["a", "b"]), label_strs([True, 1, 2.0])
    (['1', '0'], ['a', 'b'], ['true', '1', '2'])
    """
    kinds = set(map(type, labels))
    if kinds == {str}:
        return labels
    if kinds == {int}:
        return list(map(str, labels))
    return [label_str(v) for v in labels]
