"""The live phase's start-up figures of load_tests/bench_throughput.py (a pure function)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

LOAD_TESTS = Path(__file__).resolve().parents[2] / "load_tests"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(LOAD_TESTS))
    try:
        yield importlib.import_module("bench_throughput")
    finally:
        sys.path.remove(str(LOAD_TESTS))


def brute_force(series, warmup):
    """The same figures by a plain loop over the scrapes."""
    peak_at, peak = None, -1.0
    for t, a in series:
        if t <= warmup and a > peak:
            peak_at, peak = t, a
    if peak_at is None:
        return None, None, None
    if peak < 1.0:
        return peak, peak_at, series[0][0]
    for t, a in series:
        if peak_at < t <= warmup and a < 1.0:
            return peak, peak_at, t
    return peak, peak_at, None


@pytest.mark.parametrize("seed", range(20))
def test_start_up_matches_a_loop(bench, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.3, 0.7, 60))
    ages = np.abs(rng.normal(0.5, 1.2, 60))
    series = [(float(a), float(b)) for a, b in zip(t, ages, strict=True)]
    got = bench.start_up(series, 15.0)
    assert (got["start_peak_age"], got["start_peak_at"], got["start_caught_up_at"]) == (
        brute_force(series, 15.0)
    )


def test_start_up_cases(bench):
    # never behind: caught up from the first scrape
    assert bench.start_up([(0.5, 0.2), (1.0, 0.4)], 5.0)["start_caught_up_at"] == 0.5
    # still behind at the end of the warm-up
    got = bench.start_up([(0.5, 0.2), (1.0, 2.0), (4.0, 1.5), (6.0, 0.1)], 5.0)
    assert got == {"start_peak_age": 2.0, "start_peak_at": 1.0, "start_caught_up_at": None}
    # no scrape in the warm-up
    assert bench.start_up([], 5.0)["start_peak_age"] is None
