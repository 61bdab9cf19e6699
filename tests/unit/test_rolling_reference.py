"""A seasonal feature under a rolling reference: every detector follows the lagged window.

The feature ``season`` is a sine with a period of 24 windows plus noise; the model's score is
driven by it, so the prediction (``prediction_score``/``prediction_label``) is seasonal too.
With ``drift.reference.mode = "rolling"`` and ``lag_windows = 24`` every window is compared
with the same phase one period earlier: the window statistics, the per-value change detectors
(PIT scores against the lagged window's bins) and the window detectors (their ``mean`` stream
built from those scores, their ``statistic`` stream from the statistic against the lagged
window). The first monitored period has no lagged window yet and is judged against the fixed
reference (one full period of events): pages there are expected. After it: no detector fires,
and the statistics' thresholds, simulated from each (lagged, current) pair's own shape, page
only as often as the false-alarm rate allows (issue 16 item 5). The positive control adds a real
shift on top of the seasonality: it still pages.

Streams are replayed through :class:`~stream_monitor.backtest.Replay` in batches of 2,000
events, as in tests/unit/test_scenarios.py.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest

from stream_monitor.backtest import Replay, replay_files
from stream_monitor.config import DriftConfig, MonitorConfig
from stream_monitor.events.schema import AlertEvent, PredictionEvent
from stream_monitor.monitor.feature import (
    NumericFeature,
    feature_from_snapshot,
    pit_standardise,
    run_detectors,
)
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.stats.calibrate import batch_statistics, cached_calibrate
from stream_monitor.stats.windows import Closure

START = 1_700_000_000.0
#: Events per (count) window, windows per seasonal period, events per period.
WINDOW = 200
PERIOD_WINDOWS = 24
PERIOD = WINDOW * PERIOD_WINDOWS
#: The fixed reference is one full period (so its bins cover the whole cycle); then four
#: periods are monitored.
MONITORED_PERIODS = 4
N = PERIOD * (1 + MONITORED_PERIODS)
#: End of the first monitored period (event index): from here every window has its lag.
FIRST_PERIOD_END = 2 * PERIOD
#: Amplitude of the sine in noise standard deviations.
AMPLITUDE = 2.0
#: Positive control: ``season`` moves up by one noise standard deviation from this event
#: (the middle of the third monitored period) on.
SHIFT_AT = 3 * PERIOD + PERIOD // 2
SHIFT = 1.0
#: A real shift must page within two windows.
SHIFT_DELAY = 2 * WINDOW


def _config() -> MonitorConfig:
    return MonitorConfig(
        bootstrap_servers="unused:9092",
        drift={
            "window": {"size": WINDOW},
            "reference": {
                "mode": "rolling",
                "lag_windows": PERIOD_WINDOWS,
                "size": PERIOD,
            },
        },
    )


def _stream(seed: int, shift_at: int | None) -> list[bytes]:
    rng = np.random.default_rng(seed)
    i = np.arange(N)
    season = AMPLITUDE * np.sin(2 * np.pi * i / PERIOD) + rng.normal(0.0, 1.0, N)
    if shift_at is not None:
        season = season + np.where(i >= shift_at, SHIFT, 0.0)
    other = rng.normal(0.0, 1.0, N)
    score = 1.0 / (1.0 + np.exp(-(0.5 * season + other)))
    return [
        orjson.dumps(
            {
                "event_id": f"e{k}",
                "model_id": "model",
                "timestamp": START + k,
                "features": {"season": float(season[k]), "other": float(other[k])},
                "prediction": {"label": int(score[k] >= 0.5), "score": round(float(score[k]), 6)},
            }
        )
        for k in range(N)
    ]


@cache
def replayed(seed: int, shift_at: int | None, folder: Path) -> tuple[AlertEvent, ...]:
    path = folder / f"seasonal-{seed}-{shift_at}.jsonl"
    path.write_bytes(b"\n".join(_stream(seed, shift_at)) + b"\n")
    replay = Replay(_config())
    replay_files(replay, path, batch_size=2000)
    return tuple(replay.alerts)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rolling")


def _firing(
    alerts: tuple[AlertEvent, ...] | list[AlertEvent], after: float
) -> list[tuple[str, str, str, float]]:
    return [
        (a.kind, a.feature or "", a.signal, a.observed_at - START)
        for a in alerts
        if a.status == "firing" and a.observed_at - START >= after
    ]


#: The signals that stayed tied to the first reference before issue 16 item 5.
DETECTORS = frozenset({"change_detectors", "window_detectors"})


#: Seeds of the stable seasonal stream. Each replay judges 72 windows of 4 features against the
#: lagged window (season, other, prediction.score, prediction.label): 2,304 in all.
SEEDS = tuple(range(8))
#: At the default per-window false-alarm rate (0.001) those 2,304 judgements page 2.3 times on
#: average, and at most 5 times with probability 0.97 (Poisson): a calibrated threshold does
#: not promise no false alarm, it promises their rate. After the first period PSI paged 7 times
#: (seeds 2, 3, 4, 6, 7) with thresholds simulated from the fixed reference's shape, 3 times
#: (seeds 2, 4, 6) from the pair's (stats/calibrate.py ``rolling_shape``).
MAX_LATE_PAGES = 5


@pytest.mark.parametrize("seed", SEEDS)
def test_a_seasonal_feature_pages_in_the_first_period_and_its_incidents_resolve(
    seed: int, folder: Path
) -> None:
    alerts = replayed(seed, None, folder)
    # Judged against the fixed reference, the first period does page (this is the control
    # that the stream is seasonal enough to matter) ...
    first_period = [f for f in _firing(alerts, PERIOD) if f[3] < FIRST_PERIOD_END]
    assert first_period, "the first monitored period raised nothing"
    # ... and its incidents do not stay open: each resolves within a period.
    first = {
        a.dedup_key
        for a in alerts
        if a.status == "firing" and a.observed_at - START < FIRST_PERIOD_END
    }
    for key in first:
        resolved = [
            a.observed_at - START for a in alerts if a.dedup_key == key and a.status == "resolved"
        ]
        assert resolved and min(resolved) <= FIRST_PERIOD_END + PERIOD, (key, resolved)


def test_after_the_first_period_pages_are_false_alarms_at_the_target_rate(folder: Path) -> None:
    """With the lagged window as the reference of every detector, and each statistic's
    threshold calibrated from the pair's own shape, the stable seasonal stream pages after the
    first period no more often than the per-window false-alarm rate allows (stats/calibrate.py
    ``rolling_shape``), summed over the seeds."""
    late = {seed: _firing(replayed(seed, None, folder), FIRST_PERIOD_END) for seed in SEEDS}
    assert sum(map(len, late.values())) <= MAX_LATE_PAGES, late


@pytest.mark.parametrize("seed", SEEDS)
def test_no_detector_breaches_after_the_first_period_whatever_the_seed(
    seed: int, folder: Path
) -> None:
    """The per-value and window detectors stay quiet after the first period."""
    alerts = replayed(seed, None, folder)
    late = [
        (a.feature, s.feature, s.signal, a.observed_at - START)
        for a in alerts
        if a.status != "resolved" and a.observed_at - START >= FIRST_PERIOD_END
        for s in a.signals
        if s.breached and s.signal in DETECTORS
    ]
    assert late == []


def test_a_shift_on_top_of_the_seasonality_still_pages(folder: Path) -> None:
    alerts = replayed(0, SHIFT_AT, folder)
    after = _firing(alerts, FIRST_PERIOD_END)
    assert after, "the shift raised nothing"
    kind, feature, _, at = after[0]
    assert (kind, feature) == ("data_drift", "season"), after
    assert 0 <= at - SHIFT_AT <= SHIFT_DELAY, after
    page = next(a for a in alerts if a.status == "firing" and a.observed_at - START >= SHIFT_AT)
    assert "moving away from the reference" in page.summary, page.summary


# --- the monitor itself: batches, snapshots -----------------------------------------------------
#: Events fed to the partition-level tests: the reference, the first monitored period and the
#: first half of the second (the rolling reference in use for 12 windows).
PREFIX = FIRST_PERIOD_END + PERIOD // 2


@cache
def _events(seed: int) -> list[PredictionEvent]:
    return [PredictionEvent.model_validate_json(line) for line in _stream(seed, None)[:PREFIX]]


def _run(
    events: list[PredictionEvent], batch: int, state: PartitionState | None = None
) -> tuple[PartitionState, list[AlertEvent]]:
    st = state if state is not None else PartitionState(0, _config())
    alerts: list[AlertEvent] = []
    for i in range(0, len(events), batch):
        alerts.extend(st.process(events[i : i + batch], []))
    return st, alerts


def _feature_state(st: PartitionState) -> dict[str, Any]:
    """Every feature monitor's snapshot, as plain data."""
    m = st.models["model"]
    snaps = {n: f.snapshot() for n, f in {**m.features, **m.outputs}.items()}
    return cast("dict[str, Any]", orjson.loads(orjson.dumps(snaps)))


