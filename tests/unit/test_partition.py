"""PartitionState end to end, without Kafka: seeded streams with known change points.

Event ``i`` of the hand-built streams has timestamp ``i`` (seconds), so an alert's
``observed_at`` is the index of the event that closed the window (or batch) it was judged on.
With the default configuration the reference is events 0..999 and windows are 1000 events, so
the first window entirely after a change at 6000 closes at event 6999.
"""

from __future__ import annotations

import importlib
import sys
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import (
    AlertEvent,
    LabelEvent,
    PredictionEvent,
    ScoredPrediction,
)
from stream_monitor.monitor.feature import CategoricalFeature
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.simulate import TrafficGenerator

#: The module (the package's ``calibrate`` is its function of that name).
calibrate_module = importlib.import_module("stream_monitor.stats.calibrate")
LOAD_TESTS = Path(__file__).resolve().parents[2] / "load_tests"

N = 12_000
CHANGE = 6_000
REF = 1_000  # default reference_size
WIN = 1_000  # default window_size
CATEGORIES = ("a", "b", "c", "d")
CATEGORY_P = (0.4, 0.3, 0.2, 0.1)


def _cfg(**sections: Any) -> MonitorConfig:
    return MonitorConfig.model_validate({"bootstrap_servers": "unused:9092", **sections})


CFG = _cfg()


@dataclass(frozen=True)
class Stream:
    events: list[PredictionEvent]

    def column(self, name: str, lo: int, hi: int) -> list[Any]:
        if name == "prediction.score":
            return [e.prediction_score() for e in self.events[lo:hi]]
        if name == "prediction.label":
            return [e.prediction_label() for e in self.events[lo:hi]]
        return [e.features.get(name) for e in self.events[lo:hi]]


def _build(
    seed: int,
    *,
    x2_shift: float = 0.0,
    new_category: float = 0.0,
    x3_missing: float = 0.0,
    model_id: str = "m",
) -> Stream:
    """x1..x4 ~ N(0, 1), c1 in a/b/c/d; from CHANGE on: x2 += x2_shift, c1 is "zz" with
    probability new_category, x3 is None with probability x3_missing. The model outputs a
    score depending on x1 only (so no prediction drift), with its 0/1 class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (N, 4))
    c1 = np.asarray(CATEGORIES, dtype=object)[rng.choice(4, N, p=CATEGORY_P)]
    after = np.arange(N) >= CHANGE
    x[:, 1] += np.where(after, x2_shift, 0.0)
    c1 = np.where(after & (rng.random(N) < new_category), "zz", c1)
    x3_none = after & (rng.random(N) < x3_missing)
    score = np.round(1.0 / (1.0 + np.exp(-(x[:, 0] + rng.normal(0.0, 0.5, N)))), 4)
    events = [
        PredictionEvent(
            event_id=f"e{i}",
            model_id=model_id,
            model_version="1",
            timestamp=float(i),
            features={
                "x1": float(x[i, 0]),
                "x2": float(x[i, 1]),
                "x3": None if x3_none[i] else float(x[i, 2]),
                "x4": float(x[i, 3]),
                "c1": str(c1[i]),
            },
            prediction=ScoredPrediction(label=int(score[i] >= 0.5), score=float(score[i])),
        )
        for i in range(N)
    ]
    return Stream(events)


def _run(
    cfg: MonitorConfig,
    events: Sequence[PredictionEvent],
    batch: int,
    state: PartitionState | None = None,
) -> tuple[PartitionState, list[AlertEvent]]:
    st = state if state is not None else PartitionState(0, cfg)
    alerts: list[AlertEvent] = []
    for i in range(0, len(events), batch):
        alerts.extend(st.process(events[i : i + batch], []))
    return st, alerts


def _summary(alerts: list[AlertEvent]) -> list[tuple[str, str, str | None, str]]:
    return [(a.status, a.kind, a.feature, a.signal) for a in alerts]


def _same_but_ids(alerts: list[AlertEvent]) -> list[AlertEvent]:
    """The alerts without their ids: every tracker draws its own random incident ids, so two
    runs on the same stream agree on everything else."""
    return [a.model_copy(update={"alert_id": "", "incident_id": ""}) for a in alerts]


def _without_secret(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A partition snapshot without the alert tracker's random key and the incident ids drawn
    from it (see ``_same_but_ids``)."""
    t = snapshot["tracker"]
    incidents = {k: [*row[:14], "", *row[15:]] for k, row in t["incidents"].items()}
    return {**snapshot, "tracker": {**t, "secret": "", "incidents": incidents}}


