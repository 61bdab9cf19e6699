"""JSON Schemas of every event on the wire, generated from the pydantic models of
:mod:`stream_monitor.events.schema`, so they cannot drift from what the monitor accepts and
publishes, and committed in ``docs/schemas/`` (the tests check they are current)::

    python -m stream_monitor.events.json_schemas --write-schemas [--dir docs/schemas]

- what the monitor reads: ``prediction-event`` and ``label-event`` (for producers written in
  other languages and contract tests; the monitor itself validates with the models). One check
  the schemas cannot state: an RFC 3339 timestamp must also fall between 1970 and year 5138
  (the range of numeric ones);
- what it publishes: ``alert-event`` and ``retrain-trigger``, whose ``$id`` names their
  ``schema_version``.

Examples
--------
>>> s = json_schemas()["prediction-event.schema.json"]
>>> s["$id"]
'urn:stream-monitor:schema:prediction-event'
>>> s["required"]
['event_id', 'model_id', 'timestamp', 'features', 'prediction']
>>> [t["type"] for t in s["properties"]["timestamp"]["anyOf"]]
['number', 'string']
>>> s = json_schemas()["alert-event.schema.json"]
>>> s["$id"], s["properties"]["status"]["enum"]
('urn:stream-monitor:schema:alert-event:3', ['firing', 'updated', 'resolved'])
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from stream_monitor.events.schema import (
    AlertEvent,
    LabelEvent,
    PredictionEvent,
    RetrainTrigger,
    _to_unix_seconds,
)

__all__ = [
    "MAX_UNIX_SECONDS",
    "SCHEMA_DIALECT",
    "json_schemas",
    "main",
    "schema_text",
    "write_schemas",
]

#: The dialect of every committed schema.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Numeric timestamps are Unix seconds in [0, 1e11): schema._to_unix_seconds refuses the rest
#: (milliseconds above all).
MAX_UNIX_SECONDS = 100_000_000_000

#: What the monitor reads (validated as input) ...
_INPUTS: dict[str, type[BaseModel]] = {
    "prediction-event": PredictionEvent,
    "label-event": LabelEvent,
}
#: ... and what it publishes (as serialised; ``$id`` with the ``schema_version``).
_OUTPUTS: dict[str, type[BaseModel]] = {
    "alert-event": AlertEvent,
    "retrain-trigger": RetrainTrigger,
}

_TIMESTAMP: JsonSchemaValue = {
    "anyOf": [
        {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": MAX_UNIX_SECONDS,
            "description": "Unix seconds (not milliseconds)",
        },
        {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with a UTC offset, e.g. 2026-11-22T10:00:00Z",
        },
    ],
    "description": "event time",
}


class _WireSchema(GenerateJsonSchema):
    """Pydantic's generator, plus what a ``BeforeValidator`` hides: the timestamp validator
    converts numbers and strings, while the field's declared type is only ``float``."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        if schema["function"]["function"] is _to_unix_seconds:
            return dict(_TIMESTAMP)
        return super().function_before_schema(schema)


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema (draft 2020-12) of each event, by file name."""
    out = {}
    for name, model in _INPUTS.items():
        body = model.model_json_schema(mode="validation", schema_generator=_WireSchema)
        out[f"{name}.schema.json"] = {
            "$schema": SCHEMA_DIALECT,
            "$id": f"urn:stream-monitor:schema:{name}",
            **body,
        }
    for name, model in _OUTPUTS.items():
        version = model.model_fields["schema_version"].default
        body = model.model_json_schema(mode="serialization")
        out[f"{name}.schema.json"] = {
            "$schema": SCHEMA_DIALECT,
            "$id": f"urn:stream-monitor:schema:{name}:{version}",
            **body,
        }
    return out


def schema_text(schema: dict[str, Any]) -> str:
    """The committed form of a schema: 2-space indented JSON, one final newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    """Write :func:`json_schemas` into ``directory``; return the paths written."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        p = d / name
        p.write_text(schema_text(schema), encoding="utf-8")
        paths.append(p)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stream_monitor.events.json_schemas --write-schemas [--dir DIR]``."""
    p = argparse.ArgumentParser(
        prog="python -m stream_monitor.events.json_schemas",
        description="Write the JSON Schemas of the events read and published.",
    )
    p.add_argument("--write-schemas", action="store_true", required=True)
    p.add_argument("--dir", default="docs/schemas", help="default docs/schemas")
    args = p.parse_args(argv)
    for path in write_schemas(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
