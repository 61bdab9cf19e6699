"""Model versions compared with each other on the same window (``segments.by_version``):
prediction drift between versions (``version_psi``) and their performance difference once
labels arrive (``version_relative_change``), through ``ModelMonitor.update`` / ``update_errors``.

Every expected value is recomputed independently: PSI from numpy bin counts of the raw scores,
accuracy / MAE / R² with scikit-learn on the labelled pairs of each window. Prediction ``i`` of
every stream has timestamp ``i`` (seconds); with the default reference of 1,000 events and
count windows of 1,000, window ``j`` holds predictions ``1000 * (j + 1)`` to ``1000 * (j + 2) - 1``
and closes at the timestamp of its last one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MonitorConfig
from stream_monitor.events.outputs import PREDICTION_LABEL, PREDICTION_SCORE
from stream_monitor.events.schema import LabelEvent, PredictionEvent, ScoredPrediction
from stream_monitor.metrics.collector import StateCollector
from stream_monitor.monitor.feature import CategoricalFeature, NumericFeature
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.monitor.versions import null_shape
from stream_monitor.stats.calibrate import calibrate, calibration_size, reference_shape

REF = 1000  # drift.reference.size
WIN = 1000  # drift.window.size
#: Per-value detectors and window detectors are not what these tests are about (and cost).
QUIET = {"detectors": {"enabled": False}, "window_detectors": {"enabled": False}}


def _cfg(
    segments: dict[str, Any] | None = None, draws: int | None = 2000, **sections: Any
) -> MonitorConfig:
    """``by_version`` on; ``draws`` bootstrap draws per calibration (None: the default, 20,000
    at the default false-alarm rate, for the tests of the threshold's level)."""
    drift = {**QUIET, **sections.pop("drift", {})}
    if draws is not None:
        drift["thresholds"] = {"calibration_draws": draws, **drift.get("thresholds", {})}
    return MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "segments": {"by_version": True, **(segments or {})},
            "drift": drift,
            **sections,
        }
    )


def _events(scores: np.ndarray, versions: Sequence[str | None]) -> list[PredictionEvent]:
    """Scored binary predictions (class = score >= 0.5), one feature, timestamps 0, 1, ..."""
    return [
        PredictionEvent(
            event_id=f"e{i}",
            model_id="m",
            model_version=v,
            timestamp=float(i),
            features={"x": float(s) * 2.0},
            prediction=ScoredPrediction(label=int(s >= 0.5), score=float(s)),
        )
        for i, (s, v) in enumerate(zip(scores.tolist(), versions, strict=True))
    ]


def _split(rng: np.random.Generator, n: int, share_v2: float) -> list[str]:
    return np.where(rng.random(n) < share_v2, "v2", "v1").tolist()


def _feed(m: ModelMonitor, events: Sequence[PredictionEvent], batch: int) -> list[Observation]:
    out: list[Observation] = []
    for i in range(0, len(events), batch):
        out.extend(m.update(events[i : i + batch]))
    return out


def _window(o: Observation) -> int:
    """Index of the window an observation closed: it is observed at the timestamp of the
    window's last prediction (count windows) or at the window's end (time windows)."""
    j = (int(o.observed_at) + 1 - REF - WIN) // WIN
    assert REF + (j + 1) * WIN - 1 <= o.observed_at <= REF + (j + 1) * WIN, o
    return j


def _version_psi(obs: Sequence[Observation], feature: str = PREDICTION_SCORE) -> list[Observation]:
    return [o for o in obs if o.signal == "version_psi" and o.feature == feature]


# =========================================================================== drift: no change


def test_identical_versions_stay_below_the_false_alarm_rate() -> None:
    """50/50 split, same Beta(2, 5) scores for both versions, 40 windows of 1,000: the
    calibrated thresholds (at the default 0.1 % per window) hold, and the roles of the two
    versions do not swap from one window to the next (the baseline stays)."""
    rng = np.random.default_rng(101)
    n = REF + 40 * WIN
    events = _events(rng.beta(2, 5, n).round(4), _split(rng, n, 0.5))
    m = ModelMonitor("m", _cfg(draws=None))
    obs = [o for o in _feed(m, events, 500) if o.signal == "version_psi"]
    assert m.versions is not None
    assert len(obs) == 2 * 40  # both outputs, every window
    assert sum(o.breached for o in obs) <= 1
    assert len({o.model_version for o in obs}) == 1  # always the same candidate
    cand = obs[0].model_version
    assert cand is not None and {r.baseline for r in m.versions.last.values()} == (
        {"v1", "v2"} - {cand}
    )
    for o in obs:
        assert o.kind == "prediction_drift" and o.segment == f"model_version={cand}"
        assert o.threshold >= 0.1  # min_effect['psi'] floors the calibrated threshold
        assert 300 < o.window_events < 700


