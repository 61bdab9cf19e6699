"""LabelAlignment with a stand-in consumer: positions and high watermarks per partition."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from stream_monitor.alignment import LabelAlignment
from stream_monitor.config import MonitorConfig
from stream_monitor.monitor.partition import PartitionState

CFG = MonitorConfig.model_validate(
    {"bootstrap_servers": "unused:9092", "labels": {"align_seconds": 60.0}}
)


class _Consumer:
    def __init__(self) -> None:
        self.position_of: dict[tuple[str, int], int] = {}
        self.high_of: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(t.topic, t.partition, self.position_of[(t.topic, t.partition)])
                for t in tps]  # fmt: skip

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.high_of[(tp.topic, tp.partition)]

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused.update((t.topic, t.partition) for t in tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused.difference_update((t.topic, t.partition) for t in tps)


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
