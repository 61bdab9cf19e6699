"""The committed JSON Schemas of the input events (prediction, label): generated from the
pydantic models of the wire contract, valid draft 2020-12, and in agreement with the monitor's
decoder on valid and invalid events (checked with the jsonschema library)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from stream_monitor.client import MonitorClient
from stream_monitor.events.decode import DeadLetter, decode_record
from stream_monitor.events.json_schemas import (
    MAX_UNIX_SECONDS,
    SCHEMA_DIALECT,
    json_schemas,
    main,
    schema_text,
    write_schemas,
)
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.kafka.records import RawRecord
from stream_monitor.simulate import TrafficGenerator

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = DOCS / "schemas"
NAMES = ["prediction-event.schema.json", "label-event.schema.json"]


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


PREDICTION = _validator("prediction-event.schema.json")
LABEL = _validator("label-event.schema.json")


def _decodes(kind: str, doc: Any) -> bool:
    """Whether the monitor's decoder accepts ``doc`` as a ``kind`` event."""
    rec = RawRecord(orjson.dumps(doc), topic=f"{kind}s")
    return not isinstance(decode_record(rec, kind=kind, max_bytes=1 << 20), DeadLetter)  # type: ignore[arg-type]


def test_committed_schemas_are_what_the_models_generate():
    generated = {n: s for n, s in json_schemas().items() if n in NAMES}
    assert sorted(generated) == sorted(NAMES)
    for name, schema in generated.items():
        assert (SCHEMAS / name).read_text(encoding="utf-8") == schema_text(schema), (
            f"docs/schemas/{name} is stale: run "
            "`python -m stream_monitor.events.json_schemas --write-schemas`"
        )


def test_write_schemas_and_the_command_write_the_same_files(tmp_path, capsys):
    for p in write_schemas(tmp_path / "a"):
        assert p.read_text(encoding="utf-8") == (SCHEMAS / p.name).read_text(encoding="utf-8")
    assert main(["--write-schemas", "--dir", str(tmp_path / "b")]) == 0
    assert set(NAMES) <= {p.name for p in (tmp_path / "b").iterdir()}
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_schemas_are_valid_draft_2020_12_with_an_id(name):
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["$id"] == f"urn:stream-monitor:schema:{name.removesuffix('.schema.json')}"
    Draft202012Validator.check_schema(schema)


def test_schemas_name_every_field_of_the_models():
    pred = json.loads((SCHEMAS / NAMES[0]).read_text())
    label = json.loads((SCHEMAS / NAMES[1]).read_text())
    assert set(pred["properties"]) == set(PredictionEvent.model_fields)
    assert set(label["properties"]) == set(LabelEvent.model_fields)
    assert pred["required"] == ["event_id", "model_id", "timestamp", "features", "prediction"]
    assert label["required"] == ["event_id", "model_id", "timestamp", "label"]
    # the timestamp is a number of seconds or an RFC 3339 string, not pydantic's bare float
    number, text = pred["properties"]["timestamp"]["anyOf"]
    assert number["exclusiveMaximum"] == MAX_UNIX_SECONDS and text["format"] == "date-time"


# --- valid events: accepted by the schema and by the decoder ---------------------------------


def _wire_contract_example() -> dict[str, Any]:
    doc = (DOCS / "wire-contract.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    return json.loads(blocks[0])


def test_the_wire_contract_example_validates():
    example = _wire_contract_example()
    PREDICTION.validate(example)
    assert _decodes("prediction", example)


def test_the_simulators_events_validate():
    gen = TrafficGenerator(seed=3, drift_at=None)
    recs = list(gen.events(300))
    kinds = {"predictions": (PREDICTION, "prediction"), "labels": (LABEL, "label")}
    assert {r.topic for r in recs} == set(kinds)
    for r in recs:
        validator, kind = kinds[r.topic]
        doc = orjson.loads(r.value)
        validator.validate(doc)
        assert _decodes(kind, doc)


class _Recorder:
    def __init__(self) -> None:
        self.values: list[tuple[str, bytes]] = []

    def produce(self, topic, value=None, key=None, *, on_delivery=None, timestamp=0):
        self.values.append((topic, value))

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=0):
        return 0


def test_what_the_client_sends_validates():
    kafka = _Recorder()
    c = MonitorClient(producer=kafka, model_id="churn", model_version="7")
    for i, p in enumerate([0.3, "stay", True, {"label": "churn", "score": 0.8}]):
        eid = c.log_prediction(
            features={"tenure": i, "plan": "basic", "vip": False, "spend": None},
            prediction=p,
            segments={"region": "eu"} if i % 2 else None,
            timestamp=1_795_305_600 + i if i < 3 else "2026-11-22T00:00:00+01:00",
        )
        c.log_label(eid, p["label"] if isinstance(p, dict) else p)
    assert len(kafka.values) == 8
    for topic, value in kafka.values:
        (PREDICTION if topic == "predictions" else LABEL).validate(orjson.loads(value))


