"""ADWIN (Bifet & Gavaldà, SDM 2007), a batch at a time.

ADWIN keeps its window as an exponential histogram: level ``i`` holds at most ``max_buckets``
buckets of ``2**i`` values, higher levels older. Every ``clock`` values it tests each bucket
boundary as a cut between an older and a newer sub-window and fires when their means differ by
more than a Hoeffding-style bound. The value-by-value loop runs compiled (see
:mod:`._kernels`), every stream of a call in one compiled call; the stored state is river's
bounded histogram: ``O(max_buckets * log(n))`` buckets of (size, total, variance).

Same parameters, defaults, cut rule and firing positions as river's ``drift.ADWIN``, which the
tests run side by side on seeded streams; the window's total and squared deviations are added
up value by value as river does (equal to the bit), so the state does not depend on how a
stream is cut into batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.stats.drift import _kernels
from stream_monitor.stats.drift.base import DetectorBase, feed_streams

__all__ = ["ADWIN", "update_all"]

SNAPSHOT_VERSION = 1


class ADWIN(DetectorBase):
    """Adaptive windowing change detector fed with arrays.

    Parameters
    ----------
    delta
        Confidence of the cut test (smaller: fewer, later firings).
    clock
        Test for a cut every ``clock`` values.
    max_buckets
        Buckets per level of the exponential histogram before two are merged.
    min_window_length
        Smallest sub-window on either side of a cut.
    grace_period
        Values before the first test.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> det = ADWIN()
    >>> x = np.concatenate([rng.normal(0, 1, 1000), rng.normal(1.5, 1, 1000)])
    >>> fired = det.update_many(x)
    >>> 1000 <= fired[0] < 1100
    True
    """

    PARAMS = ("delta", "clock", "max_buckets", "min_window_length", "grace_period")

    @staticmethod
    def _array_pass(dets: list[Any], xs: list[np.ndarray]) -> list[int]:
        return _array_pass(dets, xs)

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if clock < 1 or max_buckets < 2 or min_window_length < 1:
            raise ValueError("clock and min_window_length must be >= 1, max_buckets >= 2")
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self._keep_params_key()
        self.drift_detected = False
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # values in the window (= values since the start or the last firing)
        self._total = 0.0
        self._variance = 0.0  # sum of squared deviations from the window mean
        # The buckets, oldest first: how many values, their sum, their squared deviations.
        self._sizes = np.zeros(0, dtype=np.int64)
        self._totals = np.zeros(0)
        self._m2s = np.zeros(0)

    @property
    def width(self) -> int:
        """Values in the current window."""
        return self._n

    @property
    def estimation(self) -> float:
        """Mean of the current window (0 when empty)."""
        return self._total / self._n if self._n else 0.0

    def _first_firing_by_value(self, x: Sequence[float]) -> int:
        """Feed ``x`` (a few values) one stream's worth of the compiled loop; stop at the first
        firing (-1: none)."""
        hit, self._n, self._total, self._variance, self._sizes, self._totals, self._m2s = (
            _kernels.adwin_one(
                np.asarray(x, dtype=np.float64),
                self._sizes,
                self._totals,
                self._m2s,
                self._n,
                self._total,
                self._variance,
                self._kernel_params(),
            )
        )
        return int(hit)

    def _kernel_params(self) -> tuple[float, int, int, int, int]:
        """The parameters as the kernels take them."""
        return self.delta, self.clock, self.max_buckets, self.min_window_length, self.grace_period

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state."""
        return {
            "v": SNAPSHOT_VERSION,
            "params": self.params,
            "drift_detected": self.drift_detected,
            "n": self._n,
            "total": self._total,
            "variance": self._variance,
            "totals": self._totals.tolist(),
            "m2s": self._m2s.tolist(),
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> ADWIN:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version or a
        histogram that does not match its count."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported ADWIN snapshot version {d.get('v')!r}")
        det = cls(**d["params"])
        det.drift_detected = bool(d["drift_detected"])
        det._n = int(d["n"])
        det._total = float(d["total"])
        det._variance = float(d["variance"])
        det._sizes = _bucket_sizes(det._n, det.max_buckets)
        det._totals = np.asarray(d["totals"], dtype=np.float64)
        det._m2s = np.asarray(d["m2s"], dtype=np.float64)
        if not len(det._sizes) == len(det._totals) == len(det._m2s):
            raise ValueError("ADWIN snapshot: bucket sums do not match the window length")
        return det


