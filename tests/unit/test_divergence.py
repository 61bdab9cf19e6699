"""Tests of the scalar oracles in tests/oracles/divergence.py (count-vector distances and
the chi-squared test) that stats/statistics.py is checked against.

Reference values come from scipy (a dev-only dependency) or from plain-Python loops.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon as scipy_js

from stream_monitor.stats import bin_counts, quantile_edges
from tests.oracles.divergence import (
    chi2_sf,
    chi_squared,
    hellinger,
    jensen_shannon,
    ks_binned,
    wasserstein_binned,
    wasserstein_scaled,
)

SIZES = [1, 2, 3, 7, 25, 100]
SEEDS = [0, 1, 2]


def _random_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Counts in [0, 60) with roughly a third of the bins forced to zero, positive total."""
    c = rng.integers(0, 60, size=n)
    c[rng.random(n) < 0.35] = 0
    if c.sum() == 0:
        c[rng.integers(n)] = 1 + int(rng.integers(50))
    return c.astype(np.int64)


def _pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 * n + seed)
    return _random_counts(rng, n), _random_counts(rng, n)


def _props(c: np.ndarray) -> np.ndarray:
    return c / c.sum()


def _points(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 77)
    return np.sort(rng.normal(scale=5.0, size=n))


# ------------------------------------------------------------------------- plain-Python oracles


def _brute_hellinger(ref: np.ndarray, cur: np.ndarray) -> float:
    rs, cs = float(ref.sum()), float(cur.sum())
    bc = 0.0
    for r, c in zip(ref.tolist(), cur.tolist(), strict=True):
        bc += math.sqrt((r / rs) * (c / cs))
    return math.sqrt(max(1.0 - bc, 0.0))


def _brute_ks(ref: np.ndarray, cur: np.ndarray) -> float:
    rs, cs = float(ref.sum()), float(cur.sum())
    acc_r = acc_c = 0.0
    best = 0.0
    for r, c in zip(ref.tolist(), cur.tolist(), strict=True):
        acc_r += r
        acc_c += c
        best = max(best, abs(acc_r / rs - acc_c / cs))
    return best


def _brute_chi2_stat(ref: np.ndarray, cur: np.ndarray) -> float:
    rows = [float(ref.sum()), float(cur.sum())]
    n = rows[0] + rows[1]
    stat = 0.0
    for r, c in zip(ref.tolist(), cur.tolist(), strict=True):
        col = r + c
        if col == 0:
            continue
        for obs, row in ((r, rows[0]), (c, rows[1])):
            e = row * col / n
            stat += (obs - e) ** 2 / e
    return stat


