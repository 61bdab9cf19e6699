"""The label path's faster forms against the plain ones they replace: ``LabelJoin.match_many``
against ``match`` one label at a time, the partition's prediction outputs and its batched
insertion into the join against ``prediction_label()`` / ``prediction_score()`` and
``add_prediction``, the performance monitor's columns against ``label_str`` per pair, and the
classification sketch's known-class encoding against its general one (same arrays, bit for
bit)."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import numpy as np
import pytest

from stream_monitor.config import MonitorConfig, PerformanceConfig
from stream_monitor.events.schema import PredictionEvent, ScoredPrediction, label_str
from stream_monitor.monitor.join import LabelJoin, PendingPrediction
from stream_monitor.monitor.partition import PartitionState, _outputs
from stream_monitor.monitor.performance import PerformanceMonitor, label_strs
from stream_monitor.stats.performance_sketch import ClassificationSketch

PREDICTIONS: list[Any] = [
    0.25,
    3,
    -7,
    0,
    True,
    False,
    "cat",
    "1",
    ScoredPrediction(label=1, score=0.75),
    ScoredPrediction(label=0, score=1),
    ScoredPrediction(label="dog", score=0.5),
    ScoredPrediction(label=True, score=0.0),
    ScoredPrediction(label=2.0, score=0.125),
    ScoredPrediction(label=2.5, score=3),
]


def _event(
    i: int, prediction: Any, model: str = "m", version: str | None = None
) -> PredictionEvent:
    return PredictionEvent(
        event_id=f"e{i}",
        model_id=model,
        model_version=version,
        timestamp=1000.0 + i,
        features={"x": float(i)},
        prediction=prediction,
    )


def _typed(v: Any) -> tuple[type, Any]:
    return type(v), v


@pytest.mark.parametrize("prediction", PREDICTIONS, ids=repr)
def test_outputs_are_the_event_methods_with_their_types(prediction: Any) -> None:
    e = _event(0, prediction)
    label, score = _outputs(e)
    assert (_typed(label), _typed(score)) == (
        _typed(e.prediction_label()),
        _typed(e.prediction_score()),
    )


def test_label_str_spellings() -> None:
    values = [True, False, 0, 1, -3, 2**70, 1.0, -2.0, 2.5, "x", "", "1.0"]
    assert [label_str(v) for v in values] == [
        "true",
        "false",
        "0",
        "1",
        "-3",
        str(2**70),
        "1",
        "-2",
        "2.5",
        "x",
        "",
        "1.0",
    ]
    assert all(type(label_str(v)) is str for v in values)


def test_prediction_methods_on_every_kind() -> None:
    got = [(_event(0, p).prediction_label(), _event(0, p).prediction_score()) for p in PREDICTIONS]
    assert got == [
        (None, 0.25),
        (None, 3.0),
        (None, -7.0),
        (None, 0.0),
        ("true", None),
        ("false", None),
        ("cat", None),
        ("1", None),
        ("1", 0.75),
        ("0", 1.0),
        ("dog", 0.5),
        ("true", 0.0),
        ("2", 0.125),
        ("2.5", 3.0),
    ]
    scores = [_event(0, p).prediction_score() for p in PREDICTIONS]
    assert all(s is None or type(s) is float for s in scores)


@pytest.mark.parametrize("seed", range(6))
def test_match_many_is_match_one_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    a = LabelJoin(capacity=60, ttl_seconds=50.0, model_capacity=40, max_future_seconds=500.0)
    if seed % 2:
        a.settle(a.mark())  # with the undo journal on
    t = 0.0
    for _ in range(40):
        added = []
        for _ in range(rng.randrange(1, 12)):
            t += rng.choice([0.0, 1.0, 3.0, 20.0])
            m = rng.choice("abc")
            ts = t - rng.choice([0.0, 0.0, 5.0, 45.0, 60.0]) + rng.choice([0.0, 0.0, 900.0])
            added.append((m, f"e{rng.randrange(80)}", ts))
            a.add_prediction(*added[-1], label="1", score=0.5)
        labels = []
        for _ in range(rng.randrange(0, 15)):
            if rng.random() < 0.5:  # one just added (or replaced, or already gone)
                m, e, ts = rng.choice(added)
                labels.append((m, e, ts + rng.choice([0.0, -0.5, -3.0, 2.0, math.nan])))
            else:
                ts = rng.choice([t, t - 100.0, math.inf, math.nan, t + 7.0])
                labels.append((rng.choice("abcz"), f"e{rng.randrange(80)}", ts))
        b = copy.deepcopy(a)
        one = [a.match(m, e, count_unmatched=False, label_timestamp=ts) for m, e, ts in labels]
        many = b.match_many(labels)
        assert many == one
        assert b.snapshot() == a.snapshot()
        assert vars(b).keys() == vars(a).keys()
        for k in ("matched", "expired", "evicted", "negative_delays", "_size", "_gone"):
            assert getattr(b, k) == getattr(a, k), k
        assert b.by_model == a.by_model
        assert {m: b.delay_histogram(m) for m in "abcz"} == {
            m: a.delay_histogram(m) for m in "abcz"
        }
        assert b._journal == a._journal
        if seed % 2 and rng.random() < 0.3:
            a.rewind()
            a.settle(a.mark())


def _add_one(j: LabelJoin, e: PredictionEvent, route: Any) -> None:
    """``e`` into ``j`` alone, by the row-by-row path (``route``: its segments or None)."""
    j.add_prediction(
        e.model_id,
        e.event_id,
        e.timestamp,
        label=e.prediction_label(),
        score=e.prediction_score(),
        model_version=e.model_version,
        segments=route or None,
    )


def _reference_join(events: list[PredictionEvent], routes: list[Any] | None) -> LabelJoin:
    j = LabelJoin(capacity=10_000, ttl_seconds=1e9)
    for i, e in enumerate(events):
        _add_one(j, e, None if routes is None else routes[i])
    return j


@pytest.mark.parametrize("with_routes", [False, True])
def test_predictions_go_into_the_join_as_added_one_by_one(with_routes: bool) -> None:
    events = [
        _event(i, PREDICTIONS[i % len(PREDICTIONS)], version=("v1", None)[i % 2]) for i in range(40)
    ]
    events.append(_event(3, 0.5))  # a duplicate event id: not the bulk case
    routes = (
        [(f"k=v{i % 3}",) if i % 4 else () for i in range(len(events))] if with_routes else None
    )
    st = PartitionState(0, MonitorConfig(bootstrap_servers="unused:9092"))
    st.join = LabelJoin(capacity=10_000, ttl_seconds=1e9)
    joined: dict[str, Any] = {}
    st._join_predictions("m", events[:20], None if routes is None else routes[:20], joined, {}, {})
    st._join_predictions("m", events[20:], None if routes is None else routes[20:], joined, {}, {})
    assert joined == {}
    ref = _reference_join(events, routes)
    assert st.join.snapshot() == ref.snapshot()
    assert st.join.waiting() == ref.waiting()
    assert all(type(p) is PendingPrediction for _, _, p in st.join.waiting())


def test_an_early_label_still_meets_its_prediction() -> None:
    st = PartitionState(0, MonitorConfig(bootstrap_servers="unused:9092"))
    events = [_event(i, ScoredPrediction(label=i % 2, score=0.5)) for i in range(5)]
    st.early.add("m", "e2", 1002.5, 1)
    joined: dict[str, Any] = {}
    joined_at: dict[str, Any] = {}
    met: dict[str, Any] = {}
    st._join_predictions("m", events, None, joined, joined_at, met)
    assert joined == {"m": [(PendingPrediction(1002.0, "0", 0.5), 1)]}
    assert joined_at == {"m": [1002.0]} and met == {"m": [events[2]]}
    assert [e for _, e, _ in st.join.waiting()] == ["e0", "e1", "e3", "e4"]


@pytest.mark.parametrize(
    "truths",
    [[1, 0, 1], ["a", "b"], [True, 1, 0], [1.0, 0, 2.5], [2**70, 3], ["x", 1], []],
    ids=repr,
)
def test_label_strs_is_label_str_per_truth(truths: list[Any]) -> None:
    got = label_strs(truths)
    assert got == [label_str(t) for t in truths]
    assert all(type(s) is str for s in got)


def test_performance_rows_of_a_classifier() -> None:
    pm = PerformanceMonitor(PerformanceConfig())
    pm.task = "classification"
    pairs = [
        (PendingPrediction(1.0, "1", 0.5, "v1"), 1),
        (PendingPrediction(2.0, "0", None), True),
        (PendingPrediction(3.0, "cat", 1.0, "v2"), "cat"),
        (PendingPrediction(4.0, "2", 0.25), 2.0),
    ]
    rows = pm._rows(pairs)
    assert rows is not None
    ts, y_true, y_pred, score, versions, kept = rows
    assert ts.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert y_true == ["1", "true", "cat", "2"] and y_pred == ["1", "0", "cat", "2"]
    assert np.array_equal(score, [0.5, np.nan, 1.0, 0.25], equal_nan=True)
    assert versions == ["v1", None, "v2", None] and kept == [0, 1, 2, 3]
    # A pair without a predicted class does not fit: counted, and left out.
    rows = pm._rows([pairs[0], (PendingPrediction(5.0, None, 0.5), 1), pairs[2]])
    assert rows is not None and rows[5] == [0, 2] and pm.incompatible == 1


def _general(sk: ClassificationSketch) -> ClassificationSketch:
    """The sketch with the known-class shortcut turned off."""
    sk._known = lambda yt, yp: None  # type: ignore[method-assign]
    return sk


def _state(sk: ClassificationSketch) -> dict[str, Any]:
    """Every count and sum (floats compared exactly)."""
    return sk.snapshot()


@pytest.mark.parametrize("seed", range(5))
def test_sketch_known_class_encoding_is_the_general_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["0", "1", "b", "a", "é", "10", "1 ", "zz", "Z"]
    kwargs: dict[str, Any] = {"max_classes": 5} if seed % 2 else {"classes": ["1", "0"]}
    fast, slow = ClassificationSketch(**kwargs), _general(ClassificationSketch(**kwargs))
    for _ in range(30):
        n = int(rng.integers(1, 60))
        pool = names[: int(rng.integers(2, len(names) + 1))]
        yt = rng.choice(pool, n).tolist()
        yp = rng.choice(pool, n).tolist()
        score = rng.random(n) * 1.2 - 0.1
        score[rng.random(n) < 0.1] = np.nan
        s = None if rng.random() < 0.2 else score
        fast.update(yt, yp, s)
        slow.update(yt, yp, s)
        assert _state(fast) == _state(slow)
        assert fast.metrics() == slow.metrics()
    assert fast.n > 0


def test_sketch_copy_and_reset_keep_the_encoding_right() -> None:
    sk = ClassificationSketch()
    sk.update(["a", "b"], ["b", "a"])
    twin = sk.copy()
    twin.update(["c", "a"], ["c", "c"])  # a new class in the copy only
    sk.update(["a", "a"], ["a", "b"])
    assert twin.classes == ["a", "b", "c"] and sk.classes == ["a", "b"]
    assert sk.confusion.tolist() == [[1, 2, 0], [1, 0, 0], [0, 0, 0]]
    sk.reset()
    sk.update(["b"], ["b"])
    assert sk.classes == ["b"] and sk.confusion.tolist() == [[1, 0], [0, 0]]
    restored = ClassificationSketch.from_snapshot(twin.snapshot())
    restored.update(["c"], ["a"])
    assert restored.confusion[2, 0] == 1


@pytest.mark.parametrize(
    ("capacity", "ttl"), [(10_000, 1e9), (12, 1e9), (10_000, 15.0), (12, 15.0)]
)
@pytest.mark.parametrize("with_routes", [False, True])
def test_predictions_go_into_the_join_by_columns_as_added_one_by_one(
    capacity: int, ttl: float, with_routes: bool
) -> None:
    """Batches that take the join's bulk paths (no duplicate: by columns; past capacity:
    planned evictions) and one that does not (a duplicate), with the undo journal on."""
    events = [
        _event(i, PREDICTIONS[i % len(PREDICTIONS)], version=("v1", None)[i % 3 == 0])
        for i in range(60)
    ]
    events[10:40] = events[39:9:-1]  # a batch whose newest prediction is its first
    events.append(_event(58, 0.5))  # a duplicate event id of its batch
    routes = (
        [(f"k=v{i % 3}",) if i % 4 else () for i in range(len(events))] if with_routes else None
    )
    st = PartitionState(0, MonitorConfig(bootstrap_servers="unused:9092"))
    st.join = LabelJoin(capacity=capacity, ttl_seconds=ttl)
    ref = LabelJoin(capacity=capacity, ttl_seconds=ttl)
    for j in (st.join, ref):
        j.settle(j.mark())
    joined: dict[str, Any] = {}
    for lo, hi in [(0, 10), (10, 40), (40, len(events))]:
        st._join_predictions(
            "m", events[lo:hi], None if routes is None else routes[lo:hi], joined, {}, {}
        )
        for i in range(lo, hi):
            _add_one(ref, events[i], None if routes is None else routes[i])
        assert st.join.snapshot() == ref.snapshot()
        assert st.join.waiting() == ref.waiting()
        # the same undo records (a bulk batch records its expiries after its rows)
        assert sorted(map(repr, st.join._journal)) == sorted(map(repr, ref._journal))
    assert joined == {}
    assert st.join.duplicate_predictions == 1
    assert all(type(p) is PendingPrediction for _, _, p in st.join.waiting())
    if capacity == 12:  # every bound reached, not only by the last batch
        assert st.join.evicted > 12
    elif ttl == 15.0:
        assert st.join.expired > 12
    st.join.rewind()
    ref.rewind()
    assert st.join.snapshot() == ref.snapshot()
    assert len(st.join) == 0


def test_add_columns_refuses_columns_of_unequal_lengths() -> None:
    j = LabelJoin(capacity=10, ttl_seconds=60.0)
    j.add_columns("m", ["a"], [PendingPrediction(1.0, None, 0.5)])
    before = j.snapshot()
    with pytest.raises(ValueError, match="differ in length"):
        j.add_columns("m", ["b", "c"], [PendingPrediction(2.0, None, 0.5)])
    assert j.snapshot() == before
    j.add_columns("m", [], [])
    assert j.snapshot() == before


def test_add_columns_with_or_without_the_newest_time_given() -> None:
    rows = [("a", 5.0), ("b", 3.0), ("c", 9.0), ("d", 200.0)]
    a, b = (LabelJoin(capacity=10, ttl_seconds=60.0) for _ in "ab")
    for j in (a, b):
        j.add_prediction("m", "first", 4.0, label=None, score=None)
    ids = [e for e, _ in rows]
    preds = [PendingPrediction(t, None, 0.5) for _, t in rows]
    a.add_columns("m", ids, preds)
    b.add_columns("m", ids, preds, newest=200.0)
    assert a.snapshot() == b.snapshot()
    assert a.model_watermark("m") == 200.0 and a.expired == 4  # first, a, b and c


def test_group_keeps_each_models_events_in_order_and_models_by_first_appearance() -> None:
    from stream_monitor.monitor.partition import _group

    models = ["b", "a", "b", "c", "a", "a", "b"]
    events = [_event(i, 0.5, model=m) for i, m in enumerate(models)]
    groups = _group(events)
    assert list(groups) == ["b", "a", "c"]
    assert {m: [e.event_id for e in es] for m, es in groups.items()} == {
        "b": ["e0", "e2", "e6"],
        "a": ["e1", "e4", "e5"],
        "c": ["e3"],
    }
    assert type(groups) is dict and _group([]) == {}
