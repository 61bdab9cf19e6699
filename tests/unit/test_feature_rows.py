"""FeatureRow: a prediction's features decoded into a struct of a known layout must behave as
the dict it stands for, wherever the monitor, a user or pydantic reads it."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson
import pydantic
import pytest

from stream_monitor.events.decode import decode_by_model, decode_records
from stream_monitor.events.feature_rows import FeatureRow, row_type
from stream_monitor.events.live import Prediction
from stream_monitor.events.schema import PredictionEvent
from tests.unit.test_decode_by_model import keyed_records

NAMES = ("amount", "country", "vip", "note", "count", "prediction.label", "a b")
VALUE = bool | int | float | str | None
FEATURES: dict[str, Any] = {
    "country": "fr",
    "amount": 12.5,
    "vip": True,
    "note": None,
    "count": 3,
    "prediction.label": "x",
    "a b": -0.0,
}


def _row(features: dict[str, Any]) -> Any:
    return msgspec.json.decode(orjson.dumps(features), type=row_type(NAMES, VALUE))


def test_a_row_reads_as_its_dict() -> None:
    row, plain = _row(FEATURES), dict(FEATURES)
    assert isinstance(row, Mapping) and isinstance(row, FeatureRow)
    assert row == plain and plain == row and (row != plain) is False
    assert row != {**plain, "count": 4} and row != {k: plain[k] for k in NAMES[:-1]}
    assert row != [1, 2] and row == _row(FEATURES)
    for name in plain:
        assert row[name] == plain[name] and row.get(name) == plain.get(name) and name in row
    assert row.get("missing") is None and row.get("missing", 7) == 7 and "missing" not in row
    with pytest.raises(KeyError):
        row["missing"]
    assert len(row) == len(plain)
    assert list(row) == list(NAMES)  # the layout's order, not the JSON object's
    assert list(row.keys()) == list(NAMES) and row.keys() - {"amount"} == set(NAMES) - {"amount"}
    assert dict(row.items()) == plain and list(row.values()) == [plain[n] for n in NAMES]
    assert dict(row) == plain and {**row} == plain
    assert repr(row) == repr({n: plain[n] for n in NAMES})
    with pytest.raises(TypeError):
        hash(row)


def test_deep_copies_and_pickles_of_a_row_are_its_dict() -> None:
    row = _row(FEATURES)
    for twin in (copy.deepcopy(row), pickle.loads(pickle.dumps(row))):
        assert type(twin) is dict and twin == FEATURES
    assert copy.copy(row) == FEATURES  # a shallow copy of an immutable row: a row


def test_a_row_refuses_what_its_layout_does_not_have() -> None:
    decode = msgspec.json.Decoder(row_type(NAMES, VALUE)).decode
    for bad in (
        {k: v for k, v in FEATURES.items() if k != "vip"},  # a name missing
        {**FEATURES, "new": 1},  # an unknown one
        {**FEATURES, "amount": [1]},  # not a scalar
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(orjson.dumps(bad))


def test_a_live_event_with_a_row_encodes_and_compares_as_the_pydantic_event() -> None:
    records = keyed_records([FEATURES] * 3, prediction={"label": 1, "score": 0.5})
    plain = decode_records(records, kind="prediction", max_bytes=1 << 20)
    live = decode_by_model(records, max_bytes=1 << 20).by_model["m"]
    assert all(isinstance(e.features, FeatureRow) for e in live)
    assert [e.to_event() for e in live] == plain  # type: ignore[union-attr]
    for e, p in zip(live, plain, strict=True):
        assert type(e.to_event().features) is dict  # type: ignore[union-attr]
        # its JSON is the event's: the row's names, not its fields'
        assert PredictionEvent.model_validate_json(msgspec.json.encode(e)) == p
        for twin in (pickle.loads(pickle.dumps(e)), copy.deepcopy(e)):
            # a Prediction of the same fields, its features the dict (a layout's struct is
            # made at run time: another process has not made it)
            assert type(twin) is Prediction and type(twin.features) is dict
            assert twin.to_event() == p
        assert pydantic.TypeAdapter(PredictionEvent).validate_python(msgspec.to_builtins(e)) == p