def update_all(detectors: Sequence[ADWIN], batches: Sequence[np.ndarray]) -> list[list[int]]:
    """Feed ``batches[i]`` to ``detectors[i]`` for every ``i``, all streams in one pass when
    they share parameters; return each stream's firing indices (as :meth:`ADWIN.update_many`).
    """
    return feed_streams(detectors, batches, _array_pass)


def _array_pass(dets: list[ADWIN], xs: list[np.ndarray]) -> list[int]:
    """Advance every stream (equal parameters) up to its first firing in one compiled call;
    return that index per stream (-1: none)."""
    x_lo = _kernels.offsets([len(x) for x in xs])
    b_lo = _kernels.offsets([len(d._sizes) for d in dets])
    n = np.array([d._n for d in dets], dtype=np.int64)
    sums = np.array([(d._total, d._variance) for d in dets])
    hits, sizes, totals, m2s, out_lo = _kernels.adwin_pass(
        np.concatenate(xs),
        x_lo,
        n,
        sums,
        np.concatenate([d._sizes for d in dets]),
        np.concatenate([d._totals for d in dets]),
        np.concatenate([d._m2s for d in dets]),
        b_lo,
        dets[0]._kernel_params(),
    )
    lo = out_lo.tolist()
    for s, (det, k, (total, m2)) in enumerate(zip(dets, n.tolist(), sums.tolist(), strict=True)):
        det._n, det._total, det._variance = k, total, m2
        det._sizes, det._totals, det._m2s = (a[lo[s] : lo[s + 1]] for a in (sizes, totals, m2s))
    result: list[int] = hits.tolist()
    return result


def _level_counts(n: np.ndarray, max_buckets: int) -> np.ndarray:
    """Buckets per level after ``n`` values, one row per ``n``: level 0 takes every value, and a
    level that reaches ``max_buckets + 1`` merges its two oldest into one of the next level.

    With ``c = max_buckets - 1``, a level receiving ``a > max_buckets`` buckets passes
    ``(a - c) // 2`` on, so ``a + c`` halves from level to level: level ``i`` receives
    ``((n + c) >> i) - c`` while every level below it overflowed, and none after one did not.
    That number falls from level to level, so the levels that overflow are the lowest ones.

    >>> _level_counts(np.array([1, 6, 7, 20]), 5).tolist()
    [[1, 0, 0, 0, 0, 0], [4, 1, 0, 0, 0, 0], [5, 1, 0, 0, 0, 0], [4, 4, 2, 0, 0, 0]]
    """
    n = np.atleast_1d(np.asarray(n, dtype=np.int64))
    c = max_buckets - 1
    levels = max(1, int(n.max()).bit_length() + 1)
    arriving = ((n[:, None] + c) >> np.arange(levels)[None, :]) - c
    overflow = arriving[:, :-1] > max_buckets  # the last level never overflows
    counts = arriving.copy()
    counts[:, :-1] -= 2 * arriving[:, 1:] * overflow  # what an overflowing level passes on
    counts[:, 1:] *= overflow  # a level above one that did not overflow receives nothing
    return counts


def _bucket_sizes(n: int, max_buckets: int) -> np.ndarray:
    """Sizes of the buckets after ``n`` values, oldest first."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    counts = _level_counts(np.array([n]), max_buckets)[0]
    levels = np.arange(len(counts) - 1, -1, -1)
    return np.repeat(np.left_shift(1, levels), counts[::-1]).astype(np.int64)
