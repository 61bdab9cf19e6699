"""LabelJoin: per-model queues, watermarks, TTLs and capacities, fair-share eviction,
duplicates, unmatched labels, label delays and snapshots, each checked against a brute-force
reference written here (one plain dict in insertion order, scanned in full at every step)."""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import astuple, dataclass, field
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from stream_monitor.monitor.join import (
    CHUNK_SIZE,
    DELAY_BUCKETS,
    LabelJoin,
    ModelJoinStats,
    PendingPrediction,
)

# ("add", model, event, ts, label, score, version) | ("match", model, event, label_ts | None)
# | ("shed", n)
Op = tuple[Any, ...]
Value = tuple[float, str | None, float | None, str | None]
STAT_FIELDS = ("matched", "expired", "evicted", "duplicates", "labels_unmatched")

HOUR = 3600.0
DAY = 86400.0


@dataclass
class RefJoin:
    """What LabelJoin promises, written naively.

    Entries live in one plain dict, whose insertion order is the arrival order (a duplicate
    is deleted and re-inserted, so it becomes the newest). Each model's watermark is the
    newest of its timestamps, except that one more than ``max_future`` ahead of it (once it
    exists) leaves it alone. After an add: the model's oldest entries beyond its capacity
    are evicted, then, while the whole is over ``capacity``, the oldest entry of the model
    with the most entries (ties: smallest id). After *every* operation, each model expires:
    with ``strict_ttl`` every entry older than its ``watermark - ttl`` wherever it sits (the
    definition); without, its entries from the oldest end until one is recent enough (the
    documented arrival-order shortcut, equal to the definition when timestamps never go
    backwards).
    """

    capacity: int
    ttl: float
    model_capacity: int | None = None
    overrides: dict[str, tuple[float, int]] = field(default_factory=dict)
    max_future: float = 3600.0
    strict_ttl: bool = False
    pending: dict[tuple[str, str], Value] = field(default_factory=dict)
    watermarks: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Counter[str]] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)
    unknown_labels: int = 0
    future: int = 0
    negative: int = 0

    def ttl_of(self, m: str) -> float:
        return self.overrides[m][0] if m in self.overrides else self.ttl

    def cap_of(self, m: str) -> int:
        if m in self.overrides:
            return self.overrides[m][1]
        return self.capacity if self.model_capacity is None else self.model_capacity

    def keys_of(self, m: str) -> list[tuple[str, str]]:
        return [k for k in self.pending if k[0] == m]

    def evict_oldest_of(self, m: str) -> None:
        del self.pending[self.keys_of(m)[0]]
        self.stats[m]["evicted"] += 1

    def expire_all(self) -> None:
        for m, wm in self.watermarks.items():
            horizon = wm - self.ttl_of(m)
            old = []
            for k in self.keys_of(m):
                if self.pending[k][0] < horizon:
                    old.append(k)
                elif not self.strict_ttl:
                    break
            for k in old:
                del self.pending[k]
            self.stats[m]["expired"] += len(old)

    def add(
        self, m: str, e: str, ts: float, label: str | None, score: float | None, v: str | None
    ) -> None:
        self.stats.setdefault(m, Counter())
        if (m, e) in self.pending:
            self.stats[m]["duplicates"] += 1
            del self.pending[(m, e)]
        if m not in self.watermarks:
            self.watermarks[m] = ts
        elif ts - self.watermarks[m] > self.max_future:
            self.future += 1
        else:
            self.watermarks[m] = max(self.watermarks[m], ts)
        self.pending[(m, e)] = (ts, label, score, v)
        while len(self.keys_of(m)) > self.cap_of(m):
            self.evict_oldest_of(m)
        while len(self.pending) > self.capacity:
            counts = Counter(k[0] for k in self.pending)
            self.evict_oldest_of(sorted(counts, key=lambda x: (-counts[x], x))[0])
        self.expire_all()

    def match(self, m: str, e: str, label_ts: float | None) -> Value | None:
        found = self.pending.pop((m, e), None)
        if found is None:
            if m in self.stats:
                self.stats[m]["labels_unmatched"] += 1
            else:
                self.unknown_labels += 1
        else:
            self.stats[m]["matched"] += 1
            if label_ts is not None:
                self.negative += label_ts < found[0]
                self.delays.setdefault(m, []).append(max(label_ts - found[0], 0.0))
        self.expire_all()
        return found

    def shed(self, n: int) -> int:
        done = 0
        while done < n and self.pending:
            m = next(iter(self.pending))[0]
            self.evict_oldest_of(m)
            done += 1
            self.expire_all()
        return done

    def model_stats(self, m: str) -> tuple[int, ...]:
        return (len(self.keys_of(m)), *(self.stats[m][f] for f in STAT_FIELDS))

    def totals(self) -> tuple[int, ...]:
        s = [sum(c[f] for c in self.stats.values()) for f in STAT_FIELDS]
        # as LabelJoin: evicted, expired, matched, unmatched labels, duplicates
        return (s[2], s[1], s[0], s[4] + self.unknown_labels, s[3])

    def awaiting_ratio(self, m: str) -> float | None:
        if m not in self.stats:
            return None
        pending = len(self.keys_of(m))
        n = pending + sum(self.stats[m][f] for f in ("matched", "expired", "evicted"))
        return pending / n if n else None


def _counters(j: LabelJoin) -> tuple[int, int, int, int, int]:
    return (j.evicted, j.expired, j.matched, j.unmatched_labels, j.duplicate_predictions)


def _pending(j: LabelJoin) -> list[tuple[tuple[str, str], Value]]:
    return [((m, e), (p.timestamp, p.label, p.score, p.model_version)) for m, e, p in j.waiting()]


def _random_ops(
    seed: int,
    n: int,
    *,
    n_ids: int,
    p_match: float,
    monotone: bool,
    jitter: float = 0.0,
    models: tuple[str, ...] = ("a", "b"),
    p_future: float = 0.0,
    p_shed: float = 0.0,
) -> list[Op]:
    """Adds, matches (some with a label time) and sheds over a small id pool (so duplicates,
    misses, late, shuffled and missing labels all happen)."""
    rng = np.random.default_rng(seed)
    ops: list[Op] = []
    t = 1_700_000_000.0
    for _ in range(n):
        model = models[int(rng.integers(len(models)))]
        event = f"e{int(rng.integers(n_ids))}"
        u = rng.random()
        if u < p_shed:
            ops.append(("shed", int(rng.integers(1, 6))))
        elif u < p_shed + p_match:
            # label time: from a few seconds *before* now (skew) to ~a month after
            label_ts = None if rng.random() < 0.2 else t - 3.0 + 10 ** rng.uniform(-1.0, 6.5)
            ops.append(("match", model, event, label_ts))
        else:
            t += float(rng.exponential(1.0))
            ts = t if monotone else t - float(rng.uniform(0.0, jitter))
            if rng.random() < p_future:  # a producer with a bad clock
                ts = t + float(rng.uniform(2 * HOUR, 1e6))
            label = None if rng.random() < 0.3 else str(int(rng.integers(2)))
            score = None if rng.random() < 0.3 else round(float(rng.random()), 4)
            version = None if rng.random() < 0.5 else f"v{int(rng.integers(3))}"
            ops.append(("add", model, event, ts, label, score, version))
    return ops


