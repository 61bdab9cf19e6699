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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from stream_monitor.errors import ConfigError
from stream_monitor.events.feature_rows import row_type
from stream_monitor.events.live import (
    AnyLabel,
    AnyPrediction,
    Features,
    FeatureValue,
    Id,
    Int,
    Label,
    Name,
    Prediction,
    Scalar,
    Scored,
)
from stream_monitor.events.outputs import EventColumns, event_columns
from stream_monitor.events.schema import (
    MAX_FEATURES_PER_EVENT,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    LabelEvent,
    PredictionEvent,
    ScoredPrediction,
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
    "LayoutStats",
    "ModelBatches",
    "dead_letter_headers",
    "decode_by_model",
    "decode_labels",
    "decode_predictions",
    "decode_record",
    "decode_records",
    "deserializer_for",
    "layout_stats",
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
    predictions or labels topic (:func:`decode_records` of one record)."""
    if kind == "prediction":
        return _predictions((msg,), max_bytes, deserializer)[0]
    return _labels((msg,), max_bytes, deserializer)[0]


def decode_records(
    msgs: Iterable[MessageLike],
    *,
    kind: Literal["prediction", "label"],
    max_bytes: int,
    deserializer: Deserializer = JSON,
) -> list[Decoded]:
    """:func:`decode_record` of each of ``msgs`` (records of one topic), in their order.

    >>> from stream_monitor.kafka.records import RawRecord
    >>> out = decode_records(
    ...     [RawRecord(b'{"event_id":"1","model_id":"m","timestamp":1,"label":0}', key=b"m"),
    ...      RawRecord(b'{"event_id":"2","model_id":"m","timestamp":1,"label":0}', key=b"n"),
    ...      RawRecord(b"")], kind="label", max_bytes=1024)
    >>> [e.reason if isinstance(e, DeadLetter) else e.event_id for e in out]
    ['1', 'key_mismatch', 'empty']
    """
    if kind == "prediction":
        return _predictions(msgs, max_bytes, deserializer)
    return _labels(msgs, max_bytes, deserializer)


def decode_predictions(
    msgs: Iterable[MessageLike],
    *,
    max_bytes: int,
    deserializer: Deserializer = JSON,
) -> list[AnyPrediction | DeadLetter]:
    """Prediction records decoded as :func:`decode_by_model` decodes them (a
    :class:`~stream_monitor.events.live.Prediction` for each event msgspec takes, its
    features a FeatureRow where they have the usual names of their model), in their order,
    for a caller whose records may have no key (the replay: a file's lines have none). The
    records are decoded in groups of one key, or of one ``"model_id"`` field as written (a
    record whose field reads otherwise only misses its layout); the outcomes are those of
    :func:`decode_records`.

    >>> from stream_monitor.kafka.records import RawRecord
    >>> out = decode_predictions(
    ...     [RawRecord(b'{"event_id":"1","model_id":"m","timestamp":1,"features":{"x":2},'
    ...                b'"prediction":0.5}'), RawRecord(b"")], max_bytes=1024)
    >>> [type(e).__name__ for e in out], out[0].prediction_score(), out[0].features
    (['PredictionRow', 'DeadLetter'], 0.5, {'x': 2})
    """
    if type(deserializer) is not JsonDeserializer:
        return _light_predictions(msgs, max_bytes, deserializer)
    msgs = msgs if isinstance(msgs, list) else list(msgs)
    groups: dict[Any, list[int]] = {}
    find = bytes.find
    for i, m in enumerate(msgs):
        hint: Any = m.key()
        if hint is None:
            value = m.value()
            if type(value) is bytes and (at := find(value, b'"model_id"')) >= 0:
                hint = value[at : find(value, b",", at)]
        group = groups.get(hint)
        if group is None:
            groups[hint] = [i]
        else:
            group.append(i)
    if len(groups) == 1:
        return _light_predictions(msgs, max_bytes, deserializer, layouts=True)
    out: list[Any] = [None] * len(msgs)
    for members in groups.values():
        decoded = _light_predictions(
            [msgs[i] for i in members], max_bytes, deserializer, layouts=True
        )
        for i, ev in zip(members, decoded, strict=True):
            out[i] = ev
    return out


def decode_labels(
    msgs: Iterable[MessageLike],
    *,
    max_bytes: int,
    deserializer: Deserializer = JSON,
) -> list[AnyLabel | DeadLetter]:
    """Label records decoded for the monitor, in their order: a
    :class:`~stream_monitor.events.live.Label` for each event msgspec takes (the others
    the ``LabelEvent`` or dead letter of :func:`decode_records`).

    >>> from stream_monitor.kafka.records import RawRecord
    >>> decode_labels([RawRecord(b'{"event_id":"1","model_id":"m","timestamp":1,"label":0}',
    ...                          key=b"n")], max_bytes=1024)[0].reason
    'key_mismatch'
    """
    if type(deserializer) is not JsonDeserializer:
        return _checked_labels(msgs, max_bytes, deserializer)  # type: ignore[return-value]
    out: list[Any] = []  # the reference decode's type names predictions too
    append = out.append
    decode, errors, second_way = _decode_light_label, _MSGSPEC_ERRORS, _checked_labels
    seconds, replace, by_pydantic = _seconds, msgspec.structs.replace, _decode_by_pydantic
    last_key: bytes | None = None  # the last key read, and its model id (see _light_predictions)
    key_id: str | None = None
    for msg in msgs:
        value = msg.value()
        if not value or len(value) > max_bytes:
            append(by_pydantic(msg, "label", max_bytes, deserializer))
            continue
        try:
            s = decode(value)
        except errors:
            append(second_way((msg,), max_bytes, deserializer)[0])
            continue
        if (k := msg.key()) != last_key:
            last_key, key_id = k, None if k is None else k.decode("utf-8", "surrogateescape")
        if key_id is not None and s.model_id != key_id:
            append(by_pydantic(msg, "label", max_bytes, deserializer))  # key_mismatch
            continue
        ts: Any = s.timestamp
        if type(ts) is str:  # RFC 3339: to Unix seconds, or the reference decode refuses it
            ts = seconds(ts)
            if ts is None:
                append(by_pydantic(msg, "label", max_bytes, deserializer))
                continue
            s = replace(s, timestamp=ts)
        append(s)
    return out


class ModelBatches(NamedTuple):
    """One partition's prediction records decoded model by model (:func:`decode_by_model`)."""

    #: The events of each model, in consumption order; models in order of first appearance.
    by_model: dict[str, list[AnyPrediction]]
    #: The columns (:class:`~stream_monitor.events.outputs.EventColumns`) of each model's
    #: events.
    columns: dict[str, EventColumns]
    #: The records that could not be used, in consumption order.
    dead: list[DeadLetter]
    #: Each model's records, one per event of ``by_model`` (for a dead letter should
    #: processing an event fail).
    records: dict[str, list[MessageLike]]

    def events(self) -> list[AnyPrediction]:
        """Every model's events, model after model."""
        return [e for events in self.by_model.values() for e in events]


def decode_by_model(
    msgs: Sequence[MessageLike],
    *,
    max_bytes: int,
    deserializer: Deserializer = JSON,
) -> ModelBatches:
    """Decode one partition's prediction records (in consumption order) model by model.

    The monitor's decoder: the events msgspec takes are the
    :class:`~stream_monitor.events.live.Prediction`\\ s it decoded (the others are
    ``PredictionEvent``\\ s, as :func:`decode_records` gives them), with the same dead
    letters as :func:`decode_records`.

    Every record's key must be its event's model id (else it is a dead letter), so when
    every record has a key, the records of one key are those of one model: each key's
    records are decoded together, their features into a FeatureRow of the key's usual names
    (see ``_layout_decoder``). Models come in order of their first event, as grouping the
    decoded events by model would give them. Records without a key are decoded all together
    and grouped after.

    >>> from stream_monitor.kafka.records import RawRecord
    >>> def rec(i, m, key=None):
    ...     v = (f'{{"event_id":"{i}","model_id":"{m}","timestamp":{i},"features":{{"x":{i}}},'
    ...          f'"prediction":{{"label":1,"score":0.5}}}}').encode()
    ...     return RawRecord(v, key=m.encode() if key is None else key, offset=i)
    >>> got = decode_by_model([rec(0, "b"), rec(1, "a"), rec(2, "b", key=b"a"), rec(3, "b")],
    ...                       max_bytes=1024)
    >>> {m: [e.event_id for e in evs] for m, evs in got.by_model.items()}
    {'b': ['0', '3'], 'a': ['1']}
    >>> got.columns["b"] == event_columns(got.by_model["b"]), [d.reason for d in got.dead]
    (True, ['key_mismatch'])
    """
    groups: dict[bytes | None, list[MessageLike]] = {}
    for m in msgs:
        key = m.key()
        group = groups.get(key)
        if group is None:
            groups[key] = [m]
        else:
            group.append(m)
    if None in groups:  # which model a keyless record belongs to shows only once decoded
        return _grouped(msgs, _light_predictions(msgs, max_bytes, deserializer))
    by_model: dict[str, list[AnyPrediction]] = {}
    columns: dict[str, EventColumns] = {}
    records: dict[str, list[MessageLike]] = {}
    dead: list[tuple[MessageLike, DeadLetter]] = []
    for key, group in groups.items():
        decoded = _light_predictions(group, max_bytes, deserializer, layouts=True, key=key)
        events: list[AnyPrediction] = decoded  # type: ignore[assignment]
        used = group
        if DeadLetter in set(map(type, decoded)):
            events, used = [], []
            for m, ev in zip(group, decoded, strict=True):
                if type(ev) is DeadLetter:
                    dead.append((m, ev))
                else:
                    events.append(ev)  # type: ignore[arg-type]
                    used.append(m)
        if not events:
            continue
        model_id = events[0].model_id  # the key's, for every one of them
        by_model[model_id] = events
        records[model_id] = used
        columns[model_id] = event_columns(events)
    if dead and len(groups) > 1:
        # Back in consumption order: the dead letters, and the models, which come in order
        # of their first event (a key's first record may have been a dead letter).
        at = {id(m): i for i, m in enumerate(msgs)}
        dead.sort(key=lambda pair: at[id(pair[0])])
        order = sorted(by_model, key=lambda model_id: at[id(records[model_id][0])])
        by_model = {model_id: by_model[model_id] for model_id in order}
    return ModelBatches(by_model, columns, [d for _, d in dead], records)


def _grouped(
    msgs: Sequence[MessageLike], decoded: Sequence[AnyPrediction | DeadLetter]
) -> ModelBatches:
    """``decoded`` (of ``msgs``) as :class:`ModelBatches`, columns left to the caller."""
    by_model: dict[str, list[AnyPrediction]] = {}
    records: dict[str, list[MessageLike]] = {}
    dead: list[DeadLetter] = []
    for m, ev in zip(msgs, decoded, strict=True):
        if type(ev) is DeadLetter:
            dead.append(ev)
            continue
        model_id = ev.model_id  # type: ignore[union-attr]
        if model_id in by_model:
            by_model[model_id].append(ev)  # type: ignore[arg-type]
            records[model_id].append(m)
        else:
            by_model[model_id] = [ev]  # type: ignore[list-item]
            records[model_id] = [m]
    return ModelBatches(by_model, {}, dead, records)


def _decode_by_pydantic(
    msg: MessageLike, kind: Literal["prediction", "label"], max_bytes: int, fmt: Deserializer
) -> Decoded:
    """The reference decode of one record: limits, parsing, then pydantic's validation and the
    key check. Every dead letter comes from here, and the fast path must agree with it."""
    value = msg.value()
    if not value:
        return _dead(msg, "empty", "record has no value (tombstone or empty payload)")
    if len(value) > max_bytes:
        return _dead(msg, "oversized", f"value is {len(value)} bytes, limit is {max_bytes}")
    try:
        obj = fmt.loads(value)
    except DeserializeError as exc:
        return _dead(msg, "decode_error", str(exc))
    model = PredictionEvent if kind == "prediction" else LabelEvent
    try:
        event: PredictionEvent | LabelEvent = model.model_validate(obj)
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
# A JSON record is parsed and checked in one pass, in C, by a msgspec Decoder of a Struct that
# mirrors the pydantic model (_Prediction, _Label); what it cannot say (feature names' length,
# the timestamp's conversion and range, the key) is checked by hand, and the pydantic objects
# are built without a second validation. A record of another input format, or one msgspec
# refuses, takes the second way: its parsed fields are checked by hand (_checked_predictions,
# _checked_labels). Any record either way doubts is decoded again by _decode_by_pydantic, which
# gives the dead-letter reason. So the fast path may only accept what the models accept, and
# must build the objects they would (tests/unit/test_decode.py compares both on generated valid
# and invalid payloads, on Python objects of any type and on JSON edge cases). It never changes
# the decoded values.
#
# msgspec.convert could check the parsed fields of the second way too, but it costs more than
# the hand checks (1.3 us for the benchmark's prediction, and its result would need a type check
# of every value: it keeps a str subclass, which pydantic's strict str turns into a str).
#
# msgspec and orjson + pydantic were found to differ in two ways; such records are kept from
# msgspec:
#
# * unknown fields: pydantic ignores them (extra="ignore"), but msgspec skips an unknown field's
#   value without orjson's checks (a number out of the double range, invalid UTF-8 pass; deep
#   nesting raises RecursionError). So the Structs forbid unknown fields, and a record with one
#   (an extra field of the event or of a scored prediction) takes the second way, parsed by
#   orjson;
# * integers: orjson makes an integer beyond 64 bits a float, msgspec keeps it an int. Every int
#   the Structs take is bounded to int64 (Int: msgspec takes no wider bound), and a bigger one
#   (rare) takes the second way. A timestamp's int needs no bound: its range refuses them.
#
# Everything else agrees (tests/unit/test_decode.py pins each case): NaN and Infinity literals,
# numbers out of the double range, lone surrogate escapes, invalid UTF-8, a BOM, control
# characters and trailing bytes are refused by both; surrounding whitespace is allowed by both;
# a duplicate key keeps its last value in both; length bounds count code points in a string and
# distinct keys in a dict; an int stays an int where a float is allowed; a bool is no number.
#
# The checks are written out in one loop per kind, with every global bound to a local before
# it, and without helper calls on the usual path, because at this size every Python call
# counts (measured by load_tests/bench_decode.py). Timestamps are converted as by the schema's
# _to_unix_seconds, the function pydantic calls (_seconds).
#
# JSON values of features, in the second way: a record parsed by orjson holds only dicts,
# lists, strings, numbers, booleans and nulls, and each dict and list opens with a "{" or "["
# byte outside any string ("{" and "[" are never part of a multi-byte UTF-8 character). So when
# the value has no "[" byte and exactly as many "{" bytes as the dicts the checks already know
# of (the event, its features, a scored prediction, segments), no feature value is a dict or a
# list: every one is of a FeatureValue type. Two scans of the bytes in C cost less than a type
# lookup per feature; when the counts differ (a "{" inside a string, ignored extra fields), each
# value is checked.
#
# fields_set: model_validate gives each event a new set of the fields its payload names. The
# usual layouts share one set per layout instead (msgspec.UNSET, the default of the optional
# fields, tells a field left out from one given as null): pydantic never changes the set of a
# frozen model (model_copy changes its copy's, and assignment is refused before it is reached),
# and nothing here changes it either (tests/unit/test_decode.py checks copies, model_copy and
# pickling). Whoever reads an event's model_fields_set must not change it in place.
#
# The monitor's decoder (decode_by_model, _light_predictions) builds no pydantic object: an
# event msgspec takes is the Prediction struct it decoded (events/live.py), whose
# fields check what _predictions checks by hand but the names, the key and an RFC 3339
# timestamp's conversion.


class _Prediction(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """schema.PredictionEvent, for msgspec; the timestamp as given, names not measured."""

    event_id: Id
    model_id: Id
    timestamp: int | float | str
    features: Features
    prediction: Scalar | Scored
    model_version: Name | msgspec.UnsetType | None = msgspec.UNSET
    segments: dict[Name, Name] | msgspec.UnsetType | None = msgspec.UNSET


class _Label(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """schema.LabelEvent, for msgspec; the timestamp as given."""

    event_id: Id
    model_id: Id
    timestamp: int | float | str
    label: Scalar


_decode_prediction = msgspec.json.Decoder(_Prediction).decode
_decode_light = msgspec.json.Decoder(Prediction).decode
_decode_light_label = msgspec.json.Decoder(Label).decode
_decode_label = msgspec.json.Decoder(_Label).decode


# Feature layouts (events/feature_rows.py): the names of a key's first accepted event, whose
# later events decode their features into a FeatureRow of those names, every other field as
# by Prediction (a subclass that only retypes ``features``). An event whose features do not
# fit (a name missing or unknown) fails that decode and takes the usual one, so the layout
# only changes what ``features`` is (a FeatureRow instead of the equal dict), never what is
# accepted: a row has a value for each of its names, of the dict's value types, and its names
# were measured when the layout was made (one that fails _names_ok makes none). The names that
# hold a number in the first event are typed as numbers or null (FeatureRow.NUMERIC), so the
# monitor reads those columns without a type check per value; an event with another type
# there misfits like one of other names, and a layout learnt again after misfits is untyped.

#: The decoders of the known layouts by their names and numeric names (None: names msgspec
#: refuses).
_LAYOUTS: dict[tuple[tuple[str, ...], frozenset[str]], Any] = {}
#: A numeric feature's value in a layout: FeatureValue's numbers and null (no bool, no str).
_NumberOrNull = Int | float | None
#: How many names _LAYOUTS may hold in all, made or refused: a struct and its decoder take
#: about 0.45 KB per name (a layout may have MAX_FEATURES_PER_EVENT names), so at most about
#: 30 MB. Past it, no layout is made and events of new layouts keep their dicts.
LAYOUT_NAMES_CAP = 65_536
_layout_names = [0]  # how many names _LAYOUTS holds
#: A key's batch gives up its layout after this many events that did not fit it, when they
#: are also more than an eighth of its events so far (each costs a second parse); it learns
#: the next event's layout once, and gives up for good the second time.
_LAYOUT_MISSES = 8
#: Keys' batches that went without a layout (their events then decode into dicts: the parse
#: takes about 1.5 times as long, and the monitor some 15 % more CPU per scenario-A record,
#: load_tests/RESULTS.md), by why: ``names_cap`` (past LAYOUT_NAMES_CAP no layout is made)
#: and ``misfits`` (given up for the rest of the batch, see _LAYOUT_MISSES).
_layout_misses = {"names_cap": 0, "misfits": 0}


class LayoutStats(NamedTuple):
    """The decoder's feature layouts, process-wide (see :func:`layout_stats`)."""

    #: Layouts made (their decoders are held for good).
    layouts: int
    #: Names the layouts hold, made or refused, and the cap past which no layout is made.
    names: int
    names_cap: int
    #: Keys' batches that went without a layout, by why (``names_cap``, ``misfits``).
    misses: dict[str, int]


def layout_stats() -> LayoutStats:
    """What the monitor's decoder learnt of feature layouts, for its metrics: a key whose
    batches go without its layout costs more CPU per event (see ``_layout_misses``).

    >>> stats = layout_stats()
    >>> stats.names <= stats.names_cap, sorted(stats.misses)
    (True, ['misfits', 'names_cap'])
    """
    made = sum(found is not None for found in list(_LAYOUTS.values()))
    return LayoutStats(made, _layout_names[0], LAYOUT_NAMES_CAP, dict(_layout_misses))


def _layout_decoder(names: tuple[str, ...], numeric: frozenset[str] = frozenset()) -> Any:
    """The decode function of predictions whose features have exactly ``names`` (already
    measured: at most MAX_FEATURES_PER_EVENT, each at most MAX_NAME_LENGTH), those of
    ``numeric`` numbers or nulls, or None (also for names msgspec cannot take as a struct's:
    a '"', a backslash or a control character in one, remembered as None)."""
    key = (names, numeric)
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    if not names:
        return None
    if _layout_names[0] + len(names) > LAYOUT_NAMES_CAP:
        _layout_misses["names_cap"] += 1
        return None
    try:
        row = row_type(names, FeatureValue, numeric, _NumberOrNull)
    except Exception:  # names msgspec refuses (a ValueError today): no layout, never an error
        found = None
    else:
        struct = msgspec.defstruct("PredictionRow", [("features", row)], bases=(Prediction,))
        found = msgspec.json.Decoder(struct).decode
    _LAYOUTS[key] = found
    _layout_names[0] += len(names)
    return found


#: What msgspec raises on data (a ValidationError is a DecodeError). RecursionError was only
#: seen on unknown fields, which the Structs refuse first; caught all the same.
_MSGSPEC_ERRORS = (msgspec.DecodeError, RecursionError)

_SCALARS = frozenset({float, int, bool, str})
_FEATURE_VALUES = frozenset({float, int, bool, str, type(None)})
_STR = frozenset({str})
_PREDICTION_FIELDS = frozenset(PredictionEvent.model_fields)
#: The shared fields_set of the usual layouts (see above): never change them.
_SET_REQUIRED = {
    name for name, field in PredictionEvent.model_fields.items() if field.is_required()
}
_SET_VERSION = _SET_REQUIRED | {"model_version"}
_SET_SEGMENTS = _SET_REQUIRED | {"segments"}
_SET_VERSION_SEGMENTS = _SET_REQUIRED | {"model_version", "segments"}
_SET_LABEL = set(LabelEvent.model_fields)  # every label field is required: all were given
_SET_SCORED = set(ScoredPrediction.model_fields)  # both are required
_new = object.__new__
_fromisoformat = datetime.fromisoformat
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
    """The timestamp as schema._to_unix_seconds converts it, or None where it would refuse it.

    Its steps written out for strings, without its second call (tests/unit/test_decode.py
    compares both on valid and invalid timestamps).
    """
    t = type(ts)
    if t is float:
        return ts if 0.0 <= ts < 1e11 else None
    if t is int:
        return float(ts) if 0 <= ts < 1e11 else None
    if t is str:
        s = ts.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = _fromisoformat(s)
            if dt.tzinfo is None:
                return None
            v = dt.timestamp()
        except Exception:  # whatever it raises, _to_unix_seconds raises too
            return None
        return v if 0.0 <= v < 1e11 else None
    return None


def _predictions(
    msgs: Iterable[MessageLike],
    max_bytes: int,
    fmt: Deserializer,
) -> list[Decoded]:
    """The records decoded into pydantic events (or dead letters)."""
    if type(fmt) is not JsonDeserializer:
        return _checked_predictions(msgs, max_bytes, fmt)
    out: list[Decoded] = []
    append = out.append
    decode, errors, second_way = _decode_prediction, _MSGSPEC_ERRORS, _checked_predictions
    checked_names, names_ok, seconds = _CHECKED_NAMES, _names_ok, _seconds
    unset, scored_struct = msgspec.UNSET, Scored
    set_required, set_version, set_segments = _SET_REQUIRED, _SET_VERSION, _SET_SEGMENTS
    set_both, set_scored = _SET_VERSION_SEGMENTS, _SET_SCORED
    new, set_dict, set_fields_set = _new, _set_dict, _set_fields_set
    set_extra, set_private = _set_extra, _set_private
    event_cls, scored_cls = PredictionEvent, ScoredPrediction
    _float = float
    for msg in msgs:
        value = msg.value()
        if not value or len(value) > max_bytes:
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        try:
            s = decode(value)
        except errors:
            append(second_way((msg,), max_bytes, fmt)[0])
            continue
        features = s.features
        if not (checked_names.issuperset(features) or names_ok(features)):
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        ts: Any = s.timestamp
        if type(ts) is _float:
            if not 0.0 <= ts < 1e11:
                append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
        else:
            ts = seconds(ts)
            if ts is None:
                append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
        model_id = s.model_id
        key = msg.key()
        if key is not None and key != model_id.encode():
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))  # key_mismatch
            continue
        p: Any = s.prediction
        if type(p) is scored_struct:
            label, score = p.label, p.score
            p = new(scored_cls)
            set_dict(p, {"label": label, "score": score})
            set_fields_set(p, set_scored)
            set_extra(p, None)
            set_private(p, None)
        version = s.model_version
        segments = s.segments
        if version is unset:
            version = None
            if segments is unset:
                segments = None
                fields_set = set_required
            else:
                fields_set = set_segments
        elif segments is unset:
            segments = None
            fields_set = set_version
        else:
            fields_set = set_both
        ev = new(event_cls)
        # every field, in declaration order, as model_validate leaves them in __dict__
        set_dict(
            ev,
            {
                "event_id": s.event_id,
                "model_id": model_id,
                "model_version": version,
                "timestamp": ts,
                "features": features,
                "prediction": p,
                "segments": segments,
            },
        )
        set_fields_set(ev, fields_set)
        set_extra(ev, None)
        set_private(ev, None)
        append(ev)
    return out


def _light_predictions(
    msgs: Iterable[MessageLike],
    max_bytes: int,
    fmt: Deserializer,
    *,
    layouts: bool = False,
    key: bytes | None = None,
) -> list[AnyPrediction | DeadLetter]:
    """:func:`_predictions` for the monitor: each event msgspec takes, once checked, is the
    :class:`~stream_monitor.events.live.Prediction` it decoded (the others the same
    ``PredictionEvent`` or dead letter). The same layouts, misfits and checks; a struct's
    field does what a check of :func:`_predictions` does by hand (the timestamp's range, None
    for an optional field left out), except for the feature names' length (the layout's were
    measured when it was made), an RFC 3339 timestamp's conversion and the key.

    ``key``: the key of every record, when the caller grouped them by it (else each
    record's is read)."""
    if type(fmt) is not JsonDeserializer:
        return _checked_predictions(msgs, max_bytes, fmt)  # type: ignore[return-value]
    out: list[Any] = []  # the reference decode's type names labels too
    # This key's layout decoder, once learnt; whether one may still be learnt (typed); misfits.
    layout: Any = None
    learn = relearn = typed = layouts
    misses = 0
    append = out.append
    decode, errors, second_way = _decode_light, _MSGSPEC_ERRORS, _checked_predictions
    checked_names, names_ok, seconds = _CHECKED_NAMES, _names_ok, _seconds
    layout_decoder, by_pydantic = _layout_decoder, _decode_by_pydantic
    replace = msgspec.structs.replace
    # the last key read, and its model id (None: no key, nothing to check; a key that is no
    # UTF-8 text decodes to lone surrogates, which no model id decoded from JSON has: a
    # mismatch, as it should be)
    last_key: bytes | None = key
    key_id = None if key is None else key.decode("utf-8", "surrogateescape")
    read_keys = key is None
    for msg in msgs:
        value = msg.value()
        if not value or len(value) > max_bytes:
            append(by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        s: Any = None
        if layout is not None:
            try:
                s = layout(value)
            except errors:  # not of the layout, or not valid: the usual decode says which
                misses += 1
                if misses > _LAYOUT_MISSES and 8 * misses > len(out):
                    # the first event's names were not the usual ones: learn the next
                    # event's, once, or give up for this batch
                    if not relearn:
                        _layout_misses["misfits"] += 1
                    layout, learn, relearn, misses = None, relearn, False, 0
        if s is None:
            try:
                s = decode(value)
            except errors:
                append(second_way((msg,), max_bytes, fmt)[0])
                continue
            names = s.features
            if not (checked_names.issuperset(names) or names_ok(names)):
                append(by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
            if learn:  # this key's first event with valid names: its layout
                learn = False
                # The names that hold a number here are typed as numbers (the monitor then
                # reads them without a type check per value), the first time; a layout
                # learnt again, after misfits, is not.
                numeric = frozenset(
                    [n for n, v in names.items() if type(v) is float or type(v) is int]
                    if typed
                    else ()
                )
                typed = False
                layout = layout_decoder(tuple(names), numeric)
                if layout is not None:  # this event too, so that every row is of it
                    try:
                        s = layout(value)
                    except errors:  # not seen: the dict's names make the struct's fields
                        layout = None
        if read_keys and (k := msg.key()) != last_key:
            last_key, key_id = k, None if k is None else k.decode("utf-8", "surrogateescape")
        if key_id is not None and s.model_id != key_id:
            append(by_pydantic(msg, "prediction", max_bytes, fmt))  # key_mismatch
            continue
        ts = s.timestamp
        if type(ts) is str:  # RFC 3339: to Unix seconds, or the reference decode refuses it
            ts = seconds(ts)
            if ts is None:
                append(by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
            s = replace(s, timestamp=ts)
        append(s)
    return out


def _labels(msgs: Iterable[MessageLike], max_bytes: int, fmt: Deserializer) -> list[Decoded]:
    if type(fmt) is not JsonDeserializer:
        return _checked_labels(msgs, max_bytes, fmt)
    out: list[Decoded] = []
    append = out.append
    decode, errors, second_way, seconds = _decode_label, _MSGSPEC_ERRORS, _checked_labels, _seconds
    new, set_dict, set_fields_set = _new, _set_dict, _set_fields_set
    set_extra, set_private, set_label, event_cls = _set_extra, _set_private, _SET_LABEL, LabelEvent
    _float = float
    for msg in msgs:
        value = msg.value()
        if not value or len(value) > max_bytes:
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
            continue
        try:
            s = decode(value)
        except errors:
            append(second_way((msg,), max_bytes, fmt)[0])
            continue
        ts: Any = s.timestamp
        if type(ts) is _float:
            if not 0.0 <= ts < 1e11:
                append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
                continue
        else:
            ts = seconds(ts)
            if ts is None:
                append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
                continue
        model_id = s.model_id
        key = msg.key()
        if key is not None and key != model_id.encode():
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))  # key_mismatch
            continue
        ev = new(event_cls)
        set_dict(
            ev, {"event_id": s.event_id, "model_id": model_id, "timestamp": ts, "label": s.label}
        )
        set_fields_set(ev, set_label)
        set_extra(ev, None)
        set_private(ev, None)
        append(ev)
    return out


# The second way: the fields of a record parsed by ``fmt`` (any input format), checked by hand.


def _checked_predictions(
    msgs: Iterable[MessageLike], max_bytes: int, fmt: Deserializer
) -> list[Decoded]:
    out: list[Decoded] = []
    append = out.append
    json = type(fmt) is JsonDeserializer  # parsed by orjson: only JSON types (see above)
    loads = orjson.loads if json else fmt.loads
    parse_error = orjson.JSONDecodeError if json else DeserializeError
    max_id, max_name, max_features = MAX_ID_LENGTH, MAX_NAME_LENGTH, MAX_FEATURES_PER_EVENT
    scalars, feature_values, strs = _SCALARS, _FEATURE_VALUES, _STR
    checked_names, names_ok, seconds = _CHECKED_NAMES, _names_ok, _seconds
    fields, set_required, set_version = _PREDICTION_FIELDS, _SET_REQUIRED, _SET_VERSION
    set_scored = _SET_SCORED
    new, set_dict, set_fields_set = _new, _set_dict, _set_fields_set
    set_extra, set_private = _set_extra, _set_private
    event_cls, scored_cls = PredictionEvent, ScoredPrediction
    _dict, _str, _float, _int, _bytes = dict, str, float, int, bytes
    for msg in msgs:
        value = msg.value()
        if not value or len(value) > max_bytes:
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        try:
            obj = loads(value)
        except parse_error:
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        if type(obj) is not _dict:
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        try:
            event_id = obj["event_id"]
            model_id = obj["model_id"]
            ts = obj["timestamp"]
            features = obj["features"]
            p = obj["prediction"]
        except KeyError:
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        if (
            type(event_id) is not _str
            or type(model_id) is not _str
            or not 0 < len(event_id) <= max_id
            or not 0 < len(model_id) <= max_id
            or type(features) is not _dict
            or len(features) > max_features
            or not (json or strs.issuperset(map(type, features)))  # JSON names are strings
            or not (checked_names.issuperset(features) or names_ok(features))
        ):
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        if type(ts) is _float:
            if not 0.0 <= ts < 1e11:
                append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
        else:
            ts = seconds(ts)
            if ts is None:
                append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
        dicts = 2  # the event and its features
        t = type(p)
        if t is _dict:
            try:
                label = p["label"]
                score = p["score"]
            except KeyError:
                append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
            t = type(score)
            if (
                type(label) not in scalars
                or (t is not _float and t is not _int)
                or (type(label) is _str and len(label) > max_name)
            ):
                append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
            p = new(scored_cls)
            set_dict(p, {"label": label, "score": score})
            set_fields_set(p, set_scored)
            set_extra(p, None)
            set_private(p, None)
            dicts = 3
        elif t not in scalars or (t is _str and len(p) > max_name):
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        n = len(obj)
        if n == 5:  # the five required fields, nothing else
            version = segments = None
            fields_set = set_required
        else:
            version = obj.get("model_version")
            if version is not None and (type(version) is not _str or len(version) > max_name):
                append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                continue
            if n == 6 and (version is not None or "model_version" in obj):
                segments = None  # the five required fields and model_version
                fields_set = set_version
            else:
                segments = obj.get("segments")
                if segments is not None:
                    if (
                        type(segments) is not _dict
                        or not strs.issuperset(map(type, segments))
                        or not strs.issuperset(map(type, segments.values()))
                        or (segments and max(map(len, [*segments, *segments.values()])) > max_name)
                    ):
                        append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
                        continue
                    dicts += 1
                fields_set = obj.keys() & fields  # a new set, as model_validate's
        if not (
            json and type(value) is _bytes and value.count(b"{") == dicts and value.find(b"[") < 0
        ) and not feature_values.issuperset(map(type, features.values())):
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))
            continue
        key = msg.key()
        if key is not None and key != model_id.encode():
            append(_decode_by_pydantic(msg, "prediction", max_bytes, fmt))  # key_mismatch
            continue
        ev = new(event_cls)
        # every field, in declaration order, as model_validate leaves them in __dict__
        set_dict(
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
        set_fields_set(ev, fields_set)
        set_extra(ev, None)
        set_private(ev, None)
        append(ev)
    return out


def _checked_labels(
    msgs: Iterable[MessageLike], max_bytes: int, fmt: Deserializer
) -> list[Decoded]:
    out: list[Decoded] = []
    append = out.append
    json = type(fmt) is JsonDeserializer
    loads = orjson.loads if json else fmt.loads
    parse_error = orjson.JSONDecodeError if json else DeserializeError
    max_id, max_name, scalars, seconds = MAX_ID_LENGTH, MAX_NAME_LENGTH, _SCALARS, _seconds
    new, set_dict, set_fields_set = _new, _set_dict, _set_fields_set
    set_extra, set_private, set_label, event_cls = _set_extra, _set_private, _SET_LABEL, LabelEvent
    _dict, _str, _float = dict, str, float
    for msg in msgs:
        value = msg.value()
        if not value or len(value) > max_bytes:
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
            continue
        try:
            obj = loads(value)
        except parse_error:
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
            continue
        if type(obj) is not _dict:
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
            continue
        try:
            event_id = obj["event_id"]
            model_id = obj["model_id"]
            ts = obj["timestamp"]
            label = obj["label"]
        except KeyError:
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
            continue
        if (
            type(event_id) is not _str
            or type(model_id) is not _str
            or not 0 < len(event_id) <= max_id
            or not 0 < len(model_id) <= max_id
            or type(label) not in scalars
            or (type(label) is _str and len(label) > max_name)
        ):
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
            continue
        if type(ts) is _float:
            if not 0.0 <= ts < 1e11:
                append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
                continue
        else:
            ts = seconds(ts)
            if ts is None:
                append(_decode_by_pydantic(msg, "label", max_bytes, fmt))
                continue
        key = msg.key()
        if key is not None and key != model_id.encode():
            append(_decode_by_pydantic(msg, "label", max_bytes, fmt))  # key_mismatch
            continue
        ev = new(event_cls)
        set_dict(ev, {"event_id": event_id, "model_id": model_id, "timestamp": ts, "label": label})
        set_fields_set(ev, set_label)
        set_extra(ev, None)
        set_private(ev, None)
        append(ev)
    return out


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
