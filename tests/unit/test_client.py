"""The model services' client (stream_monitor/client): what it puts on the wire, what it refuses
at the call, and that Kafka trouble is counted, never raised and never waited for.

A recording producer stands in for Kafka where the test reads what was produced; the queue-full
and shutdown tests use a real confluent-kafka Producer aimed at a port where no broker listens.
The real broker is in tests/integration/test_client.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_monitor.client import (
    ClientStats,
    InvalidEvent,
    MonitorClient,
    is_sampled,
)
from stream_monitor.events.decode import decode_record
from stream_monitor.events.schema import LabelEvent, PredictionEvent, ScoredPrediction
from stream_monitor.kafka.records import RawRecord

NOW = 1_795_305_600.0
#: Nothing listens on port 1: connections are refused at once, nothing is ever delivered.
NO_BROKER = "127.0.0.1:1"


class RecordingProducer:
    """Records produce() calls; delivery reports are served on poll/flush, like librdkafka."""

    def __init__(self, *, fail_with: BaseException | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail_with = fail_with
        self.delivery_error: Any = None
        self._pending: list[Any] = []
        self._lock = threading.Lock()

    def produce(self, topic, value=None, key=None, *, on_delivery=None, timestamp=0):
        if self.fail_with is not None:
            raise self.fail_with
        with self._lock:
            self.records.append({"topic": topic, "key": key, "value": value, "ts": timestamp})
            self._pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        with self._lock:
            pending, self._pending = self._pending, []
        for cb in pending:
            cb(self.delivery_error, None)
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self._pending)


def _client(producer: Any, **kw: Any) -> MonitorClient:
    kw.setdefault("clock", lambda: NOW)
    return MonitorClient(producer=producer, **kw)


def _decode(rec: dict[str, Any]) -> Any:
    """What the monitor's decoder makes of a produced record (key checked against model_id)."""
    kind = "prediction" if rec["topic"] == "predictions" else "label"
    return decode_record(
        RawRecord(rec["value"], key=rec["key"], topic=rec["topic"]), kind=kind, max_bytes=1 << 20
    )


# --- the wire ---------------------------------------------------------------------------------


def test_prediction_and_label_records_are_what_the_monitor_decodes():
    kafka = RecordingProducer()
    c = _client(kafka, model_id="fraud", model_version="2026.11.1")
    eid = c.log_prediction(
        features={"amount": 35.2, "country": "fr", "is_international": False, "age": None},
        prediction={"label": 0, "score": 0.07},
        segments={"region": "eu"},
    )
    assert c.log_label(eid, 1, timestamp=NOW + 60)
    pred, label = kafka.records
    assert (pred["topic"], label["topic"]) == ("predictions", "labels")
    # both keyed by model_id: the same partition number of the co-partitioned topics
    assert pred["key"] == label["key"] == b"fraud"
    # the record timestamp is the event time in milliseconds
    assert (pred["ts"], label["ts"]) == (1_795_305_600_000, 1_795_305_660_000)
    p, lab = _decode(pred), _decode(label)
    assert p == PredictionEvent(
        event_id=eid,
        model_id="fraud",
        model_version="2026.11.1",
        timestamp=NOW,
        features={"amount": 35.2, "country": "fr", "is_international": False, "age": None},
        prediction=ScoredPrediction(label=0, score=0.07),
        segments={"region": "eu"},
    )
    assert lab == LabelEvent(event_id=eid, model_id="fraud", timestamp=NOW + 60, label=1)
    # a UUID4 event id by default, unique per call
    assert len(eid) == 36 and eid != c.log_prediction(features={}, prediction=1.0)


def test_optional_fields_are_left_out_when_unset():
    kafka = RecordingProducer()
    _client(kafka).log_prediction(model_id="eta", features={"km": 4}, prediction=12.5)
    assert sorted(orjson.loads(kafka.records[0]["value"])) == [
        "event_id",
        "features",
        "model_id",
        "prediction",
        "timestamp",
    ]


