"""The compiled ADWIN and Page-Hinkley loops against plain per-value Python loops (river's
algorithm, written out here) on seeded streams with known change points: same firings and,
to the bit, the same state, however the streams are cut into batches and grouped in calls."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from river import drift

from stream_monitor.stats.drift import ADWIN, PageHinkley, update_all


class _PlainADWIN:
    """River's ADWIN value by value in plain Python: the histogram as lists, oldest first."""

    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5) -> None:
        self.delta, self.clock, self.max_buckets = delta, clock, max_buckets
        self.mwl, self.grace = 5, 10
        self.reset()

    def reset(self) -> None:
        self.n, self.total, self.variance = 0, 0.0, 0.0
        self.sizes: list[int] = []
        self.totals: list[float] = []
        self.m2s: list[float] = []

    def update(self, v: float) -> bool:
        if self.n:
            d = v - self.total / self.n
            self.variance += self.n * d * d / (self.n + 1)
        self.n += 1
        self.total += v
        self.sizes.append(1)
        self.totals.append(v)
        self.m2s.append(0.0)
        size = 1
        while True:  # the carry: a level over max_buckets merges its two oldest
            run = [i for i, s in enumerate(self.sizes) if s == size]
            if len(run) <= self.max_buckets:
                break
            j = run[0]
            d = self.totals[j] / size - self.totals[j + 1] / size
            m2 = self.m2s[j] + self.m2s[j + 1] + size * 0.5 * (d * d)  # not d ** 2: pow()
            self.sizes[j : j + 2] = [2 * size]
            self.totals[j : j + 2] = [self.totals[j] + self.totals[j + 1]]
            self.m2s[j : j + 2] = [m2]
            size *= 2
        if self.n % self.clock or self.n <= self.grace:
            return False
        delta_prime = math.log(2.0 * math.log(self.n) / self.delta)
        var2 = 2.0 * (self.variance / self.n)
        n0, u0 = 0, 0.0
        for size, t in zip(self.sizes[:-1], self.totals[:-1], strict=True):
            n0 += size
            u0 += t
            n1 = self.n - n0
            if n0 < self.mwl or n1 < self.mwl:
                continue
            m_recip = 1.0 / (n0 - self.mwl + 1) + 1.0 / (n1 - self.mwl + 1)
            eps = math.sqrt(m_recip * var2 * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
            if abs(u0 / n0 - (self.total - u0) / n1) > eps:
                return True
        return False

    def state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "total": self.total,
            "variance": self.variance,
            "totals": self.totals,
            "m2s": self.m2s,
        }


class _PlainPageHinkley:
    """River's Page-Hinkley value by value in plain Python."""

    def __init__(self, **params: Any) -> None:
        self.min_instances = params.get("min_instances", 30)
        self.delta = params.get("delta", 0.005)
        self.threshold = params.get("threshold", 50.0)
        self.alpha = params.get("alpha", 1 - 0.0001)
        self.mode = params.get("mode", "both")
        self.reset()

    def reset(self) -> None:
        self.n, self.mean, self.inc, self.dec = 0, 0.0, 0.0, 0.0
        self.min_inc, self.max_dec = math.inf, -1.0

    def update(self, v: float) -> bool:
        self.n += 1
        self.mean += (v - self.mean) / self.n
        dev = v - self.mean
        self.inc = self.alpha * self.inc + dev - self.delta
        self.dec = self.alpha * self.dec + dev + self.delta
        self.min_inc = min(self.min_inc, self.inc)
        self.max_dec = max(self.max_dec, self.dec)
        if self.n < self.min_instances:
            return False
        up = self.inc - self.min_inc > self.threshold and self.mode != "down"
        down = self.max_dec - self.dec > self.threshold and self.mode != "up"
        return up or down

    def state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "sum_increase": self.inc,
            "sum_decrease": self.dec,
            "min_increase": None if math.isinf(self.min_inc) else self.min_inc,
            "max_decrease": self.max_dec,
        }


def _plain_firings(det: _PlainADWIN | _PlainPageHinkley, x: np.ndarray) -> list[int]:
    out, fired = [], False
    for i, v in enumerate(x.tolist()):
        if fired:
            det.reset()
        fired = det.update(v)
        if fired:
            out.append(i)
    return out


