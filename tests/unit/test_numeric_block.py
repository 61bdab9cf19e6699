"""The numeric block path (``ingest_numeric``) leaves every feature as its own ``ingest`` would.

Each case freezes a few numeric features on seeded references, copies them through their
snapshots, feeds one copy column by column (``NumericFeature.ingest``) and the other as one
matrix (``ingest_numeric``), and compares everything: the snapshots (counts, quality columns,
sums), the per-row outputs (``last_u``, ``last_bins``) and the scores waiting for the
detectors; then runs the detectors on both and compares again.
"""

from __future__ import annotations

import numpy as np
import pytest

from stream_monitor.config import DriftConfig
from stream_monitor.monitor.feature import (
    NumericFeature,
    _ranks_and_bins,
    _search_tables,
    feature_from_snapshot,
    ingest_numeric,
    run_detectors,
)
from stream_monitor.reference.profile import NumericProfile
from stream_monitor.stats.pit import PIT_POINTS

CFG = DriftConfig(quality={"sentinels": [-1.0, 999.0]})
#: Seven bins: every edge between two points of the PIT grid, none on one.
CFG_7 = DriftConfig(n_bins=7, quality={"sentinels": [-1.0, 999.0]})


def _features(
    rng: np.random.Generator, k: int, ring: int, cfg: DriftConfig = CFG
) -> list[NumericFeature]:
    out = []
    for j in range(k):
        f = NumericFeature(f"f{j}", "data_drift", cfg)
        if j % 3 == 0:  # integers: many values equal to a PIT grid point or a bin edge
            ref = rng.integers(0, 12, 1000).astype(float)
        elif j % 3 == 1:
            ref = rng.lognormal(0.0, 1.0, 1000)
        else:
            ref = np.concatenate([rng.normal(0, 1, 990), np.full(10, -1.0)])  # a sentinel
        f.observe_reference(ref.tolist())
        f.freeze(ring)
        out.append(f)
    return out


def _copy(features: list[NumericFeature]) -> list[NumericFeature]:
    return [feature_from_snapshot(f.snapshot(), f.cfg) for f in features]  # type: ignore[misc]


def _chunk(rng: np.random.Generator, k: int, n: int, shift: float) -> np.ndarray:
    x = np.empty((k, n))
    for j in range(k):
        if j % 3 == 0:
            x[j] = rng.integers(-2, 15, n)
        elif j % 3 == 1:
            x[j] = rng.lognormal(shift, 1.0, n)
        else:
            x[j] = rng.normal(shift, 1, n)
    # missing (NaN, inf), sentinels, magnitudes beyond the clip
    cells = rng.random((k, n))
    x[cells < 0.02] = np.nan
    x[(cells >= 0.02) & (cells < 0.03)] = np.inf
    x[(cells >= 0.03) & (cells < 0.04)] = -1.0
    x[(cells >= 0.04) & (cells < 0.045)] = 999.0
    x[(cells >= 0.045) & (cells < 0.05)] = -1e308
    return x


