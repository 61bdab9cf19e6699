"""LabelJoin: capacity, TTL expiry, duplicates, unmatched labels and snapshots, each checked
against a brute-force reference written here (a plain dict in insertion order)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest

from stream_monitor.monitor.join import LabelJoin, PendingPrediction

Op = tuple[Any, ...]  # ("add", model, event, ts, label, score) | ("match", model, event)


@dataclass
class RefJoin:
    """What LabelJoin promises, written naively.

    Entries live in a plain dict, whose insertion order is the arrival order (a duplicate is
    deleted and re-inserted, so it becomes the newest). After an add the oldest entries beyond
    ``capacity`` are evicted; then, with ``strict_ttl``, *every* entry older than
    ``watermark - ttl`` is dropped wherever it sits (the definition); without it, entries are
    dropped from the oldest end until one is recent enough (the documented arrival-order
    shortcut, equal to the definition when timestamps never go backwards).
    """

    capacity: int
    ttl: float
    strict_ttl: bool = True
    pending: dict[tuple[str, str], tuple[float, str | None, float | None]] = field(
        default_factory=dict
    )
    watermark: float = -math.inf
    evicted: int = 0
    expired: int = 0
    matched: int = 0
    unmatched: int = 0
    duplicates: int = 0

    def add(self, m: str, e: str, ts: float, label: str | None, score: float | None) -> None:
        if (m, e) in self.pending:
            self.duplicates += 1
            del self.pending[(m, e)]
        self.pending[(m, e)] = (ts, label, score)
        self.watermark = max(self.watermark, ts)
        while len(self.pending) > self.capacity:
            del self.pending[next(iter(self.pending))]
            self.evicted += 1
        horizon = self.watermark - self.ttl
        if self.strict_ttl:
            old = [k for k, v in self.pending.items() if v[0] < horizon]
        else:
            old = []
            for k, v in self.pending.items():
                if v[0] >= horizon:
                    break
                old.append(k)
        for k in old:
            del self.pending[k]
        self.expired += len(old)

    def match(self, m: str, e: str) -> tuple[float, str | None, float | None] | None:
        found = self.pending.pop((m, e), None)
        if found is None:
            self.unmatched += 1
        else:
            self.matched += 1
        return found

    def counters(self) -> tuple[int, int, int, int, int]:
        return (self.evicted, self.expired, self.matched, self.unmatched, self.duplicates)


def _counters(j: LabelJoin) -> tuple[int, int, int, int, int]:
    return (j.evicted, j.expired, j.matched, j.unmatched_labels, j.duplicate_predictions)


def _pending(j: LabelJoin) -> list[tuple[tuple[str, str], tuple[float, str | None, float | None]]]:
    return [((m, e), (ts, lab, sc)) for m, e, ts, lab, sc in j.snapshot()["pending"]]


def _random_ops(
    seed: int, n: int, *, n_ids: int, p_match: float, monotone: bool, jitter: float = 0.0
) -> list[Op]:
    """Adds and matches over a small id pool (so duplicates and misses happen)."""
    rng = np.random.default_rng(seed)
    ops: list[Op] = []
    t = 1_700_000_000.0
    for _ in range(n):
        model = ("a", "b")[int(rng.integers(2))]
        event = f"e{int(rng.integers(n_ids))}"
        if rng.random() < p_match:
            ops.append(("match", model, event))
            continue
        t += float(rng.exponential(1.0))
        ts = t if monotone else t - float(rng.uniform(0.0, jitter))
        label = None if rng.random() < 0.3 else str(int(rng.integers(2)))
        score = None if rng.random() < 0.3 else round(float(rng.random()), 4)
        ops.append(("add", model, event, ts, label, score))
    return ops


def _apply(j: LabelJoin, op: Op) -> PendingPrediction | None:
    if op[0] == "add":
        _, m, e, ts, label, score = op
        j.add_prediction(m, e, ts, label=label, score=score)
        return None
    return j.match(op[1], op[2])


def _apply_ref(r: RefJoin, op: Op) -> tuple[float, str | None, float | None] | None:
    if op[0] == "add":
        r.add(*op[1:])
        return None
    return r.match(op[1], op[2])


def _run_against_reference(j: LabelJoin, r: RefJoin, ops: list[Op]) -> None:
    for i, op in enumerate(ops):
        got = _apply(j, op)
        want = _apply_ref(r, op)
        assert (None if got is None else tuple(got)) == want, (i, op)
        assert len(j) == len(r.pending) <= j.capacity, (i, op)
        assert _counters(j) == r.counters(), (i, op)
    assert _pending(j) == list(r.pending.items())


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
    assert j.evicted == ref.evicted > 1000
    assert j.expired == 0
    # conservation: every add is pending, matched, evicted or was replaced by its duplicate
    adds = sum(op[0] == "add" for op in ops)
    assert adds == len(j) + j.matched + j.evicted + j.expired + j.duplicate_predictions
    assert j.matched + j.unmatched_labels == sum(op[0] == "match" for op in ops)


def test_evicted_count_without_matches_is_closed_form() -> None:
    j = LabelJoin(capacity=7, ttl_seconds=1e9)
    for i in range(100):
        j.add_prediction("m", f"e{i}", float(i), label=None, score=float(i))
    assert (len(j), j.evicted) == (7, 100 - 7)
    # the survivors are the 7 newest, oldest first
    assert [e for _, e, *_ in j.snapshot()["pending"]] == [f"e{i}" for i in range(93, 100)]
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


# ------------------------------------------------------------------------------------ TTL


@pytest.mark.parametrize(("capacity", "ttl"), [(10_000, 5.0), (10_000, 30.0), (40, 20.0)])
def test_ttl_expiry_matches_reference_monotone_time(capacity: int, ttl: float) -> None:
    ops = _random_ops(seed=2, n=6000, n_ids=300, p_match=0.3, monotone=True)
    j = LabelJoin(capacity=capacity, ttl_seconds=ttl)
    ref = RefJoin(capacity, ttl, strict_ttl=True)
    _run_against_reference(j, ref, ops)
    assert j.expired > 100  # expiry was exercised
    # nothing pending is older than the TTL behind the newest prediction
    assert all(ts >= j.watermark - ttl for _, (ts, _, _) in _pending(j))


def test_ttl_expiry_out_of_order_time_follows_arrival_order() -> None:
    # Timestamps up to 8 s out of order: the join expires from the oldest *arrival* and stops
    # at the first recent entry (documented: O(1) amortised). The reference does the same.
    ops = _random_ops(seed=3, n=6000, n_ids=300, p_match=0.3, monotone=False, jitter=8.0)
    j = LabelJoin(capacity=10_000, ttl_seconds=10.0)
    ref = RefJoin(10_000, 10.0, strict_ttl=False)
    _run_against_reference(j, ref, ops)
    assert j.expired > 100


def test_ttl_boundary_exactly_ttl_behind_is_kept() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=10.0)
    j.add_prediction("m", "a", 100.0, label=None, score=1.0)
    j.add_prediction("m", "b", 110.0, label=None, score=1.0)  # a is exactly 10 s behind: kept
    assert (len(j), j.expired) == (2, 0)
    j.add_prediction("m", "c", 110.5, label=None, score=1.0)  # now a is 10.5 s behind
    assert (len(j), j.expired) == (2, 1)
    assert j.match("m", "a") is None
    assert j.watermark == 110.5


def test_late_prediction_does_not_move_watermark_back() -> None:
    j = LabelJoin(capacity=100, ttl_seconds=10.0)
    j.add_prediction("m", "a", 100.0, label=None, score=1.0)
    j.add_prediction("m", "late", 50.0, label=None, score=1.0)  # older than the TTL on arrival
    assert j.watermark == 100.0
    # it is behind "a" in arrival order, which is recent, so it is not dropped yet
    assert (len(j), j.expired) == (2, 0)
    j.add_prediction("m", "b", 115.0, label=None, score=1.0)  # a expires, then late behind it
    assert (len(j), j.expired) == (1, 2)


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


def test_same_event_id_in_two_models_are_two_entries() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=1e6)
    j.add_prediction("m1", "e", 0.0, label="1", score=None)
    j.add_prediction("m2", "e", 0.0, label="0", score=None)
    assert (len(j), j.duplicate_predictions) == (2, 0)
    assert j.match("m2", "e") == PendingPrediction(0.0, "0", None)
    assert j.match("m3", "e") is None
    assert j.match("m1", "e") == PendingPrediction(0.0, "1", None)
    assert (j.matched, j.unmatched_labels, len(j)) == (2, 1, 0)


def test_unmatched_labels_are_counted_and_change_nothing() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=1e6)
    j.add_prediction("m", "a", 5.0, label="1", score=None)
    before = j.snapshot()
    for e in ("x", "y", "z"):
        assert j.match("m", e) is None
    after = j.snapshot()
    assert after["pending"] == before["pending"] and after["watermark"] == before["watermark"]
    assert (j.unmatched_labels, j.matched, len(j)) == (3, 0, 1)


# ------------------------------------------------------------------------------ snapshots


@pytest.mark.parametrize("split", [0, 1, 2500, 4999])
def test_snapshot_round_trip_gives_identical_behaviour(split: int) -> None:
    ops = _random_ops(seed=4, n=5000, n_ids=200, p_match=0.3, monotone=False, jitter=3.0)
    j = LabelJoin(capacity=60, ttl_seconds=15.0)
    for op in ops[:split]:
        _apply(j, op)
    data = orjson.dumps(j.snapshot())
    restored = LabelJoin.from_snapshot(orjson.loads(data))
    assert orjson.dumps(restored.snapshot()) == data
    assert len(restored) == len(j)
    for op in ops[split:]:
        assert _apply(restored, op) == _apply(j, op)
        assert _counters(restored) == _counters(j)
        assert len(restored) == len(j)
    assert restored.snapshot() == j.snapshot()
    assert restored.watermark == j.watermark


def test_snapshot_of_empty_join_round_trips() -> None:
    j = LabelJoin(capacity=3, ttl_seconds=10.0)
    snap = orjson.loads(orjson.dumps(j.snapshot()))
    assert snap["watermark"] is None and snap["pending"] == []
    r = LabelJoin.from_snapshot(snap)
    assert r.watermark == -math.inf
    assert (r.capacity, r.ttl_seconds) == (3, 10.0)
    # the first add after restore behaves as on a fresh join (no spurious expiry)
    r.add_prediction("m", "a", 5.0, label=None, score=None)
    assert (len(r), r.expired, r.watermark) == (1, 0, 5.0)


def test_snapshot_refuses_unknown_version() -> None:
    snap = LabelJoin(capacity=3, ttl_seconds=10.0).snapshot()
    with pytest.raises(ValueError, match="version"):
        LabelJoin.from_snapshot({**snap, "v": 2})