def _apply(j: LabelJoin, op: Op) -> Any:
    if op[0] == "add":
        _, m, e, ts, label, score, version = op
        j.add_prediction(m, e, ts, label=label, score=score, model_version=version)
        return None
    if op[0] == "shed":
        return j.shed(op[1])
    return j.match(op[1], op[2], label_timestamp=op[3])


def _apply_ref(r: RefJoin, op: Op) -> Any:
    if op[0] == "add":
        r.add(*op[1:])
        return None
    if op[0] == "shed":
        return r.shed(op[1])
    return r.match(op[1], op[2], op[3])


def _check_sums(j: LabelJoin) -> None:
    """Partition totals equal the per-model sums (labels of unknown models aside)."""
    s = {f: sum(getattr(st, f) for st in j.by_model.values()) for f in ("pending", *STAT_FIELDS)}
    assert s["pending"] == len(j)
    assert s["matched"] == j.matched
    assert s["expired"] == j.expired
    assert s["evicted"] == j.evicted
    assert s["duplicates"] == j.duplicate_predictions
    assert s["labels_unmatched"] + j.labels_unknown_model == j.unmatched_labels
    assert sum(j.delay_histogram(m)[2] for m in j.by_model) <= j.matched


def _hist_ref(delays: list[float]) -> tuple[list[int], float, int]:
    idx = np.searchsorted(np.asarray(DELAY_BUCKETS), np.asarray(delays), side="left")
    counts = np.bincount(idx, minlength=len(DELAY_BUCKETS) + 1)
    return [int(c) for c in counts], float(sum(delays)), len(delays)


def _run_against_reference(j: LabelJoin, r: RefJoin, ops: list[Op]) -> None:
    for i, op in enumerate(ops):
        got = _apply(j, op)
        want = _apply_ref(r, op)
        if isinstance(got, PendingPrediction):
            got = msgspec.structs.astuple(got)[:4]
        assert got == want, (i, op)
        assert len(j) == len(r.pending) <= j.capacity, (i, op)
        assert _counters(j) == r.totals(), (i, op)
        if op[0] != "shed":
            m = op[1]
            if m in r.stats:
                assert astuple(j.by_model[m]) == r.model_stats(m), (i, op)
                assert j.model_watermark(m) == r.watermarks[m]
                assert j.awaiting_ratio(m) == r.awaiting_ratio(m)
            else:
                assert m not in j.by_model and j.awaiting_ratio(m) is None
        if i % 250 == 0:
            assert _pending(j) == list(r.pending.items()), i
    _check_sums(j)
    assert _pending(j) == list(r.pending.items())
    assert sorted(j.by_model) == sorted(r.stats)
    for m in r.stats:
        assert astuple(j.by_model[m]) == r.model_stats(m)
        assert j.awaiting_ratio(m) == r.awaiting_ratio(m)
        got_h, want_h = j.delay_histogram(m), _hist_ref(r.delays.get(m, []))
        assert got_h[0] == want_h[0] and got_h[2] == want_h[2]
        assert got_h[1] == pytest.approx(want_h[1], rel=1e-12, abs=1e-9)
    assert (j.future_timestamps, j.negative_delays) == (r.future, r.negative)
    assert j.labels_unknown_model == r.unknown_labels


# ------------------------------------------------------------------------------- capacity


def test_capacity_bound_and_evictions_on_long_random_stream() -> None:
    capacity = 50
    ops = _random_ops(seed=1, n=20_000, n_ids=400, p_match=0.25, monotone=True)
    j = LabelJoin(capacity=capacity, ttl_seconds=1e12)  # no expiry: capacity alone
    ref = RefJoin(capacity, 1e12)
    max_len = 0
    for op in ops:
        _apply(j, op)
        _apply_ref(ref, op)
        max_len = max(max_len, len(j))
        assert len(j) <= capacity
    assert max_len == capacity  # the bound was actually reached
    assert _counters(j) == ref.totals()
    assert _pending(j) == list(ref.pending.items())
    assert j.evicted > 1000 and j.expired == 0
    # conservation: every add is pending, matched, evicted or was replaced by its duplicate
    adds = sum(op[0] == "add" for op in ops)
    assert adds == len(j) + j.matched + j.evicted + j.expired + j.duplicate_predictions
    assert j.matched + j.unmatched_labels == sum(op[0] == "match" for op in ops)
    for m, st in j.by_model.items():  # ... and per model
        adds_m = sum(op[0] == "add" and op[1] == m for op in ops)
        assert adds_m == st.pending + st.matched + st.evicted + st.expired + st.duplicates
    _check_sums(j)


def test_evicted_count_without_matches_is_closed_form() -> None:
    j = LabelJoin(capacity=7, ttl_seconds=1e9)
    for i in range(100):
        j.add_prediction("m", f"e{i}", float(i), label=None, score=float(i))
    assert (len(j), j.evicted) == (7, 100 - 7)
    # the survivors are the 7 newest, oldest first
    assert [e for _, e, _ in j.waiting()] == [f"e{i}" for i in range(93, 100)]
    assert j.match("m", "e92") is None
    assert j.match("m", "e93") == PendingPrediction(93.0, None, 93.0)


def test_capacity_one() -> None:
    j = LabelJoin(capacity=1, ttl_seconds=100.0)
    j.add_prediction("m", "a", 0.0, label="1", score=None)
    j.add_prediction("m", "b", 1.0, label="0", score=None)
    assert (len(j), j.evicted) == (1, 1)
    assert j.match("m", "a") is None
    assert j.match("m", "b") == PendingPrediction(1.0, "0", None)
    assert len(j) == 0


