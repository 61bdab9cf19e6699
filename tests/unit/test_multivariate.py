"""MMD two-sample test on bounded samples (stream_monitor.stats.multivariate)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from scipy.stats import ks_2samp, kstest, norm

from stream_monitor.stats.multivariate import MMDDrift, MMDResult, mmd_cost

D = 5


def copula(rng: np.random.Generator, n: int, rho: float, shift: float = 0.0) -> np.ndarray:
    """Gaussian copula in PIT space: columns 0 and 1 correlated ``rho``, column 2 shifted by
    ``shift`` sd before the (reference) normal CDF."""
    cov = np.eye(D)
    cov[0, 1] = cov[1, 0] = rho
    z = rng.multivariate_normal(np.zeros(D), cov, size=n)
    z[:, 2] += shift
    return norm.cdf(z)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return copula(np.random.default_rng(101), 2000, 0.8)


def brute_mmd2(x: np.ndarray, y: np.ndarray, h: float) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2.0 * h * h)))

    def mean_k(p: np.ndarray, q: np.ndarray) -> float:
        return sum(k(a, b) for a in p for b in q) / (len(p) * len(q))

    return mean_k(x, x) + mean_k(y, y) - 2.0 * mean_k(x, y)


def test_statistic_matches_brute_force_double_loop() -> None:
    rng = np.random.default_rng(3)
    ref = rng.random((15, 3))
    win = rng.random((12, 3)) ** 2
    m = MMDDrift(ref, window_sample=20, permutations=50, seed=1)
    # Bandwidth: bandwidth_scale (0.5) x the median distance between distinct reference rows.
    dists = [np.linalg.norm(ref[i] - ref[j]) for i in range(15) for j in range(i + 1, 15)]
    assert m.bandwidth == pytest.approx(0.5 * float(np.median(dists)), rel=1e-12)
    m.update(win)
    r = m.close_window()
    assert isinstance(r, MMDResult)
    assert r.statistic == pytest.approx(brute_mmd2(ref, win, m.bandwidth), rel=1e-9, abs=1e-12)
    assert (r.n_reference, r.n_window, r.permutations, r.bandwidth) == (15, 12, 50, m.bandwidth)
    assert 1 / 51 <= r.p_value <= 1.0
    # bandwidth_scale=1 is the plain median heuristic
    m1 = MMDDrift(ref, bandwidth_scale=1.0)
    assert m1.bandwidth == pytest.approx(float(np.median(dists)), rel=1e-12)


def test_broken_correlation_detected_where_univariate_ks_is_not(reference: np.ndarray) -> None:
    m = MMDDrift(reference, window_sample=256, permutations=200, seed=11)
    assert m.reference.shape == (512, D)
    detected = ks_windows = 0
    for i in range(20):
        win = copula(np.random.default_rng(1000 + i), 256, 0.0)  # same marginals, independent
        m.update(win)
        r = m.close_window()
        assert r is not None
        detected += r.p_value < 0.01
        ks_windows += any(ks_2samp(win[:, c], reference[:, c]).pvalue < 0.01 for c in range(D))
    assert detected >= 19
    assert ks_windows <= 3


def test_calibration_under_no_drift(reference: np.ndarray) -> None:
    m = MMDDrift(reference, window_sample=256, permutations=200, seed=12)
    p = []
    for i in range(100):
        m.update(copula(np.random.default_rng(50_000 + i), 256, 0.8))
        r = m.close_window()
        assert r is not None
        p.append(r.p_value)
    rate = float(np.mean(np.array(p) < 0.05))
    assert 0.01 <= rate <= 0.10
    assert m.windows_tested == 100


def test_mean_shift_in_one_column_detected(reference: np.ndarray) -> None:
    m = MMDDrift(reference, window_sample=256, permutations=200, seed=13)
    for i in range(5):
        m.update(copula(np.random.default_rng(7000 + i), 256, 0.8, shift=0.5))
        r = m.close_window()
        assert r is not None and r.p_value < 0.01


def test_reservoir_is_bounded_and_uniform_over_the_window() -> None:
    n = 10_000
    kept: list[np.ndarray] = []
    for seed in range(20):
        m = MMDDrift(np.random.default_rng(seed).random((50, 2)), window_sample=100, seed=seed)
        rng = np.random.default_rng(seed + 100)
        start = 0
        while start < n:  # batches of varying size, some larger than the reservoir
            size = min(int(rng.integers(1, 400)), n - start)
            idx = np.arange(start, start + size)
            m.update(np.column_stack([idx / n, np.full(size, 0.25)]))
            start += size
            assert m.window.shape[0] == min(start, 100)
        assert m.rows_seen == n
        rows = np.rint(m.window[:, 0] * n).astype(int)
        assert len(set(rows.tolist())) == 100  # distinct rows of the window
        kept.append(rows)
    allk = np.concatenate(kept)
    assert abs(allk.mean() - (n - 1) / 2) < 300  # SE ~ 65
    assert kstest(allk / n, "uniform").pvalue > 0.001
    # one batch larger than the reservoir: the latest row drawing a slot wins, still uniform
    m = MMDDrift(np.random.default_rng(0).random((50, 2)), window_sample=100, seed=5)
    m.update(np.column_stack([np.arange(n) / n, np.zeros(n)]))
    assert m.window.shape == (100, 2) and m.rows_seen == n
    assert abs(m.window[:, 0].mean() - 0.5) < 0.12


def test_small_window_returns_none_and_clears() -> None:
    m = MMDDrift(np.random.default_rng(0).random((30, 2)), window_sample=50)
    m.update(np.random.default_rng(1).random((9, 2)))
    assert m.close_window() is None
    assert m.rows_seen == 0 and m.window.shape == (0, 2) and m.windows_tested == 0
    m.update(np.empty((0, 2)))
    m.update(np.random.default_rng(2).random((10, 2)))
    assert m.close_window() is not None and m.windows_tested == 1


def test_nan_is_imputed_with_one_half() -> None:
    rng = np.random.default_rng(4)
    ref = rng.random((40, 3))
    ref_nan = ref.copy()
    ref_nan[::5, 1] = np.nan
    m = MMDDrift(ref_nan, window_sample=30, permutations=30, seed=2)
    filled = ref.copy()
    filled[::5, 1] = 0.5
    np.testing.assert_array_equal(m.reference, filled)
    assert np.isnan(ref_nan[0, 1])  # the caller's array is not modified
    win = rng.random((25, 3))
    win_nan = win.copy()
    win_nan[:, 0] = np.nan
    win_half = win.copy()
    win_half[:, 0] = 0.5
    m.update(win_nan)
    np.testing.assert_array_equal(m.window, win_half)
    twin = MMDDrift(filled, window_sample=30, permutations=30, seed=2)
    twin.update(win_half)
    assert m.close_window() == twin.close_window()


def test_reference_subsample_is_seeded() -> None:
    ref = np.random.default_rng(0).random((1000, 2))
    a = MMDDrift(ref, max_reference=100, seed=3).reference
    b = MMDDrift(ref, max_reference=100, seed=3).reference
    c = MMDDrift(ref, max_reference=100, seed=4).reference
    assert a.shape == (100, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rows = {tuple(r) for r in ref.tolist()}
    assert all(tuple(r) in rows for r in a.tolist())


def test_snapshot_round_trip_continues_identically(reference: np.ndarray) -> None:
    def batches(i: int) -> list[np.ndarray]:
        rng = np.random.default_rng(900 + i)
        return [copula(rng, int(rng.integers(50, 300)), 0.8 if i % 2 else 0.3) for _ in range(3)]

    a = MMDDrift(reference, window_sample=128, permutations=50, max_reference=200, seed=9)
    for x in batches(0):
        a.update(x)
    assert a.close_window() is not None
    a.update(batches(1)[0])  # mid-window, reservoir full
    snap = a.snapshot()
    text = json.dumps(snap, allow_nan=False)
    assert orjson.loads(orjson.dumps(snap)) == json.loads(text)  # 64-bit JSON encoders too
    b = MMDDrift.from_snapshot(json.loads(text))
    assert (b.rows_seen, b.windows_tested, b.bandwidth) == (a.rows_seen, 1, a.bandwidth)
    np.testing.assert_array_equal(b.window, a.window)
    for i in range(1, 5):
        for x in batches(i)[1 if i == 1 else 0 :]:
            a.update(x)
            b.update(x)
        ra, rb = a.close_window(), b.close_window()
        assert ra is not None and ra == rb
    assert a.snapshot() == b.snapshot()


def test_validation_errors() -> None:
    ok = np.random.default_rng(0).random((20, 3))
    with pytest.raises(ValueError, match="2 columns"):
        MMDDrift(ok[:, :1])
    with pytest.raises(ValueError, match="at least 10 rows"):
        MMDDrift(ok[:9])
    with pytest.raises(ValueError, match="2-D"):
        MMDDrift(ok[:, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MMDDrift(ok * 2.0)
    bad = ok.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MMDDrift(bad)
    for kw in ({"window_sample": 9}, {"permutations": 0}, {"max_reference": 5}):
        with pytest.raises(ValueError):
            MMDDrift(ok, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bandwidth_scale"):
        MMDDrift(ok, bandwidth_scale=0.0)
    m = MMDDrift(ok, window_sample=10)
    m.update(ok[:5])
    with pytest.raises(ValueError, match="columns"):
        m.update(ok[:, :2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.update(-ok)
    assert m.rows_seen == 5  # failed updates change nothing
    snap = m.snapshot()
    with pytest.raises(ValueError, match="version"):
        MMDDrift.from_snapshot({**snap, "v": 99})
    with pytest.raises(ValueError, match="rows_seen"):
        MMDDrift.from_snapshot({**snap, "rows_seen": 7})
    with pytest.raises(ValueError):
        mmd_cost(-1, 10, 2, 10)


def test_mmd_cost_counts_the_permutation_product() -> None:
    n = 512 + 256
    assert mmd_cost(512, 256, 5, 200) >= 2 * n * n * 201
    assert mmd_cost(512, 256, 50, 200) > mmd_cost(512, 256, 5, 200)
