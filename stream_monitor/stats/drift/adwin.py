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
#: Cut slots evaluated in one array operation, about: bounds a pass's temporary memory (each
#: array over the slots is 512 KiB; a batch of 1,000 values of 21 streams is one pass).
_SLOTS_PER_PASS = 65536


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
        # The bound is sqrt(m_recip * var2 * delta_prime) + linear * m_recip, to the bit what
        # sqrt(2 * m_recip * var * delta_prime) + 2 / 3 * delta_prime * m_recip gives; a cut
        # whose means differ by no more than its second term cannot fire (most cannot).
        var2 = 2.0 * (self._variance / n)
        linear = 2.0 / 3.0 * delta_prime
        n0, u0 = 0, 0.0
        for size, t in zip(sizes[:-1], totals[:-1], strict=True):
            n0 += size
            u0 += t
            n1 = n - n0
            if n0 < mwl or n1 < mwl:
                continue
            m_recip = 1.0 / (n0 - mwl + 1) + 1.0 / (n1 - mwl + 1)
            diff = abs(u0 / n0 - (total - u0) / n1)
            if diff > linear * m_recip and diff > (
                math.sqrt(m_recip * var2 * delta_prime) + linear * m_recip
            ):
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
    zero-padded ``x``, and ``s1``, ``s2`` the running sums of those values minus the stream's
    shift, and of their squares."""

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
        out = [-1] * len(self.dets)
        ends, t_stream = self._tests()
        if not len(ends):
            return out
        # A slot per level and bucket of every test: a pass's temporaries stay bounded.
        per_pass = max(1, _SLOTS_PER_PASS // (self.max_buckets * self.old_rows.shape[1]))
        for lo in range(0, len(ends), per_pass):
            sl = slice(lo, lo + per_pass)
            for s, end in self._test(ends[sl], t_stream[sl]):
                if out[s] < 0:
                    out[s] = end - int(self.n_old[s]) - 1
        return out

    def _tests(self) -> tuple[np.ndarray, np.ndarray]:
        """Every test of the batch as (window length, stream), stream after stream; and the
        sum of the window's values before each cut a test may make, in a table (``before``)
        with what finds a cut's row in it (``old_rows``, ``new_rows``, see :meth:`_sums`).

        A cut in the batch (after the old window's ``n`` values) reads the old window's total
        plus the batch's prefix sum: row ``new_rows[s] + cut`` of the batch's part. A cut in
        the old window is a stored boundary, and the stored totals' running sum up to it is
        found by a search (the windows laid end to end, as the stored buckets): as a test's
        cut at level ``j`` is ``a << j`` (see :func:`_cut_slots`), the few ``a`` a stream's
        tests can make at each level are searched once, row ``old_rows[s, j] + a``."""
        n_old, clock, s_count = self.n_old, self.clock, len(self.dets)
        first = np.maximum(n_old + 1, self.grace + 1)
        first += (-first) % clock  # the next multiple of the clock
        n_tests = np.maximum(0, (n_old + self.lengths - first) // clock + 1)
        t_stream = np.repeat(np.arange(s_count), n_tests)
        t_first = np.cumsum(n_tests) - n_tests
        ends = first[t_stream] + clock * (np.arange(len(t_stream)) - t_first[t_stream])
        if not len(ends):
            return ends, t_stream
        # The bucket numbers ``a`` of each stream and level, top level first (the positions
        # searched then rise), from the first test's lowest to the last test's highest.
        levels = int(_top_level(ends.max(keepdims=True), self.max_buckets)[0]) + 1
        j = np.arange(levels)[::-1]
        c = self.max_buckets - 1
        lo = np.maximum(((first[:, None] + c) >> j) - c - self.max_buckets, 0)
        last = first + clock * (n_tests - 1)
        hi = np.minimum(((last[:, None] + c) >> j) - c, (n_old[:, None] >> j) + 1)
        count = np.maximum(hi - lo, 0) * (n_tests > 0)[:, None]
        start = np.cumsum(count) - count.ravel()
        cell = np.repeat(np.arange(count.size), count.ravel())
        a = lo.ravel()[cell] + np.arange(len(cell)) - start[cell]
        stream = cell // levels
        pos_lo = np.cumsum(n_old) - n_old
        at = np.searchsorted(np.cumsum(self.sizes), pos_lo[stream] + a * (1 << j[cell % levels]))
        cum_totals = np.concatenate([[0], np.cumsum(self.totals)])
        width = self.x.shape[1]
        self.before = np.empty(s_count * width + len(cell))
        self.before[s_count * width :] = (
            cum_totals.take(at + 1, mode="clip") - cum_totals[self.b_lo[stream]]
        )
        batch = self.before[: s_count * width].reshape(s_count, width)
        np.add(self.s1, self.total[:, None], out=batch)
        batch += np.arange(1.0, width + 1) * self.shift[:, None]
        self.old_rows = (s_count * width + start.reshape(count.shape) - lo)[:, ::-1]
        self.new_rows = width * np.arange(s_count) - n_old - 1
        return ends, t_stream

    def _sums(self, t_stream: np.ndarray, arrived: np.ndarray, cuts: np.ndarray) -> np.ndarray:
        """The sum of the window's values before each cut of :func:`_cut_slots`'s slots (any
        number for a slot that is no cut), read in the table of :meth:`_tests`."""
        k = np.arange(1, self.max_buckets + 1)[:, None]
        old_rows = self.old_rows[t_stream, : len(arrived)].T + arrived
        in_old = cuts <= self.n_old[t_stream]
        rows = np.where(in_old, old_rows[:, None, :] - k, cuts + self.new_rows[t_stream])
        return self.before.take(rows, mode="clip")

    def _test(self, ends: np.ndarray, t_stream: np.ndarray) -> list[tuple[int, int]]:
        """Evaluate the tests at window lengths ``ends`` of streams ``t_stream``; return
        (stream, end) of the first test of each stream that finds a cut.

        The arrays over the cuts have a column per test and a row per cut slot (see
        :func:`_cut_slots`); a slot that is no cut computes nonsense, which ``valid`` drops."""
        mwl = self.mwl
        arrived, cuts, valid = _cut_slots(ends, self.max_buckets, mwl)
        before = self._sums(t_stream, arrived, cuts)
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
        # The bound's confidence term and twice the window variance, per test
        # (m_recip * (2 * var) is 2 * m_recip * var to the bit).
        delta_prime = np.log(2.0 * np.log(ends.astype(np.float64)) / self.delta)
        var2 = 2.0 * (m2 / ends)
        n0 = cuts.astype(np.float64)
        n1 = ends - n0
        with np.errstate(all="ignore"):
            m_recip = 1.0 / (n0 - (mwl - 1)) + 1.0 / (n1 - (mwl - 1))
            eps = np.sqrt(m_recip * var2 * delta_prime)
            eps += 2.0 / 3.0 * delta_prime * m_recip
            diff = np.abs(before / n0 - (total - before) / n1)
        hit = ((diff > eps) & valid).any(axis=(0, 1))
        if not hit.any():
            return []
        hit_tests = np.flatnonzero(hit)  # in order
        s_hit = t_stream[hit_tests]
        _, first = np.unique(s_hit, return_index=True)
        return list(zip(s_hit[first].tolist(), ends[hit_tests[first]].tolist(), strict=True))

    def absorb(self, hits: list[int]) -> None:
        """Merge each stream's values (up to its firing, if it fired) into its histogram."""
        take = [len(x) if at < 0 else at + 1 for x, at in zip(self.xs, hits, strict=True)]
        n_new = self.n_old + take  # a firing keeps the window as it was then (reset after)
        s_count = len(self.dets)
        # Atoms: each stream's stored buckets, then its new values, stream after stream (every
        # new bucket is a run of atoms of its own stream).
        parts = zip(self.dets, self.xs, take, strict=True)
        a_total = np.concatenate([part for d, x, k in parts for part in (d._totals, x[:k])])
        held = np.diff(self.b_lo)  # stored buckets per stream
        a_lo = np.cumsum(held + take) - (held + take)  # each stream's first atom
        old_stream = np.repeat(np.arange(s_count), held)
        old_at = a_lo[old_stream] + np.arange(len(self.sizes)) - self.b_lo[old_stream]
        # The new buckets, oldest level first in each stream.
        counts = _level_counts(n_new, self.max_buckets)[:, ::-1]
        levels = counts.shape[1]
        sizes_by_level = np.left_shift(1, np.arange(levels - 1, -1, -1)).astype(np.int64)
        per_stream = counts.sum(axis=1)
        sizes = np.repeat(np.tile(sizes_by_level, s_count), counts.ravel())
        b_stream = np.repeat(np.arange(s_count), per_stream)
        # Each starts at an atom's start: a new value's, or a stored bucket's (found by a
        # search over the stored buckets' starts, the windows laid end to end).
        start = np.cumsum(sizes) - sizes - (np.cumsum(n_new) - n_new)[b_stream]
        n_old = self.n_old[b_stream]
        idx = a_lo[b_stream] + held[b_stream] + start - n_old
        old = start < n_old
        if old.any():
            old_starts = np.cumsum(self.sizes) - self.sizes
            wanted = (np.cumsum(self.n_old) - self.n_old)[b_stream[old]] + start[old]
            found = np.searchsorted(old_starts, wanted)
            if not np.array_equal(old_starts.take(found, mode="clip"), wanted):
                raise AssertionError("ADWIN buckets do not align with the stored ones")
            idx[old] = old_at[found]
        totals = np.add.reduceat(a_total, idx)
        means = totals / sizes
        # Each atom's squared deviations from its bucket's mean: a new value's (x - mean)**2
        # (its own are 0), a stored bucket's its own plus size * (its mean - mean)**2.
        a_means = np.repeat(means, np.diff(np.append(idx, len(a_total))))
        terms = (a_total - a_means) ** 2
        terms[old_at] = self.m2s + self.sizes * (self.totals / self.sizes - a_means[old_at]) ** 2
        m2s = np.add.reduceat(terms, idx)
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
    size, end = 1, len(sizes)  # the level's bucket size, and where its run ends
    while True:
        j = end
        while j > 0 and sizes[j - 1] == size:
            j -= 1
        if end - j <= max_buckets:
            return
        # Merge the oldest of this level (j) with the next oldest (j + 1).
        n = float(size)
        mean_a, mean_b = totals[j] / n, totals[j + 1] / n
        m2 = m2s[j] + m2s[j + 1] + n * 0.5 * (mean_a - mean_b) ** 2
        sizes[j : j + 2] = [2 * size]
        totals[j : j + 2] = [totals[j] + totals[j + 1]]
        m2s[j : j + 2] = [m2]
        size, end = 2 * size, j + 1


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


def _top_level(n: np.ndarray, max_buckets: int) -> np.ndarray:
    """The highest level holding buckets after ``n`` values, for each ``n`` (see
    :func:`_cut_slots`)."""
    q = (n + max_buckets - 1) // (2 * max_buckets)
    return np.frexp(q.astype(np.float64))[1]  # bit_length, exact below 2**53


def _cut_slots(
    ends: np.ndarray, max_buckets: int, min_window_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cut each test evaluates, in slots ``[level, k, test]``: the values before the
    level's ``k``-th newest bucket (``k`` from 1), and which slots are cuts (a test at ``n``
    values cuts before every bucket but the oldest, where both sides hold at least
    ``min_window_length`` values); also ``arrived[level, test]``, the buckets the level has
    received.

    With ``c = max_buckets - 1`` and ``q = n + c`` (see :func:`_level_counts`), level ``i``
    has received ``(q >> i) - c`` buckets while every level below overflowed: the levels below
    ``top = (q // (2 * max_buckets)).bit_length()`` did, and hold ``c`` buckets plus bit ``i``
    of ``q``; level ``top`` holds all it received, the levels above none. As a merge takes a
    level's oldest pair, the ``a``-th bucket level ``i`` receives holds the values from
    ``(a - 1) << i`` to ``a << i``: the cut before its ``k``-th newest is ``(arrived - k) << i``.

    >>> arrived, cuts, valid = _cut_slots(np.array([20]), 5, 1)
    >>> sorted(cuts[valid].tolist()) == np.cumsum(_bucket_sizes(20, 5))[:-1].tolist()
    True
    """
    c = max_buckets - 1
    q = ends + c
    top = _top_level(ends, max_buckets)
    levels = np.arange(int(top.max()) + 1)[:, None]
    arrived = (q >> levels) - c
    counts = np.where(levels < top, c + ((q >> levels) & 1), arrived)
    counts *= levels <= top
    k = np.arange(1, max_buckets + 1)[:, None]
    cuts = (arrived[:, None, :] - k) * np.left_shift(1, levels)[:, :, None]
    valid = k <= counts[:, None, :]
    valid &= cuts >= min_window_length
    valid &= cuts <= ends - min_window_length
    return arrived, cuts, valid
