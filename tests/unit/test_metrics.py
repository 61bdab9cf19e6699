"""Instruments and StateCollector on a fresh CollectorRegistry, fed a processed PartitionState."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream_monitor import __version__
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.metrics.collector import StateCollector
from stream_monitor.metrics.instruments import Instruments
from stream_monitor.monitor.feature import NumericFeature
from stream_monitor.monitor.partition import PartitionState

CFG = MonitorConfig(bootstrap_servers="unused:9092")
N_M, N_M2 = 4000, 1500
SHIFT_AT = 2000  # model "m": x1 shifts by +2 sd from its event 2000 on


def _events(seed: int, drifted: str = "x1") -> tuple[list[PredictionEvent], list[LabelEvent]]:
    rng = np.random.default_rng(seed)
    preds: list[PredictionEvent] = []
    labels: list[LabelEvent] = []
    for model, n in (("m", N_M), ("m2", N_M2)):
        x = rng.normal(0.0, 1.0, n)
        if model == "m":
            x[SHIFT_AT:] += 2.0
        cat = np.asarray(["a", "b", "c"], dtype=object)[rng.choice(3, n, p=[0.5, 0.3, 0.2])]
        score = np.round(rng.random(n), 4)
        for i in range(n):
            preds.append(
                PredictionEvent(
                    event_id=f"{model}-{i}",
                    model_id=model,
                    timestamp=float(i),
                    features={
                        drifted: float(x[i]),
                        "c1": str(cat[i]),
                        "x9": None if i % 10 == 0 else 1.0,
                    },
                    prediction=float(score[i]),
                )
            )
            if i % 3 == 0:  # a third of the predictions get their label
                labels.append(
                    LabelEvent(
                        event_id=f"{model}-{i}",
                        model_id=model,
                        timestamp=i + 0.5,
                        label=float(score[i] + rng.normal(0, 0.1)),
                    )
                )
    return preds, labels


def _process(preds: list[PredictionEvent], labels: list[LabelEvent]) -> PartitionState:
    st = PartitionState(0, CFG)
    order = np.argsort([p.timestamp for p in preds], kind="stable")
    preds = [preds[i] for i in order]
    labels = sorted(labels, key=lambda e: e.timestamp)
    for lo in range(0, N_M, 500):
        hi = lo + 500
        st.process(
            [p for p in preds if lo <= p.timestamp < hi],
            [lab for lab in labels if lo <= lab.timestamp < hi],
        )
    return st


@pytest.fixture(scope="module")
def traffic() -> tuple[list[PredictionEvent], list[LabelEvent]]:
    return _events(seed=5)


@pytest.fixture()
def setup(
    traffic: tuple[list[PredictionEvent], list[LabelEvent]],
) -> tuple[CollectorRegistry, dict[int, PartitionState], Instruments]:
    st = _process(*traffic)
    states = {0: st}
    reg = CollectorRegistry()
    inst = Instruments(reg)
    reg.register(StateCollector(lambda: states, threading.Lock()))
    return reg, states, inst


def _numpy_psi(ref: np.ndarray, win: np.ndarray, n_bins: int = 10, eps: float = 1e-4) -> float:
    edges = np.unique(np.quantile(ref, [k / n_bins for k in range(1, n_bins)]))
    k = len(edges) + 1
    p = np.bincount((ref[:, None] > edges).sum(1), minlength=k) / len(ref)
    q = np.bincount((win[:, None] > edges).sum(1), minlength=k) / len(win)
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


# ----------------------------------------------------------------------------- the values


def test_drift_score_equals_feature_psi_and_independent_psi(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
    traffic: tuple[list[PredictionEvent], list[LabelEvent]],
) -> None:
    reg, states, _ = setup
    m = states[0].models["m"]
    for feature in ("x1", "c1", "prediction.score"):
        f = m.features.get(feature) or m.outputs[feature]
        value = reg.get_sample_value(
            "stream_monitor_feature_drift_score",
            {"model_id": "m", "feature": feature, "statistic": "psi"},
        )
        assert f.psi is not None
        assert value == f.psi, feature
    # and against numpy: reference = m's events 0..999, last window = 3000..3999
    x1 = np.array([p.features["x1"] for p in traffic[0] if p.model_id == "m"])
    expected = _numpy_psi(x1[:1000], x1[N_M - 1000 :])
    score = reg.get_sample_value(
        "stream_monitor_feature_drift_score",
        {"model_id": "m", "feature": "x1", "statistic": "psi"},
    )
    assert score is not None and score > 1.0
    assert score == pytest.approx(expected, rel=1e-9)


def test_model_counters_and_ratios(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
    traffic: tuple[list[PredictionEvent], list[LabelEvent]],
) -> None:
    reg, states, _ = setup
    g = reg.get_sample_value
    assert g("stream_monitor_model_events_total", {"model_id": "m"}) == N_M
    assert g("stream_monitor_model_events_total", {"model_id": "m2"}) == N_M2
    assert g("stream_monitor_model_reference_ready", {"model_id": "m"}) == 1.0
    # x9 is None for every 10th event: the last window of m2 (events 1000..1499, 500 events of
    # a 1000-event window) never closed, so m2 has no ratio yet; m's last window is 3000..3999
    assert g("stream_monitor_feature_missing_ratio", {"model_id": "m", "feature": "x9"}) == 0.1
    assert g("stream_monitor_feature_missing_ratio", {"model_id": "m2", "feature": "x9"}) is None
    _, labels = traffic
    labelled_m = sum(lab.model_id == "m" for lab in labels)
    assert g("stream_monitor_model_labelled_predictions_total", {"model_id": "m"}) == labelled_m
    err = states[0].models["m"].concept
    assert err.metric == "absolute_error"
    assert (
        g("stream_monitor_model_error_baseline", {"model_id": "m", "metric": "absolute_error"})
        == err.baseline
    )
    assert g("stream_monitor_feature_type_errors_total", {"model_id": "m", "feature": "x1"}) == 0
    assert (
        g("stream_monitor_feature_unseen_categories_total", {"model_id": "m", "feature": "c1"}) == 0
    )


def test_issue4_series_mirror_the_state(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
) -> None:
    """Thresholds, quality ratios, window detectors and model-level signals on /metrics are
    exactly what the state holds, and the drifted feature reads as drifting."""
    reg, states, _ = setup
    g = reg.get_sample_value
    m = states[0].models["m"]
    x1 = m.features["x1"]
    lv = {"model_id": "m", "feature": "x1"}
    thr = g("stream_monitor_feature_drift_threshold", {**lv, "statistic": "psi"})
    assert thr is not None and thr == x1.thresholds["psi"] >= CFG.drift.thresholds.min_effect["psi"]
    assert g("stream_monitor_feature_drifting", lv) == 1.0
    assert g("stream_monitor_feature_drifting", {**lv, "feature": "c1"}) == 0.0
    for signal in ("missing_ratio", "absent_ratio", "type_error_ratio", "out_of_range_ratio"):
        assert g(f"stream_monitor_feature_{signal}", lv) == x1.quality_ratios[signal], signal
    assert g("stream_monitor_feature_new_category_ratio", {**lv, "feature": "c1"}) == 0.0
    assert x1.window_detectors is not None
    for key, n in x1.window_detectors.detections.items():
        stream, det = key.split("/")
        labels = {**lv, "stream": stream, "detector": det}
        assert g("stream_monitor_window_detector_detections_total", labels) == n
    # three windows closed for m (events 1000..3999), none yet for m2 (1000..1499 is open)
    assert g("stream_monitor_model_windows_closed_total", {"model_id": "m"}) == 3
    assert g("stream_monitor_model_windows_closed_total", {"model_id": "m2"}) == 0
    assert g("stream_monitor_model_late_events_total", {"model_id": "m"}) == 0
    ref = {"model_id": "m", "source": "first_events"}
    assert g("stream_monitor_model_reference_info", ref) == 1.0
    # inputs of m: x1 (drifting), c1, x9 -> one of three, uniform importance
    assert g("stream_monitor_model_drift_score", {"model_id": "m"}) == pytest.approx(1 / 3)
    assert g("stream_monitor_model_drifting_features", {"model_id": "m"}) == 1
    assert m.drifting_features == ["x1"]


def test_issue5_label_delay_awaiting_and_performance_series(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
    traffic: tuple[list[PredictionEvent], list[LabelEvent]],
) -> None:
    """Label delays, the share still awaiting labels and windowed performance, against brute
    force over the generated traffic."""
    reg, states, _ = setup
    g = reg.get_sample_value
    preds, labels = traffic
    labelled = [lab for lab in labels if lab.model_id == "m"]
    # every label comes 0.5 s after its prediction: all in the first bucket (le="1")
    m = {"model_id": "m"}
    assert g("stream_monitor_label_delay_seconds_count", m) == len(labelled)
    assert g("stream_monitor_label_delay_seconds_sum", m) == 0.5 * len(labelled)
    assert g("stream_monitor_label_delay_seconds_bucket", {**m, "le": "1"}) == len(labelled)
    assert g("stream_monitor_label_delay_seconds_bucket", {**m, "le": "+Inf"}) == len(labelled)
    n_m = sum(p.model_id == "m" for p in preds)
    ratio = g("stream_monitor_model_labels_awaited_ratio", m)
    assert ratio == pytest.approx((n_m - len(labelled)) / n_m)
    # regression performance: the first window of 1,000 labelled predictions, in label order
    score = {p.event_id: p.prediction for p in preds if p.model_id == "m"}
    first = labelled[:1000]
    errors = np.array([abs(score[lab.event_id] - lab.label) for lab in first])
    mae = g("stream_monitor_model_performance", {**m, "metric": "mae", "class": ""})
    assert mae == pytest.approx(errors.mean(), rel=1e-12)
    rmse = g("stream_monitor_model_performance", {**m, "metric": "rmse", "class": ""})
    assert rmse == pytest.approx(np.sqrt((errors**2).mean()), rel=1e-12)
    assert g("stream_monitor_model_late_labels_total", m) == 0
    errors = states[0].models["m"].concept
    assert (
        g("stream_monitor_model_concept_detections_total", {**m, "detector": "adwin"})
        == (errors.detections["adwin"])
    )
    merged = g("stream_monitor_model_concept_detections_total", {**m, "detector": "merged"})
    assert merged == errors.merged_detections
    # three baseline windows are needed: not yet
    assert g("stream_monitor_model_performance_baseline", {**m, "metric": "mae"}) is None


def test_label_join_pending(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
    traffic: tuple[list[PredictionEvent], list[LabelEvent]],
) -> None:
    reg, states, _ = setup
    preds, labels = traffic
    pending = reg.get_sample_value("stream_monitor_label_join_pending", {"partition": "0"})
    # brute force: every prediction waits unless its label came (TTL and capacity not binding)
    assert pending == len(preds) - len(labels) == len(states[0].join)
    assert (
        reg.get_sample_value("stream_monitor_label_join_unmatched_labels_total", {"partition": "0"})
        == 0
    )


def test_alert_firing_for_a_firing_incident(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
) -> None:
    reg, states, _ = setup
    assert states[0].tracker.firing() == [("m", "data_drift", "x1")]
    labels = {"model_id": "m", "kind": "data_drift", "feature": "x1"}
    assert reg.get_sample_value("stream_monitor_alert_firing", labels) == 1.0
    assert reg.get_sample_value("stream_monitor_alert_firing", {**labels, "model_id": "m2"}) is None
    assert reg.get_sample_value("stream_monitor_alert_firing", {**labels, "feature": "c1"}) is None


def test_detector_series(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
) -> None:
    reg, states, _ = setup
    f = states[0].models["m"].features["x1"]
    assert isinstance(f, NumericFeature)
    for det in ("adwin", "page_hinkley"):
        v = reg.get_sample_value(
            "stream_monitor_detector_detections_total",
            {"model_id": "m", "feature": "x1", "detector": det},
        )
        assert v == f.detections[det] >= 1
    assert (
        reg.get_sample_value(
            "stream_monitor_feature_agreeing_detectors", {"model_id": "m", "feature": "x1"}
        )
        == f.agreeing_detectors()
    )


# ---------------------------------------------------------------------- series lifecycle


def test_removed_model_disappears_from_exposition(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
) -> None:
    reg, states, _ = setup
    before = generate_latest(reg).decode()
    assert 'model_id="m2"' in before
    del states[0].models["m2"]
    after = generate_latest(reg).decode()
    assert 'model_id="m2"' not in after
    assert 'stream_monitor_model_events_total{model_id="m"} 4000.0' in after
    # a revoked partition takes all its series with it
    states.clear()
    gone = generate_latest(reg).decode()
    assert 'model_id="m"' not in gone and 'partition="0"' not in gone
    assert "stream_monitor_build_info" in gone  # the instruments stay


def test_instruments_live_on_the_given_registry_only(
    setup: tuple[CollectorRegistry, dict[int, PartitionState], Instruments],
) -> None:
    reg, _, inst = setup
    assert reg.get_sample_value("stream_monitor_build_info", {"version": __version__}) == 1.0
    inst.events_consumed.labels(topic="predictions").inc(3)
    inst.events_invalid.labels(topic="labels", reason="decode_error").inc()
    assert (
        reg.get_sample_value("stream_monitor_events_consumed_total", {"topic": "predictions"})
        == 3.0
    )
    assert (
        reg.get_sample_value(
            "stream_monitor_events_invalid_total", {"topic": "labels", "reason": "decode_error"}
        )
        == 1.0
    )
    # nothing leaked into the global registry, and a second instance does not collide
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "stream_monitor_events_consumed_total", {"topic": "predictions"}
        )
        is None
    )
    other = CollectorRegistry()
    Instruments(other)
    assert (
        other.get_sample_value("stream_monitor_events_consumed_total", {"topic": "predictions"})
        is None
    )


def test_collect_reads_state_under_the_lock(
    traffic: tuple[list[PredictionEvent], list[LabelEvent]],
) -> None:
    class RecordingLock:
        held = False

        @contextmanager
        def _ctx(self) -> Iterator[None]:
            self.held = True
            try:
                yield
            finally:
                self.held = False

        def __enter__(self) -> None:
            self._cm = self._ctx()
            self._cm.__enter__()

        def __exit__(self, *exc: Any) -> None:
            self._cm.__exit__(*exc)

    lock = RecordingLock()
    seen: list[bool] = []
    states = {0: PartitionState(0, CFG)}

    def get_states() -> dict[int, PartitionState]:
        seen.append(lock.held)
        return states

    reg = CollectorRegistry()
    reg.register(StateCollector(get_states, lock))  # type: ignore[arg-type]
    generate_latest(reg)
    assert seen == [True] and not lock.held


def test_alert_firing_labels_for_feature_name_with_slash() -> None:
    preds, labels = _events(seed=5, drifted="geo/lat")
    st = _process(preds, labels)
    assert st.tracker.firing() == [("m", "data_drift", "geo/lat")]
    reg = CollectorRegistry()
    reg.register(StateCollector(lambda: {0: st}, threading.Lock()))
    assert (
        reg.get_sample_value(
            "stream_monitor_alert_firing",
            {"model_id": "m", "kind": "data_drift", "feature": "geo/lat"},
        )
        == 1.0
    )  # not {model_id="m/data_drift", kind="geo", feature="lat"}
