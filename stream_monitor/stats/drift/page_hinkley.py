"""Page-Hinkley, a batch at a time, for many streams at once.

The test is a pair of exponentially fading cumulative sums of deviations from the running mean
(Page, Biometrika 41, 1954). A batch runs the value-by-value loop compiled (see
:mod:`._kernels`), every stream of a call (say, every numeric feature of a model) in one
compiled call, so the fixed cost of a call is paid once for all of them. Only a firing ends a
stream's pass: as in river's ``drift.PageHinkley``, the detector starts afresh at the value after
the one that fired.

Same parameters, defaults and firing rule as river's ``drift.PageHinkley`` (the reference the
tests compare against on seeded streams); the compiled loop does the arithmetic of
``_first_firing_by_value`` (the short batches' path), so the state, plain numbers, does not
depend on how a stream is cut into batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.stats.drift import _kernels
from stream_monitor.stats.drift.base import DetectorBase, feed_streams

__all__ = ["PageHinkley", "update_all"]

SNAPSHOT_VERSION = 1
_MODES = ("up", "down", "both")


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
    """Advance every stream (equal parameters) up to its first firing in one compiled call;
    return that index per stream (-1: none)."""
    p = dets[0]
    x_lo = _kernels.offsets([len(x) for x in xs])
    n = np.array([d._n for d in dets], dtype=np.int64)
    state = np.array(
        [
            (d._mean, d._sum_increase, d._sum_decrease, d._min_increase, d._max_decrease)
            for d in dets
        ]
    )
    hits = _kernels.page_hinkley_pass(
        np.concatenate(xs),
        x_lo,
        n,
        state,
        p.min_instances,
        p.delta,
        p.threshold,
        p.alpha,
        _kernels.MODE_CODES[p.mode],
    )
    for d, k, (mean, inc, dec, min_inc, max_dec) in zip(
        dets, n.tolist(), state.tolist(), strict=True
    ):
        d._n, d._mean, d._sum_increase, d._sum_decrease = k, mean, inc, dec
        d._min_increase, d._max_decrease = min_inc, max_dec
    result: list[int] = hits.tolist()
    return result
