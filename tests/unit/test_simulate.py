"""Tests of the synthetic traffic generator and the simulation producer loop."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pytest
from scipy import stats

from stream_monitor import simulate as simulate_module
from stream_monitor.events.decode import DeadLetter, decode_record
from stream_monitor.kafka.records import RawRecord
from stream_monitor.simulate import (
    ARCHETYPES,
    DRIFTED_FEATURE,
    FEATURES,
    NULL_RATE,
    STABLE_FEATURES,
    Record,
    TrafficGenerator,
    bad_records,
    run_simulation,
)

N_DRIFT = 45_000
DRIFT_AT = 22_500


def _predictions(records: Iterable[Record]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.topic == "predictions"]


def _labels(records: Iterable[Record]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.topic == "labels"]


@pytest.fixture(scope="module")
def drift_run() -> list[Record]:
    return list(TrafficGenerator(seed=11, drift_at=DRIFT_AT).events(N_DRIFT))


@pytest.fixture(scope="module")
def no_drift_run() -> list[Record]:
    return list(TrafficGenerator(seed=11, drift_at=None).events(N_DRIFT))


def _index(event: dict[str, Any]) -> int:
    return int(event["event_id"].rsplit("-", 1)[1])


def _column(preds: list[dict[str, Any]], model: str, feature: str, *, after: bool) -> list[Any]:
    """Non-null values of one feature of one model, before or after DRIFT_AT."""
    return [
        p["features"][feature]
        for p in preds
        if p["model_id"] == model
        and (_index(p) >= DRIFT_AT) == after
        and p["features"][feature] is not None
    ]


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_records() -> None:
    a = list(TrafficGenerator(seed=42, drift_at=300).events(1_000))
    b = list(TrafficGenerator(seed=42, drift_at=300).events(1_000))
    assert a == b


def test_events_restarts_on_each_call() -> None:
    gen = TrafficGenerator(seed=42)
    assert list(gen.events(500)) == list(gen.events(500))


def test_different_seeds_differ() -> None:
    a = [r.value for r in TrafficGenerator(seed=1).events(200)]
    b = [r.value for r in TrafficGenerator(seed=2).events(200)]
    assert a != b


def test_shorter_run_is_a_prefix_of_a_longer_one() -> None:
    gen = TrafficGenerator(seed=9, drift_at=100)
    short = [r for r in gen.events(700) if r.topic == "predictions"]
    long = [r for r in gen.events(20_000) if r.topic == "predictions"][:700]
    assert short == long


# --------------------------------------------------------------------------- wire contract


def _check_feature_value(kind: str, value: Any) -> None:
    if value is None:
        return
    if kind == "numeric":
        assert isinstance(value, int | float) and not isinstance(value, bool), value
        assert np.isfinite(value)
    elif kind == "boolean":
        assert isinstance(value, bool), value
    else:
        assert isinstance(value, str) and value, value


def test_predictions_follow_the_wire_contract() -> None:
    gen = TrafficGenerator(seed=3, drift_at=2_000, rate=50.0)
    records = [r for r in gen.events(4_000) if r.topic == "predictions"]
    assert len(records) == 4_000
    seen_models: Counter[str] = Counter()
    for i, rec in enumerate(records):
        ev = orjson.loads(rec.value)
        assert isinstance(ev, dict)
        assert set(ev) == {
            "event_id",
            "model_id",
            "model_version",
            "timestamp",
            "features",
            "prediction",
            "segments",
        }
        model = ev["model_id"]
        assert model in ARCHETYPES
        seen_models[model] += 1
        assert rec.key == model.encode("utf-8")
        assert ev["event_id"] == f"{model}-{i}"
        assert isinstance(ev["model_version"], str) and ev["model_version"]
        assert isinstance(ev["timestamp"], float)
        assert ev["timestamp"] == pytest.approx(1_700_000_000.0 + i / 50.0, abs=1e-6)
        assert rec.timestamp == ev["timestamp"]
        assert list(ev["features"]) == list(FEATURES[model])
        for name, kind in FEATURES[model].items():
            _check_feature_value(kind, ev["features"][name])
        assert set(ev["segments"]) == {"region"}
        assert ev["segments"]["region"] in {"eu", "us", "apac"}
        pred = ev["prediction"]
        if model == "fraud-detector":
            assert set(pred) == {"label", "score"}
            assert pred["label"] in (0, 1) and not isinstance(pred["label"], bool)
            assert 0.0 <= pred["score"] <= 1.0
            assert pred["label"] == int(pred["score"] >= 0.5)
        elif model == "churn-model":
            assert set(pred) == {"label", "score"}
            assert pred["label"] in ("stay", "churn")
            assert 0.5 <= pred["score"] <= 1.0
        else:
            assert isinstance(pred, float) and pred > 0
    assert set(seen_models) == set(ARCHETYPES)
    assert min(seen_models.values()) > 1_000  # models chosen about uniformly


def test_features_have_about_one_percent_nulls(drift_run: list[Record]) -> None:
    preds = _predictions(drift_run)
    for model, features in FEATURES.items():
        rows = [p["features"] for p in preds if p["model_id"] == model]
        for name in features:
            rate = sum(r[name] is None for r in rows) / len(rows)
            assert NULL_RATE * 0.5 < rate < NULL_RATE * 1.6, (model, name, rate)


def test_generated_records_pass_the_decoder() -> None:
    records = list(TrafficGenerator(seed=5, drift_at=1_000).events(3_000))
    for rec in records:
        kind = "prediction" if rec.topic == "predictions" else "label"
        out = decode_record(_Msg(rec.topic, rec.key, rec.value), kind=kind, max_bytes=1 << 20)
        assert not isinstance(out, DeadLetter), (out.reason, out.detail)


# --------------------------------------------------------------------------- labels


def test_labels_come_after_their_prediction() -> None:
    gen = TrafficGenerator(seed=4, label_delay=(2.0, 10.0))
    records = list(gen.events(5_000))
    seen: dict[str, dict[str, Any]] = {}
    labelled: set[str] = set()
    last_ts = -1.0
    for rec in records:
        assert rec.timestamp >= last_ts, "records are not in event-time order"
        last_ts = rec.timestamp
        ev = orjson.loads(rec.value)
        if rec.topic == "predictions":
            seen[ev["event_id"]] = ev
            continue
        assert rec.topic == "labels"
        assert set(ev) == {"event_id", "model_id", "timestamp", "label"}
        pred = seen.get(ev["event_id"])
        assert pred is not None, "label before (or without) its prediction"
        assert ev["event_id"] not in labelled, "duplicate label"
        labelled.add(ev["event_id"])
        assert ev["model_id"] == pred["model_id"]
        assert rec.key == pred["model_id"].encode()
        assert rec.timestamp == ev["timestamp"]
        delay = ev["timestamp"] - pred["timestamp"]
        assert 2.0 - 1e-3 <= delay <= 10.0 + 1e-3
        model = ev["model_id"]
        if model == "fraud-detector":
            assert ev["label"] in (0, 1) and not isinstance(ev["label"], bool)
        elif model == "churn-model":
            assert ev["label"] in ("stay", "churn")
        else:
            assert isinstance(ev["label"], float) and ev["label"] >= 1.0
    assert len(seen) == 5_000
    assert labelled  # the checks above ran


def test_labels_are_interleaved_not_all_at_the_end() -> None:
    records = list(TrafficGenerator(seed=4, rate=100.0).events(3_000))
    first_half = records[: len(records) // 2]
    assert sum(r.topic == "labels" for r in first_half) > 500


@pytest.mark.parametrize("label_rate", [0.0, 0.3, 0.8, 1.0])
def test_about_label_rate_of_predictions_get_labels(label_rate: float) -> None:
    records = list(TrafficGenerator(seed=6, label_rate=label_rate).events(20_000))
    n_pred = sum(r.topic == "predictions" for r in records)
    n_label = sum(r.topic == "labels" for r in records)
    assert n_pred == 20_000
    assert n_label / n_pred == pytest.approx(label_rate, abs=0.015)
    if label_rate in (0.0, 1.0):
        assert n_label == label_rate * n_pred


def test_zero_label_delay_keeps_order() -> None:
    records = list(TrafficGenerator(seed=2, label_delay=(0.0, 0.0), label_rate=1.0).events(300))
    seen: set[str] = set()
    for rec in records:
        ev = orjson.loads(rec.value)
        if rec.topic == "predictions":
            seen.add(ev["event_id"])
        else:
            assert ev["event_id"] in seen
    assert len(records) == 600


# --------------------------------------------------------------------------- drift


def test_drifted_feature_shifts_as_documented(drift_run: list[Record]) -> None:
    preds = _predictions(drift_run)

    amount_before = np.array(_column(preds, "fraud-detector", "amount", after=False))
    amount_after = np.array(_column(preds, "fraud-detector", "amount", after=True))
    assert np.median(amount_after) / np.median(amount_before) == pytest.approx(3.0, rel=0.1)
    assert amount_after.mean() / amount_before.mean() == pytest.approx(3.0, rel=0.15)

    tenure_before = np.array(_column(preds, "churn-model", "tenure_days", after=False))
    tenure_after = np.array(_column(preds, "churn-model", "tenure_days", after=True))
    shift = tenure_after.mean() - tenure_before.mean()
    assert shift / tenure_before.std() == pytest.approx(2.0, abs=0.2)
    assert tenure_after.std() / tenure_before.std() == pytest.approx(1.0, abs=0.1)

    dist_before = np.array(_column(preds, "eta-regressor", "distance_km", after=False))
    dist_after = np.array(_column(preds, "eta-regressor", "distance_km", after=True))
    assert np.median(dist_after) / np.median(dist_before) == pytest.approx(2.0, rel=0.1)

    for model, feature in DRIFTED_FEATURE.items():
        before = _column(preds, model, feature, after=False)
        after = _column(preds, model, feature, after=True)
        assert stats.ks_2samp(before, after).pvalue < 1e-6, (model, feature)


def test_stable_features_keep_their_distribution(drift_run: list[Record]) -> None:
    preds = _predictions(drift_run)
    for model, features in STABLE_FEATURES.items():
        assert DRIFTED_FEATURE[model] not in features
        for feature in features:
            before = _column(preds, model, feature, after=False)
            after = _column(preds, model, feature, after=True)
            if FEATURES[model][feature] == "numeric":
                p = stats.ks_2samp(before, after).pvalue
            else:
                cats = sorted(set(before) | set(after), key=str)
                table = [[before.count(c) for c in cats], [after.count(c) for c in cats]]
                p = stats.chi2_contingency(table).pvalue
            assert p > 0.01, (model, feature, p)


def test_stable_features_are_identical_to_a_run_without_drift(
    drift_run: list[Record], no_drift_run: list[Record]
) -> None:
    drifted = _predictions(drift_run)
    plain = _predictions(no_drift_run)
    assert [p["event_id"] for p in drifted] == [p["event_id"] for p in plain]
    changed: Counter[tuple[str, str]] = Counter()
    for d, p in zip(drifted, plain, strict=True):
        for name in FEATURES[d["model_id"]]:
            if d["features"][name] != p["features"][name]:
                changed[d["model_id"], name] += 1
                assert _index(d) >= DRIFT_AT
    assert set(changed) == set(DRIFTED_FEATURE.items())


def _join(records: list[Record]) -> list[tuple[dict[str, Any], Any]]:
    preds = {p["event_id"]: p for p in _predictions(records)}
    return [(preds[lab["event_id"]], lab["label"]) for lab in _labels(records)]


def _accuracy(pairs: list[tuple[dict[str, Any], Any]], model: str, *, after: bool) -> float:
    hits = [
        p["prediction"]["label"] == truth
        for p, truth in pairs
        if p["model_id"] == model and (_index(p) >= DRIFT_AT) == after
    ]
    assert len(hits) > 1_000
    return sum(hits) / len(hits)


def _mae(pairs: list[tuple[dict[str, Any], Any]], *, after: bool) -> float:
    errors = [
        abs(p["prediction"] - truth)
        for p, truth in pairs
        if p["model_id"] == "eta-regressor" and (_index(p) >= DRIFT_AT) == after
    ]
    assert len(errors) > 1_000
    return float(np.mean(errors))


def test_error_rate_rises_after_drift(drift_run: list[Record]) -> None:
    pairs = _join(drift_run)
    for model in ("fraud-detector", "churn-model"):
        assert _accuracy(pairs, model, after=False) == pytest.approx(0.9, abs=0.02), model
        assert _accuracy(pairs, model, after=True) == pytest.approx(0.6, abs=0.03), model
    ratio = _mae(pairs, after=True) / _mae(pairs, after=False)
    assert ratio == pytest.approx(3.0, rel=0.12)


def test_error_rate_is_steady_without_drift(no_drift_run: list[Record]) -> None:
    pairs = _join(no_drift_run)
    for model in ("fraud-detector", "churn-model"):
        assert _accuracy(pairs, model, after=True) == pytest.approx(0.9, abs=0.02), model
    ratio = _mae(pairs, after=True) / _mae(pairs, after=False)
    assert ratio == pytest.approx(1.0, rel=0.08)


def test_drift_at_zero_drifts_from_the_first_event() -> None:
    a = _predictions(TrafficGenerator(seed=8, drift_at=0).events(50))
    b = _predictions(TrafficGenerator(seed=8, drift_at=None).events(50))
    fraud = [(x, y) for x, y in zip(a, b, strict=True) if x["model_id"] == "fraud-detector"]
    pairs = [(x["features"]["amount"], y["features"]["amount"]) for x, y in fraud]
    pairs = [(x, y) for x, y in pairs if x is not None]
    assert pairs
    for x, y in pairs:
        assert x == pytest.approx(3 * y, abs=0.02)


# --------------------------------------------------------------------------- configuration


def test_custom_models_and_topics() -> None:
    gen = TrafficGenerator(
        seed=1,
        models=["fraud-detector-eu", "model-a", "model-b", "model-c"],
        prediction_topic="p",
        label_topic="l",
    )
    assert gen.archetype("fraud-detector-eu") == "fraud-detector"
    assert [gen.archetype(m) for m in ("model-a", "model-b", "model-c")] == [
        "churn-model",
        "eta-regressor",
        "fraud-detector",
    ]
    assert gen.drifted_feature("model-b") == "distance_km"
    assert gen.stable_features("model-a") == STABLE_FEATURES["churn-model"]
    records = list(gen.events(2_000))
    assert {r.topic for r in records} == {"p", "l"}
    by_model = {orjson.loads(r.value)["model_id"] for r in records if r.topic == "p"}
    assert by_model == {"fraud-detector-eu", "model-a", "model-b", "model-c"}
    for r in records:
        ev = orjson.loads(r.value)
        if r.topic == "p":
            assert list(ev["features"]) == list(FEATURES[gen.archetype(ev["model_id"])])
    with pytest.raises(KeyError):
        gen.archetype("nope")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drift_at": -1},
        {"models": []},
        {"models": ["a", "a"]},
        {"models": "fraud-detector"},
        {"label_delay": (5.0, 1.0)},
        {"label_delay": (-1.0, 1.0)},
        {"label_rate": 1.5},
        {"rate": 0.0},
        {"rate": float("nan")},
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TrafficGenerator(**kwargs)


def test_negative_n_is_rejected() -> None:
    with pytest.raises(ValueError):
        TrafficGenerator().events(-1)


# --------------------------------------------------------------------------- bad records


def _Msg(topic: str, key: bytes | None, value: bytes) -> RawRecord:
    """Just enough of a confluent_kafka.Message for the decoder."""
    return RawRecord(value, key=key, topic=topic, timestamp=(1, 1_700_000_000_000))


def _loads_object(value: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


@pytest.mark.parametrize("topic", ["predictions", "labels"])
def test_bad_records_cover_every_reason(topic: str) -> None:
    records = bad_records(topic)
    reasons = Counter(reason for _, _, reason in records)
    assert set(reasons) == {"decode_error", "validation_error", "oversized", "empty"}
    assert reasons["decode_error"] >= 3 and reasons["validation_error"] >= 3
    for key, value, reason in records:
        assert key is None or isinstance(key, bytes)
        assert isinstance(value, bytes)
        if reason == "empty":
            assert value == b""
        elif reason == "oversized":
            assert len(value) == 1_100_000 > 1 << 20
            assert _loads_object(value) is not None  # too big, but otherwise well-formed
        elif reason == "decode_error":
            assert _loads_object(value) is None
            assert len(value) < 1 << 20
        else:
            obj = _loads_object(value)
            assert obj is not None and len(value) < 1 << 20
    values = [v for _, v, _ in records]
    assert len(set(values)) == len(values)


def test_bad_prediction_records_include_the_requested_cases() -> None:
    objects = [
        _loads_object(v) for _, v, r in bad_records("predictions") if r == "validation_error"
    ]
    assert any(o is not None and "event_id" not in o for o in objects)
    assert any(o is not None and "prediction" not in o for o in objects)
    assert any(o is not None and isinstance(o.get("features"), str) for o in objects)
    assert any(o is not None and o.get("timestamp") == "yesterday" for o in objects)
    undecodable = [v for _, v, r in bad_records("predictions") if r == "decode_error"]
    assert b"[1, 2, 3]" in undecodable
    assert any(_not_utf8(v) for v in undecodable)


def _not_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_bad_label_records_are_label_shaped() -> None:
    objects = [_loads_object(v) for _, v, r in bad_records("labels") if r == "validation_error"]
    assert any(o is not None and "label" not in o for o in objects)
    assert all(o is not None and "features" not in o for o in objects)
    assert bad_records("my-topic", kind="label") == bad_records("labels")


@pytest.mark.parametrize("topic", ["predictions", "labels"])
def test_bad_records_get_the_expected_reason_from_the_decoder(topic: str) -> None:
    kind = "label" if topic == "labels" else "prediction"
    for key, value, expected in bad_records(topic):
        out = decode_record(_Msg(topic, key, value), kind=kind, max_bytes=1 << 20)
        assert isinstance(out, DeadLetter), (expected, value[:80])
        assert out.reason == expected, (out.reason, out.detail, value[:80])


# --------------------------------------------------------------------------- run_simulation


class FakeProducer:
    """Records produced messages; can refuse some calls with BufferError like librdkafka."""

    def __init__(self, *, full_every: int = 0, full_times: int = 1) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.polls: list[float] = []
        self.flushes = 0
        self.refusals = 0
        self._full_every = full_every
        self._full_times = full_times
        self._refused_at: Counter[int] = Counter()
        self.on_produce: Any = None

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        timestamp: int = 0,
    ) -> None:
        n = len(self.sent)
        every = self._full_every
        if every and n % every == every - 1 and self._refused_at[n] < self._full_times:
            self._refused_at[n] += 1
            self.refusals += 1
            raise BufferError("Local: Queue full")
        self.sent.append((topic, key, value, timestamp))
        if self.on_produce is not None:
            self.on_produce(len(self.sent))

    def poll(self, timeout: float = 0.0) -> int:
        self.polls.append(timeout)
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        self.flushes += 1
        return 0


def _expected(gen: TrafficGenerator, n: int) -> list[tuple[str, bytes, bytes, int]]:
    return [(r.topic, r.key, r.value, round(r.timestamp * 1000)) for r in gen.events(n)]


def test_run_simulation_produces_every_record_in_order() -> None:
    gen = TrafficGenerator(seed=3, drift_at=100)
    producer = FakeProducer()
    progress: list[int] = []
    count = run_simulation(producer, gen, 500, rate=None, on_progress=progress.append)
    expected = _expected(gen, 500)
    assert count == len(expected) == len(producer.sent)
    assert producer.sent == expected
    assert producer.sent[0][3] == 1_700_000_000_000
    assert producer.flushes == 1
    assert 0 in producer.polls
    n_pred = sum(1 for r in expected if r[0] == "predictions")
    assert progress == list(range(1, n_pred + 1)) and n_pred == 500


def test_run_simulation_retries_on_buffer_error() -> None:
    gen = TrafficGenerator(seed=3)
    producer = FakeProducer(full_every=50, full_times=3)
    count = run_simulation(producer, gen, 300, rate=None)
    assert producer.refusals >= 3
    assert producer.sent == _expected(gen, 300)  # each record exactly once, in order
    assert count == len(producer.sent)
    assert any(t > 0 for t in producer.polls)  # waited for the queue to drain


class _Clock:
    """A monotonic clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_run_simulation_paces_to_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(simulate_module, "time", clock)
    gen = TrafficGenerator(seed=3, label_rate=0.0)
    count = run_simulation(FakeProducer(), gen, 101, rate=500.0)
    assert count == 101
    # the 101st prediction is due 100 intervals of 2 ms after the first: the loop slept up to
    # it, within the pacing slack
    slack = simulate_module._PACING_SLACK_S
    assert 0.2 - slack <= clock.now - 1000.0 <= 0.2 + 1e-9
    assert len(clock.sleeps) >= 50


