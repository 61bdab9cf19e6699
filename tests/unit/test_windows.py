"""PaneClock against a brute-force recomputation of every window it closes.

A simulated caller applies each plan to a ring of per-slot lists of event indices (add the
events to their slots, on a closure union the window's slots, then clear the release slots) and
asserts that a slot never holds two panes. A brute force then recomputes, from the whole stream,
which events belong to each window: ``[start, end)`` by sequence number (count) or timestamp
(time), excluding events that arrived after their pane had completed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pytest

from stream_monitor.stats.windows import Closure, PaneClock, Segment

# ---------------------------------------------------------------- brute force and caller


def _pane(ts: float, slide: float) -> int:
    """Pane q with q*slide <= ts < (q+1)*slide, by direct comparison."""
    q = math.floor(ts / slide)
    while q * slide > ts:
        q -= 1
    while (q + 1) * slide <= ts:
        q += 1
    return q


def _batches(n: int, sizes: int | np.random.Generator) -> Iterator[tuple[int, int]]:
    a = 0
    while a < n:
        step = sizes if isinstance(sizes, int) else int(sizes.integers(1, 400))
        yield a, min(n, a + step)
        a += step


@dataclass
class Caller:
    """Applies plans to a ring of per-slot event-index lists, as the monitor applies them."""

    clock: PaneClock
    panes: list[int]  # pane of every event of the stream (by global index)
    ring: list[list[int]] = field(default_factory=list)
    owner: list[int | None] = field(default_factory=list)
    closures: list[Closure] = field(default_factory=list)
    contents: list[tuple[list[int], list[int] | None]] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    fed: int = 0

    def __post_init__(self) -> None:
        self.ring = [[] for _ in range(self.clock.ring_size)]
        self.owner = [None] * self.clock.ring_size

    def feed(self, ts: np.ndarray) -> list[Segment]:
        segs = self.clock.plan(ts)
        offset, stop = self.fed, 0
        assert (segs == []) == (ts.size == 0)
        for seg in segs:
            assert seg.start == stop and seg.stop >= seg.start
            stop = seg.stop
            assert seg.slots.dtype == np.int64 and seg.slots.shape == (seg.stop - seg.start,)
            assert seg.late == int(np.count_nonzero(seg.slots == -1))
            for j, s in enumerate(seg.slots.tolist()):
                idx = offset + seg.start + j
                self.slots.append(s)
                if s == -1:
                    self.late.append(idx)
                    continue
                q = self.panes[idx]
                assert s == q % self.clock.ring_size
                # a slot never receives pane q while it still holds another, unreleased pane
                assert self.owner[s] in (None, q), (s, self.owner[s], q)
                self.owner[s] = q
                self.ring[s].append(idx)
            for c in seg.closures:
                window = sorted(i for s in c.window_slots for i in self.ring[s])
                ref = (
                    None
                    if c.reference_slots is None
                    else sorted(i for s in c.reference_slots for i in self.ring[s])
                )
                self.closures.append(c)
                self.contents.append((window, ref))
                for s in c.release_slots:
                    assert self.ring[s], "released an empty slot"
                    self.ring[s] = []
                    self.owner[s] = None
        assert stop == ts.size
        self.fed += ts.size
        return segs

    def held_panes(self) -> list[int]:
        return [q for q in self.owner if q is not None]


def _last_completed(clock: PaneClock) -> int:
    if clock.kind == "count":
        return clock.events // int(clock.slide) - 1
    assert clock.watermark is not None
    return _pane(clock.watermark, clock.slide) - 1


def _check_no_leak(caller: Caller) -> None:
    """Every slot still held is a pane some future window or reference uses."""
    clock = caller.clock
    span = (clock.reference_lag + 1) * clock.panes_per_window
    lc = _last_completed(clock)
    for q in caller.held_panes():
        assert q + span - 1 > lc, (q, lc)
    assert len(caller.held_panes()) <= clock.ring_size


def _check_count(caller: Caller, n: int) -> None:
    clock = caller.clock
    k, lag, slide = clock.panes_per_window, clock.reference_lag, int(clock.slide)
    size = k * slide
    expected = list(range(k - 1, n // slide))
    assert [c.pane for c in caller.closures] == expected
    assert clock.windows_closed == len(expected)
    assert caller.late == [] and clock.late_events == 0 and clock.events == n
    for c, (window, ref) in zip(caller.closures, caller.contents, strict=True):
        start, end = (c.pane - k + 1) * slide, (c.pane + 1) * slide
        assert (c.start, c.end) == (start, end)
        assert window == list(range(start, end))
        assert c.events == size
        assert c.window_slots == tuple(
            q % clock.ring_size for q in range(c.pane - k + 1, c.pane + 1)
        )
        if lag == 0 or start - lag * size < 0:
            assert ref is None
        else:
            assert ref == list(range(start - lag * size, end - lag * size))
    _check_no_leak(caller)


def _check_time(caller: Caller, ts: np.ndarray) -> None:
    """Recompute every window from scratch and compare with what the caller got."""
    clock = caller.clock
    k, lag, slide, lateness = (
        clock.panes_per_window,
        clock.reference_lag,
        clock.slide,
        clock.allowed_lateness,
    )
    t = ts.tolist()
    panes = caller.panes
    # late: the event's pane had completed when it arrived (watermark of the events before it)
    late, run_max = [], -math.inf
    for i, x in enumerate(t):
        if i > 0 and (panes[i] + 1) * slide <= run_max - lateness:
            late.append(i)
        run_max = max(run_max, x)
    assert caller.late == late
    assert clock.late_events == len(late) and clock.events == len(t) - len(late)
    late_set = set(late)
    kept = np.array([i for i in range(len(t)) if i not in late_set], dtype=np.int64)
    kept_ts = ts[kept]
    order = np.argsort(kept_ts, kind="stable")
    sorted_ts, sorted_idx = kept_ts[order], kept[order]

    def events_in(start: float, end: float) -> list[int]:
        lo = np.searchsorted(sorted_ts, start, side="left")
        hi = np.searchsorted(sorted_ts, end, side="left")
        return sorted(sorted_idx[lo:hi].tolist())

    # every completed window holding at least one event is closed, once, in pane order
    lc = _pane(run_max - lateness, slide) - 1
    kept_panes = {panes[i] for i in kept.tolist()}
    expected = sorted({q + j for q in kept_panes for j in range(k) if q + j <= lc})
    reported = [c for c in caller.closures if c.window_slots]
    assert [c.pane for c in reported] == expected
    assert clock.windows_closed == len(expected)
    origin = _pane(t[0] - lateness, slide)  # first pane open when the first event arrived
    for c, (window, ref) in zip(caller.closures, caller.contents, strict=True):
        p = c.pane
        start, end = (p - k + 1) * slide, (p + 1) * slide
        assert (c.start, c.end) == (start, end)
        if not c.window_slots:  # release-only
            assert c.events == 0 and c.reference_slots is None and c.release_slots
            assert not events_in(start, end)
            continue
        assert window == events_in(start, end)
        assert c.events == len(window) > 0
        assert c.window_slots == tuple(q % clock.ring_size for q in range(p - k + 1, p + 1))
        if lag == 0 or p - lag * k - k + 1 < origin:
            assert ref is None
        else:
            assert ref == events_in(start - lag * k * slide, end - lag * k * slide)
    _check_no_leak(caller)


def _run(
    kind: Literal["count", "time"],
    ts: np.ndarray,
    sizes: int | np.random.Generator,
    **kw: Any,
) -> Caller:
    clock = PaneClock(kind, **kw)
    panes = (
        [i // int(clock.slide) for i in range(ts.size)]
        if kind == "count"
        else [_pane(x, clock.slide) for x in ts.tolist()]
    )
    caller = Caller(clock, panes)
    for a, b in _batches(ts.size, sizes):
        caller.feed(ts[a:b])
        _check_no_leak(caller)
    return caller


def _jittered(n: int, rate: float, jitter: float, t0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return t0 + np.arange(n) * rate + rng.uniform(-jitter, jitter, n)


def _outcome(caller: Caller) -> tuple[list[Closure], list[int], dict[str, Any]]:
    return caller.closures, caller.slots, caller.clock.snapshot()


# ---------------------------------------------------------------- count windows


@pytest.mark.parametrize(
    ("size", "slide", "lag"),
    [(100, None, 0), (1000, 250, 0), (1000, 250, 2), (60, 20, 1), (10, 1, 3)],
)
def test_count_windows_match_brute_force(size: int, slide: int | None, lag: int) -> None:
    n = 6_013
    ts = np.full(n, np.nan)  # ignored for count windows
    caller = _run(
        "count", ts, np.random.default_rng(size), size=size, slide=slide, reference_lag=lag
    )
    k = size // (slide or size)
    assert caller.clock.ring_size == (lag + 1) * k
    _check_count(caller, n)


def test_count_closures_cut_segments_exactly() -> None:
    clock = PaneClock("count", size=4, slide=2)
    segs = clock.plan(np.zeros(9))
    assert [(s.start, s.stop) for s in segs] == [(0, 4), (4, 6), (6, 8), (8, 9)]
    assert [len(s.closures) for s in segs] == [1, 1, 1, 0]
    assert all(s.late == 0 for s in segs)


# ---------------------------------------------------------------- time windows


TIME_CASES = [
    # size, slide, lateness, lag, rate, jitter, t0
    (60.0, None, 0.0, 0, 0.5, 20.0, 1.7e9),
    (60.0, None, 45.0, 0, 0.5, 40.0, 1.7e9),
    (60.0, None, 120.0, 1, 0.5, 100.0, 1.7e9),
    (300.0, 60.0, 0.0, 0, 0.3, 30.0, 1.7e9),
    (300.0, 60.0, 90.0, 0, 0.3, 150.0, 1.7e9),
    (300.0, 60.0, 30.0, 2, 0.2, 60.0, 1.7e9),
    (4.0, 1.0, 2.5, 1, 0.01, 3.0, -37.0),  # negative panes, many closures
    (0.3, 0.1, 0.25, 2, 0.004, 0.3, 12.345),  # float slide: pane edges by product
    (10.0, 10.0, 0.0, 0, 0.05, 0.0, 0.0),  # in-order timestamps
]


@pytest.mark.parametrize(("size", "slide", "lateness", "lag", "rate", "jitter", "t0"), TIME_CASES)
def test_time_windows_match_brute_force(
    size: float,
    slide: float | None,
    lateness: float,
    lag: int,
    rate: float,
    jitter: float,
    t0: float,
) -> None:
    ts = _jittered(5_000, rate, jitter, t0, seed=int(size * 7 + lateness))
    caller = _run(
        "time",
        ts,
        np.random.default_rng(3),
        size=size,
        slide=slide,
        allowed_lateness=lateness,
        reference_lag=lag,
    )
    s = slide or size
    k = round(size / s)
    assert caller.clock.ring_size == (lag + 1) * k + math.ceil(lateness / s) + 1
    _check_time(caller, ts)
    assert caller.clock.windows_closed > 5
    if jitter > lateness:
        assert caller.clock.late_events > 0


def test_time_edges_and_exact_lateness() -> None:
    """Integer timestamps sit on pane edges; lateness is an exact multiple of the slide."""
    rng = np.random.default_rng(11)
    ts = (np.arange(2_000) // 3 + rng.integers(-4, 5, 2_000)).astype(np.float64)
    for lateness in (0.0, 1.0, 2.0, 3.0, 4.0):
        caller = _run(
            "time", ts, rng, size=3.0, slide=1.0, allowed_lateness=lateness, reference_lag=1
        )
        _check_time(caller, ts)
    # exactly at the lateness bound is still on time, one past it is late
    clock = PaneClock("time", size=1.0, allowed_lateness=2.0)
    segs = clock.plan(np.array([10.5, 8.0, 7.999]))
    assert segs[-1].slots.tolist()[1:] == [8 % clock.ring_size, -1]
    assert clock.late_events == 1


def test_first_event_of_a_batch_moves_the_watermark() -> None:
    clock = PaneClock("time", size=10.0)
    clock.plan(np.array([1.0, 2.0]))
    segs = clock.plan(np.array([15.0, 3.0]))
    assert (segs[0].start, segs[0].stop, segs[0].slots.size) == (0, 0, 0)
    assert [c.events for c in segs[0].closures] == [2]
    assert segs[1].slots.tolist() == [1, -1] and segs[1].late == 1


def test_nothing_is_late_before_the_first_event() -> None:
    clock = PaneClock("time", size=60.0)
    segs = clock.plan(np.array([1e6, 1e6 + 1.0]))
    assert clock.late_events == 0 and segs[0].late == 0
    assert clock.watermark == 1e6 + 1.0


# ---------------------------------------------------------------- batching, snapshots, gaps


@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("count", {"size": 500, "slide": 125, "reference_lag": 1}),
        ("time", {"size": 300.0, "slide": 60.0, "allowed_lateness": 90.0, "reference_lag": 2}),
        ("time", {"size": 60.0, "allowed_lateness": 0.0}),
    ],
)
def test_plan_does_not_depend_on_batching(kind: Literal["count", "time"], kw: Any) -> None:
    ts = _jittered(3_000, 0.3, 120.0, 1.7e9, seed=5)
    runs = [_run(kind, ts, sizes, **kw) for sizes in (1, 7, 5000, np.random.default_rng(9))]
    first = _outcome(runs[0])
    assert first[0], "no window closed"
    for other in runs[1:]:
        assert _outcome(other) == first


@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("count", {"size": 100, "slide": 25, "reference_lag": 2}),
        ("time", {"size": 300.0, "slide": 60.0, "allowed_lateness": 90.0, "reference_lag": 1}),
        ("time", {"size": 60.0, "allowed_lateness": 200.0}),
    ],
)
def test_snapshot_restore_mid_stream(kind: Literal["count", "time"], kw: Any) -> None:
    ts = _jittered(4_000, 0.3, 150.0, 1.7e9, seed=8)
    whole = _run(kind, ts, 333, **kw)
    for cut in (0, 1, 1_234, 2_500):
        clock = PaneClock(kind, **kw)
        first = Caller(clock, whole.panes)
        for a, b in _batches(cut, 333):
            first.feed(ts[a:b])
        restored = PaneClock.from_snapshot(json.loads(json.dumps(clock.snapshot())))
        assert restored.snapshot() == clock.snapshot()
        # the caller's ring survives too (it checkpoints its counts alongside the clock)
        second = Caller(restored, whole.panes)
        second.ring, second.owner, second.fed = first.ring, first.owner, cut
        for a, b in _batches(ts.size - cut, 333):
            second.feed(ts[cut + a : cut + b])
        assert first.closures + second.closures == whole.closures
        assert first.slots + second.slots == whole.slots
        assert restored.snapshot() == whole.clock.snapshot()


@pytest.mark.parametrize(
    ("slide", "gap", "lag"),
    [(60.0, 365 * 86_400.0, 0), (60.0, 365 * 86_400.0, 3), (1.0, 1_000 * 365 * 86_400.0, 2)],
)
def test_gap_costs_bounded_time_and_closes_the_right_windows(
    slide: float, gap: float, lag: int
) -> None:
    rng = np.random.default_rng(4)
    t0 = 1.7e9
    before = t0 + np.sort(rng.uniform(0, 40 * slide, 2_000)) + rng.uniform(-slide, slide, 2_000)
    after = t0 + gap + np.arange(1_000) * slide / 50 + rng.uniform(-slide, slide, 1_000)
    straggler = np.array([t0 + 39 * slide])  # arrives after the jump: late
    ts = np.concatenate([before, after[:10], straggler, after[10:]])
    clock = PaneClock(
        "time", size=5 * slide, slide=slide, allowed_lateness=2.5 * slide, reference_lag=lag
    )
    caller = Caller(clock, [_pane(x, slide) for x in ts.tolist()])
    caller.feed(ts[:2_000])
    n_closed = len(caller.closures)
    segs = caller.feed(ts[2_000:2_001])  # the jump: work bounded by the ring, not the gap
    jump = caller.closures[n_closed:]
    assert 0 < len(jump) <= clock.ring_size + clock.panes_per_window
    assert [s.slots.size for s in segs] == [0, 1]  # applied before the jumping event is added
    # after the jump only the new pane is held: everything else was released
    assert caller.held_panes() == [_pane(float(ts[2_000]), slide)]
    if lag:
        assert any(not c.window_slots for c in jump)  # release-only closures free references
    for a, b in _batches(ts.size - 2_001, 97):
        caller.feed(ts[2_001 + a : 2_001 + b])
    _check_time(caller, ts)
    assert 2_010 in caller.late
    # right after the gap the rolling reference is the (empty) window L windows earlier
    after_gap = [
        ref
        for c, (_, ref) in zip(caller.closures, caller.contents, strict=True)
        if c.window_slots and c.start >= t0 + gap - 5 * slide
    ]
    assert after_gap
    if lag:
        assert after_gap[0] == []


def test_ring_never_collides_at_the_lateness_bound() -> None:
    """Events exactly `allowed_lateness` behind the max, on pane edges, fill the whole ring."""
    for lateness in (0.0, 0.5, 1.0, 2.0, 2.5, 7.0):
        for lag in (0, 2):
            t: list[float] = []
            for m in range(0, 200):
                hi = float(m)
                t += [hi, hi - lateness, hi - lateness + 0.999, hi - lateness - 0.001, hi + 0.5]
            ts = np.array(t)
            caller = _run(
                "time", ts, 13, size=3.0, slide=1.0, allowed_lateness=lateness, reference_lag=lag
            )
            _check_time(caller, ts)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("args", "kw", "match"),
    [
        (("hours", 10), {}, "kind"),
        (("count", 0), {}, "positive"),
        (("time", -5.0), {}, "positive"),
        (("time", math.nan), {}, "positive"),
        (("time", 60.0), {"slide": math.inf}, "positive"),
        (("count", 10), {"slide": 3}, "multiple"),
        (("time", 60.0), {"slide": 120.0}, "multiple"),
        (("count", 10.5), {}, "whole numbers"),
        (("count", 10), {"slide": 2.5}, "multiple|whole"),
        (("count", 10), {"allowed_lateness": 1.0}, "time windows only"),
        (("time", 60.0), {"allowed_lateness": -1.0}, "allowed_lateness"),
        (("time", 60.0), {"allowed_lateness": math.nan}, "allowed_lateness"),
        (("time", 60.0), {"reference_lag": -1}, "reference_lag"),
        (("time", 60.0), {"reference_lag": 1.5}, "reference_lag"),
        (("count", 100), {"slide": 1, "reference_lag": 100}, "max_panes"),
        (("time", 60.0), {"allowed_lateness": 1e9}, "max_panes"),
        (("time", 60.0), {"max_panes": 0}, "max_panes"),
    ],
)
def test_constructor_validation(args: tuple[Any, ...], kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PaneClock(*args, **kw)


def test_max_panes_bound_is_inclusive() -> None:
    assert PaneClock("count", 100, slide=1, reference_lag=99, max_panes=10_000).ring_size == 10_000


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e300])
def test_plan_rejects_bad_timestamps_without_changing_state(bad: float) -> None:
    clock = PaneClock("time", size=60.0)
    clock.plan(np.array([1.0, 2.0]))
    before = clock.snapshot()
    with pytest.raises(ValueError, match="timestamps"):
        clock.plan(np.array([3.0, bad, 4.0]))
    assert clock.snapshot() == before
    with pytest.raises(ValueError, match="1-D"):
        clock.plan(np.zeros((2, 2)))
    assert clock.plan(np.array([])) == []


def test_count_ignores_timestamps() -> None:
    clock = PaneClock("count", size=10)
    segs = clock.plan(np.array([math.nan, math.inf] * 5))
    assert len(segs) == 1 and len(segs[0].closures) == 1
    assert clock.watermark is None


def test_from_snapshot_rejects_bad_state() -> None:
    clock = PaneClock("time", size=60.0, allowed_lateness=30.0)
    clock.plan(np.array([10.0, 70.0]))
    good = clock.snapshot()
    with pytest.raises(ValueError, match="version"):
        PaneClock.from_snapshot({**good, "v": 99})
    with pytest.raises(ValueError, match="length"):
        PaneClock.from_snapshot({**good, "slot_events": good["slot_events"][:-1]})
    wrong_slot = list(good["slot_panes"])
    wrong_slot[0] = 7
    with pytest.raises(ValueError, match="inconsistent"):
        PaneClock.from_snapshot({**good, "slot_panes": wrong_slot})
