"""Windowed performance, label delivery, concept drift, segments, fairness and model versions
through ``PartitionState``, on seeded streams with known change points.

Every value asserted is recomputed independently: scikit-learn for the metrics, plain loops
for rates and counters, and :class:`JoinSim` -- a from-the-docs model of the label join (TTL
by the model's newest prediction, early labels parked for ``early_grace_seconds``) -- for which
labelled pairs reach the performance windows, and in which order.

Prediction ``i`` of every stream has timestamp ``i`` (seconds).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import (
    AlertEvent,
    LabelEvent,
    PredictionEvent,
    ScoredPrediction,
)
from stream_monitor.metrics.collector import StateCollector
from stream_monitor.monitor.join import DELAY_BUCKETS
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.monitor.performance import fairness_rates
from stream_monitor.reference.profile import build_profile
from stream_monitor.stats.performance_sketch import ClassificationSketch

REL = 1e-12
Pair = tuple[PredictionEvent, Any]
Batch = tuple[list[PredictionEvent], list[LabelEvent]]


def _cfg(**sections: Any) -> MonitorConfig:
    return MonitorConfig.model_validate({"bootstrap_servers": "unused:9092", **sections})


# --------------------------------------------------------------------------- stream builders


def _clf(
    i: int,
    score: float,
    *,
    model: str = "m",
    x: float = 0.0,
    region: str | None = None,
    version: str | None = None,
) -> PredictionEvent:
    """A scored binary prediction; its class is ``score >= 0.5``."""
    return PredictionEvent(
        event_id=f"{model}-{i}",
        model_id=model,
        model_version=version,
        timestamp=float(i),
        features={"x": x},
        prediction=ScoredPrediction(label=int(score >= 0.5), score=score),
        segments=None if region is None else {"region": region},
    )


def _label(p: PredictionEvent, ts: float, value: Any) -> LabelEvent:
    return LabelEvent(event_id=p.event_id, model_id=p.model_id, timestamp=ts, label=value)


def _truth(rng: np.random.Generator, pred: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """True 0/1 classes: the prediction with probability ``acc``, else the other class."""
    return np.where(rng.random(len(pred)) < acc, pred, 1 - pred)


def _by_time(
    preds: Sequence[PredictionEvent], labels: Sequence[LabelEvent], width: float
) -> list[Batch]:
    """Batch ``k``: predictions and labels with event time in ``[k*width, (k+1)*width)``, in
    the given order (labels are sorted by their time before, i.e. shuffled within the delay)."""
    end = max([p.timestamp for p in preds] + [lab.timestamp for lab in labels])
    out: list[Batch] = [([], []) for _ in range(int(end // width) + 1)]
    for p in preds:
        out[int(p.timestamp // width)][0].append(p)
    for lab in labels:
        out[int(lab.timestamp // width)][1].append(lab)
    return out


def _run(st: PartitionState, batches: Sequence[Batch]) -> list[list[AlertEvent]]:
    return [st.process(p, lab) for p, lab in batches]


def _flat(per_batch: Sequence[Sequence[AlertEvent]]) -> list[AlertEvent]:
    return [a for alerts in per_batch for a in alerts]


#: The concept-drift signals: they join the model's performance incident (one root cause).
CONCEPT_SIGNALS = ("error_rate", "absolute_error")


def _concept(alerts: Sequence[AlertEvent]) -> list[AlertEvent]:
    """Per incident, the first event that lists a breached concept-drift signal (its firing,
    or the update when the errors rise in an incident that performance opened)."""
    out: dict[str | None, AlertEvent] = {}
    for a in alerts:
        if a.status != "resolved" and any(
            sig.kind == "concept_drift" and sig.breached for sig in a.signals
        ):
            out.setdefault(a.incident_id, a)
    return list(out.values())


def _metric_alerts(alerts: Sequence[AlertEvent]) -> list[AlertEvent]:
    """The events of performance incidents led by a performance metric (not the errors)."""
    return [a for a in alerts if a.kind == "performance" and a.signal not in CONCEPT_SIGNALS]


# --------------------------------------------------------------------------- the join, by hand


@dataclass
class JoinSim:
    """One model's join as documented (docs/performance.md, section 1), for brute force.

    Per batch: each prediction first takes its parked (early) label, else waits; a waiting
    prediction expires once it is older than the newest *waiting-queue* prediction minus the TTL;
    then each label matches its waiting prediction or is parked (a key parked again keeps its
    place); parked labels expire ``grace`` seconds of label time behind the newest parked one.
    """

    ttl: float = 7 * 24 * 3600.0
    grace: float = 600.0
    pending: OrderedDict[str, PredictionEvent] = field(default_factory=OrderedDict)
    watermark: float = -math.inf
    early: OrderedDict[str, tuple[float, Any]] = field(default_factory=OrderedDict)
    early_watermark: float = -math.inf
    matched: int = 0
    expired: int = 0
    early_joined: int = 0
    early_expired: int = 0
    delays: list[float] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    batch_pairs: list[list[Pair]] = field(default_factory=list)

    def batch(self, preds: Sequence[PredictionEvent], labels: Sequence[LabelEvent]) -> None:
        out: list[Pair] = []
        for p in preds:
            parked = self.early.pop(p.event_id, None)
            if parked is not None:
                self.early_joined += 1
                self.delays.append(max(parked[0] - p.timestamp, 0.0))
                out.append((p, parked[1]))
                continue
            self.pending[p.event_id] = p
            self.watermark = max(self.watermark, p.timestamp)
            while self.pending:
                head = next(iter(self.pending.values()))
                if head.timestamp >= self.watermark - self.ttl:
                    break
                self.pending.popitem(last=False)
                self.expired += 1
        for lab in labels:
            p = self.pending.pop(lab.event_id, None)
            if p is None:
                self.early[lab.event_id] = (lab.timestamp, lab.label)
                self.early_watermark = max(self.early_watermark, lab.timestamp)
                while self.early:
                    ts = next(iter(self.early.values()))[0]
                    if ts >= self.early_watermark - self.grace:
                        break
                    self.early.popitem(last=False)
                    self.early_expired += 1
                continue
            self.matched += 1
            self.delays.append(max(lab.timestamp - p.timestamp, 0.0))
            out.append((p, lab.label))
        self.pairs.extend(out)
        self.batch_pairs.append(out)

    @classmethod
    def of(cls, batches: Sequence[Batch], **kw: Any) -> JoinSim:
        sim = cls(**kw)
        for p, lab in batches:
            sim.batch(p, lab)
        return sim


# --------------------------------------------------------------------------- metrics, by hand


def _arrays(window: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.array([int(t) for _, t in window])
    yp = np.array([int(p.prediction_label() or 0) for p, _ in window])
    s = np.array([p.prediction_score() for p, _ in window], dtype=float)
    return y, yp, s


def _auc_bound(y: np.ndarray, s: np.ndarray, bins: int = 100) -> float:
    """Documented gap between the binned and the exact AUC: half the share of positive/negative
    pairs sharing a score bin."""
    b = np.minimum((s * bins).astype(int), bins - 1)
    pos = np.bincount(b[y == 1], minlength=bins)
    neg = np.bincount(b[y == 0], minlength=bins)
    return 0.5 * float((pos * neg).sum()) / float(pos.sum() * neg.sum())


def _assert_clf_metrics(got: dict[str, float], window: Sequence[Pair]) -> None:
    y, yp, s = _arrays(window)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, yp), rel=REL)
    assert got["f1_macro"] == pytest.approx(f1_score(y, yp, average="macro"), rel=REL)
    assert got["log_loss"] == pytest.approx(log_loss(y, s, labels=[0, 1]), rel=1e-9)
    assert got["brier"] == pytest.approx(brier_score_loss(y, s), rel=1e-9)
    assert abs(got["roc_auc"] - roc_auc_score(y, s)) <= _auc_bound(y, s) + 1e-12


def _rates(window: Sequence[Pair]) -> dict[str, float]:
    y, yp, _ = _arrays(window)
    out = {"positive_rate": float(np.sum(yp == 1)) / len(yp)}
    if np.any(y == 1):
        out["tpr"] = float(np.sum((yp == 1) & (y == 1))) / float(np.sum(y == 1))
    if np.any(y == 0):
        out["fpr"] = float(np.sum((yp == 1) & (y == 0))) / float(np.sum(y == 0))
    return out


def _last_window(pairs: Sequence[Pair], size: int) -> list[Pair]:
    k = len(pairs) // size
    assert k > 0
    return list(pairs[(k - 1) * size : k * size])


def _region(p: PredictionEvent) -> str:
    return f"region={(p.segments or {})['region']}"


# =========================================================================== 1. windows


def _classification_traffic(seed: int, n: int) -> tuple[list[PredictionEvent], list[LabelEvent]]:
    """Calibrated scores (truth ~ Bernoulli(score)); 10 % of labels never sent, the others
    0..30 s after their prediction, delivered in label-time order (shuffled within 30 s)."""
    rng = np.random.default_rng(seed)
    score = np.clip(np.round(rng.beta(2.0, 2.0, n), 4), 0.01, 0.99)
    truth = (rng.random(n) < score).astype(int)
    preds = [_clf(i, float(score[i])) for i in range(n)]
    sent = rng.random(n) >= 0.1
    delay = rng.uniform(0.0, 30.0, n)
    labels = [_label(preds[i], i + delay[i], int(truth[i])) for i in np.flatnonzero(sent)]
    labels.sort(key=lambda e: e.timestamp)
    return preds, labels


def test_count_windows_match_sklearn_on_the_labelled_pairs_of_each_window() -> None:
    size = 500
    preds, labels = _classification_traffic(seed=1, n=3000)
    batches = _by_time(preds, labels, 100.0)
    sim = JoinSim.of(batches)
    st = PartitionState(0, _cfg(performance={"window": {"size": size}, "baseline_windows": 2}))
    seen = 0
    checked = 0
    for (p, lab), pairs in zip(batches, sim.batch_pairs, strict=True):
        st.process(p, lab)
        seen += len(pairs)
        pm = st.models["m"].performance
        assert pm is not None
        assert pm.windows == seen // size
        if seen >= size:
            _assert_clf_metrics(pm.last_metrics, _last_window(sim.pairs[:seen], size))
            checked += 1
    assert sim.early_joined == 0  # every label comes after its prediction here
    assert len(sim.pairs) == len(labels) and pm.pane_clock.events == len(labels)
    assert pm.windows == len(labels) // size >= 5 and checked > 20


def test_regression_count_windows_match_sklearn() -> None:
    size = 500
    rng = np.random.default_rng(2)
    n = 3000
    yhat = np.round(rng.normal(10.0, 3.0, n), 3)
    noise = rng.normal(0.0, 1.0, n) * np.where(np.arange(n) >= 1500, 2.0, 1.0)
    preds = [
        PredictionEvent(
            event_id=f"r-{i}",
            model_id="r",
            timestamp=float(i),
            features={"x": float(yhat[i])},
            prediction=float(yhat[i]),
        )
        for i in range(n)
    ]
    delay = rng.uniform(0.0, 50.0, n)
    labels = sorted(
        (_label(preds[i], i + delay[i], float(yhat[i] + noise[i])) for i in range(n)),
        key=lambda e: e.timestamp,
    )
    batches = _by_time(preds, labels, 100.0)
    sim = JoinSim.of(batches)
    # updates without a rate limit: a metric is announced in the window it breaches
    st = PartitionState(
        0,
        _cfg(
            performance={"window": {"size": size}, "baseline_windows": 2},
            alerts={"update_interval_seconds": 0},
        ),
    )
    seen = 0
    alerts: list[AlertEvent] = []
    for (p, lab), pairs in zip(batches, sim.batch_pairs, strict=True):
        alerts.extend(st.process(p, lab))
        seen += len(pairs)
        pm = st.models["r"].performance
        assert pm is not None and pm.windows == seen // size
        if seen < size:
            continue
        k = seen // size
        win = sim.pairs[(k - 1) * size : k * size]
        yt = np.array([t for _, t in win], dtype=float)
        yp = np.array([q.prediction_score() for q, _ in win], dtype=float)
        got = pm.last_metrics
        assert got["mae"] == pytest.approx(mean_absolute_error(yt, yp), rel=1e-9)
        assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(yt, yp)), rel=1e-9)
        assert got["r2"] == pytest.approx(r2_score(yt, yp), rel=1e-9)
    assert pm.task == "regression" and pm.windows == n // size
    # the noise doubles from prediction 1500 on: MAE doubles and breaches, not before; the
    # errors' detectors (absolute_error) opened the model's performance incident first
    assert [(a.status, a.signal) for a in _concept(alerts)] == [("firing", "absolute_error")]
    perf = _metric_alerts(alerts)
    assert perf and (perf[0].status, perf[0].signal) == ("updated", "mae")
    assert perf[0].incident_id == _concept(alerts)[0].incident_id
    # pairs 1500..1999 (label order) form the first window after the change
    win = sim.pairs[1500:2000]
    mae = mean_absolute_error([t for _, t in win], [q.prediction_score() for q, _ in win])
    assert perf[0].value == pytest.approx(mae, rel=1e-9) and perf[0].observed_at >= 2000


def test_performance_alert_fires_in_the_first_degraded_window_and_not_before() -> None:
    size, change, n, per_batch = 500, 3000, 4000, 100
    rng = np.random.default_rng(3)
    score = np.round(rng.uniform(0.05, 0.95, n), 4)
    pred = (score >= 0.5).astype(int)
    truth = _truth(rng, pred, np.where(np.arange(n) >= change, 0.6, 0.9))
    preds = [_clf(i, float(score[i])) for i in range(n)]
    labels = [_label(preds[i], i + 0.5, int(truth[i])) for i in range(n)]
    # updates without a rate limit: a metric is announced in the window it breaches
    st = PartitionState(
        0,
        _cfg(
            performance={"window": {"size": size}, "baseline_windows": 2},
            alerts={"update_interval_seconds": 0},
        ),
    )
    batches = [
        (preds[i : i + per_batch], labels[i : i + per_batch]) for i in range(0, n, per_batch)
    ]
    per = _run(st, batches)
    perf = [(b, a) for b, alerts in enumerate(per) for a in _metric_alerts(alerts)]
    assert perf, "no performance alert"
    b, first = perf[0]
    # the window of labels 3000..3499 closes in the batch of labels 3400..3499; the errors'
    # detectors opened the incident before, so the accuracy joins it in an update
    assert b == (change + size) // per_batch - 1
    assert (first.status, first.signal, first.segment) == ("updated", "accuracy", None)
    acc = [float(np.mean(pred[k : k + size] == truth[k : k + size])) for k in range(0, n, size)]
    base = (acc[0] + acc[1]) / 2
    assert first.value == pytest.approx(acc[change // size], rel=REL)
    assert first.threshold == pytest.approx(base * 0.9, rel=REL)
    assert first.window_events == size
    assert all(v >= base * 0.9 for v in acc[2 : change // size])  # no breach before
    assert [a.status for _, a in perf] == ["updated"]  # announced once, in its incident


def test_time_windows_by_prediction_time_count_late_labels_exactly() -> None:
    """Time windows of 100 s by *prediction* time, waiting 50 s for labels: a label whose
    prediction's window is already judged is late. Brute force: in pair order, with ``M`` the
    newest prediction time among the pairs so far (this one included), a pair is late iff
    ``floor(ts / 100) < floor((M - 50) / 100)``."""
    width, lateness, n = 100.0, 50.0, 4000
    rng = np.random.default_rng(4)
    score = np.round(rng.uniform(0.05, 0.95, n), 4)
    truth = _truth(rng, (score >= 0.5).astype(int), np.full(n, 0.8))
    preds = [_clf(i, float(score[i])) for i in range(n)]
    delay = rng.exponential(40.0, n)
    labels = sorted(
        (_label(preds[i], i + delay[i], int(truth[i])) for i in range(n)), key=lambda e: e.timestamp
    )
    batches = _by_time(preds, labels, 20.0)
    sim = JoinSim.of(batches)
    perf_cfg = {"window": {"kind": "time", "size": width, "allowed_lateness_seconds": lateness}}
    st = PartitionState(0, _cfg(performance=perf_cfg))
    _run(st, batches)
    pm = st.models["m"].performance
    assert pm is not None
    late = np.zeros(len(sim.pairs), dtype=bool)
    top = -math.inf
    for k, (p, _) in enumerate(sim.pairs):
        top = max(top, p.timestamp)
        late[k] = math.floor(p.timestamp / width) < math.floor((top - lateness) / width)
    assert 0 < late.sum() < len(late) // 2
    assert pm.late_labels == int(late.sum())
    assert pm.pane_clock.events == len(sim.pairs) - int(late.sum())
    # the last judged window: the newest complete pane holding a pair that was on time
    last_complete = math.floor((top - lateness) / width) - 1
    panes = np.array([math.floor(p.timestamp / width) for p, _ in sim.pairs])
    p_last = int(panes[~late & (panes <= last_complete)].max())
    win = [
        pair for pair, lt, q in zip(sim.pairs, late, panes, strict=True) if q == p_last and not lt
    ]
    _assert_clf_metrics(pm.last_metrics, win)
    assert pm.windows == len(set(panes[~late & (panes <= last_complete)].tolist()))


# =========================================================================== 2. delivery


def _chaotic_delivery(seed: int, n: int, width: float) -> tuple[list[PredictionEvent], list[Batch]]:
    """Labels 0..120 s after their prediction, shuffled within each batch; 10 % never sent, 5 %
    sent twice (the copy up to 3 batches later), 5 % read one batch *before* their prediction."""
    rng = np.random.default_rng(seed)
    score = np.round(rng.uniform(0.05, 0.95, n), 4)
    truth = _truth(rng, (score >= 0.5).astype(int), np.full(n, 0.85))
    preds = [_clf(i, float(score[i])) for i in range(n)]
    delay = rng.uniform(0.0, 120.0, n)
    sent = rng.random(n) >= 0.10
    twice = rng.random(n) < 0.05
    early = rng.random(n) < 0.05
    n_batches = int((n + 120.0) // width) + 5
    batches: list[Batch] = [([], []) for _ in range(n_batches)]
    for p in preds:
        batches[int(p.timestamp // width)][0].append(p)
    for i in np.flatnonzero(sent):
        lab = _label(preds[i], i + delay[i], int(truth[i]))
        pred_batch = int(i // width)
        b = pred_batch - 1 if early[i] and pred_batch > 0 else int(lab.timestamp // width)
        batches[b][1].append(lab)
        if twice[i]:
            batches[b + int(rng.integers(0, 4))][1].append(lab)
    for _, labels in batches:
        rng.shuffle(labels)  # type: ignore[arg-type]
    return preds, batches


@pytest.mark.parametrize("ttl", [None, 30.0])
def test_shuffled_late_duplicate_missing_and_early_labels(ttl: float | None) -> None:
    n, size = 4000, 500
    preds, batches = _chaotic_delivery(seed=7, n=n, width=50.0)
    assert sum(len(p) for p, _ in batches) == len(preds) == n
    labels_cfg = {} if ttl is None else {"ttl_seconds": ttl}
    cfg = _cfg(labels=labels_cfg, performance={"window": {"size": size}, "baseline_windows": 2})
    st = PartitionState(0, cfg)
    _run(st, batches)
    sim = JoinSim.of(batches, **({} if ttl is None else {"ttl": ttl}))
    ids = [p.event_id for p, _ in sim.pairs]
    assert len(ids) == len(set(ids))  # the brute force itself joins each prediction once
    assert sim.early_joined > 50
    m = st.models["m"]
    pm = m.performance
    assert pm is not None
    # nothing double-counted: each distinct matched pair reaches the windows exactly once
    assert pm.pane_clock.events == len(sim.pairs) == m.concept.n
    assert pm.windows == len(sim.pairs) // size
    y, yp, _ = _arrays(_last_window(sim.pairs, size))
    assert pm.last_metrics["accuracy"] == pytest.approx(accuracy_score(y, yp), rel=REL)
    # the join's counters: a prediction joined with an early label is matched on arrival
    stats = st.join.by_model["m"]
    assert stats.matched == sim.matched + sim.early_joined
    assert stats.expired == sim.expired
    assert stats.pending == len(sim.pending) == len(st.join)
    assert (stats.evicted, stats.duplicates) == (0, 0)
    total = stats.pending + stats.matched + stats.expired + stats.evicted + stats.duplicates
    assert total == n
    assert st.early.matched == sim.early_joined
    if ttl is None:
        assert sim.expired == 0
    else:
        assert sim.expired > 200  # delays up to 120 s against a 30 s TTL
    # labels that never met a prediction: parked (duplicates, labels of expired predictions)
    # until the grace expires
    assert len(st.early) == len(sim.early)
    assert st.unmatched_labels == sim.early_expired > 0
    # label delays: brute force over every matched pair, early labels included
    counts, total_delay, count = st.join.delay_histogram("m")
    d = np.array(sim.delays)
    assert count == len(d) == sim.matched + sim.early_joined == len(sim.pairs)
    assert total_delay == pytest.approx(float(d.sum()), rel=1e-9)
    cumulative = np.cumsum(counts)
    for bound, c in zip([*DELAY_BUCKETS, math.inf], cumulative.tolist(), strict=True):
        assert c == int(np.sum(d <= bound)), bound
    assert counts[1] > 0 and counts[2] > 0 and counts[3] > 0  # 1-10 s, 10-60 s, 60-300 s


def test_join_counters_add_up_to_the_predictions_sent_with_early_labels() -> None:
    a, b = _clf(0, 0.9), _clf(1, 0.2)
    st = PartitionState(0, _cfg())
    st.process([], [_label(a, 5.0, 1)])  # a's label is read first
    st.process([a, b], [])
    stats = st.join.by_model["m"]
    assert stats.pending + stats.matched + stats.expired + stats.evicted + stats.duplicates == 2
    assert st.join.awaiting_ratio("m") == 0.5  # b waits, a is labelled


# =========================================================================== 3. concept drift

CONCEPT_N, CONCEPT_CHANGE = 6000, 3000


def _bernoulli_errors(seed: int, model: str = "m") -> list[Batch]:
    """A classifier whose error rate steps from 0.1 to 0.3 at prediction 3000; every label
    0.5 s after its prediction, batches of 200."""
    rng = np.random.default_rng(seed)
    n = CONCEPT_N
    score = np.round(rng.uniform(0.05, 0.95, n), 4)
    err = np.where(np.arange(n) >= CONCEPT_CHANGE, 0.3, 0.1)
    truth = _truth(rng, (score >= 0.5).astype(int), 1.0 - err)
    preds = [_clf(i, float(score[i]), model=model) for i in range(n)]
    labels = [_label(preds[i], i + 0.5, int(truth[i])) for i in range(n)]
    return [(preds[i : i + 200], labels[i : i + 200]) for i in range(0, n, 200)]


@pytest.mark.parametrize("detectors", [("ddm",), ("adwin", "hddm_a")])
def test_concept_drift_alert_after_the_change_only(detectors: tuple[str, ...]) -> None:
    st = PartitionState(0, _cfg(labels={"detectors": list(detectors)}))
    alerts = _flat(_run(st, _bernoulli_errors(seed=11)))
    concept = _concept(alerts)
    assert [a.status for a in concept] == ["firing"]
    assert CONCEPT_CHANGE < concept[0].observed_at < CONCEPT_CHANGE + 1500
    assert concept[0].signal == "error_rate" and concept[0].segment is None
    errors = st.models["m"].concept
    assert errors.kinds == detectors and set(errors.detections) == set(detectors)
    assert errors.merged_detections == 1
    assert errors.baseline == pytest.approx(0.1, abs=0.04)


def test_model_detectors_select_per_model() -> None:
    st = PartitionState(0, _cfg(labels={"model_detectors": {"m2": ["eddm"]}}))
    batches = [
        (p1 + p2, l1 + l2)
        for (p1, l1), (p2, l2) in zip(
            _bernoulli_errors(seed=12), _bernoulli_errors(seed=13, model="m2"), strict=True
        )
    ]
    alerts = _flat(_run(st, batches))
    assert st.models["m2"].concept.kinds == ("eddm",)
    assert set(st.models["m2"].concept.detections) == {"eddm"}
    assert st.models["m"].concept.kinds == ("adwin",)  # the default
    for model in ("m", "m2"):
        concept = [a for a in _concept(alerts) if a.model_id == model]
        assert [a.status for a in concept] == ["firing"], model
        assert concept[0].observed_at > CONCEPT_CHANGE, model


# =========================================================================== 4. segments

SEG_N, SEG_CHANGE, SEG_WIN = 20_000, 12_000, 500
REGIONS, REGION_P = ("eu", "us", "apac"), (0.45, 0.45, 0.10)


@dataclass
class SegmentRun:
    st: PartitionState
    alerts: list[AlertEvent]
    sim: JoinSim
    preds: list[PredictionEvent]
    batches: list[Batch]


def _segment_traffic(seed: int) -> tuple[list[PredictionEvent], list[Batch]]:
    """Three regions; from prediction 12000 on, apac (10 % of traffic) is right only half the
    time (others: 95 %) and its feature x shifts by +2 sd. Labels 0..20 s late."""
    rng = np.random.default_rng(seed)
    n = SEG_N
    region = np.asarray(REGIONS, dtype=object)[rng.choice(3, n, p=REGION_P)]
    after = np.arange(n) >= SEG_CHANGE
    apac_after = after & (region == "apac")
    score = np.round(rng.uniform(0.05, 0.95, n), 4)
    truth = _truth(rng, (score >= 0.5).astype(int), np.where(apac_after, 0.5, 0.95))
    x = rng.normal(0.0, 1.0, n) + np.where(apac_after, 2.0, 0.0)
    preds = [_clf(i, float(score[i]), x=float(x[i]), region=str(region[i])) for i in range(n)]
    delay = rng.uniform(0.0, 20.0, n)
    labels = sorted(
        (_label(preds[i], i + delay[i], int(truth[i])) for i in range(n)), key=lambda e: e.timestamp
    )
    return preds, _by_time(preds, labels, 250.0)


SEG_CFG = _cfg(
    segments={"keys": ["region"]},
    performance={"window": {"size": SEG_WIN}, "baseline_windows": 2},
    drift={"reference": {"size": 300}, "window": {"size": 300}},
)


@pytest.fixture(scope="module")
def seg_run() -> SegmentRun:
    preds, batches = _segment_traffic(seed=21)
    st = PartitionState(0, SEG_CFG)
    alerts = _flat(_run(st, batches))
    return SegmentRun(st, alerts, JoinSim.of(batches), preds, batches)


def test_degraded_segment_is_flagged_while_the_overall_accuracy_stays_flat(
    seg_run: SegmentRun,
) -> None:
    st, alerts, sim = seg_run.st, seg_run.alerts, seg_run.sim
    firing = [a for a in alerts if a.status == "firing"]
    apac = [a for a in firing if a.segment == "region=apac" and a.kind == "performance"]
    # the segment's errors and its accuracy are one incident: one page
    assert len(apac) == 1
    assert all(a.observed_at > SEG_CHANGE for a in apac)
    assert apac[0].dedup_key == "m/performance/-@region=apac"
    apac_events = [a for a in alerts if a.dedup_key == apac[0].dedup_key]
    kinds = {sig.kind for a in apac_events for sig in a.signals if sig.breached}
    assert kinds == {"performance", "concept_drift"}
    signals = {sig.signal for a in apac_events for sig in a.signals if sig.kind == "performance"}
    assert "accuracy" in signals
    others = [a for a in alerts if a.segment in ("region=eu", "region=us")]
    assert others == []
    # the whole model: its accuracy drops by less than 10 % (relative), so no window breaches
    assert not [a for a in _metric_alerts(alerts) if a.segment is None]
    y, yp, _ = _arrays(sim.pairs)
    acc = [
        accuracy_score(y[k : k + SEG_WIN], yp[k : k + SEG_WIN]) for k in range(0, len(y), SEG_WIN)
    ]
    acc = acc[: len(y) // SEG_WIN]
    base = (acc[0] + acc[1]) / 2
    assert min(acc) > base * 0.9  # never breached
    assert np.mean(acc[-8:]) < base - 0.02  # yet it did drop
    # the segment's metrics: brute force over the last window of apac's own labelled pairs
    apac_pairs = [pair for pair in sim.pairs if _region(pair[0]) == "region=apac"]
    child = st.models["m"].segments["region=apac"]
    assert child.performance is not None
    assert child.performance.windows == len(apac_pairs) // SEG_WIN >= 3
    _assert_clf_metrics(child.performance.last_metrics, _last_window(apac_pairs, SEG_WIN))
    assert child.concept.n == len(apac_pairs)
    for sid in ("region=eu", "region=us"):
        sub = [pair for pair in sim.pairs if _region(pair[0]) == sid]
        cp = st.models["m"].segments[sid].performance
        assert cp is not None
        _assert_clf_metrics(cp.last_metrics, _last_window(sub, SEG_WIN))


def _numpy_psi(ref: np.ndarray, win: np.ndarray, n_bins: int = 10, eps: float = 1e-4) -> float:
    edges = np.unique(np.quantile(ref, [k / n_bins for k in range(1, n_bins)]))
    k = len(edges) + 1
    p = np.bincount((ref[:, None] > edges).sum(1), minlength=k) / len(ref)
    q = np.bincount((win[:, None] > edges).sum(1), minlength=k) / len(win)
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def test_feature_shift_in_one_segment_gives_a_segment_data_drift_alert(
    seg_run: SegmentRun,
) -> None:
    alerts = seg_run.alerts
    drift = [a for a in alerts if a.kind == "data_drift" and a.status == "firing"]
    apac = [a for a in drift if a.segment == "region=apac" and a.feature == "x"]
    assert len(apac) == 1 and apac[0].observed_at > SEG_CHANGE
    assert apac[0].dedup_key == "m/data_drift/-@region=apac" and apac[0].top_features == ["x"]
    assert not [a for a in drift if a.segment in ("region=eu", "region=us")]
    # Observed: a 2 sd shift of 10 % of the traffic also moves the whole model's x (its own
    # incident, segment None), after the change only.
    whole = [a for a in drift if a.segment is None and a.feature == "x"]
    assert whole and all(a.observed_at > SEG_CHANGE for a in whole)
    # apac's PSI on x: its reference is its own first 300 events, its last window the last
    # complete 300 after them
    x = np.array([p.features["x"] for p in seg_run.preds if _region(p) == "region=apac"])
    k = (len(x) - 300) // 300
    f = seg_run.st.models["m"].segments["region=apac"].features["x"]
    expected = _numpy_psi(x[:300], x[300 + (k - 1) * 300 : 300 + k * 300])
    assert f.psi == pytest.approx(expected, rel=1e-9) and expected > 0.5


@dataclass
class CapRun:
    st: PartitionState
    values: list[str]
    truth: np.ndarray
    preds: list[PredictionEvent]


CAP = 5


@pytest.fixture(scope="module")
def cap_run() -> CapRun:
    """30 region values, at most 5 segment monitors (model "capm")."""
    n = 3000
    rng = np.random.default_rng(31)
    values = [f"r{v}" for v in rng.integers(0, 30, n)]
    score = np.round(rng.uniform(0.05, 0.95, n), 4)
    truth = _truth(rng, (score >= 0.5).astype(int), np.full(n, 0.9))
    preds = [_clf(i, float(score[i]), model="capm", region=values[i]) for i in range(n)]
    labels = [_label(preds[i], i + 0.5, int(truth[i])) for i in range(n)]
    cfg = _cfg(
        segments={"keys": ["region"], "max_values": CAP},
        performance={"window": {"size": 100}, "baseline_windows": 2},
    )
    st = PartitionState(1, cfg)
    _run(st, [(preds[i : i + 250], labels[i : i + 250]) for i in range(0, n, 250)])
    return CapRun(st, values, truth, preds)


def test_max_values_caps_segment_monitors_and_counts_refused_events(cap_run: CapRun) -> None:
    values = cap_run.values
    first = list(dict.fromkeys(values))[:CAP]
    refused = [v for v in values if v not in first]
    m = cap_run.st.models["capm"]
    assert len(set(values)) == 30
    assert set(m.segments) == {f"region={v}" for v in first} | {"region=(other)"}
    assert m.segments.values_per_key == {"region": CAP}
    assert m.segments.refused == {"region": len(refused)}
    for v in first:
        assert m.segments[f"region={v}"].n_events == values.count(v)
    other = m.segments["region=(other)"]
    assert other.n_events == len(refused)
    # labels follow their prediction's segment, the refused ones to (other)
    assert other.concept.n == len(refused)
    pm = other.performance
    assert pm is not None and pm.pane_clock.events == len(refused)
    other_pairs = [
        (p, int(t))
        for p, t, v in zip(cap_run.preds, cap_run.truth, values, strict=True)
        if v not in first
    ]
    y, yp, _ = _arrays(_last_window(other_pairs, 100))
    assert pm.last_metrics["accuracy"] == pytest.approx(accuracy_score(y, yp), rel=REL)


# =========================================================================== 5. fairness


def test_fairness_rates_equal_brute_force() -> None:
    rng = np.random.default_rng(41)
    for n in (7, 100, 1000):
        y = rng.integers(0, 2, n)
        yp = np.where(rng.random(n) < 0.7, y, 1 - y)
        sk = ClassificationSketch()
        sk.update([str(v) for v in y], [str(v) for v in yp], None)
        window = [(_clf(i, 0.9 if yp[i] else 0.1), int(y[i])) for i in range(n)]
        got = fairness_rates(sk)
        want = _rates(window)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=REL), k
    # a window without positives has no TPR
    sk = ClassificationSketch()
    sk.update(["0", "0"], ["1", "0"], None)
    assert fairness_rates(sk) == {"positive_rate": 0.5, "fpr": 0.5}


def _fairness_sim(
    batch_pairs: Sequence[Sequence[Pair]], size: int, ref_sid: str | None = None
) -> dict[str, dict[str, float]]:
    """``fairness[sid]`` as documented: at each closed window of a segment, its rates and their
    ratios to the reference's latest window as of the pair that closed it (the whole model's,
    which takes each pair before its segment; or the reference segment's), pair by pair in
    join order: the batches do not matter."""
    model_pairs: list[Pair] = []
    seg_pairs: dict[str, list[Pair]] = {}
    model_last: dict[str, float] = {}
    seg_last: dict[str, dict[str, float]] = {}
    fairness: dict[str, dict[str, float]] = {}
    for pair in (pair for pairs in batch_pairs for pair in pairs):
        model_pairs.append(pair)
        if len(model_pairs) % size == 0:
            model_last = _rates(model_pairs[-size:])
        sid = _region(pair[0])
        mine_pairs = seg_pairs.setdefault(sid, [])
        mine_pairs.append(pair)
        if len(mine_pairs) % size:
            continue
        mine = seg_last[sid] = _rates(mine_pairs[-size:])
        ref = model_last if ref_sid is None else seg_last.get(ref_sid, {})
        ratios = {
            name: mine[rate] / ref[rate]
            for name, rate in (
                ("disparate_impact", "positive_rate"),
                ("tpr_ratio", "tpr"),
                ("fpr_ratio", "fpr"),
            )
            if rate in mine and ref.get(rate)
        }
        fairness[sid] = {**{f"segment_{r}": v for r, v in mine.items()}, **ratios}
    return fairness


def _fairness_traffic(seed: int) -> list[Batch]:
    """eu and us predict positive half of the time, apac about 10 %; every label within the
    batch of its prediction, in shuffled order."""
    rng = np.random.default_rng(seed)
    n = 6000
    region = np.asarray(REGIONS, dtype=object)[rng.choice(3, n, p=(0.4, 0.4, 0.2))]
    score = np.where(region == "apac", rng.beta(1.2, 5.0, n), rng.uniform(0.02, 0.98, n)).round(4)
    truth = (rng.random(n) < np.clip(score + 0.1, 0.0, 1.0)).astype(int)
    preds = [_clf(i, float(score[i]), region=str(region[i])) for i in range(n)]
    batches: list[Batch] = []
    for lo in range(0, n, 250):
        labels = [_label(preds[i], lo + 249.5, int(truth[i])) for i in range(lo, lo + 250)]
        rng.shuffle(labels)  # type: ignore[arg-type]
        batches.append((preds[lo : lo + 250], labels))
    return batches


@pytest.mark.parametrize("reference", [None, "eu"])
def test_fairness_ratios_equal_brute_force(reference: str | None) -> None:
    size = 200
    batches = _fairness_traffic(seed=42)
    seg: dict[str, Any] = {"keys": ["region"]}
    if reference is not None:
        seg["fairness_reference"] = {"region": reference}
    cfg = _cfg(segments=seg, performance={"window": {"size": size}, "baseline_windows": 2})
    st = PartitionState(0, cfg)
    alerts = _flat(_run(st, batches))
    sim = JoinSim.of(batches)
    want = _fairness_sim(
        sim.batch_pairs, size, None if reference is None else f"region={reference}"
    )
    got = st.models["m"].segments.fairness
    assert got.keys() == want.keys() == {"region=eu", "region=us", "region=apac"}
    for sid in want:
        assert got[sid].keys() == want[sid].keys(), sid
        for k, v in want[sid].items():
            assert got[sid][k] == pytest.approx(v, rel=REL), (sid, k)
    if reference is not None:
        assert got["region=eu"]["disparate_impact"] == 1.0
    # apac's positive-prediction rate is far below the reference's: disparate impact breaches
    assert got["region=apac"]["disparate_impact"] < 0.5
    fair = [a for a in alerts if a.signal in ("disparate_impact", "tpr_ratio")]
    assert fair and {a.segment for a in fair} == {"region=apac"}
    first = fair[0]
    assert (first.status, first.kind, first.signal) == ("firing", "performance", "disparate_impact")
    assert first.value < 0.8 and first.threshold == 0.8
    assert first.dedup_key == "m/performance/-@region=apac"
    assert not [a for a in alerts if a.segment in ("region=eu", "region=us")]


# =========================================================================== 6. versions


def _version_traffic(seed: int, n: int) -> list[PredictionEvent]:
    """v1 (90 %): scores uniform, positive half of the time; the canary v2 (10 %): scores
    Beta(1.2, 5), positive about 10 % of the time."""
    rng = np.random.default_rng(seed)
    v2 = rng.random(n) < 0.1
    score = np.where(v2, rng.beta(1.2, 5.0, n), rng.uniform(0.02, 0.98, n)).round(4)
    x = rng.normal(0.0, 1.0, n)
    return [
        _clf(i, float(score[i]), x=float(x[i]), version="v2" if v2[i] else "v1") for i in range(n)
    ]


def _version_labels(seed: int, preds: Sequence[PredictionEvent]) -> list[Batch]:
    """v1 is right 90 % of the time, v2 70 %."""
    rng = np.random.default_rng(seed)
    pred = np.array([int(p.prediction_label() or 0) for p in preds])
    acc = np.array([0.7 if p.model_version == "v2" else 0.9 for p in preds])
    truth = _truth(rng, pred, acc)
    labels = [_label(p, p.timestamp + 0.5, int(t)) for p, t in zip(preds, truth, strict=True)]
    return [(list(preds[i : i + 250]), labels[i : i + 250]) for i in range(0, len(preds), 250)]


VERSION_CFG = _cfg(
    segments={"by_version": True},
    performance={"window": {"size": 200}, "baseline_windows": 2},
    drift={"reference": {"size": 300}, "window": {"size": 300}},
)


def test_canary_version_is_flagged_against_the_whole_model() -> None:
    """Each version has its own reference and performance baseline (its first events), so a
    canary that differs from v1 from its first event does not drift against itself; it is
    flagged by the fairness ratios, which compare it with the whole model."""
    preds = _version_traffic(seed=1, n=12_000)
    st = PartitionState(0, VERSION_CFG)
    alerts = _flat(_run(st, _version_labels(62, preds)))
    m = st.models["m"]
    assert set(m.segments) == {"model_version=v1", "model_version=v2"}
    n_v2 = sum(p.model_version == "v2" for p in preds)
    assert m.segments["model_version=v2"].n_events == n_v2
    v2 = [a for a in alerts if a.segment == "model_version=v2"]
    assert [(a.status, a.kind) for a in v2] == [("firing", "performance")]
    assert v2[0].signal in ("disparate_impact", "tpr_ratio") and v2[0].value < 0.8
    assert v2[0].dedup_key == "m/performance/-@model_version=v2"
    # the version of the prediction whose label closed the window (not of the batch's last)
    assert v2[0].model_version == "v2"
    assert not [a for a in alerts if a.segment == "model_version=v1"]
    fair = m.segments.fairness["model_version=v2"]
    assert fair["disparate_impact"] < 0.5 and fair["tpr_ratio"] < 0.8
    # v1's windows and the whole model's cover different periods (200 labels each): noisy
    assert m.segments.fairness["model_version=v1"]["disparate_impact"] > 0.8


def test_canary_version_drifts_against_a_training_profile() -> None:
    """With a reference profile, every version's monitor starts from it: the canary's score
    distribution drifts (prediction_drift on model_version=v2), v1's does not."""
    rng = np.random.default_rng(63)
    train = [
        _clf(i, float(s), x=float(x), version="v1").model_dump()
        for i, (s, x) in enumerate(
            zip(rng.uniform(0.02, 0.98, 5000).round(4), rng.normal(0, 1, 5000), strict=True)
        )
    ]
    profile = build_profile(train, model_id="m")
    preds = _version_traffic(seed=64, n=12_000)
    st = PartitionState(0, VERSION_CFG, profiles={("m", None): profile})
    alerts = _flat(_run(st, _version_labels(65, preds)))
    m = st.models["m"]
    assert m.reference_source == "profile"
    assert {c.reference_source for c in m.segments.values()} == {"profile"}
    v2 = [a for a in alerts if a.segment == "model_version=v2" and a.kind == "prediction_drift"]
    assert v2 and v2[0].status == "firing"
    assert v2[0].feature in ("prediction.score", "prediction.label")
    assert v2[0].dedup_key == "m/prediction_drift/-@model_version=v2"
    assert not [a for a in alerts if a.segment == "model_version=v1"]


