"""No exception skips input: a record whose processing raises goes to the dead-letter topic
with reason ``processing_error`` and its original bytes; the rest of the batch is processed.

The trigger found in the wild (a regression prediction of -1.7e308 and its label 1.7e308,
which made the absolute error infinite and the concept-drift monitor raise) no longer raises:
every statistic takes magnitudes up to 1e100 (stats/bounds.py; the last test here). So the
failure of one model's label processing is simulated: its concept-drift monitor raises the
ValueError that non-finite errors raise.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.app import Application
from stream_monitor.checkpoint import OutputRecord
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.kafka.records import RawRecord
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.monitor.partition import PartitionState

CFG = MonitorConfig.model_validate(
    {"bootstrap_servers": "unused:9092", "processing_guarantee": "at_least_once"}
)
BAD = 5  # the event whose score and label are huge


@pytest.fixture
def bad_model_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """The "bad" model's label processing raises (as it did on an infinite error)."""
    original = ModelMonitor.update_errors

    def update_errors(self: ModelMonitor, pairs: Any, observed_at: float) -> Any:
        if self.model_id == "bad":
            raise ValueError("absolute errors must be finite and >= 0")
        return original(self, pairs, observed_at)

    monkeypatch.setattr(ModelMonitor, "update_errors", update_errors)


def _prediction(model: str, i: int) -> dict[str, Any]:
    return {
        "event_id": f"{model}-{i}",
        "model_id": model,
        "timestamp": float(i),
        "features": {"x": float(i % 7)},
        "prediction": -1.7e308 if (model == "bad" and i == BAD) else 0.5,
    }


def _label(model: str, i: int) -> dict[str, Any]:
    truth = 1.7e308 if (model == "bad" and i == BAD) else 0.4
    return {"event_id": f"{model}-{i}", "model_id": model, "timestamp": 100.0 + i, "label": truth}


@pytest.mark.usefixtures("bad_model_raises")
def test_one_models_failure_leaves_the_others_processed() -> None:
    st = PartitionState(0, CFG)
    for model in ("bad", "good"):
        st.process([PredictionEvent.model_validate(_prediction(model, i)) for i in range(50)], [])
    labels = [LabelEvent.model_validate(_label(m, i)) for i in range(50) for m in ("bad", "good")]
    st.process([], labels)
    (failure,) = st.take_failures()
    assert isinstance(failure.error, ValueError)
    assert {e.model_id for e in failure.events} == {"bad"} and len(failure.events) == 50
    assert st.models["good"].concept.n == 50  # the other model's labels were used
    assert st.take_failures() == []


class _Collecting:
    """The part of checkpoint.Checkpoint that process_batch uses."""

    def __init__(self) -> None:
        self.outputs: list[OutputRecord] = []
        self.offsets: dict[tuple[str, int], int] = {}

    def add_offsets(self, topic: str, partition: int, offset: int, count: int) -> None:
        self.offsets[(topic, partition)] = offset + 1

    def add_output(self, rec: OutputRecord) -> None:
        self.outputs.append(rec)


@pytest.mark.usefixtures("bad_model_raises")
def test_the_application_dead_letters_the_failed_records_and_goes_on() -> None:
    app = Application(CFG, registry=CollectorRegistry(), serve_metrics=False)
    ckpt = app._ckpt = _Collecting()  # type: ignore[assignment]
    app.states[0] = PartitionState(0, CFG)
    preds = [
        RawRecord(orjson.dumps(_prediction(m, i)), key=m.encode(), topic="predictions", offset=k)
        for k, (i, m) in enumerate((i, m) for i in range(50) for m in ("bad", "good"))
    ]
    app.process_batch(preds)
    labels = [
        RawRecord(orjson.dumps(_label(m, i)), key=m.encode(), topic="labels", offset=k)
        for k, (i, m) in enumerate((i, m) for i in range(50) for m in ("bad", "good"))
    ]
    app.process_batch(labels)  # must not raise
    dead = [r for r in ckpt.outputs if r.topic == CFG.topics.dead_letter]
    assert len(dead) == 50
    headers = [dict(r.headers or []) for r in dead]
    assert {h["x-dead-letter-reason"] for h in headers} == {b"processing_error"}
    assert all(h["x-dead-letter-detail"].startswith(b"ValueError: ") for h in headers)
    # the original bytes, each record of the failed model's labels once
    assert sorted(r.value for r in dead) == sorted(
        r.value() for r in labels if r.key() == b"bad"
    )  # fmt: skip
    assert ckpt.offsets[("labels", 0)] == len(labels)  # every record accounted for
    assert app.states[0].models["good"].concept.n == 50
    reason = {"topic": "labels", "reason": "processing_error"}
    assert app.registry.get_sample_value("stream_monitor_events_invalid_total", reason) == 50


@pytest.mark.usefixtures("bad_model_raises")
@pytest.mark.parametrize("events", ["pydantic", "decoded"])
def test_a_replay_counts_the_failed_records_as_invalid_and_goes_on(events: str) -> None:
    """With pydantic events, and with the replay's own decode (msgspec's Predictions and
    Labels): the failed labels are counted as labels."""
    from stream_monitor.backtest import Replay

    replay = Replay(CFG)
    for model in ("bad", "good"):
        if events == "pydantic":
            preds: list[Any] = [
                PredictionEvent.model_validate(_prediction(model, i)) for i in range(50)
            ]
            replay.predictions += len(preds)
        else:
            raw = [RawRecord(orjson.dumps(_prediction(model, i))) for i in range(50)]
            preds = replay.decode_many(raw, "prediction")
        replay.process({0: preds}, {})
    pairs = [(m, i) for i in range(50) for m in ("bad", "good")]
    if events == "pydantic":
        labels: list[Any] = [LabelEvent.model_validate(_label(m, i)) for m, i in pairs]
        replay.labels += len(labels)
    else:
        labels = replay.decode_many(
            [RawRecord(orjson.dumps(_label(m, i))) for m, i in pairs], "label"
        )
        assert type(labels[0]).__name__ == "Label"
    replay.process({}, {0: labels})  # must not raise
    assert replay.invalid[("label", "processing_error")] == 50
    assert (replay.predictions, replay.labels) == (100, 50)
    assert replay.states[0].models["good"].concept.n == 50


def test_a_failure_outside_any_one_model_fails_the_partitions_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st = PartitionState(0, CFG)
    preds = [PredictionEvent.model_validate(_prediction("good", i)) for i in range(20)]

    def broken(*a: Any, **k: Any) -> list[Any]:
        raise RuntimeError("tracker bug")

    monkeypatch.setattr(st.tracker, "observe_many", broken)
    assert st.process(preds, []) == []  # does not raise
    (failure,) = st.take_failures()
    assert isinstance(failure.error, RuntimeError) and failure.events == preds


def test_the_huge_score_and_label_of_the_wild_are_used_not_failed() -> None:
    """-1.7e308 predicted and 1.7e308 true count as -1e100 and 1e100: a finite error of 2e100,
    used like any other; the state stays finite (its JSON round-trips unchanged)."""
    st = PartitionState(0, CFG)
    st.process([PredictionEvent.model_validate(_prediction("bad", i)) for i in range(50)], [])
    st.process([], [LabelEvent.model_validate(_label("bad", i)) for i in range(50)])
    assert st.take_failures() == []
    assert st.models["bad"].concept.n == 50
    snap = st.snapshot()
    assert orjson.loads(orjson.dumps(snap)) == snap
