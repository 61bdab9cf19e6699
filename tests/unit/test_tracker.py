"""AlertTracker: hysteresis, incidents spoken about by several signals, alert ids, snapshots."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest

from stream_monitor.alerts.observation import Observation
from stream_monitor.alerts.tracker import AlertTracker, dedup_key
from stream_monitor.config import AlertsConfig
from stream_monitor.events.schema import AlertEvent

FIRE, RESOLVE = 0.25, 0.1


def psi_obs(
    v: float,
    t: float = 0.0,
    *,
    model: str = "m",
    feature: str | None = "age",
    kind: str = "data_drift",
    signal: str = "psi",
) -> Observation:
    return Observation(
        model_id=model,
        kind=kind,
        feature=feature,
        signal=signal,  # type: ignore[arg-type]
        value=v,
        threshold=FIRE,
        breached=v > FIRE,
        cleared=v < RESOLVE,
        observed_at=t,
        window_events=1000,
    )


def det_obs(level: int, t: float = 0.0, *, model: str = "m", feature: str = "age") -> Observation:
    """The change-detector signal: breached at 2 agreeing detectors, cleared at 0."""
    return Observation(
        model_id=model,
        kind="data_drift",
        feature=feature,
        signal="change_detectors",
        value=float(level),
        threshold=2.0,
        breached=level >= 2,
        cleared=level == 0,
        observed_at=t,
    )


PLAIN = AlertsConfig(group_features=False, cooldown_seconds=0)


def plain() -> AlertTracker:
    """One incident per feature, no cooldown: the hysteresis alone (rules, pending, grouping
    and cooldown are tested in test_alert_rules.py)."""
    return AlertTracker(PLAIN)


def feed(t: AlertTracker, observations: list[Observation]) -> list[AlertEvent]:
    return [a for o in observations for a in t.observe(o)]


def statuses(alerts: list[AlertEvent]) -> list[str]:
    return [a.status for a in alerts]


# ------------------------------------------------------------------------------ hysteresis


def test_flapping_around_fire_threshold_fires_once() -> None:
    values = [0.24, 0.26] * 500
    alerts = feed(plain(), [psi_obs(v, float(i)) for i, v in enumerate(values)])
    assert statuses(alerts) == ["firing"]
    assert alerts[0].observed_at == 1.0 and alerts[0].value == 0.26


def test_flapping_around_resolve_threshold_resolves_once() -> None:
    values = [0.5] + [0.09, 0.11] * 300 + [0.3] * 3
    alerts = feed(plain(), [psi_obs(v, float(i)) for i, v in enumerate(values)])
    # fires at 0.5, resolves at the first 0.09, fires again only at 0.3 (0.11 is not > 0.25)
    assert statuses(alerts) == ["firing", "resolved", "firing"]
    assert [a.observed_at for a in alerts] == [0.0, 1.0, 601.0]


def _reference_single_signal(values: list[float]) -> list[tuple[int, str]]:
    """Brute force hysteresis: (index, status) of every transition."""
    out = []
    firing = False
    for i, v in enumerate(values):
        if not firing and v > FIRE:
            firing = True
            out.append((i, "firing"))
        elif firing and v < RESOLVE:
            firing = False
            out.append((i, "resolved"))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_signal_random_walk_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # mean-reverting AR(1) around 0.17, so it keeps crossing both thresholds
    values = []
    x = 0.17
    for eps in rng.normal(0.0, 0.03, 5000):
        x = 0.17 + 0.95 * (x - 0.17) + float(eps)
        values.append(max(x, 0.0))
    tracker = plain()
    got = []
    for i, v in enumerate(values):
        for a in tracker.observe(psi_obs(v, float(i))):
            got.append((int(a.observed_at), a.status))
    want = _reference_single_signal(values)
    assert got == want
    assert len(want) >= 4  # the walk crosses both thresholds several times
    # every firing is followed by exactly one resolved, at the first value under RESOLVE
    for (i, s), nxt in zip(want, [*want[1:], None], strict=True):
        if s == "firing":
            below = next((k for k in range(i + 1, len(values)) if values[k] < RESOLVE), None)
            assert (nxt[0] if nxt else None) == below
            assert nxt is None or nxt[1] == "resolved"


def test_first_observations_below_threshold_leave_no_state() -> None:
    t = plain()
    assert feed(t, [psi_obs(v) for v in (0.0, 0.2, 0.05, 0.25)]) == []  # 0.25 is not > 0.25
    assert t.snapshot()["incidents"] == {}
    assert t.firing() == []


# -------------------------------------------------------------------- several signals


def test_two_signals_resolve_only_when_both_clear() -> None:
    t = plain()
    assert statuses(t.observe(psi_obs(0.4, 1.0))) == ["firing"]
    assert t.observe(det_obs(2, 2.0)) == []  # the detectors breach too
    assert t.observe(psi_obs(0.05, 3.0)) == []  # psi clears, detectors not yet
    assert t.observe(det_obs(1, 4.0)) == []  # between the detector thresholds: still not clear
    assert t.firing() == [("m", "data_drift", "age")]
    resolved = t.observe(det_obs(0, 5.0))
    assert statuses(resolved) == ["resolved"]
    # the resolution names the signal that fired the incident
    assert (
        resolved[0].signal == "psi" and resolved[0].observed_at == 5.0
    )  # names the signal that fired it
    assert resolved[0].started_at == 1.0
    assert t.firing() == []


def test_second_signal_first_seen_between_thresholds_blocks_resolution() -> None:
    t = plain()
    feed(t, [psi_obs(0.4, 1.0), det_obs(1, 2.0)])  # detectors speak, neither breached nor clear
    assert t.observe(psi_obs(0.01, 3.0)) == []
    assert statuses(t.observe(det_obs(0, 4.0))) == ["resolved"]


def test_signal_that_breaches_again_after_clearing_blocks_resolution() -> None:
    t = plain()
    feed(t, [psi_obs(0.4, 1.0), det_obs(0, 2.0), det_obs(2, 3.0)])
    assert t.observe(psi_obs(0.01, 4.0)) == []  # detectors re-breached at t=3
    assert statuses(t.observe(det_obs(0, 5.0))) == ["resolved"]


def test_signals_of_a_previous_incident_do_not_block_the_next() -> None:
    t = plain()
    feed(t, [psi_obs(0.4, 1.0), det_obs(2, 2.0), det_obs(0, 3.0), psi_obs(0.0, 4.0)])
    # second incident opened by psi alone: psi clearing resolves it
    assert statuses(feed(t, [psi_obs(0.5, 5.0), psi_obs(0.0, 6.0)])) == ["firing", "resolved"]


def _reference_multi(obs: list[Observation]) -> list[tuple[int, str]]:
    """Brute force over the history: an incident resolves at the first observation after which
    every signal heard since the firing has, as its latest decisive verdict since the firing,
    "cleared" (a signal heard only between its thresholds is not clear)."""
    out: list[tuple[int, str]] = []
    start: int | None = None
    for i, o in enumerate(obs):
        if start is None:
            if o.breached:
                start = i
                out.append((i, "firing"))
            continue
        since = obs[start : i + 1]
        all_clear = True
        for sig in {x.signal for x in since}:
            decisive = [x for x in since if x.signal == sig and (x.cleared or x.breached)]
            if not decisive or not decisive[-1].cleared:
                all_clear = False
        if all_clear:
            out.append((i, "resolved"))
            start = None
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_two_signals_random_stream_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    obs = []
    for i in range(3000):
        if rng.random() < 0.5:
            obs.append(psi_obs(float(rng.choice([0.02, 0.05, 0.15, 0.2, 0.3, 0.5])), float(i)))
        else:
            obs.append(det_obs(int(rng.choice([0, 0, 0, 1, 2])), float(i)))
    t = plain()
    got = [(int(a.observed_at), a.status) for o in obs for a in t.observe(o)]
    assert got == _reference_multi(obs)
    assert len(got) > 50
    assert [s for _, s in got] == ["firing", "resolved"] * (len(got) // 2) + (
        ["firing"] if len(got) % 2 else []
    )


def test_incidents_are_per_model_kind_and_feature() -> None:
    t = plain()
    obs = [
        psi_obs(0.4, model="m1"),
        psi_obs(0.4, model="m2"),
        psi_obs(0.4, feature="income"),
        psi_obs(0.4, kind="prediction_drift", feature="prediction.score"),
        psi_obs(0.4, kind="concept_drift", feature=None, signal="adwin_error_rate"),
        psi_obs(0.4, model="m1"),  # same incident as the first: no new alert
    ]
    alerts = feed(t, obs)
    assert [a.dedup_key for a in alerts] == [
        "m1/data_drift/age",
        "m2/data_drift/age",
        "m/data_drift/income",
        "m/prediction_drift/prediction.score",
        "m/performance/-",  # concept drift is the performance incident's (CAUSE)
    ]
    assert [a.severity for a in alerts] == ["warning"] * 4 + ["critical"]
    # the firing metric still tells the kinds of signals apart
    assert sorted(dedup_key(*f) for f in t.firing()) == sorted(
        [a.dedup_key for a in alerts[:4]] + ["m/concept_drift/-"]
    )
    assert dedup_key("m", "concept_drift", None) == "m/concept_drift/-"


def test_alert_event_fields() -> None:
    t = plain()
    fired = t.observe(psi_obs(0.4321, 10.0))[0]
    t.observe(psi_obs(0.2, 11.0))
    resolved = t.observe(psi_obs(0.05, 12.0))[0]
    assert (fired.status, fired.kind, fired.feature, fired.signal) == (
        "firing",
        "data_drift",
        "age",
        "psi",
    )
    assert (fired.value, fired.threshold, fired.window_events) == (0.4321, FIRE, 1000)
    assert (fired.started_at, fired.observed_at) == (10.0, 10.0)
    assert "0.4321" in fired.summary and "age" in fired.summary
    assert (resolved.started_at, resolved.observed_at, resolved.value) == (10.0, 12.0, 0.05)
    assert resolved.summary.startswith("Resolved:")


# -------------------------------------------------------------------------- alert ids


def _incident_cycle(t: AlertTracker, start: float) -> list[AlertEvent]:
    return feed(t, [psi_obs(0.4, start), psi_obs(0.01, start + 1)])


def test_alert_ids_are_unique_for_ever_and_distinct_per_transition() -> None:
    a, b = plain(), plain()
    run_a = _incident_cycle(a, 0.0) + _incident_cycle(a, 10.0)
    run_b = _incident_cycle(b, 0.0) + _incident_cycle(b, 10.0)
    assert statuses(run_a) == statuses(run_b) == ["firing", "resolved"] * 2
    # two trackers started afresh on the same stream: unrelated incidents, unrelated ids
    ids_a = {x.alert_id for x in run_a} | {x.incident_id for x in run_a}
    ids_b = {x.alert_id for x in run_b} | {x.incident_id for x in run_b}
    assert not ids_a & ids_b
    ids = [x.alert_id for x in run_a]
    assert len(set(ids)) == 4  # firing != resolved, and the second incident has new ids
    assert all(uuid.UUID(i).version == 5 for i in ids)
    incidents = [x.incident_id for x in run_a]
    assert incidents[0] == incidents[1] != incidents[2] == incidents[3]
    assert all(i is not None and uuid.UUID(i).version == 4 for i in incidents)
    assert all(x.schema_version == 3 for x in run_a)


def test_restored_tracker_resolves_with_the_same_incident_id() -> None:
    t = plain()
    fired = t.observe(psi_obs(0.4, 0.0))
    restored = AlertTracker.from_snapshot(orjson.loads(orjson.dumps(t.snapshot())), PLAIN)
    assert restored.observe(psi_obs(0.2, 1.0)) == []
    resolved = restored.observe(psi_obs(0.01, 2.0))
    assert statuses(fired + resolved) == ["firing", "resolved"]
    assert resolved[0].incident_id == fired[0].incident_id
    assert resolved[0].alert_id != fired[0].alert_id
    # the restored tracker keeps the random key: its next incident has a new id, and a second
    # restore of the same snapshot gives that incident the same id again (a redelivered batch)
    snap = orjson.loads(orjson.dumps(restored.snapshot()))
    nxt = _incident_cycle(restored, 10.0)
    again = _incident_cycle(AlertTracker.from_snapshot(snap, PLAIN), 10.0)
    assert nxt == again
    assert nxt[0].incident_id != fired[0].incident_id


def test_version_3_snapshot_is_upgraded_and_its_firing_incident_resolves() -> None:
    t = plain()
    t.observe(psi_obs(0.4, 0.0))
    t.observe(psi_obs(0.4, 0.0, kind="concept_drift", feature=None, signal="error_rate"))
    v4 = orjson.loads(orjson.dumps(t.snapshot()))
    v3: dict[str, Any] = {k: v for k, v in v4.items() if k != "secret"}
    v3["v"] = 3
    v3["incidents"] = {
        k: [*row[:11], [m[:12] for m in row[11]], *row[12:14]] for k, row in v4["incidents"].items()
    }
    # an incident of the release before CAUSE: concept drift had its own dedup key
    row = v3["incidents"].pop("m/performance/-")
    row[1] = "concept_drift"
    v3["incidents"]["m/concept_drift/-"] = row
    restored = AlertTracker.from_snapshot(v3, PLAIN)
    out = feed(
        restored,
        [
            psi_obs(0.01, 5.0),
            psi_obs(0.01, 5.0, kind="concept_drift", feature=None, signal="error_rate"),
        ],
    )
    assert sorted((a.dedup_key, a.status) for a in out) == [
        ("m/concept_drift/-", "resolved"),
        ("m/data_drift/age", "resolved"),
    ]
    assert all(a.incident_id and uuid.UUID(a.incident_id).version == 4 for a in out)
    # once resolved, concept drift goes to the model's performance incident
    again = restored.observe(
        psi_obs(0.4, 9000.0, kind="concept_drift", feature=None, signal="error_rate")
    )
    assert [a.dedup_key for a in again] == ["m/performance/-"]


def test_alert_ids_differ_between_incident_keys() -> None:
    t = plain()
    alerts = feed(
        t, [psi_obs(0.4, model="m1"), psi_obs(0.4, model="m2"), psi_obs(0.4, feature="income")]
    )
    assert len({a.alert_id for a in alerts}) == 3


def test_redelivered_observations_reproduce_the_same_alert_id() -> None:
    # at-least-once: a state restored from before the batch replays it with the same ids
    t = plain()
    _incident_cycle(t, 0.0)
    snap = orjson.loads(orjson.dumps(t.snapshot()))
    first = t.observe(psi_obs(0.4, 5.0))
    replay = AlertTracker.from_snapshot(snap, PLAIN).observe(psi_obs(0.4, 5.0))
    assert first == replay
    assert first[0].alert_id not in {a.alert_id for a in _incident_cycle(plain(), 0)}


# -------------------------------------------------------------------------- snapshots


def _mixed_stream(seed: int, n: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        model = ("m1", "m2")[int(rng.integers(2))]
        feature = ("age", "income")[int(rng.integers(2))]
        if rng.random() < 0.5:
            v = float(rng.choice([0.02, 0.15, 0.3, 0.6]))
            out.append(psi_obs(v, float(i), model=model, feature=feature))
        else:
            out.append(
                det_obs(int(rng.choice([0, 0, 1, 2])), float(i), model=model, feature=feature)
            )
    return out


@pytest.mark.parametrize("split", [0, 7, 500, 1999])
def test_snapshot_round_trip_gives_identical_alerts(split: int) -> None:
    obs = _mixed_stream(seed=9, n=2000)
    t = plain()
    before = feed(t, obs[:split])
    data = orjson.dumps(t.snapshot())
    restored = AlertTracker.from_snapshot(orjson.loads(data), PLAIN)
    assert orjson.dumps(restored.snapshot()) == data
    assert restored.firing() == t.firing()
    rest_t = feed(t, obs[split:])
    rest_r = feed(restored, obs[split:])
    assert rest_t == rest_r
    assert len(before) + len(rest_t) > 50
    assert restored.snapshot() == t.snapshot()


def test_snapshot_refuses_unknown_version() -> None:
    snap: dict[str, Any] = plain().snapshot()
    with pytest.raises(ValueError, match="version"):
        AlertTracker.from_snapshot({**snap, "v": 99})


# ------------------------------------------------------------ one incident per root cause


def _perf(v: float, t: float) -> Observation:
    """Accuracy of a window: breached below 0.8, cleared from 0.85."""
    return Observation("m", "performance", None, "accuracy", v, 0.8, v < 0.8, v >= 0.85, t)


def _errors(v: float, t: float) -> Observation:
    """The concept-drift detectors' error level: breached above 0.2, cleared below 0.1."""
    return Observation("m", "concept_drift", None, "error_rate", v, 0.2, v > 0.2, v < 0.1, t)


