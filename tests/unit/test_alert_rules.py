"""Alert rules and the lifecycle: pending, firing, resolved, cooldown, grouping and routing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest

from stream_monitor.alerts.observation import Observation
from stream_monitor.alerts.tracker import AlertTracker
from stream_monitor.config import AlertsConfig, MonitorConfig
from stream_monitor.events.schema import AlertEvent, RetrainTrigger

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "docs" / "schemas" / "alert-event.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def obs(
    value: float,
    t: float,
    *,
    feature: str | None = "age",
    signal: str = "psi",
    kind: str = "data_drift",
    model: str = "m",
    threshold: float = 0.25,
    clear: float = 0.1,
    baseline: float | None = None,
    segment: str | None = None,
) -> Observation:
    return Observation(
        model,
        kind,  # type: ignore[arg-type]
        feature,
        signal,
        value,
        threshold,
        value > threshold,
        value <= clear,
        t,
        window_events=1000,
        segment=segment,
        baseline=baseline,
    )


def run(t: AlertTracker, observations: list[Observation]) -> list[AlertEvent]:
    out: list[AlertEvent] = []
    for o in observations:
        out.extend(t.observe(o))
    validate(out)
    return out


def validate(events: list[AlertEvent]) -> None:
    """Every event validates against the published JSON Schema."""
    for a in events:
        errors = list(VALIDATOR.iter_errors(orjson.loads(orjson.dumps(a.model_dump()))))
        assert not errors, errors[0].message


def check(events: list[AlertEvent]) -> None:
    """Valid events; per dedup key firing and resolved alternate, starting with firing, with
    ``updated`` events of the same incident (same incident id) only in between."""
    validate(events)
    last: dict[str, AlertEvent] = {}
    for a in events:
        prev = last.get(a.dedup_key)
        if prev is None or prev.status == "resolved":
            assert a.status == "firing", (a.dedup_key, a.status)
        else:
            assert a.status in ("updated", "resolved"), (a.dedup_key, a.status)
            assert a.incident_id == prev.incident_id
        last[a.dedup_key] = a


def tracker(**cfg: Any) -> AlertTracker:
    return AlertTracker(AlertsConfig.model_validate(cfg))


# ----------------------------------------------------------------------------- flapping


def _hovering(seed: int, n: int, thr: float = 0.25) -> list[Observation]:
    """A value wandering around the fire threshold (and down to the resolve threshold) once a
    minute: the worst case for flapping."""
    rng = np.random.default_rng(seed)
    values = rng.choice([0.05, 0.2, 0.26, 0.3], size=n)
    return [obs(float(v), 60.0 * i, threshold=thr) for i, v in enumerate(values)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cooldown_bounds_alerts_from_a_flapping_value(seed: int) -> None:
    stream = _hovering(seed, 2000)  # 2000 minutes
    hours = 2000 / 60
    no_cooldown = run(tracker(cooldown_seconds=0), stream)
    with_cooldown = run(tracker(cooldown_seconds=3600), stream)
    check(no_cooldown)
    check(with_cooldown)
    fired = [a for a in with_cooldown if a.status == "firing"]
    # at most one incident per cooldown period (+1 for the first)
    assert len(fired) <= hours + 1
    assert len([a for a in no_cooldown if a.status == "firing"]) > 3 * len(fired)
    starts = [a.observed_at for a in with_cooldown if a.status == "firing"]
    ends = [a.observed_at for a in with_cooldown if a.status == "resolved"]
    for end, nxt in zip(ends, starts[1:], strict=False):
        assert nxt >= end + 3600


def test_breach_during_cooldown_fires_once_the_cooldown_ends() -> None:
    t = tracker(cooldown_seconds=600)
    out = run(t, [obs(0.4, 0), obs(0.05, 60), obs(0.4, 120), obs(0.4, 600), obs(0.4, 700)])
    assert [(a.status, a.observed_at) for a in out] == [
        ("firing", 0.0),
        ("resolved", 60.0),
        ("firing", 700.0),  # held while 120..660 was in the cooldown
    ]
    assert out[2].started_at == 120.0  # the breach began in the cooldown
    assert t.suppressed == 1
    assert t.states() == {("firing", "data_drift", "warning"): 1}


# ------------------------------------------------------------------------------ pending


def test_for_windows_needs_consecutive_breaches() -> None:
    t = tracker(rules=[{"name": "three", "for_windows": 3}])
    out = run(t, [obs(0.4, 0), obs(0.4, 60), obs(0.2, 120), obs(0.4, 180), obs(0.4, 240)])
    assert out == []  # a value between the thresholds breaks the streak
    assert t.states() == {("pending", "data_drift", "warning"): 1}
    out = run(t, [obs(0.4, 300)])
    assert [(a.status, a.started_at, a.rule) for a in out] == [("firing", 180.0, "three")]


def test_for_seconds_is_event_time_in_breach() -> None:
    t = tracker(rules=[{"name": "day", "for_seconds": 86400}])
    hours = [obs(0.4, 3600.0 * h) for h in range(24)]
    assert run(t, hours) == []
    out = run(t, [obs(0.4, 86400.0)])
    assert [a.status for a in out] == ["firing"]
    assert out[0].started_at == 0.0


def test_pending_that_clears_leaves_no_alert_and_no_state() -> None:
    t = tracker(rules=[{"name": "two", "for_windows": 2}])
    assert run(t, [obs(0.4, 0), obs(0.05, 60)]) == []
    assert t.states() == {}


# ----------------------------------------------------------------------------- grouping


def _window(t: float, psi: dict[str, float], score: float | None = None) -> list[Observation]:
    out = [obs(v, t, feature=f) for f, v in psi.items()]
    if score is not None:
        out.append(
            obs(score, t, feature=None, signal="model_drift_score", threshold=0.5, clear=0.25)
        )
    return out


def test_features_drifting_together_make_one_alert_listing_them() -> None:
    t = tracker()
    w1 = _window(0, {"age": 0.5, "income": 0.9, "city": 0.3, "stable": 0.02}, score=0.75)
    out = t.observe_many(w1)
    check(out)
    assert len(out) == 1
    a = out[0]
    assert a.dedup_key == "m/data_drift/-"
    assert a.top_features == ["income", "age", "city"]  # strongest first
    assert a.feature == "income" and a.signal == "psi" and a.value == 0.9
    # the model drift score breached too: it is one of the incident's signals
    assert a.signals_total == 4 and a.model_drift_score == 0.75
    assert a.suggested_action == "retrain"  # most inputs moved
    assert "3 features (income, age, city)" in a.summary
    # a feature joining later does not page again; the incident resolves once all clear
    w2 = _window(60, {"age": 0.02, "income": 0.05, "city": 0.02, "x": 0.6}, score=0.25)
    assert t.observe_many(w2) == []
    assert t.firing() == [("m", "data_drift", "x")]
    out = t.observe_many(_window(120, {"x": 0.01}, score=0.0))
    assert [(a.status, a.feature) for a in out] == [("resolved", "income")]


def test_one_drifting_feature_suggests_the_pipeline() -> None:
    a = tracker().observe_many(_window(0, {"age": 0.5, "income": 0.02}, score=0.2))[0]
    assert a.suggested_action == "investigate_data_pipeline"
    assert a.summary.startswith("Input feature 'age' of model 'm' drifted; psi is 0.5")


def test_without_grouping_each_feature_is_an_incident() -> None:
    out = tracker(group_features=False).observe_many(_window(0, {"age": 0.5, "income": 0.9}))
    assert sorted(a.dedup_key for a in out) == ["m/data_drift/age", "m/data_drift/income"]


def test_segments_and_kinds_are_separate_incidents() -> None:
    t = tracker()
    out = t.observe_many(
        [
            obs(0.5, 0),
            obs(0.5, 0, segment="region=eu"),
            obs(0.2, 0, kind="data_quality", signal="missing_ratio", threshold=0.1, clear=0.05),
        ]
    )
    check(out)
    assert sorted(a.dedup_key for a in out) == [
        "m/data_drift/-",
        "m/data_drift/-@region=eu",
        "m/data_quality/-",
    ]


# ------------------------------------------------------------------------- rules, routes

RULES: list[dict[str, Any]] = [
    {"name": "muted", "models": ["sandbox-*"], "enabled": False},
    {
        "name": "precision",
        "kind": "performance",
        "signal": "precision:1",
        "mode": "absolute",
        "threshold": 0.7,
        "direction": "below",
        "for_windows": 2,
        "severity": "critical",
        "labels": {"team": "fraud", "runbook_url": "https://runbooks/fraud"},
        "retrain": True,
    },
    {
        "name": "age-mean",
        "feature": "customer_age",
        "signal": "mean",
        "mode": "relative",
        "threshold": 0.1,
        "direction": "both",
        "severity": "info",
    },
]


def test_absolute_rule_below_with_routing_labels_and_retrain() -> None:
    t = tracker(rules=RULES)

    def prec(v: float, at: float) -> Observation:
        # the monitor itself does not judge precision: its verdict is "fine"
        return obs(v, at, kind="performance", feature=None, signal="precision:1", threshold=0)

    out = run(t, [prec(0.8, 0), prec(0.65, 86400), prec(0.69, 2 * 86400)])
    assert len(out) == 1
    a = out[0]
    assert (a.status, a.rule, a.severity, a.priority) == ("firing", "precision", "critical", "P0")
    assert a.labels == {"team": "fraud", "runbook_url": "https://runbooks/fraud"}
    assert a.threshold == 0.7 and a.value == 0.69 and a.started_at == 86400
    assert a.retrain and a.suggested_action == "retrain"
    trigger = RetrainTrigger.from_alert(a)
    assert (trigger.trigger_id, trigger.reason) == (a.alert_id, "performance/precision:1")
    # hysteresis: 0.75 is above 0.7 but below the resolve threshold 0.77
    assert run(t, [prec(0.75, 3 * 86400)]) == []
    out += run(t, [prec(0.8, 4 * 86400)])
    assert [(a.status, a.retrain) for a in out] == [("firing", True), ("resolved", False)]
    check(out)


def test_relative_rule_on_a_feature_mean() -> None:
    t = tracker(rules=RULES)

    def mean(v: float, at: float) -> Observation:
        return obs(v, at, feature="customer_age", signal="mean", threshold=0, baseline=40.0)

    assert run(t, [mean(43.0, 0)]) == []  # +7.5 %
    out = run(t, [mean(35.0, 60)])  # -12.5 %
    assert [(a.status, a.severity, a.priority, a.baseline) for a in out] == [
        ("firing", "info", "P2", 40.0)
    ]
    assert out[0].value == pytest.approx(-0.125)
    # a signal without a baseline cannot be judged by a relative rule: no state, no alert
    assert t.observe(obs(99.0, 120, feature="customer_age", signal="mean")) == []


def test_disabled_rule_silences_and_first_match_wins() -> None:
    t = tracker(rules=RULES)
    assert run(t, [obs(0.9, 0, model="sandbox-1")]) == []
    a = run(t, [obs(0.9, 0, model="prod")])[0]
    assert (a.rule, a.severity, a.priority, a.labels) == ("default", "warning", "P1", {})


def test_version_comparisons_suggest_a_roll_back() -> None:
    a = tracker().observe(
        obs(
            0.4,
            0,
            kind="prediction_drift",
            feature="prediction.score",
            signal="version_psi",
            segment="model_version=v2",
        )
    )[0]
    assert a.suggested_action == "roll_back" and a.segment == "model_version=v2"


def test_rule_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="needs a threshold"):
        AlertsConfig.model_validate({"rules": [{"name": "x", "mode": "absolute"}]})
    with pytest.raises(ValueError, match="unique"):
        AlertsConfig.model_validate({"rules": [{"name": "x"}, {"name": "x"}]})
    with pytest.raises(ValueError, match="relative"):
        AlertsConfig.model_validate(
            {"rules": [{"name": "x", "mode": "absolute", "threshold": 1, "direction": "both"}]}
        )
    with pytest.raises(ValueError, match="stale_seconds"):
        AlertsConfig.model_validate({"stale_seconds": 0})


def test_alerts_carry_the_window() -> None:
    from stream_monitor.monitor.partition import describe_windows

    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "x:1",
            "drift": {"window": {"kind": "time", "size": 3600, "slide": 600}},
        }
    )
    t = AlertTracker(cfg.alerts, describe_windows(cfg))
    assert t.observe(obs(0.9, 0))[0].window == "time 3600s sliding every 600s"


# ----------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("split", [1, 50, 333])
def test_snapshot_mid_stream_gives_the_same_alerts(split: int) -> None:
    cfg = {"rules": [{"name": "two", "for_windows": 2}], "cooldown_seconds": 900}
    rng = np.random.default_rng(3)
    stream: list[Observation] = []
    for i in range(600):
        for f in ("a", "b", "c"):
            stream.append(obs(float(rng.choice([0.02, 0.2, 0.4])), 60.0 * i, feature=f))
    t = tracker(**cfg)
    before = run(t, stream[: split * 3])
    data = orjson.dumps(t.snapshot())
    restored = AlertTracker.from_snapshot(orjson.loads(data), AlertsConfig.model_validate(cfg))
    assert orjson.dumps(restored.snapshot()) == data
    rest = stream[split * 3 :]
    assert t.observe_many(rest) == restored.observe_many(rest)
    check(before)
    assert t.suppressed == restored.suppressed > 0


def test_snapshots_of_earlier_versions_are_refused() -> None:
    """Pre-release snapshot versions are not migrated: a restore refuses them (and the
    partition starts fresh)."""
    v1 = {"v": 1, "incidents": {"m/data_drift/age": ["m", "data_drift", "age", 2, True, 10.0]}}
    current = AlertTracker().snapshot()
    for old in (v1, {**current, "v": 2}):
        with pytest.raises(ValueError, match="version"):
            AlertTracker.from_snapshot(old)


# ----------------------------------------------------------------------------- silence

DAY = 86400.0


def _segments(days: int, silent_from: int, eu: float = 0.4) -> list[Observation]:
    """Hourly performance windows of two segments; ``eu`` breaches from the start and falls
    silent at day ``silent_from`` (a segment value that no longer comes), ``us`` stays fine."""
    out = []
    for h in range(days * 24):
        t = 3600.0 * h
        out.append(obs(0.01, t, kind="performance", feature=None, signal="loss", segment="us"))
        if t < silent_from * DAY:
            out.append(obs(eu, t, kind="performance", feature=None, signal="loss", segment="eu"))
    return out


def test_incident_whose_signals_fall_silent_resolves_after_stale_seconds() -> None:
    t = tracker(stale_seconds=2 * DAY)
    events = run(t, _segments(days=6, silent_from=1))
    check(events)
    assert [(a.status, a.segment, a.observed_at) for a in events] == [
        ("firing", "eu", 0.0),
        ("resolved", "eu", DAY - 3600.0 + 2 * DAY + 3600.0),
    ]
    resolved = events[1]
    assert "none of its signals was judged for 2.0 days" in resolved.summary
    assert resolved.value == 0.4 and resolved.signal == "loss"
    assert t.stale_resolved == 1 and not t.firing_segments() and not t.states()


def test_silent_incident_stays_open_without_stale_seconds() -> None:
    t = tracker(stale_seconds=None)
    events = run(t, _segments(days=10, silent_from=1))
    assert [a.status for a in events] == ["firing"]
    assert t.firing_segments() == [("m", "performance", None, "eu")]


def test_signals_that_keep_speaking_are_never_stale() -> None:
    # eu keeps breaching for 6 days: still one firing event, no resolution.
    t = tracker(stale_seconds=DAY)
    events = run(t, _segments(days=6, silent_from=6))
    assert [a.status for a in events] == ["firing"]
    assert t.stale_resolved == 0


def test_pending_incident_that_falls_silent_is_forgotten_without_events() -> None:
    t = tracker(stale_seconds=DAY, rules=[{"name": "slow", "for_windows": 100}])
    events = run(t, _segments(days=4, silent_from=1))
    assert events == []
    assert not t.states() and t.stale_resolved == 0


def test_incident_of_a_removed_rule_resolves_once_silent() -> None:
    cfg = {"rules": [{"name": "eu-loss", "segment": "eu", "severity": "info"}]}
    t = tracker(**cfg, stale_seconds=DAY)
    first = run(t, _segments(days=1, silent_from=1))
    assert [(a.status, a.rule, a.dedup_key) for a in first] == [
        ("firing", "eu-loss", "m/performance/-#eu-loss@eu")
    ]
    # The rule is removed while it fires: the signal now speaks to the default incident.
    restored = AlertTracker.from_snapshot(t.snapshot(), AlertsConfig(stale_seconds=DAY))
    later = [o for o in _segments(days=4, silent_from=4) if o.observed_at >= DAY]
    events = run(restored, later)
    check(first + events)
    assert [(a.status, a.dedup_key) for a in events] == [
        ("firing", "m/performance/-@eu"),
        ("resolved", "m/performance/-#eu-loss@eu"),
    ]
    assert events[1].observed_at == 2 * DAY  # last judged at 1 day - 1 h, silent > 1 day


@pytest.mark.parametrize("split", [30, 40, 70])
def test_snapshot_keeps_the_silence_clock(split: int) -> None:
    stream = _segments(days=5, silent_from=1)
    cut = sum(1 for o in stream if o.observed_at < split * 3600.0)
    t = tracker(stale_seconds=2 * DAY)
    before = run(t, stream[:cut])
    restored = AlertTracker.from_snapshot(
        orjson.loads(orjson.dumps(t.snapshot())), AlertsConfig(stale_seconds=2 * DAY)
    )
    rest = stream[cut:]
    after = restored.observe_many(rest)
    assert after == t.observe_many(rest)
    assert [a.status for a in before + after] == ["firing", "resolved"]


def test_values_that_are_not_numbers_judge_nothing() -> None:
    t = tracker()
    assert t.observe(obs(float("nan"), 0)) == []
    assert t.observe(obs(float("inf"), 0, threshold=float("inf"))) == []
    assert t.states() == {}
    a = t.observe(obs(0.5, 60, baseline=float("nan")))[0]
    assert a.baseline is None  # published events carry finite numbers only


def test_priority_must_follow_severity() -> None:
    a = tracker().observe(obs(0.5, 0))[0]
    with pytest.raises(ValueError, match="does not match severity"):
        AlertEvent.model_validate({**a.model_dump(), "priority": "P0"})
    with pytest.raises(ValueError, match="finite"):
        AlertEvent.model_validate({**a.model_dump(), "value": float("nan")})


# ------------------------------------------------------- rules over the pipeline's signals


def _traffic(n: int, shift_at: int, seed: int = 5) -> tuple[list[Any], list[Any], np.ndarray]:
    """A scored classifier: age ~ N(40, 5), +15 % from ``shift_at``; its precision on class 1
    is ~0.9 before and ~0.5 after."""
    from stream_monitor.events.schema import LabelEvent, PredictionEvent

    rng = np.random.default_rng(seed)
    age = rng.normal(40, 5, n)
    age[shift_at:] *= 1.15
    score = rng.uniform(0, 1, n)
    preds, labels = [], []
    for i in range(n):
        positive = score[i] > 0.5
        right = rng.random() < (0.9 if i < shift_at else 0.5)
        truth = int(positive) if right else int(not positive)
        preds.append(
            PredictionEvent(
                event_id=str(i),
                model_id="m",
                timestamp=float(i),
                features={"age": float(age[i])},
                prediction={"label": int(positive), "score": float(score[i])},
            )
        )
        labels.append(LabelEvent(event_id=str(i), model_id="m", timestamp=i + 0.5, label=truth))
    return preds, labels, age


def test_rules_judge_the_mean_and_any_performance_metric() -> None:
    from stream_monitor.monitor.partition import PartitionState

    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "x:1",
            "drift": {"window": {"size": 500}},
            "performance": {"window": {"size": 500}, "baseline_windows": 2},
            "alerts": {"rules": RULES},
        }
    )
    st = PartitionState(0, cfg)
    seen: list[Observation] = []
    st.observer = seen.append
    preds, labels, age = _traffic(6000, shift_at=4000)
    alerts: list[AlertEvent] = []
    for i in range(0, 6000, 250):
        alerts += st.process(preds[i : i + 250], labels[i : i + 250])
    check(alerts)

    means = [o for o in seen if o.signal == "mean" and o.feature == "age"]
    assert len(means) == 10  # 1000 reference events, then windows of 500
    for k, o in enumerate(means):
        window = age[1000 + 500 * k : 1500 + 500 * k]
        assert o.value == pytest.approx(window.mean(), rel=1e-11)
        assert o.baseline == pytest.approx(age[:1000].mean(), rel=1e-12)
    # customer_age is not "age": the rule does not match it, nothing alerts on the mean
    assert not [a for a in alerts if a.rule == "age-mean"]

    precision = [o for o in seen if o.signal == "precision:1"]
    assert precision and all(o.threshold != o.threshold for o in precision)  # NaN: info only
    assert precision[2].baseline == pytest.approx(np.mean([o.value for o in precision[:2]]))
    fired = [a for a in alerts if a.rule == "precision" and a.status == "firing"]
    assert len(fired) == 1 and fired[0].value < 0.7
    # two consecutive windows below 0.7, both after the change
    assert fired[0].started_at >= 4000 and fired[0].observed_at > fired[0].started_at
    assert not [a for a in alerts if a.rule == "precision" and a.observed_at < 4000]


def test_relative_rule_on_the_mean_fires_after_the_shift_only() -> None:
    from stream_monitor.monitor.partition import PartitionState

    rules = [{**RULES[2], "feature": "age"}]
    cfg = MonitorConfig.model_validate(
        {"bootstrap_servers": "x:1", "drift": {"window": {"size": 500}}, "alerts": {"rules": rules}}
    )
    st = PartitionState(0, cfg)
    preds, _, _ = _traffic(6000, shift_at=4000)
    alerts = [a for i in range(0, 6000, 500) for a in st.process(preds[i : i + 500], [])]
    mine = [a for a in alerts if a.rule == "age-mean"]
    assert [(a.status, a.observed_at) for a in mine] == [("firing", 4499.0)]
    assert mine[0].value == pytest.approx(0.15, abs=0.02)
    assert (mine[0].severity, mine[0].priority, mine[0].baseline is not None) == (
        "info",
        "P2",
        True,
    )


def test_an_overflowing_signal_breaches_and_its_incident_resolves() -> None:
    """An MAE of inf (a schema-valid 1.7e308 prediction against a -1.7e308 label) used to be
    dropped: it breached window after window and paged nobody, and an open incident could not
    resolve. It now breaches as the largest finite number, and alert events stay valid JSON."""
    t = tracker()
    kw: dict[str, Any] = {"feature": None, "signal": "mae", "kind": "performance"}
    events = run(t, [obs(float("inf"), 60.0 * i, **kw) for i in range(3)])
    assert [a.status for a in events] == ["firing"]
    assert events[0].value == sys.float_info.max
    assert orjson.loads(orjson.dumps(events[0].model_dump()))["value"] == sys.float_info.max
    assert AlertTracker.from_snapshot(orjson.loads(orjson.dumps(t.snapshot()))).firing()
    resolved = run(t, [obs(0.01, 600.0 + 60.0 * i, **kw) for i in range(3)])
    assert [a.status for a in resolved] == ["resolved"]
    assert t.observe(obs(float("nan"), 900.0, **kw)) == []  # not a number: judges nothing
