"""Our batch ADWIN and Page-Hinkley against river's, the reference, on seeded streams."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from river import drift

from stream_monitor.stats.drift import ADWIN, PageHinkley, _kernels
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


def _small_shifts(seed: int) -> np.ndarray:
    """Shifts of at most 0.4 sd: ADWIN finds them thousands of values late, so the cut that
    fires lies far before the batch (the cuts the array pass screens with a bound)."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(rng.uniform(-0.2, 0.2), 1.0, int(rng.integers(3000, 9000))) for _ in range(5)
    ]
    return np.concatenate(parts)


def _feed_together(
    update: Any, dets: list[Any], streams: list[np.ndarray], rng: np.random.Generator, same: bool
) -> list[list[int]]:
    """Feed every stream in calls of ``update`` over all of them, in batches of random size
    (equal for every stream when ``same``: they then stay in the same state until one fires)."""
    got: list[list[int]] = [[] for _ in streams]
    pos = [0] * len(streams)
    while any(p < len(x) for p, x in zip(pos, streams, strict=True)):
        n = int(rng.integers(1, 1200))
        sizes = [n if same else int(rng.integers(0, 1200)) for _ in streams]
        batches = [x[p : p + k] for x, p, k in zip(streams, pos, sizes, strict=True)]
        for i, f in enumerate(update(dets, batches)):
            got[i] += [pos[i] + j for j in f]
        pos = [p + len(b) for p, b in zip(pos, batches, strict=True)]
    return got


@pytest.mark.parametrize("same", [True, False])
def test_adwin_far_cuts_fire_where_river_fires(same: bool) -> None:
    """Slow detections (the firing cut far back) through many streams in one call."""
    streams = [_small_shifts(seed) for seed in range(4)]
    if same:
        streams = [x[:25_000] for x in streams]
    expected = [_river_firings(drift.ADWIN(), x) for x in streams]
    assert sum(map(len, expected)) >= 6
    got = _feed_together(
        adwin_update_all, [ADWIN() for _ in streams], streams, np.random.default_rng(1), same
    )
    assert got == expected


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cls", [ADWIN, PageHinkley])
def test_streams_in_one_call_match_each_alone_and_restore(
    cls: type[ADWIN] | type[PageHinkley], seed: int
) -> None:
    """A seeded property: streams cut into random batches and fed in one call, some in the
    same state (same length, same batches), some not, fire exactly where each fed alone with
    the same batches fires (and where river fires), with bit-identical snapshots; detectors
    restored from JSON snapshots mid-way carry on identically."""
    rng = np.random.default_rng(seed)
    streams = [_piecewise(500 + 10 * seed + s)[0][:12_000] for s in range(5)]
    streams += [x.copy() for x in streams[:2]]  # identical streams: the same state throughout
    update = adwin_update_all if cls is ADWIN else ph_update_all
    together = [cls() for _ in streams]
    alone = [cls() for _ in streams]
    got_together: list[list[int]] = [[] for _ in streams]
    got_alone: list[list[int]] = [[] for _ in streams]
    pos = [0] * len(streams)
    while any(p < len(x) for p, x in zip(pos, streams, strict=True)):
        n = int(rng.integers(1, 900))
        sizes = [n if i < 2 or i >= 5 else int(rng.integers(0, 900)) for i in range(len(streams))]
        batches = [x[p : p + k] for x, p, k in zip(streams, pos, sizes, strict=True)]
        for i, f in enumerate(update(together, batches)):
            got_together[i] += [pos[i] + j for j in f]
        for i, (det, b) in enumerate(zip(alone, batches, strict=True)):
            got_alone[i] += [pos[i] + j for j in det.update_many(b)]
        if rng.random() < 0.2:  # a checkpoint and restart of some of them
            for i in rng.choice(len(streams), 3, replace=False).tolist():
                together[i] = cls.from_snapshot(json.loads(json.dumps(together[i].snapshot())))
        pos = [p + len(b) for p, b in zip(pos, batches, strict=True)]
    assert got_together == got_alone
    assert [d.snapshot() for d in together] == [d.snapshot() for d in alone]
    ref = drift.ADWIN if cls is ADWIN else drift.PageHinkley
    assert got_together == [_river_firings(ref(), x) for x in streams]
    assert sum(map(len, got_together)) >= 10


def test_adwin_stream_with_an_empty_window_first_in_the_group() -> None:
    """A stream whose window is empty (new, or fired at its batch's last value) ahead of
    streams holding values in one call: each fires and ends as it would alone."""
    streams = [_piecewise(700 + s)[0][:8_000] for s in range(3)]
    together = [ADWIN() for _ in streams]
    alone = [ADWIN() for _ in streams]
    got_together: list[list[int]] = [[] for _ in streams]
    got_alone: list[list[int]] = [[] for _ in streams]
    pos = [0] * len(streams)
    for r in range(60):
        # Stream 0 starts late: its first batch meets the others' stored buckets.
        batches = [
            x[p : p + (0 if i == 0 and r < 3 else 150)]
            for i, (x, p) in enumerate(zip(streams, pos, strict=True))
        ]
        for i, f in enumerate(adwin_update_all(together, batches)):
            got_together[i] += [pos[i] + j for j in f]
        for i, (det, b) in enumerate(zip(alone, batches, strict=True)):
            got_alone[i] += [pos[i] + j for j in det.update_many(b)]
        pos = [p + len(b) for p, b in zip(pos, batches, strict=True)]
    assert got_together == got_alone
    assert [d.snapshot() for d in together] == [d.snapshot() for d in alone]
    assert sum(map(len, got_together)) >= 3


