"""Vectorised window statistics and thresholds calibrated to a target false-alarm rate.

A fixed threshold on a drift statistic means different things at different sample sizes: with
10 bins, PSI between two samples from the *same* distribution averages about
``9 * (1/n_reference + 1/n_window)``, so ``PSI > 0.1`` fires on ~40% of stable 100-event windows
and essentially never flags a small real shift in 20 000-event ones. Here the threshold is
instead derived from a per-window false-alarm rate by a two-sample parametric bootstrap under
the null "the window comes from the reference distribution" (:func:`calibrate`), with
:func:`batch_statistics` computing every statistic for many (reference, window) pairs at once.
:func:`calibration_size` and :func:`cached_calibrate` let windows of varying size, and
features with identical references, share calibrations; :func:`share_increase_limit` is the
same idea for a share (a two-proportion z-test floored by a minimum increase). No clocks,
logging or I/O; results are deterministic given a seed (the memo of :func:`cached_calibrate`
only saves recomputation).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_monitor.stats.statistics import REGISTRY, Pairs, names

SNAPSHOT_VERSION = 1

#: The statistics' names (:data:`stream_monitor.stats.statistics.REGISTRY`).
STATISTICS: tuple[str, ...] = names()

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
    points: npt.ArrayLike | None, scale: npt.ArrayLike | None, k: int
) -> tuple[np.ndarray, np.ndarray | float]:
    """Points of shape ``(k,)`` or ``(m, k)`` (one row per pair) and a scale or ``m`` scales."""
    if points is None or scale is None:
        raise ValueError("the wasserstein statistic needs both points and scale")
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2:
        x = x.ravel()
    if x.shape[-1] != k:
        raise ValueError(f"points has length {x.shape[-1]}, expected one per bin ({k})")
    # Finite (NaN fails every comparison) and non-decreasing; for finite values, a pair out of
    # order is exactly a negative difference.
    if x.size and not (x.min() > -math.inf and x.max() < math.inf):
        raise ValueError("points must be finite and non-decreasing")
    if not (x[..., 1:] >= x[..., :-1]).all():
        raise ValueError("points must be finite and non-decreasing")
    s = np.asarray(scale, dtype=np.float64)
    if s.size and not (s.min() > 0 and s.max() < math.inf):
        raise ValueError("scale must be positive and finite")
    return x, (float(s) if s.ndim == 0 else s)


def _as_count_matrix(a: npt.ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{what} must have shape (k,) or (m, k) with k >= 1")
    if arr.size and arr.min() >= 0.0 and arr.max() < math.inf:  # NaN fails both
        return arr
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
    scale: npt.ArrayLike | None = None,
    eps: float = 1e-4,
) -> dict[str, np.ndarray]:
    """Drift statistics for many (reference, current) count-vector pairs at once.

    Row ``i`` of every output equals the scalar oracle of tests/oracles/divergence.py applied
    to ``(reference[i], current[i])`` (or to ``(reference, current[i])`` for a 1-D
    ``reference``), up to floating-point rounding (one entry per statistic in
    :data:`stream_monitor.stats.statistics.REGISTRY`):

    - ``"psi"``: :func:`~tests.oracles.divergence.psi` with the same ``eps`` clipping;
    - ``"jensen_shannon"``: the Jensen-Shannon *distance*, natural log;
    - ``"hellinger"``: the Hellinger distance;
    - ``"ks"``: :func:`~tests.oracles.divergence.ks_binned`;
    - ``"wasserstein"``: :func:`~tests.oracles.divergence.wasserstein_scaled` with
      ``points`` and ``scale`` (both required for this statistic);
    - ``"chi_squared"``: the statistic (first element) of
      :func:`~tests.oracles.divergence.chi_squared`: bins empty in both rows contribute
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
        Representative value of each bin and a positive reference spread, for every row or
        (shapes ``(m, k)`` and ``(m,)``) per row; only used (and then required) for
        ``"wasserstein"``.
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
    x: np.ndarray | None = None
    s: np.ndarray | float | None = None
    if any(REGISTRY[name].needs_points for name in wanted):
        x, s = _check_points_scale(points, scale, k)
    m = max(ref.shape[0], cur.shape[0])
    if ref.shape[0] != m:
        ref = np.broadcast_to(ref, (m, k))
    if cur.shape[0] != m:
        cur = np.broadcast_to(cur, (m, k))

    return _statistics(Pairs(ref, cur, points=x, scale=s, eps=eps), wanted)


