"""Our batch ADWIN and Page-Hinkley against river's, the reference, on seeded streams."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from river import drift

from stream_monitor.stats.drift import ADWIN, PageHinkley
from stream_monitor.stats.drift.adwin import _bucket_sizes, _level_counts
from stream_monitor.stats.drift.adwin import update_all as adwin_update_all
from stream_monitor.stats.drift.page_hinkley import update_all as ph_update_all


def _river_firings(det: object, x: np.ndarray) -> list[int]:
    out = []
    for i, v in enumerate(x.tolist()):
        det.update(v)  # type: ignore[attr-defined]
        if det.drift_detected:  # type: ignore[attr-defined]
            out.append(i)
    return out


def _batched(det: ADWIN | PageHinkley, x: np.ndarray, batch: int) -> list[int]:
    out: list[int] = []
    for lo in range(0, len(x), batch):
        out += [lo + i for i in det.update_many(x[lo : lo + batch])]
    return out


def _piecewise(seed: int) -> tuple[np.ndarray, list[int]]:
    """Segments of random length, mean and spread: the change points are the segment starts."""
    rng = np.random.default_rng(seed)
    parts, starts, at = [], [], 0
    for _ in range(6):
        n = int(rng.integers(300, 4000))
        parts.append(rng.normal(rng.uniform(-1.5, 1.5), rng.uniform(0.3, 2.0), n))
        starts.append(at)
        at += n
    return np.concatenate(parts), starts[1:]


BATCHES = (7, 32, 100, 2000, 1_000_000)


@pytest.mark.parametrize("seed", range(12))
def test_adwin_fires_where_river_fires(seed: int) -> None:
    x, _ = _piecewise(seed)
    expected = _river_firings(drift.ADWIN(), x)
    assert expected, "the seeded stream must make river's ADWIN fire"
    for batch in BATCHES:
        assert _batched(ADWIN(), x, batch) == expected, batch


@pytest.mark.parametrize(
    "params",
    [
        {"delta": 0.05},
        {"delta": 0.0001, "clock": 1},
        {"clock": 1, "grace_period": 30, "min_window_length": 10},
        {"max_buckets": 2, "clock": 8},
        {"max_buckets": 9, "clock": 64, "grace_period": 100},
    ],
)
def test_adwin_params_fire_where_river_fires(params: dict[str, float]) -> None:
    for seed in (100, 101, 102):
        x, _ = _piecewise(seed)
        expected = _river_firings(drift.ADWIN(**params), x)
        for batch in (50, 5000):
            assert _batched(ADWIN(**params), x, batch) == expected, (seed, batch)


def test_value_by_value_matches_river() -> None:
    x, _ = _piecewise(77)
    x = x[:4000]
    for cls, ref in ((ADWIN, drift.ADWIN), (PageHinkley, drift.PageHinkley)):
        assert _batched(cls(clock=1) if cls is ADWIN else cls(threshold=8.0), x, 1) == (
            _river_firings(ref(clock=1) if cls is ADWIN else ref(threshold=8.0), x)
        )


def test_adwin_binary_error_stream_matches_river() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.random(5000) < 0.1, rng.random(5000) < 0.3]).astype(float)
    expected = _river_firings(drift.ADWIN(), x)
    assert any(5000 <= p < 5600 for p in expected)
    assert _batched(ADWIN(), x, 777) == expected


@pytest.mark.parametrize("seed", range(12))
def test_page_hinkley_fires_where_river_fires(seed: int) -> None:
    x, _ = _piecewise(seed)
    for params in ({}, {"threshold": 10.0, "mode": "up"}, {"threshold": 15.0, "mode": "down"}):
        expected = _river_firings(drift.PageHinkley(**params), x)
        for batch in BATCHES:
            assert _batched(PageHinkley(**params), x, batch) == expected, (params, batch)


def test_page_hinkley_strong_fading_matches_river() -> None:
    """A small alpha forces many chunks per batch (the scaled sums are chunked)."""
    x, _ = _piecewise(42)
    params = {"alpha": 0.9, "threshold": 3.0, "min_instances": 5}
    expected = _river_firings(drift.PageHinkley(**params), x)
    assert len(expected) > 3
    assert _batched(PageHinkley(**params), x, 10_000) == expected


def test_detection_delays_on_known_change_points() -> None:
    """A step of one standard deviation is found within a few hundred values by both."""
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.normal(0, 1, 5000), rng.normal(1, 1, 5000)])
    for det in (ADWIN(), PageHinkley()):
        first = next(p for p in det.update_many(x) if p >= 5000)
        assert 5000 <= first < 5300, type(det).__name__


@pytest.mark.parametrize("cls", [ADWIN, PageHinkley])
def test_snapshot_mid_stream_resumes_identically(cls: type[ADWIN] | type[PageHinkley]) -> None:
    x, _ = _piecewise(5)
    for split in (1, 999, 4321, len(x) - 3):
        whole = cls()
        expected = whole.update_many(x)
        det = cls()
        first = det.update_many(x[:split])
        snap = json.loads(json.dumps(det.snapshot()))
        restored = cls.from_snapshot(snap)
        assert first + [split + p for p in restored.update_many(x[split:])] == expected


def test_snapshot_refuses_other_versions() -> None:
    for cls in (ADWIN, PageHinkley):
        snap = cls().snapshot()
        with pytest.raises(ValueError):
            cls.from_snapshot({**snap, "v": 99})


def test_adwin_state_is_bounded_and_exact() -> None:
    """The histogram holds O(log n) buckets whose sums match a brute-force computation."""
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1.0, 200_000)
    det = ADWIN()
    for lo in range(0, len(x), 3333):
        det.update_many(x[lo : lo + 3333])
    # The window holds every value since the last firing (a firing restarts it).
    x = x[len(x) - det.width :]
    assert det.width > 10_000
    assert len(det._totals) <= 5 * 18
    assert det._totals.sum() == pytest.approx(x.sum(), rel=1e-9)
    assert det._variance == pytest.approx(((x - x.mean()) ** 2).sum(), rel=1e-9)
    # Each bucket's sum is the sum of its own run of values.
    bounds = np.concatenate([[0], np.cumsum(det._sizes)])
    brute = [x[a:b].sum() for a, b in itertools.pairwise(bounds)]
    assert np.allclose(det._totals, brute, rtol=1e-9, atol=1e-9)


def test_level_counts_match_a_carry_loop() -> None:
    def loop(n: int, m: int) -> list[int]:
        counts = [0] * 40
        for _ in range(n):
            counts[0] += 1
            i = 0
            while counts[i] == m + 1:
                counts[i] -= 2
                counts[i + 1] += 1
                i += 1
        return counts

    for m in (2, 3, 5, 8):
        ns = np.arange(1, 1500)
        got = _level_counts(ns, m)
        for n in ns:
            row = list(got[n - 1]) + [0] * (40 - got.shape[1])
            assert row == loop(int(n), m), (m, n)
        assert int(_bucket_sizes(1499, m).sum()) == 1499


@pytest.mark.parametrize(
    ("cls", "update", "ref"),
    [(ADWIN, adwin_update_all, drift.ADWIN), (PageHinkley, ph_update_all, drift.PageHinkley)],
)
def test_many_streams_in_one_call_fire_as_each_alone(cls, update, ref) -> None:  # type: ignore[no-untyped-def]
    """Streams of different lengths (some empty, some firing several times) fed together in
    batches of uneven sizes fire exactly where river fires on each stream alone."""
    rng = np.random.default_rng(9)
    streams = [_piecewise(200 + s)[0] for s in range(7)]
    expected = [_river_firings(ref(), x) for x in streams]
    dets = [cls() for _ in streams]
    got: list[list[int]] = [[] for _ in streams]
    pos = [0] * len(streams)
    while any(p < len(x) for p, x in zip(pos, streams, strict=True)):
        sizes = [int(rng.integers(0, 900)) for _ in streams]
        batches = [x[p : p + n] for x, p, n in zip(streams, pos, sizes, strict=True)]
        for i, f in enumerate(update(dets, batches)):
            got[i] += [pos[i] + j for j in f]
        pos = [p + len(b) for p, b in zip(pos, batches, strict=True)]
    assert got == expected
    assert sum(map(len, expected)) > 10
