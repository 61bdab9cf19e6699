"""HDDM_W, McDiarmid's-bound drift detection with the weighted moving-average test, on values in
[0, 1].

Frías-Blanco, del Campo-Ávila, Ramos-Jiménez, Morales-Bueno, Ortiz-Díaz and Caballero-Mota,
"Online and Non-Parametric Drift Detection Methods Based on Hoeffding's Bounds", IEEE
Transactions on Knowledge and Data Engineering 27(3), 2014, pp. 810-823 (the "W-test").

Every estimate is an exponentially weighted moving average (EWMA, weight ``lambda_val`` on the
newest value) together with its *independent bound condition* (IBC), the sum of the squared
weights, which sets its McDiarmid bound ``sqrt(ibc * ln(1 / confidence) / 2)``. The detector
keeps the EWMA of every value since the start (or the last firing) and, for a rise, a *cut
point*: where that EWMA plus its bound was lowest, with a copy of the EWMA there ("before") and
a fresh EWMA of the values since ("after"). It fires when "after" exceeds "before" by more than
the bound of their summed IBCs; with ``two_sided_test`` a mirrored cut point (highest EWMA minus
bound) watches for a fall. After a firing it starts afresh with the next value. Input is a
stream of values in [0, 1]: 0/1 errors, or real values such as clipped losses (the bounds assume
that range; nothing checks it, as in river).

Same parameters, defaults, update order and firing rule as river's ``drift.binary.HDDMW`` (the
reference the tests compare against on seeded 0/1 and real-valued streams); the state is plain
numbers (five (EWMA, IBC, started) triples and two cut levels) instead of river's ``SampleInfo``
objects. River quirks kept on purpose, since each can move a firing:

* an EWMA takes its first value as it is (not ``lambda_val * x``) and from then on is
  ``lambda_val * x + (1 - lambda_val) * ewma`` in that order of operations, as river's
  ``stats.EWMean`` (Rust, with a "started" flag in river 0.26; the older ``watermill`` crate
  took a mean of exactly 0 as "not started", which differs on 0/1 streams); but its IBC starts
  at 1 and follows ``ibc = lambda_val**2 + (1 - lambda_val)**2 * ibc`` from the first value on;
* the value that moves a cut point is not fed to the fresh "after" EWMA (only later values are);
  a cut point moves on a strict improvement (``<`` for the rise, ``>`` for the fall), with the
  drift confidence, and the rise side is moved and tested before the fall side is moved;
* both tests fire on a strict ``>`` and only once both of their EWMAs have seen a value;
* the fall side is tracked even when ``two_sided_test`` is off (it only matters to the state,
  which stays river's);
* the warning is river's: a firing on the rise side clears it, but the fall side (two-sided
  only) may set it again on the same value.
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

__all__ = ["HDDMW"]

SNAPSHOT_VERSION = 1

#: One weighted estimate: (EWMA, independent bound condition, whether it has seen a value).
_Sample = tuple[float, float, bool]
_FRESH: _Sample = (0.0, 1.0, False)
#: The estimates of the state, by their snapshot names.
_SAMPLES = ("total", "rise_before", "rise_after", "fall_before", "fall_after")


class HDDMW(ValueDetector):
    """HDDM_W change detector for a stream of values in [0, 1] (1 = worst).

    Parameters
    ----------
    drift_confidence
        Confidence of the firing test (smaller: fewer, later firings); also the confidence of
        the cut-point bound.
    warning_confidence
        Confidence of the warning test (larger than ``drift_confidence``).
    lambda_val
        Weight of the newest value in every EWMA (larger: shorter memory).
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
    >>> HDDMW().update_many(errors)
    [2069]

    The same stream cut into batches fires at the same positions:

    >>> det = HDDMW()
    >>> [i + 700 * k for k in range(6) for i in det.update_many(errors[700 * k : 700 * (k + 1)])]
    [2069]

    Real values in [0, 1] work the same way, and the two-sided test also sees a fall:

    >>> loss = np.clip(np.concatenate([rng.normal(0.7, 0.1, 3000), rng.normal(0.1, 0.1, 3000)]),
    ...                0.0, 1.0)
    >>> HDDMW().update_many(loss), HDDMW(two_sided_test=True).update_many(loss)
    ([], [3021])
    """

    PARAMS = ("drift_confidence", "warning_confidence", "lambda_val", "two_sided_test")

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        lambda_val: float = 0.05,
        two_sided_test: bool = False,
    ) -> None:
        if not (0.0 < drift_confidence < 1.0 and 0.0 < warning_confidence < 1.0):
            raise ValueError("drift_confidence and warning_confidence must be in (0, 1)")
        if not 0.0 <= lambda_val <= 1.0:
            raise ValueError("lambda_val must be in [0, 1]")
        self.drift_confidence = float(drift_confidence)
        self.warning_confidence = float(warning_confidence)
        self.lambda_val = float(lambda_val)
        self.two_sided_test = bool(two_sided_test)
        # The constants river recomputes on every call (or keeps per estimate), once; the
        # expressions are river's, so the doubles are the same.
        self._keep = 1.0 - self.lambda_val
        self._lambda_sq = self.lambda_val * self.lambda_val
        self._keep_sq = (1 - self.lambda_val) ** 2
        self._log_drift = math.log(1 / self.drift_confidence)
        self._log_warning = math.log(1 / self.warning_confidence)
        self.drift_detected = False
        self.warning_detected = False
        self._reset()

    def _reset(self) -> None:
        self.warning_detected = False
        self._total: _Sample = _FRESH
        self._rise_before: _Sample = _FRESH
        self._rise_after: _Sample = _FRESH
        self._fall_before: _Sample = _FRESH
        self._fall_after: _Sample = _FRESH
        # Lowest EWMA + bound and highest EWMA - bound so far (infinite before the first value).
        self._rise_cut = math.inf
        self._fall_cut = -math.inf

    def _first_firing_by_value(self, x: Sequence[float]) -> int:
        """Feed ``x`` value by value; stop at the first firing (-1: none)."""
        if not len(x):
            return -1
        sqrt = math.sqrt
        lam, keep, lam_sq, keep_sq = self.lambda_val, self._keep, self._lambda_sq, self._keep_sq
        log_drift = self._log_drift
        two_sided = self.two_sided_test
        t_ewma, t_ibc, t_on = self._total
        rb_ewma, rb_ibc, rb_on = self._rise_before
        ra_ewma, ra_ibc, ra_on = self._rise_after
        fb_ewma, fb_ibc, fb_on = self._fall_before
        fa_ewma, fa_ibc, fa_on = self._fall_after
        rise_cut, fall_cut = self._rise_cut, self._fall_cut
        at = -1
        up = down = False  # stay False until the firing value: the loop ends there
        for i, v in enumerate(x):
            t_ewma = lam * v + keep * t_ewma if t_on else v
            t_on = True
            t_ibc = lam_sq + keep_sq * t_ibc
            eps = sqrt(t_ibc * log_drift / 2)
            # Rise side: move the cut point or feed the "after" estimate, then test.
            if t_ewma + eps < rise_cut:
                rise_cut = t_ewma + eps
                rb_ewma, rb_ibc, rb_on = t_ewma, t_ibc, t_on
                ra_ewma, ra_ibc, ra_on = _FRESH
            else:
                ra_ewma = lam * v + keep * ra_ewma if ra_on else v
                ra_on = True
                ra_ibc = lam_sq + keep_sq * ra_ibc
            if rb_on and ra_on:
                up = ra_ewma - rb_ewma > sqrt((rb_ibc + ra_ibc) * log_drift / 2)
            # Fall side, the same mirrored (the total's bound is unchanged since).
            if t_ewma - eps > fall_cut:
                fall_cut = t_ewma - eps
                fb_ewma, fb_ibc, fb_on = t_ewma, t_ibc, t_on
                fa_ewma, fa_ibc, fa_on = _FRESH
            else:
                fa_ewma = lam * v + keep * fa_ewma if fa_on else v
                fa_on = True
                fa_ibc = lam_sq + keep_sq * fa_ibc
            if two_sided and fa_on and fb_on:
                down = fb_ewma - fa_ewma > sqrt((fa_ibc + fb_ibc) * log_drift / 2)
            if up or down:
                at = i
                break
        self._total = (t_ewma, t_ibc, t_on)
        self._rise_before = (rb_ewma, rb_ibc, rb_on)
        self._rise_after = (ra_ewma, ra_ibc, ra_on)
        self._fall_before = (fb_ewma, fb_ibc, fb_on)
        self._fall_after = (fa_ewma, fa_ibc, fa_on)
        self._rise_cut, self._fall_cut = rise_cut, fall_cut
        # Only the last value's warning is visible, so it is decided once, on the final state.
        log_warning = self._log_warning
        warning = not up and _exceeds(self._rise_before, self._rise_after, log_warning)
        if two_sided and not down:
            warning = warning or _exceeds(self._fall_after, self._fall_before, log_warning)
        self.warning_detected = warning
        return at

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state.

        Each estimate is ``{"ewma", "ibc", "started"}``; the cut levels are None before the first
        value (where they are infinite).
        """
        samples = {
            name: {"ewma": s[0], "ibc": s[1], "started": s[2]}
            for name, s in zip(_SAMPLES, self._samples(), strict=True)
        }
        return {
            "v": SNAPSHOT_VERSION,
            "params": self.params,
            "drift_detected": self.drift_detected,
            "warning_detected": self.warning_detected,
            **samples,
            "rise_cut": None if math.isinf(self._rise_cut) else self._rise_cut,
            "fall_cut": None if math.isinf(self._fall_cut) else self._fall_cut,
        }

    def _samples(self) -> tuple[_Sample, ...]:
        return (
            self._total,
            self._rise_before,
            self._rise_after,
            self._fall_before,
            self._fall_after,
        )

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> HDDMW:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version, a
        missing or unknown field, a field of the wrong type or estimates that do not fit."""
        snap = validated(_Snapshot, d, "HDDM_W")
        det = cls(**snap.params.model_dump())
        det.drift_detected = snap.drift_detected
        det.warning_detected = snap.warning_detected
        det._total = snap.total.as_tuple()
        det._rise_before = snap.rise_before.as_tuple()
        det._rise_after = snap.rise_after.as_tuple()
        det._fall_before = snap.fall_before.as_tuple()
        det._fall_after = snap.fall_after.as_tuple()
        det._rise_cut = math.inf if snap.rise_cut is None else snap.rise_cut
        det._fall_cut = -math.inf if snap.fall_cut is None else snap.fall_cut
        return det


def _exceeds(before: _Sample, after: _Sample, log_conf: float) -> bool:
    """Whether ``after``'s EWMA exceeds ``before``'s by more than the bound of their IBCs."""
    if not (before[2] and after[2]):
        return False
    return after[0] - before[0] > math.sqrt((before[1] + after[1]) * log_conf / 2)


class _Params(StrictState):
    drift_confidence: float
    warning_confidence: float
    lambda_val: float
    two_sided_test: bool


class _SampleModel(StrictState):
    ewma: float
    ibc: float = Field(gt=0.0, le=1.0)
    started: bool

    @model_validator(mode="after")
    def _fresh_until_started(self) -> _SampleModel:
        if not self.started and (self.ewma, self.ibc) != _FRESH[:2]:
            raise ValueError("an estimate that has seen no value must have ewma 0 and ibc 1")
        return self

    def as_tuple(self) -> _Sample:
        return (self.ewma, self.ibc, self.started)


class _Snapshot(VersionedState):
    params: _Params
    drift_detected: bool
    warning_detected: bool
    total: _SampleModel
    rise_before: _SampleModel
    rise_after: _SampleModel
    fall_before: _SampleModel
    fall_after: _SampleModel
    rise_cut: float | None
    fall_cut: float | None

    @model_validator(mode="after")
    def _cuts_fit(self) -> _Snapshot:
        started = self.total.started
        if (self.rise_cut is None, self.fall_cut is None) != (not started, not started):
            raise ValueError("the cut levels must be None exactly when no value has been seen")
        if self.rise_before.started != started or self.fall_before.started != started:
            raise ValueError("the cut-point estimates start with the first value")
        return self
