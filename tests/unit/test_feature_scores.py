"""Every statistic a closed window exports, against an independent computation."""

from __future__ import annotations

import numpy as np
import orjson
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from stream_monitor.config import DriftConfig
from stream_monitor.monitor.feature import CategoricalFeature, NumericFeature, feature_from_snapshot
from stream_monitor.stats.windows import Closure

#: A tumbling window held in ring slot 0: judge it, then free the slot.
WHOLE = Closure(0, (0,), None, (0,), 0, 1, 1)


def _slots(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


def _brute_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.zeros(len(edges) + 1)
    for v in values:
        i = 0
        while i < len(edges) and v > edges[i]:
            i += 1
        counts[i] += 1
    return counts


def test_numeric_window_scores_match_scipy() -> None:
    rng = np.random.default_rng(3)
    cfg = DriftConfig(reference={"size": 2000}, window={"size": 500})
    f = NumericFeature("x", "data_drift", cfg)
    ref = rng.normal(0, 1, 2000)
    cur = rng.normal(0.7, 1.3, 500)
    f.observe_reference(ref.tolist())
    f.freeze(ring_size=1)
    f.ingest(cur.tolist(), _slots(500))
    f.close(WHOLE, "m", 1.0, None)
    assert f.edges is not None and f.pit_grid is not None
    p = _brute_counts(ref, f.edges)
    q = _brute_counts(cur, f.edges)
    assert np.isclose(f.scores["jensen_shannon"], jensenshannon(p / p.sum(), q / q.sum()))
    hell = np.sqrt(1 - np.sum(np.sqrt(p / p.sum() * q / q.sum())))
    assert np.isclose(f.scores["hellinger"], hell)
    ks = np.max(np.abs(np.cumsum(p) / p.sum() - np.cumsum(q) / q.sum()))
    assert np.isclose(f.scores["ks"], ks)
    grid = np.quantile(ref, np.linspace(0, 1, 101))
    points = np.concatenate([[ref.min()], (f.edges[:-1] + f.edges[1:]) / 2, [ref.max()]])
    w = wasserstein_distance(points, points, p, q) / (grid[75] - grid[25])
    assert np.isclose(f.scores["wasserstein"], w)
    # A real shift: every statistic is well away from zero.
    assert f.scores["ks"] > 0.15 and f.scores["wasserstein"] > 0.3
    restored = feature_from_snapshot(orjson.loads(orjson.dumps(f.snapshot())), cfg)
    assert restored.scores == f.scores


def test_categorical_window_scores_match_scipy() -> None:
    cfg = DriftConfig(reference={"size": 1000}, window={"size": 300}, top_k_categories=3)
    f = CategoricalFeature("c", "data_drift", cfg)
    f.observe_reference(["a"] * 500 + ["b"] * 300 + ["c"] * 150 + ["d"] * 50)
    f.freeze(ring_size=1)
    f.ingest(["a"] * 100 + ["b"] * 100 + ["c"] * 50 + ["z"] * 50, _slots(300))
    f.close(WHOLE, "m", 1.0, None)
    p = np.array([500, 300, 150, 50.0])  # a, b, c, other
    q = np.array([100, 100, 50, 50.0])
    assert np.isclose(f.scores["jensen_shannon"], jensenshannon(p / p.sum(), q / q.sum()))
    assert "ks" not in f.scores and "wasserstein" not in f.scores  # no order among categories