def test_concept_drift_and_performance_decay_are_one_incident() -> None:
    t = AlertTracker(AlertsConfig(cooldown_seconds=0, update_interval_seconds=None))
    alerts = t.observe_many([_errors(0.4, 60.0), _perf(0.6, 60.0)])
    assert [(a.dedup_key, a.status, a.kind, a.severity) for a in alerts] == [
        ("m/performance/-", "firing", "performance", "critical")
    ]
    fired = alerts[0]
    assert {(s.kind, s.signal) for s in fired.signals} == {
        ("concept_drift", "error_rate"),
        ("performance", "accuracy"),
    }
    assert fired.signals_total == 2
    assert "also" in fired.summary
    assert sorted(t.firing()) == [("m", "concept_drift", None), ("m", "performance", None)]
    # it resolves once both kinds of signals are back, once
    assert t.observe_many([_errors(0.05, 120.0), _perf(0.7, 120.0)]) == []
    done = t.observe_many([_errors(0.05, 180.0), _perf(0.9, 180.0)])
    assert [(a.status, a.incident_id) for a in done] == [("resolved", fired.incident_id)]


def test_concept_drift_alone_names_the_errors_and_its_window() -> None:
    t = AlertTracker(AlertsConfig(), windows={"concept_drift": "error stream"})
    [a] = t.observe(_errors(0.5, 0.0))
    assert (a.dedup_key, a.kind, a.signal, a.window) == (
        "m/performance/-",
        "performance",
        "error_rate",
        "error stream",
    )
    assert a.summary.startswith("Errors of model 'm' rose")
    assert a.signals[0].kind == "concept_drift"


