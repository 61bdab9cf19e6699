"""The names under which a model's outputs are monitored as pseudo-features.

A prediction's score and label (``PredictionEvent.prediction_score()`` and
``prediction_label()``) are monitored for prediction drift like input features, under these
names, both by the live monitor (:mod:`stream_monitor.monitor.model`) and in reference profiles
(:mod:`stream_monitor.reference.profile`).
"""

from __future__ import annotations

__all__ = ["PREDICTION_LABEL", "PREDICTION_SCORE"]

#: Pseudo-features that carry the model's output, monitored for prediction drift.
PREDICTION_SCORE = "prediction.score"
PREDICTION_LABEL = "prediction.label"
