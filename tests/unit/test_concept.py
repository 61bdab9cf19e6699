from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from river.datasets import synth

from stream_monitor.alerts.observation import Observation
from stream_monitor.monitor.concept import (
    CONCEPT_KINDS,
    RECENT_WINDOW,
    ConceptDriftMonitor,
    Metric,
)
from stream_monitor.stats import StreamDetector
from stream_monitor.stats.detectors import BINARY_KINDS, KINDS, UNIT_INTERVAL_KINDS

CHANGE = 5000
N = 10_000

# Merged-detection delay: errors from CHANGE to the error that confirms the detection (river
# 0.26.1, monitor defaults). "30 seeds" is min/median/max over seeds 0-29 ("miss": no merged
# detection in the 5000 errors after the change); "bound" is what the tests assert for the seeds
# they use (Bernoulli and regression: 0, 1, 2; SEA: 1, 2). None of the 30 seeds had a merged
# detection before the change; EDDM had a second one after it in 1 of 30 Bernoulli seeds. The SEA
# rule's error rate goes from about 0.10 to 0.20.
#
#               Bernoulli 0.1 -> 0.3   SEA variant 0 -> 3             |N(0,1)| -> |N(0,2)|
# kind          30 seeds      bound    30 seeds                bound  30 seeds     bound
# adwin         101/213/332    350     373/580/899              1000  53/82/147     200
# page_hinkley  163/313/431    450     438/709/1177             1200  193/248/311   350
# ddm           100/377/1027  1100     234/803/4514, 1 miss     1500  (skipped)
# eddm          41/118/433     500     159/324/1065             1100  (skipped)
# hddm_a        83/193/369     400     396/647/1253             1300  67/135/226    250
# hddm_w        77/219/825     900     439/1670/4917, 9 miss    2500  60/144/365    400
DELAY_BOUND: dict[str, dict[str, int]] = {
    "bernoulli": {
        "adwin": 350,
        "page_hinkley": 450,
        "ddm": 1100,
        "eddm": 500,
        "hddm_a": 400,
        "hddm_w": 900,
    },
    "sea": {
        "adwin": 1000,
        "page_hinkley": 1200,
        "ddm": 1500,
        "eddm": 1100,
        "hddm_a": 1300,
        "hddm_w": 2500,
    },
    "regression": {"adwin": 200, "page_hinkley": 350, "hddm_a": 250, "hddm_w": 400},
}
SEEDS = {"bernoulli": (0, 1, 2), "sea": (1, 2), "regression": (0, 1, 2)}


def bernoulli_errors(
    seed: int, rates: Sequence[float] = (0.1, 0.3), change_at: Sequence[int] = (CHANGE,)
) -> np.ndarray:
    """0/1 errors with rate ``rates[k]`` from ``change_at[k-1]`` on, N in all."""
    rng = np.random.default_rng(seed)
    edges = [0, *change_at, N]
    return np.concatenate(
        [rng.random(b - a) < p for (a, b), p in zip(itertools.pairwise(edges), rates, strict=True)]
    ).astype(np.float64)