# =========================================================================== 7. snapshots


def _snapshot_traffic(seed: int, n: int = 8000, width: float = 100.0) -> list[Batch]:
    """Regions and versions; from 5000 on apac is right half of the time and its x shifts.
    Labels 0..120 s late, 5 % read one batch before their prediction, 10 % never sent."""
    rng = np.random.default_rng(seed)
    region = np.asarray(REGIONS, dtype=object)[rng.choice(3, n, p=(0.4, 0.4, 0.2))]
    version = np.where(rng.random(n) < 0.1, "v2", "v1")
    apac_after = (np.arange(n) >= 5000) & (region == "apac")
    score = np.round(rng.uniform(0.05, 0.95, n), 4)
    truth = _truth(rng, (score >= 0.5).astype(int), np.where(apac_after, 0.5, 0.9))
    x = rng.normal(0.0, 1.0, n) + np.where(apac_after, 2.0, 0.0)
    preds = [
        _clf(i, float(score[i]), x=float(x[i]), region=str(region[i]), version=str(version[i]))
        for i in range(n)
    ]
    batches: list[Batch] = [([], []) for _ in range(int((n + 120) // width) + 2)]
    for p in preds:
        batches[int(p.timestamp // width)][0].append(p)
    delay = rng.uniform(0.0, 120.0, n)
    for i in np.flatnonzero(rng.random(n) >= 0.1):
        pred_batch = int(i // width)
        early = rng.random() < 0.05 and pred_batch > 0
        b = pred_batch - 1 if early else int((i + delay[i]) // width)
        batches[b][1].append(_label(preds[i], i + delay[i], int(truth[i])))
    return batches


SNAP_CFG = _cfg(
    segments={"keys": ["region"], "by_version": True},
    performance={"window": {"size": 200}, "baseline_windows": 2},
    drift={"reference": {"size": 300}, "window": {"size": 300}},
)


def _dump(alerts: Sequence[AlertEvent]) -> list[dict[str, Any]]:
    return [a.model_dump() for a in alerts]


def test_snapshot_mid_stream_round_trips_and_continues_identically() -> None:
    batches = _snapshot_traffic(seed=71)
    cut = 40
    whole = PartitionState(0, SNAP_CFG)
    first = _flat(_run(whole, batches[:cut]))
    snap = orjson.loads(orjson.dumps(whole.snapshot()))
    restored = PartitionState.from_snapshot(snap, SNAP_CFG)
    assert orjson.dumps(restored.snapshot()) == orjson.dumps(snap)
    # mid-stream: predictions wait in the join, labels in the early buffer, segment windows open
    assert len(whole.join) > 0 and len(whole.early) > 0
    m = whole.models["m"]
    assert set(m.segments) == {
        "region=eu",
        "region=us",
        "region=apac",
        "model_version=v1",
        "model_version=v2",
    }
    assert m.segments.fairness and m.performance is not None and m.performance.windows > 0
    rest = _flat(_run(whole, batches[cut:]))
    again = _flat(_run(restored, batches[cut:]))
    assert _dump(again) == _dump(rest)
    assert any(a.segment == "region=apac" for a in rest)  # the continuation does alert
    assert not any(a.segment == "region=apac" for a in first)
    assert orjson.dumps(restored.snapshot()) == orjson.dumps(whole.snapshot())


def _v1_profile(seed: int, n: int = 3000) -> Any:
    rng = np.random.default_rng(seed)
    rows = [
        _clf(i, float(s), x=float(x), version="v1").model_dump()
        for i, (s, x) in enumerate(
            zip(rng.uniform(0.02, 0.98, n).round(4), rng.normal(0, 1, n), strict=True)
        )
    ]
    return build_profile(rows, model_id="m")


def test_segment_first_seen_after_a_restore_still_uses_the_profile() -> None:
    profiles = {("m", None): _v1_profile(seed=81)}
    preds = [
        p if p.timestamp >= 3000 else p.model_copy(update={"model_version": "v1"})
        for p in _version_traffic(seed=82, n=9000)
    ]
    batches: list[Batch] = [(preds[i : i + 250], []) for i in range(0, len(preds), 250)]
    whole = PartitionState(0, VERSION_CFG, profiles)
    _run(whole, batches[:12])  # v1 only so far
    snap = orjson.loads(orjson.dumps(whole.snapshot()))
    restored = PartitionState.from_snapshot(snap, VERSION_CFG, profiles)
    rest = _flat(_run(whole, batches[12:]))
    again = _flat(_run(restored, batches[12:]))
    assert any(a.segment == "model_version=v2" for a in rest)  # v2 drifts from the profile
    assert whole.models["m"].segments["model_version=v2"].reference_source == "profile"
    assert restored.models["m"].segments["model_version=v2"].reference_source == "profile"
    assert _dump(again) == _dump(rest)


# =========================================================================== 8. metrics


def test_segment_and_performance_series_equal_the_state(
    seg_run: SegmentRun, cap_run: CapRun
) -> None:
    states = {0: seg_run.st, 1: cap_run.st}
    reg = CollectorRegistry()
    reg.register(StateCollector(lambda: states, threading.Lock()))
    g = reg.get_sample_value
    m = seg_run.st.models["m"]
    regions = [_region(p) for p in seg_run.preds]
    for sid, child in m.segments.items():
        lv = {"model_id": "m", "segment": sid}
        assert g("stream_monitor_segment_events_total", lv) == child.n_events == regions.count(sid)
        cp = child.performance
        assert cp is not None
        assert (
            g("stream_monitor_segment_performance", {**lv, "metric": "accuracy"})
            == (cp.last_metrics["accuracy"])
        )
        assert m.segments.fairness[sid]
        for metric, value in m.segments.fairness[sid].items():
            assert g("stream_monitor_segment_fairness", {**lv, "metric": metric}) == value
    refused = sum(v not in list(dict.fromkeys(cap_run.values))[:CAP] for v in cap_run.values)
    assert (
        g("stream_monitor_segment_values_refused_total", {"model_id": "capm", "key": "region"})
        == refused
        > 0
    )
    assert (
        g("stream_monitor_segment_values_refused_total", {"model_id": "m", "key": "region"}) is None
    )
    # firing segment incidents: the last transition of each segment dedup key, from the alerts
    last: dict[str, AlertEvent] = {}
    for a in seg_run.alerts:
        last[a.dedup_key] = a
    firing = {k: a for k, a in last.items() if a.status != "resolved" and a.segment is not None}
    assert "m/performance/-@region=apac" in firing
    for a in firing.values():
        lv = {"model_id": "m", "kind": a.kind, "feature": a.feature or "", "segment": a.segment}
        assert g("stream_monitor_segment_alert_firing", lv) == 1.0
    for k, a in last.items():
        if a.status == "resolved" and a.segment is not None:
            lv = {"model_id": "m", "kind": a.kind, "feature": a.feature or "", "segment": a.segment}
            assert g("stream_monitor_segment_alert_firing", lv) is None, k
    # whole-model performance: every metric of the last window, per class where it applies
    pm = m.performance
    assert pm is not None
    for key, value in pm.last_metrics.items():
        metric, _, cls = key.partition(":")
        assert (
            g("stream_monitor_model_performance", {"model_id": "m", "metric": metric, "class": cls})
            == value
        )
    y, yp, _ = _arrays(_last_window(seg_run.sim.pairs, SEG_WIN))
    acc = g(
        "stream_monitor_model_performance", {"model_id": "m", "metric": "accuracy", "class": ""}
    )
    assert acc == pytest.approx(accuracy_score(y, yp), rel=REL)
    f1 = g("stream_monitor_model_performance", {"model_id": "m", "metric": "f1", "class": "1"})
    assert f1 == pytest.approx(f1_score(y, yp), rel=REL)
    # label delays: cumulative buckets, sum and count, against brute force over the matches
    d = np.array(seg_run.sim.delays)
    assert len(d) == len(seg_run.sim.pairs) > 0
    for bound in [*DELAY_BUCKETS, math.inf]:
        le = "+Inf" if bound == math.inf else f"{bound:g}"
        got = g("stream_monitor_label_delay_seconds_bucket", {"model_id": "m", "le": le})
        assert got == int(np.sum(d <= bound)), le
    assert g("stream_monitor_label_delay_seconds_count", {"model_id": "m"}) == len(d)
    total = g("stream_monitor_label_delay_seconds_sum", {"model_id": "m"})
    assert total == pytest.approx(float(d.sum()), rel=1e-9)
    assert total == seg_run.st.join.delay_histogram("m")[1]