# ------------------------------------------------------------------------------ Jensen-Shannon


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_jensen_shannon_matches_scipy(n: int, seed: int) -> None:
    ref, cur = _pair(n, seed)
    got = jensen_shannon(ref, cur)
    expected = float(scipy_js(_props(ref), _props(cur)))
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_jensen_shannon_is_the_distance_not_the_divergence() -> None:
    # JSD with natural log for p = (1/2, 1/2), q = (1, 0), computed by hand; the function
    # returns its square root.
    p, q = [0.5, 0.5], [1.0, 0.0]
    m = [0.75, 0.25]
    jsd = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) + 0.5 * (
        1.0 * math.log(1.0 / 0.75)
    )
    assert m == [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    got = jensen_shannon(np.array([1, 1]), np.array([4, 0]))
    assert got == pytest.approx(math.sqrt(jsd), rel=1e-12)
    assert got != pytest.approx(jsd, rel=1e-3)


def test_jensen_shannon_disjoint_supports_is_sqrt_ln2() -> None:
    got = jensen_shannon(np.array([3, 5, 0, 0]), np.array([0, 0, 9, 1]))
    assert got == pytest.approx(math.sqrt(math.log(2.0)), rel=1e-12)


@pytest.mark.parametrize("n", SIZES)
def test_jensen_shannon_identity_is_zero(n: int) -> None:
    ref, _ = _pair(n, 5)
    assert jensen_shannon(ref, ref) == 0.0
    assert jensen_shannon(ref, 4 * ref) == 0.0


@pytest.mark.parametrize("n", [2, 7, 100])
def test_jensen_shannon_symmetric_scale_invariant_and_bounded(n: int) -> None:
    ref, cur = _pair(n, 3)
    d = jensen_shannon(ref, cur)
    assert d == jensen_shannon(cur, ref)
    assert jensen_shannon(3.7 * ref, 0.01 * cur) == pytest.approx(d, rel=1e-10, abs=1e-14)
    assert 0.0 < d <= math.sqrt(math.log(2.0))


# ----------------------------------------------------------------------------------- Hellinger


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_hellinger_matches_brute_force(n: int, seed: int) -> None:
    ref, cur = _pair(n, seed)
    got = hellinger(ref, cur)
    assert math.isfinite(got)
    # The oracle uses sqrt(1 - BC) directly, which loses ~1e-8 absolute near 0.
    assert got == pytest.approx(_brute_hellinger(ref, cur), rel=1e-9, abs=1e-7)


def test_hellinger_equals_scaled_euclidean_of_root_proportions() -> None:
    ref, cur = _pair(25, 9)
    p, q = _props(ref), _props(cur)
    expected = float(np.linalg.norm(np.sqrt(p) - np.sqrt(q)) / math.sqrt(2.0))
    assert hellinger(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_hellinger_closed_forms() -> None:
    assert hellinger(np.array([3, 0, 0]), np.array([0, 2, 5])) == pytest.approx(1.0, rel=1e-12)
    # p = (1/2, 1/2), q = (1, 0): BC = sqrt(1/2).
    expected = math.sqrt(1.0 - math.sqrt(0.5))
    assert hellinger(np.array([1, 1]), np.array([1, 0])) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", SIZES)
def test_hellinger_identity_is_zero(n: int) -> None:
    ref, _ = _pair(n, 6)
    assert hellinger(ref, ref) == 0.0
    assert hellinger(ref, 8 * ref) == 0.0


@pytest.mark.parametrize("n", [2, 7, 100])
def test_hellinger_symmetric_scale_invariant_and_bounded(n: int) -> None:
    ref, cur = _pair(n, 4)
    h = hellinger(ref, cur)
    assert h == pytest.approx(hellinger(cur, ref), rel=1e-14)
    assert hellinger(0.3 * ref, 11.0 * cur) == pytest.approx(h, rel=1e-10)
    assert 0.0 < h <= 1.0


# --------------------------------------------------------------------------------- Wasserstein


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_wasserstein_matches_scipy_weighted(n: int, seed: int) -> None:
    ref, cur = _pair(n, seed)
    pts = _points(n, seed)
    got = wasserstein_binned(ref, cur, pts)
    expected = stats.wasserstein_distance(pts, pts, u_weights=ref, v_weights=cur)
    assert math.isfinite(got)
    assert got == pytest.approx(float(expected), rel=1e-10, abs=1e-12)


def test_wasserstein_accepts_tied_points_like_scipy() -> None:
    ref = np.array([4, 0, 3, 9, 1])
    cur = np.array([0, 5, 5, 2, 7])
    pts = np.array([-1.0, 0.5, 0.5, 2.0, 2.0])
    expected = stats.wasserstein_distance(pts, pts, u_weights=ref, v_weights=cur)
    assert wasserstein_binned(ref, cur, pts) == pytest.approx(float(expected), rel=1e-12)


def test_wasserstein_on_all_unique_values_equals_raw_sample_distance() -> None:
    rng = np.random.default_rng(11)
    a = np.round(rng.normal(0.0, 1.0, size=400), 1)
    b = np.round(rng.normal(0.4, 1.3, size=300), 1)
    values = np.unique(np.concatenate([a, b]))
    edges = values[:-1]  # bins (-inf, v0], (v0, v1], ..., (v_{k-2}, inf): one value each
    got = wasserstein_binned(bin_counts(a, edges), bin_counts(b, edges), values)
    assert got == pytest.approx(float(stats.wasserstein_distance(a, b)), rel=1e-10)


def test_wasserstein_closed_form_point_masses() -> None:
    pts = np.array([-2.0, 1.0, 4.5, 10.0])
    for i in range(4):
        for j in range(4):
            ref = np.zeros(4)
            cur = np.zeros(4)
            ref[i] = 3.0
            cur[j] = 7.0
            got = wasserstein_binned(ref, cur, pts)
            assert got == pytest.approx(abs(pts[i] - pts[j]), rel=1e-12, abs=0.0)


def test_wasserstein_identity_symmetry_and_count_scaling() -> None:
    ref, cur = _pair(25, 2)
    pts = _points(25, 2)
    assert wasserstein_binned(ref, 5 * ref, pts) == 0.0
    w = wasserstein_binned(ref, cur, pts)
    assert w > 0.0
    assert wasserstein_binned(cur, ref, pts) == w
    assert wasserstein_binned(0.2 * ref, 9.0 * cur, pts) == pytest.approx(w, rel=1e-12)


def test_wasserstein_shift_invariant_and_scale_equivariant_in_points() -> None:
    ref, cur = _pair(25, 8)
    pts = _points(25, 8)
    w = wasserstein_binned(ref, cur, pts)
    assert wasserstein_binned(ref, cur, pts + 123.0) == pytest.approx(w, rel=1e-9)
    assert wasserstein_binned(ref, cur, 3.0 * pts) == pytest.approx(3.0 * w, rel=1e-12)


def test_wasserstein_single_bin_is_zero() -> None:
    assert wasserstein_binned(np.array([5]), np.array([2]), np.array([1.5])) == 0.0


def test_wasserstein_scaled_divides_by_scale_and_is_unit_free() -> None:
    ref, cur = _pair(25, 12)
    pts = _points(25, 12)
    w = wasserstein_binned(ref, cur, pts)
    assert wasserstein_scaled(ref, cur, pts, 2.5) == pytest.approx(w / 2.5, rel=1e-14)
    # Same feature expressed in other units (x -> 1000 x + 7): the scaled value is unchanged.
    s = 1.8
    got = wasserstein_scaled(ref, cur, 1000.0 * pts + 7.0, 1000.0 * s)
    assert got == pytest.approx(w / s, rel=1e-9)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_wasserstein_scaled_rejects_bad_scale(bad: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        wasserstein_scaled(np.array([1, 2]), np.array([2, 1]), np.array([0.0, 1.0]), bad)


@pytest.mark.parametrize(
    "pts",
    [
        np.array([0.0, 1.0]),  # too short
        np.array([0.0, 1.0, 2.0, 3.0]),  # too long (n_bins + 1 edges, not points)
        np.array([0.0, 2.0, 1.0]),  # decreasing
        np.array([0.0, math.nan, 1.0]),
        np.array([-math.inf, 0.0, 1.0]),
    ],
)
def test_wasserstein_rejects_bad_points(pts: np.ndarray) -> None:
    with pytest.raises(ValueError, match="points"):
        wasserstein_binned(np.array([1, 2, 3]), np.array([3, 2, 1]), pts)


# ------------------------------------------------------------------------------ Kolmogorov-Smirnov


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_ks_binned_matches_brute_force(n: int, seed: int) -> None:
    ref, cur = _pair(n, seed)
    assert ks_binned(ref, cur) == pytest.approx(_brute_ks(ref, cur), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rounding", [None, 1, 0])
def test_ks_binned_is_exact_when_every_value_is_an_edge(seed: int, rounding: int | None) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, size=500)
    b = rng.normal(0.2, 1.1, size=350)
    if rounding is not None:  # ties within and across samples
        a, b = np.round(a, rounding), np.round(b, rounding)
    edges = np.unique(np.concatenate([a, b]))
    got = ks_binned(bin_counts(a, edges), bin_counts(b, edges))
    # Exact up to float rounding: scipy re-expresses D as h / lcm(n1, n2) (possible values are
    # >= 1 / lcm ~ 6e-6 apart), we compute i / n1 - j / n2, which can differ in the last bit.
    assert got == pytest.approx(float(stats.ks_2samp(a, b).statistic), rel=1e-13, abs=0.0)


@pytest.mark.parametrize("seed", range(6))
def test_ks_binned_is_a_lower_bound_with_coarse_bins(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    a = rng.lognormal(0.0, 1.0, size=800)
    b = rng.lognormal(0.1 * seed, 1.0 + 0.1 * seed, size=600)
    edges = quantile_edges(a, n_bins=10)
    got = ks_binned(bin_counts(a, edges), bin_counts(b, edges))
    exact = float(stats.ks_2samp(a, b).statistic)
    assert got <= exact + 1e-12  # rounding only; a real overshoot is >= 1 / lcm(n1, n2)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shift", [0.0, 0.25, 1.0])
def test_ks_binned_close_on_smooth_data_with_50_bins(seed: int, shift: float) -> None:
    rng = np.random.default_rng(200 + seed)
    a = rng.normal(0.0, 1.0, size=3000)
    b = rng.normal(shift, 1.2, size=2000)
    edges = quantile_edges(a, n_bins=50)
    got = ks_binned(bin_counts(a, edges), bin_counts(b, edges))
    exact = float(stats.ks_2samp(a, b).statistic)
    assert got <= exact + 1e-12  # rounding only; a real overshoot is >= 1 / lcm(n1, n2)
    assert exact - got < 0.05


def test_ks_binned_closed_forms_symmetry_and_scaling() -> None:
    assert ks_binned(np.array([4, 0, 0]), np.array([0, 0, 9])) == 1.0
    assert ks_binned(np.array([1, 1, 1, 1]), np.array([0, 0, 1, 1])) == 0.5
    ref, cur = _pair(25, 1)
    d = ks_binned(ref, cur)
    assert d > 0.0
    assert ks_binned(cur, ref) == d
    assert ks_binned(7.0 * ref, 0.5 * cur) == pytest.approx(d, rel=1e-12)
    assert ks_binned(ref, 3 * ref) == 0.0


# --------------------------------------------------------------------------------- chi-squared


def _df_grid() -> list[tuple[float, float]]:
    grid = []
    for df in [1, 2, 3, 4, 5, 7, 10, 17, 30, 50, 99, 100, 257, 1000, 5000]:
        xs = {1e-10, 1e-4, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 40.0, 100.0, 300.0, 600.0}
        xs |= {df * f for f in (0.25, 0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0)}
        xs |= {df - 2.0, df - 1.0, df + 1.0, df + 2.0, df + 3.0}  # around the series/CF switch
        grid += [(float(df), x) for x in sorted(xs) if x > 0]
    return grid


def test_chi2_sf_matches_scipy_on_a_grid() -> None:
    checked = 0
    for df, x in _df_grid():
        expected = float(stats.chi2.sf(x, df))
        if expected < 1e-290:  # denormal territory: only check that we are tiny as well
            assert chi2_sf(x, df) < 1e-280
            continue
        assert chi2_sf(x, df) == pytest.approx(expected, rel=1e-9), (df, x)
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("x", [0.01, 0.3, 1.0, 3.0, 9.0, 40.0, 200.0])
def test_chi2_sf_closed_forms(x: float) -> None:
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2.0), rel=1e-12)
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2.0)), rel=1e-11)
    # df = 4: exp(-x/2) * (1 + x/2)
    assert chi2_sf(x, 4) == pytest.approx(math.exp(-x / 2.0) * (1.0 + x / 2.0), rel=1e-11)