# ------------------------------------------------------------------------ updated events


def _grouped(interval: float | None = 600.0) -> AlertTracker:
    return AlertTracker(AlertsConfig(cooldown_seconds=0, update_interval_seconds=interval))


def test_a_feature_joining_and_leaving_a_firing_incident_updates_it() -> None:
    t = _grouped()
    fired = t.observe_many([psi_obs(0.4, 0.0, feature="age"), psi_obs(0.05, 0.0, feature="x")])
    assert statuses(fired) == ["firing"] and fired[0].top_features == ["age"]
    # income starts drifting before the rate limit allows an update: held back ...
    held = t.observe_many([psi_obs(0.4, 60.0), psi_obs(0.5, 60.0, feature="income")])
    assert held == []
    # ... and published with the next observation after update_interval_seconds
    [up] = t.observe_many([psi_obs(0.4, 600.0), psi_obs(0.5, 600.0, feature="income")])
    assert (up.status, up.dedup_key, up.incident_id) == (
        "updated",
        fired[0].dedup_key,
        fired[0].incident_id,
    )
    assert up.alert_id != fired[0].alert_id
    assert (up.feature, up.signal) == ("income", "psi")
    assert sorted(up.top_features) == ["age", "income"]
    assert up.summary.startswith("Updated:") and "now also income" in up.summary
    assert not up.retrain
    # no change, no update
    assert t.observe_many([psi_obs(0.4, 1300.0), psi_obs(0.5, 1300.0, feature="income")]) == []
    # age clears: the page says so
    [gone] = t.observe_many([psi_obs(0.05, 1900.0), psi_obs(0.5, 1900.0, feature="income")])
    assert gone.status == "updated" and gone.top_features == ["income"]
    assert "back to normal: age" in gone.summary
    assert [s.feature for s in gone.signals if s.breached] == ["income"]
    [end] = t.observe_many([psi_obs(0.05, 2000.0), psi_obs(0.01, 2000.0, feature="income")])
    assert end.status == "resolved" and end.incident_id == fired[0].incident_id
    ids = [fired[0].alert_id, up.alert_id, gone.alert_id, end.alert_id]
    assert len(set(ids)) == 4


