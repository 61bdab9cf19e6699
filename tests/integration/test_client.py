"""The model services' client on the real broker: what it sends is what the monitor reads.

Predictions and labels logged with ``MonitorClient`` are consumed by the monitor itself (the
same ``Application`` as ``stream-monitor run``): none is dead-lettered, every label joins its
prediction (sampled ones included), and the windowed performance computed from the joined
pairs is exactly the one the labels were built to give. The FastAPI example service is driven
through FastAPI's TestClient and its records are read back from the topics.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from stream_monitor.client import MonitorClient, is_sampled
from stream_monitor.events.decode import decode_record
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.kafka.clients import ensure_input_topics

from .kafka_utils import monitor_config, read_all, running_app, scrape, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 3
PER_MODEL = 300
START = 1_790_000_000.0
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_service" / "app.py"


def _metric(m: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in m.items() if n == name and want <= set(lab))


def test_the_monitor_decodes_and_joins_what_the_client_sends(kafka_bootstrap, topic_names):
    t = topic_names
    ensure_input_topics(
        kafka_bootstrap, partitions=PARTITIONS, predictions=t["predictions"], labels=t["labels"]
    )
    topics = {"predictions_topic": t["predictions"], "labels_topic": t["labels"]}
    client = MonitorClient(kafka_bootstrap, **topics)
    # A second service sends the labels of a sampled model: it must pick the same events.
    sampled_preds = MonitorClient(kafka_bootstrap, model_id="sampled", sample_rate=0.5, **topics)
    sampled_labels = MonitorClient(kafka_bootstrap, model_id="sampled", sample_rate=0.5, **topics)

    for i in range(PER_MODEL):
        ts = START + i
        cls = "fraud" if i % 7 == 0 else "ok"
        # classifier: every label equals its prediction (accuracy exactly 1)
        eid = client.log_prediction(
            model_id="clf",
            features={"amount": 10.0 + i % 50, "country": ["fr", "de", "us"][i % 3]},
            prediction={"label": cls, "score": 0.9 if cls == "fraud" else 0.2},
            segments={"region": "eu" if i % 2 else "us"},
            timestamp=ts,
        )
        client.log_label(eid, cls, model_id="clf", timestamp=ts + 30)
        # regressor: every label is its prediction + 2 (MAE exactly 2)
        pred = 5.0 + (i % 13) * 0.5
        eid = client.log_prediction(
            model_id="reg", features={"km": i % 13}, prediction=pred, timestamp=ts
        )
        client.log_label(eid, pred + 2.0, model_id="reg", timestamp=ts + 30)
        # sampled regressor: labels from another client
        sampled_preds.log_prediction(
            features={"km": i % 13}, prediction=pred, event_id=f"s-{i}", timestamp=ts
        )
    for i in range(PER_MODEL):
        sampled_labels.log_label(f"s-{i}", 5.0 + (i % 13) * 0.5 + 2.0, timestamp=START + i + 30)

    for c in (client, sampled_preds, sampled_labels):
        assert c.close(timeout=30) == 0
        s = c.stats
        assert s.delivery_failed == 0 and s.dropped == 0, s
        assert s.delivered == s.predictions_queued + s.labels_queued, s
    kept = sum(is_sampled(f"s-{i}", 0.5) for i in range(PER_MODEL))
    assert 100 < kept < 200
    assert sampled_preds.stats.predictions_queued == sampled_labels.stats.labels_queued == kept
    produced = 4 * PER_MODEL + 2 * kept

    cfg = monitor_config(
        kafka_bootstrap,
        t,
        performance={"window": {"kind": "count", "size": 50}, "regression_metric": "mae"},
    )
    with running_app(cfg) as app:
        assert app.server is not None
        port = app.server.port

        def joined() -> float:
            return _metric(scrape(port), "stream_monitor_model_labelled_predictions_total")

        wait_until(
            lambda: _metric(scrape(port), "stream_monitor_events_consumed_total") == produced,
            120,
            f"{produced} records consumed",
        )
        wait_until(lambda: joined() == 2 * PER_MODEL + kept, 60, "every label joined")
        m = scrape(port)

    assert _metric(m, "stream_monitor_events_invalid_total") == 0
    assert _metric(m, "stream_monitor_label_join_unmatched_labels_total") == 0
    for model, n in (("clf", PER_MODEL), ("reg", PER_MODEL), ("sampled", kept)):
        assert _metric(m, "stream_monitor_model_events_total", model_id=model) == n
        assert _metric(m, "stream_monitor_model_labelled_predictions_total", model_id=model) == n
    perf = "stream_monitor_model_performance"
    assert _metric(m, perf, model_id="clf", metric="accuracy", **{"class": ""}) == 1.0
    assert _metric(m, perf, model_id="reg", metric="mae", **{"class": ""}) == pytest.approx(2.0)
    assert _metric(m, perf, model_id="sampled", metric="mae", **{"class": ""}) == pytest.approx(2.0)
    # every label waited 30 s of event time for its prediction
    delays = "stream_monitor_label_delay_seconds_sum"
    assert _metric(m, delays, model_id="clf") == pytest.approx(30.0 * PER_MODEL)


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_service_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # FastAPI resolves the endpoints' annotations through it
    spec.loader.exec_module(module)
    return module


def test_the_fastapi_example_logs_predictions_and_feedback(kafka_bootstrap, topic_names):
    from fastapi.testclient import TestClient

    t = topic_names
    ensure_input_topics(
        kafka_bootstrap, partitions=PARTITIONS, predictions=t["predictions"], labels=t["labels"]
    )
    example = _load_example()
    app = example.create_app(
        bootstrap_servers=kafka_bootstrap,
        predictions_topic=t["predictions"],
        labels_topic=t["labels"],
    )
    transactions = [
        {"amount": 12.5, "country": "fr", "customer_age": 41},
        {"amount": 30_000.0, "country": "br", "is_international": True, "customer_age": 19},
        {"amount": 80.0, "country": "de"},
    ]
    responses = []
    with TestClient(app) as http:  # runs the lifespan: the client is created, then closed
        for i, tx in enumerate(transactions):
            body: dict[str, Any] = {"transaction": tx, "region": "eu"}
            if i == 0:
                body["request_id"] = "req-0001"
            r = http.post("/predict", json=body)
            assert r.status_code == 200, r.text
            responses.append(r.json())
        for r in responses:
            fb = http.post("/feedback", json={"event_id": r["event_id"], "is_fraud": True})
            assert fb.status_code == 202 and fb.json() == {"queued": True}
        # bad input is the service's 422, and the client never saw it
        assert http.post("/predict", json={"transaction": {"amount": -1}}).status_code == 422
        stats = http.get("/monitoring").json()
        assert stats["predictions_queued"] == 3 and stats["labels_queued"] == 3
        monitor = app.state.monitor
    # the lifespan's shutdown flushed everything
    assert monitor.closed
    s = monitor.stats
    assert (s.delivered, s.delivery_failed, s.dropped) == (6, 0, 0)

    assert responses[0]["event_id"] == "req-0001"
    assert [r["is_fraud"] for r in responses] == [False, True, False]

    preds = read_all(kafka_bootstrap, t["predictions"])
    labels = read_all(kafka_bootstrap, t["labels"])
    decoded_p = [decode_record(r, kind="prediction", max_bytes=1 << 20) for r in preds]
    decoded_l = [decode_record(r, kind="label", max_bytes=1 << 20) for r in labels]
    assert all(isinstance(e, PredictionEvent) for e in decoded_p), decoded_p
    assert all(isinstance(e, LabelEvent) for e in decoded_l), decoded_l
    by_id = {e.event_id: e for e in decoded_p}
    assert set(by_id) == {r["event_id"] for r in responses}
    for r, tx in zip(responses, transactions, strict=True):
        e = by_id[r["event_id"]]
        assert (e.model_id, e.model_version) == ("fraud-detector", "toy-1")
        assert e.features == {
            "amount": tx["amount"],
            "country": tx["country"],
            "is_international": tx.get("is_international", False),
            "customer_age": tx.get("customer_age"),
        }
        assert e.prediction_label() == str(int(r["is_fraud"]))
        assert e.prediction_score() == pytest.approx(r["score"])
        assert e.segments == {"region": "eu"}
    assert {(e.event_id, e.label) for e in decoded_l} == {(r["event_id"], 1) for r in responses}
    # keyed by model_id, and a model's predictions and labels share one partition number
    assert {r.key() for r in preds + labels} == {b"fraud-detector"}
    assert len({r.partition() for r in preds + labels}) == 1
    # the record timestamp is the event time
    for r in preds:
        event = orjson.loads(r.value())
        assert r.timestamp()[1] == round(event["timestamp"] * 1000)
