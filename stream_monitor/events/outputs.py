"""The names under which a model's outputs are monitored as pseudo-features.

A prediction's score and label (``PredictionEvent.prediction_score()`` and
``prediction_label()``) are monitored for prediction drift like input features, under these
names, both by the live monitor (:mod:`stream_monitor.monitor.model`) and in reference profiles
(:mod:`stream_monitor.reference.profile`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

from stream_monitor.events.live import AnyPrediction, Scored
from stream_monitor.events.schema import ScoredPrediction, label_strs

__all__ = [
    "PREDICTION_LABEL",
    "PREDICTION_SCORE",
    "EventColumns",
    "event_columns",
]

#: Pseudo-features that carry the model's output, monitored for prediction drift.
PREDICTION_SCORE = "prediction.score"
PREDICTION_LABEL = "prediction.label"


_LABEL_AND_SCORE = operator.attrgetter("label", "score")
#: The types of a scored prediction: the pydantic events' and the live decoder's.
_SCORED = frozenset({ScoredPrediction, Scored})
#: What ``event_columns`` reads of an event: its fields, and its prediction's label and score
#: (an AttributeError when the prediction is not a scored one), or the prediction itself.
_SCORED_ROW = operator.attrgetter(
    "event_id", "timestamp", "model_version", "features", "prediction.label", "prediction.score"
)
_ROW = operator.attrgetter("event_id", "timestamp", "model_version", "features", "prediction")


class EventColumns(NamedTuple):
    """A batch of prediction events as columns, one value per event, in order."""

    event_ids: Sequence[str]
    timestamps: Sequence[float]
    model_versions: Sequence[str | None]
    features: Sequence[dict[str, Any]]
    #: Each event's ``prediction_label()``.
    labels: Sequence[str | None]
    #: Each event's ``prediction_score()``.
    scores: Sequence[float | None]

    def rows(self, lo: int, hi: int) -> EventColumns:
        """Rows ``lo:hi`` of every column."""
        return EventColumns._make(col[lo:hi] for col in self)


def event_columns(events: Sequence[AnyPrediction]) -> EventColumns:
    """The events as columns, read in one pass over the events' objects: a batch of them is
    larger than the CPU's cache, so each further pass would read them from memory again.

    >>> from stream_monitor.events.schema import PredictionEvent
    >>> e = [PredictionEvent(event_id=str(i), model_id="m", timestamp=i, features={"x": i},
    ...                      prediction=p) for i, p in enumerate([0.5, {"label": 1, "score": 1}])]
    >>> c = event_columns(e)
    >>> c.event_ids, c.timestamps, c.labels, c.scores, event_columns(e[1:]).labels
    (('0', '1'), (0.0, 1.0), [None, '1'], [0.5, 1.0], ['1'])
    """
    if not events:
        return EventColumns((), (), (), (), [], [])
    try:  # every prediction a scored one (the usual case): its label and score read too
        ids, times, versions, features, labels, scores = zip(*map(_SCORED_ROW, events), strict=True)
    except AttributeError:
        ids, times, versions, features, preds = zip(*map(_ROW, events), strict=True)
        return EventColumns(ids, times, versions, features, *_outputs(preds, events))
    return EventColumns(ids, times, versions, features, label_strs(list(labels)), _floats(scores))


def _outputs(
    preds: Sequence[Any], events: Sequence[AnyPrediction]
) -> tuple[list[str | None], list[float | None]]:
    """Each event's ``prediction_label()`` and ``prediction_score()``, as two columns: by
    column when every prediction is a scored one or every one a float, else event by event
    (``preds``: the events' predictions)."""
    kinds = set(map(type, preds))
    if kinds <= _SCORED:
        labels, scores = zip(*map(_LABEL_AND_SCORE, preds), strict=True)
        return label_strs(list(labels)), _floats(scores)  # type: ignore[return-value]
    if kinds == {float}:
        return [None] * len(preds), list(preds)
    return [e.prediction_label() for e in events], [e.prediction_score() for e in events]


def _floats(scores: Sequence[Any]) -> list[float | None]:
    """Scores (floats or ints) as floats."""
    return list(scores) if set(map(type, scores)) == {float} else list(map(float, scores))