def test_timestamps_numpy_scalars_and_nan_features_are_converted():
    kafka = RecordingProducer()
    c = _client(kafka, model_id="m")
    paris = timezone(timedelta(hours=1))
    c.log_prediction(
        features={
            "f64": np.float64(1.5),
            "f32": np.float32(0.25),
            "i64": np.int64(7),
            "flag": np.bool_(True),
            "missing": math.nan,
            "np_missing": np.float64("nan"),
            "text": np.str_("fr"),
        },
        prediction={"label": np.int64(1), "score": np.float32(0.5)},
        timestamp=datetime(2026, 11, 22, 1, 0, tzinfo=paris),
        event_id="e1",
    )
    c.log_label("e1", np.bool_(False), timestamp="2026-11-22T00:01:00Z")
    c.log_label("e1", 1, timestamp=NOW + 120)
    pred, lab_rfc, lab_num = (_decode(r) for r in kafka.records)
    assert pred.features == {
        "f64": 1.5,
        "f32": 0.25,
        "i64": 7,
        "flag": True,
        "missing": None,
        "np_missing": None,
        "text": "fr",
    }
    assert pred.prediction == ScoredPrediction(label=1, score=0.5)
    assert pred.timestamp == NOW  # 01:00 in UTC+1
    assert lab_rfc.label is False and lab_rfc.timestamp == NOW + 60
    assert lab_num.label == 1 and lab_num.timestamp == NOW + 120
    assert [r["ts"] for r in kafka.records] == [
        1_795_305_600_000,
        1_795_305_660_000,
        1_795_305_720_000,
    ]
    # an RFC 3339 string travels as given (the contract accepts it)
    assert orjson.loads(kafka.records[1]["value"])["timestamp"] == "2026-11-22T00:01:00Z"


# --- bad events raise at the call, and send nothing ---------------------------------------------


def _invalid_calls() -> dict[str, tuple[str, dict[str, Any], str]]:
    ok: dict[str, Any] = {"features": {"x": 1.0}, "prediction": 0.5, "model_id": "m"}
    return {
        "no model_id": ("prediction", {**ok, "model_id": None}, "model_id"),
        "empty model_id": ("prediction", {**ok, "model_id": ""}, "model_id"),
        "empty event_id": ("prediction", {**ok, "event_id": ""}, "event_id"),
        "features not a mapping": ("prediction", {**ok, "features": [1.0]}, "mapping"),
        "feature name too long": ("prediction", {**ok, "features": {"x" * 129: 1.0}}, "features"),
        "feature of no JSON type": ("prediction", {**ok, "features": {"x": object()}}, "Type"),
        "feature list": ("prediction", {**ok, "features": {"x": [1, 2]}}, "features.x"),
        "infinite feature": ("prediction", {**ok, "features": {"x": math.inf}}, "finite"),
        "too many features": (
            "prediction",
            {**ok, "features": {f"f{i}": 0 for i in range(2049)}},
            "features",
        ),
        "NaN prediction": ("prediction", {**ok, "prediction": math.nan}, "finite"),
        "infinite score": (
            "prediction",
            {**ok, "prediction": {"label": 1, "score": -math.inf}},
            "finite",
        ),
        "scored, no score": ("prediction", {**ok, "prediction": {"label": 1}}, "score"),
        "class name too long": ("prediction", {**ok, "prediction": "c" * 129}, "prediction"),
        "None prediction": ("prediction", {**ok, "prediction": None}, "prediction"),
        "segment value not a string": ("prediction", {**ok, "segments": {"region": 3}}, "segments"),
        "segments not a mapping": ("prediction", {**ok, "segments": ["eu"]}, "mapping"),
        "version too long": ("prediction", {**ok, "model_version": "v" * 129}, "model_version"),
        "milliseconds": ("prediction", {**ok, "timestamp": NOW * 1000}, "milliseconds"),
        "negative time": ("prediction", {**ok, "timestamp": -1.0}, "timestamp"),
        "naive datetime": ("prediction", {**ok, "timestamp": datetime(2026, 11, 22)}, "naive"),
        "not RFC 3339": ("prediction", {**ok, "timestamp": "yesterday"}, "RFC 3339"),
        "oversized": ("prediction", {**ok, "features": {"note": "n" * 1_100_000}}, "limit is"),
        "None label": ("label", {"event_id": "e", "label": None, "model_id": "m"}, "label"),
        "NaN label": ("label", {"event_id": "e", "label": math.nan, "model_id": "m"}, "finite"),
        "label event_id an int": (
            "label",
            {"event_id": 7, "label": 1, "model_id": "m"},
            "event_id",
        ),
        "label without model_id": ("label", {"event_id": "e", "label": 1}, "model_id"),
    }


