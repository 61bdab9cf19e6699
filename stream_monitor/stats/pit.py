"""The probability-integral-transform (PIT) grid shared by reference profiles and monitors.

A numeric reference keeps its quantiles at ``PIT_POINTS`` evenly spaced probabilities, so a
profile built from training data (:mod:`stream_monitor.reference.profile`) and a reference
learnt from live events (:mod:`stream_monitor.monitor.feature`) standardise values the same way.

>>> import numpy as np
>>> np.linspace(0.0, 1.0, PIT_POINTS)[[0, 50, -1]].tolist()
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

__all__ = ["PIT_POINTS"]

#: Points of a numeric reference's quantile grid (probabilities 0, 0.01, ..., 1).
PIT_POINTS = 101
