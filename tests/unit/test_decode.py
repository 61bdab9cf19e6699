"""decode_record: valid events, and every dead-letter reason, on a tiny fake Kafka message."""

from __future__ import annotations

import calendar
import copy
import pickle
import random
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pytest
from pydantic import ValidationError

import stream_monitor.events.decode as decode_module
from stream_monitor.events.decode import (
    JSON,
    DeadLetter,
    dead_letter_headers,
    decode_record,
    decode_records,
)
from stream_monitor.events.schema import (
    MAX_NAME_LENGTH,
    LabelEvent,
    PredictionEvent,
    ScoredPrediction,
    _to_unix_seconds,
)
from stream_monitor.kafka.records import RawRecord
from stream_monitor.simulate import bad_records

MAX_BYTES = 1_048_576
_DROP = object()  # marks a field left out of the payload


def FakeMsg(
    value: bytes | None,
    *,
    key: bytes | None = b"m",
    topic: str = "predictions",
    partition: int = 3,
    offset: int = 42,
    headers: list[tuple[str, bytes | None]] | None = None,
    timestamp: tuple[int, int] = (1, 1_700_000_000_123),
) -> RawRecord:
    return RawRecord(
        value,
        key=key,
        topic=topic,
        partition=partition,
        offset=offset,
        headers=headers,
        timestamp=timestamp,
    )


def _prediction(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "model_id": "m",
        "model_version": "1.0.0",
        "timestamp": 1_700_000_000.5,
        "features": {"age": 41, "income": 1234.5, "country": "fr", "vip": True, "x": None},
        "prediction": {"label": 1, "score": 0.93},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


def _label(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "model_id": "m",
        "timestamp": 1_700_000_010,
        "label": 1,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


def _decode_pred(obj: Any, **kw: Any) -> Any:
    return decode_record(FakeMsg(orjson.dumps(obj), **kw), kind="prediction", max_bytes=MAX_BYTES)


def _decode_label(obj: Any, **kw: Any) -> Any:
    return decode_record(
        FakeMsg(orjson.dumps(obj), topic="labels", **kw), kind="label", max_bytes=MAX_BYTES
    )


# ------------------------------------------------------------------------------- valid events


def test_valid_scored_prediction_unix_seconds() -> None:
    ev = _decode_pred(_prediction())
    assert isinstance(ev, PredictionEvent)
    assert ev.event_id == "e-1" and ev.model_id == "m" and ev.model_version == "1.0.0"
    assert ev.timestamp == 1_700_000_000.5
    assert ev.features == {"age": 41, "income": 1234.5, "country": "fr", "vip": True, "x": None}
    # strict types survive: the int stays an int, the bool stays a bool
    assert type(ev.features["age"]) is int and type(ev.features["vip"]) is bool
    assert isinstance(ev.prediction, ScoredPrediction)
    assert ev.prediction_score() == 0.93
    assert ev.prediction_label() == "1"


def test_valid_prediction_integer_unix_seconds() -> None:
    ev = _decode_pred(_prediction(timestamp=0))
    assert isinstance(ev, PredictionEvent)
    assert ev.timestamp == 0.0 and type(ev.timestamp) is float


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T00:00:00Z", calendar.timegm((2026, 11, 22, 0, 0, 0))),
        ("2026-11-22T00:00:00z", calendar.timegm((2026, 11, 22, 0, 0, 0))),
        ("2026-11-22T00:00:00+00:00", calendar.timegm((2026, 11, 22, 0, 0, 0))),
        # 02:30 at UTC+02:00 is 00:30 UTC
        ("2026-11-22T02:30:00+02:00", calendar.timegm((2026, 11, 22, 0, 30, 0))),
        ("2023-11-14T22:13:20.250Z", 1_700_000_000.25),
        ("2023-11-14T17:13:20-05:00", 1_700_000_000.0),
    ],
)
def test_valid_prediction_rfc3339_timestamps(text: str, expected: float) -> None:
    ev = _decode_pred(_prediction(timestamp=text))
    assert isinstance(ev, PredictionEvent)
    assert ev.timestamp == pytest.approx(expected, abs=1e-6)


def test_string_prediction_is_a_label_without_score() -> None:
    ev = _decode_pred(_prediction(prediction="churn"))
    assert isinstance(ev, PredictionEvent)
    assert ev.prediction == "churn"
    assert ev.prediction_label() == "churn"
    assert ev.prediction_score() is None


@pytest.mark.parametrize(("value", "score"), [(12.75, 12.75), (3, 3.0), (-0.5, -0.5)])
def test_numeric_prediction_is_a_score_without_label(value: float, score: float) -> None:
    ev = _decode_pred(_prediction(prediction=value))
    assert isinstance(ev, PredictionEvent)
    assert ev.prediction_score() == score
    assert ev.prediction_label() is None


def test_bool_prediction_and_float_class_label() -> None:
    ev = _decode_pred(_prediction(prediction=True))
    assert isinstance(ev, PredictionEvent)
    assert (ev.prediction_label(), ev.prediction_score()) == ("true", None)
    ev2 = _decode_pred(_prediction(prediction={"label": 1.0, "score": 1}))
    assert isinstance(ev2, PredictionEvent)
    assert (ev2.prediction_label(), ev2.prediction_score()) == ("1", 1.0)


def test_valid_label_event() -> None:
    ev = _decode_label(_label(timestamp="2023-11-14T22:13:30Z", label="stay"))
    assert isinstance(ev, LabelEvent)
    assert (ev.event_id, ev.model_id, ev.label) == ("e-1", "m", "stay")
    assert ev.timestamp == 1_700_000_010.0


def test_keyless_record_is_accepted() -> None:
    assert isinstance(_decode_pred(_prediction(), key=None), PredictionEvent)


def test_extra_fields_are_ignored() -> None:
    ev = _decode_pred({**_prediction(), "unknown_field": [1, 2, 3]})
    assert isinstance(ev, PredictionEvent)


# ------------------------------------------------------------------------------- dead letters


def _reason(obj_or_bytes: Any, kind: str = "prediction", **kw: Any) -> str:
    value = obj_or_bytes if isinstance(obj_or_bytes, bytes) else orjson.dumps(obj_or_bytes)
    out = decode_record(FakeMsg(value, **kw), kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
    assert isinstance(out, DeadLetter), out
    return out.reason


@pytest.mark.parametrize("value", [b"", None])
def test_empty_value(value: bytes | None) -> None:
    out = decode_record(FakeMsg(value), kind="prediction", max_bytes=MAX_BYTES)
    assert isinstance(out, DeadLetter)
    assert out.reason == "empty"
    assert out.value == value


def test_oversized_is_judged_before_parsing() -> None:
    good = orjson.dumps(_prediction())
    # exactly at the limit: accepted; one byte more: oversized, even though it is valid JSON
    assert isinstance(
        decode_record(FakeMsg(good), kind="prediction", max_bytes=len(good)), PredictionEvent
    )
    out = decode_record(FakeMsg(good), kind="prediction", max_bytes=len(good) - 1)
    assert isinstance(out, DeadLetter) and out.reason == "oversized"
    assert str(len(good)) in out.detail
    # also before parsing: an oversized non-JSON blob is "oversized", not "decode_error"
    assert _reason(b"\xff" * (MAX_BYTES + 1)) == "oversized"


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        b'{"event_id": "e-1", "model_id": ',  # truncated
        b"\xff\xfe\x00\x81",  # not UTF-8
        orjson.dumps(_prediction(event_id="e-\x00")).replace(b"e-\\u0000", b"e-\xc3\x28"),
        b"[1, 2, 3]",  # JSON, but a list
        b'"a string"',
        b"42",
        b"null",
    ],
    ids=[
        "garbage",
        "truncated",
        "binary",
        "bad-utf8-in-string",
        "list",
        "string",
        "number",
        "null",
    ],
)
def test_decode_error(value: bytes) -> None:
    assert _reason(value) == "decode_error"