def regression_errors(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(np.concatenate([rng.normal(0, 1, CHANGE), rng.normal(0, 2, N - CHANGE)]))


def sea_errors(seed: int) -> np.ndarray:
    """0/1 errors of the rule of SEA variant 0 (``x0 + x1 > 8``), frozen, on SEA data whose
    concept switches to variant 3 (threshold 9.5) at CHANGE; 10% label noise throughout.

    The abrupt change is made by chaining two generators: river 0.26's ConceptDriftStream with
    ``width=1`` overflows ``math.exp`` for samples far before its ``position``.
    """
    stream = itertools.chain(
        synth.SEA(variant=0, noise=0.1, seed=seed).take(CHANGE),
        synth.SEA(variant=3, noise=0.1, seed=seed + 1000).take(N - CHANGE),
    )
    return np.array([float((x[0] + x[1] > 8) != y) for x, y in stream])


STREAMS = {"bernoulli": bernoulli_errors, "sea": sea_errors, "regression": regression_errors}


@dataclass
class Run:
    monitor: ConceptDriftMonitor
    positions: list[int] = field(default_factory=list)  # global indices of merged detections
    observations: list[tuple[int, Observation]] = field(default_factory=list)  # (errors seen, obs)

    def incidents(self) -> list[int]:
        """Errors seen when an incident opened (breached while closed; cleared closes it)."""
        opened: list[int] = []
        is_open = False
        for n, obs in self.observations:
            if not is_open and obs.breached:
                is_open = True
                opened.append(n)
            elif is_open and obs.cleared:
                is_open = False
        return opened

    def clears_after(self, n: int) -> list[int]:
        return [m for m, obs in self.observations if m > n and obs.cleared]


def run(
    errors: np.ndarray,
    metric: Metric,
    detectors: Sequence[str] = ("adwin",),
    *,
    batch: int = 100,
    monitor: ConceptDriftMonitor | None = None,
    **kwargs: float,
) -> Run:
    m = monitor or ConceptDriftMonitor(detectors, **kwargs)  # type: ignore[arg-type]
    r = Run(m)
    for start in range(0, errors.size, batch):
        chunk = errors[start : start + batch]
        offset = m.n
        r.positions += [offset + p for p in m.update(chunk, metric)]
        obs = m.observation("model-a", observed_at=float(m.n), model_version="v1")
        if obs is not None:
            r.observations.append((m.n, obs))
    return r


def _cases() -> list[tuple[str, str]]:
    return [
        (stream, kind)
        for stream in STREAMS
        for kind in CONCEPT_KINDS
        if not (stream == "regression" and kind in BINARY_KINDS)
    ]


@pytest.mark.parametrize(("stream", "kind"), _cases())
def test_each_detector_alone_finds_the_known_change(stream: str, kind: str) -> None:
    metric: Metric = "absolute_error" if stream == "regression" else "error_rate"
    for seed in SEEDS[stream]:
        r = run(STREAMS[stream](seed), metric, (kind,))
        assert len(r.positions) == 1, (seed, r.positions)  # none before, one after the change
        delay = r.positions[0] - CHANGE
        assert 0 <= delay <= DELAY_BOUND[stream][kind], (seed, delay)
        assert r.monitor.merged_detections == 1
        assert r.monitor.detections[kind] >= 1
        # Exactly one incident, opened after the detection and held to the end of the stream.
        opened = r.incidents()
        assert len(opened) == 1, (seed, opened)
        assert opened[0] > r.positions[0]
        assert all(obs.breached for n, obs in r.observations if n >= opened[0])
        last = r.observations[-1][1]
        assert last.kind == "concept_drift" and last.feature is None
        assert last.signal == metric
        assert last.model_id == "model-a" and last.model_version == "v1"
        assert last.value > last.threshold > r.monitor.baseline  # type: ignore[operator]


@pytest.mark.parametrize("kind", CONCEPT_KINDS)
def test_error_rate_going_down_never_breaches(kind: str) -> None:
    for seed in (0, 1, 2):
        r = run(bernoulli_errors(seed, rates=(0.3, 0.1)), "error_rate", (kind,))
        assert r.positions == []
        assert r.monitor.merged_detections == 0
        assert r.observations and not any(obs.breached for _, obs in r.observations)


@pytest.mark.parametrize(
    "detectors", [("adwin", "ddm"), ("page_hinkley", "hddm_a"), ("eddm", "hddm_w"), CONCEPT_KINDS]
)
def test_selected_detectors_merge_into_one_detection_per_change(
    detectors: tuple[str, ...],
) -> None:
    for seed in (0, 1):
        errors = bernoulli_errors(seed, rates=(0.1, 0.25, 0.45), change_at=(4000, 8000))
        r = run(errors, "error_rate", detectors)
        assert len(r.positions) == 2, (seed, r.positions)
        assert 4000 < r.positions[0] < 5000 and 8000 < r.positions[1] < 9000
        raw = r.monitor.detections
        assert set(raw) == set(detectors)
        assert sum(raw.values()) > r.monitor.merged_detections == 2
        assert len(r.incidents()) == 1  # the second rise happens while the incident is open


def test_regression_with_binary_detectors_selected_uses_the_others() -> None:
    r = run(regression_errors(0), "absolute_error", ("adwin", "ddm", "eddm", "hddm_a"))
    assert len(r.positions) == 1 and CHANGE < r.positions[0] < CHANGE + 300
    snap = r.monitor.snapshot()
    assert r.monitor.detections["ddm"] == r.monitor.detections["eddm"] == 0
    assert snap["detectors"]["ddm"]["n_seen"] == snap["detectors"]["eddm"]["n_seen"] == 0
    assert len(r.incidents()) == 1


def test_step_up_is_never_read_as_a_step_down() -> None:
    # The trap: at ADWIN's firing, a smoothed level can lag below the level before the change
    # (here the new errors come in runs of 32 and ADWIN fires at the end of a run of zeros), so
    # a direction taken from it would call this step up (0.3 -> 0.5) a step down.
    rng = np.random.default_rng(0)
    start = 5008
    runs = np.tile(np.r_[np.ones(32), np.zeros(32)], N // 64 + 1)
    errors = np.concatenate([(rng.random(start) < 0.3).astype(float), runs[: N - start]])
    det = StreamDetector("adwin")
    firing = next(p for p in det.update_many(errors) if p >= start)
    det = StreamDetector("adwin")
    det.update_many(errors[: firing + 1])
    assert det.mean_after_last_detection < det.mean_before_last_detection - 0.1  # type: ignore[operator]
    r = run(errors, "error_rate", ("adwin",))
    assert len(r.positions) == 1 and firing < r.positions[0] <= firing + 60
    assert len(r.incidents()) == 1

    # And on random streams: every seed's step up is one merged detection.
    for seed in range(3, 15):
        assert len(run(bernoulli_errors(seed), "error_rate", batch=1000).positions) == 1, seed


def test_step_up_soon_after_a_step_down() -> None:
    # 0.2 -> 0.05 at 5000 (a change down: the level restarts, nothing is reported), then up to
    # 0.35 at 6000 while the detectors and the new level segment are still young.
    for seed in (0, 1, 2):
        errors = bernoulli_errors(seed, rates=(0.2, 0.05, 0.35), change_at=(5000, 6000))
        r = run(errors, "error_rate", ("adwin",))
        assert len(r.positions) == 1 and 6000 < r.positions[0] < 6500, (seed, r.positions)
        assert len(r.incidents()) == 1 and r.incidents()[0] > 6000


def test_incident_clears_when_errors_return_to_baseline() -> None:
    errors = bernoulli_errors(0, rates=(0.1, 0.3, 0.1), change_at=(CHANGE, 7000))
    r = run(errors, "error_rate", ("adwin",))
    assert len(r.positions) == 1  # the return is a change down, not a detection
    opened = r.incidents()
    assert len(opened) == 1 and CHANGE < opened[0] < 7000
    clears = r.clears_after(opened[0])
    assert clears and 7000 < clears[0] < 7500
    assert not r.monitor.detected_since_clear


def test_cooldown_merges_a_second_rise_close_to_the_first() -> None:
    errors = bernoulli_errors(0, rates=(0.1, 0.3, 0.6), change_at=(CHANGE, CHANGE + 300))
    merged = run(errors, "error_rate", ("adwin", "page_hinkley"), cooldown=2000)
    assert len(merged.positions) == 1
    separate = run(errors, "error_rate", ("adwin", "page_hinkley"), cooldown=0)
    assert len(separate.positions) == 2


@pytest.mark.parametrize(
    ("metric", "detectors"),
    [
        ("error_rate", ("adwin", "ddm", "eddm")),
        ("absolute_error", ("adwin", "page_hinkley", "hddm_a", "hddm_w")),
    ],
)
def test_batch_size_does_not_change_detections(metric: Metric, detectors: tuple[str, ...]) -> None:
    errors = bernoulli_errors(4) if metric == "error_rate" else regression_errors(4)
    errors = errors[:7000]
    runs = [run(errors, metric, detectors, batch=b) for b in (1, 37, 1000)]
    assert runs[0].positions and all(p > CHANGE for p in runs[0].positions)
    for r in runs[1:]:
        assert r.positions == runs[0].positions
        assert r.monitor.detections == runs[0].monitor.detections
        assert (r.monitor.n, r.monitor.baseline, r.monitor.mean, r.monitor.loss_scale) == (
            runs[0].monitor.n,
            runs[0].monitor.baseline,
            runs[0].monitor.mean,
            runs[0].monitor.loss_scale,
        )


@pytest.mark.parametrize("metric", ["error_rate", "absolute_error"])
def test_snapshot_round_trip_mid_stream_continues_identically(metric: Metric) -> None:
    detectors = ("adwin", "hddm_a", "page_hinkley") + (("ddm",) if metric == "error_rate" else ())
    errors = bernoulli_errors(5) if metric == "error_rate" else regression_errors(5)
    # Find a split with a firing still being judged (the hardest state to carry over).
    probe = ConceptDriftMonitor(detectors)
    pending_at = None
    for start in range(0, N, 10):
        probe.update(errors[start : start + 10], metric)
        if probe.snapshot()["pending"]:
            pending_at = start + 10
            break
    assert pending_at is not None and pending_at > CHANGE
    for split in (300, pending_at, CHANGE + 2000):  # in the baseline, while judging, after
        orig = run(errors[:split], metric, detectors, batch=50).monitor
        snap = json.loads(json.dumps(orig.snapshot()))
        assert snap["v"] == 1
        restored = ConceptDriftMonitor.from_snapshot(snap)
        assert restored.snapshot() == orig.snapshot()
        a = run(errors[split:], metric, monitor=orig, batch=50)
        b = run(errors[split:], metric, monitor=restored, batch=50)
        assert a.positions == b.positions
        assert a.observations == b.observations
        assert orig.snapshot() == restored.snapshot()
        assert orig.merged_detections == 1


def test_snapshot_refuses_unknown_version_and_mismatched_detectors() -> None:
    snap = ConceptDriftMonitor(("adwin", "ddm")).snapshot()
    with pytest.raises(ValueError):
        ConceptDriftMonitor.from_snapshot({**snap, "v": 99})
    other = ConceptDriftMonitor(("adwin", "eddm")).snapshot()
    with pytest.raises(ValueError):
        ConceptDriftMonitor.from_snapshot({**snap, "detectors": other["detectors"]})
    swapped = {"adwin": snap["detectors"]["ddm"], "ddm": snap["detectors"]["adwin"]}
    with pytest.raises(ValueError):
        ConceptDriftMonitor.from_snapshot({**snap, "detectors": swapped})


def test_recent_window_is_a_bounded_ring() -> None:
    rng = np.random.default_rng(6)
    errors = (rng.random(60_000) < 0.1).astype(float)
    m = ConceptDriftMonitor(("adwin", "ddm"))
    sizes = []
    for start in range(0, errors.size, 20_000):
        m.update(errors[start : start + 20_000], "error_rate")
        snap = m.snapshot()
        assert len(snap["ring"]) == RECENT_WINDOW and snap["baseline_buf"] == []
        sizes.append(len(json.dumps(snap)))
    assert max(sizes) < 1.3 * min(sizes)
    assert m.merged_detections == 0
    assert m.mean == pytest.approx(errors[-RECENT_WINDOW:].mean())  # no change yet: the ring


def test_loss_scale_defaults_to_baseline_p99_and_hddm_waits_for_it() -> None:
    errors = regression_errors(0)
    m = ConceptDriftMonitor(("adwin", "hddm_a", "hddm_w", "page_hinkley"), baseline_size=400)
    m.update(errors[:250], "absolute_error")
    assert m.loss_scale is None and len(m.snapshot()["baseline_buf"]) == 250
    m.update(errors[250:1000], "absolute_error")
    assert m.loss_scale == pytest.approx(np.percentile(errors[:400], 99))
    snap = m.snapshot()
    assert snap["baseline_buf"] == []
    assert snap["detectors"]["adwin"]["n_seen"] == 1000
    for kind in ("hddm_a", "hddm_w", "page_hinkley"):
        assert snap["detectors"][kind]["n_seen"] == 600  # only errors after the baseline

    fixed = ConceptDriftMonitor(("hddm_a",), loss_scale=3.0)
    fixed.update(errors[:100], "absolute_error")
    assert fixed.loss_scale == 3.0 and fixed.snapshot()["detectors"]["hddm_a"]["n_seen"] == 100
    zeros = ConceptDriftMonitor(("hddm_w",), baseline_size=50)
    zeros.update(np.zeros(60), "absolute_error")
    assert zeros.loss_scale == 1.0


def test_observation_needs_baseline_and_level() -> None:
    m = ConceptDriftMonitor(baseline_size=100)
    assert m.observation("m", 0.0, None) is None
    m.update(np.zeros(99), "error_rate")
    assert m.baseline is None and m.observation("m", 0.0, None) is None
    m.update(np.r_[1.0, np.zeros(20)], "error_rate")
    obs = m.observation("m", 1.5, None)
    assert obs is not None and not obs.breached and obs.cleared
    assert obs.value == pytest.approx(1 / 120) and m.baseline == pytest.approx(0.01)
    assert obs.observed_at == 1.5 and obs.threshold == pytest.approx(0.0125)


def test_input_validation() -> None:
    for bad in ((), ("adwin", "adwin"), ("kswin",), ("nope",)):
        with pytest.raises(ValueError):
            ConceptDriftMonitor(bad)
    with pytest.raises(ValueError):
        ConceptDriftMonitor(loss_scale=0.0)
    with pytest.raises(ValueError):
        ConceptDriftMonitor(("ddm", "eddm")).update(np.ones(3), "absolute_error")
    m = ConceptDriftMonitor(("adwin", "ddm"))
    m.update(np.array([0.0, 1.0]), "error_rate")
    with pytest.raises(ValueError):
        m.update(np.array([0.5]), "error_rate")
    with pytest.raises(ValueError):
        m.update(np.array([0.0]), "absolute_error")  # the metric is fixed by the first update
    with pytest.raises(ValueError):
        m.update(np.array([0.0]), "rmse")  # type: ignore[arg-type]
    assert m.n == 2
    r = ConceptDriftMonitor()
    with pytest.raises(ValueError):
        r.update(np.array([1.0, -0.5]), "absolute_error")
    with pytest.raises(ValueError):
        r.update(np.array([np.inf]), "absolute_error")
    assert r.n == 0 and r.metric is None


def test_nans_are_skipped_and_positions_index_the_input() -> None:
    errors = bernoulli_errors(0)
    plain = ConceptDriftMonitor(("adwin",)).update(errors, "error_rate")
    with_nan = np.insert(errors, [0, 100, 5000, 5000], np.nan)
    m = ConceptDriftMonitor(("adwin",))
    assert m.update(with_nan, "error_rate") == [plain[0] + 4]
    assert m.n == N


# -- StreamDetector with the binary kinds ---------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_stream_detector_snapshot_round_trip_every_kind(kind: str) -> None:
    params = {"seed": 1} if kind == "kswin" else {}
    # KSWIN's KS test hardly sees a 0/1 rate change (and is slow): give it fewer, real values.
    if kind == "kswin":
        errors, split = regression_errors(7)[CHANGE - 1000 : CHANGE + 1000], 1020
    else:
        errors, split = bernoulli_errors(7), CHANGE + 20
    orig = StreamDetector(kind, **params)
    orig.update_many(errors[:split])
    restored = StreamDetector.from_snapshot(json.loads(json.dumps(orig.snapshot())))
    assert restored.kind == kind and restored.n_seen == split
    rest = orig.update_many(errors[split:])
    assert restored.update_many(errors[split:]) == rest
    assert rest  # the change is detected after the split
    assert restored.snapshot() == orig.snapshot()


def test_stream_detector_rejects_values_outside_the_kinds_domain() -> None:
    assert sorted(BINARY_KINDS) == ["ddm", "eddm"]
    assert sorted(UNIT_INTERVAL_KINDS) == ["hddm_a", "hddm_w"]
    for kind in BINARY_KINDS:
        det = StreamDetector(kind)
        with pytest.raises(ValueError):
            det.update_many(np.array([0.0, 1.0, 0.5]))
        assert det.n_seen == 0  # nothing was fed
        assert det.update_many(np.array([0.0, np.nan, 1.0])) == [] and det.n_seen == 2
    for kind in UNIT_INTERVAL_KINDS:
        det = StreamDetector(kind)
        with pytest.raises(ValueError):
            det.update_many(np.array([0.2, 1.5]))
        det.update_many(np.array([0.0, 0.25, 1.0]))
        assert det.n_seen == 3


def test_hddm_takes_bounded_real_values() -> None:
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.beta(2, 8, 3000), rng.beta(4, 6, 3000)])  # mean 0.2 -> 0.4
    fired = StreamDetector("hddm_a").update_many(x)
    assert fired and all(3000 <= p < 3300 for p in fired)
    # HDDM_W's McDiarmid bound (lambda 0.05) needs its weighted mean to rise by about 0.4 over
    # its low point: 0/1 errors get there through their own noise, smooth values need a big rise.
    assert StreamDetector("hddm_w").update_many(x) == []
    y = np.concatenate([rng.beta(2, 8, 3000), rng.beta(8, 2, 3000)])  # mean 0.2 -> 0.8
    fired = StreamDetector("hddm_w").update_many(y)
    assert fired and all(3000 <= p < 3300 for p in fired)
