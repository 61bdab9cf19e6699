"""``LabelJoin.add_predictions`` on a full join (its planned evictions, ``_bulk_full``) against
``add_prediction`` one row at a time, state for state: queues, counters, the undo journal, the
removed sequence numbers, and what a rewind brings back; and the partition's column-wise
prediction outputs against ``_outputs`` per event."""

from __future__ import annotations

import copy
import random
from typing import Any

import msgspec
import pytest

from stream_monitor.config import MonitorConfig
from stream_monitor.events.outputs import event_columns
from stream_monitor.events.schema import PredictionEvent, ScoredPrediction
from stream_monitor.monitor.join import LabelJoin, PendingPrediction
from stream_monitor.monitor.partition import PartitionState, _outputs

MODELS = ["a", "b", "c", "d", "e"]


def _state(j: LabelJoin, ordered: bool = True) -> tuple[Any, ...]:
    """Everything a join holds, the queues with their order and sequence numbers included;
    the journal's records in order, or (``ordered`` false) as a multiset: ``_bulk`` (no
    bound reached) journals the rows' expiry after all of them, where the loop journals it
    at the row that moved the watermark; a rewind, sorting by arrival, undoes either alike."""
    journal = copy.deepcopy(j._journal)
    if journal is not None and not ordered:
        journal.sort(key=repr)
    return (
        j.snapshot(),
        len(j),
        j._size,
        sum(map(len, j._queues.values())),
        journal,
        None if j._gone is None else list(j._gone),
        dict(j._watermarks),
        dict(j._future_runs),
        j.lost_on_restore,
    )


def _one_by_one(j: LabelJoin, model: str, rows: list[tuple[str, PendingPrediction]]) -> None:
    for e, p in rows:
        j.add_prediction(
            model,
            e,
            p.timestamp,
            label=p.label,
            score=p.score,
            model_version=p.model_version,
            segments=p.segments,
        )


class _Counting:
    """Counts how often ``_bulk_full`` applied its plan (True) or left it to the loop."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.planned = self.refused = 0
        original = LabelJoin._bulk_full

        def counted(j: LabelJoin, *args: Any) -> bool:
            done = original(j, *args)
            if done:
                self.planned += 1
            else:
                self.refused += 1
            return done

        monkeypatch.setattr(LabelJoin, "_bulk_full", counted)


def _join(rng: random.Random) -> LabelJoin:
    capacity = rng.choice([1, 2, 5, 12, 30, 60])
    model_capacity = rng.choice([None, None, max(1, capacity // 2), capacity + 5, 3])
    overrides = {}
    for m in rng.sample(MODELS, rng.randint(0, 2)):
        overrides[m] = (rng.choice([50.0, 400.0, 1e9]), rng.choice([1, 4, 20]))
    return LabelJoin(
        capacity,
        rng.choice([100.0, 1000.0, 1e9]),
        model_capacity=model_capacity,
        overrides=overrides,
        max_future_seconds=rng.choice([300.0, 3600.0]),
    )


def _batch(
    rng: random.Random, clock: dict[str, float], used: dict[str, list[str]], n_ids: list[int]
) -> tuple[str, list[tuple[str, PendingPrediction]]]:
    model = rng.choice(MODELS[: rng.randint(2, len(MODELS))])
    t = clock.get(model, 1000.0)
    roll = rng.random()
    if roll < 0.08:
        t += rng.choice([150.0, 600.0, 2000.0])  # the watermark jumps: old ones expire
    rows = []
    for _ in range(rng.choice([1, 2, 5, 10, 25, 60])):
        r = rng.random()
        if r < 0.04 and used.get(model):
            e = rng.choice(used[model][-40:])  # a duplicate of a waiting (or gone) one
        elif r < 0.06 and rows:
            e = rng.choice(rows)[0]  # a duplicate within the batch
        else:
            n_ids[0] += 1
            e = f"e{n_ids[0]}"
        ts = t + rng.random()
        if rng.random() < 0.03:
            ts += 5000.0  # beyond reach of the watermark
        elif rng.random() < 0.1:
            ts -= rng.choice([10.0, 120.0])  # late
        t += rng.random()
        seg = rng.choice([None, ("k=v",)])
        rows.append((e, PendingPrediction(ts, rng.choice([None, "1"]), rng.random(), None, seg)))
        used.setdefault(model, []).append(e)
    clock[model] = t
    return model, rows


def _random_run(seed: int, journal: bool, counting: _Counting, steps: int = 250) -> int:
    """One seeded sequence of batches (and matches, marks, rewinds) into two joins, one
    row-by-row and one in batches, compared after every step (the journal in order when the
    planned path took the batch). Returns how many batches."""
    rng = random.Random(seed)
    one, bulk = _join(rng), _join(random.Random(seed))
    clock: dict[str, float] = {}
    used: dict[str, list[str]] = {}
    n_ids = [0]
    if journal:
        for j in (one, bulk):
            j.settle(j.mark())
    if rng.random() < 0.5:  # split_snapshot keeps track of removed sequence numbers
        for j in (one, bulk):
            j.split_snapshot(set())
    batches = 0
    for _ in range(steps):
        r = rng.random()
        if r < 0.12 and used:
            model = rng.choice(sorted(used))
            labels = [
                (model, e, clock[model])
                for e in rng.sample(used[model][-30:], min(3, len(used[model])))
            ]
            assert one.match_many(labels) == bulk.match_many(labels)
        elif journal and r < 0.2:
            marks = (one.mark(), bulk.mark())
            one.settle(marks[0])
            bulk.settle(marks[1])
        else:
            model, rows = _batch(rng, clock, used, n_ids)
            planned = counting.planned
            _one_by_one(one, model, rows)
            bulk.add_predictions(model, rows)
            batches += 1
            ordered = counting.planned > planned
            assert _state(bulk, ordered) == _state(one, ordered), f"seed {seed}: {batches}"
            if journal and rng.random() < 0.3:
                # a rewind of each goes back to the same state (the one before the batch
                # if the mark was settled just before it)
                a, b = copy.deepcopy(one), copy.deepcopy(bulk)
                a.rewind()
                b.rewind()
                assert _state(b, False) == _state(a, False)
                marks = (one.mark(), bulk.mark())
                one.settle(marks[0])
                bulk.settle(marks[1])
                before = _state(one)
                model, rows = _batch(rng, clock, used, n_ids)
                planned = counting.planned
                _one_by_one(one, model, rows)
                bulk.add_predictions(model, rows)
                ordered = counting.planned > planned
                assert _state(bulk, ordered) == _state(one, ordered)
                bulk.rewind()
                one.rewind()
                assert _state(bulk)[:4] == before[:4] == _state(one)[:4]
    return batches


@pytest.mark.parametrize("journal", [False, True], ids=["no-journal", "journal"])
@pytest.mark.parametrize("seed", range(12))
def test_batches_equal_row_by_row(
    seed: int, journal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = _Counting(monkeypatch)
    batches = _random_run(seed, journal, counting)
    assert batches > 100
    assert counting.planned > 0


def test_random_runs_take_both_the_plan_and_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparisons above are not vacuous: the planned path runs often, and so does the
    loop it leaves the interleaved-expiry cases to."""
    counting = _Counting(monkeypatch)
    for seed in range(12):
        _random_run(seed, seed % 2 == 0, counting)
    assert counting.planned > 500
    assert counting.refused > 20