def test_false_alarm_rate_of_the_pooled_calibration() -> None:
    """Without the min-effect floor and at a 5 % false-alarm rate, the share of breaching
    windows of two identical versions is near 5 %: the calibration's null (both versions' scores
    from one distribution, pooled, two-sample) matches the real no-difference case. A
    one-sample calibration, ignoring the baseline's own noise, would breach several times as
    often."""
    rng = np.random.default_rng(102)
    windows, size = 200, 400
    n = REF + windows * size
    cfg = _cfg(
        draws=None,
        drift={
            "window": {"size": size},
            "thresholds": {"false_alarm_rate": 0.05, "min_effect": {"psi": 0.0}},
        },
    )
    events = _events(rng.beta(2, 5, n).round(4), _split(rng, n, 0.5))
    obs = _version_psi(_feed(ModelMonitor("m", cfg), events, 1000))
    assert len(obs) == windows
    rate = sum(o.breached for o in obs) / windows
    # Binomial(200, 0.05): mean 10, sd 3.1
    assert 0.015 <= rate <= 0.10, rate


# =========================================================================== drift: a shift


SHIFT_WINDOW = 10


def _shifted_canary(seed: int, windows: int = 16) -> list[PredictionEvent]:
    """v1 (60 %) Beta(2, 5) throughout; v2 (40 %) Beta(2, 5), then Beta(3, 4) from window
    ``SHIFT_WINDOW`` on."""
    rng = np.random.default_rng(seed)
    n = REF + windows * WIN
    versions = _split(rng, n, 0.4)
    shifted = (np.arange(n) >= REF + SHIFT_WINDOW * WIN) & (np.asarray(versions) == "v2")
    scores = np.where(shifted, rng.beta(3, 4, n), rng.beta(2, 5, n)).round(4)
    return _events(scores, versions)


def test_shifted_canary_breaches_from_the_first_window_after_the_shift() -> None:
    m = ModelMonitor("m", _cfg(draws=None))
    obs = _feed(m, _shifted_canary(seed=103), 700)
    for feature in (PREDICTION_SCORE, PREDICTION_LABEL):
        vo = _version_psi(obs, feature)
        assert [_window(o) for o in vo] == list(range(16)), feature
        assert all(o.model_version == "v2" for o in vo)
        assert [o.breached for o in vo] == [j >= SHIFT_WINDOW for j in range(16)], feature
    assert m.versions is not None
    assert m.versions.last[(PREDICTION_SCORE, "v2")].baseline == "v1"
    # the comparison is the whole model's: v1's and v2's own monitors judge against references
    # learnt from their own first events
    assert all(o.segment == "model_version=v2" for o in obs if o.signal == "version_psi")


# =========================================================================== drift: the value


def _bins_of(m: ModelMonitor, name: str, values: list[Any]) -> np.ndarray:
    """Bin counts by brute force: numeric bins are (edge[i-1], edge[i]], categories in the
    reference's order plus "other"."""
    f = m.outputs[name]
    if isinstance(f, NumericFeature):
        assert f.edges is not None
        x = np.asarray(values, dtype=float)
        return np.bincount((x[:, None] > f.edges[None, :]).sum(axis=1), minlength=len(f.edges) + 1)
    assert isinstance(f, CategoricalFeature) and f.categories is not None
    cats = f.categories
    idx = [cats.index(v) if v in cats else len(cats) for v in values]
    return np.bincount(np.asarray(idx, dtype=int), minlength=len(cats) + 1)


