"""A window close takes cheap paths where the general ones cost more; each gives what the
general one gives, state for state.

- ``StreamDetector.update_one(x)`` against ``update_many((x,))``: firing for firing, snapshot
  for snapshot, for every kind (NaNs skipped, the same ``ValueError`` outside a kind's domain).
- ``WindowDetectors.feed`` against a reimplementation of its general form (every detector fed
  through ``update_many``, each key split into its stream at every feed).
- The window totals of a tumbling window (one ring slot) against the sum over the slots.
- The data-quality observations against the formulas on numpy arrays they replace.
- The per-feature close plan (statistic names, reference totals and rates worked out once)
  against working them out at every close, also when the reference is replaced.
- A whole model fed seeded traffic with drift, once as it runs and once forced through the
  general paths: the same observations and the same snapshot.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import stream_monitor.monitor.feature as feature_module
from stream_monitor.alerts.observation import Observation
from stream_monitor.config import DriftConfig, MonitorConfig, WindowDetectorConfig
from stream_monitor.events.schema import PredictionEvent, ScoredPrediction
from stream_monitor.monitor.feature import (
    EVENTS,
    SENTINEL0,
    SUPPORT_SIGNALS,
    CategoricalFeature,
    FeatureMonitor,
    NumericFeature,
)
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.monitor.window_detectors import UPWARD_STREAMS, WindowDetectors
from stream_monitor.stats.detectors import StreamDetector
from stream_monitor.stats.windows import Closure

#: Every detector kind, with the parameters the window detectors give it where they use it.
DETECTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "page_hinkley_up": (
        "page_hinkley",
        {"min_instances": 10, "threshold": 25.0, "delta": 0.5, "mode": "up"},
    ),
    "page_hinkley_both": (
        "page_hinkley",
        {"min_instances": 10, "threshold": 25.0, "delta": 0.5, "mode": "both"},
    ),
    "adwin": ("adwin", {"delta": 0.002, "clock": 1, "grace_period": 10}),
    "kswin": ("kswin", {"alpha": 0.0001, "window_size": 100, "stat_size": 30, "seed": 1}),
    "ddm": ("ddm", {}),
    "eddm": ("eddm", {}),
    "hddm_a": ("hddm_a", {}),
    "hddm_w": ("hddm_w", {}),
}


def _stream(kind: str, seed: int) -> list[float]:
    """Values the kind accepts, with change points (up, then down) and 5 % NaNs."""
    rng = np.random.default_rng(seed)
    if kind in ("ddm", "eddm"):
        x = np.concatenate([rng.random(400) < 0.1, rng.random(300) < 0.5, rng.random(300) < 0.1])
        x = x.astype(float)
    elif kind in ("hddm_a", "hddm_w"):
        x = np.concatenate([rng.beta(2, 8, 400), rng.beta(8, 2, 300), rng.beta(2, 8, 300)])
    else:
        parts = [rng.normal(0, 1, 150), rng.normal(3, 1, 150), np.linspace(3, -3, 100)]
        x = np.concatenate([*parts, rng.normal(-2, 1, 150)])
    x[rng.random(len(x)) < 0.05] = np.nan
    return list(x.tolist())


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("seed", range(2))
def test_update_one_equals_update_many_of_one_value(name: str, seed: int) -> None:
    kind, params = DETECTORS[name]
    one, many = StreamDetector(kind, **params), StreamDetector(kind, **params)
    fired = 0
    for i, x in enumerate(_stream(kind, seed)):
        hit = one.update_one(x)
        assert hit is (many.update_many((x,)) == [0])  # type: ignore[arg-type]
        assert one.snapshot() == many.snapshot()
        fired += hit
        if i == 500:  # restored mid-way, both go on alike
            one = StreamDetector.from_snapshot(one.snapshot())
            many = StreamDetector.from_snapshot(many.snapshot())
    assert fired > 0 and one.n_detections == fired  # the changes were found: states moved
    assert one.mean_before_last_detection is not None or one.mean_after_last_detection is not None


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("ddm", 0.5),
        ("ddm", math.inf),
        ("eddm", 2.0),
        ("eddm", -1.0),
        ("hddm_a", 1.5),
        ("hddm_a", -math.inf),
        ("hddm_w", -0.1),
    ],
)
def test_update_one_refuses_what_update_many_refuses(kind: str, bad: float) -> None:
    det = StreamDetector(kind)
    for x in (0.0, 1.0, 0.0, 0.0):
        det.update_one(x)
    before = det.snapshot()
    with pytest.raises(ValueError) as one:
        det.update_one(bad)
    with pytest.raises(ValueError) as many:
        det.update_many((bad,))  # type: ignore[arg-type]
    assert str(one.value) == str(many.value)
    assert det.snapshot() == before  # refused before anything was fed
    assert det.update_one(math.nan) is False and det.snapshot() == before


def _general_feed(wd: WindowDetectors, values: dict[str, float]) -> bool:
    """``WindowDetectors.feed`` as it was written first: each key split into its stream at
    every feed, every value through ``update_many`` of one value (the general path
    ``update_one`` stands for)."""
    fired = False
    for key, det in wd.detectors.items():
        stream = key.partition("/")[0]
        v = values.get(stream)
        if v is None:
            continue
        if det.update_many((v,)):  # type: ignore[arg-type]
            before = det.mean_before_last_detection
            rising = det.kind == "page_hinkley" or before is None or v > before
            if stream not in UPWARD_STREAMS or rising:
                wd.detections[key] += 1
                fired = True
    wd.windows += 1
    if fired:
        wd.last_firing = wd.windows
    return fired


@pytest.mark.parametrize(
    "kinds", [("page_hinkley", "adwin"), ("adwin", "kswin", "page_hinkley"), ("kswin",)]
)
@pytest.mark.parametrize("seed", range(3))
def test_feed_equals_the_general_feed(kinds: tuple[Any, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = WindowDetectorConfig(kinds=kinds)
    fast = WindowDetectors(cfg, ["statistic", "mean"])
    slow = WindowDetectors(cfg, ["statistic", "mean"])
    # The statistic rises and falls back (a fall is no drift on an upward stream); the mean
    # jumps down (two-sided).
    statistic = np.concatenate(
        [rng.normal(0, 1, 120), rng.normal(4, 1, 80), rng.normal(0, 1, 120), np.linspace(0, 6, 60)]
    )
    mean = np.concatenate([rng.normal(0, 1, 200), rng.normal(-3, 1, 180)])
    outcomes = []
    for i, (s, m) in enumerate(zip(statistic.tolist(), mean.tolist(), strict=True)):
        values = {"statistic": s, "mean": m}
        u = rng.random()
        if u < 0.05:
            del values["statistic"]  # no calibrated z-score this window
        elif u < 0.1:
            values["mean"] = math.nan
        elif u < 0.12:
            values = {}
        got = fast.feed(values)
        assert got == _general_feed(slow, values)
        assert fast.snapshot() == slow.snapshot()
        assert fast.active == slow.active
        outcomes.append(got)
        if i == 250:
            fast = WindowDetectors.from_snapshot(fast.snapshot(), cfg)
            slow = WindowDetectors.from_snapshot(slow.snapshot(), cfg)
    assert any(outcomes) and not all(outcomes)
    if "page_hinkley" in kinds:
        assert fast.detections["statistic/page_hinkley"] > 0
    if "adwin" in kinds:
        assert fast.detections["mean/adwin"] > 0
    # A two-sided detector on the upward stream fired on a fall too: not counted as drift.
    statistic_firings = sum(
        d.n_detections for k, d in fast.detectors.items() if k.startswith("statistic/")
    )
    counted = sum(n for k, n in fast.detections.items() if k.startswith("statistic/"))
    assert statistic_firings > counted > 0


def _general_sum(a: np.ndarray, slots: Any) -> np.ndarray:
    return a[list(slots)].sum(axis=0)


def test_window_sum_of_one_slot_is_the_sum() -> None:
    rng = np.random.default_rng(0)
    ints = rng.integers(-5, 50, (5, 7))
    floats = rng.normal(0, 1, (5, 7))
    floats[0, :4] = [-0.0, math.nan, math.inf, -math.inf]
    floats[2, :3] = [-0.0, -0.0, math.inf]
    for a in (ints, floats):
        for slots in [(0,), (2,), (4,), (0, 2), (3, 1, 4)]:
            got = feature_module._window_sum(a, slots)
            want = _general_sum(a, slots)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert repr(got.tolist()) == repr(want.tolist())  # -0.0 is not 0.0 in a repr
            got[...] = 7  # a new array, not a view of the ring
            assert repr(_general_sum(a, slots).tolist()) == repr(want.tolist())


def test_window_list_is_the_window_sum_as_python_ints() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 10**12, (6, 9))
    for slots in [(0,), (5,), (1, 2), (4, 0, 3)]:
        got = feature_module._window_list(a, slots)
        want = feature_module._window_sum(a, slots).tolist()
        assert got == want and all(type(x) is int for x in got)
        got[0] = -1  # a new list: the ring is unchanged
        assert feature_module._window_sum(a, slots).tolist() == want


def test_argmax_is_numpys() -> None:
    rng = np.random.default_rng(2)
    cases: list[list[float]] = [
        [0.0],
        [-0.0, 0.0],
        [0.0, -0.0, 0.0],
        [1.0, 3.0, 3.0, 2.0],
        [math.nan, 1.0],
        [1.0, math.nan, 5.0, math.nan],
        [-math.inf, -1e300],
        [math.inf, math.inf],
    ]
    for _ in range(300):
        x = rng.integers(-3, 4, int(rng.integers(1, 9))).astype(float) / 7.0
        x[rng.random(len(x)) < 0.1] = math.nan
        cases.append(x.tolist())
    for values in cases:
        assert feature_module._argmax(values) == int(np.argmax(values)), values


def _old_quality(f: FeatureMonitor, q: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """(value, limit, clear level) of each quality signal as the numpy formulas gave them."""
    qc = f.cfg.quality
    n = float(q[EVENTS])
    r = f.ref_rates
    out: dict[str, tuple[Any, Any, float]] = {
        "missing_ratio": (q[1] / n, r[1] + qc.missing_increase, float(r[1])),
        "absent_ratio": (q[2] / n, r[2] + qc.absent_increase, float(r[2])),
        "type_error_ratio": (q[3] / n, r[3] + qc.type_error_increase, float(r[3])),
    }
    if isinstance(f, NumericFeature):
        out["out_of_range_ratio"] = (q[4] / n, r[4] + qc.out_of_range_increase, float(r[4]))
        if len(f.sentinels):
            j = SENTINEL0 + int(np.argmax(q[SENTINEL0:] / n - r[SENTINEL0:]))
            out["sentinel_ratio"] = (q[j] / n, r[j] + qc.sentinel_increase, float(r[j]))
    elif isinstance(f, CategoricalFeature) and f.known is not None:
        out["new_category_ratio"] = (q[4] / n, r[4] + qc.new_category_increase, float(r[4]))
    return {
        k: (float(v), float(lim), float(lim - (lim - base) / 2))
        for k, (v, lim, base) in out.items()
    }


def _check_quality(f: FeatureMonitor, q: np.ndarray, obs: list[Observation]) -> None:
    want = _old_quality(f, q)
    got = {o.signal: o for o in obs if o.signal in want}
    assert list(got) == list(want)  # the same signals, in the same order
    for signal, (value, limit, clear) in want.items():
        o = got[signal]
        assert repr((o.value, o.threshold)) == repr((value, limit))
        assert (o.breached, o.cleared) == (value > limit, value <= clear)
        assert o.kind == (f.kind if signal in SUPPORT_SIGNALS else "data_quality")
        assert o.window_events == int(q[EVENTS])
    assert f.quality_ratios == {k: v[0] for k, v in want.items()}


def test_quality_observations_equal_the_numpy_formulas() -> None:
    rng = np.random.default_rng(3)
    cfg = DriftConfig(thresholds={"mode": "fixed"}, quality={"sentinels": [-1.0, 999.0, -9.0]})
    num = NumericFeature("x", "data_drift", cfg)
    cat = CategoricalFeature("c", "data_drift", cfg)
    ref = rng.normal(10, 2, 1000).tolist()
    ref[:30] = [None] * 10 + ["bad"] * 5 + [-1.0] * 15
    num.observe_reference(ref)
    cat.observe_reference(rng.choice(["a", "b", "c", "d"], 1000, p=(0.5, 0.3, 0.19, 0.01)).tolist())
    num.freeze(ring_size=2)
    cat.freeze(ring_size=2)
    breached = set()
    for w in range(8):
        slot = w % 2
        n = 400 + 50 * w
        x: list[Any] = rng.normal(10 + w, 2, n).tolist()
        k = rng.integers(0, 40, 5)  # a different mix of problems in each window
        x[: k[0]] = [None] * int(k[0])
        x[50 : 50 + k[1]] = ["oops"] * int(k[1])
        x[100 : 100 + k[2]] = [-1.0] * int(k[2])
        x[150 : 150 + k[3]] = [999.0] * int(k[3])
        x[200 : 200 + k[4]] = [-9.0] * int(k[4])
        c: list[Any] = rng.choice(
            ["a", "b", "c", "e", "f"], n, p=(0.4, 0.3, 0.1, 0.1, 0.1)
        ).tolist()
        c[: k[0]] = [None] * int(k[0])
        slots = np.full(n, slot, dtype=np.int64)
        num.ingest(x, slots)
        cat.ingest(c, slots)
        closure = Closure(w, (slot,), None, (slot,), 0, n, n)
        for f in (num, cat):
            q = f.quality[slot].copy()
            obs = f.close(closure, "m", float(w), None)
            _check_quality(f, q, obs)
            breached |= {o.signal for o in obs if o.breached}
    assert {"sentinel_ratio", "out_of_range_ratio", "new_category_ratio"} <= breached


def _unplanned(f: FeatureMonitor) -> Any:
    """``FeatureMonitor._close_plan`` worked out afresh at every call (no memo)."""
    plan = _PLAN(f)
    f._plan = None
    return plan


_PLAN = FeatureMonitor._close_plan


@pytest.mark.parametrize("replace", ["counts", "rates", "restore"])
def test_close_plan_follows_a_replaced_reference(
    replace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan a feature keeps is worked out again when its reference arrays are replaced:
    closes give what they give with no plan kept, window after window."""
    cfg = DriftConfig(quality={"sentinels": [-1.0]})

    def run(planned: bool) -> list[str]:
        rng = np.random.default_rng(7)
        num = NumericFeature("x", "data_drift", cfg)
        cat = CategoricalFeature("c", "data_drift", cfg)
        num.observe_reference(rng.normal(0, 1, 1500).tolist())
        cat.observe_reference(rng.choice(list("abcd"), 1500, p=(0.4, 0.3, 0.2, 0.1)).tolist())
        num.freeze(ring_size=2)
        cat.freeze(ring_size=2)
        feats: list[FeatureMonitor] = [num, cat]
        out: list[str] = []
        with monkeypatch.context() as mp:
            if not planned:
                mp.setattr(FeatureMonitor, "_close_plan", _unplanned)
            for w in range(24):
                slot = w % 2
                x: list[Any] = rng.normal(0.05 * w, 1, 500).tolist()
                x[:20] = [None] * 10 + [-1.0] * 10
                num.ingest(x, np.full(500, slot))
                cat.ingest(rng.choice(list("abcde"), 500).tolist(), np.full(500, slot))
                closure = Closure(w, (slot,), None, (slot,), 0, 500, 500)
                if w % 3 == 0:  # statistics computed by the feature itself
                    stats: list[Any] = [None, None]
                else:
                    stats = feature_module.window_statistics(feats, closure)
                for f, st in zip(feats, stats, strict=True):
                    out.extend(repr(o) for o in f.close(closure, "m", float(w), "1", st))
                    out.append(repr(f.snapshot()))
                if w == 11:  # a new reference for both, as freeze, a profile or a restore gives
                    if replace == "counts":
                        assert num.ref_counts is not None and cat.ref_counts is not None
                        num.ref_counts = num.ref_counts * 2 + np.arange(len(num.ref_counts))
                        cat.ref_counts = cat.ref_counts[::-1].copy()
                    elif replace == "rates":
                        num.ref_rates = num.ref_rates * 3.0
                        cat.ref_rates = num.ref_rates[: len(cat.ref_rates)] / 2.0
                    else:
                        snap = cat.snapshot()
                        snap["ref_counts"] = snap["ref_counts"][::-1]
                        snap["ref_rates"] = [r / 2.0 for r in snap["ref_rates"]]
                        cat = CategoricalFeature.from_snapshot(snap, cfg)
                        feats = [num, cat]
        return out

    assert run(planned=True) == run(planned=False)


