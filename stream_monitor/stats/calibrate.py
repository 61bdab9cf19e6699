"""Vectorised window statistics and thresholds calibrated to a target false-alarm rate.

A fixed threshold on a drift statistic means different things at different sample sizes: with
10 bins, PSI between two samples from the *same* distribution averages about
``9 * (1/n_reference + 1/n_window)``, so ``PSI > 0.1`` fires on ~40% of stable 100-event windows
and essentially never flags a small real shift in 20 000-event ones. Here the threshold is
instead derived from a per-window false-alarm rate by a two-sample parametric bootstrap under
the null "the window comes from the reference distribution" (:func:`calibrate`), with
:func:`batch_statistics` computing every statistic for many (reference, window) pairs at once.
:func:`size_bucket` and :class:`CalibrationCache` let windows of varying size share
calibrations. Everything is pure (no clocks, logging or I/O) and deterministic given a seed.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SNAPSHOT_VERSION = 1

STATISTICS: tuple[str, ...] = (
    "psi",
    "jensen_shannon",
    "hellinger",
    "ks",
    "wasserstein",
    "chi_squared",
)

_MAX_DRAWS = 200_000
_MIN_DRAWS = 2_000
_DRAWS_ABOVE_QUANTILE = 50
_CHUNK_ROWS = 20_000
_CHUNK_CELLS = 2_000_000  # rows * bins per chunk, bounds temporaries for many bins
_STD_FLOOR = 1e-12


# ------------------------------------------------------------------------------ helpers


def _check_names(names: Iterable[str]) -> tuple[str, ...]:
    out = tuple(names)
    if not out:
        raise ValueError("names must name at least one statistic")
    unknown = [n for n in out if n not in STATISTICS]
    if unknown:
        raise ValueError(f"unknown statistic(s) {unknown}; choose from {list(STATISTICS)}")
    return out


def _check_points_scale(
    points: npt.ArrayLike | None, scale: float | None, k: int
) -> tuple[np.ndarray, float]:
    if points is None or scale is None:
        raise ValueError("the wasserstein statistic needs both points and scale")
    x = np.asarray(points, dtype=np.float64).ravel()
    if x.shape != (k,):
        raise ValueError(f"points has length {x.size}, expected one per bin ({k})")
    if not np.all(np.isfinite(x)) or np.any(np.diff(x) < 0):
        raise ValueError("points must be finite and non-decreasing")
    s = float(scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError("scale must be positive and finite")
    return x, s


def _as_count_matrix(a: npt.ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{what} must have shape (k,) or (m, k) with k >= 1")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} counts must be finite")
    if np.any(arr < 0):
        raise ValueError(f"{what} counts must be non-negative")
    return arr


# ------------------------------------------------------------------- batch statistics


def batch_statistics(
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    names: Iterable[str] = STATISTICS,
    *,
    points: npt.ArrayLike | None = None,
    scale: float | None = None,
    eps: float = 1e-4,
) -> dict[str, np.ndarray]:
    """Drift statistics for many (reference, current) count-vector pairs at once.

    Row ``i`` of every output equals the scalar function of
    :mod:`stream_monitor.stats.divergence` applied to ``(reference[i], current[i])`` (or to
    ``(reference, current[i])`` for a 1-D ``reference``), up to floating-point rounding:

    - ``"psi"``: :func:`~stream_monitor.stats.divergence.psi` with the same ``eps`` clipping;
    - ``"jensen_shannon"``: the Jensen-Shannon *distance*, natural log;
    - ``"hellinger"``: the Hellinger distance;
    - ``"ks"``: :func:`~stream_monitor.stats.divergence.ks_binned`;
    - ``"wasserstein"``: :func:`~stream_monitor.stats.divergence.wasserstein_scaled` with
      ``points`` and ``scale`` (both required for this statistic);
    - ``"chi_squared"``: the statistic (first element) of
      :func:`~stream_monitor.stats.divergence.chi_squared`: bins empty in both rows contribute
      nothing, and a pair with fewer than two non-empty bins gives 0.0.

    Fully vectorised: no Python loop over rows.

    Parameters
    ----------
    reference
        Counts of shape ``(k,)`` (one reference for every row) or ``(m, k)`` (row-wise pairs).
    current
        Counts of shape ``(m, k)``, or ``(k,)`` for a single window (``m = 1``, or broadcast
        against an ``(m, k)`` reference).
    names
        Statistics to compute, a subset of :data:`STATISTICS`.
    points, scale
        Representative value of each bin and a positive reference spread; only used (and then
        required) for ``"wasserstein"``.
    eps
        Lower clip of the proportions for ``"psi"``.

    Returns
    -------
    dict[str, np.ndarray]
        One float64 array of length ``m`` per requested name. A row whose reference or current
        total is 0 is **NaN in every output** (the scalar functions raise on such a pair).

    Raises
    ------
    ValueError
        On an unknown name, mismatched shapes, negative or non-finite counts, or a missing /
        invalid ``points`` or ``scale`` when ``"wasserstein"`` is requested.

    Examples
    --------
    >>> ref = np.array([50, 50])
    >>> cur = np.array([[50, 50], [80, 20], [0, 0]])
    >>> out = batch_statistics(ref, cur, ("psi", "ks", "chi_squared"))
    >>> np.round(out["psi"], 4).tolist()
    [0.0, 0.4159, nan]
    >>> np.round(out["ks"], 6).tolist()
    [0.0, 0.3, nan]
    >>> batch_statistics(np.array([[3, 0], [1, 1]]), np.array([[5, 0], [1, 1]]), ["chi_squared"])
    {'chi_squared': array([0., 0.])}
    """
    wanted = _check_names(names)
    ref = _as_count_matrix(reference, "reference")
    cur = _as_count_matrix(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(
            f"bin count mismatch: {ref.shape[1]} reference vs {cur.shape[1]} current bins"
        )
    if ref.shape[0] != cur.shape[0] and 1 not in (ref.shape[0], cur.shape[0]):
        raise ValueError(f"row count mismatch: {ref.shape[0]} reference vs {cur.shape[0]} current")
    k = ref.shape[1]
    if "wasserstein" in wanted:
        x, s = _check_points_scale(points, scale, k)
    m = max(ref.shape[0], cur.shape[0])
    ref = np.broadcast_to(ref, (m, k))
    cur = np.broadcast_to(cur, (m, k))

    r_tot = ref.sum(axis=1)
    c_tot = cur.sum(axis=1)
    valid = (r_tot > 0) & (c_tot > 0)
    # Proportions; invalid rows get a harmless dummy total and are set to NaN at the end.
    p = ref / np.where(r_tot > 0, r_tot, 1.0)[:, None]
    q = cur / np.where(c_tot > 0, c_tot, 1.0)[:, None]

    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if "psi" in wanted:
            pc = np.clip(p, eps, None)
            qc = np.clip(q, eps, None)
            out["psi"] = np.sum((qc - pc) * np.log(qc / pc), axis=1)
        if "jensen_shannon" in wanted:
            mid = 0.5 * (p + q)
            kl_pm = np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p / mid, 1.0)), 0.0), axis=1)
            kl_qm = np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q / mid, 1.0)), 0.0), axis=1)
            out["jensen_shannon"] = np.sqrt(np.maximum(0.5 * (kl_pm + kl_qm), 0.0))
        if "hellinger" in wanted:
            h2 = 0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=1)
            out["hellinger"] = np.sqrt(np.clip(h2, 0.0, 1.0))
        if "ks" in wanted or "wasserstein" in wanted:
            cr = np.cumsum(ref, axis=1)
            cc = np.cumsum(cur, axis=1)
            cdf_diff = np.abs(cr / cr[:, -1:] - cc / cc[:, -1:])
            if "ks" in wanted:
                out["ks"] = np.max(cdf_diff, axis=1)
            if "wasserstein" in wanted:
                out["wasserstein"] = (cdf_diff[:, :-1] @ np.diff(x)) / s
        if "chi_squared" in wanted:
            keep = (ref > 0) | (cur > 0)
            n_tot = r_tot + c_tot
            col = ref + cur
            e_ref = r_tot[:, None] * col / n_tot[:, None]
            e_cur = c_tot[:, None] * col / n_tot[:, None]
            terms = (ref - e_ref) ** 2 / e_ref + (cur - e_cur) ** 2 / e_cur
            stat = np.sum(np.where(keep, terms, 0.0), axis=1)
            out["chi_squared"] = np.where(keep.sum(axis=1) >= 2, stat, 0.0)
    return {
        name: np.where(valid, out[name], np.nan).astype(np.float64, copy=False) for name in wanted
    }


# -------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Null distribution summary and threshold of one statistic for given sample sizes.

    Attributes
    ----------
    statistic
        Name from :data:`STATISTICS`.
    false_alarm_rate
        Target probability that a stable window exceeds :attr:`threshold`.
    n_reference, n_window
        Sample sizes the null distribution was simulated for.
    draws
        Number of simulated (reference, window) pairs.
    threshold
        The ``1 - false_alarm_rate`` quantile (``method="higher"``) of the simulated
        statistic; a window *exceeding* it (``value > threshold``) is an alarm.
    mean, std
        Mean and sample standard deviation (``ddof=1``) of the simulated statistic.

    Examples
    --------
    >>> c = Calibration("psi", 0.05, 1000, 100, 2000, 0.17, 0.1, 0.04)
    >>> round(c.zscore(0.18), 6)
    2.0
    >>> Calibration.from_snapshot(c.snapshot()) == c
    True
    """

    statistic: str
    false_alarm_rate: float
    n_reference: int
    n_window: int
    draws: int
    threshold: float
    mean: float
    std: float

    def zscore(self, value: float) -> float:
        """``(value - mean) / std`` with ``std`` floored at 1e-12: a scale-free statistic.

        Useful to feed change detectors one comparable stream whatever the window size.
        """
        return (float(value) - self.mean) / max(self.std, _STD_FLOOR)

    def exceeds(self, value: float) -> bool:
        """Whether ``value`` is an alarm (``value > threshold``); NaN never is."""
        return bool(float(value) > self.threshold)

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state with a ``"v"`` version key."""
        return {
            "v": SNAPSHOT_VERSION,
            "statistic": self.statistic,
            "false_alarm_rate": float(self.false_alarm_rate),
            "n_reference": int(self.n_reference),
            "n_window": int(self.n_window),
            "draws": int(self.draws),
            "threshold": float(self.threshold),
            "mean": float(self.mean),
            "std": float(self.std),
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> Calibration:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported Calibration snapshot version {d.get('v')!r}")
        return cls(
            statistic=str(d["statistic"]),
            false_alarm_rate=float(d["false_alarm_rate"]),
            n_reference=int(d["n_reference"]),
            n_window=int(d["n_window"]),
            draws=int(d["draws"]),
            threshold=float(d["threshold"]),
            mean=float(d["mean"]),
            std=float(d["std"]),
        )


def default_draws(false_alarm_rate: float) -> int:
    """Bootstrap draws so that about 50 simulated values lie above the threshold.

    ``max(2000, ceil(50 / false_alarm_rate))``, capped at 200 000.

    Examples
    --------
    >>> default_draws(0.05), default_draws(0.01), default_draws(0.001), default_draws(1e-6)
    (2000, 5000, 50000, 200000)
    """
    far = float(false_alarm_rate)
    if not (0.0 < far < 0.5):
        raise ValueError("false_alarm_rate must be in (0, 0.5)")
    # round() guards against 50 / 0.001 = 50000.000000000004 rounding up.
    return min(_MAX_DRAWS, max(_MIN_DRAWS, math.ceil(round(_DRAWS_ABOVE_QUANTILE / far, 9))))


def calibrate(
    reference_counts: npt.ArrayLike,
    *,
    n_reference: int,
    n_window: int,
    false_alarm_rate: float,
    names: Iterable[str] = ("psi",),
    draws: int | None = None,
    seed: int = 0,
    points: npt.ArrayLike | None = None,
    scale: float | None = None,
) -> dict[str, Calibration]:
    """Thresholds holding a per-window false-alarm rate, by a two-sample parametric bootstrap.

    Under the null "the window comes from the reference distribution", with
    ``p = reference_counts / reference_counts.sum()``, draw ``draws`` independent pairs
    ``ref* ~ Multinomial(n_reference, p)`` and ``cur* ~ Multinomial(n_window, p)``, compute each
    statistic on the pairs with :func:`batch_statistics` and take the ``1 - false_alarm_rate``
    quantile (``method="higher"``) as the threshold; alarm when a window's statistic is
    *greater* than it.

    Two-sample, because the real reference is itself a finite sample and its noise is part of
    what a stable window is compared against; with a large ``n_reference`` (a training
    profile of 1M rows) that term vanishes by itself. Bins from reference quantiles make the
    reference counts flat but leave the true bin probabilities just as noisy, so the same
    approximation applies. A bin empty in the reference has ``p = 0`` and never gets simulated
    counts, so real windows with values there alarm more often than the target.

    Parameters
    ----------
    reference_counts
        Non-negative counts per bin (positive total); only the proportions are used.
    n_reference
        Size of the real reference sample (e.g. its total count), ``>= 1``.
    n_window
        Number of events in the windows to be tested, ``>= 1``.
    false_alarm_rate
        Target per-window false-alarm rate, in ``(0, 0.5)``.
    names
        Statistics to calibrate, from :data:`STATISTICS`.
    draws
        Bootstrap pairs; default :func:`default_draws` (``max(2000, ceil(50 / rate))``, capped
        at 200 000, so about 50 draws lie above the threshold).
    seed
        Seed of ``np.random.default_rng``; the result is deterministic for a given seed.
    points, scale
        Passed to :func:`batch_statistics`; required for ``"wasserstein"``.

    Returns
    -------
    dict[str, Calibration]
        One :class:`Calibration` per requested name.

    Raises
    ------
    ValueError
        On an invalid rate, size, draws, counts or statistic name.

    Examples
    --------
    >>> cal = calibrate(np.full(10, 100), n_reference=1000, n_window=100,
    ...                 false_alarm_rate=0.05, names=("psi", "ks"))
    >>> cal["psi"].draws
    2000
    >>> 0.1 < cal["psi"].threshold < 0.25  # PSI > 0.1 is not unusual for 100 events
    True
    >>> cal == calibrate(np.full(10, 100), n_reference=1000, n_window=100,
    ...                  false_alarm_rate=0.05, names=("psi", "ks"))  # same seed
    True
    """
    far = float(false_alarm_rate)
    if not (0.0 < far < 0.5):
        raise ValueError("false_alarm_rate must be in (0, 0.5)")
    if int(n_reference) != n_reference or n_reference < 1:
        raise ValueError("n_reference must be an integer >= 1")
    if int(n_window) != n_window or n_window < 1:
        raise ValueError("n_window must be an integer >= 1")
    n_ref = int(n_reference)
    n_win = int(n_window)
    wanted = _check_names(names)
    counts = np.asarray(reference_counts, dtype=np.float64).ravel()
    if counts.size < 1 or not np.all(np.isfinite(counts)):
        raise ValueError("reference_counts must be a non-empty vector of finite counts")
    if np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError("reference_counts must be non-negative with a positive sum")
    k = counts.size
    if "wasserstein" in wanted:
        _check_points_scale(points, scale, k)
    n_draws = default_draws(far) if draws is None else int(draws)
    if draws is not None and (int(draws) != draws or n_draws < 1):
        raise ValueError("draws must be an integer >= 1")

    p = counts / counts.sum()
    rng = np.random.default_rng(seed)
    chunk = max(1, min(_CHUNK_ROWS, _CHUNK_CELLS // k))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    done = 0
    while done < n_draws:
        size = min(chunk, n_draws - done)
        ref_star = rng.multinomial(n_ref, p, size=size)
        cur_star = rng.multinomial(n_win, p, size=size)
        stats = batch_statistics(ref_star, cur_star, wanted, points=points, scale=scale)
        for name in wanted:
            parts[name].append(stats[name])
        done += size

    result: dict[str, Calibration] = {}
    for name in wanted:
        values = np.concatenate(parts[name])
        values = values[~np.isnan(values)]
        result[name] = Calibration(
            statistic=name,
            false_alarm_rate=far,
            n_reference=n_ref,
            n_window=n_win,
            draws=n_draws,
            threshold=float(np.quantile(values, 1.0 - far, method="higher")),
            mean=float(np.mean(values)),
            std=float(np.std(values, ddof=1)) if values.size > 1 else 0.0,
        )
    return result


# ------------------------------------------------------------------------- size buckets


def size_bucket(n: int, per_doubling: int = 8) -> int:
    """Round a sample size to a geometric grid so nearby sizes share one calibration.

    Sizes below ``16 * per_doubling`` (128 by default) are returned unchanged; larger ones are
    rounded, in log space, to the nearest grid point ``2 ** (j / per_doubling)`` and then to
    the nearest integer. The result is ``>= 1``, non-decreasing in ``n``, a fixed point
    (``size_bucket(size_bucket(n)) == size_bucket(n)``), and within
    ``2 ** (1 / (2 * per_doubling)) - 1 + 0.5 / n`` relative error of ``n`` (at most 4.5% for
    8 steps per doubling).

    Parameters
    ----------
    n
        Sample size; values below 1 are treated as 1.
    per_doubling
        Grid steps per doubling, ``>= 1``.

    Examples
    --------
    >>> size_bucket(100), size_bucket(1000), size_bucket(1030), size_bucket(20_000)
    (100, 1024, 1024, 19484)
    >>> size_bucket(size_bucket(20_000)) == size_bucket(20_000)
    True
    >>> size_bucket(0)
    1
    """
    if per_doubling < 1:
        raise ValueError("per_doubling must be >= 1")
    m = max(1, int(n))
    if m < 16 * per_doubling:
        return m
    j = math.floor(per_doubling * math.log2(m) + 0.5)
    return max(1, math.floor(2.0 ** (j / per_doubling) + 0.5))


# --------------------------------------------------------------------------------- cache


def _fingerprint(
    reference_counts: npt.ArrayLike,
    false_alarm_rate: float,
    seed: int,
    draws: int | None,
    points: npt.ArrayLike | None,
    scale: float | None,
) -> str:
    """Stable digest of everything besides the key that a cached calibration depends on."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(reference_counts, dtype="<f8").ravel().tobytes())
    h.update(repr((float(false_alarm_rate), int(seed), draws)).encode())
    if points is not None:
        h.update(b"points")
        h.update(np.ascontiguousarray(points, dtype="<f8").ravel().tobytes())
    h.update(repr(None if scale is None else float(scale)).encode())
    return h.hexdigest()


