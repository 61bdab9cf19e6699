"""KSWIN, Kolmogorov-Smirnov windowing (Raab, Heusinger & Schleif, Neurocomputing 416, 2020).

The detector keeps the last ``window_size`` values. Once the window is full, every value runs a
two-sample Kolmogorov-Smirnov test between the newest ``stat_size`` values and ``stat_size``
values drawn without replacement from the older part of the window; it fires when the p-value
is at most ``alpha`` and the KS distance exceeds 0.1. After a firing the detector starts afresh
with the next value (empty window, random generator re-seeded).

Same parameters, defaults and firing positions as river's ``drift.KSWIN`` (the reference the
tests compare against on seeded streams). Three of river's quirks are mirrored on purpose,
because the firing positions depend on them:

* the draw is ``random.Random(seed).sample(range(window_size - stat_size), stat_size)``, one
  call per test, from a generator that is created anew at every start (construction and after
  each firing), so equal seeds give equal draws;
* the firing rule is ``p <= alpha and distance > 0.1`` with scipy's
  ``ks_2samp(..., method="auto")`` p-value, not the paper's bound
  ``distance > sqrt(-ln(alpha) / stat_size)``; the 0.1 floor is river's;
* the ``window`` argument (values collected beforehand, to skip the cold start) fills the
  window at construction only: a start after a firing begins from an empty window.

The p-value is scipy's: scipy is a runtime dependency of this module (imported on first use),
because the exact two-sample KS distribution is a job scipy does better than hand-written code.
For two samples of equal size ``r <= 10_000``, ``ks_2samp(method="auto")`` takes the exact
route, which rounds the distance to ``k / r`` for an integer ``k`` and computes the p-value
from ``k`` alone (also when the exact value fails and it falls back to the asymptotic formula,
which then gets the rounded distance); so whether a test fires is a function of ``k``. This
module counts ``k`` itself (a merge of the two sorted samples, ties handled as scipy's
right-continuous empirical distribution functions do), asks scipy the first time a ``k`` comes
up for a given ``(stat_size, alpha)`` and remembers the verdict for the process: at most
``stat_size + 1`` scipy calls per parameter pair instead of one per value. For
``stat_size > 10_000`` scipy's asymptotic p-value uses the unrounded distance, so every test
calls scipy.

The state is plain data: the window's values and the generator's state
(``random.Random.getstate()`` stored as lists).
"""

from __future__ import annotations

import math
import operator
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream_monitor.stats.drift.base import DetectorBase, feed_by_value

__all__ = ["KSWIN"]

SNAPSHOT_VERSION = 1
#: Largest sample size for which scipy's ``ks_2samp(method="auto")`` takes the exact route (its
#: ``MAX_AUTO_N``), so that its answer depends on the rounded distance only.
_EXACT_MAX_N = 10_000
#: Firing verdicts by ``(stat_size, alpha)`` and then by KS count ``k`` (distance ``k /
#: stat_size``), each the answer of one scipy call; shared by every detector of the process.
_VERDICTS: dict[tuple[int, float], dict[int, bool]] = {}
#: Words of a Mersenne Twister state; ``getstate()`` adds the position within them (625 ints).
_MT_WORDS = 624
_SEED_RANGE = (-(2**63), 2**63)


