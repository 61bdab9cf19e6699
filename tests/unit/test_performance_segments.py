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
from collections.abc import Callable, Sequence
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
from stream_monitor.stats.performance import ClassificationSketch

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


def _by_time(preds: Sequence[PredictionEvent], labels: Sequence[LabelEvent], width: float) -> list[Batch]:
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
    assert len(sim.pairs) == len(labels) and pm.clock.events == len(labels)
    assert pm.windows == len(labels) // size >= 5 and checked > 20


def test_regression_count_windows_match_sklearn() -> None:
    size = 500
    rng = np.random.default_rng(2)
    n = 3000
    yhat = np.round(rng.normal(10.0, 3.0, n), 3)
    noise = rng.normal(0.0, 1.0, n) * np.where(np.arange(n) >= 1500, 2.0, 1.0)
    preds = [
        PredictionEvent(
            event_id=f"r-{i}", model_id="r", timestamp=float(i), features={"x": float(yhat[i])},
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
    st = PartitionState(0, _cfg(performance={"window": {"size": size}, "baseline_windows": 2}))
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
    # the noise doubles from prediction 1500 on: MAE doubles and breaches, not before
    perf = [a for a in alerts if a.kind == "performance"]
    assert perf and (perf[0].status, perf[0].signal) == ("firing", "mae")
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
    st = PartitionState(0, _cfg(performance={"window": {"size": size}, "baseline_windows": 2}))
    batches = [
        (preds[i : i + per_batch], labels[i : i + per_batch]) for i in range(0, n, per_batch)
    ]
    per = _run(st, batches)
    perf = [(b, a) for b, alerts in enumerate(per) for a in alerts if a.kind == "performance"]
    assert perf, "no performance alert"
    b, first = perf[0]
    # the window of labels 3000..3499 closes in the batch of labels 3400..3499
    assert b == (change + size) // per_batch - 1
    assert (first.status, first.signal, first.segment) == ("firing", "accuracy", None)
    acc = [float(np.mean(pred[k : k + size] == truth[k : k + size])) for k in range(0, n, size)]
    base = (acc[0] + acc[1]) / 2
    assert first.value == pytest.approx(acc[change // size], rel=REL)
    assert first.threshold == pytest.approx(base * 0.9, rel=REL)
    assert first.window_events == size
    assert all(v >= base * 0.9 for v in acc[2 : change // size])  # no breach before
    assert [a.status for _, a in perf] == ["firing"]


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
    assert pm.clock.events == len(sim.pairs) - int(late.sum())
    # the last judged window: the newest complete pane holding a pair that was on time
    last_complete = math.floor((top - lateness) / width) - 1
    panes = np.array([math.floor(p.timestamp / width) for p, _ in sim.pairs])
    p_last = int(panes[~late & (panes <= last_complete)].max())
    win = [pair for pair, lt, q in zip(sim.pairs, late, panes, strict=True) if q == p_last and not lt]
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
    assert pm.clock.events == len(sim.pairs) == m.errors.n
    assert pm.windows == len(sim.pairs) // size
    y, yp, _ = _arrays(_last_window(sim.pairs, size))
    assert pm.last_metrics["accuracy"] == pytest.approx(accuracy_score(y, yp), rel=REL)
    # the join's counters: early-joined predictions never enter the join (see the xfail below)
    stats = st.join.by_model["m"]
    assert stats.matched == sim.matched
    assert stats.expired == sim.expired
    assert stats.pending == len(sim.pending) == len(st.join)
    assert (stats.evicted, stats.duplicates) == (0, 0)
    total = stats.pending + stats.matched + stats.expired + stats.evicted + stats.duplicates
    assert total == n - sim.early_joined
    assert st.early.matched == sim.early_joined
    if ttl is None:
        assert sim.expired == 0
    else:
        assert sim.expired > 200  # delays up to 120 s against a 30 s TTL
    # labels that never met a prediction: parked (duplicates, labels of expired predictions)
    # until the grace expires
    assert len(st.early) == len(sim.early)
    assert st.unmatched_labels == sim.early_expired > 0
    # label delays: brute force over the pairs matched in the join; labels read before their
    # prediction are not recorded (documented in docs/performance.md)
    counts, total_delay, count = st.join.delay_histogram("m")
    d = np.array(sim.delays)
    assert count == len(d) == sim.matched < len(sim.pairs)
    assert total_delay == pytest.approx(float(d.sum()), rel=1e-9)
    cumulative = np.cumsum(counts)
    for bound, c in zip([*DELAY_BUCKETS, math.inf], cumulative.tolist(), strict=True):
        assert c == int(np.sum(d <= bound)), bound
    assert counts[1] > 0 and counts[2] > 0 and counts[3] > 0  # 1-10 s, 10-60 s, 60-300 s


@pytest.mark.xfail(
    strict=True,
    reason="BUG: a prediction joined with a label read before it (EarlyLabels) is never "
    "counted in join.by_model (not matched, not pending), so the per-model counters do not add "
    "up to the predictions sent and labels_awaited_ratio is overstated; docs/performance.md: "
    "'Every prediction is accounted for'",
)
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
    concept = [a for a in alerts if a.kind == "concept_drift"]
    assert [a.status for a in concept] == ["firing"]
    assert CONCEPT_CHANGE < concept[0].observed_at < CONCEPT_CHANGE + 1500
    assert concept[0].signal == "error_rate" and concept[0].segment is None
    errors = st.models["m"].errors
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
    assert st.models["m2"].errors.kinds == ("eddm",)
    assert set(st.models["m2"].errors.detections) == {"eddm"}
    assert st.models["m"].errors.kinds == ("adwin",)  # the default
    for model in ("m", "m2"):
        concept = [a for a in alerts if a.kind == "concept_drift" and a.model_id == model]
        assert [a.status for a in concept] == ["firing"], model
        assert concept[0].observed_at > CONCEPT_CHANGE, model