def _concept(alerts: list[AlertEvent]) -> list[tuple[AlertEvent, str]]:
    """The alerts that say a model's errors rose, with the concept-drift signal: concept drift
    is part of the model's performance incident (firing, or joining it in an update)."""
    out = []
    for a in alerts:
        if a.status == "resolved":
            continue
        for sig in a.signals:
            if sig.kind == "concept_drift" and sig.breached:
                out.append((a, sig.signal))
                break
    return out


# --- independent statistics (numpy and plain loops, not the package's helpers) ------------


def _psi(
    p_counts: Sequence[float] | np.ndarray,
    q_counts: Sequence[float] | np.ndarray,
    eps: float = 1e-4,
) -> float:
    p = np.asarray(p_counts, float) / np.sum(p_counts)
    q = np.asarray(q_counts, float) / np.sum(q_counts)
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def _numeric_psi(ref: list[Any], win: list[Any], n_bins: int = 10) -> float:
    r = np.array([v for v in ref if v is not None], float)
    w = np.array([v for v in win if v is not None], float)
    edges = np.unique(np.quantile(r, [k / n_bins for k in range(1, n_bins)]))
    # bin i holds (e[i-1], e[i]]: the index is the number of edges strictly below the value
    r_idx = (r[:, None] > edges[None, :]).sum(axis=1)
    w_idx = (w[:, None] > edges[None, :]).sum(axis=1)
    k = len(edges) + 1
    return _psi(np.bincount(r_idx, minlength=k), np.bincount(w_idx, minlength=k))


def _categorical_psi(ref: list[Any], win: list[Any]) -> float:
    rc = Counter(v for v in ref if v is not None)
    wc = Counter(v for v in win if v is not None)
    cats = sorted(rc)  # fewer than top_k: every reference category is kept
    other = sum(wc.values()) - sum(wc[c] for c in cats)
    return _psi([rc[c] for c in cats] + [0], [wc[c] for c in cats] + [other])


@pytest.fixture(scope="module")
def x2_stream() -> Stream:
    return _build(seed=2024, x2_shift=1.5)


@pytest.fixture(scope="module")
def x2_run(x2_stream: Stream) -> tuple[PartitionState, list[AlertEvent]]:
    return _run(CFG, x2_stream.events, batch=250)


@pytest.fixture(scope="module")
def cat_missing_stream() -> Stream:
    # c1: a new category "zz" becomes dominant (70 %); x3: None 40 % of the time
    return _build(seed=7, new_category=0.7, x3_missing=0.4)


@pytest.fixture(scope="module")
def cat_missing_run(cat_missing_stream: Stream) -> tuple[PartitionState, list[AlertEvent]]:
    return _run(CFG, cat_missing_stream.events, batch=500)


# ------------------------------------------------------------------- (a) numeric shift


def test_sudden_shift_of_x2_fires_exactly_one_data_drift_alert(
    x2_run: tuple[PartitionState, list[AlertEvent]],
) -> None:
    st, alerts = x2_run
    # The strongest signal of the window leads (PSI or the change detectors).
    assert _summary(alerts)[0][:3] == ("firing", "data_drift", "x2")
    assert [(a.status, a.kind, a.feature) for a in alerts] == [("firing", "data_drift", "x2")]
    alert = alerts[0]
    assert CHANGE < alert.observed_at <= CHANGE + 1500
    assert alert.started_at == alert.observed_at
    assert alert.model_id == "m" and alert.model_version == "1"
    assert alert.dedup_key == "m/data_drift/-"  # the model's features share one incident
    assert alert.top_features == ["x2"]
    assert st.tracker.firing() == [("m", "data_drift", "x2")]
    m = st.models["m"]
    assert m.n_events == N and m.reference_frozen
    x2 = m.features["x2"]
    assert x2.psi is not None and x2.psi > 1.0
    for name in ("x1", "x3", "x4", "c1", "prediction.score", "prediction.label"):
        f = m.features.get(name) or m.outputs[name]
        assert f.psi is not None and f.psi < 0.1, name