def _differences(x: Any, y: Any, path: str = "") -> list[str]:
    """Where two snapshots differ, floats compared to 1e-9 relative (the detectors' running
    sums differ in their last bits with the batch cuts, never their firings)."""
    if isinstance(x, dict) and isinstance(y, dict):
        if x.keys() != y.keys():
            return [f"{path}: keys {sorted(x)} != {sorted(y)}"]
        return [d for k in x for d in _differences(x[k], y[k], f"{path}/{k}")]
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return [f"{path}: length {len(x)} != {len(y)}"]
        return [
            d
            for i, (u, v) in enumerate(zip(x, y, strict=True))
            for d in _differences(u, v, f"{path}[{i}]")
        ]
    if isinstance(x, float) and isinstance(y, float):
        return [] if math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {x} != {y}"]
    return [] if x == y else [f"{path}: {x!r} != {y!r}"]


def _same_but_ids(alerts: list[AlertEvent]) -> list[AlertEvent]:
    return [a.model_copy(update={"alert_id": "", "incident_id": ""}) for a in alerts]


def test_rolling_scores_do_not_depend_on_the_batch_size() -> None:
    events = _events(0)
    base_st, base = _run(events, 2000)
    season = base_st.models["model"].features["season"]
    assert isinstance(season, NumericFeature)
    # every value after the first period was scored against its lagged window
    assert season.rolling_values == PREFIX - FIRST_PERIOD_END
    for batch in (333, 7):
        st, alerts = _run(events, batch)
        assert _same_but_ids(alerts) == _same_but_ids(base), batch
        assert _differences(_feature_state(st), _feature_state(base_st)) == [], batch