def test_chi2_sf_limits_and_monotonicity() -> None:
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(math.inf, 3) == 0.0
    xs = np.linspace(0.0, 60.0, 241)
    values = [chi2_sf(float(x), 7) for x in xs]
    assert all(b < a for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("x", "df"), [(1.0, 0), (1.0, -2), (1.0, math.inf), (-0.1, 3)])
def test_chi2_sf_rejects_bad_arguments(x: float, df: float) -> None:
    with pytest.raises(ValueError):
        chi2_sf(x, df)


def test_chi2_sf_rejects_nan() -> None:
    with pytest.raises(ValueError):
        chi2_sf(math.nan, 3)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [2, 3, 7, 25, 100])
def test_chi_squared_matches_scipy_contingency(n: int, seed: int) -> None:
    ref, cur = _pair(n, seed)
    keep = (ref > 0) | (cur > 0)
    stat, p = chi_squared(ref, cur)
    if keep.sum() < 2:
        assert (stat, p) == (0.0, 1.0)
        return
    table = np.vstack([ref[keep], cur[keep]])
    res = stats.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(float(res[0]), rel=1e-10)
    assert p == pytest.approx(float(res[1]), rel=1e-9, abs=1e-300)
    assert stat == pytest.approx(_brute_chi2_stat(ref, cur), rel=1e-10)