@pytest.mark.parametrize("kind", ["errors", "eighths"])
def test_adwin_sums_of_exact_values_do_not_depend_on_the_batches(kind: str) -> None:
    """0/1 errors (as the concept monitor feeds them) and multiples of 1/8 add up exactly: the
    window's sum and every bucket's are the same, with no rounding dust, however the stream is
    cut into batches (value by value included), and equal the sums of the values they hold."""
    rng = np.random.default_rng(5)
    n = 12_000
    if kind == "errors":
        x = (rng.random(n) < np.r_[np.full(n // 2, 0.1), np.full(n - n // 2, 0.35)]).astype(float)
    else:
        x = np.round(rng.normal(np.r_[np.zeros(n // 2), np.ones(n - n // 2)], 1.0) * 8) / 8
    results = []
    for batch in (1, 7, 100, 400, 5000):
        det = ADWIN()
        fired = []
        for lo in range(0, n, batch):
            fired += [lo + j for j in det.update_many(x[lo : lo + batch])]
        results.append((fired, det.snapshot()))
        start = fired[-1] + 1 if fired else 0
        ends = np.cumsum(det._sizes) + start
        assert det.snapshot()["totals"] == [
            float(x[e - s : e].sum())
            for e, s in zip(ends.tolist(), det._sizes.tolist(), strict=True)
        ]
        assert det._total == float(x[start:].sum())
    assert results[0][0]  # it fired
    assert all(f == results[0][0] for f, _ in results)
    assert all(s["totals"] == results[0][1]["totals"] for _, s in results)
    assert all(s["total"] == results[0][1]["total"] for _, s in results)


def test_grouping_key_is_kept_from_the_constructor_and_the_snapshot() -> None:
    """``feed_streams`` groups detectors by a key computed once: the class and the parameters,
    the same for a fresh detector and one restored from its snapshot."""
    for det in (ADWIN(delta=0.01, clock=8), PageHinkley(threshold=9.0, mode="up")):
        key = (type(det), *det.params.values())
        assert det._params_key == key
        det.update_many(np.arange(50.0))
        assert type(det).from_snapshot(json.loads(json.dumps(det.snapshot())))._params_key == key
    assert ADWIN()._params_key != ADWIN(delta=0.01)._params_key
    assert ADWIN()._params_key != PageHinkley()._params_key


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kinds", [slice(0, 6), slice(0, 3), slice(3, 6)])
def test_mixed_parameters_and_short_batches_in_one_call_match_each_alone(
    kinds: slice, seed: int
) -> None:
    """Detectors of one or both kinds and of several parameter sets, restored ones among them,
    fed in one call of ``drift.update_all`` (short batches go value by value, long ones through
    the array pass of their parameter group, several firings a batch) fire and end exactly as
    each fed alone, firing for firing and snapshot for snapshot."""
    from stream_monitor.stats.drift import update_all

    rng = np.random.default_rng(seed)
    makers = [
        ADWIN,
        lambda: ADWIN(delta=0.05, clock=4, grace_period=3),
        lambda: ADWIN(max_buckets=2, clock=1, min_window_length=2),
        PageHinkley,
        lambda: PageHinkley(threshold=4.0, min_instances=5, mode="up"),
        lambda: PageHinkley(alpha=0.9, threshold=2.0, min_instances=5),
    ][kinds]
    # Steps every few hundred values, scaled far from 1: several firings per batch.
    steps = [np.repeat(rng.normal(0, 4, 60), rng.integers(40, 300, 60)) for _ in range(12)]
    scales = 10.0 ** rng.integers(-6, 7, 12)
    streams = [
        (s + rng.normal(0, 1, len(s))) * k + 1e3 * k for s, k in zip(steps, scales, strict=True)
    ]
    choice = rng.integers(0, len(makers), len(streams)).tolist()
    together = [makers[c]() for c in choice]
    alone = [makers[c]() for c in choice]
    got_together: list[list[int]] = [[] for _ in streams]
    got_alone: list[list[int]] = [[] for _ in streams]
    pos = [0] * len(streams)
    while any(p < len(x) for p, x in zip(pos, streams, strict=True)):
        hi = 10 if rng.random() < 0.4 else 600
        sizes = [int(rng.integers(0, hi)) for _ in streams]
        batches = [x[p : p + k] for x, p, k in zip(streams, pos, sizes, strict=True)]
        for i, f in enumerate(update_all(together, batches)):
            got_together[i] += [pos[i] + j for j in f]
        for i, (det, b) in enumerate(zip(alone, batches, strict=True)):
            got_alone[i] += [pos[i] + j for j in det.update_many(b)]
        for i in rng.choice(len(streams), 3, replace=False).tolist():
            together[i] = type(together[i]).from_snapshot(
                json.loads(json.dumps(together[i].snapshot()))
            )
        pos = [p + len(b) for p, b in zip(pos, batches, strict=True)]
    assert got_together == got_alone
    assert [d.snapshot() for d in together] == [d.snapshot() for d in alone]
    assert sum(len(f) > 1 for f in got_together) >= 4


def test_level_counts_hold_every_value_for_large_counts() -> None:
    """Far beyond the carry loop's reach: the buckets hold exactly ``n`` values, no level holds
    more than ``max_buckets`` (the top one at least one), and a level is never skipped."""
    rng = np.random.default_rng(4)
    n = np.concatenate([rng.integers(1, 2**50, 2000), 2 ** np.arange(1, 50), [2**50 - 1]])
    for m in (2, 3, 5, 9):
        counts = _level_counts(n, m)
        assert (counts >= 0).all() and (counts <= m).all()
        assert (counts @ (1 << np.arange(counts.shape[1], dtype=np.int64)) == n).all()
        filled = counts > 0
        top = filled.shape[1] - 1 - np.argmax(filled[:, ::-1], axis=1)
        assert (filled | (np.arange(filled.shape[1])[None, :] > top[:, None])).all(), m


def _plain_cut(det: ADWIN, sizes: list[int], totals: list[float]) -> bool:
    """ADWIN's test value by value as river writes it: every cut's bound in full."""
    n, total, mwl = det._n, det._total, det.min_window_length
    delta_prime = math.log(2.0 * math.log(n) / det.delta)
    var = det._variance / n
    n0, u0 = 0, 0.0
    for size, t in zip(sizes[:-1], totals[:-1], strict=True):
        n0 += size
        u0 += t
        n1 = n - n0
        if n0 < mwl or n1 < mwl:
            continue
        m_recip = 1.0 / (n0 - mwl + 1) + 1.0 / (n1 - mwl + 1)
        eps = math.sqrt(2.0 * m_recip * var * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
        if abs(u0 / n0 - (total - u0) / n1) > eps:
            return True
    return False


def _compiled_cut(det: ADWIN, sizes: list[int], totals: list[float]) -> bool:
    """The kernels' cut test on ``det``'s window with these buckets."""
    return bool(
        _kernels._cut(
            np.array(sizes, dtype=np.int64),
            np.array(totals),
            len(sizes),
            det._n,
            det._total,
            det._variance,
            det.delta,
            det.min_window_length,
        )
    )


def _plain_carry(sizes: list[int], totals: list[float], m2s: list[float], m: int) -> None:
    """The carry chain by scanning the whole histogram for each level's buckets."""
    size = 1
    while True:
        run = [i for i in range(len(sizes) - 1, -1, -1) if sizes[i] == size]
        if len(run) <= m:
            return
        j = run[-1]
        n = float(size)
        d = totals[j] / n - totals[j + 1] / n
        m2 = m2s[j] + m2s[j + 1] + n * 0.5 * (d * d)  # not d ** 2: pow() is not exact
        sizes[j : j + 2] = [2 * size]
        totals[j : j + 2] = [totals[j] + totals[j + 1]]
        m2s[j : j + 2] = [m2]
        size *= 2


@pytest.mark.parametrize(
    "params", [{"clock": 1}, {"clock": 1, "max_buckets": 2, "min_window_length": 2}, {}]
)
def test_adwin_value_by_value_matches_the_plain_test_and_carry(params: dict[str, int]) -> None:
    """Value by value (as the per-window detectors feed it), the compiled test that skips the
    bound of the cuts whose means differ by less than its linear term, and the compiled carry
    that walks each level's run from the newest end, decide and store exactly what the plain
    ones do, on a stream with changes (firings included)."""
    x, _ = _piecewise(41)
    det = ADWIN(**params)
    sizes: list[int] = []
    totals: list[float] = []
    m2s: list[float] = []
    decisions = []
    close = 0
    for v in x.tolist():
        if det.drift_detected:
            sizes, totals, m2s = [], [], []
        det.update_many(np.array([v]))
        sizes.append(1)
        totals.append(v)
        m2s.append(0.0)
        _plain_carry(sizes, totals, m2s, det.max_buckets)
        assert (det._sizes.tolist(), det._totals.tolist(), det._m2s.tolist()) == (
            sizes,
            totals,
            m2s,
        )
        if det._n < 2:
            continue
        plain = _plain_cut(det, sizes, totals)
        assert _compiled_cut(det, sizes, totals) == plain
        decisions.append(plain)
        # With less variance, the bound is mostly its linear term: cuts near it decide.
        variance = det._variance
        for scale in (0.1, 1e-3, 1e-6):
            det._variance = variance * scale
            plain = _plain_cut(det, sizes, totals)
            assert _compiled_cut(det, sizes, totals) == plain
            close += plain
        det._variance = variance
    assert sum(decisions) >= 3  # it fired
    assert close > sum(decisions)