@pytest.mark.parametrize("split", [FIRST_PERIOD_END - 100, FIRST_PERIOD_END + 1234])
def test_snapshot_round_trip_under_a_rolling_reference(split: int) -> None:
    events = _events(0)
    original, _ = _run(events[:split], 500)
    data = orjson.dumps(original.snapshot())
    restored = PartitionState.from_snapshot(orjson.loads(data), _config())
    assert orjson.dumps(restored.snapshot()) == data
    _, rest_original = _run(events[split:], 500, original)
    _, rest_restored = _run(events[split:], 500, restored)
    assert rest_restored == rest_original
    assert _feature_state(restored) == _feature_state(original)  # exactly: same batches


def test_a_version_3_feature_snapshot_is_read() -> None:
    st, _ = _run(_events(0)[: FIRST_PERIOD_END + 500], 2000)
    f = st.models["model"].features["season"]
    snap = orjson.loads(orjson.dumps(f.snapshot()))
    assert snap["v"] == 5 and snap["rolling_values"] == 500
    v3 = {k: v for k, v in snap.items() if k not in ("rolling_values", "calibrations")}
    v3["v"] = 3
    old = feature_from_snapshot(v3, _config().drift)
    assert isinstance(old, NumericFeature) and old.rolling_values == 0
    assert old.counts.tolist() == f.counts.tolist()
    with pytest.raises(ValueError, match="version"):
        feature_from_snapshot({**snap, "v": 2}, _config().drift)


# --- the scores themselves ----------------------------------------------------------------------
def test_values_are_scored_against_the_lagged_window_of_their_pane() -> None:
    """Sliding windows of 100 events by 50 (2 panes), ``lag_windows = 2``: the values of pane
    ``q`` are scored against panes ``q - 5`` and ``q - 4`` (the window that ended 4 panes
    earlier), by the mid-distribution transform over its bins, divided by sqrt(2); until that
    window exists, against the fixed reference."""
    cfg = DriftConfig(
        reference={"mode": "rolling", "lag_windows": 2, "min_events": 50},
        window={"size": 100, "slide": 50},
        window_detectors={"enabled": False},
    )
    f = NumericFeature("x", "data_drift", cfg)
    rng = np.random.default_rng(5)
    f.observe_reference(rng.normal(0.0, 1.0, 1000).tolist())
    ring = 6  # (lag + 1) * panes per window, as PaneClock sizes it
    f.freeze(ring)
    assert f.lag_panes == 4 and f.edges is not None and f.pit_grid is not None
    panes = [rng.normal(0.3 * q, 1.0, 50) for q in range(8)]
    scores = []
    for q, values in enumerate(panes):
        f.ingest(values.tolist(), np.full(50, q % ring, dtype=np.int64))
        assert f.pending_z is not None
        scores.append(f.pending_z.copy())
        run_detectors([f])
    # panes 0-4: no complete lagged window yet (pane -1 is empty): the fixed reference's PIT
    for q in range(5):
        assert np.allclose(scores[q], pit_standardise(panes[q], f.pit_grid)), q
    # panes 5-7: against panes q-5 and q-4, computed here with plain loops
    for q in range(5, 8):
        ref = np.concatenate([panes[q - 5], panes[q - 4]])
        ref_bins = np.searchsorted(f.edges, ref, side="left")
        expected = []
        for v in panes[q]:
            b = int(np.searchsorted(f.edges, v, side="left"))
            u = (np.sum(ref_bins < b) + np.sum(ref_bins == b) / 2) / len(ref)
            expected.append((u - 0.5) / math.sqrt(1 / 12) / math.sqrt(2))
        assert np.allclose(scores[q], expected), q
    assert f.rolling_values == 150