def test_a_flapping_member_cannot_page_storm() -> None:
    t = _grouped(interval=3600.0)
    obs = [psi_obs(0.4, 0.0)]
    for i in range(1, 24 * 60):  # a day of minutes; income flaps between breach and clear
        obs.append(psi_obs(0.4, 60.0 * i))
        obs.append(psi_obs(0.5 if i % 2 else 0.05, 60.0 * i, feature="income"))
    alerts = t.observe_many(obs)
    ups = [a for a in alerts if a.status == "updated"]
    assert statuses(alerts)[0] == "firing" and "resolved" not in statuses(alerts)
    assert 10 <= len(ups) <= 24  # at most one per hour of event time
    times = [a.observed_at for a in alerts]
    assert all(b - a >= 3600.0 for a, b in itertools.pairwise(times))


def test_updates_can_be_turned_off_and_old_behaviour_kept() -> None:
    t = _grouped(interval=None)
    obs = [psi_obs(0.4, 0.0), psi_obs(0.5, 3600.0, feature="income"), psi_obs(0.4, 3600.0)]
    obs += [psi_obs(0.01, 7200.0), psi_obs(0.01, 7200.0, feature="income")]
    assert statuses(t.observe_many(obs)) == ["firing", "resolved"]


def test_snapshot_keeps_the_update_clock_and_picture() -> None:
    t = _grouped()
    t.observe(psi_obs(0.4, 0.0))
    t.observe_many([psi_obs(0.4, 60.0), psi_obs(0.5, 60.0, feature="income")])  # held
    restored = AlertTracker.from_snapshot(
        orjson.loads(orjson.dumps(t.snapshot())), AlertsConfig(cooldown_seconds=0)
    )
    rest = [psi_obs(0.4, 600.0), psi_obs(0.5, 600.0, feature="income")]
    assert restored.observe_many(rest) == t.observe_many(rest)
    assert restored.snapshot() == t.snapshot()


