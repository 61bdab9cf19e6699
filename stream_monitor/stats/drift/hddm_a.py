"""HDDM_A, Hoeffding's-bound drift detection with the moving-average test, on values in [0, 1].

Frías-Blanco, del Campo-Ávila, Ramos-Jiménez, Morales-Bueno, Ortiz-Díaz and Caballero-Mota,
"Online and Non-Parametric Drift Detection Methods Based on Hoeffding's Bounds", IEEE
Transactions on Knowledge and Data Engineering 27(3), 2014, pp. 810-823 (the "A-test").

The detector keeps the running mean ``z`` of every value since the start (or the last firing)
and a *cut point*: the mean ``x`` (and count) of the prefix whose mean plus its Hoeffding bound
``sqrt(ln(1 / drift_confidence) / (2 n))`` was lowest. It fires when the overall mean has risen
above the cut point's by more than ``sqrt(m / 2 * ln(2 / drift_confidence))`` with
``m = (n - n_cut) / (n_cut * n)``; with ``two_sided_test`` a second cut point (highest mean
minus bound) watches for a fall the same way. After a firing it starts afresh with the next
value. Input is a stream of values in [0, 1]: 0/1 errors, or real values such as clipped losses
(the bounds assume that range; nothing checks it, as in river).

Same parameters, defaults, update order and firing rule as river's ``drift.binary.HDDMA`` (the
reference the tests compare against on seeded 0/1 and real-valued streams); the state is plain
numbers (three counts and three means) instead of river's ``stats.Mean`` objects. River quirks
kept on purpose, since each can move a firing:

* every mean is updated as ``mean += (1 / n) * (x - mean)``, like river's ``stats.Mean``, not
  as ``total / n`` (the two differ in the last bits, and the comparisons below have ties);
* a cut point moves on ties (``>=`` for the increase side, ``<=`` for the decrease side), and
  both cut points are moved *before* the test on the same value, with the drift confidence;
* the cut-point bound uses ``ln(1 / confidence)`` but the test bound ``ln(2 / confidence)``;
* the test fires on ``>=`` (so a zero difference with a zero bound would fire; it cannot
  happen, the test is skipped while the cut point is the current value);
* the decrease cut point is tracked even when ``two_sided_test`` is off (it only matters to
  the state, which stays river's);
* the warning is river's: a firing on the increase side clears it, but the decrease side
  (two-sided only) may set it again on the same value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, model_validator

from stream_monitor.stats.drift.base import (
    StrictState,
    ValueDetector,
    VersionedState,
    validated,
)

__all__ = ["HDDMA"]

SNAPSHOT_VERSION = 1


class HDDMA(ValueDetector):
    """HDDM_A change detector for a stream of values in [0, 1] (1 = worst).

    Parameters
    ----------
    drift_confidence
        Confidence of the firing test (smaller: fewer, later firings); also the confidence of
        the cut-point bound.
    warning_confidence
        Confidence of the warning test (larger than ``drift_confidence``).
    two_sided_test
        Whether a fall of the mean fires too (by default only a rise does).

    Attributes
    ----------
    drift_detected : bool
        Whether the last value fed fired.
    warning_detected : bool
        Whether the last value fed left the detector in the warning zone (as river's).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.3]).astype(float)
    >>> HDDMA().update_many(errors)
    [2171]

    The same stream cut into batches fires at the same positions:

    >>> det = HDDMA()
    >>> [i + 700 * k for k in range(6) for i in det.update_many(errors[700 * k : 700 * (k + 1)])]
    [2171]

    Real values in [0, 1] work the same way, and the two-sided test also sees a fall:

    >>> loss = np.clip(np.concatenate([rng.normal(0.5, 0.2, 3000), rng.normal(0.3, 0.2, 3000)]),
    ...                0.0, 1.0)
    >>> HDDMA().update_many(loss), HDDMA(two_sided_test=True).update_many(loss)
    ([], [3099])
    """

    PARAMS = ("drift_confidence", "warning_confidence", "two_sided_test")

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        two_sided_test: bool = False,
    ) -> None:
        if not (0.0 < drift_confidence < 1.0 and 0.0 < warning_confidence < 1.0):
            raise ValueError("drift_confidence and warning_confidence must be in (0, 1)")
        self.drift_confidence = float(drift_confidence)
        self.warning_confidence = float(warning_confidence)
        self.two_sided_test = bool(two_sided_test)
        # The logarithms river recomputes on every call, once (the same doubles).
        self._log_cut = math.log(1.0 / self.drift_confidence)
        self._log_drift = math.log(2.0 / self.drift_confidence)
        self._log_warning = math.log(2.0 / self.warning_confidence)
        self.drift_detected = False
        self.warning_detected = False
        self._reset()

    def _reset(self) -> None:
        self.warning_detected = False
        # Every value since the start or the last firing: count and running mean.
        self._n = 0
        self._mean = 0.0
        # Cut point for a rise: the prefix with the lowest mean + bound (count 0: none yet).
        self._min_n = 0
        self._min_mean = 0.0
        # Cut point for a fall: the prefix with the highest mean - bound.
        self._max_n = 0
        self._max_mean = 0.0

    def _first_firing_by_value(self, x: Sequence[float]) -> int:
        """Feed ``x`` value by value; stop at the first firing (-1: none)."""
        if not len(x):
            return -1
        sqrt = math.sqrt
        n, mean = self._n, self._mean
        min_n, min_mean = self._min_n, self._min_mean
        max_n, max_mean = self._max_n, self._max_mean
        log_cut, log_drift = self._log_cut, self._log_drift
        two_sided = self.two_sided_test
        at = -1
        up = down = False  # stay False until the firing value: the loop ends there
        for i, v in enumerate(x):
            n += 1
            mean += (1.0 / n) * (v - mean)
            if min_n == 0:
                min_n, min_mean = n, mean
            if max_n == 0:
                max_n, max_mean = n, mean
            eps = sqrt(1.0 / (2 * n) * log_cut)
            if min_mean + sqrt(1.0 / (2 * min_n) * log_cut) >= mean + eps:
                min_n, min_mean = n, mean
            if max_mean - sqrt(1.0 / (2 * max_n) * log_cut) <= mean - eps:
                max_n, max_mean = n, mean
            if min_n != n:
                m = (n - min_n) / min_n * (1.0 / n)
                up = mean - min_mean >= sqrt(m / 2 * log_drift)
            if two_sided and max_n != n:
                m = (n - max_n) / max_n * (1.0 / n)
                down = max_mean - mean >= sqrt(m / 2 * log_drift)
            if up or down:
                at = i
                break
        self._n, self._mean = n, mean
        self._min_n, self._min_mean = min_n, min_mean
        self._max_n, self._max_mean = max_n, max_mean
        # Only the last value's warning is visible, so it is decided once, on the final state.
        warning = not up and self._rose(self._log_warning)
        if two_sided and not down:
            warning = warning or self._fell(self._log_warning)
        self.warning_detected = warning
        return at

    def _rose(self, log_conf: float) -> bool:
        """Whether the mean rose past the rise cut point at the confidence behind ``log_conf``."""
        if self._min_n == self._n:
            return False
        m = (self._n - self._min_n) / self._min_n * (1.0 / self._n)
        return self._mean - self._min_mean >= math.sqrt(m / 2 * log_conf)

    def _fell(self, log_conf: float) -> bool:
        """Whether the mean fell below the fall cut point (as :meth:`_rose`)."""
        if self._max_n == self._n:
            return False
        m = (self._n - self._max_n) / self._max_n * (1.0 / self._n)
        return self._max_mean - self._mean >= math.sqrt(m / 2 * log_conf)

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state (counts are 0 before the first value)."""
        return {
            "v": SNAPSHOT_VERSION,
            "params": self.params,
            "drift_detected": self.drift_detected,
            "warning_detected": self.warning_detected,
            "n": self._n,
            "mean": self._mean,
            "min_n": self._min_n,
            "min_mean": self._min_mean,
            "max_n": self._max_n,
            "max_mean": self._max_mean,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> HDDMA:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version, a
        missing or unknown field, a field of the wrong type or counts that do not fit."""
        snap = validated(_Snapshot, d, "HDDM_A")
        det = cls(**snap.params.model_dump())
        det.drift_detected = snap.drift_detected
        det.warning_detected = snap.warning_detected
        det._n, det._mean = snap.n, snap.mean
        det._min_n, det._min_mean = snap.min_n, snap.min_mean
        det._max_n, det._max_mean = snap.max_n, snap.max_mean
        return det


class _Params(StrictState):
    drift_confidence: float
    warning_confidence: float
    two_sided_test: bool


class _Snapshot(VersionedState):
    params: _Params
    drift_detected: bool
    warning_detected: bool
    n: int = Field(ge=0)
    mean: float
    min_n: int = Field(ge=0)
    min_mean: float
    max_n: int = Field(ge=0)
    max_mean: float

    @model_validator(mode="after")
    def _counts_fit(self) -> _Snapshot:
        for cut in (self.min_n, self.max_n):
            # A cut point is a prefix of the values seen; there is one as soon as a value is.
            if cut > self.n or (cut == 0) != (self.n == 0):
                raise ValueError("cut-point counts must be in [1, n] (0 when n is 0)")
        return self
