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
    feature_from_snapshot,
    ingest_numeric,
    run_detectors,
)

CFG = DriftConfig(quality={"sentinels": [-1.0, 999.0]})


def _features(rng: np.random.Generator, k: int, ring: int) -> list[NumericFeature]:
    out = []
    for j in range(k):
        f = NumericFeature(f"f{j}", "data_drift", CFG)
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
    return [feature_from_snapshot(f.snapshot(), CFG) for f in features]  # type: ignore[misc]


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
    assert a.agreement_row == b.agreement_row
    assert a.levels == b.levels


@pytest.mark.parametrize("seed", range(6))
def test_block_equals_feature_by_feature(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, ring = 7, 4
    one = _features(rng, k, ring)
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
