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
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ValidationError

from stream_monitor.errors import ConfigError
from stream_monitor.events.schema import (
    MAX_FEATURES_PER_EVENT,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    LabelEvent,
    PredictionEvent,
    ScoredPrediction,
    _to_unix_seconds,
)
from stream_monitor.kafka.protocols import MessageLike

__all__ = [
    "DESERIALIZERS",
    "JSON",
    "DeadLetter",
    "DecodeReason",
    "Decoded",
    "DeserializeError",
    "Deserializer",
    "JsonDeserializer",
    "dead_letter_headers",
    "decode_record",
    "deserializer_for",
    "processing_error",
]

#: Why a record went to the dead-letter topic; ``processing_error``: it decoded, but processing
#: it raised (the detail names the exception).
DecodeReason = Literal[
    "empty", "oversized", "decode_error", "validation_error", "key_mismatch", "processing_error"
]
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


# --- input formats ---------------------------------------------------------------------------


class DeserializeError(ValueError):
    """The record value is not a document of the input format (the message is the dead
    letter's detail)."""


class Deserializer(Protocol):
    """An input format: record value bytes -> the mapping of fields the wire contract names
    (docs/wire-contract.md), validated afterwards by the same checks whatever the format."""

    #: Its name in the configuration (``input_format``).
    name: str

    def loads(self, value: bytes) -> dict[str, Any]:
        """The fields of one event; raise :class:`DeserializeError` when ``value`` is not a
        document of this format (the record goes to the dead-letter topic with reason
        ``decode_error``)."""
        ...