def test_forgetting_a_model_resolves_its_firing_incidents_and_drops_its_state() -> None:
    t = AlertTracker(PLAIN)
    fired = [ev for i in range(3) for ev in t.observe(psi_obs(0.5, float(i)))]
    fired += t.observe(psi_obs(0.5, 0.0, model="other"))
    assert [(e.model_id, e.status) for e in fired] == [("m", "firing"), ("other", "firing")]
    out = t.forget_model("m", 1000.0)
    assert [(e.model_id, e.status, e.incident_id) for e in out] == [
        ("m", "resolved", fired[0].incident_id)
    ]
    assert out[0].observed_at == 1000.0
    assert t.firing() == [("other", "data_drift", "age")]
    assert all(row[0] != "m" for row in t.snapshot()["incidents"].values())
    assert t.forget_model("m", 2000.0) == []  # nothing left of it
    # it may come back as a new model: a new incident, a new id
    again = [ev for i in range(3) for ev in t.observe(psi_obs(0.5, 3000.0 + i))]
    assert [e.status for e in again] == ["firing"]
    assert again[0].incident_id != fired[0].incident_id


# ------------------------------------------------- direction: away from or back to the reference


def _moving(o: Observation, direction: str | None) -> Observation:
    return replace(o, direction=direction)  # type: ignore[arg-type]


