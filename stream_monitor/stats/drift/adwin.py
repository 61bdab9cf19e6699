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

Streams holding as many values (the features of one model, until one fires) run the same tests
at the same cuts: those, and every term of the bound that depends on them only, are computed
once. Most cuts of a long window lie far before the batch; they are screened for all of the
batch's tests at once. With ``B`` the sum before a cut at ``c`` and ``mu`` the window mean at a
test of ``e`` values, the sub-windows' means differ by ``|B - c mu| e / (c (e - c))``: bounded
from above over the batch's tests, and the cut's bound from below, a cut that clears (by a
margin far above rounding) cannot fire in this batch. Only the cuts near the batch are then
tested one by one; a stream whose far cuts do not all clear has every cut tested. Either way,
the firings are those of testing every cut.

Same parameters, defaults, cut rule and firing positions as river's ``drift.ADWIN``, which the
tests run side by side on seeded streams; sums are added in another order, so a cut that sits
exactly on the bound (to the last bits of a double) could go either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from stream_monitor.stats.drift.base import DetectorBase, feed_streams

__all__ = ["ADWIN", "update_all"]

SNAPSHOT_VERSION = 1
#: Cuts (over all the streams' tests, padded) evaluated in one array operation, to bound
#: temporary memory on huge batches.
_CUTS_PER_PASS = 1 << 17
#: Cuts a batch's screen (see :meth:`_Group._screen`) must be able to spare to be tried.
_SCREEN_MIN = 2048
#: Largest table of columns by distance before the old count in :class:`_Cuts` (entries);
#: beyond it, or beyond 4 entries per slot, old cuts are ranked by a search instead.
_NEAR_TABLE = 1 << 18
#: Stream index times this plus a position: one sortable integer key per (stream, position).
_KEY = 1 << 40


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
    """Detectors with equal parameters and a batch each: stream ``s``'s stored buckets are
    ``sizes[b_lo[s]:b_lo[s+1]]`` (oldest first, flat over the streams), its new values the row
    ``s`` of the zero-padded ``x``, their prefix sums (minus the stream's shift) rows of ``s1``
    and ``s2``.

    A test needs, at each cut, the sum of the values before it: a stored boundary's running sum
    for a cut in the old part of the window, the batch's for one in the new part. Row ``s`` of
    ``prefix`` holds both: the running sums at the stream's ``B`` stored boundaries, then at
    each of its new values (column ``B + k`` after value ``k``). Streams holding as many values
    have the same stored layout, so a cut's column depends on that count and the cut alone.
    """

    def __init__(self, dets: list[ADWIN], xs: list[np.ndarray]) -> None:
        self.dets = dets
        p = dets[0]
        self.clock, self.max_buckets = p.clock, p.max_buckets
        self.mwl, self.grace, self.delta = p.min_window_length, p.grace_period, p.delta
        s_count = len(dets)
        self.n_old = np.array([d._n for d in dets], dtype=np.int64)
        self.total = np.array([d._total for d in dets])
        self.m2 = np.array([d._variance for d in dets])
        self.lengths = np.array([len(x) for x in xs], dtype=np.int64)
        width = int(self.lengths.max())
        if (self.lengths == width).all():
            self.x = np.stack(xs)
        else:
            self.x = np.zeros((s_count, width))
            for r, x in enumerate(xs):
                self.x[r, : len(x)] = x
        # Prefix sums are taken relative to the window mean (or the first value), so squared
        # deviations keep their precision whatever the offset of the stream.
        self.shift = np.where(self.n_old > 0, self.total / np.maximum(self.n_old, 1), self.x[:, 0])
        y = self.x - self.shift[:, None]
        self.s1 = np.cumsum(y, axis=1)
        self.s2 = np.cumsum(y * y, axis=1)
        self.counts = np.array([len(d._sizes) for d in dets], dtype=np.int64)
        self.b_lo = np.concatenate([[0], np.cumsum(self.counts)])
        self.sizes = np.concatenate([d._sizes for d in dets])
        self.totals = np.concatenate([d._totals for d in dets])
        self.m2s = np.concatenate([d._m2s for d in dets])
        self.b_stream = np.repeat(np.arange(s_count), self.counts)
        self.b_end = _segment_cumsum(self.sizes, self.b_lo)  # each stored bucket's end

    def _prefix(self) -> np.ndarray:
        """The running sums before every possible cut, a row per stream (see the class)."""
        s_count, width = self.x.shape
        b_max = int(self.counts.max())
        stored = np.arange(b_max)[None, :] < self.counts[:, None]
        grid = np.zeros((s_count, b_max))
        grid[stored] = self.totals
        prefix = np.zeros((s_count, b_max + width))
        prefix[:, :b_max] = np.cumsum(grid, axis=1)  # sequential, as a loop would add them
        k = np.arange(width)
        at = (np.arange(s_count) * (b_max + width) + self.counts)[:, None] + k
        prefix.ravel()[at] = self.total[:, None] + self.s1 + (k + 1) * self.shift[:, None]
        return prefix

    def first_cuts(self) -> list[int]:
        """Per stream, the index of the first value whose test finds a cut (-1: none)."""
        n_old, clock = self.n_old, self.clock
        first = np.maximum(n_old + 1, self.grace + 1)
        first += (-first) % clock  # the next multiple of the clock
        n_tests = np.maximum(0, (n_old + self.lengths - first) // clock + 1)
        out = np.full(len(self.dets), -1, dtype=np.int64)
        if not n_tests.any():
            return out.tolist()
        t_stream = np.repeat(np.arange(len(self.dets)), n_tests)
        t_first = np.concatenate([[0], np.cumsum(n_tests)[:-1]])
        ends = first[t_stream] + clock * (np.arange(len(t_stream)) - t_first[t_stream])
        # Window sum and squared deviations at each test: the old window merged with a prefix
        # of the batch (Chan et al.'s pairwise update; the old mean is the shift when n > 0).
        t_n_old = n_old[t_stream]
        t = ends - t_n_old
        s1 = self.s1[t_stream, t - 1]
        s2 = self.s2[t_stream, t - 1]
        new_mean = s1 / t
        new_m2 = np.maximum(s2 - t * new_mean * new_mean, 0.0)
        m2 = self.m2[t_stream] + new_m2 + t_n_old * t / (t_n_old + t) * new_mean**2
        tests = _Tests(
            t_stream, ends, self.total[t_stream] + s1 + t * self.shift[t_stream], m2 / ends
        )
        prefix = self._prefix()
        # Cuts far enough before the batch cannot find a change if a bound over all the batch's
        # tests says so (see _screen); then only the cuts after ``floor`` are tested.
        margin = max(2 * int(self.lengths.max()), 4 * self.mwl)
        # (Levels of stored buckets beyond the margin, times the tests: the cuts it may spare.)
        far_levels = np.frexp(np.maximum(n_old, 1))[1] - int(margin).bit_length()
        if (n_tests * np.maximum(far_levels, 0)).sum() * self.max_buckets < _SCREEN_MIN:
            self._run(tests, np.zeros_like(n_old), prefix, out)
            return out.tolist()
        floor = np.where(self._screen(tests, t_first, n_tests, margin, prefix), n_old - margin, 0)
        near = floor[t_stream] > 0
        if near.all() or not near.any():
            self._run(tests, floor, prefix, out)
            return out.tolist()
        for part in (near, ~near):
            self._run(tests.take(np.flatnonzero(part)), floor, prefix, out)
        return out.tolist()

    def _screen(
        self,
        tests: _Tests,
        t_first: np.ndarray,
        n_tests: np.ndarray,
        margin: int,
        prefix: np.ndarray,
    ) -> np.ndarray:
        """Per stream: whether no stored boundary more than ``margin`` values before its old
        count can be a cut in any test of the batch.

        With ``B`` the sum before a cut at ``c`` and ``mu`` the window mean at a test of ``e``
        values, the difference of the two sub-window means is ``|B - c mu| e / (c (e - c))``,
        at most ``max(|B - c mu|)`` over the batch's extreme means times ``e0 / (c (e0 - c))``
        at its first test ``e0``; the bound grows with ``m`` (falling with ``e``), the variance
        and ``delta'`` (rising with ``e``), so it is at least its value with the smallest of
        each. A boundary clears when that largest difference stays below that smallest bound
        by a margin (1e-9, relative) far above the rounding of either side."""
        s_count = len(self.dets)
        if not (self.n_old - margin >= self.mwl).any():  # no stream has a far boundary
            return np.zeros(s_count, dtype=bool)
        has = n_tests > 0
        lo = t_first[has]
        mu = tests.total / tests.ends
        mu_min = np.zeros(s_count)
        mu_max = np.zeros(s_count)
        var_min = np.zeros(s_count)
        t_abs = np.zeros(s_count)
        mu_min[has] = np.minimum.reduceat(mu, lo)
        mu_max[has] = np.maximum.reduceat(mu, lo)
        var_min[has] = np.minimum.reduceat(tests.var, lo)
        t_abs[has] = np.maximum.reduceat(np.abs(tests.total), lo)
        e_lo = np.zeros(s_count, dtype=np.int64)
        e_hi = np.zeros(s_count, dtype=np.int64)
        e_lo[has] = tests.ends[lo]
        e_hi[has] = tests.ends[lo + n_tests[has] - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            dp_lo = np.log(2.0 * np.log(e_lo.astype(np.float64)) / self.delta)
        usable = has & (dp_lo > 0) & np.isfinite(dp_lo) & (self.n_old - margin >= self.mwl)
        # Stored boundaries (a bucket's end, oldest first) at or before n_old - margin.
        b_end = self.b_end
        s = self.b_stream
        far = usable[s] & (b_end <= self.n_old[s] - margin) & (b_end >= self.mwl)
        if not far.any():
            return usable
        s = s[far]
        c = b_end[far].astype(np.float64)
        rank = (np.arange(len(b_end)) - self.b_lo[self.b_stream])[far]
        b = prefix[s, rank]
        e0 = e_lo[s].astype(np.float64)
        spread = np.maximum(np.abs(b - c * mu_min[s]), np.abs(b - c * mu_max[s]))
        diff = spread * e0 / (c * (e0 - c))
        mwl = self.mwl
        m_recip = 1.0 / (c - mwl + 1.0) + 1.0 / (e_hi[s] - c - mwl + 1.0)
        dp = dp_lo[s]
        eps = np.sqrt(2.0 * m_recip * var_min[s] * dp) + 2.0 / 3.0 * dp * m_recip
        scale = (np.abs(b) + c * np.maximum(np.abs(mu_min), np.abs(mu_max))[s]) / c * e0 / (
            e0 - c
        ) + (t_abs[s] + np.abs(b)) / (e0 - c)
        fails = ~(diff + 1e-9 * scale < eps * (1.0 - 1e-9))
        return usable & (np.bincount(s, weights=fails, minlength=s_count) == 0)

    def _run(self, tests: _Tests, floor: np.ndarray, prefix: np.ndarray, out: np.ndarray) -> None:
        """Evaluate ``tests`` (at the cuts after their stream's ``floor``); record in ``out``
        the first value of each stream whose test finds a cut."""
        n_old = self.n_old
        # Streams in the same state run the same tests: the cuts, and every term that depends
        # on the cut, the length and the stored layout only, are computed once per test shape
        # (old count, length). Tests are taken in shape order (a stream's stay in order).
        if len(self.dets) == 1:  # one stream: every test its own shape, already in order
            new_shape = np.ones(len(tests.ends), dtype=bool)
        else:
            t = tests.ends - n_old[tests.stream]  # 1 .. the batch's length
            key = n_old[tests.stream] * (int(t.max()) + 1) + t
            order = np.argsort(key, kind="stable")
            tests, key = tests.take(order), key[order]
            new_shape = np.concatenate([[True], key[1:] != key[:-1]])
            if new_shape.mean() > 0.8:  # few shared shapes: not worth gathering them per test
                new_shape[:] = True
        starts = np.flatnonzero(new_shape)
        bounds = np.append(starts, len(new_shape))  # the tests of shape u: bounds[u] .. bounds[u+1]
        k = len(new_shape) // len(starts)
        # Every shape with k > 1 tests (k streams in one state): shapes broadcast over them.
        shared = k > 1 and np.array_equal(starts, np.arange(0, len(new_shape), k))
        if not shared:
            k = 1
        # Shapes a pass at a time, as many as keep its tests times cuts bounded.
        slots = (int(tests.ends.max()).bit_length() + 1) * self.max_buckets
        per_pass = max(1, _CUTS_PER_PASS // slots)
        u = 0
        while u < len(starts):
            stop = int(np.searchsorted(bounds, bounds[u] + per_pass, side="right")) - 1
            stop = min(max(stop, u + 1), len(starts))
            row = tests.stream[starts[u:stop]]
            cuts = _Cuts(tests.ends[starts[u:stop]], row, floor[row], self)
            lo, hi = int(bounds[u]), int(bounds[stop])
            rows: np.ndarray | slice = slice(None)
            if not shared and stop - u < hi - lo:
                rows = np.cumsum(new_shape[lo:hi]) - 1
            for s, end in self._test(tests.take(slice(lo, hi)), rows, k, cuts, prefix):
                if out[s] < 0:
                    out[s] = end - n_old[s] - 1
            u = stop

    def _test(
        self, tests: _Tests, rows: np.ndarray | slice, k: int, cuts: _Cuts, prefix: np.ndarray
    ) -> list[tuple[int, int]]:
        """Evaluate ``tests``; return (stream, end) of the first test of each stream that finds
        a cut. Their cuts are the rows ``rows`` of ``cuts``: one per test (``k == 1``), or one
        per ``k`` successive tests (an array ``(shapes, k, cuts)``)."""
        if k > 1:
            shape: tuple[int, ...] = (-1, k, 1)
            column, cut, n_after = (
                a[rows][:, None, :] for a in (cuts.column, cuts.before, cuts.after)
            )
            two_m, linear = cuts.two_m[rows][:, None, :], cuts.linear[rows][:, None, :]
            delta_prime = cuts.delta_prime[rows][:, None, None]
        else:
            shape = (-1, 1)
            column, cut, n_after = cuts.column[rows], cuts.before[rows], cuts.after[rows]
            two_m, linear = cuts.two_m[rows], cuts.linear[rows]
            delta_prime = cuts.delta_prime[rows][:, None]
        before = prefix.ravel()[(tests.stream * prefix.shape[1]).reshape(shape) + column]
        with np.errstate(divide="ignore", invalid="ignore"):  # only where there is no cut
            eps = np.sqrt(two_m * tests.var.reshape(shape) * delta_prime)
            eps += linear
            diff = np.abs(before / cut - (tests.total.reshape(shape) - before) / n_after)
        # Tests with a cut, in order.
        hit_rows = np.flatnonzero((diff > eps).any(axis=-1).ravel())
        if not len(hit_rows):
            return []
        s_hit = tests.stream[hit_rows]
        _, first = np.unique(s_hit, return_index=True)
        return list(zip(s_hit[first].tolist(), tests.ends[hit_rows[first]].tolist(), strict=True))

    def absorb(self, hits: list[int]) -> None:
        """Merge each stream's values (up to its firing, if it fired) into its histogram.

        The new layout follows from the new count. Each new bucket is a run of parts, stored
        buckets then new values: its sum is theirs and its squared deviations theirs plus
        each part's size times its mean's squared distance to the bucket's (Chan et al.), both
        added by ``np.add.reduceat`` over the run (a bucket kept as it was is copied). The
        parts are summed themselves, never as differences of prefix sums: a run's result
        depends on its parts alone, so the histogram does not depend on where the stream was
        cut into batches beyond the rounding of those sums, and sums of small integers (0/1
        errors) or of values that cancel stay exact."""
        take = self.lengths.copy()
        for s, at in enumerate(hits):
            if at >= 0:
                take[s] = at + 1  # the window as it was at the firing (reset after)
        s_count = len(self.dets)
        n_new = self.n_old + take
        counts = _level_counts(n_new, self.max_buckets)[:, ::-1]  # oldest level first
        levels = counts.shape[1]
        per_stream = counts.sum(axis=1)
        level_sizes = np.left_shift(1, np.arange(levels - 1, -1, -1)).astype(np.int64)
        sizes = np.repeat(np.tile(level_sizes, s_count), counts.ravel())
        b_stream = np.repeat(np.arange(s_count), per_stream)
        b_lo = np.concatenate([[0], np.cumsum(per_stream)])
        end = _segment_cumsum(sizes, b_lo)
        start = end - sizes
        n_old = self.n_old[b_stream]
        totals = np.zeros(len(sizes))
        m2s = np.zeros(len(sizes))
        has_old = start < n_old
        if has_old.any():
            # Runs of stored buckets (their aligned starts tile them); a bucket that also
            # holds new values (at most one per stream) is redone whole below.
            stored_start = self.b_stream * _KEY + (self.b_end - self.sizes)
            key = b_stream[has_old] * _KEY + start[has_old]
            idx = np.searchsorted(stored_start, key)
            if not np.array_equal(stored_start[np.minimum(idx, len(stored_start) - 1)], key):
                raise AssertionError("ADWIN buckets do not align with the stored ones")
            old_total = np.add.reduceat(self.totals, idx)
            owner = np.repeat(np.arange(len(idx)), np.diff(np.append(idx, len(self.sizes))))
            spread = self.totals / self.sizes - (old_total / sizes[has_old])[owner]
            totals[has_old] = old_total
            m2s[has_old] = np.add.reduceat(self.m2s + self.sizes * spread**2, idx)
            mixed = has_old & (end > n_old)
            if mixed.any():
                j = np.flatnonzero(mixed)
                first_part, n_part = idx[mixed[has_old]], (end - n_old)[j]
                self._absorb_mixed(j, b_stream[j], first_part, n_part, sizes[j], totals, m2s)
        fresh = np.flatnonzero(start >= n_old)
        if len(fresh):
            # Runs of new values only, in the flat (zero-padded) batch: each row's start and
            # the end of its taken values also close a run.
            width = self.x.shape[1]
            flat = self.x.ravel()
            at = b_stream[fresh] * width + (start - n_old)[fresh]
            row_lo = np.arange(s_count) * width
            bounds = np.sort(np.concatenate([at, row_lo, (row_lo + take)[take < width]]))
            bounds = bounds[np.append(True, bounds[1:] != bounds[:-1])]
            where = np.searchsorted(bounds, at)
            fresh_total = np.add.reduceat(flat, bounds)[where]
            run_mean = np.zeros(len(bounds))
            run_mean[where] = fresh_total / sizes[fresh]
            dev = flat - np.repeat(run_mean, np.diff(np.append(bounds, len(flat))))
            totals[fresh] = fresh_total
            m2s[fresh] = np.add.reduceat(dev * dev, bounds)[where]
        means = totals / sizes
        s_total = np.bincount(b_stream, weights=totals, minlength=s_count)
        s_mean = s_total / n_new
        s_m2 = np.bincount(
            b_stream, weights=m2s + sizes * (means - s_mean[b_stream]) ** 2, minlength=s_count
        )
        for det, lo, hi, n, total, m2 in zip(
            self.dets,
            b_lo[:-1].tolist(),
            b_lo[1:].tolist(),
            n_new.tolist(),
            s_total.tolist(),
            s_m2.tolist(),
            strict=True,
        ):
            det._n, det._total, det._variance = n, total, m2
            det._sizes, det._totals, det._m2s = sizes[lo:hi], totals[lo:hi], m2s[lo:hi]

    def _absorb_mixed(
        self,
        buckets: np.ndarray,
        stream: np.ndarray,
        first_part: np.ndarray,
        n_new: np.ndarray,
        size: np.ndarray,
        totals: np.ndarray,
        m2s: np.ndarray,
    ) -> None:
        """Set ``totals`` and ``m2s`` of the new ``buckets`` (of ``stream``) that hold stored
        buckets (from the stored index ``first_part`` to the stream's last) and the first
        ``n_new`` new values, ``size`` in all: their parts laid out run after run, summed as
        in :meth:`absorb`."""
        n_stored = self.b_lo[stream + 1] - first_part
        run_len = n_stored + n_new
        run_lo = np.concatenate([[0], np.cumsum(run_len)[:-1]])
        part_total = np.empty(int(run_len.sum()))
        part_size = np.ones(len(part_total), dtype=np.int64)
        part_m2 = np.zeros(len(part_total))
        rank = np.arange(int(n_stored.sum())) - np.repeat(np.cumsum(n_stored) - n_stored, n_stored)
        to = np.repeat(run_lo, n_stored) + rank
        src = np.repeat(first_part, n_stored) + rank
        part_total[to] = self.totals[src]
        part_size[to] = self.sizes[src]
        part_m2[to] = self.m2s[src]
        rank = np.arange(int(n_new.sum())) - np.repeat(np.cumsum(n_new) - n_new, n_new)
        to = np.repeat(run_lo + n_stored, n_new) + rank
        part_total[to] = self.x.ravel()[np.repeat(stream * self.x.shape[1], n_new) + rank]
        total = np.add.reduceat(part_total, run_lo)
        mean = np.repeat(total / size, run_len)
        totals[buckets] = total
        m2s[buckets] = np.add.reduceat(
            part_m2 + part_size * (part_total / part_size - mean) ** 2, run_lo
        )


class _Tests(NamedTuple):
    """Tests as parallel arrays: stream, window length, window sum, window variance."""

    stream: np.ndarray
    ends: np.ndarray
    total: np.ndarray
    var: np.ndarray

    def take(self, which: np.ndarray | slice) -> _Tests:
        """The tests ``which``."""
        return _Tests(self.stream[which], self.ends[which], self.total[which], self.var[which])


class _Cuts:
    """The cuts after ``floor[u]`` of a test of window length ``ends[u]`` of stream
    ``stream[u]`` of ``group``, a row per ``u``, a column per slot of the
    histogram (``max_buckets`` per level, newest level first, as far back as some row has a
    cut). An empty slot, the oldest bucket's start and a cut leaving a sub-window shorter than
    ``min_window_length`` are no cut. Per slot: the values before it (``before``, a float)
    and after it (``after``), its column in the ``prefix`` rows of :class:`_Group` (in range
    for every slot), and the terms of the bound that depend on the cut and the length only,
    ``two_m = 2 m`` and ``linear = 2/3 delta' m``; ``linear`` is infinite where there is no
    cut (no difference exceeds it; the other terms there may be anything, even infinite)."""

    def __init__(
        self, ends: np.ndarray, stream: np.ndarray, floor: np.ndarray, group: _Group
    ) -> None:
        max_buckets, mwl = group.max_buckets, group.mwl
        n_old = group.n_old[stream]
        # Newest level first, up to the oldest that can hold a bucket after ``floor``.
        counts = _level_counts(ends, max_buckets, max(1, int((ends - floor).max()).bit_length()))
        size = np.repeat(np.left_shift(1, np.arange(counts.shape[1])), max_buckets)
        filled = np.arange(max_buckets)[None, None, :] < counts[:, :, None]
        filled = filled.reshape(len(ends), -1)
        # Each bucket's older end, newest bucket first (0 once past the oldest).
        at = ends[:, None] - np.cumsum(np.where(filled, size, 0), axis=1)
        lo = np.maximum(floor, mwl - 1)[:, None]
        cut = filled & (at > lo) & (at <= (ends - mwl)[:, None])
        width = max(1, int(np.flatnonzero(cut.any(axis=0)).max(initial=0)) + 1)
        at, cut = at[:, :width], cut[:, :width]
        # Column of each slot: for an old cut (every one is a stored boundary: the end of the
        # stream's stored bucket r, oldest first) r; for a new one the stored count plus the
        # index of the new value it follows. (Streams with as many values share the layout.)
        n_old_col = n_old[:, None]
        old = at <= n_old_col
        new_column = at + (group.counts[stream] - n_old - 1)[:, None]
        b_stream, b_end = group.b_stream, group.b_end
        back_end = group.n_old[b_stream] - b_end  # how far each stored end lies before n_old
        reach = int((n_old - floor).max()) + 1  # every cut lies less than this before n_old
        s_count = len(group.dets)
        if reach * s_count <= min(_NEAR_TABLE, 4 * at.size):
            # A table of columns by distance before n_old (no larger than the cuts it serves).
            near = back_end < reach
            table = np.zeros((s_count, reach), dtype=np.int64)
            rank = np.arange(len(b_end)) - group.b_lo[b_stream]
            table[b_stream[near], back_end[near]] = rank[near]
            back = (stream * reach + n_old)[:, None] - at  # in the stream's row when old
            self.column = np.where(old, table.ravel().take(back, mode="clip"), new_column)
        else:
            # Any cut: rank each old one among its stream's stored ends (ascending keys).
            self.column = np.where(old, 0, new_column)
            old &= cut
            if old.any():
                g = np.broadcast_to(stream[:, None], at.shape)[old]
                key = g * _KEY + at[old]
                self.column[old] = np.searchsorted(b_stream * _KEY + b_end, key) - group.b_lo[g]
        self.before = at.astype(np.float64)
        self.after = ends.astype(np.float64)[:, None] - self.before
        self.delta_prime = np.log(2.0 * np.log(ends.astype(np.float64)) / group.delta)
        with np.errstate(divide="ignore"):  # (no cut there)
            m_recip = 1.0 / (self.before - (mwl - 1)) + 1.0 / (self.after - (mwl - 1))
        self.two_m = 2.0 * m_recip
        self.linear = np.where(cut, (2.0 / 3.0 * self.delta_prime)[:, None] * m_recip, np.inf)


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


def _segment_cumsum(values: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sums restarting at every segment start ``lo[:-1]``."""
    c = np.cumsum(values)
    if len(lo) <= 2 or not len(c):  # one segment (or none)
        return c
    base = np.zeros(len(lo) - 1, dtype=c.dtype)
    inner = lo[1:-1]
    # (A segment starting at 0, after empty ones, has nothing before it.)
    base[1:] = np.where(inner > 0, c[np.maximum(inner - 1, 0)], 0)
    return c - np.repeat(base, np.diff(lo))


def _level_counts(n: np.ndarray, max_buckets: int, levels: int = 0) -> np.ndarray:
    """Buckets per level after ``n`` values, one row per ``n``: level 0 takes every value, and a
    level that reaches ``max_buckets + 1`` merges its two oldest into one of the next level.
    Only the ``levels`` lowest levels if given (> 0); else every level that can hold one.

    With ``c = max_buckets - 1``, a level receiving ``a > max_buckets`` buckets passes
    ``(a - c) // 2`` on, so ``a + c`` halves from level to level: level ``i`` receives
    ``((n + c) >> i) - c`` while every level below it overflowed, and none after one did not.

    >>> _level_counts(np.array([1, 6, 7, 20]), 5).tolist()
    [[1, 0, 0, 0, 0, 0], [4, 1, 0, 0, 0, 0], [5, 1, 0, 0, 0, 0], [4, 4, 2, 0, 0, 0]]
    """
    n = np.atleast_1d(np.asarray(n, dtype=np.int64))
    c = max_buckets - 1
    wanted = levels
    levels = max(1, int(n.max()).bit_length() + 1)
    if wanted > 0:
        levels = wanted + 1  # a level's count needs what the next one received
    arriving = ((n[:, None] + c) >> np.arange(levels)[None, :]) - c
    overflow = arriving > max_buckets
    reached = np.ones_like(overflow)
    reached[:, 1:] = np.logical_and.accumulate(overflow[:, :-1], axis=1)
    arriving = np.where(reached, arriving, 0)
    passed = np.zeros_like(arriving)
    passed[:, :-1] = arriving[:, 1:]
    counts = np.where(overflow & reached, arriving - 2 * passed, arriving)
    return counts[:, :wanted] if wanted > 0 else counts


def _bucket_sizes(n: int, max_buckets: int) -> np.ndarray:
    """Sizes of the buckets after ``n`` values, oldest first."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    counts = _level_counts(np.array([n]), max_buckets)[0]
    levels = np.arange(len(counts) - 1, -1, -1)
    return np.repeat(np.left_shift(1, levels), counts[::-1]).astype(np.int64)