def test_chi_squared_drops_bins_empty_on_both_sides() -> None:
    ref = np.array([0, 30, 0, 12, 5, 0])
    cur = np.array([0, 20, 0, 25, 9, 0])
    with_zeros = chi_squared(ref, cur)
    without = chi_squared(ref[[1, 3, 4]], cur[[1, 3, 4]])
    assert with_zeros == without
    res = stats.chi2_contingency(np.vstack([ref[[1, 3, 4]], cur[[1, 3, 4]]]), correction=False)
    assert res[2] == 2  # the dropped bins do not count towards the degrees of freedom
    assert with_zeros[1] == pytest.approx(float(res[1]), rel=1e-9)


def test_chi_squared_keeps_bins_empty_on_one_side_only() -> None:
    ref = np.array([40, 0, 60])
    cur = np.array([30, 10, 60])
    stat, p = chi_squared(ref, cur)
    res = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert stat == pytest.approx(float(res[0]), rel=1e-12)
    assert p == pytest.approx(float(res[1]), rel=1e-9)


def test_chi_squared_two_by_two_closed_form() -> None:
    a, b, c, d = 30.0, 10.0, 12.0, 28.0
    n = a + b + c + d
    expected = n * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    stat, p = chi_squared(np.array([a, b]), np.array([c, d]))
    assert stat == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(math.erfc(math.sqrt(expected / 2.0)), rel=1e-10)