def _statistics(pairs: Pairs, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The statistics ``wanted`` of checked ``pairs``, NaN where a row has a zero total."""
    valid = (pairs.r_tot > 0) & (pairs.c_tot > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {name: REGISTRY[name].compute(pairs) for name in wanted}
    if valid.all():  # every row has both totals: nothing to blank (the usual case)
        return {name: v.astype(np.float64, copy=False) for name, v in out.items()}
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
    x: np.ndarray | None = None
    s: np.ndarray | float | None = None
    if any(REGISTRY[name].needs_points for name in wanted):
        x, s = _check_points_scale(points, scale, k)
    n_draws = default_draws(far) if draws is None else int(draws)
    if draws is not None and (int(draws) != draws or n_draws < 1):
        raise ValueError("draws must be an integer >= 1")

    p = counts / counts.sum()
    rng = np.random.default_rng(seed)
    chunk = max(1, min(_CHUNK_ROWS, _CHUNK_CELLS // k))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    done = 0
    # Every row of a multinomial draw sums to its size: the totals are known (the same floats
    # the row sums give, counts being integers), and the draws are valid counts as they are.
    r_tot = np.full(min(chunk, n_draws), float(n_ref))
    c_tot = np.full(min(chunk, n_draws), float(n_win))
    while done < n_draws:
        size = min(chunk, n_draws - done)
        ref_star = rng.multinomial(n_ref, p, size=size)
        cur_star = rng.multinomial(n_win, p, size=size)
        pairs = Pairs(ref_star, cur_star, points=x, scale=s, r_tot=r_tot[:size], c_tot=c_tot[:size])
        stats = _statistics(pairs, wanted)
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


# ------------------------------------------------------------------ a share that may rise


def share_increase_limit(
    k_base: float,
    n_base: int,
    k_win: float,
    n_win: int,
    false_alarm_rate: float,
    min_increase: float,
) -> float:
    """The highest share ``k_win / n_win`` a window may have before it counts as an increase
    over a baseline share ``k_base / n_base``: one-sided two-proportion z-test at
    ``false_alarm_rate`` (pooled variance, normal approximation), floored by ``min_increase``.

    The floor sets the smallest increase worth an alert; the test keeps small windows, whose
    shares are noisy, from alarming on noise alone: with a baseline of 100 events at a share of
    0.3, a later 100-event window exceeds it by more than 0.1 in 5 % of stable windows.

    >>> round(share_increase_limit(300, 1000, 300, 1000, 0.001, 0.1), 4)  # the floor
    0.4
    >>> round(share_increase_limit(30, 100, 30, 100, 0.001, 0.1), 4)  # the noise
    0.5003
    """
    if n_base < 1 or n_win < 1:
        raise ValueError("n_base and n_win must be >= 1")
    if not 0.0 < false_alarm_rate < 0.5:
        raise ValueError("false_alarm_rate must be in (0, 0.5)")
    base = k_base / n_base
    pooled = min(max((k_base + k_win) / (n_base + n_win), 0.0), 1.0)  # counts from float shares
    z = NormalDist().inv_cdf(1.0 - false_alarm_rate)
    noise = z * math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_base + 1.0 / n_win))
    return base + max(min_increase, noise)


# ------------------------------------------------------------------ sharing calibrations

#: Calibrations shared by every feature of the process, least recently used first. A calibration
#: is a deterministic function of its inputs (fixed seed), so sharing changes no result; it
#: saves the simulation for the many numeric features whose quantile-binned references have
#: identical counts (1,000 distinct values in 10 bins: 100 each). Not part of any snapshot: a
#: restored monitor recomputes what it needs.
_CALIBRATIONS: OrderedDict[tuple[Any, ...], dict[str, Calibration]] = OrderedDict()
CALIBRATION_MEMO_SIZE = 512


def calibration_size(n: int) -> int:
    """``n`` rounded *down* to a grid of 8 steps per doubling (at most 8.3 % smaller), so windows
    whose sizes vary (time windows, rolling references) share a few calibrations instead of
    computing one per size. Rounding down simulates a slightly smaller sample, whose no-drift
    quantile is slightly higher: the achieved false-alarm rate errs below the target.

    Examples
    --------
    >>> [calibration_size(n) for n in (1, 15, 100, 1000, 1030, 1100, 10**6)]
    [1, 15, 99, 939, 1024, 1024, 961548]
    """
    if n < 16:
        return max(n, 1)
    k = math.floor(8 * math.log2(n))
    # The grid is round(2 ** (k / 8)); take its largest point not above n.
    return next(g for g in (round(2 ** (j / 8)) for j in (k + 1, k, k - 1)) if g <= n)


#: Steps per doubling of the grid on which :func:`reference_shape` rounds bin proportions
#: (16: neighbouring points differ by 4.4 %).
SHAPE_STEPS_PER_OCTAVE = 16


def reference_shape(ref_counts: np.ndarray, *, ordered: bool) -> np.ndarray:
    """The bin proportions of ``ref_counts`` rounded to a relative grid (
    :data:`SHAPE_STEPS_PER_OCTAVE` points per doubling) and renormalised; sorted in
    decreasing order unless the bins' ``ordered`` positions matter. Empty bins stay empty.

    The no-drift distribution of a window statistic depends on the reference's shape through
    small-sample corrections only (PSI's is about ``(1/n_ref + 1/n_win) chi2(k - 1)`` whatever
    the proportions), and a statistic that ignores bin order is the same for any order of the
    bins. So references that differ by a few percent per bin, or by a permutation, share one
    calibration: quantile bins of different features give counts such as 99, 101, 100, ...,
    each a distinct key before.

    Examples
    --------
    >>> a = reference_shape(np.array([99, 101, 100, 100, 0]), ordered=False)
    >>> b = reference_shape(np.array([0, 100, 100, 98, 102]), ordered=False)
    >>> bool(np.array_equal(a, b)), a.round(3).tolist()
    (True, [0.25, 0.25, 0.25, 0.25, 0.0])
    >>> reference_shape(np.array([1, 3]), ordered=True).round(3).tolist()  # 0.75 is off-grid
    [0.253, 0.747]
    """
    p = np.asarray(ref_counts, dtype=np.float64)
    q = _on_grid(p / p.sum(), SHAPE_STEPS_PER_OCTAVE)
    if not ordered:
        q = -np.sort(-q)
    return q / q.sum()


def _on_grid(p: np.ndarray, steps: int) -> np.ndarray:
    """Proportions ``p`` rounded to the nearest of ``steps`` points per doubling (relative);
    zeros stay zero. Not renormalised."""
    q = np.zeros_like(p)
    nz = p > 0
    q[nz] = np.exp2(np.round(np.log2(p[nz]) * steps) / steps)
    return q


#: The shapes (and their bytes) of the fixed references :func:`cached_calibrate` saw, by their
#: counts' dtype, dimensions, bytes and whether order matters; oldest first, bounded.
_SHAPES: dict[tuple[Any, ...], tuple[np.ndarray, bytes]] = {}
SHAPE_MEMO_SIZE = 4096
#: Per tuple of statistic names: whether any reads the bins' order, whether any needs points.
_READS: dict[tuple[str, ...], tuple[bool, bool]] = {}


def _reads(names: tuple[str, ...]) -> tuple[bool, bool]:
    """Whether any of ``names`` reads the bins' order, and whether any needs bin points
    (``KeyError`` on an unknown name)."""
    hit = _READS.get(names)
    if hit is None:
        stats = [REGISTRY[name] for name in names]
        hit = (any(s.ordered for s in stats), any(s.needs_points for s in stats))
        if len(_READS) >= SHAPE_MEMO_SIZE:
            _READS.clear()
        _READS[names] = hit
    return hit


def cached_calibrate(
    ref_counts: np.ndarray,
    n_ref: int,
    n_win: int,
    false_alarm_rate: float,
    names: tuple[str, ...],
    points: np.ndarray | None = None,
    scale: float | None = None,
    draws: int | None = None,
) -> dict[str, Calibration]:
    """:func:`calibrate` for these sizes with a fixed seed, memoised process-wide (the caller
    rounds sizes that vary with :func:`calibration_size`).

    The key is what determines the null: the reference's shape (:func:`reference_shape`:
    proportions on a 4.4 % grid, in decreasing order where no statistic among ``names`` reads
    the bins' order), the sizes, the rate, the statistics and the draws; bin points and scale
    only where a statistic that needs them (``"wasserstein"``) is among them (nothing else
    reads them). The calibration is of that shape, so every feature whose reference has it
    gets the same thresholds, whichever asked first: the many features of many models share
    a few calibrations instead of thrashing the memo with one each.
    """
    ordered = _reads(names)[0]
    # A feature asks with the same reference counts at every window: their shape is looked up
    # by their bytes rather than recomputed (the memo of shapes is bounded as the calibrations').
    arr = np.asarray(ref_counts)
    raw = (arr.dtype.str, arr.shape, arr.tobytes(), ordered)
    known = _SHAPES.get(raw)
    if known is None:
        shape = reference_shape(arr, ordered=ordered)
        shape.flags.writeable = False  # shared by every later lookup
        known = (shape, shape.tobytes())
        if len(_SHAPES) >= SHAPE_MEMO_SIZE:
            del _SHAPES[next(iter(_SHAPES))]  # the oldest entry
        _SHAPES[raw] = known
    return _memoised(
        "fixed", known[0], n_ref, n_win, false_alarm_rate, names, points, scale, draws, known[1]
    )


def _memoised(
    tag: str,
    shape: np.ndarray,
    n_ref: int,
    n_win: int,
    false_alarm_rate: float,
    names: tuple[str, ...],
    points: np.ndarray | None,
    scale: float | None,
    draws: int | None,
    shape_bytes: bytes | None = None,
) -> dict[str, Calibration]:
    """:func:`calibrate` of ``shape`` with seed 0, through the process-wide memo (keyed by
    ``tag`` and every input; bin points and scale only where a statistic reads them).
    ``shape_bytes``: ``shape.tobytes()`` when the caller has it already."""
    if not _reads(names)[1]:
        points = scale = None
    key = (
        tag,
        shape.tobytes() if shape_bytes is None else shape_bytes,
        n_ref,
        n_win,
        false_alarm_rate,
        names,
        None if points is None else points.tobytes(),
        scale,
        draws,
    )
    hit = _CALIBRATIONS.get(key)
    if hit is not None:
        _CALIBRATIONS.move_to_end(key)
        return hit
    out = calibrate(
        shape,
        n_reference=n_ref,
        n_window=n_win,
        false_alarm_rate=false_alarm_rate,
        names=names,
        draws=draws,
        seed=0,
        points=points,
        scale=scale,
    )
    _CALIBRATIONS[key] = out
    while len(_CALIBRATIONS) > CALIBRATION_MEMO_SIZE:
        _CALIBRATIONS.popitem(last=False)
    return out


# ------------------------------------------------------- calibrations for a rolling reference

#: Steps per doubling of the grid on which :func:`rolling_shape` rounds the pooled proportions
#: of a rolling reference and its window (2: neighbouring points differ by 41 %).
ROLLING_SHAPE_STEPS_PER_OCTAVE = 2
#: A bin whose pooled proportion gives at least this many expected values in the smaller of
#: the two samples is "large": where no statistic reads the bins' order, :func:`rolling_shape`
#: spreads the large bins' mass evenly over them (their share of a statistic's null is its
#: asymptotic one, which does not depend on their proportions).
ROLLING_LARGE_COUNT = 10


def rolling_shape(
    reference_counts: np.ndarray, window_counts: np.ndarray, *, ordered: bool
) -> np.ndarray:
    """The null shape of a window judged against a rolling reference: the bin proportions of
    the *pooled* counts (reference + window, the estimate of their common distribution under
    "no change"), rounded to a coarse relative grid (:data:`ROLLING_SHAPE_STEPS_PER_OCTAVE`
    points per doubling) and renormalised. Unless the bins' ``ordered`` positions matter, the
    large bins (:data:`ROLLING_LARGE_COUNT`) share their mass evenly and the proportions are
    sorted in decreasing order. Bins empty in both stay empty (they add nothing to any
    statistic).

    A rolling reference (an earlier window) of a seasonal feature occupies a few of the fixed
    bins, some with small expected counts, and a statistic's null there is far from its null
    under the fixed reference's shape (PSI's eps-clipped terms from sparse bins give it a
    heavier tail). Pooling puts weight wherever either sample has values, so the simulation
    produces the sparse-bin terms the real pair can show; simulating from the reference's
    counts alone never puts a value in a bin it missed. The grid is coarse, and large bins are
    made alike, so that the shapes of a repeating season share a few calibrations: the small
    bins' pooled proportions of two windows of a few hundred events are themselves noisy by
    tens of percent. Simulated from this shape, stable pairs of 200-event windows of a seasonal
    feature breach PSI's 1 % threshold at 0.75-1.1 % (as with their true proportions); from
    the fixed reference's shape, at up to 3.3 %.

    Examples
    --------
    >>> ref, win = np.array([0, 30, 10, 0, 25]), np.array([1, 29, 9, 0, 25])
    >>> rolling_shape(ref, win, ordered=True).round(3)
    array([0.008, 0.507, 0.127, 0.   , 0.358])
    >>> rolling_shape(ref, win, ordered=False).round(3)  # the two large bins made alike
    array([0.434, 0.434, 0.125, 0.008, 0.   ])
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    win = np.asarray(window_counts, dtype=np.float64)
    pooled = ref + win
    p = pooled / pooled.sum()
    q = _on_grid(p, ROLLING_SHAPE_STEPS_PER_OCTAVE)
    large = p * min(ref.sum(), win.sum()) >= ROLLING_LARGE_COUNT
    if ROLLING_LARGE_COUNT > 0 and not ordered and large.any():
        q[large] = max(0.0, 1.0 - q[~large].sum()) / np.count_nonzero(large)
    if not ordered:
        q = -np.sort(-q)
    return q / q.sum()


def cached_calibrate_rolling(
    reference_counts: np.ndarray,
    window_counts: np.ndarray,
    n_ref: int,
    n_win: int,
    false_alarm_rate: float,
    names: tuple[str, ...],
    points: np.ndarray | None = None,
    scale: float | None = None,
    draws: int | None = None,
) -> dict[str, Calibration]:
    """:func:`calibrate` of a window against a rolling reference: simulated from
    :func:`rolling_shape` of the pair, for these sizes, with a fixed seed, memoised in the same
    process-wide memo as :func:`cached_calibrate` (under keys of their own).

    Both counts must be non-negative with a positive total (the window's and the reference's
    are, whenever a window is judged).
    """
    shape = rolling_shape(reference_counts, window_counts, ordered=_reads(names)[0])
    return _memoised("rolling", shape, n_ref, n_win, false_alarm_rate, names, points, scale, draws)