def _full(capacity: int, counts: dict[str, int], **kw: Any) -> tuple[LabelJoin, LabelJoin]:
    joins = []
    for _ in range(2):
        j = LabelJoin(capacity, 1e9, **kw)
        for m, k in counts.items():
            for i in range(k):
                j.add_prediction(m, f"{m}-{i}", float(i), label=None, score=None)
        j.settle(j.mark())
        joins.append(j)
    return joins[0], joins[1]


def _rows(model: str, n: int, start: float = 100.0) -> list[tuple[str, PendingPrediction]]:
    return [(f"{model}-new{i}", PendingPrediction(start + i, None, 0.5)) for i in range(n)]


@pytest.mark.parametrize(
    "counts, model, n",
    [
        ({"a": 3, "b": 3, "c": 1}, "c", 4),  # ties: smallest id first
        ({"b": 3, "a": 3, "c": 1}, "c", 4),  # whatever the queues' order
        ({"a": 2, "b": 4, "c": 1}, "c", 8),
        ({"a": 5, "b": 1}, "b", 3),
        ({"a": 4, "b": 3}, "a", 3),  # the fullest evicts itself
        ({"a": 1, "b": 1, "c": 5}, "a", 12),  # the batch's own rows evicted
        ({"x": 7}, "x", 20),
    ],
)
def test_small_full_joins(counts: dict[str, int], model: str, n: int) -> None:
    one, bulk = _full(sum(counts.values()), counts)
    rows = _rows(model, n)
    _one_by_one(one, model, rows)
    bulk.add_predictions(model, rows)
    assert _state(bulk) == _state(one)
    assert bulk.evicted == n


def test_plan_ties_go_to_the_smallest_model_id() -> None:
    one, bulk = _full(7, {"c": 3, "b": 3, "a": 1})
    _one_by_one(one, "a", _rows("a", 2))
    # a has 2 with the first row: b before c; then a (3) ties with c and goes first
    assert bulk._eviction_plan("a", 2, 7) == (0, ["b"], 1)
    bulk.add_predictions("a", _rows("a", 2))
    assert _state(bulk) == _state(one)
    assert [len(bulk._queues[m]) for m in "abc"] == [2, 2, 3]