def test_without_a_rolling_reference_scores_are_the_fixed_pit() -> None:
    f = NumericFeature("x", "data_drift", DriftConfig(window_detectors={"enabled": False}))
    rng = np.random.default_rng(6)
    f.observe_reference(rng.normal(0.0, 1.0, 1000).tolist())
    f.freeze(1)
    assert f.lag_panes == 0 and f.pit_grid is not None
    values = rng.normal(0.0, 1.0, 300)
    f.ingest(values.tolist(), np.zeros(300, dtype=np.int64))
    assert f.pending_z is not None
    assert np.array_equal(f.pending_z, pit_standardise(values, f.pit_grid))
    assert f.rolling_values == 0


# --- thresholds against a lagged window ---------------------------------------------------------
def test_thresholds_against_a_lagged_window_hold_the_false_alarm_rate() -> None:
    """A window of ``season`` near a zero crossing of the sine occupies the middle bins of the
    fixed reference (a whole period) unevenly, some of them sparsely. Stable pairs (lagged and
    current window both from that phase's distribution) are judged by the feature: PSI's
    threshold, simulated from the pair's pooled shape, breaches at about the target rate;
    the threshold simulated from the fixed reference's (flat) shape breaches at 2.6 times it."""
    rate = 0.02  # a rate whose breaches 2,000 pairs count well (1,000 draws per calibration)
    cfg = DriftConfig(
        reference={"mode": "rolling", "lag_windows": 1, "min_events": 50},
        window={"size": WINDOW},
        thresholds={"false_alarm_rate": rate, "calibration_draws": 1000},
        window_detectors={"enabled": False},
    )
    f = NumericFeature("season", "data_drift", cfg)
    rng = np.random.default_rng(11)
    i = np.arange(PERIOD)
    f.observe_reference(
        (AMPLITUDE * np.sin(2 * np.pi * i / PERIOD) + rng.normal(0, 1, PERIOD)).tolist()
    )
    f.freeze(2)
    assert f.edges is not None and f.ref_counts is not None
    # The phase's bin proportions, from 100,000 values of its first window.
    phase = np.tile(np.arange(WINDOW), 500)
    values = AMPLITUDE * np.sin(2 * np.pi * phase / PERIOD) + rng.normal(0, 1, phase.size)
    p = np.bincount(np.searchsorted(f.edges, values, side="left"), minlength=f.edges.size + 1)
    p = p / p.sum()
    pairs = 2000
    lagged = rng.multinomial(WINDOW, p, size=pairs)
    current = rng.multinomial(WINDOW, p, size=pairs)
    closure = Closure(0, (1,), (0,), (0, 1), 0.0, float(WINDOW), WINDOW)
    breaches = 0
    for lag, cur in zip(lagged, current, strict=True):
        f.counts[0], f.counts[1] = lag, cur
        obs = f.close(closure, "model", 0.0, None)
        (psi,) = [o for o in obs if o.signal == "psi"]
        breaches += psi.breached
    assert f.rolling_windows == pairs
    flat = cached_calibrate(f.ref_counts, WINDOW, WINDOW, rate, ("psi",), draws=1000)["psi"]
    flat_breaches = int(np.sum(batch_statistics(lagged, current, ("psi",))["psi"] > flat.threshold))
    assert 0.5 * rate * pairs <= breaches <= 1.5 * rate * pairs, breaches
    assert flat_breaches > 2 * rate * pairs, flat_breaches
