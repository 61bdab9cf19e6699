from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scipy import stats

from stream_monitor.stats import (
    BoundedCounter,
    CategoricalHistogram,
    NumericHistogram,
    bin_counts,
    quantile_edges,
    top_categories,
)
from tests.oracles.divergence import psi, psi_noise_floor


def _json_round_trip(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d))


def _brute_bin_counts(values: list[float], edges: list[float]) -> list[int]:
    """Bins (-inf, e0], (e0, e1], ..., (e_last, inf) by direct comparison."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        if math.isnan(v):
            continue
        for i, e in enumerate(edges):
            if v <= e:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return counts


def _brute_psi(ref: list[float], cur: list[float], eps: float) -> float:
    rs, cs = sum(ref), sum(cur)
    total = 0.0
    for r, c in zip(ref, cur, strict=True):
        p = max(r / rs, eps)
        q = max(c / cs, eps)
        total += (q - p) * math.log(q / p)
    return total


# ---------------------------------------------------------------- quantile_edges / bin_counts


@pytest.mark.parametrize("n_bins", [2, 5, 10, 20])
def test_quantile_edges_match_numpy_quantile(n_bins: int) -> None:
    x = np.random.default_rng(1).lognormal(size=3001)
    expected = np.quantile(x, np.linspace(0, 1, n_bins + 1)[1:-1])
    edges = quantile_edges(x, n_bins)
    assert edges.dtype == np.float64
    np.testing.assert_array_equal(edges, expected)


def test_quantile_edges_ignore_nan_and_deduplicate() -> None:
    x = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, np.nan, np.nan])
    edges = quantile_edges(x, 10)
    clean = x[~np.isnan(x)]
    np.testing.assert_array_equal(edges, np.unique(np.quantile(clean, np.linspace(0, 1, 11)[1:-1])))
    assert len(edges) == len(set(edges.tolist())) < 9
    assert np.all(np.diff(edges) > 0)


def test_quantile_edges_empty_and_all_nan() -> None:
    assert quantile_edges(np.array([]), 10).size == 0
    assert quantile_edges(np.array([np.nan, np.nan]), 10).size == 0
    assert bin_counts(np.array([1.0, -3.0]), quantile_edges(np.array([]))).tolist() == [2]
    with pytest.raises(ValueError):
        quantile_edges(np.arange(5.0), 0)


def test_bin_counts_vs_brute_force() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=500)
    edges = quantile_edges(ref, 10)
    values = np.concatenate(
        [
            rng.normal(scale=2.0, size=2000),  # many beyond the reference range
            edges,  # exactly on every edge
            edges[:3],
            [np.nan] * 7,
            [np.inf, -np.inf, ref.min(), ref.max()],
        ]
    )
    rng.shuffle(values)
    got = bin_counts(values, edges)
    assert got.dtype == np.int64
    assert got.tolist() == _brute_bin_counts(values.tolist(), edges.tolist())
    assert got.sum() == np.count_nonzero(~np.isnan(values))


def test_bin_counts_value_on_edge_goes_left() -> None:
    assert bin_counts(np.array([1.0, 2.0]), np.array([1.0, 2.0])).tolist() == [1, 1, 0]
    assert bin_counts(np.array([np.nextafter(1.0, 2.0)]), np.array([1.0, 2.0])).tolist() == [
        0,
        1,
        0,
    ]


# ---------------------------------------------------------------- NumericHistogram


def test_numeric_histogram_incremental_equals_batch() -> None:
    rng = np.random.default_rng(3)
    edges = quantile_edges(rng.normal(size=1000), 8)
    batches = [rng.normal(loc=0.5, size=n) for n in (0, 1, 17, 400, 1000)]
    batches[2][[0, 5]] = np.nan
    h = NumericHistogram(edges)
    for b in batches:
        h.update(b)
    allv = np.concatenate(batches)
    np.testing.assert_array_equal(h.counts, bin_counts(allv, edges))
    assert h.total == 1418 - 2
    assert h.missing == 2
    h.reset()
    assert h.total == 0 and h.missing == 0 and h.counts.tolist() == [0] * (len(edges) + 1)


def test_numeric_histogram_rejects_bad_edges() -> None:
    for bad in ([1.0, 1.0], [2.0, 1.0], [0.0, np.nan], [[0.0, 1.0]]):
        with pytest.raises(ValueError):
            NumericHistogram(bad)


def test_numeric_histogram_snapshot_round_trip() -> None:
    rng = np.random.default_rng(4)
    h = NumericHistogram(quantile_edges(rng.normal(size=777), 10))
    h.update(np.append(rng.normal(size=300), np.nan))
    snap = _json_round_trip(h.snapshot())
    assert snap["v"] == 1
    r = NumericHistogram.from_snapshot(snap)
    np.testing.assert_array_equal(r.edges, h.edges)
    np.testing.assert_array_equal(r.counts, h.counts)
    assert (r.total, r.missing) == (h.total, h.missing) == (300, 1)
    more = np.concatenate([rng.normal(size=50), h.edges, [np.nan]])
    h.update(more)
    r.update(more)
    np.testing.assert_array_equal(r.counts, h.counts)
    assert r.missing == h.missing == 2


def test_numeric_histogram_unknown_version_refused() -> None:
    snap = NumericHistogram([0.0]).snapshot()
    for v in (2, 0, None):
        with pytest.raises(ValueError):
            NumericHistogram.from_snapshot({**snap, "v": v})


# ---------------------------------------------------------------- CategoricalHistogram


def test_categorical_histogram_vs_counter() -> None:
    rng = np.random.default_rng(5)
    cats = ["red", "green", "blue", "cyan"]
    pool = [*cats, "mauve", "teal", ""]
    batches = [[pool[i] for i in rng.integers(0, len(pool), size=n)] for n in (0, 3, 250, 999)]
    h = CategoricalHistogram(cats)
    for b in batches:
        h.update(b)
    c = Counter(v for b in batches for v in b)
    expected_other = sum(n for k, n in c.items() if k not in cats)
    assert h.counts.tolist() == [c[k] for k in cats] + [expected_other]
    assert h.unseen == expected_other == h.counts[-1] > 0
    assert h.total == sum(len(b) for b in batches)
    h.reset()
    assert h.total == 0 and h.unseen == 0


def test_categorical_histogram_snapshot_round_trip() -> None:
    h = CategoricalHistogram(["a", "b", "c"])
    h.update(["a", "a", "x", "c"])
    snap = _json_round_trip(h.snapshot())
    assert snap["v"] == 1
    r = CategoricalHistogram.from_snapshot(snap)
    assert r.categories == h.categories
    np.testing.assert_array_equal(r.counts, h.counts)
    for hist in (h, r):
        hist.update(["b", "y", "a"])
    np.testing.assert_array_equal(r.counts, h.counts)
    assert r.counts.tolist() == [3, 1, 1, 2]
    with pytest.raises(ValueError):
        CategoricalHistogram.from_snapshot({**snap, "v": 99})
    with pytest.raises(ValueError):
        CategoricalHistogram(["a", "a"])


# ---------------------------------------------------------------- top_categories / BoundedCounter


def test_top_categories_deterministic_ties() -> None:
    counts = {"d": 2, "b": 5, "a": 5, "c": 2, "e": 9, "f": 1}
    assert top_categories(counts, 4) == ["e", "a", "b", "c"]
    assert top_categories(dict(reversed(list(counts.items()))), 4) == ["e", "a", "b", "c"]
    assert top_categories(counts, 0) == []
    assert top_categories(counts, 100) == ["e", "a", "b", "c", "d", "f"]


def test_bounded_counter_capacity_and_overflow() -> None:
    rng = np.random.default_rng(6)
    values = [f"k{i}" for i in rng.integers(0, 50, size=2000)]
    bc = BoundedCounter(capacity=10)
    bc.update(values[:700])
    bc.update(iter(values[700:]))
    first10: list[str] = list(dict.fromkeys(values))[:10]
    full = Counter(values)
    assert bc.counts == {k: full[k] for k in first10}
    assert bc.overflow == len(values) - sum(bc.counts.values()) > 0
    bc.counts["k0"] = -1  # a copy; internal state untouched
    assert bc.counts == {k: full[k] for k in first10}


def test_bounded_counter_snapshot_round_trip() -> None:
    bc = BoundedCounter(capacity=2)
    bc.update(["a", "b", "c", "a"])
    snap = _json_round_trip(bc.snapshot())
    assert snap["v"] == 1
    r = BoundedCounter.from_snapshot(snap)
    assert (r.counts, r.overflow, r.capacity) == (bc.counts, bc.overflow, 2)
    for c in (bc, r):
        c.update(["b", "d", "d"])
    assert r.counts == bc.counts == {"a": 2, "b": 2}
    assert r.overflow == bc.overflow == 3
    with pytest.raises(ValueError):
        BoundedCounter.from_snapshot({**snap, "v": 2})


# ---------------------------------------------------------------- psi


def test_psi_vs_brute_force() -> None:
    rng = np.random.default_rng(8)
    for _ in range(50):
        k = int(rng.integers(2, 20))
        ref = rng.integers(0, 200, size=k)
        cur = rng.integers(0, 200, size=k)
        ref[0] += 1
        cur[-1] += 1
        if k > 3:
            ref[1] = 0  # exercise the eps clip
        for eps in (1e-4, 1e-2):
            assert psi(ref, cur, eps) == pytest.approx(
                _brute_psi(ref.tolist(), cur.tolist(), eps), rel=1e-12, abs=1e-15
            )


def test_psi_identical_distributions_is_zero() -> None:
    ref = np.array([10, 0, 30, 60])
    assert psi(ref, ref) == 0.0
    assert psi(ref, ref * 7) == pytest.approx(0.0, abs=1e-15)


def test_psi_equals_jeffreys_divergence() -> None:
    rng = np.random.default_rng(9)
    for _ in range(20):
        ref = rng.integers(1, 1000, size=10)
        cur = rng.integers(1, 1000, size=10)
        p, q = ref / ref.sum(), cur / cur.sum()
        assert psi(ref, cur) == pytest.approx(stats.entropy(q, p) + stats.entropy(p, q), abs=1e-9)


def test_psi_errors() -> None:
    with pytest.raises(ValueError):
        psi(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError):
        psi(np.array([0, 0]), np.array([1, 2]))
    with pytest.raises(ValueError):
        psi(np.array([1, 2]), np.array([0, 0]))
    with pytest.raises(ValueError):
        psi(np.array([1, -2]), np.array([1, 2]))


def test_psi_noise_floor_formula() -> None:
    assert psi_noise_floor(10, 1000, 500) == pytest.approx(9 * (1 / 1000 + 1 / 500))
    assert psi_noise_floor(1, 10, 10) == 0.0
    with pytest.raises(ValueError):
        psi_noise_floor(10, 0, 100)


@pytest.mark.parametrize(("n_ref", "n_cur"), [(2000, 500), (5000, 5000)])
def test_psi_noise_floor_matches_monte_carlo(n_ref: int, n_cur: int) -> None:
    rng = np.random.default_rng(10)
    values = []
    for _ in range(400):
        ref = rng.gamma(2.0, size=n_ref)
        cur = rng.gamma(2.0, size=n_cur)
        edges = quantile_edges(ref, 10)
        values.append(psi(bin_counts(ref, edges), bin_counts(cur, edges)))
    expected = psi_noise_floor(10, n_ref, n_cur)
    assert np.mean(values) == pytest.approx(expected, rel=0.25)
