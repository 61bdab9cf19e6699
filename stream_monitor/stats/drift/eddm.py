"""EDDM, the Early Drift Detection Method, on a stream of errors (1) and successes (0).

Baena-García, del Campo-Ávila, Fidalgo, Bifet, Gavaldà and Morales-Bueno, "Early Drift
Detection Method", Fourth International Workshop on Knowledge Discovery from Data Streams
(ECML PKDD), 2006. Instead of DDM's error rate, EDDM follows the distance (in values) between
consecutive errors: its running mean ``p'`` and standard deviation ``s'``. While a learner
improves the distance grows, so the detector remembers the largest ``p' + 2 s'`` and, once
enough errors were seen, compares the current ``p' + 2 s'`` with it: a ratio below ``alpha``
warns, below ``beta`` fires; after a firing it starts afresh with the next value.
With the defaults it fires now and then on stationary error streams too, as river's does.

Same parameters, defaults, update order and firing rule as river's ``drift.binary.EDDM`` (the
reference the tests compare against on seeded streams); the state is plain numbers (counts, the
index of the last error and Welford's running mean and sum of squares of the distances) instead
of river's ``stats.Var``. River quirks kept on purpose, since each can move a firing:

* the distance of the first error after the start or a firing is counted from the start (the
  last error's index starts at 0), so it is the error's 1-based position;
* the mean and sum of squares follow river's ``stats.Var`` update
  (``mean += (1 / k) * (d - mean)``, ``m2 += (d - old_mean) * (d - mean)``), the standard
  deviation is ``(m2 / (k - 1)) ** 0.5`` (0 for a single distance);
* the maximum starts at -1 and is only updated past the first ``warm_start`` values (values,
  not errors), while the ratio is only tested past ``warm_start`` errors, and not on an error
  that set a new maximum;
* only a value equal to 1 counts as an error; a firing leaves the warning as it was (it is
  cleared when the detector starts afresh), and the warning only changes on tested errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import (
    Field,
    model_validator,
)

from stream_monitor.stats.drift.base import (
    StrictState,
    ValueDetector,
    VersionedState,
    validated,
)

__all__ = ["EDDM"]

SNAPSHOT_VERSION = 1


class EDDM(ValueDetector):
    """Early Drift Detection Method for a 0/1 error stream (1 = error).

    Parameters
    ----------
    warm_start
        Values seen before the maximum of ``p' + 2 s'`` is recorded, and errors seen before the
        ratio to it is tested (both since the start or the last firing).
    alpha
        Warning level of the ratio ``(p' + 2 s') / max(p' + 2 s')``.
    beta
        Firing level of that ratio; at most ``alpha``.

    Attributes
    ----------
    drift_detected : bool
        Whether the last value fed fired.
    warning_detected : bool
        Whether the detector is in the warning zone (as river's).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.4]).astype(float)
    >>> EDDM(alpha=0.8, beta=0.7).update_many(errors)
    [2248]

    The same stream cut into batches fires at the same positions:

    >>> eddm = EDDM(alpha=0.8, beta=0.7)
    >>> [i + 700 * k for k in range(6) for i in eddm.update_many(errors[700 * k : 700 * (k + 1)])]
    [2248]
    """

    PARAMS = ("warm_start", "alpha", "beta")

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9) -> None:
        if alpha < beta:
            raise ValueError("alpha must be greater than or equal to beta")
        self.warm_start = int(warm_start)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.drift_detected = False
        self.warning_detected = False
        self._reset()

    def _reset(self) -> None:
        self.warning_detected = False
        self._n = 0
        self._last_error = 0
        self._n_errors = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._p2s_max = -1.0

    def _first_firing_by_value(self, x: Sequence[float]) -> int:
        """Feed ``x`` value by value; stop at the first firing (-1: none)."""
        n, last, k = self._n, self._last_error, self._n_errors
        mean, m2, p2s_max = self._mean, self._m2, self._p2s_max
        warm, alpha, beta = self.warm_start, self.alpha, self.beta
        warning = self.warning_detected
        at = -1
        for i, v in enumerate(x):
            n += 1
            if v != 1:
                continue
            k += 1
            dist = n - last
            last = n
            old = mean
            mean += (1.0 / k) * (dist - old)
            m2 += (dist - old) * (dist - mean)
            if n <= warm:
                continue
            p2s = mean + 2 * (m2 / (k - 1) if k > 1 else 0.0) ** 0.5
            if p2s > p2s_max:
                p2s_max = p2s
            elif k > warm:
                level = p2s / p2s_max
                if level < beta:
                    at = i
                    break
                warning = level < alpha
        self._n, self._last_error, self._n_errors = n, last, k
        self._mean, self._m2, self._p2s_max = mean, m2, p2s_max
        self.warning_detected = warning
        return at

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state (``mean`` and ``m2``: running mean and sum of squared
        deviations of the distances between errors; ``p2s_max``: -1 until recorded)."""
        return {
            "v": SNAPSHOT_VERSION,
            "params": self.params,
            "drift_detected": self.drift_detected,
            "warning_detected": self.warning_detected,
            "n": self._n,
            "last_error": self._last_error,
            "n_errors": self._n_errors,
            "mean": self._mean,
            "m2": self._m2,
            "p2s_max": self._p2s_max,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> EDDM:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version, a
        missing or unknown field, a field of the wrong type, or inconsistent counts."""
        snap = validated(_Snapshot, d, "EDDM")
        det = cls(**snap.params.model_dump())
        det.drift_detected = snap.drift_detected
        det.warning_detected = snap.warning_detected
        det._n = snap.n
        det._last_error = snap.last_error
        det._n_errors = snap.n_errors
        det._mean = snap.mean
        det._m2 = snap.m2
        det._p2s_max = snap.p2s_max
        return det


class _Params(StrictState):
    warm_start: int
    alpha: float
    beta: float


class _Snapshot(VersionedState):
    params: _Params
    drift_detected: bool
    warning_detected: bool
    n: int = Field(ge=0)
    last_error: int = Field(ge=0)
    n_errors: int = Field(ge=0)
    mean: float
    m2: float = Field(ge=0.0)
    p2s_max: float

    @model_validator(mode="after")
    def _counts_consistent(self) -> _Snapshot:
        if self.last_error > self.n or self.n_errors > self.n:
            raise ValueError("last_error and n_errors cannot exceed n")
        return self
