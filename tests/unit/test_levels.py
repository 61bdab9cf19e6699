"""The compiled levels (stats/levels.py) against scipy's lfilter, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from stream_monitor.monitor.feature import LEVEL_ALPHAS
from stream_monitor.stats.levels import ewma_paths


def _lfilter(alpha: float, x: np.ndarray, level: float) -> np.ndarray:
    """The exponentially weighted means as scipy filters them (the monitor's way before)."""
    y, _ = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * level])
    return np.asarray(y)


@pytest.mark.parametrize("seed", range(4))
def test_every_stream_and_weight_equals_lfilter_to_the_bit(seed: int) -> None:
    """Streams of many lengths (none empty among them too), PIT-like scores with steps, each
    from its own start level, in one call: every mean equals lfilter's exactly."""
    rng = np.random.default_rng(seed)
    lengths = [int(n) for n in rng.integers(0, 3000, size=9)] + [0, 1]
    streams = [rng.normal(rng.normal(0, 2), 1.0, n) for n in lengths]
    alphas = [*LEVEL_ALPHAS, 0.3]
    starts = [[float(v) for v in rng.normal(0, 1, len(alphas))] for _ in streams]
    got = ewma_paths(streams, alphas, starts)
    for x, start, paths in zip(streams, starts, got, strict=True):
        assert len(paths) == len(alphas)
        for alpha, level, y in zip(alphas, start, paths, strict=True):
            np.testing.assert_array_equal(y, _lfilter(alpha, x, level))


def test_a_stream_cut_anywhere_carries_the_same_levels() -> None:
    """Cut into batches, each batch starting from the last means of the one before, a
    stream's means are those of one call: a level does not depend on where batches end."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 4000), rng.normal(0.7, 1, 3000)])
    (whole,) = ewma_paths([x], LEVEL_ALPHAS, [[0.0, 0.0]])
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=40, replace=False))
    level = [0.0, 0.0]
    parts: list[list[np.ndarray]] = [[], []]
    for part in np.split(x, cuts):
        (paths,) = ewma_paths([part], LEVEL_ALPHAS, [level])
        for a, y in enumerate(paths):
            parts[a].append(y)
            if len(y):
                level[a] = float(y[-1])
    for a in range(len(LEVEL_ALPHAS)):
        np.testing.assert_array_equal(np.concatenate(parts[a]), whole[a])
