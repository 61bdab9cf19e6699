"""The probability integral transform the change detectors are fed with."""

from __future__ import annotations

import numpy as np
import pytest

from stream_monitor.monitor.feature import pit_standardise


@pytest.mark.parametrize("seed", range(6))
def test_mid_rank_against_a_brute_force_count(seed: int) -> None:
    """Mid-ranks equal (number of grid points below + number at or below) / 2, counted in a
    loop, for continuous references and for integer ones full of ties, including values that
    sit exactly on grid points."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 12, 1000).astype(float) if seed % 2 else rng.lognormal(0, 1, 1000)
    grid = np.quantile(ref, np.linspace(0, 1, 101))
    values = np.concatenate([rng.choice(ref, 300), rng.normal(ref.mean(), 3, 300), grid])
    below = np.array([sum(g < v for g in grid) for v in values])
    at_or_below = np.array([sum(g <= v for g in grid) for v in values])
    u = (below + at_or_below) / (2.0 * len(grid))
    expected = (u - 0.5) / np.sqrt(1.0 / 12.0)
    assert np.allclose(pit_standardise(values, grid), expected, rtol=0, atol=1e-12)
    # No drift: mean about 0 and standard deviation about 1 on fresh draws (the grid comes from
    # 1,000 values, so its own sampling error shows: about 0.05 in the mean).
    if seed % 2 == 0:
        z = pit_standardise(rng.lognormal(0, 1, 20_000), grid)
        assert abs(z.mean()) < 0.15 and abs(z.std() - 1.0) < 0.1  # the grid is a sample
