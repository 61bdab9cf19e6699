"""DDM, the Drift Detection Method, on a stream of errors (1) and successes (0).

Gama, Medas, Castillo and Rodrigues, "Learning with Drift Detection", SBIA 2004, LNCS 3171,
pp. 286-295. The error rate ``p`` of a learner is a Bernoulli proportion with standard deviation
``s = sqrt(p (1 - p) / n)``; while the data are stationary ``p + s`` does not grow. The detector
remembers ``p_min`` and ``s_min`` where ``p + s`` was lowest, warns when
``p + s > p_min + warning_threshold * s_min`` and fires when
``p + s > p_min + drift_threshold * s_min``; after a firing it starts afresh with the next value.

Same parameters, defaults, update order and firing rule as river's ``drift.binary.DDM`` (the
reference the tests compare against on seeded streams); the state is plain numbers (a count, a
running mean and the minimum's two terms) instead of river's ``stats.Mean``. River quirks kept
on purpose, since each can move a firing:

* the error rate is a running mean updated as ``mean += (1 / n) * (x - mean)``, like river's
  ``stats.Mean``, not ``errors / n`` (the two differ in the last bits, and the comparisons
  below have ties);
* the minimum is neither recorded nor tested during the first ``warm_start`` values, and once
  past them ``p + s <= p_min + s_min`` (ties included) replaces it before the tests run on the
  same value;
* a firing clears the warning; the warning is otherwise re-decided on every value past
  ``warm_start``.

Input must be 0/1 (a value outside [0, 1] makes the standard deviation undefined, as in river).
"""

from __future__ import annotations

import math
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

__all__ = ["DDM"]

SNAPSHOT_VERSION = 1


class DDM(ValueDetector):
    """Drift Detection Method for a 0/1 error stream (1 = error).

    Parameters
    ----------
    warm_start
        Values seen (since the start or the last firing) before the minimum is recorded and the
        test may fire: the test runs from value ``warm_start + 1`` on.
    warning_threshold
        Multiple of ``s_min`` above ``p_min`` past which ``p + s`` is in the warning zone.
    drift_threshold
        Multiple of ``s_min`` above ``p_min`` past which ``p + s`` fires.

    Attributes
    ----------
    drift_detected : bool
        Whether the last value fed fired.
    warning_detected : bool
        Whether the last value fed left the detector in the warning zone (as river's).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.3]).astype(float)
    >>> DDM().update_many(errors)
    [2226]

    The same stream cut into batches fires at the same positions:

    >>> ddm = DDM()
    >>> [i + 700 * k for k in range(6) for i in ddm.update_many(errors[700 * k : 700 * (k + 1)])]
    [2226]
    """

    PARAMS = ("warm_start", "warning_threshold", "drift_threshold")

    def __init__(
        self,
        warm_start: int = 30,
        warning_threshold: float = 2.0,
        drift_threshold: float = 3.0,
    ) -> None:
        self.warm_start = int(warm_start)
        self.warning_threshold = float(warning_threshold)
        self.drift_threshold = float(drift_threshold)
        self.drift_detected = False
        self.warning_detected = False
        self._reset()

    def _reset(self) -> None:
        self.warning_detected = False
        self._n = 0
        self._mean = 0.0
        # Where p + s was lowest; meaningless while _ps_min is infinite (nothing recorded yet).
        self._p_min = 0.0
        self._s_min = 0.0
        self._ps_min = math.inf

    def _first_firing_by_value(self, x: Sequence[float]) -> int:
        """Feed ``x`` value by value; stop at the first firing (-1: none)."""
        n, mean = self._n, self._mean
        p_min, s_min, ps_min = self._p_min, self._s_min, self._ps_min
        warm, warn_k, drift_k = self.warm_start, self.warning_threshold, self.drift_threshold
        warning = self.warning_detected
        at = -1
        for i, v in enumerate(x):
            n += 1
            mean += (1.0 / n) * (v - mean)
            if n <= warm:
                continue
            s = math.sqrt(mean * (1.0 - mean) / n)
            ps = mean + s
            if ps <= ps_min:
                p_min, s_min = mean, s
                ps_min = p_min + s_min
            if ps > p_min + drift_k * s_min:
                warning = False
                at = i
                break
            warning = ps > p_min + warn_k * s_min
        self._n, self._mean = n, mean
        self._p_min, self._s_min, self._ps_min = p_min, s_min, ps_min
        self.warning_detected = warning
        return at

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state.

        ``p_min`` and ``s_min`` are None until the first minimum is recorded (during the first
        ``warm_start`` values after the start or a firing).
        """
        recorded = not math.isinf(self._ps_min)
        return {
            "v": SNAPSHOT_VERSION,
            "params": self.params,
            "drift_detected": self.drift_detected,
            "warning_detected": self.warning_detected,
            "n": self._n,
            "mean": self._mean,
            "p_min": self._p_min if recorded else None,
            "s_min": self._s_min if recorded else None,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> DDM:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version, a
        missing or unknown field, or a field of the wrong type."""
        snap = validated(_Snapshot, d, "DDM")
        det = cls(**snap.params.model_dump())
        det.drift_detected = snap.drift_detected
        det.warning_detected = snap.warning_detected
        det._n = snap.n
        det._mean = snap.mean
        if snap.p_min is not None and snap.s_min is not None:
            det._p_min, det._s_min = snap.p_min, snap.s_min
            det._ps_min = det._p_min + det._s_min
        return det


class _Params(StrictState):
    warm_start: int
    warning_threshold: float
    drift_threshold: float


class _Snapshot(VersionedState):
    params: _Params
    drift_detected: bool
    warning_detected: bool
    n: int = Field(ge=0)
    mean: float
    p_min: float | None
    s_min: float | None

    @model_validator(mode="after")
    def _minimum_whole(self) -> _Snapshot:
        if (self.p_min is None) != (self.s_min is None):
            raise ValueError("p_min and s_min must both be numbers or both be None")
        return self