@pytest.mark.parametrize("case", list(_invalid_calls()))
def test_an_invalid_event_raises_value_error_and_sends_nothing(case):
    kind, kwargs, why = _invalid_calls()[case]
    kafka = RecordingProducer()
    c = _client(kafka)
    call = c.log_prediction if kind == "prediction" else c.log_label
    with pytest.raises(ValueError, match=why) as info:
        call(**kwargs)
    assert isinstance(info.value, InvalidEvent)
    assert kafka.records == []
    assert c.stats == _zero_stats()


def _zero_stats(**counts: int) -> ClientStats:
    fields = dict.fromkeys(
        (
            "predictions_queued",
            "labels_queued",
            "sampled_out",
            "dropped_queue_full",
            "dropped_closed",
            "produce_errors",
            "delivered",
            "delivery_failed",
            "client_errors",
            "in_queue",
        ),
        0,
    )
    return ClientStats(**{**fields, **counts}, last_error=None)  # type: ignore[arg-type]


def test_invalid_events_raise_even_when_sampled_out():
    c = _client(RecordingProducer(), model_id="m", sample_rate=0.0)
    with pytest.raises(InvalidEvent):
        c.log_prediction(features={"x": object()}, prediction=1.0)
    assert c.log_prediction(features={"x": 1}, prediction=1.0)
    assert c.stats.sampled_out == 1


def test_constructor_refuses_bad_settings():
    with pytest.raises(ValueError, match="sample_rate"):
        MonitorClient(producer=RecordingProducer(), sample_rate=1.5)
    with pytest.raises(ValueError, match="bootstrap_servers"):
        MonitorClient()


# --- sampling ---------------------------------------------------------------------------------


def test_sampling_keeps_a_predictions_label_and_skips_a_skipped_ones():
    kafka = RecordingProducer()
    c = _client(kafka, model_id="m", sample_rate=0.3)
    ids = [f"req-{i}" for i in range(2_000)]
    for eid in ids:
        c.log_prediction(features={"x": 1.0}, prediction=0.5, event_id=eid)
    for eid in ids:
        c.log_label(eid, 0.5)
    sent = {t: [orjson.loads(r["value"])["event_id"] for r in kafka.records if r["topic"] == t]
            for t in ("predictions", "labels")}  # fmt: skip
    assert sent["predictions"] == sent["labels"]
    assert sent["predictions"] == [e for e in ids if is_sampled(e, 0.3)]
    n = len(sent["predictions"])
    # 2,000 draws at p = 0.3: sd 20.5; five of them either side
    assert 600 - 103 < n < 600 + 103
    s = c.stats
    assert (s.predictions_queued, s.labels_queued, s.sampled_out) == (n, n, 2 * (2_000 - n))


def test_sampling_is_the_same_in_every_process():
    """A label may be logged by another process than its prediction (a feedback service): the
    decision must not depend on Python's per-process string hash."""
    ids = [f"order-{i}" for i in range(500)]
    here = [is_sampled(e, 0.5) for e in ids]
    code = (
        "import json, sys; from stream_monitor.client import is_sampled; "
        "print(json.dumps([is_sampled(f'order-{i}', 0.5) for i in range(500)]))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == here
    assert 150 < sum(here) < 350


def test_sample_rate_bounds():
    assert all(is_sampled(f"e{i}", 1.0) for i in range(100))
    assert not any(is_sampled(f"e{i}", 0.0) for i in range(100))
    # monotone in the rate: an id sampled at 0.2 is sampled at 0.5
    assert all(is_sampled(f"e{i}", 0.5) for i in range(1_000) if is_sampled(f"e{i}", 0.2))


# --- Kafka trouble is counted, never raised -----------------------------------------------------


def test_a_full_local_queue_drops_and_counts_instead_of_blocking():
    """A real producer with room for 5 records and no broker: the 6th record on is dropped,
    and close() gives up on the 5 queued ones (counted as failed deliveries)."""
    c = MonitorClient(
        NO_BROKER,
        model_id="m",
        producer_config={"queue.buffering.max.messages": 5, "linger.ms": 5},
    )
    ids = [c.log_prediction(features={"x": float(i)}, prediction=0.5) for i in range(12)]
    assert len(set(ids)) == 12  # every call still returns its event id
    assert not c.log_label(ids[0], 0.5)  # the label is dropped too
    s = c.stats
    assert (s.predictions_queued, s.dropped_queue_full, s.in_queue) == (5, 8, 5)
    assert s.dropped == 8 and s.delivered == 0
    assert "queue is full" in (s.last_error or "")
    assert c.close(timeout=0) == 5
    s = c.stats
    assert (s.delivery_failed, s.delivered, s.in_queue) == (5, 0, 0)
    assert c.closed


def test_events_after_close_are_counted_not_raised():
    c = MonitorClient(NO_BROKER, model_id="m")
    c.close(timeout=0)
    assert c.close() == 0  # idempotent
    eid = c.log_prediction(features={"x": 1.0}, prediction=0.5)
    assert isinstance(eid, str)
    assert not c.log_label(eid, 0.5)
    assert c.stats.dropped_closed == 2
    assert c.flush(1) == 0


def test_context_manager_closes():
    kafka = RecordingProducer()
    with _client(kafka, model_id="m") as c:
        c.log_prediction(features={}, prediction=1.0)
    assert c.closed
    assert c.stats.delivered == 1


@pytest.mark.parametrize(
    "exc",
    [KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), RuntimeError("closed")],
    ids=["KafkaException", "RuntimeError"],
)
def test_produce_errors_are_counted_not_raised(exc):
    c = _client(RecordingProducer(fail_with=exc), model_id="m")
    eid = c.log_prediction(features={"x": 1.0}, prediction=0.5)
    assert not c.log_label(eid, 0.5)
    s = c.stats
    assert (s.produce_errors, s.predictions_queued, s.labels_queued) == (2, 0, 0)
    assert s.last_error is not None and "produce failed" in s.last_error