def test_decode_error_on_labels_topic_too() -> None:
    assert _reason(b"[]", kind="label", topic="labels") == "decode_error"


_INVALID_PREDICTIONS: dict[str, dict[str, Any]] = {
    "no-event_id": _prediction(event_id=_DROP),
    "no-model_id": _prediction(model_id=_DROP),
    "no-timestamp": _prediction(timestamp=_DROP),
    "no-features": _prediction(features=_DROP),
    "no-prediction": _prediction(prediction=_DROP),
    "empty-event_id": _prediction(event_id=""),  # min_length 1
    "long-event_id": _prediction(event_id="x" * 257),  # max_length 256
    "int-model_id": _prediction(model_id=42),
    "features-as-string": _prediction(features="age=41"),
    "features-as-list": _prediction(features=["age", 41]),
    "feature-list-value": _prediction(features={"age": [41]}),
    "feature-object-value": _prediction(features={"age": {"v": 41}}),
    "null-prediction": _prediction(prediction=None),
    "scored-without-score": _prediction(prediction={"label": 1}),
    "score-as-string": _prediction(prediction={"label": 1, "score": "0.9"}),
    "int-segment": _prediction(segments={"region": 1}),
    "timestamp-yesterday": _prediction(timestamp="yesterday"),
    "timestamp-no-offset": _prediction(timestamp="2026-11-22T00:00:00"),
    "timestamp-millis": _prediction(timestamp=1_700_000_000_000),
    "timestamp-millis-float": _prediction(timestamp=1.7e12),
    "timestamp-negative": _prediction(timestamp=-1),
    "timestamp-true": _prediction(timestamp=True),
    "timestamp-false": _prediction(timestamp=False),
    "timestamp-null": _prediction(timestamp=None),
    "timestamp-list": _prediction(timestamp=[1_700_000_000]),
}


@pytest.mark.parametrize(
    "obj", _INVALID_PREDICTIONS.values(), ids=list(_INVALID_PREDICTIONS.keys())
)
def test_prediction_validation_error(obj: dict[str, Any]) -> None:
    assert _reason(obj) == "validation_error"


def test_validation_error_detail_names_the_field() -> None:
    out = _decode_pred(_prediction(timestamp="yesterday"))
    assert isinstance(out, DeadLetter)
    assert out.detail.startswith("timestamp:")
    assert "yesterday" in out.detail
    out2 = _decode_pred(_prediction(features="age=41"))
    assert isinstance(out2, DeadLetter)
    assert out2.detail.startswith("features:")


def test_validation_error_detail_is_bounded() -> None:
    # feature names of 2000 characters with bad values: each error location alone is longer
    # than the 1000-character bound on the detail
    long_names = {("k" * 2000) + str(i): [i] for i in range(3)}
    out = _decode_pred(_prediction(features=long_names))
    assert isinstance(out, DeadLetter) and out.reason == "validation_error"
    assert out.detail.startswith("features.kkkk")
    assert len(out.detail) == 1000
    assert len(dict(dead_letter_headers(out))["x-dead-letter-detail"]) == 1000


@pytest.mark.parametrize(
    "obj",
    [
        _label(label=_DROP),
        _label(label=None),
        _label(label=[1]),
        _label(event_id=_DROP),
        _label(timestamp="yesterday"),
        _label(timestamp=1_700_000_010_000),
        _label(timestamp=True),
    ],
)
def test_label_validation_error(obj: dict[str, Any]) -> None:
    assert _reason(obj, kind="label", topic="labels") == "validation_error"


def test_key_mismatch() -> None:
    assert _reason(_prediction(model_id="m"), key=b"other-model") == "key_mismatch"
    assert _reason(_label(model_id="m"), kind="label", key=b"M") == "key_mismatch"
    # the key is compared with the UTF-8 bytes of model_id
    ok = _decode_pred(_prediction(model_id="modèle"), key="modèle".encode())
    assert isinstance(ok, PredictionEvent)
    assert _reason(_prediction(model_id="modèle"), key="modèle".encode("latin-1")) == (
        "key_mismatch"
    )


def test_validation_is_judged_before_key() -> None:
    # an invalid event with the wrong key is a validation error (there is no model_id to match)
    assert _reason(_prediction(model_id=_DROP), key=b"other") == "validation_error"


# ---------------------------------------------------------- dead letters keep the original


def test_dead_letter_keeps_original_bytes_and_source() -> None:
    value = b"\x00\xffnot json\x81"
    key = b"\xfe\x01key"
    headers = [("trace-id", b"\x00\x01\x02"), ("empty", None), ("dup", b"1"), ("dup", b"2")]
    out = decode_record(
        FakeMsg(
            value,
            key=key,
            topic="predictions",
            partition=7,
            offset=123_456,
            headers=headers,
            timestamp=(1, 1_700_000_000_999),
        ),
        kind="prediction",
        max_bytes=MAX_BYTES,
    )
    assert isinstance(out, DeadLetter)
    assert out.reason == "decode_error"
    assert out.key == key and out.value == value
    assert out.headers == tuple(headers)
    assert (out.topic, out.partition, out.offset, out.timestamp_ms) == (
        "predictions",
        7,
        123_456,
        1_700_000_000_999,
    )

    hdrs = dead_letter_headers(out)
    assert hdrs[:6] == [
        ("x-dead-letter-reason", b"decode_error"),
        ("x-dead-letter-detail", out.detail.encode()),
        ("x-source-topic", b"predictions"),
        ("x-source-partition", b"7"),
        ("x-source-offset", b"123456"),
        ("x-source-timestamp-ms", b"1700000000999"),
    ]
    # the original headers follow, in order, duplicates kept, None as empty bytes
    assert hdrs[6:] == [("trace-id", b"\x00\x01\x02"), ("empty", b""), ("dup", b"1"), ("dup", b"2")]
    assert all(isinstance(v, bytes) for _, v in hdrs)


def test_dead_letter_without_timestamp_or_headers() -> None:
    out = decode_record(
        FakeMsg(b"", headers=None, timestamp=(0, 0)), kind="prediction", max_bytes=MAX_BYTES
    )
    assert isinstance(out, DeadLetter)
    assert out.timestamp_ms == -1 and out.headers == ()
    assert dict(dead_letter_headers(out))["x-source-timestamp-ms"] == b"-1"
    assert len(dead_letter_headers(out)) == 6


def test_key_mismatch_dead_letter_keeps_valid_value() -> None:
    value = orjson.dumps(_prediction())
    out = decode_record(FakeMsg(value, key=b"x"), kind="prediction", max_bytes=MAX_BYTES)
    assert isinstance(out, DeadLetter) and out.reason == "key_mismatch"
    assert out.value == value and out.key == b"x"
    assert dict(dead_letter_headers(out))["x-dead-letter-reason"] == b"key_mismatch"


# ----------------------------------------------------------------- simulate.bad_records


@pytest.mark.parametrize(("topic", "kind"), [("predictions", "prediction"), ("labels", "label")])
def test_bad_records_get_their_expected_reason(topic: str, kind: str) -> None:
    records = bad_records(topic, kind=kind)  # type: ignore[arg-type]
    assert len(records) >= 10
    got = []
    for i, (key, value, expected) in enumerate(records):
        out = decode_record(
            FakeMsg(value, key=key, topic=topic, offset=i),
            kind=kind,  # type: ignore[arg-type]
            max_bytes=MAX_BYTES,
        )
        assert isinstance(out, DeadLetter), (i, expected)
        assert out.value == value and out.key == key and out.offset == i
        got.append(out.reason)
    assert got == [reason for _, _, reason in records]
    assert set(got) == {"decode_error", "empty", "validation_error", "oversized"}