def test_a_page_says_whether_its_signal_moves_away_or_back() -> None:
    """Issue 16 item 1: the summary says which way the signal moves; a resolve that a return
    to the reference caused says so."""
    t = plain()
    [fired] = t.observe(_moving(det_obs(2, 0.0), "away"))
    assert fired.summary.endswith(
        "2 change detectors agree; moving away from the reference. Suggested action: "
        "check the data pipeline feeding the model."
    ), fired.summary
    # the detectors judge the next change a return: it reads as cleared, and the incident
    # resolves saying why
    [resolved] = t.observe(_moving(det_obs(0, 1.0), "back"))
    assert resolved.status == "resolved"
    assert resolved.summary.startswith(
        "Resolved: back to the reference. Input feature 'age' of model 'm' drifted"
    ), resolved.summary


def test_without_a_judged_direction_the_summary_says_none() -> None:
    t = plain()
    fired = t.observe(psi_obs(0.4, 0.0))[0]
    resolved = feed(t, [psi_obs(0.2, 1.0), psi_obs(0.01, 2.0)])[0]
    assert "reference" not in fired.summary
    assert resolved.summary.startswith("Resolved: Input feature 'age'"), resolved.summary
    # a statistic falling but still breached: the page (an update of a group) says it moves
    # back, though it still fires
    g = AlertTracker(AlertsConfig(cooldown_seconds=0, update_interval_seconds=0))
    g.observe(_moving(psi_obs(0.6, 0.0), "away"))
    [up] = g.observe_many(
        [_moving(psi_obs(0.4, 60.0), "back"), _moving(psi_obs(0.5, 60.0, feature="x"), "back")]
    )
    assert up.status == "updated" and up.summary.endswith(
        "moving back to the reference. Suggested action: check the data pipeline feeding the model."
    ), up.summary