def _psi(ref: np.ndarray, cur: np.ndarray, eps: float = 1e-4) -> float:
    p = np.maximum(ref / ref.sum(), eps)
    q = np.maximum(cur / cur.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.mark.parametrize("kind", ["count", "time"])
def test_version_psi_equals_brute_force_on_the_same_window(kind: str) -> None:
    """With time windows of 1,000 s and one prediction per second, the windows are the same as
    count windows of 1,000: the value is the same PSI over exactly those predictions."""
    cfg = _cfg(drift={"window": {"kind": kind, "size": WIN}})
    events = _shifted_canary(seed=104, windows=14)
    m = ModelMonitor("m", cfg)
    obs = _feed(m, events, 333)
    th = cfg.drift.thresholds
    for name in (PREDICTION_SCORE, PREDICTION_LABEL):
        vo = _version_psi(obs, name)
        assert [_window(o) for o in vo] == list(range(13 if kind == "time" else 14))
        for o in vo:
            j = _window(o)
            win = events[REF + j * WIN : REF + (j + 1) * WIN]
            raw = [
                e.prediction_score() if name == PREDICTION_SCORE else e.prediction_label()
                for e in win
            ]
            pairs = list(zip(raw, win, strict=True))
            base = _bins_of(m, name, [v for v, e in pairs if e.model_version == "v1"])
            cand = _bins_of(m, name, [v for v, e in pairs if e.model_version == "v2"])
            assert o.window_events == cand.sum() == sum(e.model_version == "v2" for e in win)
            assert o.value == pytest.approx(_psi(base, cand), rel=1e-9, abs=1e-12)
            # the null on its grid, computed here independently of null_shape
            pooled = (base + cand).astype(float)
            shape = np.maximum(np.rint(pooled / pooled.sum() * 200), (pooled > 0).astype(float))
            cal = calibrate(  # of the shape the shared calibrations are keyed by
                reference_shape(shape, ordered=False),
                n_reference=calibration_size(int(base.sum())),
                n_window=calibration_size(int(cand.sum())),
                false_alarm_rate=th.false_alarm_rate,
                draws=th.draws(),
            )["psi"]
            assert o.threshold == max(cal.threshold, th.min_effect["psi"])
            assert o.breached == (o.value > o.threshold)
            assert o.cleared == (o.value <= o.threshold * th.resolve_ratio)


def test_fixed_thresholds_skip_calibration() -> None:
    cfg = _cfg(drift={"thresholds": {"mode": "fixed", "fixed": {"psi": 0.3}}})
    obs = _version_psi(_feed(ModelMonitor("m", cfg), _shifted_canary(105, 12), 1000))
    assert obs and {o.threshold for o in obs} == {0.3}
    assert [o.breached for o in obs] == [_window(o) >= SHIFT_WINDOW for o in obs]


# =========================================================================== performance


def _clf_pairs(
    seed: int, n: int, acc: dict[str, float], share_v2: float = 0.4
) -> list[tuple[PendingPrediction, Any]]:
    """Labelled binary predictions; version ``v`` is right with probability ``acc[v]``."""
    rng = np.random.default_rng(seed)
    versions = _split(rng, n, share_v2)
    pred = rng.integers(0, 2, n)
    right = rng.random(n) < np.array([acc[v] for v in versions])
    truth = np.where(right, pred, 1 - pred)
    return [
        (PendingPrediction(float(i), str(pred[i]), None, versions[i]), int(truth[i]))
        for i in range(n)
    ]


def _reg_pairs(
    seed: int, n: int, noise: dict[str, float], share_v2: float = 0.4
) -> list[tuple[PendingPrediction, Any]]:
    """Regression pairs: truth ~ N(0, 2), prediction = truth + N(0, noise[version])."""
    rng = np.random.default_rng(seed)
    versions = _split(rng, n, share_v2)
    y = rng.normal(0.0, 2.0, n)
    yp = y + rng.normal(0.0, 1.0, n) * np.array([noise[v] for v in versions])
    return [
        (PendingPrediction(float(i), None, float(yp[i]), versions[i]), float(y[i]))
        for i in range(n)
    ]


def _feed_pairs(
    m: ModelMonitor, pairs: Sequence[tuple[PendingPrediction, Any]], batch: int
) -> list[Observation]:
    out: list[Observation] = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        out.extend(m.update_errors(chunk, chunk[-1][0].timestamp))
    return out


def _changes(obs: Sequence[Observation]) -> list[Observation]:
    return [o for o in obs if o.signal == "version_relative_change"]


PERF_WIN = 2000


def _by_version(
    window: Sequence[tuple[PendingPrediction, Any]], v: str
) -> tuple[list[Any], list[Any]]:
    rows = [(p, t) for p, t in window if p.model_version == v]
    preds = [p.label if p.label is not None else p.score for p, _ in rows]
    truth = [str(t) if rows and rows[0][0].label is not None else t for _, t in rows]
    return truth, preds


def test_accuracy_gap_between_versions_is_measured_and_breaches() -> None:
    """v1 right 90 % of the time, v2 75 %: the relative degradation is (0.9 - 0.75) / 0.9."""
    cfg = _cfg(performance={"window": {"size": PERF_WIN}})
    pairs = _clf_pairs(201, 5 * PERF_WIN, {"v1": 0.9, "v2": 0.75})
    m = ModelMonitor("m", cfg)
    obs = _changes(_feed_pairs(m, pairs, 300))
    assert len(obs) == 5
    for j, o in enumerate(obs):
        window = pairs[j * PERF_WIN : (j + 1) * PERF_WIN]
        a1 = accuracy_score(*_by_version(window, "v1"))
        a2 = accuracy_score(*_by_version(window, "v2"))
        assert o.value == pytest.approx((a1 - a2) / a1, rel=1e-12)
        assert o.value == pytest.approx((0.9 - 0.75) / 0.9, abs=0.06)  # ~3 sd of sampling
        assert o.breached and o.threshold == cfg.performance.max_relative_change
        assert o.model_version == "v2" and o.segment == "model_version=v2"
        assert o.kind == "performance" and o.feature is None
        assert o.window_events == sum(p.model_version == "v2" for p, _ in window)
    pm = m.performance
    assert pm is not None and pm.version_baseline == "v1"
    assert set(pm.version_metrics) == {"v1", "v2"}
    assert sum(pm.version_pairs.values()) == PERF_WIN


def test_equal_accuracy_does_not_breach() -> None:
    cfg = _cfg(performance={"window": {"size": PERF_WIN}})
    pairs = _clf_pairs(202, 10 * PERF_WIN, {"v1": 0.9, "v2": 0.9})
    obs = _changes(_feed_pairs(ModelMonitor("m", cfg), pairs, 1000))
    assert len(obs) == 10
    assert not any(o.breached for o in obs)
    assert max(abs(o.value) for o in obs) < 0.05


@pytest.mark.parametrize(
    ("metric", "noise", "worse"),
    [
        ("mae", {"v1": 1.0, "v2": 1.5}, True),  # v2's errors larger: MAE up, worse
        ("mae", {"v1": 1.0, "v2": 0.5}, False),  # v2 better: negative change
        ("r2", {"v1": 1.0, "v2": 1.5}, True),  # R² down (higher is better): worse
        ("r2", {"v1": 1.0, "v2": 0.5}, False),
    ],
)
def test_regression_change_is_oriented_so_that_positive_is_worse(
    metric: str, noise: dict[str, float], worse: bool
) -> None:
    cfg = _cfg(performance={"window": {"size": PERF_WIN}, "regression_metric": metric})
    pairs = _reg_pairs(203, 4 * PERF_WIN, noise)
    m = ModelMonitor("m", cfg)
    obs = _changes(_feed_pairs(m, pairs, 700))
    assert len(obs) == 4
    score = {"mae": mean_absolute_error, "r2": r2_score}[metric]
    for j, o in enumerate(obs):
        window = pairs[j * PERF_WIN : (j + 1) * PERF_WIN]
        base = score(*_by_version(window, "v1"))
        cand = score(*_by_version(window, "v2"))
        degradation = (cand - base) if metric == "mae" else (base - cand)
        assert o.value == pytest.approx(degradation / abs(base), rel=1e-9)
        assert (o.value > 0) == worse and o.breached == worse
        assert o.cleared == (not worse)
    pm = m.performance
    assert pm is not None and pm.version_metrics["v1"] == pytest.approx(base, rel=1e-9)


# =========================================================================== the baseline


def _three_phases(seed: int) -> tuple[list[PredictionEvent], list[tuple[PendingPrediction, Any]]]:
    """Windows 0-4 (and the reference): v1 70 %, v2 30 %; windows 5-9: v1 30 %, v2 70 %;
    windows 10-14: v2 80 %, v3 20 %."""
    rng = np.random.default_rng(seed)
    n = REF + 15 * WIN
    u = rng.random(n)
    j = (np.arange(n) - REF) // WIN
    phase1 = np.where(u < 0.7, "v1", "v2")
    phase2 = np.where(u < 0.3, "v1", "v2")
    phase3 = np.where(u < 0.8, "v2", "v3")
    versions = np.where(j < 5, phase1, np.where(j < 10, phase2, phase3)).tolist()
    events = _events(rng.beta(2, 5, n).round(4), versions)
    pred = (np.array([e.prediction_score() for e in events]) >= 0.5).astype(int)
    truth = np.where(rng.random(n) < 0.9, pred, 1 - pred)
    pairs = [
        (PendingPrediction(e.timestamp, str(p), e.prediction_score(), e.model_version), int(t))
        for e, p, t in zip(events[REF:], pred[REF:], truth[REF:], strict=True)
    ]
    return events, pairs


def test_majority_baseline_is_kept_while_it_has_enough_events() -> None:
    """The first window's majority (v1) stays the baseline when v2 takes most of the traffic;
    once v1 is gone, the majority (v2) takes over and v3 is compared with it."""
    events, pairs = _three_phases(301)
    cfg = _cfg(performance={"window": {"size": WIN}})
    m = ModelMonitor("m", cfg)
    obs = _version_psi(_feed(m, events, 1000))
    assert [o.model_version for o in obs] == ["v2"] * 10 + ["v3"] * 5
    assert m.versions is not None and m.versions.baseline == "v2"
    assert m.versions.last[(PREDICTION_SCORE, "v3")].baseline == "v2"
    perf = _changes(_feed_pairs(m, pairs, 1000))
    assert [o.model_version for o in perf] == ["v2"] * 10 + ["v3"] * 5
    assert m.performance is not None and m.performance.version_baseline == "v2"


def test_configured_baseline_version() -> None:
    events, pairs = _three_phases(302)
    cfg = _cfg({"baseline_version": "v2"}, performance={"window": {"size": WIN}})
    m = ModelMonitor("m", cfg)
    obs = _version_psi(_feed(m, events, 1000))
    # v2 is the baseline from the first window, though v1 has the majority there
    assert [o.model_version for o in obs] == ["v1"] * 10 + ["v3"] * 5
    assert m.versions is not None
    assert {r.baseline for r in m.versions.last.values()} == {"v2"}
    perf = _changes(_feed_pairs(m, pairs, 1000))
    assert [o.model_version for o in perf] == ["v1"] * 10 + ["v3"] * 5
    # a configured baseline absent from the windows: nothing is compared
    m = ModelMonitor("m", _cfg({"baseline_version": "v9"}))
    assert not [o for o in _feed(m, events, 1000) if o.signal == "version_psi"]


def test_min_events() -> None:
    """A version with fewer than version_min_events in a window is not compared there."""
    rng = np.random.default_rng(303)
    n = REF + 10 * WIN
    j = (np.arange(n) - REF) // WIN
    share = np.where(j % 2 == 0, 0.05, 0.3)  # v2: ~50 events in even windows, ~300 in odd
    versions = np.where(rng.random(n) < share, "v2", "v1").tolist()
    m = ModelMonitor("m", _cfg())
    obs = _version_psi(_feed(m, _events(rng.beta(2, 5, n).round(4), versions), 1000))
    assert [_window(o) for o in obs] == [1, 3, 5, 7, 9]
    m = ModelMonitor("m", _cfg({"version_min_events": 20}))
    obs = _version_psi(_feed(m, _events(rng.beta(2, 5, n).round(4), versions), 1000))
    assert [_window(o) for o in obs] == list(range(10))


# =========================================================================== the cap


def test_versions_beyond_max_values_are_refused_and_not_compared() -> None:
    rng = np.random.default_rng(401)
    n = REF + 6 * WIN
    # v1 during the reference, then v1, v2, v3 in turn
    versions = ["v1" if i < REF else f"v{(i - REF) % 3 + 1}" for i in range(n)]
    cfg = _cfg({"max_values": 2}, performance={"window": {"size": WIN}})
    m = ModelMonitor("m", cfg)
    events = _events(rng.beta(2, 5, n).round(4), versions)
    obs = _feed(m, events, 500)
    vc = m.versions
    assert vc is not None and vc.versions == ["v1", "v2"]
    assert vc.refused == versions[REF:].count("v3")
    assert vc.events.shape[0] == 2 and vc.counts[PREDICTION_SCORE].shape[0] == 2
    assert {o.model_version for o in obs if o.signal == "version_psi"} == {"v2"}
    pairs = [
        (PendingPrediction(e.timestamp, e.prediction_label(), None, e.model_version), 1)
        for e in events
    ]
    perf = _changes(_feed_pairs(m, pairs, 500))
    pm = m.performance
    assert pm is not None and pm.version_names == ["v1", "v2"] and len(pm.version_panes) == 2
    assert pm.versions_refused == versions.count("v3")
    assert perf and {o.model_version for o in perf} == {"v2"}
    # the segment monitors follow the same cap: v3 goes to model_version=(other)
    assert set(m.segments) == {"model_version=v1", "model_version=v2", "model_version=(other)"}


def test_events_without_a_version_are_not_compared() -> None:
    rng = np.random.default_rng(402)
    n = REF + 4 * WIN
    versions: list[str | None] = [None if i % 2 else "v1" for i in range(n)]
    m = ModelMonitor("m", _cfg())
    obs = _feed(m, _events(rng.beta(2, 5, n).round(4), versions), 500)
    assert not [o for o in obs if o.signal == "version_psi"]
    assert m.versions is not None and m.versions.versions == ["v1"] and m.versions.refused == 0


# =========================================================================== state


def _version_obs(obs: Sequence[Observation]) -> list[Observation]:
    return [o for o in obs if o.signal in ("version_psi", "version_relative_change")]


def test_snapshot_mid_window_continues_identically() -> None:
    events = _shifted_canary(seed=501, windows=14)
    pairs = [
        (
            PendingPrediction(
                e.timestamp, e.prediction_label(), e.prediction_score(), e.model_version
            ),
            int((e.prediction_score() or 0.0) > 0.4),
        )
        for e in events
    ]
    cfg = _cfg(performance={"window": {"size": 700}})
    whole = ModelMonitor("m", cfg)
    cut = REF + 8 * WIN + 450  # mid drift window, mid performance window

    def step(m: ModelMonitor, lo: int, hi: int) -> list[Observation]:
        out: list[Observation] = []
        for i in range(lo, hi, 250):
            out.extend(m.update(events[i : min(i + 250, hi)]))
            # labels trail their predictions by 200 events
            a, b = max(i - 200, 0), max(min(i + 250, hi) - 200, 0)
            if b > a:
                out.extend(m.update_errors(pairs[a:b], float(b)))
        return out

    first = step(whole, 0, cut)
    assert _version_obs(first)
    snap = orjson.loads(orjson.dumps(whole.snapshot()))
    assert snap["versions"] is not None and snap["performance"]["versions"]["names"]
    restored = ModelMonitor.from_snapshot(snap, cfg)
    assert orjson.dumps(restored.snapshot()) == orjson.dumps(snap)
    rest = step(whole, cut, len(events))
    again = step(restored, cut, len(events))
    assert _version_obs(rest) and any(o.breached for o in _version_obs(rest))
    assert again == rest
    assert orjson.dumps(restored.snapshot()) == orjson.dumps(whole.snapshot())


def test_batch_size_does_not_change_the_version_observations() -> None:
    """Batches of 1 and of 500 predictions (and labelled pairs) give the same version
    observations: windows of 300, v2's scores shift from the fourth window on."""
    rng = np.random.default_rng(601)
    n = 300 + 7 * 300
    versions = _split(rng, n, 0.4)
    shifted = (np.arange(n) >= 300 + 3 * 300) & (np.asarray(versions) == "v2")
    events = _events(np.where(shifted, rng.beta(3, 4, n), rng.beta(2, 5, n)).round(4), versions)
    # v1 is always right; v2 is wrong when its score is in (0.3, 0.5]
    pairs = [
        (
            PendingPrediction(e.timestamp, e.prediction_label(), e.prediction_score(), v),
            int((e.prediction_score() or 0.0) > (0.3 if v == "v2" else 0.5)),
        )
        for e in events
        for v in [e.model_version]
    ]
    cfg = _cfg(
        {"version_min_events": 50},
        drift={"reference": {"size": 300}, "window": {"size": 300}},
        performance={"window": {"size": 400}},
    )
    runs = []
    for batch in (1, 500):
        m = ModelMonitor("m", cfg)
        obs = _version_obs(_feed(m, events, batch))
        perf = _feed_pairs(m, pairs, batch)
        perf = [dataclasses.replace(o, observed_at=0.0) for o in _version_obs(perf)]
        runs.append((obs, perf))
    (obs1, perf1), (obs500, perf500) = runs
    assert len(obs1) == 2 * 7 and len(perf1) == n // 400
    assert obs1 == obs500
    assert perf1 == perf500
    assert [o.breached for o in obs1 if o.feature == PREDICTION_SCORE] == [j >= 3 for j in range(7)]
    assert all(o.breached for o in perf1)


# =========================================================================== metrics


def test_version_series_equal_the_state() -> None:
    events = _shifted_canary(seed=701, windows=12)
    rng = np.random.default_rng(702)
    right = rng.random(len(events)) < np.array(
        [0.9 if e.model_version == "v1" else 0.7 for e in events]
    )
    labels = [
        LabelEvent(
            event_id=e.event_id,
            model_id="m",
            timestamp=e.timestamp + 0.5,
            label=(e.prediction_label() if ok else str(1 - int(e.prediction_label() or 0))),
        )
        for e, ok in zip(events, right, strict=True)
    ]
    cfg = _cfg({"max_values": 2}, performance={"window": {"size": 500}})
    # a third version, beyond the cap, in the last 100 events
    events = events[:-100] + [e.model_copy(update={"model_version": "v3"}) for e in events[-100:]]
    st = PartitionState(0, cfg)
    for i in range(0, len(events), 500):
        st.process(events[i : i + 500], labels[i : i + 500])
    reg = CollectorRegistry()
    reg.register(StateCollector(lambda: {0: st}, threading.Lock()))
    g = reg.get_sample_value
    m = st.models["m"]
    vc, pm = m.versions, m.performance
    assert vc is not None and pm is not None
    assert vc.last and pm.version_changes
    for (feature, version), r in vc.last.items():
        lv = {
            "model_id": "m",
            "version": version,
            "baseline_version": r.baseline,
            "feature": feature,
        }
        assert g("stream_monitor_version_prediction_psi", lv) == r.psi
        assert g("stream_monitor_version_prediction_psi_threshold", lv) == r.threshold
    shifted = vc.last[(PREDICTION_SCORE, "v2")]
    assert shifted.baseline == "v1" and shifted.psi > shifted.threshold  # the shifted canary
    for version, value in pm.version_metrics.items():
        lv = {"model_id": "m", "version": version, "metric": "accuracy"}
        assert g("stream_monitor_version_performance", lv) == value
    assert set(pm.version_metrics) == {"v1", "v2"}
    for version, change in pm.version_changes.items():
        lv = {"model_id": "m", "version": version, "baseline_version": "v1", "metric": "accuracy"}
        assert g("stream_monitor_version_performance_change", lv) == change
    assert pm.version_changes["v2"] > 0.1
    refused = {"model_id": "m", "stream": "predictions"}
    assert g("stream_monitor_versions_refused_total", refused) == vc.refused == 100
    refused_labels = {"model_id": "m", "stream": "labels"}
    assert g("stream_monitor_versions_refused_total", refused_labels) == pm.versions_refused
    assert pm.versions_refused == 100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_null_grid_keeps_the_threshold(seed: int) -> None:
    # Rounding the pooled proportions and sizes (to share calibrations) moves the no-drift
    # quantile by little, compared with the exact pooled null at 20,000 draws; sizes are
    # rounded down (up to 8 % smaller), which raises it: the error is towards fewer alarms.
    rng = np.random.default_rng(seed)
    pooled = rng.multinomial(1400, rng.dirichlet(np.full(10, 2.0)))
    nb, nc = 803, 597
    exact = calibrate(pooled, n_reference=nb, n_window=nc, false_alarm_rate=0.01, draws=20_000)
    shape, gb, gc = null_shape(pooled, nb, nc)
    grid = calibrate(shape, n_reference=gb, n_window=gc, false_alarm_rate=0.01, draws=20_000)
    ratio = grid["psi"].threshold / exact["psi"].threshold
    assert 0.97 <= ratio <= 1.12, ratio