@pytest.mark.parametrize("model_capacity", [None, 3, 50])
def test_steady_state_of_several_models(model_capacity: int | None) -> None:
    """The benchmark's case: five models, the join full, batches of each in turn."""
    counts = {m: 40 for m in MODELS}
    one, bulk = _full(200, counts, model_capacity=model_capacity)
    t = 100.0
    for i in range(30):
        model = MODELS[i % 5] if i % 7 else "c"
        rows = _rows(model, 7 + i % 11, t)
        rows = [(f"{e}-{i}", p) for e, p in rows]
        t += 20
        _one_by_one(one, model, rows)
        bulk.add_predictions(model, rows)
        assert _state(bulk) == _state(one)
    for j in (one, bulk):
        j.rewind()
    assert _state(bulk) == _state(one)


def test_gone_overflows_as_one_removal_at_a_time() -> None:
    one, bulk = _full(10, {"a": 5, "b": 5})
    for j in (one, bulk):
        j.split_snapshot(set())
        j._gone = list(range(5))  # close to the bound (capacity 10)
    for n in (3, 4):  # 5 + 3 removals fit; 4 more do not
        rows = _rows("a", n, 100.0 + n)
        rows = [(f"{e}-{n}", p) for e, p in rows]
        _one_by_one(one, "a", rows)
        bulk.add_predictions("a", rows)
        assert _state(bulk) == _state(one)
    assert bulk._gone is None


def test_expiry_during_the_batch_is_left_to_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _Counting(monkeypatch)
    one, bulk = _full(6, {"a": 3, "b": 3})
    for j in (one, bulk):
        j.ttl_seconds = 50.0
    rows = [*_rows("a", 4, start=10.0), ("late", PendingPrediction(90.0, None, 1.0))]
    _one_by_one(one, "a", rows)
    bulk.add_predictions("a", rows)
    assert _state(bulk) == _state(one)
    assert (counting.planned, counting.refused) == (0, 1)
    assert bulk.expired > 0


# ------------------------------------------------------------------ the partition's outputs

OUTPUTS: list[list[Any]] = [
    [0.25, -1.5, 3.0],
    [ScoredPrediction(label=1, score=0.75), ScoredPrediction(label=0, score=1)],
    [ScoredPrediction(label="dog", score=0.5), ScoredPrediction(label="cat", score=2)],
    [ScoredPrediction(label=True, score=0.0), ScoredPrediction(label=2.0, score=0.125)],
    [ScoredPrediction(label=1, score=0.5), ScoredPrediction(label="1", score=0.5)],
    [ScoredPrediction(label=2.5, score=3)],
    [0.5, 3, True, "cat", ScoredPrediction(label=1, score=0.5)],
    [7, -2],
    ["x", "y"],
]


def _events(predictions: list[Any], model: str = "m") -> list[PredictionEvent]:
    return [
        PredictionEvent(
            event_id=f"e{i}",
            model_id=model,
            model_version="v1" if i % 2 else None,
            timestamp=1000.0 + i,
            features={"x": float(i)},
            prediction=p,
        )
        for i, p in enumerate(predictions)
    ]


def _typed(values: Any) -> list[tuple[type, Any]]:
    return [(type(v), v) for v in values]


@pytest.mark.parametrize("predictions", OUTPUTS, ids=repr)
def test_event_columns_outputs_are_outputs_per_event(predictions: list[Any]) -> None:
    """Read in one pass with the other fields (scored predictions) or from the predictions
    (the others, mixed ones included): what ``_outputs`` gives per event."""
    events = _events(predictions)
    cols = event_columns(events)
    expected = [_outputs(e) for e in events]
    assert _typed(cols.labels) == _typed(o[0] for o in expected)
    assert _typed(cols.scores) == _typed(o[1] for o in expected)
    assert list(cols.event_ids) == [e.event_id for e in events]
    assert list(cols.timestamps) == [e.timestamp for e in events]
    assert list(cols.model_versions) == [e.model_version for e in events]


@pytest.mark.parametrize("routes", [None, "some"])
@pytest.mark.parametrize("predictions", OUTPUTS, ids=repr)
def test_join_predictions_waits_what_outputs_give(predictions: list[Any], routes: Any) -> None:
    events = _events(predictions)
    if routes is not None:
        routes = [("k=v",) if i % 2 else () for i in range(len(events))]
    state = PartitionState(0, MonitorConfig(bootstrap_servers="x:1"))
    state._join_predictions("m", events, routes, {}, {}, {})
    expected = []
    for i, e in enumerate(events):
        label, score = _outputs(e)
        seg = routes[i] or None if routes is not None else None
        expected.append(("m", e.event_id, (e.timestamp, label, score, e.model_version, seg)))
    got = state.join.waiting()
    fields = [msgspec.structs.astuple(p) for _, _, p in got]
    assert [(m, e, f) for (m, e, _), f in zip(got, fields, strict=True)] == expected
    assert all(type(p) is PendingPrediction for _, _, p in got)
    assert [_typed(f) for f in fields] == [_typed(x[2]) for x in expected]