def test_the_lead_signal_speaks_for_the_direction_else_any_away() -> None:
    t = AlertTracker(AlertsConfig(cooldown_seconds=0))
    [fired] = t.observe_many(
        [psi_obs(0.4, 0.0), _moving(det_obs(2, 0.0, feature="income"), "away")]
    )
    assert fired.signal == "psi"  # strongest; no direction of its own
    assert "moving away from the reference" in fired.summary


def test_direction_survives_a_snapshot_and_version_4_is_read() -> None:
    t = plain()
    t.observe(_moving(det_obs(2, 0.0), "away"))
    snap = orjson.loads(orjson.dumps(t.snapshot()))
    assert snap["v"] == 5
    restored = AlertTracker.from_snapshot(snap, PLAIN)
    assert restored.snapshot() == t.snapshot()
    back = _moving(det_obs(0, 1.0), "back")
    assert restored.observe(back) == t.observe(back)
    # version 4: member rows without a direction, read as None (not judged)
    v4 = {**snap, "v": 4}
    v4["incidents"] = {
        k: [*row[:11], [m[:13] for m in row[11]], *row[12:]] for k, row in snap["incidents"].items()
    }
    old = AlertTracker.from_snapshot(v4, PLAIN)
    [resolved] = old.observe(det_obs(0, 1.0))
    assert resolved.status == "resolved"
    assert resolved.summary.startswith("Resolved: Input feature"), resolved.summary


# --------------------------------------------- observations passed over before they are judged
# observe_many passes over an observation that does not breach, of a signal whose rule is a
# calibrated one (the monitor's verdict stands), when its incident has no members: these pin
# the edges of that shortcut.