def test_fair_share_evicts_from_the_model_holding_the_most() -> None:
    j = LabelJoin(capacity=6, ttl_seconds=1e9)
    for i in range(5):  # a chatty model first ...
        j.add_prediction("chatty", f"c{i}", float(i), label=None, score=None)
    j.add_prediction("quiet", "q0", 5.0, label=None, score=None)
    assert (len(j), j.evicted) == (6, 0)
    # ... full: every new prediction, of either model, evicts chatty's oldest
    j.add_prediction("quiet", "q1", 6.0, label=None, score=None)
    j.add_prediction("chatty", "c5", 7.0, label=None, score=None)
    assert (j.by_model["chatty"].evicted, j.by_model["quiet"].evicted) == (2, 0)
    assert [e for _, e, _ in j.waiting()] == ["c2", "c3", "c4", "q0", "q1", "c5"]
    # chatty 4, quiet 2; a quiet one more makes 4/3: chatty's oldest goes; then 3/4: from
    # then on quiet, now the larger, loses its own oldest
    for i in range(2, 5):
        j.add_prediction("quiet", f"q{i}", 8.0 + i, label=None, score=None)
    assert (j.by_model["chatty"].pending, j.by_model["quiet"].pending) == (3, 3)
    assert (j.by_model["chatty"].evicted, j.by_model["quiet"].evicted) == (3, 2)
    # a third model makes 3/3/1: a tie, which goes to the smallest model id
    j.add_prediction("zeta", "z0", 20.0, label=None, score=None)
    assert (j.by_model["chatty"].evicted, j.by_model["quiet"].evicted) == (4, 2)
    assert [e for _, e, _ in j.waiting()] == ["c4", "c5", "q2", "q3", "q4", "z0"]
    _check_sums(j)


def test_per_model_capacity_and_override() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=1e9, model_capacity=3, overrides={"big": (1e9, 5)})
    for i in range(10):
        j.add_prediction("small", f"s{i}", float(i), label=None, score=None)
        j.add_prediction("big", f"b{i}", float(i), label=None, score=None)
    assert (j.by_model["small"].pending, j.by_model["small"].evicted) == (3, 7)
    assert (j.by_model["big"].pending, j.by_model["big"].evicted) == (5, 5)
    assert (j.capacity_of("small"), j.capacity_of("big"), j.capacity_of("new")) == (3, 5, 3)
    assert j.match("small", "s6") is None and j.match("small", "s7") is not None
    assert j.match("big", "b4") is None and j.match("big", "b5") is not None


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_fair_share_and_model_caps_match_reference(seed: int) -> None:
    ops = _random_ops(
        seed=seed, n=5000, n_ids=60, p_match=0.3, monotone=False, jitter=4.0,
        models=("a", "b", "c", "d"),
    )  # fmt: skip
    overrides = {"c": (1e9, 4), "d": (1e9, 40)}
    j = LabelJoin(capacity=25, ttl_seconds=1e9, model_capacity=10, overrides=overrides)
    ref = RefJoin(25, 1e9, model_capacity=10, overrides=overrides)
    _run_against_reference(j, ref, ops)
    assert j.evicted > 500
    assert all(j.by_model[m].evicted > 0 for m in "abcd")


# ------------------------------------------------------------------------------------ TTL


@pytest.mark.parametrize(("capacity", "ttl"), [(10_000, 5.0), (10_000, 30.0), (40, 20.0)])
def test_ttl_expiry_matches_reference_monotone_time(capacity: int, ttl: float) -> None:
    ops = _random_ops(seed=2, n=6000, n_ids=300, p_match=0.3, monotone=True)
    j = LabelJoin(capacity=capacity, ttl_seconds=ttl)
    ref = RefJoin(capacity, ttl, strict_ttl=True)
    _run_against_reference(j, ref, ops)
    assert j.expired > 100  # expiry was exercised
    # nothing pending is older than the TTL behind its model's newest prediction
    for (m, _), (ts, *_) in _pending(j):
        wm = j.model_watermark(m)
        assert wm is not None and ts >= wm - ttl


def test_ttl_expiry_out_of_order_time_follows_arrival_order() -> None:
    # Timestamps up to 8 s out of order: the join expires from the oldest *arrival* and stops
    # at the first recent entry (documented: O(1) amortised). The reference does the same.
    ops = _random_ops(seed=3, n=6000, n_ids=300, p_match=0.3, monotone=False, jitter=8.0)
    j = LabelJoin(capacity=10_000, ttl_seconds=10.0)
    ref = RefJoin(10_000, 10.0, strict_ttl=False)
    _run_against_reference(j, ref, ops)
    assert j.expired > 100


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_everything_at_once_matches_reference(seed: int) -> None:
    """Shuffled timestamps, bad clocks, per-model TTLs and capacities, sheds, duplicates,
    late, early, skewed and missing labels."""
    ops = _random_ops(
        seed=seed, n=6000, n_ids=150, p_match=0.35, monotone=False, jitter=6.0,
        models=("a", "b", "c"), p_future=0.01, p_shed=0.01,
    )  # fmt: skip
    overrides = {"a": (5.0, 30), "b": (60.0, 200)}
    j = LabelJoin(capacity=60, ttl_seconds=20.0, model_capacity=50, overrides=overrides)
    ref = RefJoin(60, 20.0, model_capacity=50, overrides=overrides)
    _run_against_reference(j, ref, ops)
    assert min(j.expired, j.evicted, j.future_timestamps, j.negative_delays) > 0
    assert j.duplicate_predictions > 0 and j.unmatched_labels > 0


def test_ttl_boundary_exactly_ttl_behind_is_kept() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=10.0)
    j.add_prediction("m", "a", 100.0, label=None, score=1.0)
    j.add_prediction("m", "b", 110.0, label=None, score=1.0)  # a is exactly 10 s behind: kept
    assert (len(j), j.expired) == (2, 0)
    j.add_prediction("m", "c", 110.5, label=None, score=1.0)  # now a is 10.5 s behind
    assert (len(j), j.expired) == (2, 1)
    assert j.match("m", "a") is None
    assert j.model_watermark("m") == j.watermark == 110.5


def test_late_prediction_does_not_move_watermark_back() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=10.0)
    j.add_prediction("m", "a", 100.0, label=None, score=1.0)
    j.add_prediction("m", "late", 50.0, label=None, score=1.0)  # older than the TTL on arrival
    assert j.model_watermark("m") == 100.0
    # it is behind "a" in arrival order, which is recent, so it is not dropped yet
    assert (len(j), j.expired) == (2, 0)
    j.add_prediction("m", "b", 115.0, label=None, score=1.0)  # a expires, then late behind it
    assert (len(j), j.expired) == (1, 2)


def test_match_uncovering_an_expired_entry_expires_it() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=10.0)
    j.add_prediction("m", "a", 100.0, label=None, score=1.0)
    j.add_prediction("m", "late", 50.0, label=None, score=1.0)
    assert j.match("m", "a") is not None
    assert (len(j), j.expired, j.by_model["m"].expired) == (0, 1, 1)