def test_psi_values_match_independent_computation(
    x2_stream: Stream,
    x2_run: tuple[PartitionState, list[AlertEvent]],
) -> None:
    st, _ = x2_run
    m = st.models["m"]
    last = (N - WIN, N)  # the last closed window
    for name, f in [*m.features.items(), *m.outputs.items()]:
        ref = x2_stream.column(name, 0, REF)
        win = x2_stream.column(name, *last)
        if name in ("c1", "prediction.label"):
            expected = _categorical_psi(ref, win)
        else:
            expected = _numeric_psi(ref, win)
        assert f.psi == pytest.approx(expected, rel=1e-9, abs=1e-12), name
        assert f.windows_closed == (N - REF) // WIN
        assert f.missing_ratio == 0.0


def test_no_drift_stream_is_silent() -> None:
    st, alerts = _run(CFG, _build(seed=2024).events, batch=500)
    assert alerts == []
    assert st.tracker.snapshot()["incidents"] == {}


# -------------------------------------------------------- (b) categorical, (c) missing


def test_categorical_shift_flags_c1_via_psi(
    cat_missing_stream: Stream,
    cat_missing_run: tuple[PartitionState, list[AlertEvent]],
) -> None:
    st, alerts = cat_missing_run
    c1 = [a for a in alerts if a.feature == "c1"]
    assert _summary(c1) == [("firing", "data_drift", "c1", "psi")]
    # judged on the first window entirely after the change, 6000..6999
    assert c1[0].observed_at == CHANGE + WIN - 1
    assert c1[0].window_events == WIN
    expected = _categorical_psi(
        cat_missing_stream.column("c1", 0, REF),
        cat_missing_stream.column("c1", CHANGE, CHANGE + WIN),
    )
    assert c1[0].value == pytest.approx(expected, rel=1e-9)
    assert c1[0].value > 1.0
    f = st.models["m"].features["c1"]
    assert isinstance(f, CategoricalFeature)
    unseen = sum(v == "zz" for v in cat_missing_stream.column("c1", REF, N))
    assert f.unseen_total == unseen > 0.6 * (N - CHANGE)


def test_missing_rate_jump_raises_data_quality_alert_for_x3(
    cat_missing_stream: Stream,
    cat_missing_run: tuple[PartitionState, list[AlertEvent]],
) -> None:
    st, alerts = cat_missing_run
    x3 = [a for a in alerts if a.feature == "x3"]
    assert _summary(x3) == [("firing", "data_quality", "x3", "missing_ratio")]
    assert x3[0].observed_at == CHANGE + WIN - 1
    window = cat_missing_stream.column("x3", CHANGE, CHANGE + WIN)
    assert x3[0].value == sum(v is None for v in window) / WIN
    assert x3[0].threshold == pytest.approx(0.0 + 0.1)  # no missing in the reference
    last = cat_missing_stream.column("x3", N - WIN, N)
    assert st.models["m"].features["x3"].missing_ratio == sum(v is None for v in last) / WIN
    # the values that are present did not drift: no data_drift alert for x3
    assert not [a for a in alerts if a.kind == "data_drift" and a.feature == "x3"]


def test_cat_missing_stream_alerts_nothing_else(
    cat_missing_run: tuple[PartitionState, list[AlertEvent]],
) -> None:
    _, alerts = cat_missing_run
    assert sorted(_summary(alerts)) == [
        ("firing", "data_drift", "c1", "psi"),
        ("firing", "data_quality", "x3", "missing_ratio"),
    ]


