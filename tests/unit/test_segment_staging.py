"""A model's batch is worked out once and added to the panes segment by segment.

``ModelMonitor.update`` stages a batch's values once (columns, bins, PIT scores, quality
flags, the per-value detectors' verdicts) and then adds the segments its window clock cuts
the batch into one at a time, each followed by the windows it closes. Feeding the same
stream in batches that span several window closes must give exactly what feeding it one
segment per call gives: the same observations in the same order, the same snapshot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import PredictionEvent, ScoredPrediction
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.stats.windows import PaneClock

N_EVENTS = 12_000
REFERENCE = 1_000
CHANGE = 7_000
#: Events whose fields are not all numbers or present: the batches holding them take the
#: per-field path, the others the one-matrix path.
RAGGED = range(4_000, 4_600)


def _traffic(seed: int) -> list[PredictionEvent]:
    """Numeric features (one jumps at CHANGE, one creeps), a categorical one gaining a new
    category, missing values and sentinels throughout, strings and absent fields in RAGGED,
    a scored output, two model versions; one event in 40 stamped 160 s early (for time
    windows: in an earlier pane still open, or late)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_EVENTS)
    after = t >= CHANGE
    cols: dict[str, list[Any]] = {}
    for j in range(5):
        x = rng.normal(5.0 * j, 1.0 + j, N_EVENTS)
        if j == 0:
            x += np.where(after, 2.0, 0.0)
        elif j == 1:
            x += 2.0 * np.clip((t - 5_000) / 7_000, 0, None)
        elif j == 2:
            x = np.round(x)  # ties on grid points and bin edges
        values: list[Any] = x.tolist()
        cells = rng.random(N_EVENTS)
        for i in np.flatnonzero(cells < 0.02).tolist():
            values[i] = None
        for i in np.flatnonzero((cells >= 0.02) & (cells < 0.03)).tolist():
            values[i] = -1.0
        for i in np.flatnonzero(cells >= 0.995).tolist():
            if i in RAGGED:
                values[i] = "n/a"
        cols[f"x{j}"] = values
    shop = rng.choice(["s1", "s2", "s3"], N_EVENTS).astype(object)
    shop[after & (rng.random(N_EVENTS) < 0.2)] = "s9"
    cols["shop"] = shop.tolist()
    score = np.clip(rng.beta(2, 5, N_EVENTS) + np.where(after, 0.2, 0.0), 0, 1).tolist()
    events = []
    for i in range(N_EVENTS):
        features = {k: v[i] for k, v in cols.items()}
        if i in RAGGED and i % 7 == 0:
            del features["shop"]
        events.append(
            PredictionEvent.model_construct(
                event_id=f"e{i}",
                model_id="m",
                model_version="1" if i % 2 else "2",
                timestamp=1_000_000.0 + 0.5 * i - (160.0 if i % 40 == 39 else 0.0),
                features=features,
                prediction=ScoredPrediction.model_construct(
                    label="yes" if score[i] > 0.5 else "no", score=score[i]
                ),
                segments=None,
            )
        )
    return events


def _batches(seed: int) -> list[tuple[int, int]]:
    """Cuts of 1,500 to 3,500 events: each spans several windows, and the first one holds
    the end of the reference."""
    rng = np.random.default_rng(seed)
    out, lo = [], 0
    while lo < N_EVENTS:
        hi = min(N_EVENTS, lo + int(rng.integers(1_500, 3_500)))
        out.append((lo, hi))
        lo = hi
    return out


def _whole_model(obs: list[Observation], m: ModelMonitor) -> tuple[list[str], str]:
    """The whole model's observations (its version comparison's included) and snapshot, as
    exact text (repr tells -0.0 from 0.0 and shows every bit). Its segment monitors are left
    out: fed other cuts of their own streams, their sums may differ in the last bits."""
    snap = m.snapshot()
    snap.pop("segments")
    mine = [o for o in obs if o.segment is None or o.signal == "version_psi"]
    return [repr(o) for o in mine], repr(snap)


def _in_batches(cfg: MonitorConfig, events: list[PredictionEvent], seed: int) -> Any:
    m = ModelMonitor("m", cfg)
    obs: list[Observation] = []
    spans = 0
    for lo, hi in _batches(seed):
        if m.pane_clock is not None:
            copy = PaneClock.from_snapshot(m.pane_clock.snapshot())
            ts = np.array([e.timestamp for e in events[lo:hi]])
            spans = max(spans, sum(1 for s in copy.plan(ts) if s.closures))
        obs.extend(m.update(events[lo:hi]))
    return _whole_model(obs, m), spans, m.late_events


def _by_segment(cfg: MonitorConfig, events: list[PredictionEvent], seed: int) -> Any:
    """The same stream, the reference alone and then one segment of the window clock's plan
    per call (the plan of each batch above, cut up before it is fed)."""
    m = ModelMonitor("m", cfg)
    obs: list[Observation] = []
    obs.extend(m.update(events[:REFERENCE]))
    for lo, hi in _batches(seed):
        lo = max(lo, REFERENCE)
        assert m.pane_clock is not None
        copy = PaneClock.from_snapshot(m.pane_clock.snapshot())
        ts = np.array([e.timestamp for e in events[lo:hi]])
        for seg in copy.plan(ts):
            if seg.stop > seg.start:  # an empty one's closures come with the next event
                obs.extend(m.update(events[lo + seg.start : lo + seg.stop]))
    return _whole_model(obs, m)


CONFIGS: dict[str, dict[str, Any]] = {
    "tumbling": {"drift": {"window": {"size": 500}}},
    "sliding": {"drift": {"window": {"size": 600, "slide": 200}}},
    "time": {
        "drift": {
            "window": {"kind": "time", "size": 300, "slide": 100, "allowed_lateness_seconds": 100}
        }
    },
    "rolling": {"drift": {"window": {"size": 500}, "reference": {"mode": "rolling"}}},
    "versions_and_joint": {
        "drift": {"window": {"size": 400}, "multivariate": {"enabled": True}},
        "segments": {"by_version": True},
    },
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batches_spanning_windows_equal_one_segment_per_call(name: str) -> None:
    cfg = MonitorConfig.model_validate({"bootstrap_servers": "unused:9092", **CONFIGS[name]})
    events = _traffic(seed=len(name))
    (batch_obs, batch_snap), spans, late = _in_batches(cfg, events, seed=len(name))
    seg_obs, seg_snap = _by_segment(cfg, events, seed=len(name))
    assert batch_obs == seg_obs
    assert batch_snap == seg_snap
    # Not idle: batches closed several windows each, windows were judged and the drift
    # found, by the window statistics and by the per-value detectors.
    assert spans >= 3
    assert late > 0 or cfg.drift.window.kind == "count"
    breached = {o.split("signal='")[1].split("'")[0] for o in batch_obs if "breached=True" in o}
    assert {"psi", "change_detectors"} <= breached, breached
    signals = {o.split("signal='")[1].split("'")[0] for o in batch_obs}
    assert {"sentinel_ratio", "absent_ratio", "low_confidence_ratio"} <= signals, signals
    if name == "versions_and_joint":
        assert {"mmd", "version_psi"} <= signals, signals
