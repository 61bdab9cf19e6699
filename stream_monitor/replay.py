"""Backtest: replay recorded events through the live pipeline, as fast as the CPU allows.

``stream-monitor replay`` feeds recorded events to exactly what ``stream-monitor run`` runs on
a batch::

    bytes -> decode_record (limits.max_event_bytes) -> PartitionState.process -> alert events

with the same :class:`~stream_monitor.config.MonitorConfig` and the same reference profiles
(:func:`stream_monitor.reference.load_profiles`, as the Application loads them). There is no
sleeping and no wall clock in the pipeline: event time is the only clock, so a month of
events replays in minutes. Records that do not decode are counted by reason (the live monitor
would dead-letter them) and never stop the replay.

Two inputs:

* **JSON Lines files** (:func:`replay_files`): ``--predictions`` and optionally ``--labels``,
  one raw record value per line, exactly as published on the topic. The two files are merged
  in event-time order (stable; a line that does not decode keeps its place in its own file)
  and fed in batches of ``batch_size`` records, predictions first within a batch as the
  Application does. One ``PartitionState`` holds every model, or, with ``partitions=N``, one
  per partition number as the producer's partitioner would pick it for the key ``model_id``.
* **A range of the input topics** (:func:`replay_topics`): an assigned consumer (no group
  membership, no commits) reads both topics together, from ``start`` to the end offsets
  captured when the replay starts, and feeds batches as they are read, one ``PartitionState``
  per partition, with the live monitor's label alignment.

Observations are collected through ``PartitionState.observer`` into bounded series
(:class:`~stream_monitor.replay_model.SeriesRecorder`: at most ``cap`` points each, by
decimation) for the HTML report (:mod:`stream_monitor.report`); incidents (firing -> resolved)
are rebuilt from the alert events with the peak value of their signal
(:class:`~stream_monitor.replay_model.IncidentLog`). Those, the pipeline state
(:class:`~stream_monitor.replay_model.Replay`) and the result live in
:mod:`stream_monitor.replay_model`, which the report reads; their names are re-exported here.
See docs/backtest.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import itertools
import logging
import math
import os
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from stream_monitor.alerts.sinks import JsonLinesAlertSink
from stream_monitor.config import MonitorConfig
from stream_monitor.errors import ConfigError, StreamMonitorError, TopicsNotReady
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.gc_tuning import fewer_collections
from stream_monitor.reference import load_profiles
from stream_monitor.replay_model import (
    DEFAULT_SERIES_CAP,
    Incident,
    IncidentLog,
    Kind,
    Replay,
    ReplayResult,
    Scope,
    Series,
    SeriesKey,
    SeriesRecorder,
)
from stream_monitor.report import render_report

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SERIES_CAP",
    "Incident",
    "IncidentLog",
    "Partitioner",
    "Position",
    "Progress",
    "Replay",
    "ReplayError",
    "ReplayResult",
    "Scope",
    "Series",
    "SeriesKey",
    "SeriesRecorder",
    "format_summary",
    "murmur2",
    "parse_position",
    "partition_for",
    "replay_files",
    "replay_topics",
    "run_replay",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5000
#: A topic replay that receives nothing for this long while records remain is an error.
IDLE_TIMEOUT_SECONDS = 60.0

Partitioner = Literal["murmur2", "consistent"]
_E = TypeVar("_E", PredictionEvent, LabelEvent)


class ReplayError(StreamMonitorError):
    """The replay cannot go on (input unreadable, broker unreachable, no progress)."""


# --- partitioning -------------------------------------------------------------------------------
def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``), a signed int.

    >>> murmur2(b"21"), murmur2(b"foobar"), murmur2(b"abc")
    (-973932308, -790332482, 479470107)
    """
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest, tail = length % 4, length - length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int, partitioner: Partitioner = "murmur2") -> int:
    """The partition a keyed record lands on with the producer's default partitioner.

    ``murmur2``: the Java client's default (and librdkafka's ``murmur2_random``);
    ``consistent``: librdkafka's default ``consistent_random`` (CRC-32 of the key), which
    confluent-kafka producers use unless configured otherwise.

    >>> partition_for(b"21", 3), partition_for(b"21", 3, "consistent")
    (0, 1)
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if partitioner == "murmur2":
        return (murmur2(key) & 0x7FFFFFFF) % partitions
    return zlib.crc32(key) % partitions


# --- positions in a topic -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Position:
    """``--start`` / ``--end``: an offset (every partition of both topics) or an event time."""

    kind: Literal["offset", "time"]
    #: The offset, or the time in Unix milliseconds.
    value: int


def parse_position(text: str) -> Position:
    """An offset (``1200``) or an RFC 3339 time with its offset (``2026-11-01T00:00:00Z``).

    >>> parse_position("1200")
    Position(kind='offset', value=1200)
    >>> parse_position("2023-11-14T22:13:20Z")
    Position(kind='time', value=1700000000000)
    >>> parse_position("2023-11-14 22:13")
    Traceback (most recent call last):
    ...
    stream_monitor.errors.ConfigError: '2023-11-14 22:13': not an offset nor an RFC 3339 time ...
    """
    s = text.strip()
    if s.isdigit():
        return Position("offset", int(s))
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ConfigError(
            f"{text!r}: not an offset nor an RFC 3339 time with a UTC offset "
            "(e.g. 2026-11-01T00:00:00Z)"
        )
    return Position("time", round(when.timestamp() * 1000))


# --- progress -----------------------------------------------------------------------------------
class Progress:
    """At most one line per ``interval`` seconds on ``stream`` (when enabled), and a final one.

    Only for display: the wall clock never paces the replay.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        enabled: bool | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) if enabled is None else enabled
        self.tty = bool(isatty())
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._last = self.started

    def update(self, events: int, fraction: float | None, alerts: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last < self.interval:
            return
        self._last = now
        self._write(self._line(events, fraction, alerts, now), final=False)

    def finish(self, events: int, alerts: int) -> None:
        self._write(self._line(events, 1.0, alerts, self.clock(), final=True), final=True)

    def _line(
        self, events: int, fraction: float | None, alerts: int, now: float, final: bool = False
    ) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = events / elapsed
        parts = [f"replay: {events:,} events"]
        if fraction is not None and not final:
            parts.append(f"{100 * min(max(fraction, 0.0), 1.0):.1f}%")
        parts.append(f"{rate:,.0f} events/s")
        parts.append(f"{alerts:,} alerts")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif fraction is not None and 0 < fraction < 1:
            parts.append(f"ETA {_duration(elapsed * (1 - fraction) / fraction)}")
        return ", ".join(parts)

    def _write(self, line: str, *, final: bool) -> None:
        if self.tty and self.enabled:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --- files --------------------------------------------------------------------------------------
class _Line:
    """One line of a file as the record it was on the topic (a lighter ``RawRecord``).

    Implements :class:`stream_monitor.kafka.protocols.MessageLike`: no key, no headers, no
    timestamp; the offset is the line's index in its file.
    """

    __slots__ = ("_offset", "_topic", "_value")

    def __init__(self, value: bytes, topic: str, offset: int) -> None:
        self._value = value
        self._topic = topic
        self._offset = offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, -1)

    def error(self) -> None:
        return None