def test_far_future_timestamp_of_one_model_does_not_expire_another() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=60.0)
    for i in range(5):
        j.add_prediction("steady", f"s{i}", 1000.0 + i, label=None, score=None)
    j.add_prediction("skewed", "x0", 1000.0, label=None, score=None)
    j.add_prediction("skewed", "x1", 1000.0 + 30 * 60, label=None, score=None)  # 30 min ahead
    assert j.by_model["skewed"].expired == 1  # its own old prediction expired ...
    assert j.by_model["steady"].expired == 0  # ... the other model's did not
    assert (j.model_watermark("steady"), j.model_watermark("skewed")) == (1004.0, 2800.0)
    assert j.watermark == 2800.0
    assert all(j.match("steady", f"s{i}") is not None for i in range(5))


def test_future_guard() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=60.0, max_future_seconds=HOUR)
    # the first prediction of a model sets its watermark, whatever its clock
    j.add_prediction("m", "a", 1000.0, label=None, score=None)
    j.add_prediction("m", "b", 1010.0, label=None, score=None)
    j.add_prediction("m", "bad", 1010.0 + 365 * DAY, label=None, score=None)  # a bad clock
    assert j.future_timestamps == 1
    assert j.model_watermark("m") == 1010.0  # not advanced: a and b still wait
    assert (len(j), j.expired) == (3, 0)
    assert j.match("m", "bad") == PendingPrediction(1010.0 + 365 * DAY, None, None)
    # exactly max_future ahead is not "more than": it advances (and a, b expire)
    j.add_prediction("m", "c", 1010.0 + HOUR, label=None, score=None)
    assert (j.future_timestamps, j.model_watermark("m"), j.expired, len(j)) == (
        1,
        1010.0 + HOUR,
        2,
        1,
    )
    # the guard is per model: another model's first prediction sets its own watermark
    j.add_prediction("n", "z", 1e9, label=None, score=None)
    assert (j.model_watermark("n"), j.future_timestamps) == (1e9, 1)


def test_future_guard_disabled_with_infinity() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=60.0, max_future_seconds=math.inf)
    j.add_prediction("m", "a", 0.0, label=None, score=None)
    j.add_prediction("m", "b", 1e9, label=None, score=None)
    assert (j.future_timestamps, j.model_watermark("m"), j.expired) == (0, 1e9, 1)
    r = LabelJoin.from_snapshot(orjson.loads(orjson.dumps(j.snapshot())))
    assert r.max_future_seconds == math.inf and r.snapshot() == j.snapshot()


def test_per_model_ttl_overrides_hours_and_weeks_side_by_side() -> None:
    overrides = {"clicks": (HOUR, 10_000), "fraud": (7 * DAY, 10_000)}
    j = LabelJoin(capacity=10_000, ttl_seconds=DAY, overrides=overrides)
    assert (j.ttl_of("clicks"), j.ttl_of("fraud"), j.ttl_of("other")) == (HOUR, 7 * DAY, DAY)
    t0 = 1_700_000_000.0
    # one prediction per model per 10 minutes, for 10 days
    for k in range(10 * 144):
        t = t0 + k * 600.0
        for m in ("clicks", "fraud", "other"):
            j.add_prediction(m, f"{m}{k}", t, label=None, score=None)
    # each keeps exactly the predictions within its own TTL (inclusive) of its watermark
    assert j.by_model["clicks"].pending == 7  # 0..60 min behind, every 10 min
    assert j.by_model["other"].pending == 145
    assert j.by_model["fraud"].pending == 7 * 144 + 1
    last = 10 * 144 - 1
    assert j.match("clicks", f"clicks{last - 6}") is not None
    assert j.match("clicks", f"clicks{last - 7}") is None
    assert j.match("fraud", f"fraud{last - 7 * 144}") is not None
    assert j.by_model["fraud"].expired == 10 * 144 - (7 * 144 + 1)
    _check_sums(j)


# ----------------------------------------------------------------- duplicates and labels


def test_duplicate_prediction_replaces_and_becomes_newest() -> None:
    j = LabelJoin(capacity=2, ttl_seconds=1e6)
    j.add_prediction("m", "a", 0.0, label="1", score=0.9)
    j.add_prediction("m", "b", 1.0, label="0", score=0.2)
    j.add_prediction("m", "a", 2.0, label="0", score=0.4)  # duplicate: replaced, now newest
    assert (len(j), j.duplicate_predictions, j.evicted) == (2, 1, 0)
    j.add_prediction("m", "c", 3.0, label="1", score=0.8)  # evicts b, the oldest now
    assert j.evicted == 1
    assert j.match("m", "b") is None
    assert j.match("m", "a") == PendingPrediction(2.0, "0", 0.4)  # the latest copy
    assert j.match("m", "a") is None  # matched once only
    assert (j.matched, j.unmatched_labels) == (1, 2)
    assert j.by_model["m"] == ModelJoinStats(
        pending=1, matched=1, expired=0, evicted=1, duplicates=1, labels_unmatched=2
    )


def test_same_event_id_in_two_models_are_two_entries() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=1e6)
    j.add_prediction("m1", "e", 0.0, label="1", score=None)
    j.add_prediction("m2", "e", 0.0, label="0", score=None)
    assert (len(j), j.duplicate_predictions) == (2, 0)
    assert j.match("m2", "e") == PendingPrediction(0.0, "0", None)
    assert j.match("m3", "e") is None  # a model never seen: no per-model entry
    assert j.match("m1", "e") == PendingPrediction(0.0, "1", None)
    assert (j.matched, j.unmatched_labels, len(j)) == (2, 1, 0)
    assert "m3" not in j.by_model and j.labels_unknown_model == 1
    assert j.match("m4", "e", count_unmatched=False) is None
    assert (j.unmatched_labels, j.labels_unknown_model) == (1, 1)
    _check_sums(j)


def test_unmatched_labels_are_counted_and_change_nothing() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=1e6)
    j.add_prediction("m", "a", 5.0, label="1", score=None)
    before = j.snapshot()
    for e in ("x", "y", "z"):
        assert j.match("m", e, label_timestamp=9.0) is None
    after = j.snapshot()
    assert after["models"]["m"]["pending"] == before["models"]["m"]["pending"]
    assert after["models"]["m"]["watermark"] == before["models"]["m"]["watermark"]
    assert (j.unmatched_labels, j.matched, len(j)) == (3, 0, 1)
    assert j.by_model["m"].labels_unmatched == 3
    assert j.delay_histogram("m") == ([0] * (len(DELAY_BUCKETS) + 1), 0.0, 0)


def test_model_version_is_kept() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=1e6)
    j.add_prediction("m", "a", 1.0, label="1", score=0.5, model_version="2024-01")
    j.add_prediction("m", "b", 2.0, label="0", score=0.1)
    assert j.snapshot()["models"]["m"]["pending"]["model_version"] == ["2024-01", None]
    r = LabelJoin.from_snapshot(orjson.loads(orjson.dumps(j.snapshot())))
    assert r.match("m", "a") == PendingPrediction(1.0, "1", 0.5, "2024-01")
    assert r.match("m", "b") == PendingPrediction(2.0, "0", 0.1, None)


