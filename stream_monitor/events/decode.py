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
from typing import Any, Literal, TypeVar

import orjson
from pydantic import ValidationError

from stream_monitor.events.schema import (
    MAX_FEATURES_PER_EVENT,
    MAX_ID_LENGTH,
    LabelEvent,
    PredictionEvent,
    ScoredPrediction,
)
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
    fast = _fast_prediction(obj) if kind == "prediction" else _fast_label(obj)
    if fast is not None:
        event: PredictionEvent | LabelEvent = fast
    else:
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


# --- the fast path ---------------------------------------------------------------------------
# Events of the usual shape are checked by hand and built without a second validation; anything
# these checks are not sure of goes through pydantic, which gives the dead-letter reason. So the
# fast path may only accept what the models accept, and must build the objects they would
# (tests/unit/test_decode.py compares both on generated valid and invalid payloads).

_SCALARS = frozenset({float, int, bool, str})
_FEATURE_VALUES = frozenset({float, int, bool, str, type(None)})
_PREDICTION_FIELDS = frozenset(PredictionEvent.model_fields)
_LABEL_FIELDS = frozenset(LabelEvent.model_fields)


def _identifier(v: object) -> bool:
    return type(v) is str and 0 < len(v) <= MAX_ID_LENGTH


def _seconds(v: object) -> float | None:
    """A Unix-seconds timestamp as the schema's validator converts it (numbers only)."""
    if (type(v) is float or type(v) is int) and 0 <= v < 1e11:  # type: ignore[operator]
        return float(v)  # type: ignore[arg-type]
    return None


def _ids_and_time(obj: dict[str, Any]) -> float | None:
    """The timestamp in seconds when both identifiers and the timestamp pass, else None."""
    if _identifier(obj.get("event_id")) and _identifier(obj.get("model_id")):
        return _seconds(obj.get("timestamp"))
    return None


def _fast_prediction(obj: dict[str, Any]) -> PredictionEvent | None:
    ts = _ids_and_time(obj)
    features = obj.get("features")
    version = obj.get("model_version")
    segments = obj.get("segments")
    if (
        ts is None
        or type(features) is not dict
        or len(features) > MAX_FEATURES_PER_EVENT
        or not _FEATURE_VALUES.issuperset(map(type, features.values()))
        or not (version is None or (type(version) is str and len(version) <= MAX_ID_LENGTH))
        or not (
            segments is None
            or (type(segments) is dict and all(type(v) is str for v in segments.values()))
        )
    ):
        return None
    p = obj.get("prediction")
    prediction: Any
    if type(p) in _SCALARS:
        prediction = p
    elif type(p) is dict and type(p.get("label")) in _SCALARS and type(p.get("score")) in (
        float,
        int,
    ):
        prediction = _construct(
            ScoredPrediction, {"label", "score"}, {"label": p["label"], "score": p["score"]}
        )
    else:
        return None
    values = {
        "event_id": obj["event_id"],
        "model_id": obj["model_id"],
        "model_version": version,
        "timestamp": ts,
        "features": features,
        "prediction": prediction,
        "segments": segments,
    }
    return _construct(PredictionEvent, set(_PREDICTION_FIELDS.intersection(obj)), values)


def _fast_label(obj: dict[str, Any]) -> LabelEvent | None:
    ts = _ids_and_time(obj)
    label = obj.get("label")
    if ts is None or type(label) not in _SCALARS:
        return None
    values = {"event_id": obj["event_id"], "model_id": obj["model_id"], "timestamp": ts}
    values["label"] = label
    return _construct(LabelEvent, set(_LABEL_FIELDS.intersection(obj)), values)


_setattr = object.__setattr__
M = TypeVar("M", PredictionEvent, LabelEvent, ScoredPrediction)


def _construct(cls: type[M], fields_set: set[str], values: dict[str, Any]) -> M:
    """An instance of ``cls`` holding ``values`` (every field, in declaration order), set up as
    pydantic's ``model_construct`` sets one up, without its per-field Python loop (which costs
    about as much as validating). The decode tests compare the result with model_validate's."""
    m = object.__new__(cls)
    _setattr(m, "__dict__", values)
    _setattr(m, "__pydantic_fields_set__", fields_set)
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


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
