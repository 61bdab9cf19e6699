"""The same stream gives the same alerts whatever the batch cuts.

One seeded stream of one model with a segment per region (a covariate shift of an input and its
return, then a concept change in one region: its labels flip while the inputs stay as they are)
is written as JSON Lines files and replayed exactly as ``stream-monitor replay`` replays them
(:class:`~stream_monitor.backtest.Replay` fed by :func:`~stream_monitor.backtest.replay_files`)
with batches of 1, 100 and 5,000 records. Every alert is stamped with the event time of the
record that completed its evidence and judged at points of the stream, not at batch ends, so
the three alert timelines must be identical: every field of every event of each dedup key, in
the same order (docs/backtest.md, "Replay versus live processing").

Incident and alert ids are keyed hashes with a random key per tracker (two runs never share
them), so they are compared by structure: each id is replaced by the rank of its first
appearance. Equal timelines then mean the same incidents, each with the same events (an alert
id is derived from its incident id, status and sequence).
"""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stream_monitor.alerts.observation import Observation
from stream_monitor.backtest import Replay, replay_files
from stream_monitor.config import MonitorConfig, PerformanceConfig
from stream_monitor.events.schema import AlertEvent
from stream_monitor.monitor.concept import JUDGE_EVERY, ConceptDriftMonitor
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.monitor.performance import PerformanceMonitor

START = 1_700_000_000.0
N = 3_000
#: Input ``x1`` shifts by one standard deviation over [SHIFT_FROM, SHIFT_TO): a covariate
#: shift and its return.
SHIFT_FROM, SHIFT_TO = 600, 1_200
#: From here the truth is the opposite of the model's rule in region "eu" (a concept change
#: there, a fairness gap between the regions).
FLIP_FROM = 1_800
#: Small windows keep the stream short: windows of 200 events (drift) and 200 labels
#: (performance), a reference of 400 events, an error baseline of 200 labels, one segment
#: monitor per region.
CONFIG = {
    "bootstrap_servers": "unused:9092",
    "drift": {"reference": {"size": 400}, "window": {"size": 200}},
    "performance": {"window": {"size": 200}},
    "labels": {"baseline_size": 200},
    "segments": {"keys": ["region"]},
}


def _delays() -> np.ndarray:
    """Seconds from each prediction to its label."""
    return np.round(np.random.default_rng(61).uniform(0.5, 20.0, N), 3)


def _stream(folder: Path) -> tuple[Path, Path]:
    """One prediction per second; each label 0.5 to 20 s later (so labels arrive in another
    order than their predictions), the labels file in label-time order."""
    rng = np.random.default_rng(16)
    idx = np.arange(N)
    x1 = rng.normal(0.0, 1.0, N) + np.where((idx >= SHIFT_FROM) & (idx < SHIFT_TO), 1.0, 0.0)
    x2 = rng.normal(0.0, 1.0, N)
    score = 1.0 / (1.0 + np.exp(-1.5 * (x1 + x2)))
    rule = (x1 + x2 > 0).astype(int)
    truth = np.where(rng.random(N) < 0.9, rule, 1 - rule)
    region = np.where(rng.random(N) < 0.5, "eu", "us")
    truth = np.where((idx >= FLIP_FROM) & (region == "eu"), 1 - truth, truth)
    delay = _delays()
    preds = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "model_id": "m",
                "timestamp": START + i,
                "features": {"x1": float(x1[i]), "x2": float(x2[i])},
                "segments": {"region": str(region[i])},
                "prediction": {"label": int(score[i] >= 0.5), "score": round(float(score[i]), 6)},
            }
        )
        for i in range(N)
    ]
    label_ts = START + idx + delay
    labels = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "model_id": "m",
                "timestamp": float(label_ts[i]),
                "label": int(truth[i]),
            }
        )
        for i in np.argsort(label_ts, kind="stable").tolist()
    ]
    p, lab = folder / "predictions.jsonl", folder / "labels.jsonl"
    p.write_bytes(b"\n".join(preds) + b"\n")
    lab.write_bytes(b"\n".join(labels) + b"\n")
    return p, lab


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _stream(tmp_path_factory.mktemp("invariance"))


@cache
def _replayed(files: tuple[Path, Path], batch_size: int) -> list[AlertEvent]:
    replay = Replay(MonitorConfig.model_validate(CONFIG))
    replay_files(replay, *files, batch_size=batch_size)
    return replay.alerts