# --- invalid events: refused by the schema and by the decoder --------------------------------

_GOOD_PREDICTION: dict[str, Any] = {
    "event_id": "e1",
    "model_id": "fraud",
    "timestamp": 1_795_305_600,
    "features": {"amount": 35.2},
    "prediction": {"label": 0, "score": 0.07},
}
_GOOD_LABEL: dict[str, Any] = {
    "event_id": "e1",
    "model_id": "fraud",
    "timestamp": "2026-11-22T00:00:00Z",
    "label": 1,
}


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


INVALID_PREDICTIONS: dict[str, Any] = {
    "missing event_id": _without(_GOOD_PREDICTION, "event_id"),
    "missing features": _without(_GOOD_PREDICTION, "features"),
    "missing prediction": _without(_GOOD_PREDICTION, "prediction"),
    "empty model_id": {**_GOOD_PREDICTION, "model_id": ""},
    "model_id a number": {**_GOOD_PREDICTION, "model_id": 7},
    "event_id too long": {**_GOOD_PREDICTION, "event_id": "e" * 257},
    "timestamp in milliseconds": {**_GOOD_PREDICTION, "timestamp": 1_795_305_600_000},
    "negative timestamp": {**_GOOD_PREDICTION, "timestamp": -1},
    "timestamp a boolean": {**_GOOD_PREDICTION, "timestamp": True},
    "feature a list": {**_GOOD_PREDICTION, "features": {"amount": [1, 2]}},
    "feature an object": {**_GOOD_PREDICTION, "features": {"amount": {"v": 1}}},
    "feature name too long": {**_GOOD_PREDICTION, "features": {"a" * 129: 1}},
    "features a list": {**_GOOD_PREDICTION, "features": [35.2]},
    "too many features": {**_GOOD_PREDICTION, "features": {f"f{i}": 0 for i in range(2049)}},
    "prediction null": {**_GOOD_PREDICTION, "prediction": None},
    "prediction a list": {**_GOOD_PREDICTION, "prediction": [0.1, 0.9]},
    "class too long": {**_GOOD_PREDICTION, "prediction": "c" * 129},
    "score missing": {**_GOOD_PREDICTION, "prediction": {"label": 0}},
    "score a string": {**_GOOD_PREDICTION, "prediction": {"label": 0, "score": "high"}},
    "version too long": {**_GOOD_PREDICTION, "model_version": "v" * 129},
    "segment value a number": {**_GOOD_PREDICTION, "segments": {"region": 1}},
    "segment key too long": {**_GOOD_PREDICTION, "segments": {"k" * 129: "eu"}},
    "not an object": [_GOOD_PREDICTION],
}

INVALID_LABELS: dict[str, Any] = {
    "missing label": _without(_GOOD_LABEL, "label"),
    "missing model_id": _without(_GOOD_LABEL, "model_id"),
    "label null": {**_GOOD_LABEL, "label": None},
    "label an object": {**_GOOD_LABEL, "label": {"v": 1}},
    "label too long": {**_GOOD_LABEL, "label": "l" * 129},
    "timestamp in milliseconds": {**_GOOD_LABEL, "timestamp": 1_795_305_600_000.0},
    "event_id empty": {**_GOOD_LABEL, "event_id": ""},
}


def test_the_good_samples_are_valid():
    PREDICTION.validate(_GOOD_PREDICTION)
    LABEL.validate(_GOOD_LABEL)
    assert _decodes("prediction", _GOOD_PREDICTION) and _decodes("label", _GOOD_LABEL)
    # the last second of the numeric range, on both sides of the contract
    edge = {**_GOOD_PREDICTION, "timestamp": MAX_UNIX_SECONDS - 1}
    PREDICTION.validate(edge)
    assert _decodes("prediction", edge)
    # unknown fields are ignored, by the decoder and by the schema
    extra = {**_GOOD_LABEL, "request_id": "r-1"}
    LABEL.validate(extra)
    assert _decodes("label", extra)


@pytest.mark.parametrize("case", list(INVALID_PREDICTIONS))
def test_invalid_predictions_are_refused_by_the_schema_and_the_decoder(case):
    doc = INVALID_PREDICTIONS[case]
    assert not PREDICTION.is_valid(doc)
    assert not _decodes("prediction", doc)


@pytest.mark.parametrize("case", list(INVALID_LABELS))
def test_invalid_labels_are_refused_by_the_schema_and_the_decoder(case):
    doc = INVALID_LABELS[case]
    assert not LABEL.is_valid(doc)
    assert not _decodes("label", doc)
