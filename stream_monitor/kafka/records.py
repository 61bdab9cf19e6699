"""``RawRecord``: a Kafka record held in memory, shaped like ``confluent_kafka.Message``.

For everything that decodes records that did not come from a live consumer: recorded events
replayed from a file, benchmarks, and tests.

Examples
--------
>>> from stream_monitor.events.decode import decode_record
>>> rec = RawRecord(b'{"event_id": "1", "model_id": "m", "timestamp": 1, "label": 0}', key=b"m",
...                 topic="labels")
>>> decode_record(rec, kind="label", max_bytes=1024).label
0
"""

from __future__ import annotations

from typing import Any

__all__ = ["RawRecord"]


class RawRecord:
    """Implements :class:`stream_monitor.kafka.protocols.MessageLike`."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        topic: str = "predictions",
        partition: int = 0,
        offset: int = 0,
        headers: list[tuple[str, bytes | None]] | None = None,
        timestamp: tuple[int, int] = (0, -1),
    ) -> None:
        self._value = value
        self._key = key
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._headers = headers
        self._timestamp = timestamp

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def error(self) -> Any:
        return None