# -- the fast path decides exactly as pydantic ----------------------------------------------------
# decode_records checks the usual shapes by hand and builds the events without pydantic; any
# other record goes through model_validate. Generated payloads, valid and faulty (strings with
# brackets in them too), are decoded twice: as shipped, and by pydantic alone (as before the
# fast path existed). Both must give the same event (same field values and types, same fields
# set) or the same dead letter (reason and detail).

_GOOD_IDS: list[object] = ["m", "fraud-model", "x" * 256, "é" * 256, "\U0001d4b3" * 256, " "]
_BAD_IDS: list[object] = ["", "x" * 257, "é" * 257, 42, 1.5, True, None, ["m"], {"m": 1}]
_GOOD_TS: list[object] = [
    0, 0.0, -0.0, 1, 1_700_000_000, 99_999_999_999, 99_999_999_999.99, 12.5,
    "2026-11-22T00:00:00Z", "2026-11-22T02:30:00.123+02:00", " 2026-11-22T00:00:00z ",
    "1970-01-01T00:00:00+00:00", "0001-01-01T00:00:00+01:00", "2026-11-22 00:00:00-05:00",
]  # fmt: skip
_BAD_TS: list[object] = [
    -1, -0.001, 1e11, 100_000_000_000, 1.7e12, 1_700_000_000_000, 2**63, True, False, None,
    "", "yesterday", "2026-11-22T00:00:00", "2026-11-22", "1700000000", "2026-13-01T00:00:00Z",
    [1.7e9], {"s": 1},
]  # fmt: skip
_GOOD_SCALARS: list[object] = [
    0, 1, -7, 2**62, 0.0, -0.0, 0.5, 1e300, 3.0, True, False, "", "cat", "é", "1", "c" * 128,
    "{", "[x]", '{"a": [1]}',
]  # fmt: skip
_LONG_NAME = "c" * 129  # over MAX_NAME_LENGTH
_JUNK: list[object] = [
    None, [], [1], [None], {}, {"a": 1}, {"label": 1, "score": 0.5}, _LONG_NAME,
]  # fmt: skip


def _pick(rng: random.Random, good: list[object], bad: list[object], p_bad: float) -> object:
    return rng.choice(bad) if rng.random() < p_bad else rng.choice(good)