def _same(a: NumericFeature, b: NumericFeature) -> None:
    assert a.snapshot() == b.snapshot()
    for name in ("last_u", "last_bins", "pending_z", "_pending_rows"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            assert va.dtype == vb.dtype, name
            np.testing.assert_array_equal(va, vb, err_msg=name)
    assert a.detector_points == b.detector_points
    assert a.levels == b.levels


@pytest.mark.parametrize("cfg", [CFG, CFG_7], ids=["10 bins", "7 bins"])
@pytest.mark.parametrize("seed", range(6))
def test_block_equals_feature_by_feature(seed: int, cfg: DriftConfig) -> None:
    rng = np.random.default_rng(seed)
    k, ring = 7, 4
    one = _features(rng, k, ring, cfg)
    block = _copy(one)
    for step in range(30):
        n = int(rng.integers(1, 300))
        x = _chunk(rng, k, n, shift=0.0 if step < 15 else 1.5)
        kind = step % 3
        if kind == 0:  # one pane
            slots = np.full(n, step % ring, dtype=np.int64)
        elif kind == 1:  # two panes and late rows
            slots = rng.choice(np.array([-1, 1, 2]), n).astype(np.int64)
            slots.sort()
        else:  # every row late
            slots = np.full(n, -1, dtype=np.int64)
        for j, f in enumerate(one):
            f.ingest(x[j].tolist(), slots)
        taken = ingest_numeric(block, x.copy(), slots)
        assert taken == list(range(k))
        for a, b in zip(one, block, strict=True):
            _same(a, b)
        run_detectors(one)
        run_detectors(block)
        for a, b in zip(one, block, strict=True):
            _same(a, b)
    # The shift was seen: the test compares states that moved, not idle ones.
    assert sum(f.detections["adwin"] for f in block) > 0
    assert all(f.counts.sum() > 0 for f in block)


def test_block_skips_features_it_cannot_take() -> None:
    rng = np.random.default_rng(0)
    fs = _features(rng, 3, 2)
    cold = NumericFeature("cold", "data_drift", CFG)  # not frozen
    empty = NumericFeature("empty", "data_drift", CFG)
    empty.observe_reference([None] * 50)
    empty.freeze(2)  # a reference without values: no PIT grid
    mixed = [fs[0], cold, fs[1], empty, fs[2]]
    x = _chunk(rng, 5, 40, 0.0)
    assert ingest_numeric(mixed, x, np.zeros(40, dtype=np.int64)) == [0, 2, 4]
    assert cold.counts.size == 0 and empty.counts.sum() == 0
    assert fs[1].quality[0, 0] == 40


@pytest.mark.parametrize("seed", range(3))
def test_detectors_of_many_features_at_once_equal_one_by_one(seed: int) -> None:
    """``run_detectors`` filters the levels of every feature with a batch of the same length
    in one call: the result equals feeding each feature alone, levels and firings included."""
    rng = np.random.default_rng(seed)
    k = 6
    together = _features(rng, k, 2)
    alone = _copy(together)
    for step in range(25):
        n = int(rng.integers(1, 400))
        x = _chunk(rng, k, n, shift=0.0 if step < 10 else 2.0)
        if step % 2:
            x[np.isnan(x) | np.isinf(x)] = 0.5  # every value present: one stacked filter
        slots = np.zeros(n, dtype=np.int64)
        ingest_numeric(together, x.copy(), slots)
        ingest_numeric(alone, x.copy(), slots)
        run_detectors(together)
        for f in alone:
            run_detectors([f])
        for a, b in zip(together, alone, strict=True):
            _same(a, b)
    assert sum(f.detections["page_hinkley"] for f in together) > 0
    assert all(f.levels[0] != 0.0 for f in together)


def _searched(grid: np.ndarray, edges: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    """What the feature-by-feature path computes: the left and right ranks and the bins."""
    return [
        np.searchsorted(grid, x, side="left"),
        np.searchsorted(grid, x, side="right"),
        np.searchsorted(edges, x, side="left"),
    ]


def _grid_and_edges(rng: np.random.Generator, integers: bool) -> tuple[np.ndarray, np.ndarray]:
    """A PIT grid and edges of every kind the search tables tell apart: on a grid point, a
    last bit above or below one, between two, below the grid and above it."""
    if integers:  # many points equal
        grid = np.sort(rng.integers(0, 30, PIT_POINTS)).astype(float)
        distinct = np.unique(grid)
        inner = [*distinct[::3], *(distinct[1:-1:4] + 0.5)]
    else:
        grid = np.sort(rng.normal(0.0, 1.0, PIT_POINTS))
        inner = [
            grid[5],
            np.nextafter(grid[20], np.inf),
            np.nextafter(grid[40], -np.inf),
            (grid[60] + grid[61]) / 2,
            grid[80],
        ]
    edges = np.unique([grid[0] - 1.0, *inner, grid[-1] + 1.0])
    return grid, edges


@pytest.mark.parametrize("seed", range(4))
def test_search_tables_equal_searchsorted(seed: int) -> None:
    """The one-pass search of many features gives each value the ranks and bin that
    ``searchsorted`` on its own grid and edges gives (NaN aside: the caller masks it)."""
    rng = np.random.default_rng(seed)
    pairs = [_grid_and_edges(rng, integers=j % 2 == 0) for j in range(4)]
    tables = [_search_tables(g, e) for g, e in pairs]
    assert all(t is not None for t in tables)
    assert any(np.isfinite(t.inside).any() for t in tables if t is not None)  # edges off-grid
    rows = []
    for g, e in pairs:
        near = np.concatenate([g, e])
        row = np.concatenate(
            [
                near,
                np.nextafter(near, np.inf),
                np.nextafter(near, -np.inf),
                rng.normal(0.0, 2.0, 300),
                rng.integers(-2, 33, 300),
                [-1e100, 1e100, np.nan, 0.0, -0.0],
            ]
        )
        rows.append(rng.permutation(row[:780]))
    x = np.stack(rows)
    lo, hi, bins = _ranks_and_bins([t for t in tables if t is not None], x)
    for j, (g, e) in enumerate(pairs):
        present = ~np.isnan(x[j])
        want = _searched(g, e, x[j, present])
        for got, w in zip((lo[j], hi[j], bins[j]), want, strict=True):
            np.testing.assert_array_equal(got[present], w)


def _profiled(name: str, grid: np.ndarray, edges: list[float]) -> NumericFeature:
    prof = NumericProfile(
        n=1000,
        missing=0,
        type_errors=0,
        min=float(grid[0]),
        max=float(grid[-1]),
        mean=float(grid.mean()),
        std=1.0,
        edges=edges,
        counts=[0] * len(edges) + [1000],
        quantiles=grid.tolist(),
        frequent_values=[],
        sample_size=1000,
    )
    return NumericFeature.from_profile(name, "data_drift", CFG, prof, 2)


def test_features_without_search_tables_are_staged_one_by_one() -> None:
    """Grids and edges the search tables cannot describe (two edges between two grid
    points) leave the feature to its own ``searchsorted``; a profile's edges anywhere else
    are taken, and either way the feature ends as its own ``ingest`` leaves it."""
    grid = np.linspace(0.0, 100.0, PIT_POINTS)
    assert _search_tables(grid, np.array([10.2, 10.7])) is None
    assert _search_tables(grid, np.array([20.0, 10.0])) is None  # not sorted
    assert _search_tables(np.where(grid == 50.0, np.nan, grid), np.array([10.0])) is None
    assert _search_tables(grid[:-1], np.array([10.0])) is None
    assert _search_tables(grid, np.array([-5.0, 10.5, 20.0, 99.99, 120.0])) is not None
    two = _profiled("two", grid, [10.2, 10.7, 50.0])
    apart = _profiled("apart", grid, [-5.0, 10.5, 20.0, 99.99, 120.0])
    one = [two, apart]
    block = _copy(one)
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.uniform(-10.0, 130.0, (2, 200))
        x[:, :20] = rng.choice([10.0, 10.2, 10.5, 10.7, 20.0, 120.0, np.nan], (2, 20))
        slots = np.zeros(200, dtype=np.int64)
        for j, f in enumerate(one):
            f.ingest(x[j].tolist(), slots)
        assert ingest_numeric(block, x.copy(), slots) == [1]
        block[0].ingest(x[0].tolist(), slots)
        for a, b in zip(one, block, strict=True):
            _same(a, b)
