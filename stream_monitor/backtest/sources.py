"""Where a backtest's records come from: JSON Lines files or a range of the input topics.

Files: :class:`_JsonLines` reads one file of raw record values (``.gz`` allowed) a chunk at a
time and decodes it through the :class:`~stream_monitor.backtest.state.Replay`; :func:`_cut`
says how the two files merge in event-time order; :func:`partition_for` (Kafka's
:func:`murmur2`, or CRC-32) gives the partition a record of a model would land on. Topics:
:func:`parse_position` reads ``--start`` / ``--end``; :func:`_replay_consumer` and
:func:`_resolve` set up the assigned consumer and the offsets of a range. The loops that feed
these to the pipeline are in :mod:`stream_monitor.backtest.pipeline`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import itertools
import math
import os
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from stream_monitor.backtest.state import Kind, Replay
from stream_monitor.config import MonitorConfig
from stream_monitor.errors import ConfigError
from stream_monitor.events.live import AnyLabel, AnyPrediction

__all__ = ["Partitioner", "Position", "murmur2", "parse_position", "partition_for"]

Partitioner = Literal["murmur2", "consistent"]


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

    def read(self, n: int) -> tuple[list[AnyPrediction | AnyLabel | None], list[float]]:
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