def _features(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.03:
        return rng.choice(["age=41", [["age", 41]], None, 1, True, ""])
    if r < 0.04:  # at and just over MAX_FEATURES_PER_EVENT
        return {f"f{i}": float(i) for i in range(rng.choice([2048, 2049]))}
    feats: dict[str, object] = {
        f"num_{i}": rng.choice([rng.gauss(0, 1), rng.randrange(-5, 100), 0.0])
        for i in range(rng.randrange(0, 24))
    }
    for name in rng.sample(["country", "device", "plan", "vip", "missing"], rng.randrange(0, 4)):
        feats[name] = rng.choice([*_GOOD_SCALARS, None])
    if rng.random() < 0.06:
        feats[rng.choice([*feats, "extra"])] = rng.choice(_JUNK[1:])
    if rng.random() < 0.05:  # names at and just over MAX_NAME_LENGTH
        feats["n" * rng.choice([128, 129])] = 1.0
    return feats


def _prediction_value(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.4:
        scored: dict[str, object] = {
            "label": rng.choice(_GOOD_SCALARS),
            "score": rng.choice([rng.random(), 0, 1, -2.5, 1e300]),
        }
        if rng.random() < 0.1:
            scored["why"] = rng.choice(_JUNK)
        return scored
    if r < 0.93:
        return rng.choice(_GOOD_SCALARS)
    return rng.choice(
        [
            *_JUNK,
            {"label": 1},
            {"score": 0.5},
            {"label": [1], "score": 1},
            {"label": None, "score": 1},
            {"label": 1, "score": True},
            {"label": 1, "score": "0.9"},
            {"label": 1, "score": None},
            {"label": {"a": 1}, "score": 0.2},
        ]
    )


def _random_payload(rng: random.Random, kind: str) -> dict[str, Any]:
    """A prediction or label with each field usually valid, sometimes faulty or missing."""
    obj: dict[str, Any] = {
        "event_id": _pick(rng, _GOOD_IDS, _BAD_IDS, 0.03),
        "model_id": _pick(rng, _GOOD_IDS, _BAD_IDS, 0.03),
        "timestamp": _pick(rng, [*_GOOD_TS, 1.7e9 + rng.random() * 1e7], _BAD_TS, 0.06),
    }
    if kind == "prediction":
        obj["features"] = _features(rng)
        obj["prediction"] = _prediction_value(rng)
        if rng.random() < 0.6:
            obj["model_version"] = _pick(rng, [None, "", "1.4.2", "v" * 128], ["v" * 129, 1], 0.1)
        if rng.random() < 0.3:
            obj["segments"] = _pick(
                rng,
                [None, {}, {"country": "fr", "tier": ""}],
                [
                    {"country": 1},
                    {"c": None},
                    {"c": True},
                    {"c": ["fr"]},
                    ["fr"],
                    "fr",
                    {"c": _LONG_NAME},
                    {_LONG_NAME: "fr"},
                ],
                0.2,
            )
    else:
        obj["label"] = _pick(rng, _GOOD_SCALARS, _JUNK, 0.05)
    if rng.random() < 0.05:
        del obj[rng.choice(list(obj))]
    if rng.random() < 0.1:
        obj[rng.choice(["extra", "note", "label", "prediction"])] = rng.choice([*_JUNK, "x", 1])
    items = list(obj.items())
    rng.shuffle(items)  # the order of the fields does not matter
    return dict(items)


def _random_key(rng: random.Random, obj: dict[str, Any]) -> bytes | None:
    model_id = obj.get("model_id")
    r = rng.random()
    if r < 0.2:
        return None
    if r < 0.25 or not isinstance(model_id, str):
        return b"some-other-model"
    return model_id.encode()


def _reference(records: list[RawRecord], kind: str, fmt: Any = JSON) -> list[Any]:
    """Each record decoded by pydantic alone, as before the fast path existed."""
    return [decode_module._decode_by_pydantic(r, kind, MAX_BYTES, fmt) for r in records]  # type: ignore[arg-type]


def _assert_same(records: list[RawRecord], got: list[Any], kind: str) -> dict[str, int]:
    """``got`` equals pydantic's decode of ``records`` in every respect; counts the outcomes."""
    model = PredictionEvent if kind == "prediction" else LabelEvent
    expected_all = _reference(records, kind)
    reasons: dict[str, int] = {}
    for rec, got_one, expected in zip(records, got, expected_all, strict=True):
        where = rec.value()
        assert type(got_one) is type(expected), where
        if isinstance(expected, DeadLetter):
            assert got_one == expected, where  # same reason, detail and original record
            reasons[expected.reason] = reasons.get(expected.reason, 0) + 1
            continue
        assert isinstance(got_one, model)
        assert got_one == expected, where
        # == treats 1 == 1.0 == True; the reprs tell the types apart
        assert repr(got_one) == repr(expected), where
        assert got_one.model_fields_set == expected.model_fields_set, where
        assert type(got_one.model_fields_set) is set, where
        assert got_one.model_dump_json() == expected.model_dump_json(), where
        assert (got_one.__pydantic_extra__, got_one.__pydantic_private__) == (None, None)
        if isinstance(got_one, PredictionEvent) and isinstance(
            got_one.prediction, ScoredPrediction
        ):
            assert got_one.prediction.model_fields_set == {"label", "score"}, where
            assert repr(got_one.prediction) == repr(expected.prediction), where  # type: ignore[union-attr]
        reasons["ok"] = reasons.get("ok", 0) + 1
    return reasons


def _generated(kind: str, n: int, seed: int, frame: bytes = b"") -> list[RawRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        obj = _random_payload(rng, kind)
        value = frame + orjson.dumps(obj)
        records.append(RawRecord(value, key=_random_key(rng, obj), offset=i))
    return records


@pytest.mark.parametrize("kind", ["prediction", "label"])
def test_fast_path_matches_pydantic_on_generated_payloads(kind: str) -> None:
    records = _generated(kind, 4000, 20261205)
    batch = decode_records(records, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
    reasons = _assert_same(records, batch, kind)
    # the generator reaches every outcome often enough to mean something
    assert reasons["ok"] > 1500, reasons
    assert reasons["validation_error"] > 500, reasons
    assert reasons["key_mismatch"] > 50, reasons
    # one record at a time, and in batches of every size, gives the same
    single = [decode_record(r, kind=kind, max_bytes=MAX_BYTES) for r in records[:1000]]  # type: ignore[arg-type]
    _assert_same(records[:1000], single, kind)
    rng = random.Random(3)
    chunked: list[Any] = []
    start = 0
    while start < 1000:
        size = rng.choice([0, 1, 2, 7, 64])
        chunk = iter(records[start : min(start + size, 1000)])  # any iterable
        chunked.extend(decode_records(chunk, kind=kind, max_bytes=MAX_BYTES))  # type: ignore[arg-type]
        start += size
    _assert_same(records[:1000], chunked, kind)


@pytest.mark.parametrize("kind", ["prediction", "label"])
def test_fast_path_matches_pydantic_with_another_input_format(kind: str) -> None:
    """Another format has no raw JSON bytes to count brackets in: each value is checked."""
    framed = _Framed()
    records = _generated(kind, 1500, 99, frame=b"FRM1")
    got = decode_records(records, kind=kind, max_bytes=MAX_BYTES, deserializer=framed)  # type: ignore[arg-type]
    expected = [
        decode_module._decode_by_pydantic(r, kind, MAX_BYTES, framed)  # type: ignore[arg-type]
        for r in records
    ]
    assert [repr(g) for g in got] == [repr(e) for e in expected]
    assert [getattr(g, "model_fields_set", None) for g in got] == [
        getattr(e, "model_fields_set", None) for e in expected
    ]
    assert sum(isinstance(g, DeadLetter) for g in got) > 200


class _Objects:
    """A format whose values are Python objects of any type (looked up by the record value)."""

    name = "objects"

    def __init__(self, objects: list[Any]) -> None:
        self.objects = objects

    def loads(self, value: bytes) -> dict[str, Any]:
        return self.objects[int(value)]  # type: ignore[no-any-return]


class _Str(str):
    pass


def test_fast_path_matches_pydantic_on_python_objects_of_any_type() -> None:
    """Names that are not strings, tuples, str subclasses, NaN, datetimes: never a crash, and
    the same outcome as pydantic's."""
    nan = float("nan")
    odd: list[Any] = [
        {1: 1.0}, {("a",): 1.0}, {"x": (1, 2)}, {"x": b"raw"}, {"x": _Str("s")}, {"x": nan},
        {_Str("x"): 1.0}, {"x": 2**70}, {"x": frozenset()},
    ]  # fmt: skip
    objects: list[Any] = []
    for features in odd:
        objects.append(_prediction(features=features))
    objects += [
        _prediction(segments={1: "fr"}),
        _prediction(segments={"c": _Str("fr")}),
        _prediction(segments={"c": ("fr",)}),
        _prediction(prediction={"label": _Str("a"), "score": 0.5}),
        _prediction(prediction={"label": nan, "score": nan}),
        _prediction(prediction=(1, 0.5)),
        _prediction(timestamp=nan),
        _prediction(timestamp=datetime.now(UTC)),
        _prediction(timestamp=_Str("2026-11-22T00:00:00Z")),
        _prediction(event_id=_Str("e")),
        _prediction(model_version=_Str("1")),
        [("event_id", "e")],
        "not a mapping",
        None,
        _prediction(),
    ]
    assert isinstance(_as_pydantic_decodes(objects, "prediction")[-1], PredictionEvent)
    label_objects = [_label(label=_Str("a")), _label(label=(1,)), _label(timestamp=nan), _label()]
    assert isinstance(_as_pydantic_decodes(label_objects, "label")[-1], LabelEvent)


def _as_pydantic_decodes(objects: list[Any], kind: Literal["prediction", "label"]) -> list[Any]:
    """decode_records over a format returning ``objects``, checked equal (by repr) to the
    pydantic path on each record; returns what it decoded."""
    fmt = _Objects(objects)
    records = [RawRecord(str(i).encode(), key=b"m", offset=i) for i in range(len(objects))]
    got = decode_records(records, kind=kind, max_bytes=MAX_BYTES, deserializer=fmt)
    expected = [decode_module._decode_by_pydantic(r, kind, MAX_BYTES, fmt) for r in records]
    assert [repr(g) for g in got] == [repr(e) for e in expected]
    return got


@pytest.mark.parametrize("kind", ["prediction", "label"])
def test_fast_path_takes_every_valid_generated_event(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand checks cover every valid shape the generator makes, RFC 3339 timestamps too:
    pydantic is left for the faulty events."""
    model = PredictionEvent if kind == "prediction" else LabelEvent
    to_pydantic: list[int] = []
    reference = decode_module._decode_by_pydantic

    def spy(msg: Any, *args: Any) -> Any:
        to_pydantic.append(msg.offset())
        return reference(msg, *args)

    monkeypatch.setattr(decode_module, "_decode_by_pydantic", spy)
    rng = random.Random(7)
    records, valid = [], set()
    for i in range(2000):
        obj = _random_payload(rng, kind)
        model_id = obj.get("model_id")
        key = model_id.encode() if isinstance(model_id, str) and rng.random() < 0.5 else None
        records.append(RawRecord(orjson.dumps(obj), key=key, offset=i))
        try:
            model.model_validate(orjson.loads(orjson.dumps(obj)))
            valid.add(i)
        except ValidationError:
            pass
    out = decode_records(records, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
    assert len(valid) > 1000
    assert set(to_pydantic).isdisjoint(valid)
    assert set(to_pydantic) == set(range(len(records))) - valid
    assert all(isinstance(e, DeadLetter) == (i not in valid) for i, e in enumerate(out))


def test_batch_keeps_the_order_and_every_reason() -> None:
    good = orjson.dumps(_prediction())
    values = [
        good,
        b"",
        None,
        good + b" " * 600,  # oversized
        b"{not json",
        b"[1]",
        orjson.dumps(_prediction(timestamp="yesterday")),
        orjson.dumps(_prediction(model_id="other")),  # the key is b"m": key_mismatch
        orjson.dumps(_prediction(event_id="e-2", segments={"country": "fr"})),
    ]
    records = [FakeMsg(v, offset=i) for i, v in enumerate(values)]
    out = decode_records(records, kind="prediction", max_bytes=len(good) + 100)
    got = [e.reason if isinstance(e, DeadLetter) else e.event_id for e in out]
    assert got == [
        "e-1", "empty", "empty", "oversized", "decode_error", "decode_error",
        "validation_error", "key_mismatch", "e-2",
    ]  # fmt: skip
    assert [getattr(e, "offset", None) for e in out[1:-1]] == list(range(1, 8))
    single = [decode_record(r, kind="prediction", max_bytes=len(good) + 100) for r in records]
    assert out == single
    assert decode_records([], kind="label", max_bytes=MAX_BYTES) == []


def test_events_that_share_a_fields_set_stay_independent() -> None:
    """The usual layouts share one fields_set: no copy, update, pickle or refused assignment
    changes it."""
    values = [orjson.dumps(_prediction(event_id=f"e{i}")) for i in range(3)]
    a, b, c = decode_records([FakeMsg(v) for v in values], kind="prediction", max_bytes=MAX_BYTES)
    assert isinstance(a, PredictionEvent) and isinstance(b, PredictionEvent)
    assert isinstance(c, PredictionEvent) and isinstance(a.prediction, ScoredPrediction)
    fields = {"event_id", "model_id", "model_version", "timestamp", "features", "prediction"}
    assert a.model_fields_set is b.model_fields_set == fields  # shared
    updated = a.model_copy(update={"segments": {"tier": "gold"}})
    assert updated.model_fields_set == fields | {"segments"}
    assert a.prediction.model_copy(update={"label": 2}).model_fields_set == {"label", "score"}
    assert copy.deepcopy(a) == a and copy.copy(b) == b
    unpickled = pickle.loads(pickle.dumps(c))
    assert unpickled == c and unpickled.model_fields_set == fields
    with pytest.raises(ValidationError):
        a.segments = {"tier": "gold"}
    assert a.model_fields_set == b.model_fields_set == c.model_fields_set == fields
    assert a.prediction.model_fields_set == {"label", "score"}
    d = decode_record(FakeMsg(values[0]), kind="prediction", max_bytes=MAX_BYTES)
    assert isinstance(d, PredictionEvent) and d.model_fields_set == fields
    assert d.model_fields_set == PredictionEvent.model_validate_json(values[0]).model_fields_set


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T00:00:00Z", "2026-11-22T00:00:00z", " 2026-11-22T00:00:00Z\n",
        "2026-11-22T02:30:00.123456+02:00", "2026-11-22 00:00:00-05:00", "2026-11-22T00:00Z",
        "20261122T000000Z", "2026-W47-7T00:00:00Z", "1970-01-01T00:00:00+00:00",
        "1969-12-31T23:59:59.999Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59",
        "5138-11-16T09:46:39Z", "5138-11-16T09:46:40Z", "2026-11-22T00:00:00", "2026-11-22",
        "2026-11-22Z", "Z", "z", "", " ", "yesterday", "1700000000", "2026-13-01T00:00:00Z",
        "2026-11-22T00:00:00+24:00", "2026-11-22T00:00:00ZZ", "2026-11-22T00:00:00+00:00Z",
        "\u0662\u0660\u0662\u0666-11-22T00:00:00Z",
    ],
)  # fmt: skip
def test_timestamp_strings_convert_as_the_schema_does(text: str) -> None:
    try:
        expected: float | None = _to_unix_seconds(text)
    except ValueError:
        expected = None
    got = decode_module._seconds(text)
    assert got == expected and type(got) is type(expected)


def test_fast_event_behaves_like_a_validated_one() -> None:
    value = orjson.dumps(_prediction(timestamp="2023-11-14T22:13:20.250Z"))
    quick = decode_record(FakeMsg(value), kind="prediction", max_bytes=MAX_BYTES)
    assert isinstance(quick, PredictionEvent)
    expected = PredictionEvent.model_validate_json(value)
    assert quick.timestamp == 1_700_000_000.25
    assert quick.model_copy(update={"model_id": "n"}) == expected.model_copy(
        update={"model_id": "n"}
    )
    assert quick.model_copy(update={"model_id": "n"}).model_fields_set == (
        expected.model_fields_set
    )
    with pytest.raises(ValidationError):
        quick.model_id = "n"  # frozen, like the validated one
    assert quick.prediction_score() == 0.93 and quick.prediction_label() == "1"
    assert PredictionEvent.model_validate(quick.model_dump()) == quick


@pytest.mark.parametrize(
    "value",
    [
        b'{"event_id":"e","model_id":"m","timestamp":NaN,"features":{},"prediction":1}',
        b'{"event_id":"e","model_id":"m","timestamp":1,"features":{"x":Infinity},"prediction":1}',
        b'{"event_id":"e","model_id":"m","timestamp":1,"features":{},"prediction":-Infinity}',
        b'{"event_id":"e","model_id":"m","timestamp":1,"features":{"x":1e400},"prediction":1}',
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow"],
)
def test_json_has_no_nan_or_infinity(value: bytes) -> None:
    # orjson refuses NaN, Infinity and numbers out of the double range, so no event carries one
    assert _reason(value) == "decode_error"


# ------------------------------------------------------------------------------ input formats


class _Framed:
    """A toy input format: a 4-byte magic, then a JSON object (stands in for a registry-framed
    encoding such as Confluent's Avro wire format)."""

    name = "framed"

    def loads(self, value: bytes) -> dict[str, Any]:
        if value[:4] != b"FRM1":
            raise decode_module.DeserializeError("no FRM1 frame")
        return decode_module.JSON.loads(value[4:])


def test_decode_uses_the_given_input_format_and_keeps_its_reason() -> None:
    body = orjson.dumps(
        {"event_id": "e1", "model_id": "m", "timestamp": 5, "features": {"x": 1.5},
         "prediction": 0.25}
    )  # fmt: skip
    framed = _Framed()
    ok = decode_record(
        RawRecord(b"FRM1" + body, key=b"m", offset=1),
        kind="prediction", max_bytes=1 << 20, deserializer=framed,
    )  # fmt: skip
    plain = decode_record(RawRecord(body, key=b"m", offset=1), kind="prediction", max_bytes=1 << 20)
    assert isinstance(ok, PredictionEvent) and ok == plain
    bad = decode_record(
        RawRecord(body, key=b"m", offset=2),
        kind="prediction", max_bytes=1 << 20, deserializer=framed,
    )  # fmt: skip
    assert isinstance(bad, DeadLetter)
    assert (bad.reason, bad.detail, bad.value) == ("decode_error", "no FRM1 frame", body)


def test_an_unknown_input_format_is_a_config_error_at_start() -> None:
    from stream_monitor.app import Application
    from stream_monitor.config import MonitorConfig
    from stream_monitor.errors import ConfigError

    cfg = MonitorConfig(bootstrap_servers="unused:9092", input_format="avro")
    with pytest.raises(ConfigError, match="input_format 'avro'"):
        Application(cfg, serve_metrics=False)


@pytest.mark.parametrize(
    ("where", "make"),
    [
        ("feature name", lambda n: _prediction(features={"x" * n: 1.0})),
        ("segment key", lambda n: _prediction(segments={"k" * n: "fr"})),
        ("segment value", lambda n: _prediction(segments={"country": "f" * n})),
        ("model version", lambda n: _prediction(model_version="v" * n)),
        ("predicted class", lambda n: _prediction(prediction="c" * n)),
        ("scored class", lambda n: _prediction(prediction={"label": "c" * n, "score": 0.5})),
    ],
)
def test_names_are_bounded(where: str, make: Any) -> None:
    """Names become metric label values and snapshot keys: 128 characters pass, 129 are
    refused with a reason (never truncated)."""
    assert isinstance(_decode_pred(make(MAX_NAME_LENGTH)), PredictionEvent), where
    out = _decode_pred(make(MAX_NAME_LENGTH + 1))
    assert isinstance(out, DeadLetter) and out.reason == "validation_error", where
    if "class" not in where:  # a class is one branch of a union: pydantic lists them all
        assert "at most 128 characters" in out.detail, out.detail


def test_class_labels_of_label_events_are_bounded() -> None:
    assert isinstance(_decode_label(_label(label="y" * MAX_NAME_LENGTH)), LabelEvent)
    out = _decode_label(_label(label="y" * (MAX_NAME_LENGTH + 1)))
    assert isinstance(out, DeadLetter) and out.reason == "validation_error"


# -- JSON edge cases: msgspec on the fast path, orjson + pydantic on the reference path ------
# The fast path parses JSON with msgspec, the reference with orjson; wherever the two could
# differ (numbers, strings, duplicate keys, unknown fields, whitespace...) both must still give
# the same outcome. Each raw payload below is decoded both ways and compared in every respect.

_HEAD = b'"event_id":"e","model_id":"m","timestamp":1700000000,'


def _pred_json(fields: bytes, head: bytes = _HEAD) -> bytes:
    return b"{" + head + fields + b"}"


def _label_json(label: bytes, head: bytes = _HEAD) -> bytes:
    return b"{" + head + b'"label":' + label + b"}"


_ESC_SURROGATES = b'"\\ud83d\\ude00"'  # one character, U+1F600, escaped as a surrogate pair
_DEEP = b"[" * 2000 + b"]" * 2000  # deeper than orjson's limit
_JSON_EDGE_PREDICTIONS: dict[str, bytes] = {
    # numbers out of the double range, and NaN / Infinity literals
    "feature-1e400": _pred_json(b'"features":{"x":1e400},"prediction":1'),
    "feature-minus-1e400": _pred_json(b'"features":{"x":-1e400},"prediction":1'),
    "feature-1e-400": _pred_json(b'"features":{"x":1e-400},"prediction":1'),
    "prediction-1e400": _pred_json(b'"features":{},"prediction":1e400'),
    "score-1e400": _pred_json(b'"features":{},"prediction":{"label":1,"score":1e400}'),
    "timestamp-1e400": _pred_json(b'"features":{},"prediction":1', head=_HEAD[:-11] + b"1e400,"),
    "feature-nan": _pred_json(b'"features":{"x":NaN},"prediction":1'),
    "prediction-infinity": _pred_json(b'"features":{},"prediction":Infinity'),
    # integers: orjson makes one beyond 64 bits a float
    "feature-int64-max": _pred_json(b'"features":{"x":9223372036854775807},"prediction":1'),
    "feature-int64-min": _pred_json(b'"features":{"x":-9223372036854775808},"prediction":1'),
    "feature-2**63": _pred_json(b'"features":{"x":9223372036854775808},"prediction":1'),
    "feature-uint64-max": _pred_json(b'"features":{"x":18446744073709551615},"prediction":1'),
    "feature-2**64": _pred_json(b'"features":{"x":18446744073709551616},"prediction":1'),
    "feature-below-int64": _pred_json(b'"features":{"x":-9223372036854775809},"prediction":1'),
    "feature-30-digits": _pred_json(
        b'"features":{"x":123456789012345678901234567890},"prediction":1'
    ),
    "feature-400-digits": _pred_json(b'"features":{"x":' + b"9" * 400 + b'},"prediction":1'),
    "prediction-2**64": _pred_json(b'"features":{},"prediction":18446744073709551616'),
    "label-2**64": _pred_json(
        b'"features":{},"prediction":{"label":18446744073709551616,"score":1}'
    ),
    "score-2**64": _pred_json(
        b'"features":{},"prediction":{"label":1,"score":18446744073709551616}'
    ),
    "timestamp-2**64": _pred_json(
        b'"features":{},"prediction":1', head=_HEAD[:-11] + b"18446744073709551616,"
    ),
    "timestamp-negative-zero": _pred_json(
        b'"features":{},"prediction":1', head=_HEAD[:-11] + b"-0,"
    ),
    "feature-negative-zero-int": _pred_json(b'"features":{"x":-0,"y":-0.0,"z":1E2},"prediction":1'),
    "leading-zero": _pred_json(b'"features":{"x":01},"prediction":1'),
    # bools, ints and floats keep their types; a bool is never a number
    "int-and-float": _pred_json(b'"features":{"i":1,"f":1.0,"b":true,"n":null},"prediction":1.0'),
    "int-score": _pred_json(b'"features":{},"prediction":{"label":1.0,"score":1}'),
    "bool-score": _pred_json(b'"features":{},"prediction":{"label":1,"score":true}'),
    "bool-label": _pred_json(b'"features":{},"prediction":{"label":false,"score":0.5}'),
    "bool-timestamp": _pred_json(b'"features":{},"prediction":1', head=_HEAD[:-11] + b"true,"),
    "string-score": _pred_json(b'"features":{},"prediction":{"label":1,"score":"0.5"}'),
    # strings
    "lone-high-surrogate": _pred_json(b'"features":{"x":"\\ud800"},"prediction":1'),
    "lone-low-surrogate": _pred_json(b'"features":{"x":"\\udc00x"},"prediction":1'),
    "swapped-surrogates": _pred_json(b'"features":{"x":"\\ude00\\ud83d"},"prediction":1'),
    "escaped-surrogate-pair": _pred_json(
        b'"features":{"x":' + _ESC_SURROGATES + b'},"prediction":1'
    ),
    "escaped-pair-in-name": _pred_json(b'"features":{' + _ESC_SURROGATES + b':1},"prediction":1'),
    "raw-surrogate-bytes": _pred_json(b'"features":{"x":"\xed\xa0\x80"},"prediction":1'),
    "invalid-utf8": _pred_json(b'"features":{"x":"\xc3\x28"},"prediction":1'),
    "invalid-utf8-name": _pred_json(b'"features":{"\xff":1},"prediction":1'),
    "overlong-utf8": _pred_json(b'"features":{"x":"\xc0\xaf"},"prediction":1'),
    "raw-tab-in-string": _pred_json(b'"features":{"x":"a\tb"},"prediction":1'),
    "raw-del-in-string": _pred_json(b'"features":{"x":"a\x7fb"},"prediction":1'),
    "escaped-nul": _pred_json(b'"features":{"x":"\\u0000"},"prediction":"\\u0000"'),
    "bad-escape": _pred_json(b'"features":{"x":"\\q"},"prediction":1'),
    "short-unicode-escape": _pred_json(b'"features":{"x":"\\u00"},"prediction":1'),
    # lengths count code points, whatever their UTF-8 size
    "name-128-two-byte": _pred_json(b'"features":{"' + "é".encode() * 128 + b'":1},"prediction":1'),
    "name-129-two-byte": _pred_json(b'"features":{"' + "é".encode() * 129 + b'":1},"prediction":1'),
    "version-128-four-byte": _pred_json(
        b'"features":{},"prediction":1,"model_version":"' + "\U0001d4b3".encode() * 128 + b'"'
    ),
    "version-129-four-byte": _pred_json(
        b'"features":{},"prediction":1,"model_version":"' + "\U0001d4b3".encode() * 129 + b'"'
    ),
    "version-128-escaped": _pred_json(
        b'"features":{},"prediction":1,"model_version":"' + b"\\u00e9" * 128 + b'"'
    ),
    "version-129-escaped": _pred_json(
        b'"features":{},"prediction":1,"model_version":"' + b"\\u00e9" * 129 + b'"'
    ),
    "segment-value-129-escaped-pairs": _pred_json(
        b'"features":{},"prediction":1,"segments":{"c":"' + b"\\ud83d\\ude00" * 129 + b'"}'
    ),
    "event-id-256-escaped-pairs": b'{"event_id":"'
    + b"\\ud83d\\ude00" * 256
    + b'","model_id":"m","timestamp":1,"features":{},"prediction":1}',
    "event-id-257-escaped-pairs": b'{"event_id":"'
    + b"\\ud83d\\ude00" * 257
    + b'","model_id":"m","timestamp":1,"features":{},"prediction":1}',
    # duplicate keys: the last one counts
    "duplicate-feature": _pred_json(b'"features":{"x":1,"x":"a"},"prediction":1'),
    "duplicate-feature-bad-first": _pred_json(b'"features":{"x":[1],"x":2},"prediction":1'),
    "duplicate-feature-bad-last": _pred_json(b'"features":{"x":2,"x":[1]},"prediction":1'),
    "duplicate-prediction": _pred_json(b'"features":{},"prediction":"a","prediction":2'),
    "duplicate-prediction-bad-first": _pred_json(b'"features":{},"prediction":null,"prediction":2'),
    "duplicate-prediction-bad-last": _pred_json(b'"features":{},"prediction":2,"prediction":null'),
    "duplicate-features": _pred_json(b'"features":{"a":1},"prediction":1,"features":{"b":2}'),
    "duplicate-event-id": _pred_json(b'"features":{},"prediction":1,"event_id":"f"'),
    "duplicate-event-id-empty-last": _pred_json(b'"features":{},"prediction":1,"event_id":""'),
    "duplicate-model-id": _pred_json(b'"features":{},"prediction":1,"model_id":"n"'),
    "duplicate-timestamp": _pred_json(
        b'"features":{},"prediction":1,"timestamp":"1970-01-01T00:00:01Z"'
    ),
    "duplicate-version-null-last": _pred_json(
        b'"features":{},"prediction":1,"model_version":"v","model_version":null'
    ),
    "duplicate-segment": _pred_json(b'"features":{},"prediction":1,"segments":{"a":"b","a":"c"}'),
    "duplicate-segment-bad-first": _pred_json(
        b'"features":{},"prediction":1,"segments":{"a":1,"a":"c"}'
    ),
    "duplicate-label": _pred_json(
        b'"features":{},"prediction":{"label":1,"score":0.5,"label":"b"}'
    ),
    "duplicate-score": _pred_json(
        b'"features":{},"prediction":{"score":"x","label":1,"score":0.5}'
    ),
    # optional fields present but null, or left out
    "segments-null": _pred_json(b'"features":{},"prediction":1,"segments":null'),
    "version-null": _pred_json(b'"features":{},"prediction":1,"model_version":null'),
    "both-null": _pred_json(b'"features":{},"prediction":1,"segments":null,"model_version":null'),
    "segments-empty": _pred_json(b'"features":{},"prediction":1,"segments":{}'),
    "segments-only": _pred_json(b'"features":{},"prediction":1,"segments":{"c":"fr"}'),
    "version-and-segments": _pred_json(
        b'"features":{},"prediction":1,"model_version":"v","segments":{"c":"fr"}'
    ),
    "segments-list": _pred_json(b'"features":{},"prediction":1,"segments":["fr"]'),
    # unknown fields are ignored by pydantic, whatever their value, if orjson parses them
    "extra-in-scored": _pred_json(b'"features":{},"prediction":{"label":1,"score":0.5,"extra":1}'),
    "extra-object-in-scored": _pred_json(
        b'"features":{},"prediction":{"label":1,"score":0.5,"why":{"a":[1]}}'
    ),
    "extra-field": _pred_json(b'"features":{},"prediction":1,"note":{"a":[1,{"b":null}]}'),
    "extra-field-1e400": _pred_json(b'"features":{},"prediction":1,"note":1e400'),
    "extra-field-big-int": _pred_json(b'"features":{},"prediction":1,"note":' + b"9" * 400),
    "extra-field-invalid-utf8": _pred_json(b'"features":{},"prediction":1,"note":"\xff"'),
    "extra-field-lone-surrogate": _pred_json(b'"features":{},"prediction":1,"note":"\\ud800"'),
    "extra-field-raw-tab": _pred_json(b'"features":{},"prediction":1,"note":"a\tb"'),
    "extra-field-deep": _pred_json(b'"features":{},"prediction":1,"note":' + _DEEP),
    "extra-field-deep-in-scored": _pred_json(
        b'"features":{},"prediction":{"label":1,"score":0.5,"why":' + _DEEP + b"}"
    ),
    "extra-field-nan": _pred_json(b'"features":{},"prediction":1,"note":NaN'),
    "extra-field-first": b'{"zz":[1],' + _HEAD + b'"features":{},"prediction":1}',
    # wrong types
    "feature-list": _pred_json(b'"features":{"x":[1]},"prediction":1'),
    "feature-dict": _pred_json(b'"features":{"x":{"a":1}},"prediction":1'),
    "feature-deep": _pred_json(b'"features":{"x":' + _DEEP + b'},"prediction":1'),
    "features-list": _pred_json(b'"features":[],"prediction":1'),
    "prediction-list": _pred_json(b'"features":{},"prediction":[1]'),
    "prediction-null": _pred_json(b'"features":{},"prediction":null'),
    "prediction-empty-object": _pred_json(b'"features":{},"prediction":{}'),
    "event-id-number": b'{"event_id":1,"model_id":"m","timestamp":1,"features":{},"prediction":1}',
    # the document
    "bom": b"\xef\xbb\xbf" + _pred_json(b'"features":{},"prediction":1'),
    "whitespace-around": b" \n\t\r" + _pred_json(b'"features":{},"prediction":1') + b" \n\t\r",
    "whitespace-inside": b'{ "event_id" : "e" , "model_id":"m","timestamp" :1, "features" : '
    b'{ "x" : 1 } , "prediction" : { "label" : 1 , "score" : 0.5 } }',
    "form-feed-before": b"\x0c" + _pred_json(b'"features":{},"prediction":1'),
    "nul-after": _pred_json(b'"features":{},"prediction":1') + b"\x00",
    "second-document": _pred_json(b'"features":{},"prediction":1') + b"{}",
    "empty-object": b"{}",
    "top-level-array": b"[]",
    "top-level-array-of-event": b"[" + _pred_json(b'"features":{},"prediction":1') + b"]",
    "top-level-string": b'"e"',
    "whitespace-only": b"   ",
    "truncated": _pred_json(b'"features":{},"prediction":1')[:-1],
}


def _many_features(n: int, duplicate: bool = False) -> bytes:
    names = [f'"f{i}":{i}'.encode() for i in range(n)]
    if duplicate:
        names.append(b'"f0":0.5')  # one more entry, no more distinct names
    return _pred_json(b'"features":{' + b",".join(names) + b'},"prediction":1')


_JSON_EDGE_PREDICTIONS.update(
    {
        "2048-features": _many_features(2048),
        "2049-features": _many_features(2049),
        "2048-features-and-a-duplicate": _many_features(2048, duplicate=True),
    }
)
_JSON_EDGE_LABELS: dict[str, bytes] = {
    "label-2**64": _label_json(b"18446744073709551616"),
    "label-int64-min": _label_json(b"-9223372036854775808"),
    "label-1e400": _label_json(b"1e400"),
    "label-int": _label_json(b"1"),
    "label-float": _label_json(b"1.0"),
    "label-bool": _label_json(b"true"),
    "label-null": _label_json(b"null"),
    "label-object": _label_json(b'{"a":1}'),
    "label-129-escaped": _label_json(b'"' + b"\\u00e9" * 129 + b'"'),
    "label-128-escaped": _label_json(b'"' + b"\\u00e9" * 128 + b'"'),
    "label-lone-surrogate": _label_json(b'"\\udfff"'),
    "label-duplicate": _label_json(b'1,"label":"b"'),
    "label-duplicate-bad-last": _label_json(b'1,"label":[1]'),
    "label-extra": _label_json(b'1,"note":{"a":1}'),
    "label-extra-1e400": _label_json(b'1,"note":1e400'),
    "label-extra-invalid-utf8": _label_json(b'1,"note":"\xfe"'),
    "label-extra-deep": _label_json(b'1,"note":' + _DEEP),
    "label-timestamp-string": _label_json(b"1", head=_HEAD[:-11] + b'"2026-11-22T00:00:00Z",'),
    "label-timestamp-big-int": _label_json(b"1", head=_HEAD[:-11] + b"9" * 30 + b","),
    "label-bom": b"\xef\xbb\xbf" + _label_json(b"1"),
    "label-empty-object": b"{}",
    "label-top-level-array": b"[]",
}


@pytest.mark.parametrize("kind", ["prediction", "label"])
def test_json_edge_cases_decode_as_pydantic_does(kind: str) -> None:
    cases = _JSON_EDGE_PREDICTIONS if kind == "prediction" else _JSON_EDGE_LABELS
    records = [RawRecord(v, key=b"m", offset=i) for i, v in enumerate(cases.values())]
    batch = decode_records(records, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
    reasons = _assert_same(records, batch, kind)
    single = [decode_record(r, kind=kind, max_bytes=MAX_BYTES) for r in records]  # type: ignore[arg-type]
    _assert_same(records, single, kind)
    assert reasons.get("ok", 0) >= 8 and reasons.get("decode_error", 0) >= 5, reasons
    assert reasons.get("validation_error", 0) >= 5, reasons


def _one(name: str) -> Any:
    return decode_record(
        RawRecord(_JSON_EDGE_PREDICTIONS[name], key=b"m"), kind="prediction", max_bytes=MAX_BYTES
    )


def test_json_edge_cases_give_what_the_wire_contract_says() -> None:
    """The outcomes of the comparisons above that a reader would guess wrong, written out."""
    # orjson makes an integer beyond 64 bits a float, and so does the fast path
    wide = _one("feature-2**64")
    assert isinstance(wide, PredictionEvent)
    assert type(wide.features["x"]) is float and wide.features["x"] == 2.0**64
    uint = _one("feature-uint64-max")
    assert isinstance(uint, PredictionEvent) and uint.features["x"] == 2**64 - 1
    assert type(uint.features["x"]) is int
    assert type(_one("score-2**64").prediction.score) is float
    # numbers out of the double range, NaN, lone surrogates, a BOM: not JSON
    for name in ("feature-1e400", "feature-nan", "lone-high-surrogate", "bom", "invalid-utf8"):
        assert _one(name).reason == "decode_error", name
    # ... and not even in an ignored field
    for name in (
        "extra-field-1e400",
        "extra-field-invalid-utf8",
        "extra-field-deep",
        "extra-field-deep-in-scored",
    ):
        assert _one(name).reason == "decode_error", name
    # an ignored field that orjson parses is ignored, in the event or in a scored prediction
    for name in ("extra-field", "extra-in-scored", "extra-object-in-scored", "extra-field-first"):
        assert isinstance(_one(name), PredictionEvent), name
    # duplicate keys: the last one counts
    assert _one("duplicate-feature").features == {"x": "a"}
    assert _one("duplicate-prediction-bad-first").prediction == 2
    assert _one("duplicate-prediction-bad-last").reason == "validation_error"
    assert isinstance(_one("2048-features-and-a-duplicate"), PredictionEvent)
    assert _one("2049-features").reason == "validation_error"
    # a field given as null is in fields_set; one left out is not
    required = {"event_id", "model_id", "timestamp", "features", "prediction"}
    assert _one("version-null").model_fields_set == required | {"model_version"}
    assert _one("segments-null").model_fields_set == required | {"segments"}
    assert _one("both-null").model_fields_set == required | {"segments", "model_version"}
    assert _one("segments-only").model_fields_set == required | {"segments"}
    assert _one("int-and-float").model_fields_set == required
    # lengths are counted in characters, not bytes nor UTF-16 units
    assert isinstance(_one("name-128-two-byte"), PredictionEvent)
    assert isinstance(_one("version-128-four-byte"), PredictionEvent)
    assert isinstance(_one("event-id-256-escaped-pairs"), PredictionEvent)
    assert _one("event-id-257-escaped-pairs").reason == "validation_error"
    assert _one("segment-value-129-escaped-pairs").reason == "validation_error"
    assert _one("bool-score").reason == "validation_error"
    ev = _one("int-and-float")
    assert [type(v) for v in ev.features.values()] == [int, float, bool, type(None)]
    assert type(ev.prediction) is float and type(_one("int-score").prediction.score) is int


def _json_fragment(rng: random.Random) -> bytes:
    """A JSON value, often one of the texts where parsers disagree."""
    return rng.choice(
        [
            b"1", b"-0", b"0.5", b"1e400", b"-1e400", b"1e-400", b"9223372036854775807",
            b"9223372036854775808", b"18446744073709551616", b"-9223372036854775809", b"true",
            b"null", b'"a"', b'""', b'"\\ud800"', _ESC_SURROGATES, b'"\xc3\xa9"', b'"\xff"',
            b'"' + b"\\u00e9" * 129 + b'"', b"[1]", b"{}", b'{"a":1}', b"NaN", b"1700000000",
            b'"2026-11-22T00:00:00Z"', b'{"label":1,"score":0.5}',
            b'{"label":1,"score":0.5,"x":1e400}', b'{"label":"\\ud83d\\ude00","score":1}',
        ]
    )  # fmt: skip


def _hostile_json(rng: random.Random, kind: str) -> bytes:
    """A mostly valid event whose text is edited where msgspec and orjson could differ."""
    base = _prediction() if kind == "prediction" else _label()
    if kind == "prediction" and rng.random() < 0.5:
        base["features"] = {f"n{i}": rng.choice([1, 0.5, "x", None]) for i in range(20)}
    fields = [(k.encode(), orjson.dumps(v)) for k, v in base.items()]
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        r = rng.random()
        if r < 0.3 and kind == "prediction":  # a feature's value
            name = rng.choice([b"x", b"age", b"\\u00e9", _ESC_SURROGATES[1:-1]])
            fields.append((b"features", b'{"' + name + b'":' + _json_fragment(rng) + b"}"))
        elif r < 0.55:  # a field's value, maybe again (a duplicate key)
            fields.append((rng.choice([k for k, _ in fields]), _json_fragment(rng)))
        elif r < 0.75:  # an unknown field
            fields.append((rng.choice([b"note", b"x", b"\\u0065vent_id"]), _json_fragment(rng)))
        else:  # replace a field
            i = rng.randrange(len(fields))
            fields[i] = (fields[i][0], _json_fragment(rng))
    rng.shuffle(fields)
    body = b",".join(b'"' + k + b'":' + v for k, v in fields)
    return rng.choice([b"", b" ", b"\n"]) + b"{" + body + b"}" + rng.choice([b"", b" ", b"\t"])


@pytest.mark.parametrize("kind", ["prediction", "label"])
def test_fast_path_matches_pydantic_on_hostile_json(kind: str) -> None:
    rng = random.Random(20261206)
    records = [
        RawRecord(_hostile_json(rng, kind), key=rng.choice([b"m", None]), offset=i)
        for i in range(3000)
    ]
    batch = decode_records(records, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
    reasons = _assert_same(records, batch, kind)
    assert reasons["ok"] > 600 and reasons["decode_error"] > 150, reasons
    assert reasons["validation_error"] > 150, reasons


@pytest.mark.parametrize("kind", ["prediction", "label"])
def test_json_takes_the_one_pass_decode_unless_a_field_is_unknown(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """msgspec decodes every valid generated event without an unknown field; the hand checks
    of orjson's parse (the second way) see only the others."""
    model = PredictionEvent if kind == "prediction" else LabelEvent
    second_way: list[int] = []
    name = "_checked_predictions" if kind == "prediction" else "_checked_labels"
    checked = getattr(decode_module, name)

    def spy(msgs: Any, *args: Any) -> Any:
        msgs = list(msgs)
        second_way.extend(m.offset() for m in msgs)
        return checked(msgs, *args)

    monkeypatch.setattr(decode_module, name, spy)
    rng = random.Random(11)
    records, plain, with_extra = [], set(), set()
    for i in range(1500):
        obj = _random_payload(rng, kind)
        records.append(RawRecord(orjson.dumps(obj), key=None, offset=i))
        try:
            model.model_validate(obj)
        except ValidationError:
            continue
        p = obj.get("prediction")
        if set(obj) <= set(model.model_fields) and not (isinstance(p, dict) and len(p) > 2):
            plain.add(i)
        else:
            with_extra.add(i)
    out = decode_records(records, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
    assert len(plain) > 700 and len(with_extra) > 30
    assert set(second_way).isdisjoint(plain)
    assert with_extra <= set(second_way)
    assert not any(isinstance(out[i], DeadLetter) for i in plain | with_extra)