class JsonDeserializer:
    """JSON (UTF-8), one object per record value, parsed by orjson."""

    name = "json"

    def loads(self, value: bytes) -> dict[str, Any]:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DeserializeError(f"not valid UTF-8 JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise DeserializeError(f"JSON value is a {type(obj).__name__}, not an object")
        return obj


JSON = JsonDeserializer()

#: The input formats by configuration name; a new one (Avro, Protobuf) is one more entry here
#: with its ``loads``, and tests/unit/test_decode.py's checks run on it.
DESERIALIZERS: dict[str, Deserializer] = {JSON.name: JSON}


def deserializer_for(name: str) -> Deserializer:
    """The input format called ``name`` (``MonitorConfig.input_format``).

    >>> deserializer_for("json").name
    'json'
    >>> deserializer_for("avro")
    Traceback (most recent call last):
    ...
    stream_monitor.errors.ConfigError: unknown input_format 'avro'; choose from ['json']
    """
    found = DESERIALIZERS.get(name)
    if found is None:
        raise ConfigError(f"unknown input_format {name!r}; choose from {sorted(DESERIALIZERS)}")
    return found


def decode_record(
    msg: MessageLike,
    *,
    kind: Literal["prediction", "label"],
    max_bytes: int,
    deserializer: Deserializer = JSON,
) -> Decoded:
    """Decode (with ``deserializer``, JSON by default) and validate one record of the
    predictions or labels topic."""
    value = msg.value()
    if not value:
        return _dead(msg, "empty", "record has no value (tombstone or empty payload)")
    if len(value) > max_bytes:
        return _dead(msg, "oversized", f"value is {len(value)} bytes, limit is {max_bytes}")
    try:
        obj = deserializer.loads(value)
    except DeserializeError as exc:
        return _dead(msg, "decode_error", str(exc))
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
# (tests/unit/test_decode.py compares both on generated valid and invalid payloads). It never
# changes ``obj``: pydantic validates the very same dict when the fast path declines.
#
# The checks are written out in one function per kind, without helper calls, because at this
# size every Python call counts: checking and building a 23-feature scored prediction costs
# about as much as orjson takes to parse it, half of what model_validate takes (measured by
# load_tests/bench_decode.py). RFC 3339 timestamps are converted by the schema's own
# _to_unix_seconds, the function pydantic calls. Every label field and both ScoredPrediction
# fields are required, so their fields_set is always all of them.

_SCALARS = frozenset({float, int, bool, str})
_FEATURE_VALUES = frozenset({float, int, bool, str, type(None)})
_STR = frozenset({str})
_PREDICTION_FIELDS = frozenset(PredictionEvent.model_fields)
_REQUIRED_PREDICTION_FIELDS = frozenset(
    name for name, field in PredictionEvent.model_fields.items() if field.is_required()
)
_REQUIRED_PREDICTION_FIELDS_AND_VERSION = _REQUIRED_PREDICTION_FIELDS | {"model_version"}
_LABEL_FIELDS = frozenset(LabelEvent.model_fields)
_SCORED_FIELDS = frozenset(ScoredPrediction.model_fields)
_new = object.__new__
# The setters of the slots every pydantic model has, called directly (a little cheaper than
# object.__setattr__, which looks the slot up first); model_construct sets the same four.
_set_dict = vars(BaseModel)["__dict__"].__set__
_set_fields_set = vars(BaseModel)["__pydantic_fields_set__"].__set__
_set_extra = vars(BaseModel)["__pydantic_extra__"].__set__
_set_private = vars(BaseModel)["__pydantic_private__"].__set__


#: Feature names already found no longer than MAX_NAME_LENGTH: a stream repeats the same few,
#: and a set lookup per name costs a third of measuring each (bounded: past the cap, names are
#: measured every time).
_CHECKED_NAMES: set[str] = set()
_CHECKED_NAMES_CAP = 65_536


def _names_ok(names: dict[str, Any]) -> bool:
    """Whether every name is at most MAX_NAME_LENGTH characters (remembered when so)."""
    if any(len(n) > MAX_NAME_LENGTH for n in names):
        return False
    if len(_CHECKED_NAMES) < _CHECKED_NAMES_CAP:
        _CHECKED_NAMES.update(names)
    return True


def _seconds(ts: Any) -> float | None:
    """The timestamp as schema._to_unix_seconds converts it (numbers inline, strings by it), or
    None where it would refuse it."""
    t = type(ts)
    if t is float:
        return ts if 0.0 <= ts < 1e11 else None
    if t is int:
        return float(ts) if 0 <= ts < 1e11 else None
    if t is str:
        try:
            return _to_unix_seconds(ts)
        except Exception:
            return None
    return None


def _fast_prediction(obj: dict[str, Any]) -> PredictionEvent | None:
    """The event pydantic would build from ``obj``, or None when not sure it would build one."""
    try:
        event_id = obj["event_id"]
        model_id = obj["model_id"]
        ts = obj["timestamp"]
        features = obj["features"]
        p = obj["prediction"]
    except KeyError:
        return None
    if (
        type(event_id) is not str
        or type(model_id) is not str
        or not 0 < len(event_id) <= MAX_ID_LENGTH
        or not 0 < len(model_id) <= MAX_ID_LENGTH
    ):
        return None
    ts = _seconds(ts)
    if ts is None:
        return None
    if (
        type(features) is not dict
        or len(features) > MAX_FEATURES_PER_EVENT
        or not _FEATURE_VALUES.issuperset(map(type, features.values()))
        or not (_CHECKED_NAMES.issuperset(features) or _names_ok(features))
    ):
        return None
    t = type(p)
    if t is dict:
        try:
            label = p["label"]
            score = p["score"]
        except KeyError:
            return None
        t = type(score)
        if type(label) not in _SCALARS or (t is not float and t is not int):
            return None
        if type(label) is str and len(label) > MAX_NAME_LENGTH:
            return None
        p = _new(ScoredPrediction)
        _set_dict(p, {"label": label, "score": score})
        _set_fields_set(p, set(_SCORED_FIELDS))
        _set_extra(p, None)
        _set_private(p, None)
    elif t not in _SCALARS or (t is str and len(p) > MAX_NAME_LENGTH):
        return None
    version = obj.get("model_version")
    if version is not None and (type(version) is not str or len(version) > MAX_NAME_LENGTH):
        return None
    segments = obj.get("segments")
    if segments is not None and (
        type(segments) is not dict
        or not _STR.issuperset(map(type, segments.values()))
        or (segments and max(map(len, [*segments, *segments.values()])) > MAX_NAME_LENGTH)
    ):
        return None
    ev = _new(PredictionEvent)
    # every field, in declaration order, as model_validate leaves them in __dict__
    _set_dict(
        ev,
        {
            "event_id": event_id,
            "model_id": model_id,
            "model_version": version,
            "timestamp": ts,
            "features": features,
            "prediction": p,
            "segments": segments,
        },
    )
    # the fields the payload names (model_validate's fields_set), cheaply for the usual layouts
    n = len(obj)
    if n == 5:
        _set_fields_set(ev, set(_REQUIRED_PREDICTION_FIELDS))
    elif n == 6 and "model_version" in obj:
        _set_fields_set(ev, set(_REQUIRED_PREDICTION_FIELDS_AND_VERSION))
    else:
        _set_fields_set(ev, obj.keys() & _PREDICTION_FIELDS)
    _set_extra(ev, None)
    _set_private(ev, None)
    return ev


def _fast_label(obj: dict[str, Any]) -> LabelEvent | None:
    """The event pydantic would build from ``obj``, or None when not sure it would build one."""
    try:
        event_id = obj["event_id"]
        model_id = obj["model_id"]
        ts = obj["timestamp"]
        label = obj["label"]
    except KeyError:
        return None
    if (
        type(event_id) is not str
        or type(model_id) is not str
        or not 0 < len(event_id) <= MAX_ID_LENGTH
        or not 0 < len(model_id) <= MAX_ID_LENGTH
        or type(label) not in _SCALARS
        or (type(label) is str and len(label) > MAX_NAME_LENGTH)
    ):
        return None
    ts = _seconds(ts)
    if ts is None:
        return None
    ev = _new(LabelEvent)
    _set_dict(ev, {"event_id": event_id, "model_id": model_id, "timestamp": ts, "label": label})
    _set_fields_set(ev, set(_LABEL_FIELDS))  # every field is required, so all were given
    _set_extra(ev, None)
    _set_private(ev, None)
    return ev


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)[:MAX_DETAIL_CHARS]


def processing_error(msg: MessageLike, exc: BaseException) -> DeadLetter:
    """The dead letter of a record whose processing raised ``exc``."""
    return _dead(msg, "processing_error", f"{type(exc).__name__}: {exc}")


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