def timeline(alerts: list[AlertEvent]) -> dict[str, list[dict[str, Any]]]:
    """Every field of every alert event, by dedup key (in their order), ids replaced by the
    rank of their first appearance (keys taken in sorted order).

    Only the order of each key's events is compared: within one batch the whole model's
    observations come before its segments', so events of different keys at different times
    interleave differently (each incident is judged on its own)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        by_key.setdefault(a.dedup_key, []).append(a.model_dump())
    ranks: dict[str, dict[str, int]] = {"incident_id": {}, "alert_id": {}}
    for key in sorted(by_key):
        for d in by_key[key]:
            for field, seen in ranks.items():
                if d[field] is not None:
                    d[field] = seen.setdefault(d[field], len(seen))
    return by_key


def test_the_stream_gives_label_and_prediction_driven_incidents(
    files: tuple[Path, Path],
) -> None:
    """The timeline compared is not trivial: the shift fires input-drift incidents that
    resolve after the return, the concept change fires the model's performance incident
    (concept-drift signals join it) and its region's, nothing fires before the shift."""
    alerts = _replayed(files, 5_000)
    firing = [a for a in alerts if a.status == "firing"]
    assert all(a.observed_at >= START + SHIFT_FROM for a in firing), firing
    shifted = [a for a in alerts if a.dedup_key == "m/data_drift/-"]
    assert [a.status for a in shifted] == ["firing", "resolved"], shifted
    assert shifted[1].observed_at > START + SHIFT_TO
    for key in ("m/performance/-", "m/performance/-@region=eu"):
        fired = [a for a in firing if a.dedup_key == key]
        assert len(fired) == 1 and fired[0].observed_at > START + FLIP_FROM, (key, fired)
    # Label-driven alerts are stamped with the event time of a label, not of a prediction.
    label_times = {round(START + i + d, 3) for i, d in enumerate(_delays())}
    assert all(round(a.observed_at, 3) in label_times for a in alerts if a.kind == "performance")


@pytest.mark.parametrize("batch_size", [1, 100])
def test_alert_timeline_does_not_depend_on_the_batch_size(
    files: tuple[Path, Path], batch_size: int
) -> None:
    reference = timeline(_replayed(files, 5_000))
    other = timeline(_replayed(files, batch_size))

    def brief(t: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[Any, ...]]]:
        return {k: [(a["status"], a["observed_at"], a["signal"]) for a in v] for k, v in t.items()}

    assert brief(other) == brief(reference)  # the readable part first
    assert other == reference


# --- the parts ------------------------------------------------------------------------------------
def _cuts(rng: np.random.Generator, n: int) -> list[int]:
    """Random batch boundaries over ``n`` items (sizes 1 to 400)."""
    edges = [0]
    while edges[-1] < n:
        edges.append(min(n, edges[-1] + int(rng.integers(1, 401))))
    return edges


def test_concept_verdicts_are_taken_at_the_same_errors_whatever_the_cuts() -> None:
    rng = np.random.default_rng(3)
    errors = np.concatenate([rng.random(4000) < 0.1, rng.random(4000) < 0.35]).astype(float)
    whole = ConceptDriftMonitor().judge(errors, "error_rate")
    for seed in range(3):
        edges = _cuts(np.random.default_rng(seed), errors.size)
        mon = ConceptDriftMonitor()
        pieces = [
            j._replace(position=j.position + a)
            for a, b in itertools.pairwise(edges)
            for j in mon.judge(errors[a:b], "error_rate")
        ]
        assert pieces == whole
    first = next(j.position for j in whole if j.breached)
    assert ConceptDriftMonitor().update(errors, "error_rate") == [first]  # the confirming error
    # every 100th error, from the one that completes the baseline (500 errors) on
    grid = [j.position for j in whole if (j.position + 1) % JUDGE_EVERY == 0]
    assert grid == list(range(499, errors.size, JUDGE_EVERY))


def test_performance_window_is_stamped_with_the_pair_that_closed_it() -> None:
    rng = np.random.default_rng(4)
    n = 1000
    pairs = [
        (PendingPrediction(float(i), "1", 0.9), int(rng.random() < 0.8 if i < 600 else 0))
        for i in range(n)
    ]
    done_at = 10_000.0 + np.arange(n) * 1.5  # when each pair was completed (its label)
    cfg = PerformanceConfig(window={"size": 100}, baseline_windows=2)
    whole = PerformanceMonitor(cfg).update(pairs, done_at, "m")
    # judged from the third window on (two baseline windows), each at the pair that filled it
    assert [o.observed_at for o in whole if o.signal == "accuracy"] == [
        float(done_at[k]) for k in range(299, n, 100)
    ]
    assert [o.breached for o in whole if o.signal == "accuracy"] == [False] * 4 + [True] * 4

    def key(o: Observation) -> tuple[Any, ...]:
        return o.signal, o.observed_at, o.window_events, o.breached, o.cleared

    for seed in range(3):
        pm = PerformanceMonitor(cfg)
        cut = [
            o
            for a, b in itertools.pairwise(_cuts(np.random.default_rng(seed), n))
            for o in pm.update(pairs[a:b], done_at[a:b], "m")
        ]
        assert [key(o) for o in cut] == [key(o) for o in whole]
        # counts are exact; float sums (log loss, Brier) only up to their summation order
        assert [o.value for o in cut] == pytest.approx([o.value for o in whole], rel=1e-12)
