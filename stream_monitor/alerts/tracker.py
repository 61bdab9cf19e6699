"""The alert lifecycle: incidents that go pending, firing and resolved, one event per transition.

Observations are judged by their rule (:mod:`stream_monitor.alerts.rules`). An incident is one
dedup key: a model, a kind and a segment, plus the feature unless ``alerts.group_features``
gathers the features of a model into one incident. One root cause is one incident: a model's
performance decay and its concept drift (errors rising, inputs unchanged) are both the model
getting worse, so concept-drift signals join the model's ``performance`` incident
(:data:`CAUSE`), its severity the highest of its signals' kinds. Each signal that speaks about
an incident is a *member* of it:

- *pending*: a member breached, but not yet for its rule's ``for_windows`` consecutive
  observations and ``for_seconds`` of event time; a member that stops breaching resets.
- *firing*: one ``firing`` event, listing the incident's signals (strongest first), its
  features and the model drift score.
- *updated*: while it fires, a signal that starts breaching or clears changes what the page
  says; one ``updated`` event (same dedup key, same incident) tells the current picture, at
  most one per ``alerts.update_interval_seconds`` of event time per incident, so a flapping
  signal cannot page-storm (a change held back is sent with the next update or never, if it
  undoes itself).
- *resolved*: once every member has cleared its resolve threshold (hysteresis: a value between
  the two thresholds keeps the state), one ``resolved`` event. For ``cooldown_seconds`` of event
  time after that the incident stays pending instead of firing again: a value hovering at the
  threshold gives one alert, not one per window.
- *stale*: an open incident none of whose signals was judged for ``alerts.stale_seconds`` of its
  model's and kind's event time (a retired model version or segment, a removed or disabled
  rule) resolves too, saying so, since every ``firing`` event is followed by a ``resolved`` one.

Observations are taken in runs of one model's instant (the signals of one window arrive
together), so the features that drift in the same window are in the same alert. Time is event
time throughout, so replaying recorded events gives the same alerts as live processing.

Every incident gets an ``incident_id`` when it fires: a version-4 UUID drawn from the tracker's
random key (made when the tracker is, kept in its snapshot) and the incident's key and number,
so it is unique for ever (two trackers started afresh on the same stream give different ids),
kept across restarts (it is in the snapshot), and a batch redelivered after a restore gets the
same ids again (at-least-once). Each event's ``alert_id`` is a UUIDv5 of the incident id, its
status and its sequence in the incident.

Examples
--------
>>> from stream_monitor.alerts.observation import Observation
>>> def obs(v, t):
...     return Observation("m", "data_drift", "age", "psi", v, 0.25, v > 0.25, v < 0.1, t)
>>> t = AlertTracker()
>>> vals = (0.05, 0.4, 0.5, 0.2, 0.3, 0.05, 0.4)
>>> [(a.status, a.observed_at) for i, v in enumerate(vals) for a in t.observe(obs(v, i * 60))]
[('firing', 60.0), ('resolved', 300.0)]
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from stream_monitor.alerts.observation import Observation
from stream_monitor.alerts.rules import DEFAULT_RULE, RuleBook, Verdict
from stream_monitor.config import AlertRule, AlertsConfig
from stream_monitor.events.schema import (
    PRIORITY,
    AlertEvent,
    AlertSignal,
    Severity,
    SuggestedAction,
)

__all__ = ["CAUSE", "SEVERITY", "AlertTracker", "dedup_key"]

#: 4: incident ids, ``updated`` events, the kinds of members (3 is read and upgraded).
#: 5: which way each member last moved (``direction``; 4 is read, without it).
SNAPSHOT_VERSION = 5
_READABLE_VERSIONS = (3, 4, SNAPSHOT_VERSION)

#: The incident kind a signal kind's incidents belong to, when it is another's: concept drift
#: (the errors rose) and performance decay are one root cause, the model getting worse.
CAUSE: dict[str, str] = {"concept_drift": "performance"}
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

#: Severity of the default rule, by kind.
SEVERITY: dict[str, Severity] = {
    "data_drift": "warning",
    "prediction_drift": "warning",
    "data_quality": "warning",
    "concept_drift": "critical",
    "performance": "critical",
}

_WHAT = {
    "data_drift": "input feature {feature!r} of model {model!r} drifted",
    "prediction_drift": "output {feature!r} of model {model!r} drifted",
    "data_quality": "data quality of feature {feature!r} of model {model!r} degraded",
    "concept_drift": "errors of model {model!r} rose",
    "performance": "performance of model {model!r} decayed",
}
#: Incidents without one feature: model-level signals, or the features of a group.
_WHAT_MODEL = {
    "data_drift": "the inputs of model {model!r} drifted",
    "prediction_drift": "the outputs of model {model!r} drifted",
    "data_quality": "the data quality of model {model!r} degraded",
    "concept_drift": "errors of model {model!r} rose",
    "performance": "performance of model {model!r} decayed",
}
#: How an ``updated`` event names a kind of signals that joined or left its incident.
_ASPECT = {
    "data_drift": "input drift",
    "prediction_drift": "output drift",
    "data_quality": "data quality",
    "concept_drift": "the error-rate detectors",
    "performance": "the performance metrics",
}
_ACTION_TEXT = {
    "investigate_data_pipeline": "check the data pipeline feeding the model",
    "retrain": "retrain the model on recent data",
    "roll_back": "roll back to the baseline version",
    "check_labels": "check the labelling pipeline",
    "investigate": "investigate",
}
#: Signals comparing a candidate model version with the baseline version.
_VERSION_SIGNALS = frozenset({"version_psi", "version_relative_change"})
_FAIRNESS_SIGNALS = frozenset({"disparate_impact", "tpr_ratio", "fpr_ratio"})
#: Signals that describe the model as a whole, not one of the incident's features.
MODEL_SCORE = "model_drift_score"


def dedup_key(
    model_id: str,
    kind: str,
    feature: str | None,
    segment: str | None = None,
    rule: str | None = None,
) -> str:
    """The key of one incident; also the Kafka key of its alert events. Signals judged by a
    configured rule are an incident of their own (``#rule``): its severity and routing are not
    swallowed by another incident of the model.

    >>> dedup_key("m", "data_drift", "age"), dedup_key("m", "performance", None, "region=eu")
    ('m/data_drift/age', 'm/performance/-@region=eu')
    >>> dedup_key("m", "performance", None, rule="precision")
    'm/performance/-#precision'
    """
    key = f"{model_id}/{kind}/{feature or '-'}"
    if rule is not None and rule != DEFAULT_RULE.name:
        key = f"{key}#{rule}"
    return key if segment is None else f"{key}@{segment}"


@dataclass
class _Member:
    """One signal of an incident, as of its last observation."""

    feature: str | None
    signal: str
    rule: str
    value: float = 0.0
    threshold: float = 0.0
    baseline: float | None = None
    strength: float = 0.0
    breached: bool = False
    cleared: bool = False
    #: Consecutive breaching observations, and the event time the breach began.
    streak: int = 0
    since: float | None = None
    window_events: int | None = None
    #: The kind of its observations (the incident's, or one that joins it: :data:`CAUSE`).
    kind: str = ""
    #: Which way its last observation moved: away from the reference, back to it, or None.
    direction: str | None = None

    def row(self) -> list[Any]:
        return [
            self.feature,
            self.signal,
            self.rule,
            self.value,
            self.threshold,
            self.baseline,
            self.strength,
            self.breached,
            self.cleared,
            self.streak,
            self.since,
            self.window_events,
            self.kind,
            self.direction,
        ]


@dataclass
class _Incident:
    model_id: str
    kind: str
    feature: str | None
    segment: str | None = None
    seq: int = 0
    state: str = "inactive"  # inactive | pending | firing
    started_at: float = 0.0
    resolved_at: float | None = None
    rule: str = "default"
    model_version: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)
    #: Whether a fire was held back by the cooldown during the current pending spell.
    held: bool = False
    #: The member that fired the incident.
    lead: str = ""
    #: Event time of its last judged observation (None: none judged yet).
    seen_at: float | None = None
    #: The current (or last) episode's id, given when it fires ("" before its first).
    incident_id: str = ""
    #: Severity published by its firing / updated events (it only rises while it fires).
    severity: str = ""
    #: ``updated`` events published in the current episode, and the event time of the last
    #: event published (firing or updated): the update rate limit's clock.
    updates: int = 0
    updated_at: float | None = None
    #: Members (ids) the last published event described as drifting: the picture on the page.
    shown: list[str] = field(default_factory=list)

    @property
    def firing(self) -> bool:
        return self.state == "firing"


#: Bound of :attr:`AlertTracker._routes` (cleared when full).
_ROUTES_SIZE = 4096


class _Route(NamedTuple):
    """A signal's rule and the incident its observations speak about (the dedup key and kind
    of the incident, see :meth:`AlertTracker._route`)."""

    rule: AlertRule
    key: str
    kind: str
    #: The key of the incident of the signal's own kind, when :data:`CAUSE` moves it.
    own: str | None


class AlertTracker:
    """Turns a stream of observations into firing, updated and resolved alert events.

    ``windows`` describes the window of each kind's values (``"count 1000"``), for the events.
    """

    def __init__(
        self, cfg: AlertsConfig | None = None, windows: dict[str, str] | None = None
    ) -> None:
        self.cfg = cfg or AlertsConfig()
        self.rules = RuleBook(self.cfg)
        self.windows = windows or {}
        self._incidents: dict[str, _Incident] = {}
        #: Last model drift score per (model, segment), carried by that model's alerts.
        self._scores: dict[tuple[str, str | None], float] = {}
        #: Fires held back by a cooldown (one per pending spell).
        self.suppressed = 0
        #: Open incidents resolved because their signals fell silent (``stale_seconds``).
        self.stale_resolved = 0
        #: Latest event time observed per (model, incident kind): the clock staleness is
        #: measured on.
        self._now: dict[tuple[str, str], float] = {}
        #: Keys of the incidents that may be open, per (model, kind); inactive ones leave it
        #: when next looked at.
        self._open: dict[tuple[str, str], set[str]] = {}
        #: The random key incident ids are drawn from (see the module doc).
        self._secret = uuid.uuid4().bytes
        #: Per signal (model, kind, feature, signal, segment): its rule, its incident's key and
        #: kind, and the key of its own kind's incident when a :data:`CAUSE` moves it (see
        #: :meth:`_route`). Derived from the configuration only; bounded like the rule book's.
        self._routes: dict[tuple[str, str, str | None, str, str | None], _Route] = {}

    # --- observing ----------------------------------------------------------------------------
    def observe(self, o: Observation) -> list[AlertEvent]:
        """One observation; see :meth:`observe_many`."""
        return self.observe_many([o])

    def observe_many(self, observations: Sequence[Observation]) -> list[AlertEvent]:
        """Judge observations (in order) and return the alert events of the transitions.

        Consecutive observations of one model at one event time (a window's signals) update
        their incidents together before any transition is decided.

        Most observations change nothing: one that does not breach, of a signal judged by
        the monitor's own thresholds (a ``calibrated`` rule, whose verdict, if any, breaches
        exactly when the observation does) and of an incident without members (none yet, or
        inactive), is passed over before it is judged, since its verdict would be dropped.
        """
        events: list[AlertEvent] = []
        incidents, routes, scores = self._incidents, self._routes, self._scores
        for run in _runs(observations):
            touched: dict[str, tuple[_Incident, Observation]] = {}
            kinds: dict[str, Observation] = {}
            for o in run:
                own_kind: str = o.kind
                cause = CAUSE.get(own_kind, own_kind)
                kinds.setdefault(cause, o)
                if cause != own_kind:
                    kinds.setdefault(own_kind, o)  # incidents opened before CAUSE grouped it
                if o.signal == MODEL_SCORE and o.feature is None and math.isfinite(o.value):
                    scores[(o.model_id, o.segment)] = float(o.value)
                route = routes.get((o.model_id, own_kind, o.feature, o.signal, o.segment))
                if route is None:
                    route = self._route(o)
                rule, key, inc_kind, own = route
                if own is not None:
                    # An incident of the signal's own kind still open from before the
                    # grouping (a restored snapshot of version 3) keeps its signals until it
                    # resolves.
                    was = incidents.get(own)
                    if was is not None and was.state != "inactive":
                        key, inc_kind = own, own_kind
                inc = incidents.get(key)
                if (
                    not o.breached
                    and rule.mode == "calibrated"
                    and (inc is None or not inc.members)
                ):
                    continue  # its verdict, if any, would not breach: nothing to update
                verdict = self.rules.verdict(rule, o)
                if verdict is None:
                    continue
                if inc is None:
                    if not verdict.breached:
                        continue  # state only for incidents that ever happened: bounded
                    feature = None if self.cfg.group_features else o.feature
                    inc = incidents[key] = _Incident(o.model_id, inc_kind, feature, o.segment)
                if not inc.members and not verdict.breached:
                    continue
                self._update_member(inc, o, verdict)
                inc.model_version = o.model_version
                inc.seen_at = o.observed_at
                touched[key] = (inc, o)
            for key, (inc, o) in touched.items():
                events.extend(self._transition(key, inc, o))
                if inc.state != "inactive":
                    self._open.setdefault((inc.model_id, inc.kind), set()).add(key)
            for kind, o in kinds.items():
                events.extend(self._expire(o.model_id, kind, o, touched))
        return events

    def _route(self, o: Observation) -> _Route:
        """The rule of ``o``'s signal and the incident it speaks about (remembered): the
        incident of its kind's :data:`CAUSE`, unless one of its own kind is still open (looked
        up by :meth:`observe_many` at each observation, from ``own``)."""
        if len(self._routes) >= _ROUTES_SIZE:
            self._routes.clear()
        rule = self.rules.rule_for(o)
        feature = None if self.cfg.group_features else o.feature
        kind = CAUSE.get(o.kind, o.kind)
        own = None
        if kind != o.kind:
            own = dedup_key(o.model_id, o.kind, feature, o.segment, rule.name)
        key = dedup_key(o.model_id, kind, feature, o.segment, rule.name)
        route = self._routes[(o.model_id, o.kind, o.feature, o.signal, o.segment)] = _Route(
            rule, key, kind, own
        )
        return route

    def _expire(
        self, model_id: str, kind: str, o: Observation, touched: dict[str, Any]
    ) -> list[AlertEvent]:
        """Resolve the open incidents of (model, kind) whose signals fell silent."""
        mk = (model_id, kind)
        now = self._now[mk] = max(self._now.get(mk, o.observed_at), o.observed_at)
        keys = self._open.get(mk)
        stale = self.cfg.stale_seconds
        if not keys or stale is None:
            return []
        out: list[AlertEvent] = []
        for key in sorted(keys):
            inc = self._incidents[key]
            if inc.state == "inactive":
                keys.discard(key)
                continue
            if key in touched:
                continue
            if inc.seen_at is None:
                inc.seen_at = now  # none judged yet: start counting
            if now - inc.seen_at <= stale:
                continue
            if inc.firing:
                lead = self._lead(inc)
                out.append(self._event(key, inc, replace(o, observed_at=now), "resolved", lead))
                inc.resolved_at = now
                self.stale_resolved += 1
            inc.state, inc.members, inc.held = "inactive", {}, False
            keys.discard(key)
        return out

    def forget_model(self, model_id: str, now: float) -> list[AlertEvent]:
        """Forget a model that left (idle for ``limits.model_idle_seconds``): its firing
        incidents resolve (at event time ``now``; a page never stays open for a model that
        is gone) and every incident, score and clock of it is dropped."""
        out: list[AlertEvent] = []
        for key in sorted(k for k, inc in self._incidents.items() if inc.model_id == model_id):
            inc = self._incidents.pop(key)
            if inc.firing and inc.members:
                lead = self._lead(inc)
                o = Observation(
                    model_id, inc.kind, lead.feature, lead.signal, lead.value,  # type: ignore[arg-type]
                    lead.threshold, False, True, now, segment=inc.segment,
                )  # fmt: skip
                out.append(self._event(key, inc, o, "resolved", lead))
                self.stale_resolved += 1
        for d in (self._now, self._open):
            for mk in [mk for mk in d if mk[0] == model_id]:
                del d[mk]
        for sk in [sk for sk in self._scores if sk[0] == model_id]:
            del self._scores[sk]
        return out

    @staticmethod
    def _lead(inc: _Incident) -> _Member:
        """The signal that fired the incident (the order signals speak in within an instant
        depends on how batches were cut), else its strongest."""
        return inc.members.get(inc.lead) or min(
            inc.members.values(), key=lambda m: (-m.strength, m.feature or "", m.signal)
        )

    @staticmethod
    def _mid(inc: _Incident, kind: str, feature: str | None, signal: str) -> str:
        """A member's id in its incident (signals of a kind that joined it say their kind)."""
        mid = f"{feature or '-'}/{signal}"
        return mid if kind == inc.kind or not kind else f"{kind}:{mid}"

    @classmethod
    def _update_member(cls, inc: _Incident, o: Observation, v: Verdict) -> None:
        mid = cls._mid(inc, o.kind, o.feature, o.signal)
        m = inc.members.get(mid)
        if m is None:
            m = inc.members[mid] = _Member(o.feature, o.signal, v.rule, kind=o.kind)
        m.rule = v.rule
        m.value, m.threshold, m.strength = float(v.value), float(v.threshold), float(v.strength)
        m.baseline = None if v.baseline is None else float(v.baseline)
        m.window_events = o.window_events
        m.direction = o.direction
        if v.breached:
            m.streak += 1
            if m.since is None:
                m.since = o.observed_at
            m.breached, m.cleared = True, False
        else:
            m.streak, m.since, m.breached = 0, None, False
            if v.cleared:
                m.cleared = True
            # between the two thresholds a member keeps its cleared state (a new one is not)

    def _ready(self, m: _Member, now: float) -> bool:
        if not m.breached or m.since is None:
            return False
        r = self.rules.rule(m.rule)
        return m.streak >= r.for_windows and now - m.since >= r.for_seconds

    def _transition(self, key: str, inc: _Incident, o: Observation) -> list[AlertEvent]:
        now = o.observed_at
        members = inc.members
        if inc.state == "firing":
            if all(m.cleared for m in members.values()):
                ev = self._event(key, inc, o, "resolved", self._lead(inc))
                inc.state, inc.resolved_at = "inactive", now
                inc.members = {}
                return [ev]
            return self._update(key, inc, o)
        ready = [m for m in members.values() if self._ready(m, now)]
        if not ready:
            if any(m.breached for m in members.values()):
                inc.state = "pending"
            else:
                inc.state, inc.members, inc.held = "inactive", {}, False
            return []
        first = max(ready, key=lambda m: (m.strength, m.signal))
        cooldown = self.rules.rule(first.rule).cooldown_seconds
        if cooldown is None:
            cooldown = self.cfg.cooldown_seconds
        if inc.resolved_at is not None and now < inc.resolved_at + cooldown:
            if not inc.held:
                self.suppressed += 1
                inc.held = True
            inc.state = "pending"
            return []
        inc.seq += 1
        inc.state, inc.held, inc.rule = "firing", False, first.rule
        inc.lead = self._mid(inc, first.kind, first.feature, first.signal)
        inc.started_at = min(m.since for m in ready if m.since is not None)
        # The incident is about what breaches now; others join as they speak.
        inc.members = {k: m for k, m in members.items() if m.breached}
        inc.incident_id = self._incident_id(key, inc.seq, inc.started_at)
        inc.severity, inc.updates, inc.updated_at = "", 0, now
        inc.shown = sorted(inc.members)
        return [self._event(key, inc, o, "firing", first)]

    def _incident_id(self, key: str, seq: int, started_at: float | None) -> str:
        """A version-4 UUID for episode ``seq`` of incident ``key`` started at ``started_at``
        (event time: a forgotten model that comes back starts again at episode 1), from the
        tracker's random key: unpredictable and unique, yet the same when a restored tracker
        replays a batch."""
        digest = hashlib.blake2b(
            f"{key}\x00{seq}\x00{started_at!r}".encode(), key=self._secret, digest_size=16
        ).digest()
        return str(uuid.UUID(bytes=digest, version=4))

    @staticmethod
    def _picture(inc: _Incident) -> list[str]:
        """The members that drift now, with hysteresis: a breaching one joins the picture, a
        cleared one leaves it, one between its thresholds stays where it was."""
        shown = set(inc.shown)
        return sorted(
            mid for mid, m in inc.members.items() if m.breached or (mid in shown and not m.cleared)
        )

    @staticmethod
    def _aspects(inc: _Incident, mids: Iterable[str]) -> dict[str, list[_Member]]:
        """What a page says drifts: the features, and the kinds of signals (another statistic
        of a feature already listed is no news), with the members behind each."""
        out: dict[str, list[_Member]] = {}
        for mid in mids:
            m = inc.members.get(mid)
            if m is None:
                continue
            if m.feature is not None:
                out.setdefault(m.feature, []).append(m)
            out.setdefault(_ASPECT.get(m.kind or inc.kind, m.kind), []).append(m)
        return out

    def _update(self, key: str, inc: _Incident, o: Observation) -> list[AlertEvent]:
        """An ``updated`` event when the features or kinds of signals a firing incident lists
        changed, and the rate limit allows one."""
        interval = self.cfg.update_interval_seconds
        if interval is None:
            return []
        picture = self._picture(inc)
        if picture == inc.shown:
            return []
        now_aspects = self._aspects(inc, picture)
        was_aspects = self._aspects(inc, inc.shown)
        if now_aspects.keys() == was_aspects.keys():
            inc.shown = picture  # another statistic of the same features: no news
            return []
        now = o.observed_at
        if inc.updated_at is not None and now - inc.updated_at < interval:
            return []  # held: the next update (if the change lasts) tells it
        joined = [a for a in now_aspects if a not in was_aspects]
        left = [a for a in was_aspects if a not in now_aspects]
        pool = [m for a in joined for m in now_aspects[a]]
        pool = pool or [inc.members[k] for k in picture] or list(inc.members.values())
        lead = max(pool, key=lambda m: (m.strength, m.signal))
        inc.updates += 1
        inc.updated_at = now
        inc.shown = picture
        return [self._event(key, inc, o, "updated", lead, (joined, left))]

    # --- events -------------------------------------------------------------------------------
    def _severity(self, inc: _Incident) -> Severity:
        """The rule's severity, else the highest of the kinds of the incident's signals; it
        only rises while the incident fires (its page keeps the same labels)."""
        rule = self.rules.rule(inc.rule)
        if rule.severity:
            return rule.severity
        kinds = {inc.kind, *(m.kind for m in inc.members.values() if m.kind)}
        best = max((SEVERITY[k] for k in kinds if k in SEVERITY), key=_SEVERITY_RANK.__getitem__)
        if inc.severity in _SEVERITY_RANK and _SEVERITY_RANK[inc.severity] > _SEVERITY_RANK[best]:
            return inc.severity  # type: ignore[return-value]
        return best

    def _event(
        self,
        key: str,
        inc: _Incident,
        o: Observation,
        status: str,
        lead: _Member,
        change: tuple[list[str], list[str]] | None = None,
    ) -> AlertEvent:
        rule = self.rules.rule(inc.rule)
        ranked = sorted(inc.members.values(), key=lambda m: (not m.breached, -m.strength, m.signal))
        if status != "resolved":
            # What drifts now first: an updated event lists the cleared signals last.
            shown = set(inc.shown)
            ranked.sort(key=lambda m: self._mid(inc, m.kind, m.feature, m.signal) not in shown)
        features: list[str] = []
        for m in ranked:
            drifting = status == "resolved" or not m.cleared
            if m.feature is not None and m.feature not in features and drifting:
                features.append(m.feature)
        score = self._scores.get((inc.model_id, inc.segment))
        if status == "resolved" and inc.severity:
            severity: Severity = inc.severity  # type: ignore[assignment]
        else:
            severity = inc.severity = self._severity(inc)
        action = rule.action or _suggest(inc.kind, lead.signal, score)
        silent = None
        if status == "resolved" and inc.seen_at is not None and o.observed_at > inc.seen_at:
            silent = o.observed_at - inc.seen_at
        summary = self._summary(inc, status, lead, ranked, features, score, action, silent, change)
        incident_id = inc.incident_id or self._incident_id(key, inc.seq, inc.started_at)
        inc.incident_id = incident_id
        alert_id = uuid.uuid5(uuid.UUID(incident_id), f"{status}|{inc.updates}")
        return AlertEvent(
            alert_id=str(alert_id),
            incident_id=incident_id,
            dedup_key=key,
            status=status,  # type: ignore[arg-type]
            severity=severity,
            priority=PRIORITY[severity],  # type: ignore[arg-type]
            model_id=inc.model_id,
            model_version=inc.model_version,
            kind=inc.kind,  # type: ignore[arg-type]
            feature=lead.feature,
            segment=inc.segment,
            signal=lead.signal,
            value=lead.value,
            threshold=lead.threshold,
            baseline=lead.baseline,
            summary=summary,
            window_events=lead.window_events,
            window=self.windows.get(lead.kind or inc.kind),
            rule=inc.rule,
            labels=dict(rule.labels),
            signals=[
                AlertSignal(
                    feature=m.feature,
                    signal=m.signal,
                    kind=(m.kind or inc.kind),  # type: ignore[arg-type]
                    value=m.value,
                    threshold=m.threshold,
                    baseline=m.baseline,
                    breached=m.breached,
                )
                for m in ranked[: self.cfg.max_signals]
            ],
            signals_total=len(ranked),
            top_features=features[: self.cfg.max_signals],
            model_drift_score=score,
            suggested_action=action,
            retrain=rule.retrain and status == "firing",
            started_at=inc.started_at,
            observed_at=o.observed_at,
        )

    @staticmethod
    def _summary(
        inc: _Incident,
        status: str,
        lead: _Member,
        ranked: list[_Member],
        features: list[str],
        score: float | None,
        action: SuggestedAction,
        silent: float | None = None,
        change: tuple[list[str], list[str]] | None = None,
    ) -> str:
        kind = lead.kind or inc.kind
        if inc.feature is not None or (len(features) == 1 and lead.feature is not None):
            feature = features[0] if features else inc.feature
            what = _WHAT[kind].format(feature=feature, model=inc.model_id)
        else:
            what = _WHAT_MODEL[kind].format(model=inc.model_id)
        if inc.segment is not None:
            what = f"{what} in segment {inc.segment}"
        what = what[0].upper() + what[1:]
        if status == "resolved" and silent is not None:
            return (
                f"Resolved: {what}; none of its signals was judged for {_span(silent)} of event"
                f" time (last {lead.signal}: {lead.value:.4g})."
            )
        direction = _direction(lead, ranked)
        if status == "resolved":
            back = f"{lead.signal} is {lead.value:.4g}"
            how = "Resolved: back to the reference. " if direction == "back" else "Resolved: "
            return f"{how}{what}, and every signal is back ({back})."
        parts = [what if status == "firing" else f"Updated: {what}"]
        if change is not None:
            joined, left = change
            if joined:
                parts.append("now also " + ", ".join(joined[:5]))
            if left:
                parts.append("back to normal: " + ", ".join(left[:5]))
        if len(features) > 1:
            shown = ", ".join(features[:5]) + (", ..." if len(features) > 5 else "")
            parts.append(f"{len(features)} features ({shown})")
        on = f" of {lead.feature}" if lead.feature and len(features) != 1 else ""
        if lead.signal == "change_detectors":
            parts.append(f"{lead.value:.0f} change detectors agree{on}")
        else:
            past = "below" if lead.value < lead.threshold else "above"
            parts.append(
                f"{lead.signal}{on} is {lead.value:.4g}, {past} its threshold {lead.threshold:.4g}"
                + (f" over the last {lead.window_events} events" if lead.window_events else "")
            )
        others = [m for m in ranked if m.breached and (m.kind or inc.kind) != kind]
        if others:  # the other kinds of signals of one root cause (CAUSE)
            parts.append(
                "also "
                + ", ".join(
                    f"{m.signal} {m.value:.4g} (threshold {m.threshold:.4g})" for m in others[:3]
                )
            )
        if score and inc.kind == "data_drift":  # 0 is a previous window's: no news
            parts.append(f"model drift score {score:.2f}")
        if direction is not None:
            parts.append(_DIRECTION_TEXT[direction])
        return "; ".join(parts) + f". Suggested action: {_ACTION_TEXT[action]}."

    # --- state --------------------------------------------------------------------------------
    def firing(self) -> list[tuple[str, str, str | None]]:
        """(model_id, kind, feature) of the whole-model incidents firing now: one per kind of
        signals and feature still drifting in a group (feature None for model-level
        signals)."""
        return [(m, k, f) for m, k, f, s in self._firing() if s is None]

    def firing_segments(self) -> list[tuple[str, str, str | None, str]]:
        """(model_id, kind, feature, segment) of the segment incidents firing now."""
        return [(m, k, f, s) for m, k, f, s in self._firing() if s is not None]

    def _firing(self) -> Iterator[tuple[str, str, str | None, str | None]]:
        """Per firing incident, the kinds of its signals still drifting (a performance
        incident's concept-drift signals say ``concept_drift``, as before :data:`CAUSE`), and
        per kind the features (None for model-level signals)."""
        for i in self._incidents.values():
            if not i.firing:
                continue
            if i.feature is not None:
                yield i.model_id, i.kind, i.feature, i.segment
                continue
            live = [m for m in i.members.values() if not m.cleared]
            for kind in sorted({m.kind or i.kind for m in live}) or [i.kind]:
                features = sorted(
                    {
                        m.feature
                        for m in live
                        if (m.kind or i.kind) == kind and m.feature is not None
                    }
                )
                if not features:
                    yield i.model_id, kind, None, i.segment
                for f in features:
                    yield i.model_id, kind, f, i.segment

    def states(self) -> Counter[tuple[str, str, str]]:
        """Incidents pending and firing now, by (state, kind, severity)."""
        out: Counter[tuple[str, str, str]] = Counter()
        for i in self._incidents.values():
            if i.state != "inactive":
                out[(i.state, i.kind, self._severity(i))] += 1
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "secret": self._secret.hex(),
            "incidents": {
                k: [
                    i.model_id,
                    i.kind,
                    i.feature,
                    i.segment,
                    i.seq,
                    i.state,
                    i.started_at,
                    i.resolved_at,
                    i.rule,
                    i.model_version,
                    i.held,
                    [m.row() for m in i.members.values()],
                    i.lead,
                    i.seen_at,
                    i.incident_id,
                    i.severity,
                    i.updates,
                    i.updated_at,
                    list(i.shown),
                ]
                for k, i in self._incidents.items()
            },
            "scores": [[m, s, v] for (m, s), v in self._scores.items()],
            "suppressed": self.suppressed,
            "stale_resolved": self.stale_resolved,
            "now": [[m, k, t] for (m, k), t in self._now.items()],
        }

    @classmethod
    def from_snapshot(
        cls,
        d: dict[str, Any],
        cfg: AlertsConfig | None = None,
        windows: dict[str, str] | None = None,
    ) -> AlertTracker:
        """A tracker from :meth:`snapshot`. Version 3 (before incident ids) is upgraded: its
        firing incidents get an id now (from a new random key) and keep their dedup keys, so
        their ``resolved`` event finds their page; anything else raises ValueError."""
        t = cls(cfg, windows)
        v = d.get("v")
        if v not in _READABLE_VERSIONS:
            raise ValueError(f"unsupported alert-tracker snapshot version {v!r}")
        if v != 3:
            secret = bytes.fromhex(d["secret"])
            if len(secret) != 16:
                raise ValueError("alert-tracker snapshot: bad secret")
            t._secret = secret
        for k, row in d["incidents"].items():
            model_id, kind, feature, segment, seq, state, started, resolved = row[:8]
            rule, version, held, members, lead, seen_at = row[8:14]
            inc = _Incident(
                model_id, kind, feature, segment, seq, state, started, resolved, rule, version
            )
            inc.held, inc.lead, inc.seen_at = held, lead, seen_at
            for r in members:
                m = _Member(*r)
                m.kind = m.kind or kind  # version 3 rows have no kind: the incident's
                inc.members[t._mid(inc, m.kind, m.feature, m.signal)] = m
            if v != 3:
                inc.incident_id, inc.severity, inc.updates, inc.updated_at = row[14:18]
                inc.shown = [str(x) for x in row[18]]
            elif state == "firing":
                inc.incident_id = t._incident_id(k, int(seq), inc.started_at)
                inc.updated_at = started
                inc.shown = sorted(m for m, x in inc.members.items() if not x.cleared)
            t._incidents[k] = inc
            if state != "inactive":
                t._open.setdefault((model_id, kind), set()).add(k)
        t._scores = {(m, s): v for m, s, v in d["scores"]}
        t.suppressed = int(d["suppressed"])
        t.stale_resolved = int(d["stale_resolved"])
        t._now = {(m, k): float(v) for m, k, v in d["now"]}
        return t


