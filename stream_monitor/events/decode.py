"""Decode raw Kafka records into validated events, or into dead letters with a reason.

Decoding never raises on data: every outcome is a value (``PredictionEvent``, ``LabelEvent`` or
``DeadLetter``). A dead letter keeps the original key, value and headers byte for byte.

Examples
--------
>>> class Rec:
...     def __init__(self, value): self._v = value
...     def topic(self): return "predictions"
...     def partition(self): return 0
...     def offset(self): return 7
...     def key(self): return b"m"
...     def value(self): return self._v
...     def headers(self): return None
...     def timestamp(self): return (1, 0)
...     def error(self): return None
>>> dl = decode_record(Rec(b"{not json"), kind="prediction", max_bytes=1024)
>>> dl.reason, dl.offset
('decode_error', 7)
>>> ok = decode_record(Rec(b'{"event_id":"1","model_id":"m","timestamp":1,'
...                        b'"features":{},"prediction":0.5}'), kind="prediction", max_bytes=1024)
>>> ok.model_id
'm'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson
from pydantic import ValidationError

from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.kafka.protocols import MessageLike

__all__ = ["DeadLetter", "DecodeReason", "Decoded", "dead_letter_headers", "decode_record"]

DecodeReason = Literal["empty", "oversized", "decode_error", "validation_error", "key_mismatch"]
MAX_DETAIL_CHARS = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input record that could not be used, with the machine-readable reason."""

    reason: DecodeReason
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int


Decoded = PredictionEvent | LabelEvent | DeadLetter


def decode_record(
    msg: MessageLike, *, kind: Literal["prediction", "label"], max_bytes: int
) -> Decoded:
    """Decode and validate one record of the predictions or labels topic."""
    value = msg.value()
    if not value:
        return _dead(msg, "empty", "record has no value (tombstone or empty payload)")
    if len(value) > max_bytes:
        return _dead(msg, "oversized", f"value is {len(value)} bytes, limit is {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return _dead(msg, "decode_error", f"not valid UTF-8 JSON: {exc}")
    if not isinstance(obj, dict):
        return _dead(msg, "decode_error", f"JSON value is a {type(obj).__name__}, not an object")
    model = PredictionEvent if kind == "prediction" else LabelEvent
    try:
        event = model.model_validate(obj)
    except ValidationError as exc:
        return _dead(msg, "validation_error", _summarise(exc))
    key = msg.key()
    if key is not None and key != event.model_id.encode():
        return _dead(
            msg,
            "key_mismatch",
            f"record key {key[:64]!r} differs from model_id {event.model_id[:64]!r}; "
            "the key must be the model_id so that a model's events share one partition",
        )
    return event


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)[:MAX_DETAIL_CHARS]


def _dead(msg: MessageLike, reason: DecodeReason, detail: str) -> DeadLetter:
    ts_type, ts = msg.timestamp()
    return DeadLetter(
        reason=reason,
        detail=detail[:MAX_DETAIL_CHARS],
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        timestamp_ms=ts if ts_type else -1,
    )


def dead_letter_headers(dl: DeadLetter) -> list[tuple[str, bytes]]:
    """Headers of the dead-letter record: the reason and where the original came from.

    The original record's headers are kept after ours.
    """
    ours = [
        ("x-dead-letter-reason", dl.reason.encode()),
        ("x-dead-letter-detail", dl.detail.encode()),
        ("x-source-topic", dl.topic.encode()),
        ("x-source-partition", str(dl.partition).encode()),
        ("x-source-offset", str(dl.offset).encode()),
        ("x-source-timestamp-ms", str(dl.timestamp_ms).encode()),
    ]
    return ours + [(k, v if v is not None else b"") for k, v in dl.headers]
