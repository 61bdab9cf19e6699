"""The names under which a model's outputs are monitored as pseudo-features.

A prediction's score and label (``PredictionEvent.prediction_score()`` and
``prediction_label()``) are monitored for prediction drift like input features, under these
names, both by the live monitor (:mod:`stream_monitor.monitor.model`) and in reference profiles
(:mod:`stream_monitor.reference.profile`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from stream_monitor.events.schema import PredictionEvent, ScoredPrediction, label_strs

__all__ = ["PREDICTION_LABEL", "PREDICTION_SCORE", "output_columns"]

#: Pseudo-features that carry the model's output, monitored for prediction drift.
PREDICTION_SCORE = "prediction.score"
PREDICTION_LABEL = "prediction.label"


_PREDICTION = operator.attrgetter("prediction")
_LABEL_AND_SCORE = operator.attrgetter("label", "score")


def output_columns(
    events: Sequence[PredictionEvent],
) -> tuple[list[str | None], list[float | None]]:
    """Each event's ``prediction_label()`` and ``prediction_score()``, as two columns: by
    column when every prediction is a scored one or every one a float (the usual cases),
    else event by event.

    >>> from stream_monitor.events.schema import PredictionEvent
    >>> e = [PredictionEvent(event_id=str(i), model_id="m", timestamp=1, features={},
    ...                      prediction={"label": i, "score": 1}) for i in range(2)]
    >>> output_columns(e)
    (['0', '1'], [1.0, 1.0])
    """
    preds = list(map(_PREDICTION, events))
    kinds = set(map(type, preds))
    if kinds == {ScoredPrediction}:
        labels, scores = zip(*map(_LABEL_AND_SCORE, preds), strict=True)
        score_list = list(scores) if set(map(type, scores)) == {float} else list(map(float, scores))
        return label_strs(list(labels)), score_list  # type: ignore[return-value]
    if kinds == {float}:
        return [None] * len(preds), preds
    return (
        list(map(PredictionEvent.prediction_label, events)),
        list(map(PredictionEvent.prediction_score, events)),
    )
