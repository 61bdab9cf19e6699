"""The client of model services: log predictions and labels to the monitor's topics.

``MonitorClient`` validates each event against the wire contract (docs/wire-contract.md, JSON
Schemas in docs/schemas/prediction-event.schema.json and docs/schemas/label-event.schema.json)
at the call, then hands it to a confluent-kafka producer without ever blocking the service:
when Kafka is slow or down, events are dropped and counted (``MonitorClient.stats``), never
raised. How to instrument a service: docs/client.md; an example: examples/fastapi_service/.

Importing it loads neither NumPy nor the monitor: only the wire contract, orjson, pydantic and
confluent-kafka.
"""

from __future__ import annotations

from stream_monitor.client.emitter import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_PRODUCER_CONFIG,
    ClientStats,
    InvalidEvent,
    MonitorClient,
    is_sampled,
)

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_PRODUCER_CONFIG",
    "ClientStats",
    "InvalidEvent",
    "MonitorClient",
    "is_sampled",
]
