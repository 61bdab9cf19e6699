"""Labels read before their prediction (two topics consumed side by side) still join."""

from __future__ import annotations

import orjson

from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.monitor.join import EarlyLabels
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.simulate import TrafficGenerator


def _events(n: int) -> tuple[list[PredictionEvent], list[LabelEvent]]:
    gen = TrafficGenerator(seed=4, models=("fraud-detector",))
    preds, labels = [], []
    for r in gen.events(n):
        obj = orjson.loads(r.value)
        if r.topic == "predictions":
            preds.append(PredictionEvent.model_validate(obj))
        else:
            labels.append(LabelEvent.model_validate(obj))
    return preds, labels


def _cfg() -> MonitorConfig:
    return MonitorConfig(bootstrap_servers="unused:9092")


def test_labels_first_join_like_predictions_first() -> None:
    preds, labels = _events(3000)
    normal = PartitionState(0, _cfg())
    normal.process(preds, [])
    normal.process([], labels)
    reversed_order = PartitionState(0, _cfg())
    reversed_order.process([], labels)  # every label arrives before any prediction
    assert len(reversed_order.early) == len(labels)
    reversed_order.process(preds, [])
    assert len(reversed_order.early) == 0
    assert reversed_order.early.matched == len(labels)
    a, b = normal.models["fraud-detector"].concept, reversed_order.models["fraud-detector"].concept
    assert a.n == b.n == len(labels)
    assert normal.unmatched_labels == reversed_order.unmatched_labels == 0


def test_labels_that_never_meet_a_prediction_are_counted() -> None:
    early = EarlyLabels(capacity=3, grace_seconds=100.0)
    for i in range(5):
        early.add("m", f"e{i}", float(i), 1)
    assert (len(early), early.evicted, early.expired) == (3, 2, 0)
    # Over capacity again (e2 evicted), then the 100 s grace expires e3 and e4.
    early.add("m", "late", 200.0, 0)
    assert (len(early), early.evicted, early.expired) == (1, 3, 2)
    assert early.take("m", "e4") is None and early.take("m", "late") == 0
    restored = EarlyLabels.from_snapshot(orjson.loads(orjson.dumps(early.snapshot())))
    assert restored.snapshot() == early.snapshot()


def test_shed_evicts_the_oldest_waiting_predictions() -> None:
    from stream_monitor.monitor.join import LabelJoin

    j = LabelJoin(capacity=100, ttl_seconds=1e9)
    for i in range(10):
        j.add_prediction("m", f"e{i}", float(i), label="1", score=None)
    assert j.shed(3) == 3 and (len(j), j.evicted) == (7, 3)
    assert j.match("m", "e2") is None and j.match("m", "e3") is not None
    assert j.shed(100) == 6 and len(j) == 0 and j.evicted == 9


def test_take_many_equals_take_with_time_in_turn() -> None:
    a, b = EarlyLabels(100, 1e9), EarlyLabels(100, 1e9)
    for e in EarlyLabels(0, 0.0), a, b:
        for i in range(0, 30, 3):
            e.add("m", f"e{i}", float(i), i % 2)
        e.add("other", "e1", 1.0, 1)
    ids = [f"e{i}" for i in range(20)] + ["e3", "e1"]
    want = {i: hit for i, ev in enumerate(ids) if (hit := a.take_with_time("m", ev)) is not None}
    assert b.take_many("m", ids) == want
    assert b.snapshot() == a.snapshot() and b.matched == 7
    assert EarlyLabels(10, 1.0).take_many("m", ids) == {}


def test_a_far_future_label_does_not_expire_the_labels_read_after_it() -> None:
    """A label timestamped 9.9e10 (schema-valid) used to move the early labels' watermark so
    that every later label read before its prediction expired on arrival."""
    from stream_monitor.monitor.join import FUTURE_CONFIRM, EarlyLabels

    early = EarlyLabels(capacity=10_000, grace_seconds=600.0, max_future_seconds=3600.0)
    early.add("m", "first", 1.7e9 - 1, 1)
    early.add("m", "bogus", 9.9e10, 1)
    for i in range(1000):
        early.add("m", f"e{i}", 1.7e9 + i / 10, i % 2)
    assert early.expired == 0 and early.future_timestamps == 1
    assert sum(early.take("m", f"e{i}") is not None for i in range(1000)) == 1000
    # a producer whose clock really jumped: FUTURE_CONFIRM labels in a row move it
    for i in range(FUTURE_CONFIRM):
        early.add("m", f"late{i}", 1.8e9 + i, 0)
    assert early.watermark == 1.8e9  # the earliest of the run, as LabelJoin does
    restored = EarlyLabels.from_snapshot(early.snapshot())
    assert restored.snapshot() == early.snapshot()
