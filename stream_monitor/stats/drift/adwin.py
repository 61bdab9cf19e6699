"""ADWIN (Bifet & Gavaldà, SDM 2007), a batch at a time.

ADWIN keeps its window as an exponential histogram: level ``i`` holds at most ``max_buckets``
buckets of ``2**i`` values, higher levels older. Every ``clock`` values it tests each bucket
boundary as a cut between an older and a newer sub-window and fires when their means differ by
more than a Hoeffding-style bound. Two facts make a batch cheap:

* between firings the window only grows (a firing ends it: the detector then starts afresh, as
  river's ``drift.ADWIN`` does), so at every test the window is exactly the values since the
  start or the last firing, and
* how many buckets each level holds depends only on how many values went in, not on what they
  were (a carry chain: a level that reaches ``max_buckets + 1`` merges its two oldest).

So the cut points of every test in a batch follow from counts alone, each cut's sums are prefix
sums (over the stored buckets for the old part, over the batch for the new part), and all the
tests of a batch are one array computation. The stored state stays river's bounded histogram:
``O(max_buckets * log(n))`` buckets of (size, total, variance).

Same parameters, defaults, cut rule and firing positions as river's ``drift.ADWIN``, which the
tests run side by side on seeded streams; sums are added in another order, so a cut that sits
exactly on the bound (to the last bits of a double) could go either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.stats.drift.base import DetectorBase, feed_streams, padded

__all__ = ["ADWIN", "update_all"]

SNAPSHOT_VERSION = 1
#: Tests evaluated in one array operation, to bound temporary memory on huge batches.
_TESTS_PER_PASS = 512


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
        """Feed ``x`` value by value (short batches); stop at the first firing (-1: none)."""
        sizes, totals, m2s = self._sizes.tolist(), self._totals.tolist(), self._m2s.tolist()
        m = self.max_buckets
        hit = -1
        for i, v in enumerate(x):
            # Welford's update of the window's sum of squared deviations.
            if self._n:
                d = v - self._total / self._n
                self._variance += self._n * d * d / (self._n + 1)
            self._n += 1
            self._total += v
            sizes.append(1)
            totals.append(v)
            m2s.append(0.0)
            _carry(sizes, totals, m2s, m)
            if (
                self._n % self.clock == 0
                and self._n > self.grace_period
                and self._cut(sizes, totals)
            ):
                hit = i
                break
        self._sizes = np.array(sizes, dtype=np.int64)
        self._totals, self._m2s = np.array(totals), np.array(m2s)
        return hit

    def _cut(self, sizes: list[int], totals: list[float]) -> bool:
        """The test on Python lists: does any bucket boundary split the window in two whose
        means differ by more than the bound?"""
        n, total, mwl = self._n, self._total, self.min_window_length
        delta_prime = math.log(2.0 * math.log(n) / self.delta)
        var = self._variance / n
        n0, u0 = 0, 0.0
        for size, t in zip(sizes[:-1], totals[:-1], strict=True):
            n0 += size
            u0 += t
            n1 = n - n0
            if n0 < mwl or n1 < mwl:
                continue
            m_recip = 1.0 / (n0 - mwl + 1) + 1.0 / (n1 - mwl + 1)
            eps = math.sqrt(2.0 * m_recip * var * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
            if abs(u0 / n0 - (total - u0) / n1) > eps:
                return True
        return False

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
    group = _Group(dets, xs)
    found = group.first_cuts()
    group.absorb(found)
    return found


class _Group:
    """Detectors with equal parameters and a batch each, as flat arrays: stream ``s``'s stored
    buckets are ``sizes[b_lo[s]:b_lo[s+1]]`` (oldest first), its new values the row ``s`` of the
    zero-padded ``y`` (each value minus the stream's shift).

    Positions are global: the streams' windows laid end to end, stream after stream, so that
    stream ``s``'s window starts at ``pos_lo[s]`` and a stored boundary is found by one search
    over the running sum of every stored bucket size."""

    def __init__(self, dets: list[ADWIN], xs: list[np.ndarray]) -> None:
        self.dets, self.xs = dets, xs
        p = dets[0]
        self.clock, self.max_buckets = p.clock, p.max_buckets
        self.mwl, self.grace, self.delta = p.min_window_length, p.grace_period, p.delta
        state = np.array([(d._n, d._total, d._variance) for d in dets])
        self.n_old = state[:, 0].astype(np.int64)
        self.total, self.m2 = state[:, 1], state[:, 2]
        self.lengths = np.array([len(x) for x in xs], dtype=np.int64)
        self.x = padded(xs, int(self.lengths.max()))
        # Prefix sums are taken relative to the window mean (or the first value), so squared
        # deviations keep their precision whatever the offset of the stream.
        self.shift = np.where(self.n_old > 0, self.total / np.maximum(self.n_old, 1), self.x[:, 0])
        y = self.x - self.shift[:, None]
        self.s1 = np.cumsum(y, axis=1)
        self.s2 = np.cumsum(y * y, axis=1)
        self.b_lo = np.zeros(len(dets) + 1, dtype=np.int64)
        np.cumsum([len(d._sizes) for d in dets], out=self.b_lo[1:])
        self.sizes = np.concatenate([d._sizes for d in dets])
        self.totals = np.concatenate([d._totals for d in dets])
        self.m2s = np.concatenate([d._m2s for d in dets])

    def first_cuts(self) -> list[int]:
        """Per stream, the index of the first value whose test finds a cut (-1: none)."""
        n_old, clock = self.n_old, self.clock
        first = np.maximum(n_old + 1, self.grace + 1)
        first += (-first) % clock  # the next multiple of the clock
        n_tests = np.maximum(0, (n_old + self.lengths - first) // clock + 1)
        out = [-1] * len(self.dets)
        if not n_tests.any():
            return out
        # Stored boundaries as global positions, and the running sum of the stored totals.
        self.b_ends = np.cumsum(self.sizes)
        self.pos_lo = np.cumsum(self.n_old) - self.n_old
        self.cum_totals = np.concatenate([[0], np.cumsum(self.totals)])
        t_stream = np.repeat(np.arange(len(self.dets)), n_tests)
        t_first = np.cumsum(n_tests) - n_tests
        ends = first[t_stream] + clock * (np.arange(len(t_stream)) - t_first[t_stream])
        for lo in range(0, len(ends), _TESTS_PER_PASS):
            sl = slice(lo, lo + _TESTS_PER_PASS)
            for s, end in self._test(ends[sl], t_stream[sl]):
                if out[s] < 0:
                    out[s] = end - int(n_old[s]) - 1
        return out

    def _test(self, ends: np.ndarray, t_stream: np.ndarray) -> list[tuple[int, int]]:
        """Evaluate the tests at window lengths ``ends`` of streams ``t_stream``; return
        (stream, end) of the first test of each stream that finds a cut."""
        mwl = self.mwl
        rows, cuts = _cut_points(ends, self.max_buckets, mwl)
        if not len(cuts):
            return []
        stream = t_stream[rows]
        n_old = self.n_old[stream]
        # Sum of the values before each cut: stored buckets for the old part (every old cut
        # is a stored boundary), the batch's prefix sums for the new part.
        before = np.empty(len(cuts))
        old = cuts <= n_old
        if old.any():
            so = stream[old]
            where = np.searchsorted(self.b_ends, self.pos_lo[so] + cuts[old])
            before[old] = self.cum_totals[where + 1] - self.cum_totals[self.b_lo[so]]
        new = ~old
        k = cuts[new] - n_old[new] - 1
        sn = stream[new]
        before[new] = self.total[sn] + self.s1[sn, k] + (k + 1) * self.shift[sn]
        # Window sum and squared deviations at each test: the old window merged with a prefix
        # of the batch (Chan et al.'s pairwise update; the old mean is the shift when n > 0).
        t_n_old = self.n_old[t_stream]
        t = ends - t_n_old
        s1 = self.s1[t_stream, t - 1]
        s2 = self.s2[t_stream, t - 1]
        new_mean = s1 / t
        new_m2 = np.maximum(s2 - t * new_mean * new_mean, 0.0)
        m2 = self.m2[t_stream] + new_m2 + t_n_old * t / (t_n_old + t) * new_mean**2
        total = self.total[t_stream] + s1 + t * self.shift[t_stream]
        cut = cuts.astype(np.float64)
        n_after = (ends[rows] - cuts).astype(np.float64)
        # Per test, then per cut: the bound's confidence term and the window variance.
        delta_prime = np.log(2.0 * np.log(ends.astype(np.float64)) / self.delta)[rows]
        m_recip = 1.0 / (cut - mwl + 1.0) + 1.0 / (n_after - mwl + 1.0)
        var = (m2 / ends)[rows]
        eps = np.sqrt(2.0 * m_recip * var * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
        diff = np.abs(before / cut - (total[rows] - before) / n_after)
        hit = diff > eps
        if not hit.any():
            return []
        hit_rows = np.unique(rows[hit])  # tests with a cut, in order
        s_hit = t_stream[hit_rows]
        _, first = np.unique(s_hit, return_index=True)
        return list(zip(s_hit[first].tolist(), ends[hit_rows[first]].tolist(), strict=True))

    def absorb(self, hits: list[int]) -> None:
        """Merge each stream's values (up to its firing, if it fired) into its histogram."""
        take = [len(x) if at < 0 else at + 1 for x, at in zip(self.xs, hits, strict=True)]
        n_new = self.n_old + take  # a firing keeps the window as it was then (reset after)
        s_count = len(self.dets)
        # Atoms: each stream's stored buckets, then its new values, stream after stream (every
        # new bucket is a run of atoms of its own stream).
        ones = np.ones(max(take), dtype=np.int64)
        zeros = np.zeros(max(take))
        size_parts: list[np.ndarray] = []
        total_parts: list[np.ndarray] = []
        m2_parts: list[np.ndarray] = []
        for d, x, k in zip(self.dets, self.xs, take, strict=True):
            size_parts += (d._sizes, ones[:k])
            total_parts += (d._totals, x[:k])
            m2_parts += (d._m2s, zeros[:k])
        a_size = np.concatenate(size_parts)
        a_total = np.concatenate(total_parts)
        a_m2 = np.concatenate(m2_parts)
        # The new buckets, oldest level first in each stream; every one starts at an atom's
        # start (global positions: the windows end to end).
        counts = _level_counts(n_new, self.max_buckets)[:, ::-1]
        levels = counts.shape[1]
        sizes_by_level = np.left_shift(1, np.arange(levels - 1, -1, -1)).astype(np.int64)
        per_stream = counts.sum(axis=1)
        sizes = np.repeat(np.tile(sizes_by_level, s_count), counts.ravel())
        b_stream = np.repeat(np.arange(s_count), per_stream)
        a_start = np.cumsum(a_size) - a_size
        b_start = np.cumsum(sizes) - sizes
        idx = np.searchsorted(a_start, b_start)
        if not np.array_equal(a_start[np.minimum(idx, len(a_start) - 1)], b_start):
            raise AssertionError("ADWIN buckets do not align with the stored ones")
        totals = np.add.reduceat(a_total, idx)
        means = totals / sizes
        owner = np.repeat(np.arange(len(idx)), np.diff(np.append(idx, len(a_size))))
        a_mean = a_total / a_size
        m2s = np.add.reduceat(a_m2 + a_size * (a_mean - means[owner]) ** 2, idx)
        s_total = np.bincount(b_stream, weights=totals, minlength=s_count)
        s_mean = s_total / n_new
        s_m2 = np.bincount(
            b_stream, weights=m2s + sizes * (means - s_mean[b_stream]) ** 2, minlength=s_count
        )
        b_lo = [0, *np.cumsum(per_stream).tolist()]
        for s, (det, n, total, m2) in enumerate(
            zip(self.dets, n_new.tolist(), s_total.tolist(), s_m2.tolist(), strict=True)
        ):
            lo, hi = b_lo[s], b_lo[s + 1]
            det._n, det._total, det._variance = n, total, m2
            det._sizes, det._totals, det._m2s = sizes[lo:hi], totals[lo:hi], m2s[lo:hi]


def _carry(sizes: list[int], totals: list[float], m2s: list[float], max_buckets: int) -> None:
    """After a value was appended: while a level holds ``max_buckets + 1`` buckets, merge its
    two oldest into one of the next level (the lists are oldest first, so a level's buckets are
    a run, and the merged bucket ends the next level's run where the pair stood)."""
    size = 1
    while True:
        run = [i for i in range(len(sizes) - 1, -1, -1) if sizes[i] == size]
        if len(run) <= max_buckets:
            return
        j = run[-1]  # the oldest of this level; j + 1 is the next oldest
        n = float(size)
        mean_a, mean_b = totals[j] / n, totals[j + 1] / n
        m2 = m2s[j] + m2s[j + 1] + n * 0.5 * (mean_a - mean_b) ** 2
        sizes[j : j + 2] = [2 * size]
        totals[j : j + 2] = [totals[j] + totals[j + 1]]
        m2s[j : j + 2] = [m2]
        size *= 2


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


def _cut_points(
    ends: np.ndarray, max_buckets: int, min_window_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every cut each test evaluates: (row into ``ends``, values before the cut), in scan
    order (oldest first within a row). A test at ``n`` values cuts after every bucket but the
    newest, where both sides hold at least ``min_window_length`` values."""
    counts = _level_counts(ends, max_buckets)[:, ::-1]  # oldest level first
    levels = counts.shape[1]
    sizes = np.left_shift(1, np.arange(levels - 1, -1, -1)).astype(np.int64)
    per_row = counts.sum(axis=1)
    rows = np.repeat(np.arange(len(ends)), per_row)
    bucket_sizes = np.repeat(np.tile(sizes, len(ends)), counts.ravel())
    cum = np.cumsum(bucket_sizes)
    row_start = np.cumsum(ends) - ends
    cuts = cum - row_start[rows]
    keep = (cuts >= min_window_length) & (ends[rows] - cuts >= min_window_length)
    return rows[keep], cuts[keep]