class _JsonLines:
    """One JSON Lines file of raw record values (``.gz`` allowed), decoded a chunk at a time.

    :meth:`read` decodes the next lines and returns their events (None for a line that does
    not decode) and their merge keys: the largest event time of the file so far, see
    :func:`_cut`.
    """

    def __init__(
        self, path: str | os.PathLike[str], kind: Kind, topic: str, replay: Replay
    ) -> None:
        self.path = Path(path)
        self.kind: Kind = kind
        self.topic = topic
        self.replay = replay
        self.raw = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self.raw.fileno()).st_size
        self.fh: IO[bytes] | gzip.GzipFile = self.raw
        if self.path.suffix == ".gz":
            self.fh = gzip.GzipFile(fileobj=self.raw, mode="rb")
        #: Lines read so far (the offset of the next one), and whether the file is finished.
        self.lines = 0
        self.eof = False
        self._key = -math.inf

    @property
    def done_bytes(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return self.size

    def read(self, n: int) -> tuple[list[PredictionEvent | LabelEvent | None], list[float]]:
        """Decode up to ``n`` more lines: their events and merge keys."""
        lines = list(itertools.islice(self.fh, n))
        if len(lines) < n:
            self.eof = True
        first, self.lines = self.lines, self.lines + len(lines)
        topic = self.topic
        # A trailing "\n" or "\r\n" is not part of the value.
        records = [
            _Line(
                line[:-2]
                if line.endswith(b"\r\n")
                else line[:-1]
                if line.endswith(b"\n")
                else line,
                topic,
                offset,
            )
            for offset, line in enumerate(lines, first)
        ]
        events = self.replay.decode_many(records, self.kind)
        times = [-math.inf if ev is None else ev.timestamp for ev in events]
        keys = list(itertools.accumulate(times, max, initial=self._key))
        self._key = keys[-1]
        del keys[0]
        return events, keys

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.fh.close()
        self.raw.close()


def _cut(pred_keys: Sequence[float], label_keys: Sequence[float], n: int) -> int:
    """How many of the first ``n`` records of the merge are predictions.

    The files are merged as ``heapq.merge`` merges them by event time: the earlier of the two
    next records goes first, the prediction on equal times, and a line that does not decode
    takes the event time of the line before it. That greedy merge of two sequences whose
    times may go backwards is the same as a stable merge of their running maxima (a record
    can only go first once every record before it in its file has), so with the merge keys of
    :meth:`_JsonLines.read` the first ``n`` records are ``i`` predictions and ``n - i`` labels
    for the largest ``i`` whose last prediction is not later than the next label.

    >>> _cut([1, 3, 5], [2, 2, 4], 2), _cut([3, 5], [2, 4], 2), _cut([5], [4], 2)
    (1, 1, 1)
    >>> _cut([1, 1], [1], 2), _cut([], [1, 2], 2), _cut([7, 8], [], 2)
    (2, 0, 2)
    """
    n = min(n, len(pred_keys) + len(label_keys))
    lo, hi = max(0, n - len(label_keys)), min(n, len(pred_keys))
    # i = lo is always possible; "i predictions" is while pred_keys[i-1] <= label_keys[n-i].
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pred_keys[mid - 1] <= label_keys[n - mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def replay_files(
    replay: Replay,
    predictions: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    partitions: int | None = None,
    partitioner: Partitioner = "murmur2",
    progress: Progress | None = None,
) -> None:
    """Feed the recorded predictions (and labels) to ``replay`` in event-time order.

    Both files are opened before anything is processed (OSError for a missing one). Each file
    is decoded at most one batch ahead of the merge.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    routes: dict[str, int] = {}

    def grouped(events: Sequence[_E | None]) -> dict[int, list[_E]]:
        if partitions is None:
            valid = [ev for ev in events if ev is not None]
            return {0: valid} if valid else {}
        out: dict[int, list[_E]] = {}
        for ev in events:
            if ev is None:
                continue
            part = routes.get(ev.model_id)
            if part is None:
                part = routes[ev.model_id] = partition_for(
                    ev.model_id.encode(), partitions, partitioner
                )
            out.setdefault(part, []).append(ev)
        return out

    topics = replay.cfg.topics
    sources = [_JsonLines(predictions, "prediction", topics.predictions, replay)]
    try:
        if labels is not None:
            sources.append(_JsonLines(labels, "label", topics.labels, replay))
        total = sum(s.size for s in sources)
        # Decoded, not yet processed: events (None for a bad line) and merge keys per file.
        events: list[list[Any]] = [[] for _ in sources]
        keys: list[list[float]] = [[] for _ in sources]
        while True:
            for s, evs, ks in zip(sources, events, keys, strict=True):
                if len(evs) < batch_size and not s.eof:
                    more, more_keys = s.read(batch_size - len(evs))
                    evs += more
                    ks += more_keys
            if not any(events):
                break
            label_keys = keys[1] if labels is not None else []
            i = _cut(keys[0], label_keys, batch_size)
            j = min(batch_size - i, len(label_keys))
            replay.process(
                grouped(events[0][:i]), grouped(events[1][:j]) if labels is not None else {}
            )
            del events[0][:i], keys[0][:i]
            if labels is not None:
                del events[1][:j], keys[1][:j]
            if progress is not None:
                done = sum(s.done_bytes for s in sources)
                progress.update(replay.events, done / total if total else None, len(replay.alerts))
    finally:
        for s in sources:
            s.close()


# --- topics -------------------------------------------------------------------------------------
def _replay_consumer(cfg: MonitorConfig) -> Any:
    from confluent_kafka import Consumer

    from stream_monitor.kafka import clients

    conf = clients.consumer_config(cfg)
    conf.pop("group.instance.id", None)
    conf.update(
        {
            # Required by the client; never joined (the consumer is assigned) nor committed to.
            "group.id": f"stream-monitor-replay-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        }
    )
    return Consumer(conf)


def _resolve(
    consumer: Any,
    tps: Sequence[tuple[str, int]],
    pos: Position | None,
    default: Literal["low", "high"],
    marks: Mapping[tuple[str, int], tuple[int, int]],
) -> dict[tuple[str, int], int]:
    """The offset of ``pos`` in every partition, clamped to its watermarks."""
    from confluent_kafka import TopicPartition

    out: dict[tuple[str, int], int] = {}
    if pos is None:
        return {tp: marks[tp][0 if default == "low" else 1] for tp in tps}
    if pos.kind == "offset":
        return {tp: min(max(pos.value, marks[tp][0]), marks[tp][1]) for tp in tps}
    found = consumer.offsets_for_times([TopicPartition(t, p, pos.value) for t, p in tps], 30.0)
    for tp in found:
        key = (tp.topic, tp.partition)
        low, high = marks[key]
        # -1: no record at or after that time: the end.
        out[key] = high if tp.offset < 0 else min(max(tp.offset, low), high)
    return out


def replay_topics(
    replay: Replay,
    *,
    start: Position | None = None,
    end: Position | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS,
) -> dict[str, dict[int, tuple[int, int]]]:
    """Replay ``[start, end)`` of both input topics (default: everything there at the start).

    ``batch_size`` (default: the config's ``batch_size``, as the live monitor consumes) is the
    most records taken per ``consume`` call and processed as one batch. Returns the
    ``(start, end)`` offsets read, by topic and partition.
    """
    from confluent_kafka import KafkaError, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    from stream_monitor.kafka import clients

    cfg = replay.cfg
    t = cfg.topics
    batch = cfg.batch_size if batch_size is None else batch_size
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    # Client logs off for this first look: an unreachable broker is one error, not a log flood.
    admin = AdminClient({**clients.client_config(cfg), "log_level": 0})
    try:
        n = clients.check_input_topics(admin, cfg)
    except TopicsNotReady as exc:
        raise ConfigError(str(exc)) from None
    except KafkaException as exc:
        why = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise ReplayError(
            f"cannot read topic metadata from {cfg.bootstrap_servers}: {why}"
        ) from None
    consumer = _replay_consumer(cfg)
    try:
        tps = [(topic, p) for topic in (t.predictions, t.labels) for p in range(n)]
        marks = {
            tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=30.0) for tp in tps
        }
        starts = _resolve(consumer, tps, start, "low", marks)
        ends = _resolve(consumer, tps, end, "high", marks)
        todo = {tp for tp in tps if starts[tp] < ends[tp]}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        position = dict(starts)
        consumer.assign([TopicPartition(*tp, starts[tp]) for tp in tps if tp in todo])
        newest: dict[tuple[str, int], float] = {}
        paused: set[int] = set()
        last_record = time.monotonic()

        def finished(tp: tuple[str, int]) -> None:
            todo.discard(tp)
            with contextlib.suppress(Exception):
                consumer.pause([TopicPartition(*tp)])

        while todo:
            msgs = consumer.consume(batch, 0.5)
            preds: dict[int, list[PredictionEvent]] = {}
            labs: dict[int, list[LabelEvent]] = {}
            for m in msgs:
                err = m.error()
                tp = (m.topic(), m.partition())
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if tp in todo:  # nothing more to read now (read_committed: up to LSO)
                            position[tp] = max(position[tp], ends[tp])
                            finished(tp)
                    elif err.fatal():
                        raise ReplayError(f"consumer error: {err.str()}")
                    else:
                        log.warning("consume error=%s", err.str())
                    continue
                offset = m.offset()
                if tp not in todo or offset >= ends[tp]:
                    if tp in todo:
                        finished(tp)
                    continue
                position[tp] = offset + 1
                if offset + 1 >= ends[tp]:
                    finished(tp)
                if tp[0] == t.predictions:
                    ev = replay.decode(m, "prediction")
                    if isinstance(ev, PredictionEvent):
                        preds.setdefault(tp[1], []).append(ev)
                else:
                    ev = replay.decode(m, "label")
                    if isinstance(ev, LabelEvent):
                        labs.setdefault(tp[1], []).append(ev)
                if ev is not None and ev.timestamp > newest.get(tp, -math.inf):
                    newest[tp] = ev.timestamp
            if msgs:
                last_record = time.monotonic()
            elif time.monotonic() - last_record > idle_timeout:
                raise ReplayError(
                    f"no records for {idle_timeout:.0f} s with partitions left to read: "
                    + ", ".join(f"{a}[{b}]" for a, b in sorted(todo))
                )
            if preds or labs:
                replay.process(preds, labs)
            _align(consumer, replay, newest, paused, todo)
            if progress is not None:
                done = sum(position[tp] - starts[tp] for tp in tps if starts[tp] < ends[tp])
                progress.update(replay.events, done / total if total else None, len(replay.alerts))
    finally:
        consumer.close()
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for (topic, p), s in starts.items():
        out.setdefault(topic, {})[p] = (s, ends[(topic, p)])
    return out


def _align(
    consumer: Any,
    replay: Replay,
    newest: Mapping[tuple[str, int], float],
    paused: set[int],
    todo: set[tuple[str, int]],
) -> None:
    """The live monitor's label alignment (``Application._align``), on the replay's range.

    A labels partition is paused while its predictions partition has records left in the
    range and either its newest label is more than ``labels.align_seconds`` ahead of the
    newest prediction or the early-label buffer is half full; it is resumed once predictions
    caught up (half the margin, a quarter of the buffer) or ran out of records.
    """
    from confluent_kafka import TopicPartition

    t = replay.cfg.topics
    margin = replay.cfg.labels.align_seconds
    capacity = replay.cfg.labels.early_capacity
    for p, state in replay.states.items():
        labels_tp = (t.labels, p)
        if labels_tp not in todo:
            paused.discard(p)
            continue
        backlog = (t.predictions, p) in todo
        ahead = newest.get(labels_tp, -math.inf) - newest.get((t.predictions, p), -math.inf)
        waiting = len(state.early)
        if p not in paused:
            if (ahead > margin or waiting > capacity / 2) and backlog:
                consumer.pause([TopicPartition(*labels_tp)])
                paused.add(p)
        elif (ahead <= margin / 2 and waiting <= capacity / 4) or not backlog:
            consumer.resume([TopicPartition(*labels_tp)])
            paused.discard(p)


def format_time(t: float) -> str:
    """Unix seconds as an RFC 3339 UTC time (to the second), or "-"."""
    if not math.isfinite(t):
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in c.items()) or "-"


def format_summary(result: ReplayResult) -> str:
    """The summary printed after a replay."""
    r = result.replay
    alerts = result.alerts
    lines = [
        f"replay of {result.input}" + (f" with {result.config_path}" if result.config_path else "")
    ]
    span = ""
    if math.isfinite(r.first_event_at):
        hours = (r.last_event_at - r.first_event_at) / 3600
        span = (
            f"; event time {format_time(r.first_event_at)} .. {format_time(r.last_event_at)}"
            f" ({hours:,.1f} h)"
        )
    lines.append(
        f"events read    {r.events:,} (predictions {r.predictions:,}, labels {r.labels:,}, "
        f"invalid {sum(r.invalid.values()):,}){span}"
    )
    if r.invalid:
        by_kind = "; ".join(
            f"{kind}s: "
            + _counts({reason: k for (kd, reason), k in sorted(r.invalid.items()) if kd == kind})
            for kind in ("prediction", "label")
            if any(kd == kind for kd, _ in r.invalid)
        )
        lines.append(f"invalid        {_counts(result.invalid_by_reason())} ({by_kind})")
    if r.events_refused:
        lines.append(
            f"refused        {r.events_refused:,} predictions of models over "
            "limits.max_models_per_partition"
        )
    lines.append(
        f"alerts         {len(alerts):,} ("
        + _counts(Counter(a.status for a in alerts))
        + f"); partitions {len(r.states)}"
    )
    if alerts:
        lines.append(
            f"  by kind      {_counts(dict(Counter(a.kind for a in alerts).most_common()))}"
        )
        lines.append(
            f"  by severity  {_counts(dict(Counter(a.severity for a in alerts).most_common()))}"
        )
    incidents = result.incidents
    still = sum(1 for i in incidents if i.resolved_at is None)
    lines.append(
        f"incidents      {len(incidents):,} ({len(incidents) - still:,} resolved, "
        f"{still:,} still firing at the end)"
    )
    pages = result.pages()
    lines.append(f"pages          {len(pages):,} (firing alerts of severity critical)")
    for day, k in result.pages_per_day().items():
        lines.append(f"  {day}   {k:,}")
    lines.append(
        f"wall time      {result.wall_seconds:,.1f} s, {result.events_per_second:,.0f} events/s"
    )
    if result.out_dir is not None:
        lines.append(
            f"outputs        {result.out_dir / 'alerts.jsonl'}, {result.out_dir / 'report.html'}"
        )
    return "\n".join(lines)


def run_replay(
    cfg: MonitorConfig,
    out_dir: str | os.PathLike[str],
    *,
    predictions: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    from_kafka: bool = False,
    start: Position | None = None,
    end: Position | None = None,
    batch_size: int | None = None,
    partitions: int | None = None,
    partitioner: Partitioner = "murmur2",
    progress: Progress | None = None,
    config_path: str | None = None,
    series_cap: int = DEFAULT_SERIES_CAP,
) -> ReplayResult:
    """Run a replay and write ``alerts.jsonl`` and ``report.html`` to ``out_dir``.

    ``batch_size`` defaults to :data:`DEFAULT_BATCH_SIZE` records for files and to the
    config's ``batch_size`` (the live monitor's) for topics. Raises ConfigError (bad profiles,
    topics), OSError (files) or ReplayError.
    """
    if (predictions is None) == (not from_kafka):
        raise ValueError("give either predictions (files) or from_kafka, not both")
    if predictions is not None:
        for path in (predictions, labels):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"no such file: {path}")
    profiles = load_profiles(cfg.references)  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    offsets = None
    with fewer_collections(), open(out / "alerts.jsonl", "wb") as timeline:
        # The alerts topic's serialisation; not published, so published_at stays null.
        sink = JsonLinesAlertSink(timeline)
        replay = Replay(
            cfg, profiles=profiles, series_cap=series_cap, on_alert=lambda a: sink.write([a])
        )
        if predictions is not None:
            replay_files(
                replay,
                predictions,
                labels,
                batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
                partitions=partitions,
                partitioner=partitioner,
                progress=progress,
            )
            source = str(predictions) + (f" + {labels}" if labels is not None else "")
            if partitions is not None:
                source += f" ({partitions} partitions, {partitioner})"
        else:
            offsets = replay_topics(
                replay, start=start, end=end, batch_size=batch_size, progress=progress
            )
            t = cfg.topics
            source = f"topics {t.predictions} + {t.labels} on {cfg.bootstrap_servers}"
            span = _offset_span(offsets)
            if span:
                source += f" ({span})"
    wall = time.perf_counter() - started
    if progress is not None:
        progress.finish(replay.events, len(replay.alerts))
    result = ReplayResult(
        config_path=config_path,
        input=source,
        replay=replay,
        wall_seconds=wall,
        out_dir=out,
        offsets=offsets,
    )
    (out / "report.html").write_text(render_report(result), encoding="utf-8")
    return result


def _offset_span(offsets: Mapping[str, Mapping[int, tuple[int, int]]]) -> str:
    parts = []
    for topic, parts_ in offsets.items():
        ranges = ",".join(f"{p}:{s}-{e}" for p, (s, e) in sorted(parts_.items()))
        parts.append(f"{topic} {ranges}")
    return "; ".join(parts)
