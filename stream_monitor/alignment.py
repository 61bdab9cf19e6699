"""Event-time alignment of the two input topics: labels do not run ahead of predictions.

Labels are small, so on a backlog the consumer reads them several times faster than
predictions and most would arrive before their prediction (and wait, bounded, among the early
labels). :class:`LabelAlignment` keeps the newest event time processed per input
topic-partition and pauses a labels partition while its predictions partition still has
records to read and either its newest label is more than ``labels.align_seconds`` (event time)
ahead of the newest prediction, or the early-label buffer is half full while the labels are
ahead at all; it resumes it once the predictions caught up (within half the margin, and the
buffer down to a quarter or the labels no longer ahead) or ran out of records. Held back, the
labels' clock stands still while the predictions' moves on, so a paused partition always
resumes: the early labels that wait for predictions already read expire against the
predictions' clock (``EarlyLabels.expire_behind``), not only against the labels'.

The pause takes effect between batches, but one batch can hold thousands of a partition's
labels (the client fetches ahead), so within a batch the application cuts each
labels partition at the same limits before anything is processed (:meth:`LabelAlignment.cuts`):
the labels from the cut on are neither processed nor committed, and the partition, paused, is
sought back to them (:meth:`LabelAlignment.hold`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import TopicPartition

from stream_monitor.config import MonitorConfig
from stream_monitor.monitor.partition import PartitionState

__all__ = ["LabelAlignment"]

log = logging.getLogger(__name__)

#: Seconds to wait for the broker when a predictions partition's position or high watermark
#: is not known locally yet (only until its first records arrive).
_ASK_TIMEOUT = 2.0


class LabelAlignment:
    """Pauses and resumes labels partitions of one consumer (see the module docstring).

    ``on_pause`` is called at every pause (a counter, say).
    """

    def __init__(self, cfg: MonitorConfig, on_pause: Callable[[], None]) -> None:
        self.predictions, self.labels = cfg.topics.predictions, cfg.topics.labels
        self.margin = cfg.labels.align_seconds
        self.capacity = cfg.labels.early_capacity
        self._on_pause = on_pause
        #: Newest event time processed per (topic, partition).
        self.event_time: dict[tuple[str, int], float] = {}
        #: Labels partitions paused now.
        self.paused: set[int] = set()
        #: Where each predictions partition started (committed offset, else its low
        #: watermark) and its high watermark then, asked once while nothing of it has been
        #: read since the assignment.
        self._starts: dict[int, tuple[int, int]] = {}

    def observe(self, topic: str, partition: int, newest: float) -> None:
        """The newest event time of a batch's records of ``topic``/``partition``."""
        key = (topic, partition)
        if newest > self.event_time.get(key, float("-inf")):
            self.event_time[key] = newest

    def align(
        self,
        consumer: Any,
        states: Mapping[int, PartitionState],
        has_backlog: Callable[[int], bool] | None = None,
    ) -> None:
        """Pause or resume the labels partition of each of ``states``' partitions.

        ``has_backlog(p)``: whether predictions partition ``p`` still has records to read
        (default: the consumer's position is behind the partition's high watermark; a backtest
        knows the end of its range instead)."""
        if has_backlog is None:

            def has_backlog(p: int) -> bool:
                return self._has_backlog(consumer, p)

        for p, state in list(states.items()):
            pred_time = self.event_time.get((self.predictions, p), float("-inf"))
            label_time = self.event_time.get((self.labels, p), float("-inf"))
            ahead = label_time - pred_time
            waiting = len(state.early)
            labels_tp = TopicPartition(self.labels, p)
            if p not in self.paused:
                full = waiting > self.capacity / 2 and ahead > 0
                if (ahead > self.margin or full) and has_backlog(p):
                    consumer.pause([labels_tp])
                    self.paused.add(p)
                    self._on_pause()
                    log.debug(
                        "holding labels partition=%d back: labels %.1f s ahead of "
                        "predictions, %d early labels waiting",
                        p,
                        ahead,
                        waiting,
                    )
            elif (
                ahead <= self.margin / 2 and (waiting <= self.capacity / 4 or ahead <= 0)
            ) or not has_backlog(p):
                consumer.resume([labels_tp])
                self.paused.discard(p)

    def cuts(
        self,
        consumer: Any,
        states: Mapping[int, PartitionState],
        label_times: Mapping[int, Sequence[float]],
        predictions_newest: Mapping[int, float],
    ) -> dict[int, int]:
        """Where to cut one batch's labels, before any of them is processed: per labels
        partition whose predictions partition has a backlog, the index of its first label more
        than ``align_seconds`` ahead of the newest prediction (this batch's included), or of the
        first label ahead at all that would take the early labels past half their capacity.
        The labels from there on are to be held back (:meth:`hold`) and read again once the
        predictions caught up.

        :meth:`align` pauses only between batches, and a batch can hold thousands of one
        partition's labels (what the client fetched ahead): without the cut they would overflow
        the early labels. ``label_times``: per partition, the event times of its labels in
        offset order. One pass in C per partition when nothing is to be cut (the usual case).
        """
        out: dict[int, int] = {}
        for p, times in label_times.items():
            state = states.get(p)
            if state is None or not times:
                continue
            pred_time = max(
                self.event_time.get((self.predictions, p), float("-inf")),
                predictions_newest.get(p, float("-inf")),
            )
            limit = pred_time + self.margin
            room = self.capacity / 2 - len(state.early)
            if (max(times) <= limit and len(times) <= room) or not self._has_backlog(consumer, p):
                continue
            for i, ts in enumerate(times):
                if ts > pred_time:
                    room -= 1
                    if ts > limit or room < 0:
                        out[p] = i
                        break
        return out

    def hold(self, consumer: Any, p: int, offset: int) -> None:
        """Pause labels partition ``p`` and seek it back to ``offset``, the first of its
        records not processed (:meth:`cuts`)."""
        if p not in self.paused:
            consumer.pause([TopicPartition(self.labels, p)])
            self.paused.add(p)
            self._on_pause()
        # After the pause: librdkafka before 1.9 forgot a seek made before one.
        consumer.seek(TopicPartition(self.labels, p, offset))
        log.debug("holding labels partition=%d back from offset %d", p, offset)

    def _has_backlog(self, consumer: Any, p: int) -> bool:
        """Whether predictions partition ``p`` has records left to read. Before anything of
        it was read since the assignment, its position is unknown: it is where the group's
        committed offset (else the low watermark: ``auto.offset.reset`` is earliest) points,
        and its high watermark is asked of the broker, both once (kept until its first
        records arrive), so that labels read first are held back from the very first batch."""
        tp = TopicPartition(self.predictions, p)
        try:
            position = consumer.position([tp])[0].offset
            if position >= 0:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            else:
                known = self._starts.get(p)
                if known is None:
                    low, high = consumer.get_watermark_offsets(tp, timeout=_ASK_TIMEOUT)
                    committed = consumer.committed([tp], timeout=_ASK_TIMEOUT)[0].offset
                    known = self._starts[p] = (committed if committed >= 0 else low, high)
                position, high = known
        except Exception:  # unknown: do not hold labels back
            return False
        return position >= 0 and high > position

    def assigned(self) -> None:
        """A new assignment starts unpaused."""
        self.paused.clear()
        self._starts.clear()

    def forget(self, gone: Iterable[tuple[str, int]], kept: set[int]) -> None:
        """Drop what is known of the topic-partitions ``gone``; only ``kept`` stay paused."""
        for key in gone:
            self.event_time.pop(key, None)
            self._starts.pop(key[1], None)
        self.paused.intersection_update(kept)