def _informational(v: float, t: float, *, signal: str = "mean") -> Observation:
    """A signal the monitor does not judge (an infinite threshold: never breached)."""
    return Observation("m", "data_drift", "age", signal, v, float("inf"), False, False, t)


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "hi", "signal": "mean", "mode": "absolute", "threshold": 50.0},
        {"name": "hi", "signal": "mean", "mode": "relative", "threshold": 0.5},
    ],
    ids=["absolute", "relative"],
)
def test_a_rule_of_its_own_judges_what_the_monitor_did_not_breach(rule: dict[str, Any]) -> None:
    t = AlertTracker(AlertsConfig(rules=[rule], cooldown_seconds=0))
    quiet = replace(_informational(40.0, 0.0), baseline=40.0)
    high = replace(_informational(90.0, 60.0), baseline=40.0)
    back = replace(_informational(40.0, 120.0), baseline=40.0)
    assert t.observe(quiet) == []
    [fired] = t.observe(high)
    assert (fired.status, fired.rule, fired.dedup_key) == ("firing", "hi", "m/data_drift/-#hi")
    [resolved] = t.observe(back)
    assert resolved.status == "resolved"


def test_a_calm_observation_of_a_pending_incident_resets_its_streak() -> None:
    slow = {"name": "slow", "signal": "psi", "for_windows": 2}
    t = AlertTracker(AlertsConfig(rules=[slow], cooldown_seconds=0, group_features=False))
    # breach, calm (the incident has a member: judged, its streak resets), breach: no fire
    assert feed(t, [psi_obs(0.4, 0.0), psi_obs(0.2, 60.0), psi_obs(0.4, 120.0)]) == []
    [fired] = t.observe(psi_obs(0.4, 180.0))  # the second breach in a row
    assert (fired.status, fired.started_at) == ("firing", 120.0)


def test_a_calm_observation_of_a_firing_group_joins_it_and_holds_its_resolution() -> None:
    t = AlertTracker(AlertsConfig(cooldown_seconds=0))  # features grouped: one incident
    [fired] = t.observe(psi_obs(0.4, 0.0))
    # income, first seen between its thresholds (calm, not cleared), joins the incident
    assert t.observe(psi_obs(0.2, 60.0, feature="income")) == []
    assert t.observe(psi_obs(0.01, 120.0)) == []  # age cleared, income not: still firing
    [resolved] = t.observe(psi_obs(0.01, 180.0, feature="income"))
    assert resolved.status == "resolved" and resolved.incident_id == fired.incident_id
    assert [s.feature for s in resolved.signals] == ["age", "income"]


def test_calm_observations_without_an_incident_leave_the_same_state_as_before() -> None:
    t = plain()
    t.observe(psi_obs(0.4, 0.0))
    t.observe(psi_obs(0.01, 60.0))  # resolved: the incident stays, inactive, without members
    before = t.snapshot()
    assert t.observe_many([psi_obs(0.2, 120.0), psi_obs(0.2, 120.0, feature="income")]) == []
    after = t.snapshot()
    assert after["now"] == [["m", "data_drift", 120.0]]
    assert {**after, "now": before["now"]} == before


def test_the_route_cache_is_bounded_and_clearing_it_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stream_monitor.alerts.tracker as tracker_module

    def stream() -> list[Observation]:
        rng = np.random.default_rng(5)
        return [
            psi_obs(float(rng.uniform(0, 0.5)), float(i // 3), feature=f"f{rng.integers(6)}")
            for i in range(300)
        ]

    big = plain()
    big._secret = b"k" * 16
    want = big.observe_many(stream())
    monkeypatch.setattr(tracker_module, "_ROUTES_SIZE", 2)
    small = plain()
    small._secret = b"k" * 16
    got = small.observe_many(stream())
    assert len(small._routes) <= 2 < len(big._routes)
    assert got == want and small.snapshot() == big.snapshot()
    assert statuses(want).count("firing") > 3