def test_delivery_reports_are_counted():
    kafka = RecordingProducer()
    c = _client(kafka, model_id="m")
    c.log_prediction(features={}, prediction=1.0)  # its report is served by the call's poll
    kafka.delivery_error = KafkaError(KafkaError._MSG_TIMED_OUT)
    c.log_prediction(features={}, prediction=1.0)
    c.log_label("x", 1.0)
    s = c.stats
    assert (s.delivered, s.delivery_failed) == (1, 2)
    assert "Local: Message timed out" in (s.last_error or "")


def test_kafka_trouble_is_logged_once_per_burst_and_counter(caplog):
    kafka = RecordingProducer(fail_with=BufferError())
    c = _client(kafka, model_id="m")
    with caplog.at_level(logging.WARNING, logger="stream_monitor.client"):
        for _ in range(100):
            c.log_prediction(features={}, prediction=1.0)
        kafka.fail_with = KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))
        for _ in range(50):
            c.log_prediction(features={}, prediction=1.0)
    assert (c.stats.dropped_queue_full, c.stats.produce_errors) == (100, 50)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "counter=dropped_queue_full" in messages[0]
    assert "counter=produce_errors" in messages[1]


def test_threads_share_one_client():
    kafka = RecordingProducer()
    c = _client(kafka, model_id="m")

    def work() -> None:
        for i in range(1_000):
            c.log_label(c.log_prediction(features={"i": i}, prediction=0.5), 0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.close()
    s = c.stats
    assert (s.predictions_queued, s.labels_queued, s.delivered) == (4_000, 4_000, 8_000)
    assert len(kafka.records) == 8_000


# --- what importing it costs ----------------------------------------------------------------------


def test_importing_the_client_loads_no_numerics_and_no_monitor():
    code = "import json, sys; import stream_monitor.client; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "stream_monitor.client.emitter" in loaded and "confluent_kafka" in loaded
    heavy = {"numpy", "scipy", "river", "pandas", "pyarrow", "sklearn", "prometheus_client"}
    ours = {
        "stream_monitor.config",
        "stream_monitor.stats",
        "stream_monitor.monitor",
        "stream_monitor.alerts",
        "stream_monitor.app",
        "stream_monitor.events.json_schemas",
    }
    assert not {m for m in loaded if m.split(".")[0] in heavy}
    assert not {m for m in loaded if any(m == o or m.startswith(o + ".") for o in ours)}


def test_stats_serves_the_delivery_reports_that_arrived(monkeypatch):
    """A quiet service's counters are current: reading them serves waiting reports."""
    kafka = RecordingProducer()
    c = _client(kafka, model_id="m")
    with monkeypatch.context() as m:
        m.setattr(kafka, "poll", lambda timeout=0: 0)  # the report arrives after the call
        c.log_prediction(features={}, prediction=1.0)
    assert kafka._pending  # not served by the call
    s = c.stats
    assert (s.delivered, s.in_queue) == (1, 0)
