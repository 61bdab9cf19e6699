"""LabelAlignment with a stand-in consumer: positions and high watermarks per partition."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from stream_monitor.alignment import LabelAlignment
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.monitor.partition import PartitionState

CFG = MonitorConfig.model_validate(
    {"bootstrap_servers": "unused:9092", "labels": {"align_seconds": 60.0}}
)


class _Consumer:
    def __init__(self) -> None:
        self.position_of: dict[tuple[str, int], int] = {}
        self.high_of: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.sought: list[tuple[str, int, int]] = []

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(t.topic, t.partition, self.position_of[(t.topic, t.partition)])
                for t in tps]  # fmt: skip

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.high_of[(tp.topic, tp.partition)]

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused.update((t.topic, t.partition) for t in tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused.difference_update((t.topic, t.partition) for t in tps)

    def seek(self, tp: TopicPartition) -> None:
        assert (tp.topic, tp.partition) in self.paused, "seek before pause"
        self.sought.append((tp.topic, tp.partition, tp.offset))


def test_labels_pause_while_ahead_with_a_prediction_backlog_and_resume_when_caught_up() -> None:
    pauses: list[int] = []
    a = LabelAlignment(CFG, lambda: pauses.append(1))
    consumer = _Consumer()
    states: dict[int, Any] = {0: PartitionState(0, CFG), 1: PartitionState(1, CFG)}
    for p in (0, 1):
        consumer.position_of[("predictions", p)] = 10
        consumer.high_of[("predictions", p)] = 1000  # a backlog of predictions
    a.observe("predictions", 0, 1000.0)
    a.observe("labels", 0, 1100.0)  # 100 s ahead: more than the 60 s margin
    a.observe("predictions", 1, 1000.0)
    a.observe("labels", 1, 1050.0)  # 50 s ahead: within it
    a.align(consumer, states)
    assert consumer.paused == {("labels", 0)} and a.paused == {0} and len(pauses) == 1
    a.observe("predictions", 0, 1060.0)  # 40 s behind the labels: not yet half the margin
    a.align(consumer, states)
    assert a.paused == {0}
    a.observe("predictions", 0, 1075.0)  # 25 s: caught up
    a.observe("labels", 0, 900.0)  # older than what was seen: ignored
    a.align(consumer, states)
    assert consumer.paused == set() and a.paused == set() and len(pauses) == 1


def test_labels_are_not_held_back_without_a_prediction_backlog() -> None:
    a = LabelAlignment(CFG, lambda: None)
    consumer = _Consumer()
    consumer.position_of[("predictions", 0)] = 1000
    consumer.high_of[("predictions", 0)] = 1000  # read to the end
    a.observe("predictions", 0, 0.0)
    a.observe("labels", 0, 10_000.0)
    a.align(consumer, {0: PartitionState(0, CFG)})
    assert consumer.paused == set()
    a.forget([("labels", 0), ("predictions", 0)], kept=set())
    assert a.event_time == {} and a.paused == set()


def test_labels_behind_evicted_predictions_never_hold_the_labels_partition_back() -> None:
    """The 1-hour soak's stall (load_tests/RESULTS.md): labels read long after their
    predictions, which had left a full join, parked among the early labels; the buffer filled,
    the labels partition paused while predictions had a backlog, and it never resumed (early
    labels expired only on the labels' own clock, which stood still while paused).

    Here labels lag 400 s behind predictions (1 a second, all labelled 5 s later), the join
    holds 100, so every label finds its prediction gone. Every label must still be read, and
    each one is accounted for as unmatched."""
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "labels": {"capacity": 100, "early_capacity": 20, "early_grace_seconds": 600.0},
        }
    )
    state = PartitionState(0, cfg)
    a = LabelAlignment(cfg, lambda: None)
    consumer = _Consumer()
    n, step, lag = 3000, 50, 400
    preds = [
        PredictionEvent(event_id=str(i), model_id="m", timestamp=float(i), features={"x": 1.0},
                        prediction=0.5)
        for i in range(n)
    ]  # fmt: skip
    labels = [
        LabelEvent(event_id=str(i), model_id="m", timestamp=float(i + 5), label=1.0)
        for i in range(n)
    ]
    p_pos, l_pos = 0, 0
    at_end: int | None = None
    consumer.high_of[("predictions", 0)] = n
    for _ in range(2 * n // step):
        batch_p = preds[p_pos : p_pos + step] if p_pos + step <= n else preds[p_pos:]
        p_pos += len(batch_p)
        batch_l: list[LabelEvent] = []
        if p_pos == n and at_end is None:
            at_end = l_pos  # labels read while the predictions still had a backlog
        readable = n if p_pos == n else p_pos - lag  # labels produced by now
        if ("labels", 0) not in consumer.paused and readable > l_pos:
            batch_l = labels[l_pos : min(l_pos + step, readable)]
            l_pos += len(batch_l)
        state.process(batch_p, batch_l)
        if batch_p:
            a.observe("predictions", 0, batch_p[-1].timestamp)
        if batch_l:
            a.observe("labels", 0, batch_l[-1].timestamp)
        # the predictions' backlog lasts while they are not all read
        consumer.position_of[("predictions", 0)] = p_pos
        a.align(consumer, {0: state})
        if l_pos == n:
            break
    assert at_end is not None and at_end >= n - lag - 2 * step, (
        f"{at_end} of {n - lag} labels read while predictions had a backlog: labels stalled"
    )
    assert l_pos == n
    assert state.join.matched + state.unmatched_labels + len(state.early) == n
    # only the predictions still waiting when the labels caught up (the last 100) matched
    assert state.join.matched == 100 and state.labels_behind == 0
    assert len(state.early) <= cfg.labels.early_capacity


def test_labels_far_behind_their_models_predictions_are_unmatched_at_once() -> None:
    """A label more than the early grace behind its model's prediction watermark, whose
    prediction is not waiting, is counted unmatched instead of parked."""
    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "unused:9092", "labels": {"early_grace_seconds": 60.0}}
    )
    state = PartitionState(0, cfg)
    state.process(
        [PredictionEvent(event_id="p", model_id="m", timestamp=1000.0, features={"x": 1.0},
                         prediction=0.5)],
        [LabelEvent(event_id="old", model_id="m", timestamp=900.0, label=1.0),  # 100 s behind
         LabelEvent(event_id="new", model_id="m", timestamp=950.0, label=1.0)],  # within grace
    )  # fmt: skip
    assert state.labels_behind == 1 and state.join.unmatched_labels == 1
    assert len(state.early) == 1 and state.early.take("m", "new") == 1.0


def _backlog(consumer: _Consumer, *partitions: int) -> None:
    for p in partitions:
        consumer.position_of[("predictions", p)] = 10
        consumer.high_of[("predictions", p)] = 1000


def test_a_batch_s_labels_are_cut_past_the_margin_and_read_again_from_there() -> None:
    """CI's lost labels (test_backlog): one batch held thousands of one partition's labels,
    fetched ahead; align() pauses only between batches, so the early labels overflowed."""
    pauses: list[int] = []
    a = LabelAlignment(CFG, lambda: pauses.append(1))  # margin 60 s
    consumer = _Consumer()
    _backlog(consumer, 0, 1)
    states: dict[int, Any] = {0: PartitionState(0, CFG), 1: PartitionState(1, CFG)}
    a.observe("predictions", 0, 1000.0)
    a.observe("predictions", 1, 1000.0)
    times = {
        0: [1000.0 + 10 * i for i in range(10)],  # 1000, 1010, ... 1090
        1: [990.0, 1059.0],  # all within the margin
    }
    # partition 0's predictions reach 1020 in this very batch: the cut is past 1080
    assert a.cuts(consumer, states, times, {0: 1020.0}) == {0: 9}
    assert consumer.paused == set() and pauses == []  # cuts() only finds them
    a.hold(consumer, 0, 109)
    assert consumer.paused == {("labels", 0)} and a.paused == {0} and len(pauses) == 1
    assert consumer.sought == [("labels", 0, 109)]
    a.hold(consumer, 0, 109)  # held back again while still paused: sought, not paused twice
    assert len(pauses) == 1 and consumer.sought == [("labels", 0, 109)] * 2


def test_labels_before_any_prediction_are_all_cut_and_none_without_a_backlog() -> None:
    a = LabelAlignment(CFG, lambda: None)
    consumer = _Consumer()
    states: dict[int, Any] = {0: PartitionState(0, CFG), 1: PartitionState(1, CFG)}
    _backlog(consumer, 0)
    consumer.position_of[("predictions", 1)] = consumer.high_of[("predictions", 1)] = 50
    assert a.cuts(consumer, states, {0: [5.0, 6.0], 1: [5.0, 6.0]}, {}) == {0: 0}


def test_labels_ahead_are_cut_where_they_would_fill_half_the_early_labels() -> None:
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "labels": {"align_seconds": 60.0, "early_capacity": 10},
        }
    )
    a = LabelAlignment(cfg, lambda: None)
    consumer = _Consumer()
    _backlog(consumer, 0)
    state = PartitionState(0, cfg)
    state.early.add("m", "w", 1001.0, 1)  # one waits already: room for 4 more ahead
    a.observe("predictions", 0, 1000.0)
    # labels at or behind the predictions do not count: their predictions were read
    times = [999.0, 1000.0, 1001.0, 999.5, 1002.0, 1003.0, 1004.0, 1005.0]
    assert a.cuts(consumer, {0: state}, {0: times}, {}) == {0: 7}
    assert a.cuts(consumer, {0: state}, {0: times[:7]}, {}) == {}
