"""The committed JSON Schemas of the published events: generated from the pydantic models (they
cannot drift), valid draft 2020-12, accepting what the monitor publishes and rejecting the rest,
checked with the jsonschema library."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from stream_monitor.events.json_schemas import (
    SCHEMA_DIALECT,
    json_schemas,
    schema_text,
    write_schemas,
)
from stream_monitor.events.schema import AlertEvent, AlertSignal, RetrainTrigger

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def _wire(event: AlertEvent | RetrainTrigger) -> dict[str, Any]:
    """What a consumer reads: the event as the monitor serialises it (orjson of model_dump)."""
    return orjson.loads(orjson.dumps(event.model_dump()))


def _firing(**extra: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "alert_id": "2b9f6a4e-8c1d-5f3a-9e7b-1c2d3e4f5a6b",
        "dedup_key": "fraud/data_drift/-",
        "status": "firing",
        "severity": "warning",
        "priority": "P1",
        "model_id": "fraud",
        "kind": "data_drift",
        "feature": "amount",
        "signal": "psi",
        "value": 0.41,
        "threshold": 0.12,
        "summary": "The inputs of model 'fraud' drifted.",
        "started_at": 1795305600.0,
        "observed_at": 1795305660.0,
    }
    fields.update(extra)
    return AlertEvent(**fields)


FULL = {
    "model_version": "2026.11.1",
    "segment": "region=eu",
    "dedup_key": "fraud/data_drift/-@region=eu",
    "baseline": 0.02,
    "window": "count 1000",
    "window_events": 1000,
    "rule": "inputs",
    "labels": {"team": "risk", "runbook_url": "https://runbooks.example.com/drift"},
    "signals": [
        AlertSignal(feature="amount", signal="psi", value=0.41, threshold=0.12, breached=True),
        AlertSignal(
            feature=None, signal="model_drift_score", value=0.6, threshold=0.5, breached=True
        ),
    ],
    "signals_total": 2,
    "top_features": ["amount"],
    "model_drift_score": 0.6,
    "suggested_action": "investigate_data_pipeline",
    "retrain": True,
    "published_at": 1795305661.5,
}

SAMPLES = {
    "firing, minimal": _firing(),
    "firing, segment and signals": _firing(**FULL),
    "resolved, minimal": _firing(status="resolved", feature=None, value=0.05),
    "updated, with incident and signal kinds": _firing(
        status="updated",
        incident_id="3f2b8c1e-9d4a-4b7e-8f21-6a5c0d9e7b14",
        kind="performance",
        dedup_key="fraud/performance/-",
        severity="critical",
        priority="P0",
        signals=[
            AlertSignal(
                feature=None,
                signal="error_rate",
                kind="concept_drift",
                value=0.3,
                threshold=0.2,
                breached=True,
            )
        ],
    ),
    "resolved, segment and signals": _firing(**{**FULL, "status": "resolved", "retrain": False}),
}


def test_committed_schemas_are_what_the_models_generate():
    outputs = ["alert-event.schema.json", "retrain-trigger.schema.json"]
    generated = {n: s for n, s in json_schemas().items() if n in outputs}
    assert sorted(generated) == outputs
    for name, schema in generated.items():
        committed = (SCHEMAS / name).read_text(encoding="utf-8")
        assert committed == schema_text(schema), (
            f"docs/schemas/{name} is stale: run "
            "`python -m stream_monitor.events.json_schemas --write-schemas`"
        )


def test_write_schemas_writes_the_same_files(tmp_path):
    paths = write_schemas(tmp_path)
    for p in paths:
        assert p.read_text(encoding="utf-8") == (SCHEMAS / p.name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["alert-event.schema.json", "retrain-trigger.schema.json"])
def test_schemas_are_valid_draft_2020_12_with_an_id(name):
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["$id"].startswith("urn:stream-monitor:schema:")
    Draft202012Validator.check_schema(schema)


def test_alert_schema_documents_every_field_of_version_3():
    schema = json.loads((SCHEMAS / "alert-event.schema.json").read_text())
    props = schema["properties"]
    assert set(props) == set(AlertEvent.model_fields)
    assert schema["$id"] == "urn:stream-monitor:schema:alert-event:3"
    assert props["schema_version"]["default"] == 3
    assert props["status"]["enum"] == ["firing", "updated", "resolved"]
    assert "incident_id" in props and "kind" in schema["$defs"]["AlertSignal"]["properties"]
    for name in ("priority", "signals", "top_features", "suggested_action", "window", "labels"):
        assert name in props
    assert props["suggested_action"]["enum"] == [
        "investigate_data_pipeline",
        "retrain",
        "roll_back",
        "check_labels",
        "investigate",
    ]


@pytest.mark.parametrize("sample", list(SAMPLES), ids=list(SAMPLES))
def test_published_alerts_validate(sample):
    event = _wire(SAMPLES[sample])
    _validator("alert-event.schema.json").validate(event)
    # ... and read back into the same event.
    assert AlertEvent.model_validate(event) == SAMPLES[sample]


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _invalid_alerts() -> dict[str, dict[str, Any]]:
    good = _wire(SAMPLES["firing, segment and signals"])
    bad_signal = copy.deepcopy(good)
    del bad_signal["signals"][0]["breached"]
    return {
        "missing status": _without(good, "status"),
        "missing dedup_key": _without(good, "dedup_key"),
        "missing priority": _without(good, "priority"),
        "wrong status": {**good, "status": "pending"},
        "wrong signal kind": {
            **good,
            "signals": [{**good["signals"][0], "kind": "weather"}],
        },
        "wrong severity": {**good, "severity": "page"},
        "wrong priority": {**good, "priority": "P3"},
        "wrong action": {**good, "suggested_action": "panic"},
        "value not a number": {**good, "value": "high"},
        "NaN sent as null": {**good, "value": None},
        "label not a string": {**good, "labels": {"team": 1}},
        "signal without breached": bad_signal,
        "not an object": [good],  # type: ignore[dict-item]
    }


def test_version_2_events_on_the_topic_are_still_read():
    """Events published before the upgrade (no incident_id, no signal kinds) still parse, so
    the forwarder can resolve what they opened."""
    old = _wire(SAMPLES["firing, segment and signals"])
    del old["incident_id"]
    for s in old["signals"]:
        del s["kind"]
    old["schema_version"] = 2
    a = AlertEvent.model_validate(old)
    assert (a.schema_version, a.incident_id, a.signals[0].kind) == (2, None, None)
    with pytest.raises(ValidationError):
        AlertEvent.model_validate({**old, "schema_version": 4})


@pytest.mark.parametrize("case", list(_invalid_alerts()))
def test_invalid_alerts_are_rejected_by_the_schema_and_the_model(case):
    event = _invalid_alerts()[case]
    assert not _validator("alert-event.schema.json").is_valid(event)
    with pytest.raises(ValidationError):
        AlertEvent.model_validate(event)


def test_retrain_trigger_schema():
    v = _validator("retrain-trigger.schema.json")
    trigger = RetrainTrigger(
        trigger_id="2b9f6a4e-8c1d-5f3a-9e7b-1c2d3e4f5a6b",
        model_id="fraud",
        model_version="2026.11.1",
        reason="performance/accuracy",
        dedup_key="fraud/performance/-",
        features=["amount"],
        observed_at=1795305660.0,
    )
    v.validate(_wire(trigger))
    v.validate(_wire(RetrainTrigger(**{**trigger.model_dump(), "segment": "region=eu"})))
    assert not v.is_valid(_without(_wire(trigger), "model_id"))
    assert not v.is_valid({**_wire(trigger), "features": "amount"})


def test_the_examples_in_docs_alerts_md_are_what_the_code_produces():
    from stream_monitor.alerts.routing import to_alertmanager, to_pagerduty

    doc = (SCHEMAS.parent / "alerts.md").read_text(encoding="utf-8")
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", doc, flags=re.S)]
    event, pagerduty, alertmanager, trigger = blocks
    _validator("alert-event.schema.json").validate(event)
    alert = AlertEvent.model_validate(event)
    assert pagerduty == to_pagerduty(
        alert, pagerduty["routing_key"], client_url=pagerduty["client_url"]
    )
    assert alertmanager == [to_alertmanager(alert, generator_url=alertmanager[0]["generatorURL"])]
    _validator("retrain-trigger.schema.json").validate(trigger)
    RetrainTrigger.model_validate(trigger)