# ------------------------------------------------------------------ ratios and histograms


def test_awaiting_ratio_equals_brute_force_count() -> None:
    ops = _random_ops(
        seed=21, n=4000, n_ids=100, p_match=0.4, monotone=False, jitter=5.0,
        models=("a", "b", "c"),
    )  # fmt: skip
    j = LabelJoin(capacity=40, ttl_seconds=15.0, overrides={"c": (1e9, 40)})
    adds: dict[str, list[tuple[str, str]]] = {}
    for op in ops:
        _apply(j, op)
        if op[0] == "add":
            adds.setdefault(op[1], []).append((op[1], op[2]))
    pending = Counter(m for (m, _), _ in _pending(j))
    for m, keys in adds.items():
        st = j.by_model[m]
        # every add not replaced by a later duplicate is pending, matched, expired or evicted
        settled = len(keys) - st.duplicates
        want = pending[m] / settled
        assert j.awaiting_ratio(m) == pytest.approx(want, rel=1e-12)
        assert st.pending == pending[m]
    assert 0 < j.awaiting_ratio("c") < 1  # type: ignore[operator]


def test_delay_histogram_equals_brute_force_bucketing() -> None:
    rng = np.random.default_rng(8)
    j = LabelJoin(capacity=100_000, ttl_seconds=1e12)
    delays: dict[str, list[float]] = {"a": [], "b": []}
    # delays on and next to every bucket bound, plus random ones across all of them
    edges = [b + d for b in DELAY_BUCKETS for d in (-1e-6, 0.0, 1e-6)]
    raw = edges + list(10 ** rng.uniform(-2.0, 7.0, size=3000)) + [-5.0, -0.0, 0.0, 1e9]
    for i, d in enumerate(raw):
        m = "ab"[i % 2]
        ts = 1_700_000_000.0 + float(rng.uniform(0, 1000))
        j.add_prediction(m, f"e{i}", ts, label=None, score=None)
        assert j.match(m, f"e{i}", label_timestamp=ts + d) is not None
        delays[m].append(max((ts + d) - ts, 0.0))
    for m in "ab":
        counts, total, n = j.delay_histogram(m)
        want = _hist_ref(delays[m])
        assert counts == want[0] and n == want[2] == len(delays[m])
        assert total == pytest.approx(want[1], rel=1e-12)
    assert j.negative_delays == 1
    # the edges land as Prometheus `le` says: a delay equal to a bound is in that bucket
    j2 = LabelJoin(capacity=10, ttl_seconds=1e12)
    for k, b in enumerate(DELAY_BUCKETS):
        j2.add_prediction("m", f"e{k}", 0.0, label=None, score=None)
        j2.match("m", f"e{k}", label_timestamp=b)
    j2.add_prediction("m", "inf", 0.0, label=None, score=None)
    j2.match("m", "inf", label_timestamp=31 * DAY)
    assert j2.delay_histogram("m")[0] == [1] * (len(DELAY_BUCKETS) + 1)
    assert j2.delay_histogram("unknown") == ([0] * (len(DELAY_BUCKETS) + 1), 0.0, 0)


def test_delay_not_recorded_without_label_time_or_when_not_finite() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=1e12)
    for e in "abc":
        j.add_prediction("m", e, 0.0, label=None, score=None)
    j.match("m", "a")
    j.match("m", "b", label_timestamp=math.inf)
    j.match("m", "c", label_timestamp=math.nan)
    assert j.delay_histogram("m")[2] == 0 and j.matched == 3


# ------------------------------------------------------------------------------------ shed


def test_shed_evicts_the_globally_oldest_across_models() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=1e9)
    order = [("b", "b0"), ("a", "a0"), ("b", "b1"), ("c", "c0"), ("a", "a1"), ("b", "b2")]
    for i, (m, e) in enumerate(order):
        j.add_prediction(m, e, float(i), label=None, score=None)
    assert j.shed(3) == 3
    assert [(m, e) for m, e, _ in j.waiting()] == order[3:]
    assert (j.by_model["a"].evicted, j.by_model["b"].evicted, j.evicted) == (1, 2, 3)
    assert j.shed(0) == 0 and j.shed(100) == 3 and len(j) == 0 and j.evicted == 6
    assert j.shed(1) == 0
    _check_sums(j)


# ------------------------------------------------------------------------------ snapshots


@pytest.mark.parametrize("split", [0, 1, 2500, 4999])
def test_snapshot_round_trip_gives_identical_behaviour(split: int) -> None:
    ops = _random_ops(
        seed=4, n=5000, n_ids=200, p_match=0.3, monotone=False, jitter=3.0,
        models=("a", "b", "c"), p_future=0.005, p_shed=0.005,
    )  # fmt: skip
    kw: dict[str, Any] = {"model_capacity": 40, "overrides": {"a": (5.0, 25)}}
    j = LabelJoin(capacity=60, ttl_seconds=15.0, **kw)
    for op in ops[:split]:
        _apply(j, op)
    data = orjson.dumps(j.snapshot())
    restored = LabelJoin.from_snapshot(orjson.loads(data))
    assert orjson.dumps(restored.snapshot()) == data
    assert len(restored) == len(j)
    for op in ops[split:]:
        assert _apply(restored, op) == _apply(j, op)
        assert _counters(restored) == _counters(j)
        assert restored.by_model == j.by_model
        assert len(restored) == len(j)
    assert restored.snapshot() == j.snapshot()
    assert restored.watermark == j.watermark
    for m in j.by_model:
        assert restored.delay_histogram(m) == j.delay_histogram(m)
        assert restored.model_watermark(m) == j.model_watermark(m)
    assert (restored.future_timestamps, restored.negative_delays) == (
        j.future_timestamps,
        j.negative_delays,
    )


def test_snapshot_of_empty_join_round_trips() -> None:
    j = LabelJoin(capacity=3, ttl_seconds=10.0)
    snap = orjson.loads(orjson.dumps(j.snapshot()))
    assert snap["models"] == {} and snap["next_seq"] == 0
    r = LabelJoin.from_snapshot(snap)
    assert r.watermark == -math.inf and r.model_watermark("m") is None
    assert (r.capacity, r.ttl_seconds, r.model_capacity, r.overrides) == (3, 10.0, None, {})
    # the first add after restore behaves as on a fresh join (no spurious expiry)
    r.add_prediction("m", "a", 5.0, label=None, score=None)
    assert (len(r), r.expired, r.watermark) == (1, 0, 5.0)