def test_run_simulation_unpaced_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(simulate_module.time, "sleep", slept.append)
    producer = FakeProducer()
    run_simulation(producer, TrafficGenerator(seed=3, label_rate=0.0), 2_000, rate=None)
    assert len(producer.sent) == 2_000 and slept == []


def test_run_simulation_stops_when_asked() -> None:
    gen = TrafficGenerator(seed=3)
    stop = threading.Event()
    producer = FakeProducer()

    def maybe_stop(sent: int) -> None:
        if sent == 40:
            stop.set()

    producer.on_produce = maybe_stop
    count = run_simulation(producer, gen, 1_000, rate=None, stop=stop)
    assert count == 40 == len(producer.sent)
    assert producer.flushes == 1


def test_run_simulation_stop_interrupts_pacing() -> None:
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        count = run_simulation(FakeProducer(), TrafficGenerator(), 1_000, rate=2.0, stop=stop)
    finally:
        timer.cancel()
    assert 1 <= count < 10  # unpaused, all 1,000 would go (and take ~500 s)


def test_run_simulation_stop_while_buffer_full() -> None:
    stop = threading.Event()

    class AlwaysFull(FakeProducer):
        def produce(self, *args: Any, **kwargs: Any) -> None:
            self.refusals += 1
            if self.refusals == 5:
                stop.set()
            raise BufferError("Local: Queue full")

    producer = AlwaysFull()
    assert run_simulation(producer, TrafficGenerator(), 10, rate=None, stop=stop) == 0
    assert producer.refusals == 5


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf")])
def test_run_simulation_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        run_simulation(FakeProducer(), TrafficGenerator(), 10, rate=rate)