@pytest.mark.parametrize("n", [2, 7, 100])
def test_chi_squared_identity_gives_p_one(n: int) -> None:
    ref, _ = _pair(n, 13)
    stat, p = chi_squared(ref, 3 * ref)
    assert stat == pytest.approx(0.0, abs=1e-9)
    assert p == pytest.approx(1.0, abs=1e-9)


def test_chi_squared_single_nonempty_bin() -> None:
    assert chi_squared(np.array([0, 7, 0]), np.array([0, 3, 0])) == (0.0, 1.0)


def test_chi_squared_symmetric_and_scales_with_sample_size() -> None:
    ref, cur = _pair(25, 7)
    stat, p = chi_squared(ref, cur)
    stat_swapped, p_swapped = chi_squared(cur, ref)
    assert stat_swapped == pytest.approx(stat, rel=1e-12)
    assert p_swapped == pytest.approx(p, rel=1e-9)
    # Not a proportions-only statistic: 10x the data, same proportions, 10x the evidence.
    stat10, p10 = chi_squared(10 * ref, 10 * cur)
    assert stat10 == pytest.approx(10.0 * stat, rel=1e-12)
    assert p10 < p


def test_chi_squared_detects_a_real_shift_and_not_a_null() -> None:
    rng = np.random.default_rng(21)
    a = rng.normal(size=5000)
    edges = quantile_edges(a, 10)
    same = bin_counts(rng.normal(size=5000), edges)
    shifted = bin_counts(rng.normal(0.2, 1.0, size=5000), edges)
    ref = bin_counts(a, edges)
    assert chi_squared(ref, shifted)[1] < 1e-6
    assert chi_squared(ref, same)[1] > 1e-3


# ------------------------------------------------------------------------ zeros and validation

PairFn = Callable[[np.ndarray, np.ndarray], Any]

ALL: list[tuple[str, PairFn]] = [
    ("jensen_shannon", jensen_shannon),
    ("hellinger", hellinger),
    ("ks_binned", ks_binned),
    ("chi_squared", chi_squared),
    ("wasserstein_binned", lambda r, c: wasserstein_binned(r, c, np.arange(float(r.size)))),
    ("wasserstein_scaled", lambda r, c: wasserstein_scaled(r, c, np.arange(float(r.size)), 2.0)),
]
IDS = [name for name, _ in ALL]
FNS = [fn for _, fn in ALL]


@pytest.mark.parametrize("fn", FNS, ids=IDS)
def test_zero_bins_never_give_nan(fn: PairFn) -> None:
    ref = np.array([0, 0, 5, 0, 3, 0, 0])
    cur = np.array([4, 0, 0, 0, 3, 1, 0])
    out = fn(ref, cur)
    values = out if isinstance(out, tuple) else (out,)
    assert all(math.isfinite(v) for v in values)
    assert all(v >= 0.0 for v in values)


@pytest.mark.parametrize("fn", FNS, ids=IDS)
def test_length_mismatch_raises(fn: PairFn) -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        fn(np.array([1, 2, 3]), np.array([1, 2]))


@pytest.mark.parametrize("fn", FNS, ids=IDS)
@pytest.mark.parametrize("side", [0, 1])
def test_negative_counts_raise(fn: PairFn, side: int) -> None:
    good = np.array([3.0, 2.0, 5.0])
    bad = np.array([3.0, -1.0, 5.0])
    args = (bad, good) if side == 0 else (good, bad)
    with pytest.raises(ValueError, match="non-negative"):
        fn(*args)


@pytest.mark.parametrize("fn", FNS, ids=IDS)
@pytest.mark.parametrize("side", [0, 1])
def test_empty_side_raises(fn: PairFn, side: int) -> None:
    good = np.array([3, 2, 5])
    empty = np.zeros(3, dtype=np.int64)
    args = (empty, good) if side == 0 else (good, empty)
    with pytest.raises(ValueError, match="positive total"):
        fn(*args)


@pytest.mark.parametrize("fn", FNS, ids=IDS)
def test_zero_length_vectors_raise(fn: PairFn) -> None:
    with pytest.raises(ValueError, match="positive total"):
        fn(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


@pytest.mark.parametrize("fn", FNS, ids=IDS)
@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_non_finite_counts_raise(fn: PairFn, bad_value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        fn(np.array([1.0, bad_value, 2.0]), np.array([1.0, 1.0, 1.0]))