def test_snapshot_refuses_other_versions() -> None:
    snap = LabelJoin(capacity=3, ttl_seconds=10.0).snapshot()
    assert snap["v"] == 4
    v1 = {"v": 1, "capacity": 3, "ttl_seconds": 10.0, "pending": [], "watermark": None}
    for bad in (v1, {**snap, "v": 3}, {**snap, "v": 5}):
        with pytest.raises(ValueError, match="version"):
            LabelJoin.from_snapshot(bad)


# -------------------------------------------------------------------------------- bounded


def test_memory_is_bounded_under_a_long_random_workload() -> None:
    rng = np.random.default_rng(99)
    n = 100_000
    models = [f"m{i}" for i in range(12)]
    overrides = {"m0": (HOUR, 500), "m1": (7 * DAY, 3000), "m2": (60.0, 50)}
    j = LabelJoin(capacity=2000, ttl_seconds=DAY, model_capacity=1500, overrides=overrides)
    cap_of = {m: j.capacity_of(m) for m in models}
    kind = rng.random(n)
    mi = rng.integers(len(models), size=n)
    ids = rng.integers(5000, size=n)
    step = rng.exponential(20.0, size=n)
    skew = rng.random(n)
    t = 1_700_000_000.0
    adds = 0
    for i in range(n):
        m = models[mi[i]]
        if kind[i] < 0.6:
            t += step[i]
            ts = t + 1e7 if skew[i] < 0.001 else t - 50.0 * skew[i]
            j.add_prediction(m, f"e{ids[i]}", ts, label=None, score=None)
            adds += 1
            assert j.by_model[m].pending <= cap_of[m]
        elif kind[i] < 0.999:
            j.match(m, f"e{ids[i]}", label_timestamp=t)
        else:
            j.shed(int(ids[i]) % 50)
        assert len(j) <= j.capacity
    assert j.evicted > 0 and j.expired > 0 and j.future_timestamps > 0
    assert adds == len(j) + j.matched + j.expired + j.evicted + j.duplicate_predictions
    _check_sums(j)
    assert len(j.waiting()) == len(j)


def test_a_model_resuming_after_a_long_silence_moves_its_watermark() -> None:
    """One far-future prediction is held back; FUTURE_CONFIRM in a row confirm the jump, and
    the old predictions then expire by TTL."""
    from stream_monitor.monitor.join import FUTURE_CONFIRM

    j = LabelJoin(100, ttl_seconds=60.0, max_future_seconds=3600.0)
    j.add_prediction("m", "old", 0.0, label="1", score=None)
    j.add_prediction("m", "bad-clock", 1e6, label="1", score=None)
    j.add_prediction("m", "ok", 10.0, label="1", score=None)  # in reach: resets the run
    assert j.model_watermark("m") == 10.0 and j.expired == 0
    day = 86_400.0
    for i in range(FUTURE_CONFIRM - 1):
        j.add_prediction("m", f"next-{i}", day + i, label="1", score=None)
    assert j.model_watermark("m") == 10.0 and j.expired == 0  # not yet confirmed
    j.add_prediction("m", "confirm", day + 100, label="1", score=None)
    assert j.model_watermark("m") == day  # the earliest of the run
    # "old" and "ok" are now more than 60 s behind; arrival-order expiry reaches them once
    # the entries ahead of them are gone ("bad-clock" sits between and is recent).
    assert j.by_model["m"].expired == 1
    restored = LabelJoin.from_snapshot(orjson.loads(orjson.dumps(j.snapshot())))
    assert restored.snapshot() == j.snapshot()


# ------------------------------------------------------------------------- batch adds


def _random_join(rng: np.random.Generator, models: tuple[str, ...]) -> LabelJoin:
    """Small capacities, short or infinite TTLs, overrides and a tight or disabled future guard."""
    overrides = {
        m: (float(rng.choice([5.0, 40.0, math.inf])), int(rng.integers(1, 6)))
        for m in models
        if rng.random() < 0.4
    }
    return LabelJoin(
        int(rng.integers(1, 16)),
        float(rng.choice([3.0, 20.0, 200.0, math.inf])),
        model_capacity=None if rng.random() < 0.5 else int(rng.integers(1, 8)),
        overrides=overrides,
        max_future_seconds=float(rng.choice([0.0, 15.0, 100.0, math.inf])),
    )


def _random_batches(
    rng: np.random.Generator, models: tuple[str, ...], n: int
) -> list[tuple[Any, ...]]:
    """("batch", model, rows) | ("match", model, event, label_ts) | ("early", model, ts, label_ts)
    | ("shed", n): runs of one model's predictions with duplicates, jitter, jumps back and
    far-future timestamps (sometimes FUTURE_CONFIRM and more in a row)."""
    out: list[tuple[Any, ...]] = []
    t = 0.0
    for _ in range(n):
        m = models[int(rng.integers(len(models)))]
        u = rng.random()
        if u < 0.15:
            out.append(("match", m, f"e{int(rng.integers(12))}", t + float(rng.uniform(-5, 50))))
        elif u < 0.2:
            out.append(("early", m, t, t + float(rng.uniform(0, 9))))
        elif u < 0.23:
            out.append(("shed", int(rng.integers(1, 4))))
        else:
            rows = []
            future_run = rng.random() < 0.1
            for _ in range(int(rng.integers(1, 25))):
                t += float(rng.exponential(2.0))
                ts = t - float(rng.uniform(0.0, 30.0)) if rng.random() < 0.3 else t
                if future_run or rng.random() < 0.05:
                    ts = t + float(rng.uniform(150.0, 1e4))
                label = None if rng.random() < 0.5 else str(int(rng.integers(2)))
                score = None if rng.random() < 0.5 else float(rng.random())
                segments = None if rng.random() < 0.8 else ("k=v",)
                p = PendingPrediction(ts, label, score, f"v{int(rng.integers(2))}", segments)
                rows.append((f"e{int(rng.integers(12))}", p))
            out.append(("batch", m, rows))
    return out


def _state(j: LabelJoin) -> tuple[Any, ...]:
    return (
        orjson.dumps(j.snapshot()),  # bytes: key order (models, pending) counts too
        len(j),
        {m: astuple(st) for m, st in j.by_model.items()},
        {m: j.delay_histogram(m) for m in j.by_model},
        j.watermark,
    )


