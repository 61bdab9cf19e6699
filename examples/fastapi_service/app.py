"""A toy fraud model served by FastAPI, instrumented with ``stream_monitor.client``.

* ``POST /predict`` scores a transaction and logs the prediction (features, output, event id);
  the response carries the event id, which the caller sends back with the outcome.
* ``POST /feedback`` logs the true outcome of an earlier prediction (the label).
* ``GET /monitoring`` shows the client's counters (queued, dropped, delivered...).

The client is created when the app starts and flushed when it stops (FastAPI's ``lifespan``).
Logging never blocks a request: when Kafka is slow or down, events are dropped and counted.

Run it (``pip install -e ".[examples]"``; a broker and the monitor as in the README)::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \\
        uvicorn --app-dir examples/fastapi_service app:app --port 8000

Settings (environment): ``KAFKA_BOOTSTRAP_SERVERS`` (default ``127.0.0.1:9092``),
``PREDICTIONS_TOPIC`` (``predictions``), ``LABELS_TOPIC`` (``labels``), ``MONITOR_SAMPLE_RATE``
(``1.0``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from stream_monitor.client import MonitorClient

log = logging.getLogger("fraud_service")

MODEL_ID = "fraud-detector"
MODEL_VERSION = "toy-1"
#: How long shutdown waits for the last monitoring events to reach Kafka.
FLUSH_TIMEOUT_S = 10.0


class Transaction(BaseModel):
    """The model's input: these fields are also the monitored features."""

    amount: float = Field(ge=0, allow_inf_nan=False)
    country: str = Field(min_length=2, max_length=2)
    is_international: bool = False
    customer_age: int | None = Field(default=None, ge=18, le=120)


class PredictRequest(BaseModel):
    transaction: Transaction
    #: The caller's id for this request, used as the event id (a UUID when absent). Bounded
    #: here so that the monitoring client never refuses it (the wire contract allows 256).
    request_id: str | None = Field(default=None, min_length=1, max_length=128)
    #: A segment of the monitor (``segments.keys = ["region"]`` in its configuration).
    region: str | None = Field(default=None, min_length=1, max_length=32)


class PredictResponse(BaseModel):
    event_id: str
    is_fraud: bool
    score: float


class Feedback(BaseModel):
    event_id: str = Field(min_length=1, max_length=256)
    is_fraud: bool


class FeedbackResponse(BaseModel):
    #: False when the label was sampled out or dropped (Kafka down): never an error.
    queued: bool


def fraud_score(tx: Transaction) -> float:
    """The toy model: a logistic score of the amount, the country and the age."""
    z = -4.0 + 0.9 * math.log1p(tx.amount) / math.log(10) + 1.2 * tx.is_international
    if tx.country.lower() not in {"fr", "de", "us", "gb"}:
        z += 0.8
    if tx.customer_age is not None and tx.customer_age < 25:
        z += 0.5
    return 1.0 / (1.0 + math.exp(-z))


def create_app(
    *,
    bootstrap_servers: str | None = None,
    predictions_topic: str | None = None,
    labels_topic: str | None = None,
    sample_rate: float | None = None,
) -> FastAPI:
    """The service; arguments override the environment (tests pass their broker and topics)."""
    env = os.environ
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers
        or env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        "predictions_topic": predictions_topic or env.get("PREDICTIONS_TOPIC", "predictions"),
        "labels_topic": labels_topic or env.get("LABELS_TOPIC", "labels"),
        "sample_rate": sample_rate
        if sample_rate is not None
        else float(env.get("MONITOR_SAMPLE_RATE", "1.0")),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        monitor = MonitorClient(model_id=MODEL_ID, model_version=MODEL_VERSION, **settings)
        app.state.monitor = monitor
        try:
            yield
        finally:
            lost = monitor.close(timeout=FLUSH_TIMEOUT_S)
            log.info("monitoring client closed lost=%d stats=%s", lost, monitor.stats)

    app = FastAPI(title="fraud-detector (toy)", lifespan=lifespan)

    @app.post("/predict")
    def predict(req: PredictRequest, request: Request) -> PredictResponse:
        tx = req.transaction
        score = fraud_score(tx)
        is_fraud = score >= 0.5
        monitor: MonitorClient = request.app.state.monitor
        event_id = monitor.log_prediction(
            features=tx.model_dump(),
            prediction={"label": int(is_fraud), "score": score},
            event_id=req.request_id,
            segments={"region": req.region} if req.region else None,
        )
        return PredictResponse(event_id=event_id, is_fraud=is_fraud, score=score)

    @app.post("/feedback", status_code=202)
    def feedback(fb: Feedback, request: Request) -> FeedbackResponse:
        monitor: MonitorClient = request.app.state.monitor
        return FeedbackResponse(queued=monitor.log_label(fb.event_id, int(fb.is_fraud)))

    @app.get("/monitoring")
    def monitoring(request: Request) -> dict[str, Any]:
        stats = request.app.state.monitor.stats
        return {**dataclasses.asdict(stats), "dropped": stats.dropped}

    return app


app = create_app()
