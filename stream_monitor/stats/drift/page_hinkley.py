"""Page-Hinkley, a batch at a time, for many streams at once.

The test is a pair of exponentially fading cumulative sums of deviations from the running mean
(Page, Biometrika 41, 1954), so a batch is a handful of array operations: the running mean is a
cumulative sum, the fading sums are a scaled cumulative sum, and their extremes are running
minima and maxima. The streams of one call (say, every numeric feature of a model) are rows of
one array, so the cost per call does not grow with the number of streams. Only a firing ends a
row's pass: as in river's ``drift.PageHinkley``, the detector starts afresh at the value after
the one that fired.

Same parameters, defaults and firing rule as river's ``drift.PageHinkley`` (the reference the
tests compare against on seeded streams); the state is plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.stats.drift.base import DetectorBase, feed_streams, padded

__all__ = ["PageHinkley", "update_all"]

SNAPSHOT_VERSION = 1
_MODES = ("up", "down", "both")
#: Largest power a fading factor may be raised to inside one chunk (exp(60) ~ 1e26 keeps every
#: scaled term far from overflow and keeps relative precision of the cumulative sums).
_MAX_EXPONENT = 60.0
_MAX_CHUNK = 8192


class PageHinkley(DetectorBase):
    """Page-Hinkley change detector fed with arrays.

    Parameters
    ----------
    min_instances
        Values seen (since the start or the last firing) before the test may fire.
    delta
        Tolerated deviation, subtracted from (added to) every deviation of the increase
        (decrease) sum.
    threshold
        The firing level (lambda) of either sum's distance from its extreme.
    alpha
        Fading factor of the sums.
    mode
        ``"up"``, ``"down"`` or ``"both"``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = np.concatenate([rng.normal(0, 1, 1000), rng.normal(2, 1, 1000)])
    >>> PageHinkley().update_many(x)
    [1018]

    The same stream cut into batches fires at the same positions:

    >>> ph = PageHinkley()
    >>> [i + 300 * k for k in range(7) for i in ph.update_many(x[300 * k : 300 * (k + 1)])]
    [1018]
    """

    PARAMS = ("min_instances", "delta", "threshold", "alpha", "mode")

    @staticmethod
    def _array_pass(dets: list[Any], xs: list[np.ndarray]) -> list[int]:
        return _scan(dets, xs)

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        self._keep_params_key()
        #: Whether the last value fed fired (the next value then starts afresh).
        self.drift_detected = False
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._sum_increase = 0.0
        self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0  # river starts the decrease maximum at -1, not -inf

    def _first_firing_by_value(self, x: Sequence[float]) -> int:
        """Feed ``x`` value by value (short batches); stop at the first firing (-1: none)."""
        for i, v in enumerate(x):
            self._n += 1
            self._mean += (v - self._mean) / self._n
            dev = v - self._mean
            self._sum_increase = self.alpha * self._sum_increase + dev - self.delta
            self._sum_decrease = self.alpha * self._sum_decrease + dev + self.delta
            self._min_increase = min(self._min_increase, self._sum_increase)
            self._max_decrease = max(self._max_decrease, self._sum_decrease)
            if self._n < self.min_instances:
                continue
            up = self._sum_increase - self._min_increase > self.threshold
            down = self._max_decrease - self._sum_decrease > self.threshold
            if (up and self.mode != "down") or (down and self.mode != "up"):
                return i
        return -1

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state."""
        return {
            "v": SNAPSHOT_VERSION,
            "params": self.params,
            "drift_detected": self.drift_detected,
            "n": self._n,
            "mean": self._mean,
            "sum_increase": self._sum_increase,
            "sum_decrease": self._sum_decrease,
            # JSON has no infinity: None stands for "no minimum yet".
            "min_increase": None if math.isinf(self._min_increase) else self._min_increase,
            "max_decrease": self._max_decrease,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> PageHinkley:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported PageHinkley snapshot version {d.get('v')!r}")
        ph = cls(**d["params"])
        ph.drift_detected = bool(d["drift_detected"])
        ph._n = int(d["n"])
        ph._mean = float(d["mean"])
        ph._sum_increase = float(d["sum_increase"])
        ph._sum_decrease = float(d["sum_decrease"])
        mi = d["min_increase"]
        ph._min_increase = math.inf if mi is None else float(mi)
        ph._max_decrease = float(d["max_decrease"])
        return ph


def update_all(detectors: Sequence[PageHinkley], batches: Sequence[np.ndarray]) -> list[list[int]]:
    """Feed ``batches[i]`` to ``detectors[i]`` for every ``i``, all streams in one pass when
    they share parameters; return each stream's firing indices (as :meth:`update_many`)."""
    return feed_streams(detectors, batches, _scan)


def _scan(dets: list[PageHinkley], xs: list[np.ndarray]) -> list[int]:
    """Advance every stream over its values, column chunk by chunk; a stream stops at its first
    firing. Returns the firing index per stream (-1: none)."""
    first = dets[0]
    step = _MAX_CHUNK
    if first.alpha < 1.0:
        step = max(1, min(_MAX_CHUNK, int(_MAX_EXPONENT / -math.log(first.alpha))))
    lengths = np.array([len(x) for x in xs], dtype=np.int64)
    longest = int(lengths.max())
    if longest <= step:  # one chunk (the usual case)
        return _scan_block(dets, padded(xs, longest), lengths).tolist()
    hit = np.full(len(xs), -1, dtype=np.int64)
    for lo in range(0, longest, step):
        rows = np.flatnonzero((hit < 0) & (lengths > lo))
        if not len(rows):
            break
        width = int(min(step, lengths[rows].max() - lo))
        block = padded([xs[i][lo : lo + width] for i in rows], width)
        at = _scan_block([dets[i] for i in rows], block, np.minimum(lengths[rows] - lo, width))
        fired = at >= 0
        hit[rows[fired]] = lo + at[fired]
    return hit.tolist()


def _scan_block(dets: list[PageHinkley], x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """One chunk for many streams (rows of ``x``, row ``r`` valid up to ``lengths[r]``): update
    each detector's state up to its first firing or its last value; return the firing column
    per row (-1: none)."""
    p = dets[0]
    m = x.shape[1]
    # The state of every row, as columns: n, mean, both sums, their extremes.
    state = np.array(
        [
            (d._n, d._mean, d._sum_increase, d._sum_decrease, d._min_increase, d._max_decrease)
            for d in dets
        ]
    )
    n0, mean0, inc0, dec0 = state[:, 0:1], state[:, 1:2], state[:, 2:3], state[:, 3:4]
    n = n0 + np.arange(1, m + 1, dtype=np.float64)[None, :]
    mean = (n0 * mean0 + np.cumsum(x, axis=1)) / n
    dev = x - mean
    if p.alpha == 1.0:
        inc = inc0 + np.cumsum(dev - p.delta, axis=1)
        dec = dec0 + np.cumsum(dev + p.delta, axis=1)
    else:
        powers = p.alpha ** np.arange(1, m + 1, dtype=np.float64)
        inc = powers * (inc0 + np.cumsum((dev - p.delta) / powers, axis=1))
        dec = powers * (dec0 + np.cumsum((dev + p.delta) / powers, axis=1))
    # Each row's extremes of the sums at its last value (the carried ones included).
    low_inc, high_inc = _row_extremes(inc, lengths)
    low_dec, high_dec = _row_extremes(dec, lengths)
    min_inc = np.minimum(low_inc, state[:, 4])
    max_dec = np.maximum(high_dec, state[:, 5])
    # A row fires where a sum has moved more than the threshold from its extreme so far,
    # which no value can when the sum's whole range (the carried extreme included) is within
    # the threshold (rounding is monotone: so are the computed differences). Only the other
    # rows need the running extremes.
    may_fire = np.zeros(len(dets), dtype=bool)
    if p.mode != "down":
        may_fire |= high_inc - min_inc > p.threshold
    if p.mode != "up":
        may_fire |= max_dec - low_dec > p.threshold
    at = np.full(len(dets), -1, dtype=np.int64)
    rows = np.flatnonzero(may_fire)
    if len(rows):
        at[rows], min_inc[rows], max_dec[rows] = _first_firing(
            p, state[rows], n[rows], inc[rows], dec[rows], lengths[rows]
        )
    # Each row's state at its firing, or at its last value.
    last = (np.arange(len(dets)), np.where(at >= 0, at, lengths - 1))
    ends = zip(
        dets,
        last[1].tolist(),
        mean[last].tolist(),
        inc[last].tolist(),
        dec[last].tolist(),
        min_inc.tolist(),
        max_dec.tolist(),
        strict=True,
    )
    for d, k, mean_k, inc_k, dec_k, min_inc_k, max_dec_k in ends:
        d._n += k + 1
        d._mean, d._sum_increase, d._sum_decrease = mean_k, inc_k, dec_k
        d._min_increase, d._max_decrease = min_inc_k, max_dec_k
    return at


def _row_extremes(a: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's minimum and maximum over its first ``lengths[r]`` columns.

    >>> _row_extremes(np.array([[3.0, 1.0, 9.0], [2.0, 5.0, 4.0]]), np.array([2, 3]))
    (array([1., 2.]), array([3., 5.]))
    """
    if lengths.min() == a.shape[1]:
        return a.min(axis=1), a.max(axis=1)
    # Segments of the flat array, each row's values then its padding (dropped).
    starts = np.arange(len(a)) * a.shape[1]
    bounds = np.stack([starts, starts + lengths], axis=1).ravel()
    if bounds[-1] == a.size:  # the last row is full: its values run to the end
        bounds = bounds[:-1]
    flat = a.ravel()
    return np.minimum.reduceat(flat, bounds)[::2], np.maximum.reduceat(flat, bounds)[::2]


def _first_firing(
    p: PageHinkley,
    state: np.ndarray,
    n: np.ndarray,
    inc: np.ndarray,
    dec: np.ndarray,
    lengths: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows that may fire (see :func:`_scan_block`): the firing column per row (-1: none)
    and the sums' extremes at it, or at the row's last value."""
    m = inc.shape[1]
    min_inc = np.minimum(np.minimum.accumulate(inc, axis=1), state[:, 4:5])
    max_dec = np.maximum(np.maximum.accumulate(dec, axis=1), state[:, 5:6])
    if p.mode == "up":
        fire = inc - min_inc > p.threshold
    elif p.mode == "down":
        fire = max_dec - dec > p.threshold
    else:
        fire = (inc - min_inc > p.threshold) | (max_dec - dec > p.threshold)
    if state[:, 0].min() + 1 < p.min_instances:  # a row still warming up
        fire &= n >= p.min_instances
    if lengths.min() < m:  # a row shorter than the block
        fire &= np.arange(m)[None, :] < lengths[:, None]
    any_fire = fire.any(axis=1)
    at = np.where(any_fire, np.argmax(fire, axis=1), -1)
    last = (np.arange(len(at)), np.where(any_fire, at, lengths - 1))
    return at, min_inc[last], max_dec[last]