@pytest.mark.parametrize("seed", range(8))
def test_add_predictions_equals_add_prediction_per_event(seed: int) -> None:
    """Per event into one join, in batches into another: identical state after every step."""
    rng = np.random.default_rng(1000 + seed)
    for _ in range(40):
        models = ("a", "b", "c")[: int(rng.integers(1, 4))]
        j = _random_join(rng, models)
        jb = LabelJoin.from_snapshot(j.snapshot())
        for op in _random_batches(rng, models, 60):
            if op[0] == "batch":
                _, m, rows = op
                for e, p in rows:
                    j.add_prediction(
                        m,
                        e,
                        p.timestamp,
                        label=p.label,
                        score=p.score,
                        model_version=p.model_version,
                        segments=p.segments,
                    )
                jb.add_predictions(m, rows)
            elif op[0] == "match":
                assert j.match(*op[1:3], label_timestamp=op[3]) == jb.match(
                    *op[1:3], label_timestamp=op[3]
                )
            elif op[0] == "early":
                j.count_early_match(*op[1:])
                jb.count_early_match(*op[1:])
            else:
                assert j.shed(op[1]) == jb.shed(op[1])
            assert _state(j) == _state(jb), op
        _check_sums(jb)
        assert j.future_timestamps == jb.future_timestamps
        assert LabelJoin.from_snapshot(jb.snapshot()).snapshot() == j.snapshot()


def test_add_predictions_covers_every_path() -> None:
    """The random streams above do reach duplicates, both evictions, expiry and the guard."""
    rng = np.random.default_rng(1000)
    totals = Counter[str]()
    for _ in range(40):
        models = ("a", "b", "c")[: int(rng.integers(1, 4))]
        j = _random_join(rng, models)
        for op in _random_batches(rng, models, 60):
            if op[0] == "batch":
                j.add_predictions(op[1], op[2])
        totals.update(
            duplicates=j.duplicate_predictions,
            evicted=j.evicted,
            expired=j.expired,
            future=j.future_timestamps,
        )
    assert min(totals.values()) > 50, totals


def test_add_predictions_of_an_empty_batch_changes_nothing() -> None:
    j = LabelJoin(4, 10.0)
    j.add_predictions("m", [])
    assert j.snapshot() == LabelJoin(4, 10.0).snapshot()


def test_snapshot_columns_of_unequal_length_are_refused() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=1e6)
    j.add_prediction("m", "a", 1.0, label="1", score=0.5, segments=("region=eu",))
    j.add_prediction("m", "b", 2.0, label="0", score=0.1)
    snap = orjson.loads(orjson.dumps(j.snapshot()))
    r = LabelJoin.from_snapshot(snap)
    assert r.waiting() == j.waiting() and r.snapshot() == j.snapshot()
    snap["models"]["m"]["pending"]["score"].pop()
    with pytest.raises(ValueError, match="length"):
        LabelJoin.from_snapshot(snap)


# ---------------------------------------------------------------------- marks and rewinds


def _apply_batched(j: LabelJoin, ops: list[Op]) -> None:
    """``ops`` with runs of adds of one model stored by one add_predictions call."""
    i = 0
    while i < len(ops):
        op = ops[i]
        if op[0] != "add":
            _apply(j, op)
            i += 1
            continue
        rows = []
        while i < len(ops) and ops[i][0] == "add" and ops[i][1] == op[1]:
            _, _, e, ts, label, score, version = ops[i]
            rows.append((e, PendingPrediction(ts, label, score, version)))
            i += 1
        j.add_predictions(op[1], rows)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(("a", "b", "c"), [(0, 0, 1), (10, 700, 1500), (1500, 1501, 4000)])
def test_rewind_returns_to_the_settled_mark(batched: bool, a: int, b: int, c: int) -> None:
    ops = _random_ops(
        seed=9, n=5000, n_ids=150, p_match=0.3, monotone=False, jitter=3.0,
        models=("a", "b", "c"), p_future=0.005, p_shed=0.005,
    )  # fmt: skip
    j = LabelJoin(capacity=60, ttl_seconds=15.0, model_capacity=40, overrides={"a": (5.0, 25)})
    run = _apply_batched if batched else (lambda jj, oo: [_apply(jj, o) for o in oo])
    run(j, ops[:a])
    first = j.mark()
    at_first = j.snapshot()
    j.settle(first)
    run(j, ops[a:b])
    j.mark()  # a checkpoint whose commit failed: never settled
    run(j, ops[b:c])
    j.rewind()
    assert j.snapshot() == at_first
    assert j.waiting() == LabelJoin.from_snapshot(at_first).waiting()
    _check_sums(j)
    # ... and from there it behaves as the state it went back to
    ref = LabelJoin.from_snapshot(at_first)
    for op in ops[a:]:
        assert _apply(j, op) == _apply(ref, op)
    assert j.snapshot() == ref.snapshot()


def test_a_second_settle_moves_the_rewind_point_and_cuts_the_journal() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=1e9)
    for i in range(10):
        j.add_prediction("m", f"e{i}", float(i), label=None, score=None)
    j.settle(j.mark())
    _ = j.match("m", "e3"), j.match("m", "e7")
    second = j.mark()
    at_second = j.snapshot()
    j.settle(second)
    assert j._journal == []
    j.add_prediction("n", "x", 20.0, label=None, score=None)
    _ = j.match("m", "e0")
    j.rewind()
    assert j.snapshot() == at_second and "n" not in j.by_model


def test_rewind_without_a_settled_mark_is_refused() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=60.0)
    with pytest.raises(RuntimeError, match="settled"):
        j.rewind()
    j.mark()  # made but never settled (its checkpoint failed)
    with pytest.raises(RuntimeError, match="settled"):
        j.rewind()


# ----------------------------------------------------------------------- split snapshots