# ------------------------------------------------------------ (d) batch-size invariance

BATCH_SIZES = (5000, 500, 7, 1)
#: Events fed in the invariance and snapshot tests: the reference, five windows before the
#: change and two after it (every alert of these streams happens before event 8000).
PREFIX = 8000


def _rounded(x: Any) -> Any:
    """``x`` with every float rounded to 12 significant digits: the change detectors sum a
    batch with array operations, so the last bits of their running sums (never their firings)
    depend on where batches were cut."""
    if isinstance(x, float):
        return float(f"{x:.12g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def test_batch_size_invariance_of_window_signals(cat_missing_stream: Stream) -> None:
    """Alerts and the whole final state do not depend on how the stream is cut into batches
    (the signals here are the windowed PSI and missing ratio)."""
    baseline_alerts: list[AlertEvent] | None = None
    baseline_state: bytes | None = None
    for batch in BATCH_SIZES:
        st, alerts = _run(CFG, cat_missing_stream.events[:PREFIX], batch)
        alerts = _same_but_ids(alerts)
        state = orjson.dumps(_rounded(_without_secret(st.snapshot())))
        if baseline_alerts is None:
            baseline_alerts, baseline_state = alerts, state
            assert len(alerts) == 2
            continue
        assert alerts == baseline_alerts, batch
        assert state == baseline_state, batch


def test_batch_size_invariance_with_change_detectors(x2_stream: Stream) -> None:
    baseline: list[AlertEvent] | None = None
    for batch in BATCH_SIZES:
        _, alerts = _run(CFG, x2_stream.events[:PREFIX], batch)
        alerts = _same_but_ids(alerts)
        assert len(alerts) == 1
        if baseline is None:
            baseline = alerts
        assert alerts == baseline, (batch, alerts[0].observed_at, baseline[0].observed_at)


def test_change_detector_alert_does_not_depend_on_batch_size(x2_stream: Stream) -> None:
    # PSI, window detectors and the range check disabled so only the per-value change detectors
    # can alert; a window of
    # 5000 events lets one chunk span more than agreement_events (1000) values.
    cfg = _cfg(
        drift={
            "window": {"size": 5000},
            "thresholds": {"mode": "fixed", "fixed": {"psi": 1000.0}},
            "window_detectors": {"enabled": False},
            "quality": {"out_of_range_increase": 1.0},
        }
    )
    _, small = _run(cfg, x2_stream.events, 50)
    assert _summary(small) == [
        ("firing", "data_drift", "x2", "change_detectors"),
        ("resolved", "data_drift", "x2", "change_detectors"),
    ]
    assert CHANGE < small[0].observed_at <= CHANGE + 200
    _, large = _run(cfg, x2_stream.events, 5000)
    assert _summary(large) == _summary(small)


# --------------------------------------------------------------------- (e) snapshots


@pytest.mark.parametrize("split", [500, 6030, 7500], ids=["in-reference", "after-change", "late"])
def test_snapshot_round_trip_mid_stream(x2_stream: Stream, split: int) -> None:
    events = x2_stream.events[:PREFIX]
    original, before = _run(CFG, events[:split], 250)
    data = orjson.dumps(original.snapshot())
    restored = PartitionState.from_snapshot(orjson.loads(data), CFG)
    assert orjson.dumps(restored.snapshot()) == data

    _, rest_original = _run(CFG, events[split:], 250, state=original)
    _, rest_restored = _run(CFG, events[split:], 250, state=restored)
    assert rest_restored == rest_original
    all_alerts = before + rest_original
    assert [(a.status, a.feature) for a in all_alerts] == [("firing", "x2")]

    mo, mr = original.models["m"], restored.models["m"]
    for name in [*mo.features, *mo.outputs]:
        fo = mo.features.get(name) or mo.outputs[name]
        fr = mr.features.get(name) or mr.outputs[name]
        assert fr.psi == fo.psi and fo.psi is not None, name
    assert orjson.dumps(restored.snapshot()) == orjson.dumps(original.snapshot())


def test_a_restored_partition_judges_its_windows_without_simulating_them_again(
    x2_stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calibrations the features judged their windows with are in the snapshot: restored
    in a fresh process (empty memos), the partition simulates none for windows of the same
    sizes and judges them as the original does. From a version-4 snapshot (none kept) it
    simulates them again, with the same outcome."""
    events = x2_stream.events[:PREFIX]
    split = 3000  # the reference and two windows
    original, _ = _run(CFG, events[:split], 250)
    data = orjson.dumps(original.snapshot())
    calls: list[int] = []
    real = calibrate_module.calibrate

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    def fresh_process() -> None:
        monkeypatch.setattr(calibrate_module, "_CALIBRATIONS", OrderedDict())
        monkeypatch.setattr(calibrate_module, "_SHAPES", {})
        monkeypatch.setattr(calibrate_module, "calibrate", counted)

    fresh_process()
    restored = PartitionState.from_snapshot(orjson.loads(data), CFG)
    _, rest_restored = _run(CFG, events[split:], 250, state=restored)
    assert calls == []
    monkeypatch.undo()
    _, rest_original = _run(CFG, events[split:], 250, state=original)
    assert rest_restored == rest_original and rest_original
    assert orjson.dumps(restored.snapshot()) == orjson.dumps(original.snapshot())

    sys.path.insert(0, str(LOAD_TESTS))
    try:  # the snapshot as version 4 of the features had it (none kept)
        old = importlib.import_module("bench_restart").without_calibrations(orjson.loads(data))
    finally:
        sys.path.remove(str(LOAD_TESTS))
    assert old != orjson.loads(data)
    fresh_process()
    again = PartitionState.from_snapshot(old, CFG)
    _, rest_again = _run(CFG, events[split:], 250, state=again)
    assert calls  # simulated again
    assert _same_but_ids(rest_again) == _same_but_ids(rest_original)


def test_snapshot_refuses_unknown_version() -> None:
    snap = PartitionState(0, CFG).snapshot()
    with pytest.raises(ValueError, match="version"):
        PartitionState.from_snapshot({**snap, "v": 99}, CFG)


# ------------------------------------------------------------------- (f) model cap


def _capped_traffic(seed: int) -> tuple[list[PredictionEvent], list[LabelEvent]]:
    rng = np.random.default_rng(seed)
    models = ["m0", "m1"] + [("m0", "m1", "m2")[int(k)] for k in rng.integers(0, 3, 2998)]
    preds = [
        PredictionEvent(
            event_id=f"e{i}",
            model_id=m,
            timestamp=float(i),
            features={"x": float(rng.normal())},
            prediction=float(rng.normal()),
        )
        for i, m in enumerate(models)
    ]
    labels = [
        LabelEvent(event_id=p.event_id, model_id=p.model_id, timestamp=p.timestamp + 1, label=0.5)
        for p in preds[::2]
    ]
    return preds, labels


def test_model_cap_refuses_models_and_counts_their_events() -> None:
    cfg = _cfg(limits={"max_models_per_partition": 2})
    preds, labels = _capped_traffic(seed=3)
    st = PartitionState(0, cfg)
    for i in range(0, len(preds), 1000):
        st.process(preds[i : i + 1000], labels[i // 2 : (i + 1000) // 2])
    assert list(st.models) == ["m0", "m1"]
    refused = sum(p.model_id == "m2" for p in preds)
    assert st.events_refused == refused > 900
    assert st.models["m0"].n_events + st.models["m1"].n_events == len(preds) - refused
    assert st.models["m0"].n_events == sum(p.model_id == "m0" for p in preds)
    # predictions of the refused model never wait in the join; its labels wait in vain
    assert st.early.parked == sum(lab.model_id == "m2" for lab in labels)
    assert st.early.matched == 0
    assert st.join.matched == sum(lab.model_id != "m2" for lab in labels)
    assert len(st.join) == len(preds) - refused - st.join.matched
    # the cap is per partition: another partition takes the model
    other = PartitionState(1, cfg)
    other.process([p for p in preds if p.model_id == "m2"][:10], [])
    assert list(other.models) == ["m2"] and other.events_refused == 0


def test_models_refused_counts_distinct_models() -> None:
    cfg = _cfg(limits={"max_models_per_partition": 2})
    preds, _ = _capped_traffic(seed=3)
    st = PartitionState(0, cfg)
    for i in range(0, len(preds), 1000):
        st.process(preds[i : i + 1000], [])
    assert st.models_refused == 1  # one model ("m2") was refused, over 3 batches


# ------------------------------------------------------------- (g) labels / concept drift

GEN_N = 18_000
GEN_DRIFT_AT = 9_000


@pytest.fixture(scope="module")
def generated() -> tuple[TrafficGenerator, list[PredictionEvent | LabelEvent]]:
    gen = TrafficGenerator(seed=6, drift_at=GEN_DRIFT_AT)
    events: list[PredictionEvent | LabelEvent] = []
    for r in gen.events(GEN_N):
        obj = orjson.loads(r.value)
        if r.topic == "predictions":
            events.append(PredictionEvent.model_validate(obj))
        else:
            events.append(LabelEvent.model_validate(obj))
    return gen, events


def _run_mixed(
    events: Sequence[PredictionEvent | LabelEvent], batch: int
) -> tuple[PartitionState, list[AlertEvent]]:
    st = PartitionState(0, CFG)
    alerts: list[AlertEvent] = []
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        alerts += st.process(
            [e for e in chunk if isinstance(e, PredictionEvent)],
            [e for e in chunk if isinstance(e, LabelEvent)],
        )
    return st, alerts


def test_concept_drift_fires_after_the_change_and_not_before(
    generated: tuple[TrafficGenerator, list[PredictionEvent | LabelEvent]],
) -> None:
    gen, events = generated
    t_change = gen.start_time + GEN_DRIFT_AT / gen.rate
    st, alerts = _run_mixed(events, batch=500)
    concept = _concept(alerts)
    assert concept, "no concept_drift alert"
    assert all(a.status == "firing" for a, _ in concept)
    assert all(t_change < a.observed_at <= t_change + 60 for a, _ in concept)
    # every model of the generator drifts (its accuracy or error changes at drift_at)
    assert {a.model_id: signal for a, signal in concept} == {
        "fraud-detector": "error_rate",
        "churn-model": "error_rate",
        "eta-regressor": "absolute_error",
    }
    assert len(concept) == 3  # one incident per model
    for a, _ in concept:
        assert a.severity == "critical" and a.kind == "performance"
        assert a.dedup_key == f"{a.model_id}/performance/-"
    # one page per model: its performance decay joins the incident instead of paging again
    pages = [a for a in alerts if a.status == "firing" and a.severity == "critical"]
    assert sorted(a.model_id for a in pages) == sorted(gen.models)
    # the error levels agree with the generator: ~10 % errors before, ~40 % after
    for mid in ("fraud-detector", "churn-model"):
        err = st.models[mid].concept
        assert err.baseline is not None and 0.05 < err.baseline < 0.15
        assert err.mean is not None and 0.3 < err.mean < 0.5
    # nothing alerted before the change, of any kind
    assert all(a.observed_at > t_change for a in alerts)
    # every label found its prediction (the TTL and capacity are far from binding here)
    n_labels = sum(isinstance(e, LabelEvent) for e in events)
    assert st.join.matched == n_labels and st.join.unmatched_labels == 0


def test_concept_drift_of_every_model_with_small_batches(
    generated: tuple[TrafficGenerator, list[PredictionEvent | LabelEvent]],
) -> None:
    gen, events = generated
    t_change = gen.start_time + GEN_DRIFT_AT / gen.rate
    st, alerts = _run_mixed(events, batch=50)
    # ADWIN detects the change in every model's error stream ...
    assert all(m.concept.merged_detections >= 1 for m in st.models.values())
    concept = _concept(alerts)
    assert all(a.observed_at > t_change for a, _ in concept)
    # ... and every model gets its concept-drift alert, whatever the batch size
    assert sorted({a.model_id for a, _ in concept}) == sorted(gen.models)


def _error_stream(seed: int) -> tuple[list[PredictionEvent], list[LabelEvent]]:
    """One classifier; its label agrees with the prediction 90 % of the time before event
    2000 and 50 % after (error rate 0.1 -> 0.5)."""
    n, change = 4000, 2000
    rng = np.random.default_rng(seed)
    predicted = rng.random(n) < 0.5
    agrees = rng.random(n) < np.where(np.arange(n) < change, 0.9, 0.5)
    truth = np.where(agrees, predicted, ~predicted)
    word = {True: "yes", False: "no"}
    preds = [
        PredictionEvent(
            event_id=f"e{i}",
            model_id="m",
            timestamp=float(i),
            features={"c": "a"},
            prediction=word[bool(predicted[i])],
        )
        for i in range(n)
    ]
    labels = [
        LabelEvent(event_id=f"e{i}", model_id="m", timestamp=i + 0.5, label=word[bool(truth[i])])
        for i in range(n)
    ]
    return preds, labels


@pytest.mark.parametrize(
    "batch",
    [1, 5, 20, 50, 100, 500],
)
def test_concept_drift_reported_whatever_the_label_batch_size(batch: int) -> None:
    preds, labels = _error_stream(seed=11)
    st = PartitionState(0, CFG)
    alerts: list[AlertEvent] = []
    for i in range(0, len(preds), batch):
        alerts += st.process(preds[i : i + batch], labels[i : i + batch])
    err = st.models["m"].concept
    assert (
        err.baseline
        == sum(p.prediction != lab.label for p, lab in zip(preds[:500], labels[:500], strict=True))
        / 500
    )
    assert err.merged_detections >= 1  # ADWIN did see the change
    # ADWIN on the error stream speaks first; the windowed accuracy (windows of 1,000 labels,
    # baseline = the first three windows, 0.9 / 0.9 / 0.5) breaches at the fourth window and
    # joins the same incident: one page, then an update (one root cause, one incident).
    assert _summary(alerts) == [
        ("firing", "performance", None, "error_rate"),
        ("updated", "performance", None, "accuracy"),
    ]
    assert alerts[0].incident_id == alerts[1].incident_id
    assert alerts[0].dedup_key == alerts[1].dedup_key == "m/performance/-"
    assert 2000 < alerts[0].observed_at <= 2000 + 600
    assert alerts[1].observed_at == 3999.5 and alerts[1].window_events == 1000
    perf = st.models["m"].performance
    assert perf is not None
    window = range(3000, 4000)
    right = sum(preds[i].prediction == labels[i].label for i in window)
    assert alerts[1].value == perf.last_metrics["accuracy"] == right / 1000


def test_predictions_join_like_one_add_per_event_with_early_labels_between() -> None:
    """The batched join path of ``process`` leaves the join and the early-label buffer exactly
    as one ``take_with_time``/``add_prediction`` (or ``count_early_match``) per event would."""
    from stream_monitor.monitor.join import EarlyLabels, LabelJoin

    cfg = _cfg(labels={"capacity": 40, "ttl_seconds": 30.0, "max_future_seconds": 100.0})
    rng = np.random.default_rng(5)
    outputs: list[Any] = [0.25, 1, True, "cat", ScoredPrediction(label=1.0, score=0.5)]
    state = PartitionState(0, cfg)
    join = LabelJoin(cfg.labels.capacity, cfg.labels.ttl_seconds, max_future_seconds=100.0)
    early = EarlyLabels(
        cfg.labels.early_capacity,
        cfg.labels.early_grace_seconds,
        max_future_seconds=cfg.labels.max_future_seconds,
    )
    t = 1_700_000_000.0
    for _ in range(12):
        preds, labels = [], []
        for _ in range(60):
            t += float(rng.exponential(1.0))
            ts = t + 1e4 if rng.random() < 0.05 else t - float(rng.uniform(0, 5))
            event = f"e{int(rng.integers(200))}"  # duplicates within and across batches
            model = ("m1", "m2", "m3")[int(rng.integers(3))]
            if rng.random() < 0.4:
                labels.append(LabelEvent(event_id=event, model_id=model, timestamp=t, label=1))
            preds.append(
                PredictionEvent(
                    event_id=event,
                    model_id=model,
                    timestamp=ts,
                    features={"x": float(rng.random())},
                    prediction=outputs[int(rng.integers(len(outputs)))],
                )
            )
        # the labels of one batch are the early labels of the next
        state.process(preds, labels)
        for model in dict.fromkeys(e.model_id for e in preds):
            for e in (e for e in preds if e.model_id == model):
                hit = early.take_with_time(model, e.event_id)
                if hit is not None:
                    join.count_early_match(model, e.timestamp, hit[0])
                    continue
                join.add_prediction(
                    model,
                    e.event_id,
                    e.timestamp,
                    label=e.prediction_label(),
                    score=e.prediction_score(),
                    model_version=e.model_version,
                )
        for lab in labels:
            found = join.match(
                lab.model_id, lab.event_id, count_unmatched=False, label_timestamp=lab.timestamp
            )
            if found is None:
                early.add(lab.model_id, lab.event_id, lab.timestamp, lab.label)
        assert orjson.dumps(state.join.snapshot()) == orjson.dumps(join.snapshot())
        assert state.early.snapshot() == early.snapshot()
    assert early.matched > 0 and join.evicted > 0 and join.expired > 0
    assert join.duplicate_predictions > 0 and join.future_timestamps > 0


def _pred(model: str, i: int, t: float) -> PredictionEvent:
    return PredictionEvent(
        event_id=f"{model}-{i}", model_id=model, timestamp=t, features={"x": 0.5}, prediction=0.1
    )


def test_a_model_idle_for_model_idle_seconds_is_forgotten_and_frees_its_slot() -> None:
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "limits": {"max_models_per_partition": 2, "model_idle_seconds": 100.0},
        }
    )
    st = PartitionState(0, cfg)
    st.process([_pred("old", i, float(i)) for i in range(10)], [])
    st.process([_pred("live", i, 50.0 + i) for i in range(10)], [])
    st.process([_pred("new", 0, 60.0)], [])
    assert st.models.keys() == {"old", "live"} and st.events_refused == 1  # no slot
    # one event far in the future does not move the clock (the batch median does)
    st.process([*(_pred("live", 100 + i, 60.0 + i) for i in range(9)), _pred("live", 9, 1e9)], [])
    assert st.models.keys() == {"old", "live"} and st.models_forgotten == 0
    st.process([_pred("live", 200 + i, 115.0) for i in range(10)], [])  # "old" idle 106 s
    assert st.models.keys() == {"live"} and st.models_forgotten == 1
    assert st.join.by_model.keys() == {"live"} and st.join.expired == 10
    st.process([_pred("new", 1, 120.0)], [])  # its slot is free again
    assert st.models.keys() == {"live", "new"}
    st.process([_pred("bogus", 0, 1e9)], [])  # a new model's one event: not a clock
    assert st.models.keys() == {"live", "new", "bogus"} or st.events_refused > 1
    assert st.clock == 115.0
    restored = PartitionState.from_snapshot(orjson.loads(orjson.dumps(st.snapshot())), cfg)
    assert restored.models_forgotten == 1
    never = MonitorConfig.model_validate(
        {"bootstrap_servers": "unused:9092", "limits": {"model_idle_seconds": None}}
    )
    keep = PartitionState(0, never)
    keep.process([_pred("old", 0, 0.0)], [])
    keep.process([_pred("live", 0, 1e9)], [])
    assert keep.models.keys() == {"old", "live"}