def _suggest(kind: str, signal: str, score: float | None) -> SuggestedAction:
    """What a responder should try first, when the rule does not say."""
    if signal in _VERSION_SIGNALS:
        return "roll_back"
    if signal in _FAIRNESS_SIGNALS:
        return "investigate"
    if kind == "data_quality":
        return "investigate_data_pipeline"
    if kind == "data_drift":
        # Many inputs moving at once is the world changing; one or two, more often a pipeline.
        return "retrain" if score is not None and score >= 0.5 else "investigate_data_pipeline"
    if kind in ("concept_drift", "performance"):
        return "retrain"
    return "investigate"


_DIRECTION_TEXT = {
    "away": "moving away from the reference",
    "back": "moving back to the reference",
}


def _direction(lead: _Member, ranked: list[_Member]) -> str | None:
    """Which way the incident moves: its lead signal's last direction, else that of the
    others that judged one (away from the reference if any of them says so), else None.

    >>> m = _Member("age", "psi", "default")
    >>> _direction(m, [m]), _direction(replace(m, direction="back"), [m])
    (None, 'back')
    >>> _direction(m, [m, replace(m, direction="back"), replace(m, direction="away")])
    'away'
    """
    if lead.direction is not None:
        return lead.direction
    said = {m.direction for m in ranked if m.direction is not None}
    if "away" in said:
        return "away"
    return "back" if said else None


def _span(seconds: float) -> str:
    """A duration for people: ``_span(90000)`` is ``'1.0 days'``."""
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _runs(observations: Iterable[Observation]) -> Iterator[list[Observation]]:
    """Consecutive observations of one model at one event time."""
    run: list[Observation] = []
    for o in observations:
        if run and (o.model_id != run[0].model_id or o.observed_at != run[0].observed_at):
            yield run
            run = []
        run.append(o)
    if run:
        yield run
