"""What a backtest records: bounded series of observations, and incidents from alert events.

:class:`SeriesRecorder` (the observer of every replayed ``PartitionState``) keeps bounded
:class:`Series` per signal; :class:`IncidentLog` rebuilds :class:`Incident` objects (firing ->
resolved, with the peak of their signal) from the alert events. The pipeline state
(:mod:`stream_monitor.backtest.state`) feeds them and the report
(:mod:`stream_monitor.backtest.report`) reads them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from stream_monitor.alerts.observation import Observation
from stream_monitor.events.schema import AlertEvent

__all__ = [
    "DEFAULT_SERIES_CAP",
    "Incident",
    "IncidentLog",
    "Scope",
    "Series",
    "SeriesKey",
    "SeriesRecorder",
]

#: Points kept per observation series (model, kind, feature, segment, signal).
DEFAULT_SERIES_CAP = 2000

#: (model_id, kind, feature, segment, signal)
SeriesKey = tuple[str, str, str | None, str | None, str]
#: (model_id, kind, feature, segment): the series of one feature (or model-level signals).
Scope = tuple[str, str, str | None, str | None]


# --- observations -------------------------------------------------------------------------------
@dataclass(slots=True)
class Series:
    """One signal's observations over event time, decimated to at most ``cap`` points.

    Every ``stride``-th observation is kept, and ``stride`` doubles whenever the series is
    full (older points are thinned to match), so the points stay spread over the whole
    replay. Breached observations are kept besides; only if they alone would fill more than
    half the series (a signal breached for most of the replay) are they thinned the same way.
    Counts, maxima and the time span are exact whatever was dropped.
    """

    key: SeriesKey
    cap: int = DEFAULT_SERIES_CAP
    stride: int = 1
    breach_stride: int = 1
    #: Observations and breached observations seen.
    n: int = 0
    n_breached: int = 0
    #: Kept points: (index, breach index or -1, observed_at, value, threshold).
    points: list[tuple[int, int, float, float, float]] = field(default_factory=list)
    first_at: float = math.inf
    last_at: float = -math.inf
    max_value: float = -math.inf
    #: Largest value / threshold and threshold / value (the signal's direction picks one).
    max_up: float = -math.inf
    max_down: float = -math.inf
    #: +1 when larger values are worse, -1 when smaller are, 0 while unknown.
    direction: int = 0

    def add(self, o: Observation) -> None:
        i = self.n
        self.n += 1
        v, thr, t = float(o.value), float(o.threshold), float(o.observed_at)
        self.first_at = min(self.first_at, t)
        self.last_at = max(self.last_at, t)
        if math.isfinite(v):
            self.max_value = max(self.max_value, v)
            if thr > 0:
                self.max_up = max(self.max_up, v / thr)
                if v > 0:
                    self.max_down = max(self.max_down, thr / v)
        if v != thr and (o.breached or (o.cleared and self.direction == 0)):
            # A breach says which side is bad; a cleared value sits on the good side.
            up = v > thr
            self.direction = (1 if up else -1) if o.breached else (-1 if up else 1)
        if o.breached:
            b = self.n_breached
            self.n_breached += 1
            if b % self.breach_stride == 0:
                self.points.append((i, b, t, v, thr))
        elif i % self.stride == 0:
            self.points.append((i, -1, t, v, thr))
        if len(self.points) > self.cap:
            self._thin()

    def _thin(self) -> None:
        while len(self.points) > self.cap:
            breached = sum(1 for p in self.points if p[1] >= 0)
            if breached > self.cap // 2:
                self.breach_stride *= 2
                s = self.breach_stride
                self.points = [p for p in self.points if p[1] < 0 or p[1] % s == 0]
            else:
                self.stride *= 2
                s = self.stride
                self.points = [p for p in self.points if p[1] >= 0 or p[0] % s == 0]

    @property
    def ratio(self) -> float:
        """How close the signal came to (or how far past) its threshold at worst: 1 = at it."""
        r = self.max_down if self.direction < 0 else self.max_up
        return r if math.isfinite(r) else 0.0


class SeriesRecorder:
    """The observer set on every replayed ``PartitionState``: bounded series per signal.

    It also buffers the observations of the current ``process`` call, for :class:`IncidentLog`.

    >>> rec = SeriesRecorder(cap=8)
    >>> for i in range(1000):
    ...     rec(Observation("m", "data_drift", "x", "psi", i % 7 / 10, 0.25, i % 7 > 2,
    ...                     i % 7 < 2, float(i)))
    >>> s = rec.series[("m", "data_drift", "x", None, "psi")]
    >>> s.n, len(s.points) <= 8, s.max_value, s.direction
    (1000, True, 0.6, 1)
    """

    def __init__(self, cap: int = DEFAULT_SERIES_CAP) -> None:
        if cap < 4:
            raise ValueError(f"cap must be >= 4, got {cap}")
        self.cap = cap
        self.series: dict[SeriesKey, Series] = {}
        self._batch: list[Observation] = []

    def __call__(self, o: Observation) -> None:
        key: SeriesKey = (o.model_id, o.kind, o.feature, o.segment, o.signal)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = Series(key, self.cap)
        s.add(o)
        self._batch.append(o)

    def take_batch(self) -> list[Observation]:
        out, self._batch = self._batch, []
        return out


@dataclass(slots=True)
class Incident:
    """One incident as its alert events tell it: firing, then resolved (or still firing)."""

    dedup_key: str
    model_id: str
    kind: str
    segment: str | None
    severity: str
    #: The feature and signal of the firing transition, and the largest value that signal
    #: took while the incident was open.
    feature: str | None
    signal: str
    threshold: float
    started_at: float
    peak: float
    resolved_at: float | None = None
    #: Features the alert events named for the incident (its own, its signals' and its top
    #: features); None stands for model-level signals.
    features: set[str | None] = field(default_factory=set)
    #: The kinds of its signals (a performance incident lists its concept-drift signals).
    kinds: set[str] = field(default_factory=set)
    #: The kind of the firing signal's series (``kind`` unless another kind's signal fired it).
    signal_kind: str = ""

    @property
    def scopes(self) -> set[Scope]:
        """(model, kind, feature, segment) of the series that belong to this incident: every
        signal of every feature it named."""
        kinds = self.kinds | {self.kind}
        return {(self.model_id, k, f, self.segment) for k in kinds for f in self.features}


def _features(a: AlertEvent) -> set[str | None]:
    out: set[str | None] = {a.feature}
    for s in getattr(a, "signals", None) or ():
        out.add(s.feature)
    out.update(getattr(a, "top_features", None) or ())
    return out


def _kinds(a: AlertEvent) -> set[str]:
    return {a.kind, *(s.kind for s in a.signals if s.kind)}


def _series_key(a: AlertEvent) -> SeriesKey:
    """The series of the signal that made the transition (its own kind, from ``signals``)."""
    kind: str = a.kind
    for s in a.signals:
        if s.feature == a.feature and s.signal == a.signal and s.kind:
            kind = s.kind
            break
    return (a.model_id, kind, a.feature, a.segment, a.signal)


class IncidentLog:
    """Rebuilds incidents (by dedup key) from alert events, with the peak of the firing signal.

    ``feed`` takes one ``PartitionState.process`` call's observations (in the order the alert
    tracker judged them) and the alert events it returned; each event is matched to the
    observation of its signal at its event time, so the peak covers the observations between
    firing and resolving. An event that matches no observation is applied after the call's
    observations.
    """

    def __init__(self) -> None:
        self.incidents: list[Incident] = []
        self.open: dict[str, Incident] = {}
        #: Open incidents by the series of their firing signal, for the peaks.
        self._peaks: dict[SeriesKey, Incident] = {}

    def feed(self, observations: Sequence[Observation], alerts: Sequence[AlertEvent]) -> None:
        pending: dict[SeriesKey, deque[AlertEvent]] = {}
        for a in alerts:
            pending.setdefault(_series_key(a), deque()).append(a)
        for o in observations:
            key: SeriesKey = (o.model_id, o.kind, o.feature, o.segment, o.signal)
            q = pending.get(key) if pending else None
            if q and q[0].observed_at == o.observed_at:
                self._apply(q.popleft())
                continue
            inc = self._peaks.get(key)
            if inc is not None and math.isfinite(o.value):
                inc.peak = max(inc.peak, o.value)
        for q in pending.values():
            for a in q:
                self._apply(a)

    def _apply(self, a: AlertEvent) -> None:
        if a.status == "updated":  # the open incident's signals changed: it goes on
            upd = self.open.get(a.dedup_key)
            if upd is not None:
                upd.features |= _features(a)
                upd.kinds |= _kinds(a)
            return
        if a.status == "firing":
            old = self.open.pop(a.dedup_key, None)
            if old is not None:  # firing twice without resolving: close the first here
                old.resolved_at = a.observed_at
                self._forget(old)
            inc = Incident(
                dedup_key=a.dedup_key,
                model_id=a.model_id,
                kind=a.kind,
                segment=a.segment,
                severity=a.severity,
                feature=a.feature,
                signal=a.signal,
                threshold=a.threshold,
                started_at=a.started_at,
                peak=a.value,
                features=_features(a),
                kinds=_kinds(a),
                signal_kind=_series_key(a)[1],
            )
            self.incidents.append(inc)
            self.open[a.dedup_key] = inc
            self._peaks[_series_key(a)] = inc
        else:
            done = self.open.pop(a.dedup_key, None)
            if done is not None:
                done.resolved_at = a.observed_at
                done.features |= _features(a)
                done.kinds |= _kinds(a)
                self._forget(done)

    def _forget(self, inc: Incident) -> None:
        kind = inc.signal_kind or inc.kind
        key = (inc.model_id, kind, inc.feature, inc.segment, inc.signal)
        if self._peaks.get(key) is inc:
            del self._peaks[key]
