"""decode_record: valid events, and every dead-letter reason, on a tiny fake Kafka message."""

from __future__ import annotations

import calendar
import random
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from stream_monitor.events.decode import (
    DeadLetter,
    _fast_label,
    _fast_prediction,
    dead_letter_headers,
    decode_record,
)
from stream_monitor.events.schema import LabelEvent, PredictionEvent, ScoredPrediction
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

_JUNK: list[object] = [
    None, True, False, 0, -1, 1.5, 1e10, 1e12, -3.0, "", "x", "2026-01-01T00:00:00Z",
    "2026-01-01", [], [1], {}, {"a": 1}, "é" * 257, "y" * 256, 2**40,
]  # fmt: skip


def _random_payload(rng: random.Random, kind: str) -> dict[str, Any]:
    """Mostly valid events with zero, one or two random faults."""
    obj: dict[str, Any] = {
        "event_id": f"e{rng.randrange(10**6)}",
        "model_id": rng.choice(["m", "fraud", "x" * 256]),
        "timestamp": rng.choice([1.7e9 + rng.random(), 1_700_000_000, 0, 99_999_999_999.0]),
    }
    if kind == "prediction":
        obj["features"] = {
            f"f{i}": rng.choice([rng.random(), rng.randrange(100), "cat", True, None])
            for i in range(rng.randrange(0, 6))
        }
        obj["prediction"] = rng.choice(
            [0.7, 3, "yes", False, {"label": 1, "score": 0.9}, {"label": "a", "score": 1, "x": 2}]
        )
        if rng.random() < 0.3:
            obj["model_version"] = rng.choice(["v1", None, "v" * 257])
        if rng.random() < 0.3:
            obj["segments"] = rng.choice([{"country": "fr"}, None, {"country": 3}])
    else:
        obj["label"] = rng.choice([1, 0.5, "spam", True])
    if rng.random() < 0.2:
        obj["extra_field"] = "ignored"
    for _ in range(rng.choice([0, 0, 1, 2])):
        target = rng.choice([*obj.keys(), "features", "prediction", "label"])
        if rng.random() < 0.2:
            obj.pop(target, None)
        elif target == "features" and isinstance(obj.get("features"), dict) and rng.random() < 0.5:
            obj["features"]["bad"] = rng.choice(_JUNK)
        elif target == "prediction" and rng.random() < 0.5:
            obj["prediction"] = {"label": rng.choice(_JUNK), "score": rng.choice(_JUNK)}
        else:
            obj[target] = rng.choice(_JUNK)
    return obj


@pytest.mark.parametrize("kind", ["prediction", "label"])
def test_fast_path_matches_pydantic_on_generated_payloads(kind: str) -> None:
    """On generated valid and invalid payloads, the hand-checked fast path accepts only what
    pydantic accepts, builds equal events with the same fields set, and takes most valid ones;
    decode_record gives pydantic's event or a validation_error dead letter."""
    model = PredictionEvent if kind == "prediction" else LabelEvent
    fast = _fast_prediction if kind == "prediction" else _fast_label
    rng = random.Random(5)
    valid = accepted = 0
    for i in range(3000):
        raw = orjson.dumps(_random_payload(rng, kind))
        obj = orjson.loads(raw)
        quick = fast(obj)
        got = decode_record(RawRecord(raw), kind=kind, max_bytes=1 << 20)  # type: ignore[arg-type]
        try:
            expected = model.model_validate(orjson.loads(raw))
        except ValidationError:
            assert quick is None, (i, obj)
            assert isinstance(got, DeadLetter) and got.reason == "validation_error", (i, obj)
            continue
        valid += 1
        assert got == expected and got.model_fields_set == expected.model_fields_set, (i, obj)
        if quick is not None:
            accepted += 1
            assert quick == expected, (i, obj)
            assert quick.model_fields_set == expected.model_fields_set, (i, obj)
            assert quick.model_dump() == expected.model_dump(), (i, obj)
    assert valid > 1000
    assert accepted > 0.9 * valid  # only RFC 3339 timestamps and the like go to pydantic