def _changes(seed: int) -> tuple[np.ndarray, list[int]]:
    """Segments of random length, mean and spread, at an offset: the change points are the
    segment starts."""
    rng = np.random.default_rng(seed)
    parts, starts, at = [], [], 0
    for _ in range(5):
        n = int(rng.integers(500, 3000))
        parts.append(rng.normal(rng.uniform(-2.0, 2.0), rng.uniform(0.3, 2.0), n))
        starts.append(at)
        at += n
    return 100.0 + np.concatenate(parts), starts[1:]


PARAMS = [
    (ADWIN, _PlainADWIN, {}),
    (ADWIN, _PlainADWIN, {"clock": 1, "max_buckets": 2}),
    (PageHinkley, _PlainPageHinkley, {}),
    (PageHinkley, _PlainPageHinkley, {"threshold": 8.0, "alpha": 0.99, "mode": "up"}),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("cls", "plain", "params"), PARAMS)
def test_compiled_passes_equal_the_plain_loop_to_the_bit(
    cls: Any, plain: Any, params: dict[str, Any], seed: int
) -> None:
    """Streams with change points, fed together in one ``update_all`` call per round in random
    batches (empty, short and long; restored from JSON snapshots now and then), fire where the
    plain loop fires on each stream alone, and end in exactly its state."""
    rng = np.random.default_rng(seed)
    streams = [_changes(100 * seed + s)[0] for s in range(6)]
    refs = [plain(**params) for _ in streams]
    expected = [_plain_firings(r, x) for r, x in zip(refs, streams, strict=True)]
    dets = [cls(**params) for _ in streams]
    got: list[list[int]] = [[] for _ in streams]
    pos = [0] * len(streams)
    while any(p < len(x) for p, x in zip(pos, streams, strict=True)):
        hi = 6 if rng.random() < 0.3 else 1500
        sizes = [int(rng.integers(0, hi)) for _ in streams]
        batches = [x[p : p + k] for x, p, k in zip(streams, pos, sizes, strict=True)]
        for i, f in enumerate(update_all(dets, batches)):
            got[i] += [pos[i] + j for j in f]
        if rng.random() < 0.2:
            i = int(rng.integers(len(dets)))
            dets[i] = cls.from_snapshot(json.loads(json.dumps(dets[i].snapshot())))
        pos = [p + len(b) for p, b in zip(pos, batches, strict=True)]
    assert got == expected
    assert sum(map(len, got)) >= 6
    for det, ref in zip(dets, refs, strict=True):
        snap = det.snapshot()
        assert {k: snap[k] for k in ref.state()} == ref.state()


def test_adwin_state_equals_rivers_to_the_bit_in_any_batches() -> None:
    """River's own ADWIN adds the values up in the same order: its window's total and squared
    deviations are ours to the bit, whatever the batches."""
    x, starts = _changes(7)
    ref = drift.ADWIN()
    fired = []
    for i, v in enumerate(x.tolist()):
        ref.update(v)
        if ref.drift_detected:
            fired.append(i)
    assert fired and fired[0] > starts[0]
    for batch in (1, 50, 1000, len(x)):
        det = ADWIN()
        got = []
        for lo in range(0, len(x), batch):
            got += [lo + j for j in det.update_many(x[lo : lo + batch])]
        assert got == fired
        assert (det.width, det._total, det._variance) == (ref.width, ref.total, ref.variance)


def test_the_kernels_run_uncached_where_numba_has_nowhere_to_cache() -> None:
    """A read-only file system without a cache volume leaves numba no cache directory (here:
    the only locator allowed is NUMBA_CACHE_DIR's, and it is unset): the kernels are compiled
    without a cache instead of failing the import, and fire where the cached ones do."""
    code = (
        "import json, numpy as np\n"
        "from stream_monitor.stats.drift import ADWIN, PageHinkley, update_all\n"
        "x = np.concatenate([np.random.default_rng(3).normal(0, 1, 2000), np.full(500, 4.0)])\n"
        "print(json.dumps(update_all([ADWIN(), PageHinkley()], [x, x])))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_LOCATOR_CLASSES"] = "UserProvidedCacheLocator"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    x = np.concatenate([np.random.default_rng(3).normal(0, 1, 2000), np.full(500, 4.0)])
    expected = update_all([ADWIN(), PageHinkley()], [x, x])
    assert json.loads(out.stdout) == expected and expected[0] and expected[1]