class KSWIN(DetectorBase):
    """Kolmogorov-Smirnov windowing change detector, fed a batch at a time.

    Parameters
    ----------
    alpha
        Significance level of the KS test, in [0, 1] (small values, below 0.01, are advised:
        the detector runs one test per value).
    window_size
        Values kept in the sliding window.
    stat_size
        Size of the two samples compared: the newest ``stat_size`` values against as many drawn
        from the older ``window_size - stat_size``. Must be at least 1 and at most
        ``window_size // 2`` (river accepts larger values and then fails at the first test).
    seed
        Seed of the generator that draws the older sample (``None``: a fresh random seed at
        every start, so firings are not reproducible). An int within 64 bits.
    window
        Values collected beforehand, supported as in river: at construction their last
        ``window_size`` values (kept as this attribute, as floats) fill the window; the
        window starts empty again after a firing. Finite values only.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(12345)
    >>> x = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> KSWIN(alpha=0.0001, seed=42).update_many(np.array(x))
    [1016]

    The same stream cut into batches fires at the same positions:

    >>> det = KSWIN(alpha=0.0001, seed=42)
    >>> parts = [np.array(x[lo : lo + 300]) for lo in range(0, len(x), 300)]
    >>> [300 * k + i for k, part in enumerate(parts) for i in det.update_many(part)]
    [1016]
    """

    PARAMS = ("alpha", "window_size", "stat_size", "seed", "window")

    def __init__(
        self,
        alpha: float = 0.005,
        window_size: int = 100,
        stat_size: int = 30,
        seed: int | None = None,
        window: Iterable[float] | None = None,
    ) -> None:
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], not {alpha!r}")
        try:
            window_size = operator.index(window_size)
            stat_size = operator.index(stat_size)
        except TypeError:
            raise ValueError("window_size and stat_size must be integers") from None
        if stat_size < 1:
            raise ValueError(f"stat_size must be at least 1, not {stat_size}")
        if window_size < 2 * stat_size:
            raise ValueError(
                f"window_size ({window_size}) must be at least 2 * stat_size ({stat_size}): "
                "the older sample is drawn without replacement from window_size - stat_size values"
            )
        if seed is not None and (
            isinstance(seed, bool)
            or not isinstance(seed, int)
            or not _SEED_RANGE[0] <= seed < _SEED_RANGE[1]
        ):
            raise ValueError(f"seed must be None or an int within 64 bits, not {seed!r}")
        initial: tuple[float, ...] | None = None
        if window is not None:
            initial = tuple(float(v) for v in window)[-window_size:]
            if not all(math.isfinite(v) for v in initial):
                raise ValueError("window must hold finite values only")
        self.alpha = alpha
        self.window_size = window_size
        self.stat_size = stat_size
        self.seed = seed
        self.window = initial
        self._verdicts: dict[int, bool] | None = None
        if stat_size <= _EXACT_MAX_N:
            self._verdicts = _VERDICTS.setdefault((stat_size, alpha), {})
        #: Whether the last value fed fired (the next value then starts afresh).
        self.drift_detected = False
        self._reset()
        if initial:
            self._window.extend(initial)

    def _reset(self) -> None:
        self._window: list[float] = []
        self._rng = random.Random(self.seed)

    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed ``values`` in order; return the indices of the values at which it fired.

        After a firing the detector starts afresh with the next value, exactly as a per-value
        loop over river's detector would. Raises ``ValueError`` on NaN or infinite values (the
        caller drops missing ones); nothing is fed then.
        """
        x = np.asarray(values, dtype=float).ravel()
        if not np.isfinite(x).all():
            raise ValueError("KSWIN takes finite values only")
        return feed_by_value(self, x.tolist())

    def _first_firing_by_value(self, x: Sequence[float]) -> int:
        """Feed ``x`` value by value; stop at the first firing (-1: none)."""
        win = self._window
        size, r = self.window_size, self.stat_size
        older = range(size - r)
        draw = self._rng.sample
        verdicts = self._verdicts
        alpha = self.alpha
        for i, v in enumerate(x):
            win.append(v)
            if len(win) > size:
                del win[0]
            elif len(win) < size:
                continue
            drawn = [win[j] for j in draw(older, r)]
            recent = win[size - r :]
            if verdicts is None:
                fired = _ks_fires(drawn, recent, alpha)
            else:
                k = _ks_count(sorted(drawn), sorted(recent))
                verdict = verdicts.get(k)
                if verdict is None:
                    verdict = verdicts[k] = _ks_fires(drawn, recent, alpha)
                fired = verdict
            if fired:
                # As river: the window keeps the newest sample (the next value starts afresh).
                self._window = recent
                return i
        return -1

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state."""
        version, words, gauss_next = self._rng.getstate()
        params = self.params
        if self.window is not None:
            params["window"] = list(self.window)
        return {
            "v": SNAPSHOT_VERSION,
            "params": params,
            "drift_detected": self.drift_detected,
            "values": list(self._window),
            "rng": {"version": version, "state": list(words), "gauss_next": gauss_next},
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> KSWIN:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on anything invalid (version,
        missing or extra field, wrong type, wrong length or range)."""
        if not isinstance(d, Mapping):
            raise ValueError("KSWIN snapshot must be a mapping")
        version = d.get("v")
        if type(version) is not int or version != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported KSWIN snapshot version {version!r}")
        try:
            snap = _Snapshot.model_validate(dict(d))
        except ValidationError as e:
            raise ValueError(f"invalid KSWIN snapshot: {e}") from None
        det = cls(**snap.params.model_dump())
        if len(snap.values) > det.window_size:
            raise ValueError("KSWIN snapshot: more values than window_size")
        rng = snap.rng
        if rng.version != random.Random.VERSION:
            raise ValueError(f"KSWIN snapshot: unsupported generator version {rng.version}")
        if not all(0 <= w < 2**32 for w in rng.state[:_MT_WORDS]):
            raise ValueError("KSWIN snapshot: generator words must be 32-bit unsigned")
        if not 0 <= rng.state[_MT_WORDS] <= _MT_WORDS:
            raise ValueError("KSWIN snapshot: generator position out of range")
        try:
            det._rng.setstate((rng.version, tuple(rng.state), rng.gauss_next))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"KSWIN snapshot: invalid generator state: {e}") from None
        det._window = list(snap.values)
        det.drift_detected = snap.drift_detected
        return det


def _ks_count(a: list[float], b: list[float]) -> int:
    """KS distance of two sorted samples of equal length ``n``, times ``n``: the largest
    ``|#{a <= t} - #{b <= t}|`` over the values ``t`` of either sample."""
    n = len(a)
    i = j = best = 0
    while i < n and j < n:
        t = a[i] if a[i] <= b[j] else b[j]
        while i < n and a[i] == t:
            i += 1
        while j < n and b[j] == t:
            j += 1
        gap = i - j if i > j else j - i
        if gap > best:
            best = gap
    # Past this point one sample is used up and the gap only shrinks.
    return best


def _ks_fires(drawn: list[float], recent: list[float], alpha: float) -> bool:
    """River's firing rule on scipy's two-sample KS test."""
    from scipy.stats import ks_2samp  # only on first use: importing scipy.stats takes a second

    with warnings.catch_warnings():
        # "auto" warns (RuntimeWarning) when the exact p-value fails and it falls back.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = ks_2samp(drawn, recent, method="auto")
    return bool(res.pvalue <= alpha and res.statistic > 0.1)


_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Params(BaseModel):
    model_config = _STRICT

    alpha: float
    window_size: int
    stat_size: int
    seed: int | None
    window: list[float] | None


class _Rng(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int
    state: Annotated[list[int], Field(min_length=_MT_WORDS + 1, max_length=_MT_WORDS + 1)]
    gauss_next: float | None


class _Snapshot(BaseModel):
    model_config = _STRICT

    v: Literal[1]
    params: _Params
    drift_detected: bool
    values: list[float]
    rng: _Rng
