"""The live decoder's events: msgspec Structs, read like the pydantic events of the schema.

The monitor's decoder (``events/decode.py``: ``decode_by_model`` and ``decode_predictions``
for predictions, ``decode_labels`` for labels) hands out each valid event that msgspec took
as the struct msgspec built while parsing it, instead of building a pydantic
:class:`~stream_monitor.events.schema.PredictionEvent` or
:class:`~stream_monitor.events.schema.LabelEvent` from it: those objects cost more per event
than the parse itself. A :class:`Prediction` has the event's fields with the values and
checks of ``PredictionEvent`` (the same bounds, the timestamp in Unix seconds), and its two
reads, :meth:`Prediction.prediction_score` and :meth:`Prediction.prediction_label`; its scored
prediction is a :class:`Scored`. A :class:`Label` has ``LabelEvent``'s fields. Events that
only the second way of the decoder takes (an unknown field, a number wider than 64 bits,
other input formats) stay pydantic events, so the monitor reads :data:`AnyPrediction` and
:data:`AnyLabel`, either kind, by those fields and reads only.

>>> import msgspec
>>> e = msgspec.json.decode(b'{"event_id": "e1", "model_id": "m", "timestamp": 5,'
...                         b' "features": {"x": 1}, "prediction": {"label": 1, "score": 0.9}}',
...                         type=Prediction)
>>> e.timestamp, e.model_version, e.prediction_label(), e.prediction_score()
(5.0, None, '1', 0.9)
>>> e.to_event().prediction_label(), e.to_event().timestamp
('1', 5.0)
>>> msgspec.json.decode(b'{"event_id": "e1", "model_id": "m", "timestamp": 9, "label": 1}',
...                     type=Label)
Label(event_id='e1', model_id='m', timestamp=9.0, label=1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import msgspec

from stream_monitor.events.schema import (
    MAX_FEATURES_PER_EVENT,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    LabelEvent,
    PredictionEvent,
    label_str,
)

__all__ = ["AnyLabel", "AnyPrediction", "Label", "Prediction", "Scored"]

#: An int as orjson parses it (it makes a wider one a float): the decoder's second way takes
#: a wider one.
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]
Scalar = bool | Int | float | Name
#: A feature's value, in a dict of features or in a FeatureRow alike.
FeatureValue = bool | Int | float | str | None
#: Feature names are measured by the decoder (``events/decode.py::_names_ok``): with a length
#: bound on its keys, msgspec no longer reuses the strings of names it has already seen.
Features = Annotated[dict[str, FeatureValue], msgspec.Meta(max_length=MAX_FEATURES_PER_EVENT)]
#: Unix seconds, in the schema's range (an int is made a float, as the schema does).
Seconds = Annotated[float, msgspec.Meta(ge=0.0, lt=1e11)]


class Scored(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """A classifier output (``schema.ScoredPrediction``): the predicted class and its score.

    Unknown fields are refused: pydantic ignores them, but msgspec would skip their values
    without orjson's checks, so such records take the decoder's second way.
    """

    label: Scalar
    score: Int | float


class _Event(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """The fields of both events, first in each. Read-only, like the pydantic events; their
    values are JSON scalars, strings and dicts of them, which hold no reference cycle: the
    garbage collector does not track events (``gc=False``)."""

    event_id: Id
    model_id: Id
    if TYPE_CHECKING:
        timestamp: float
    else:
        # An RFC 3339 string is converted by the decoder, which hands out only events with
        # Unix seconds (msgspec.structs.replace): it reads them as the schema does.
        timestamp: Seconds | str


class Prediction(_Event, forbid_unknown_fields=True, frozen=True, gc=False):
    """One valid prediction event (``schema.PredictionEvent``), as the live decoder gives it.

    ``features`` is a dict or a :class:`~stream_monitor.events.feature_rows.FeatureRow` (a
    read-only mapping equal to it).
    """

    features: Features
    prediction: Scalar | Scored
    model_version: Name | None = None
    segments: dict[Name, Name] | None = None

    def prediction_score(self) -> float | None:
        """The numeric output (a regression value or a classifier's score), if any: as
        ``PredictionEvent.prediction_score``."""
        p = self.prediction
        t = type(p)
        if t is Scored:
            return float(p.score)  # type: ignore[union-attr]
        if t is float:
            return p  # type: ignore[return-value]
        if t is int:
            return float(p)  # type: ignore[arg-type]
        return None  # a bool or a string

    def prediction_label(self) -> str | None:
        """The predicted class as a string, if the model is a classifier: as
        ``PredictionEvent.prediction_label``."""
        p = self.prediction
        if type(p) is Scored:
            return label_str(p.label)
        if type(p) is str or type(p) is bool:
            return label_str(p)
        return None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A copy or a pickle is a Prediction with the features as a dict: the struct of a
        # FeatureRow layout is made at run time, and another process has not made it.
        features = self.features
        return Prediction, (
            self.event_id,
            self.model_id,
            self.timestamp,
            features if type(features) is dict else dict(features.items()),
            self.prediction,
            self.model_version,
            self.segments,
        )

    def to_event(self) -> PredictionEvent:
        """This event as the ``PredictionEvent`` that ``PredictionEvent.model_validate``
        gives for it (an optional field left at None is taken as not given)."""
        p = self.prediction
        fields: dict[str, Any] = {
            "event_id": self.event_id,
            "model_id": self.model_id,
            "timestamp": self.timestamp,
            "features": dict(self.features.items()),
            "prediction": {"label": p.label, "score": p.score} if type(p) is Scored else p,
        }
        if self.model_version is not None:
            fields["model_version"] = self.model_version
        if self.segments is not None:
            fields["segments"] = self.segments
        return PredictionEvent.model_validate(fields)


class Label(_Event, forbid_unknown_fields=True, frozen=True, gc=False):
    """Ground truth for one earlier prediction (``schema.LabelEvent``), as the live decoder
    gives it: its fields bounded as the schema's, the timestamp in Unix seconds."""

    label: Scalar

    def to_event(self) -> LabelEvent:
        """This event as the ``LabelEvent`` that ``LabelEvent.model_validate`` gives for it."""
        return LabelEvent.model_validate(msgspec.structs.asdict(self))


#: A valid prediction event of either kind: what the monitor reads (by the fields and the two
#: reads both have).
AnyPrediction: TypeAlias = PredictionEvent | Prediction
#: A valid label event of either kind: what the monitor reads (by the fields both have).
AnyLabel: TypeAlias = LabelEvent | Label