# --- a whole model ----------------------------------------------------------------------------

NUMERIC = 6
N_EVENTS = 9_000
CHANGE = 5_000


def _traffic(seed: int) -> list[PredictionEvent]:
    """Numeric features (one drifts gradually, one jumps at CHANGE), two categorical ones (one
    gains new categories), missing and mistyped values, sentinels, a scored output."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_EVENTS)
    after = t >= CHANGE
    cols: dict[str, list[Any]] = {}
    for j in range(NUMERIC):
        x = rng.normal(10.0 * j, 1.0 + j, N_EVENTS)
        if j == 0:
            x += np.where(after, 2.5, 0.0)
        elif j == 1:
            x += 3.0 * np.clip((t - 3000) / 6000, 0, None)  # slow: the window detectors' case
        elif j == 2:
            x = np.round(x)  # ties on bin edges
        values: list[Any] = x.tolist()
        cells = rng.random(N_EVENTS)
        for i in np.flatnonzero(cells < 0.02).tolist():
            values[i] = None
        for i in np.flatnonzero((cells >= 0.02) & (cells < 0.025)).tolist():
            values[i] = "n/a"
        for i in np.flatnonzero((cells >= 0.025) & (cells < 0.03)).tolist():
            values[i] = -1.0
        cols[f"x{j}"] = values
    cols["colour"] = rng.choice(["red", "green", "blue"], N_EVENTS, p=(0.6, 0.3, 0.1)).tolist()
    shop = rng.choice(["s1", "s2", "s3", "s4"], N_EVENTS).astype(object)
    shop[after & (rng.random(N_EVENTS) < 0.3)] = "s9"
    cols["shop"] = shop.tolist()
    score = np.clip(rng.beta(2, 5, N_EVENTS) + np.where(after, 0.15, 0.0), 0, 1).tolist()
    events = []
    for i in range(N_EVENTS):
        pred = ScoredPrediction.model_construct(
            label="yes" if score[i] > 0.5 else "no", score=score[i]
        )
        features = {k: v[i] for k, v in cols.items()}
        if i % 97 == 0:
            del features["colour"]  # absent
        events.append(
            PredictionEvent.model_construct(
                event_id=f"e{i}",
                model_id="m",
                model_version="1",
                timestamp=1_000_000.0 + 0.01 * i,
                features=features,
                prediction=pred,
                segments=None,
            )
        )
    return events


def _run(cfg: MonitorConfig, events: list[PredictionEvent]) -> tuple[list[str], str]:
    m = ModelMonitor("m", cfg)
    obs: list[Observation] = []
    rng = np.random.default_rng(1)
    lo = 0
    while lo < len(events):
        hi = lo + int(rng.integers(1, 900))
        obs.extend(m.update(events[lo:hi]))
        lo = hi
    # repr: exact floats, -0.0 apart from 0.0, NaN equal to NaN (the thresholds of ``mean``).
    return [repr(o) for o in obs], repr(m.snapshot())


CONFIGS = {
    "tumbling": {"window": {"size": 500}},
    "sliding": {"window": {"size": 600, "slide": 200}},
    "rolling": {"window": {"size": 500}, "reference": {"mode": "rolling", "lag_windows": 2}},
    "kswin": {"window": {"size": 400}, "window_detectors": {"kinds": ["page_hinkley", "kswin"]}},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_model_closes_windows_as_the_general_paths_do(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = MonitorConfig.model_validate({"bootstrap_servers": "unused:9092", "drift": CONFIGS[name]})
    events = _traffic(seed=len(name))
    fast_obs, fast_snap = _run(cfg, events)
    with monkeypatch.context() as mp:
        mp.setattr(
            StreamDetector,
            "update_one",
            lambda self, x: bool(self.update_many((x,))),
        )
        mp.setattr(feature_module, "_window_sum", _general_sum)
        mp.setattr(feature_module, "_window_list", lambda a, s: _general_sum(a, s).tolist())
        mp.setattr(feature_module, "_argmax", lambda v: int(np.argmax(v)))
        mp.setattr(FeatureMonitor, "_close_plan", _unplanned)
        slow_obs, slow_snap = _run(cfg, events)
    assert fast_obs == slow_obs
    assert fast_snap == slow_snap
    # Not idle: windows were judged, drift found, the window detectors reported.
    signals = {o.split("signal='")[1].split("'")[0] for o in fast_obs if "breached=True" in o}
    assert "psi" in signals
    assert any("signal='window_detectors'" in o for o in fast_obs)
    assert any("signal='sentinel_ratio'" in o for o in fast_obs)