def _checkpoints(seed: int, steps: int) -> None:
    """A join driven by random adds, matches and duplicates (3 models, TTL and capacity
    evictions), checkpointed with split_snapshot as the application does (each chunk's
    contents written once, through JSON); at every checkpoint, restoring from what was written
    gives exactly the join's full snapshot."""
    rng = np.random.default_rng(seed)
    j = LabelJoin(capacity=5_000, ttl_seconds=3_000.0, model_capacity=2_500)
    written: dict[int, dict] = {}  # chunk -> its contents as written (JSON round trip)
    t, n = 0.0, 0
    for _ in range(steps):
        for _ in range(int(rng.integers(1, 1_500))):
            m = f"m{rng.integers(3)}"
            if rng.random() < 0.02 and n:  # a duplicate event id
                e = str(int(rng.integers(n)))
            else:
                e, n = str(n), n + 1
            t += float(rng.exponential(1.0))
            j.add_prediction(m, e, t, label=None, score=float(rng.random()))
        for _ in range(int(rng.integers(0, 1_500))):
            m, e = f"m{rng.integers(3)}", str(int(rng.integers(max(n, 1))))
            j.match(m, e, label_timestamp=t)
        snap, fresh = j.split_snapshot(written)
        assert not set(fresh) & set(written)
        written.update(orjson.loads(orjson.dumps({str(k): v for k, v in fresh.items()})).items())
        live = {int(k) for k in snap["chunks"]}
        for k in [k for k in written if int(k) not in live]:
            del written[k]  # a tombstone
        snap = orjson.loads(orjson.dumps(snap))
        restored = LabelJoin.from_snapshot(snap, chunks={int(k): v for k, v in written.items()})
        assert restored.lost_on_restore == 0
        assert restored.snapshot() == j.snapshot()
        assert len(orjson.dumps(snap)) < 80 * CHUNK_SIZE + 20_000 + 3 * len(live) * CHUNK_SIZE
        written = {int(k): v for k, v in written.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_snapshots_restore_exactly(seed: int) -> None:
    _checkpoints(seed, 40)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_split_snapshot_costs_what_changed_and_equals_reading_every_queue(seed: int) -> None:
    """split_snapshot reads only what arrived since the previous one (from its log of what
    was stored, less the removals it was told of); under random adds (one by one and
    batched, with the fields' columns or without), duplicates, matches (one by one and
    batched), TTL,
    model and partition evictions, shedding, forgotten models and rewinds, each result equals
    what reading every queue gives (a deep copy that has no previous split)."""
    rng = np.random.default_rng(seed)
    j = LabelJoin(capacity=6_000, ttl_seconds=3_000.0, model_capacity=3_000)
    written: set[int] = set()
    t, n, incremental = 0.0, 0, 0
    j.settle(j.mark())
    for step in range(60):
        for _ in range(int(rng.integers(1, 4))):
            m = f"m{rng.integers(4)}"
            rows = []
            for _ in range(int(rng.integers(1, 700))):
                if rng.random() < 0.02 and n:  # a duplicate event id
                    e = str(int(rng.integers(n)))
                else:
                    e, n = str(n), n + 1
                t += float(rng.exponential(1.0))
                rows.append((e, PendingPrediction(t, None, float(rng.random()))))
            way = rng.random()
            if way < 0.33:
                j.add_predictions(m, rows)
            elif way < 0.67:  # as the partition adds a batch: with the fields' columns
                ids, preds = [e for e, _ in rows], [p for _, p in rows]
                fields = map(msgspec.structs.astuple, preds)
                j.add_columns(m, ids, preds, columns=list(zip(*fields, strict=True)))
            else:
                for e, p in rows:
                    j.add_prediction(m, e, p.timestamp, label=None, score=p.score)
        labels = [
            (f"m{rng.integers(4)}", str(int(rng.integers(max(n, 1)))), t)
            for _ in range(int(rng.integers(0, 900)))
        ]
        if rng.random() < 0.5:
            j.match_many(labels)
        else:
            for m, e, ts in labels:
                j.match(m, e, label_timestamp=ts)
        r = rng.random()
        if r < 0.05:
            j.forget_model(f"m{rng.integers(4)}")
        elif r < 0.1:
            j.shed(int(rng.integers(1, 500)))
        elif r < 0.2:
            j.rewind()  # back to the last settled checkpoint
        incremental += j._gone is not None and j._log is not None
        scratch = copy.deepcopy(j)
        scratch._gone = None
        snap, fresh = j.split_snapshot(written)
        want_snap, want_fresh = scratch.split_snapshot(written)
        assert snap == want_snap, step
        assert fresh.keys() == want_fresh.keys()
        assert orjson.dumps(fresh, option=orjson.OPT_NON_STR_KEYS) == orjson.dumps(
            want_fresh, option=orjson.OPT_NON_STR_KEYS
        )
        written = (written | set(fresh)) & {int(k) for k in snap["chunks"]}
        if rng.random() < 0.7:
            j.settle(j.mark())
    assert incremental > 30  # most splits took the short way


def test_an_add_that_fails_leaves_no_trace_in_the_next_split() -> None:
    """A call that raises after the split's log took its rows (a timestamp that is not a
    number) drops the log, so the next split reads the queues: no phantom prediction."""
    j = LabelJoin(capacity=10_000, ttl_seconds=1e9)
    for i in range(3_000):
        j.add_prediction("m", str(i), float(i), label=None, score=None)
    _, fresh = j.split_snapshot(())
    rows = [PendingPrediction(3_000.0, None, None), PendingPrediction(None, None, None)]  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        j.add_columns("m", ["a", "b"], rows)
    j.add_prediction("m", "c", 3_001.0, label=None, score=None)
    scratch = copy.deepcopy(j)
    scratch._gone = None
    snap, _ = j.split_snapshot(set(fresh))
    assert snap == scratch.split_snapshot(set(fresh))[0]
    assert snap["models"]["m"]["pending"]["event_id"][-1] == "c"
    assert "a" not in snap["models"]["m"]["pending"]["event_id"]


def test_a_split_snapshot_without_a_chunk_restores_the_rest_and_counts_the_loss() -> None:
    j = LabelJoin(capacity=100_000, ttl_seconds=1e9)
    for i in range(3 * CHUNK_SIZE + 10):
        j.add_prediction("m", str(i), float(i), label=None, score=None)
    snap, fresh = j.split_snapshot(())
    assert sorted(fresh) == [0, 1, 2] and len(snap["models"]["m"]["pending"]["seq"]) == 10
    del fresh[1]
    r = LabelJoin.from_snapshot(snap, chunks=fresh)
    assert r.lost_on_restore == CHUNK_SIZE and len(r) == 2 * CHUNK_SIZE + 10
    assert r.by_model["m"].pending == len(r) and r.by_model["m"].evicted == CHUNK_SIZE
    assert r.evicted == CHUNK_SIZE
    # arrival order survives: the oldest still waiting is the first of chunk 0
    assert [e for _, e, _ in r.waiting()][:2] == ["0", "1"]
    assert [e for _, e, _ in r.waiting()][CHUNK_SIZE] == str(2 * CHUNK_SIZE)


def test_split_snapshot_refuses_corrupt_chunk_offsets() -> None:
    j = LabelJoin(capacity=100_000, ttl_seconds=1e9)
    for i in range(CHUNK_SIZE + 1):
        j.add_prediction("m", str(i), float(i), label=None, score=None)
    snap, fresh = j.split_snapshot(())
    count, kind, data = snap["chunks"]["0"]
    for bad in ([count + 1, kind, data], [count, "x", data], [count, kind, "!!"]):
        with pytest.raises(ValueError):
            LabelJoin.from_snapshot({**snap, "chunks": {"0": bad}}, chunks=fresh)


def test_forgetting_a_model_counts_its_waiting_predictions_and_rewinds() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=1e9)
    for i in range(5):
        j.add_prediction("gone", f"g{i}", float(i), label=None, score=None)
        j.add_prediction("kept", f"k{i}", float(i), label=None, score=None)
    j.settle(j.mark())
    before = j.snapshot()
    assert j.forget_model("gone") == 5
    assert len(j) == 5 and j.expired == 5 and "gone" not in j.by_model
    assert j.model_watermark("gone") is None and j.match("gone", "g0") is None
    j.rewind()  # an aborted transaction: the model comes back as it was
    assert j.snapshot() == before