_CacheKey = tuple[tuple[str, ...], int, int]


class CalibrationCache:
    """Bounded LRU cache of :func:`calibrate` results keyed by statistics and size buckets.

    The key is ``(names, size_bucket(n_reference), size_bucket(n_window))``. Each entry also
    remembers a digest of the reference counts, rate, seed, draws, points and scale it was
    computed with; a lookup whose digest differs is treated as a miss and recomputed, so one
    cache can never return thresholds for another reference or rate. Use one cache per
    feature for best reuse.

    Parameters
    ----------
    capacity
        Maximum number of entries, ``>= 1``; the least recently used one is evicted.

    Attributes
    ----------
    hits, misses, evictions
        Running counters (restored by :meth:`from_snapshot`).

    Examples
    --------
    >>> cache = CalibrationCache(capacity=2)
    >>> ref = np.full(5, 200)
    >>> a = cache.get_or_compute(ref, 1000, 1000, 0.05)
    >>> b = cache.get_or_compute(ref, 1000, 1010, 0.05)  # same size bucket: a hit
    >>> a is b, a["psi"].n_window, (cache.hits, cache.misses, cache.evictions)
    (True, 1024, (1, 1, 0))
    >>> restored = CalibrationCache.from_snapshot(cache.snapshot())
    >>> restored.get_or_compute(ref, 1000, 1000, 0.05) == a, restored.hits
    (True, 2)
    """

    def __init__(self, capacity: int = 32) -> None:
        if int(capacity) != capacity or capacity < 1:
            raise ValueError("capacity must be an integer >= 1")
        self.capacity: int = int(capacity)
        self.hits: int = 0
        self.misses: int = 0
        self.evictions: int = 0
        self._entries: OrderedDict[_CacheKey, tuple[str, dict[str, Calibration]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[_CacheKey]:
        """Cached keys, least recently used first."""
        return list(self._entries)

    def get_or_compute(
        self,
        reference_counts: npt.ArrayLike,
        n_reference: int,
        n_window: int,
        false_alarm_rate: float,
        names: Iterable[str] = ("psi",),
        seed: int = 0,
        points: npt.ArrayLike | None = None,
        scale: float | None = None,
        *,
        draws: int | None = None,
    ) -> dict[str, Calibration]:
        """Cached :func:`calibrate` at the bucketed sizes.

        Returns the cached dict when ``(names, size_bucket(n_reference),
        size_bucket(n_window))`` is present and was computed with the same reference counts,
        rate, seed, draws, points and scale; otherwise calls :func:`calibrate` with
        ``n_reference=size_bucket(n_reference)`` and ``n_window=size_bucket(n_window)``,
        stores the result (evicting the least recently used entry when full) and returns it.
        The returned dict is shared with the cache: do not mutate it.
        """
        wanted = _check_names(names)
        key: _CacheKey = (wanted, size_bucket(n_reference), size_bucket(n_window))
        fp = _fingerprint(reference_counts, false_alarm_rate, seed, draws, points, scale)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == fp:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        result = calibrate(
            reference_counts,
            n_reference=key[1],
            n_window=key[2],
            false_alarm_rate=false_alarm_rate,
            names=wanted,
            draws=draws,
            seed=seed,
            points=points,
            scale=scale,
        )
        self._entries[key] = (fp, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1
        return result

    def clear(self) -> None:
        """Drop all entries (counters are kept)."""
        self._entries.clear()

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state (entries least recently used first), versioned."""
        return {
            "v": SNAPSHOT_VERSION,
            "capacity": self.capacity,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "entries": [
                {
                    "names": list(key[0]),
                    "n_reference": key[1],
                    "n_window": key[2],
                    "fingerprint": fp,
                    "calibrations": {name: c.snapshot() for name, c in cals.items()},
                }
                for key, (fp, cals) in self._entries.items()
            ],
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> CalibrationCache:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported CalibrationCache snapshot version {d.get('v')!r}")
        cache = cls(int(d["capacity"]))
        cache.hits = int(d["hits"])
        cache.misses = int(d["misses"])
        cache.evictions = int(d["evictions"])
        entries = list(d["entries"])
        if len(entries) > cache.capacity:
            raise ValueError("more entries than capacity")
        for e in entries:
            key: _CacheKey = (
                _check_names(e["names"]),
                int(e["n_reference"]),
                int(e["n_window"]),
            )
            cals = {
                str(name): Calibration.from_snapshot(c) for name, c in e["calibrations"].items()
            }
            cache._entries[key] = (str(e["fingerprint"]), cals)
        return cache
