"""The state of one input partition: its models, its label join and its alert incidents.

Predictions and labels are keyed by model_id and co-partitioned, so everything about a model
lives in exactly one ``PartitionState``. It takes decoded events and returns alert events; it
does no I/O, reads no clock and is snapshot-able as plain JSON-compatible data.
"""

from __future__ import annotations

import heapq
import logging
import operator
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from stream_monitor.alerts.observation import Observation
from stream_monitor.alerts.tracker import AlertTracker
from stream_monitor.config import MonitorConfig
from stream_monitor.events.decode import ModelBatches
from stream_monitor.events.live import AnyLabel, AnyPrediction, Scored
from stream_monitor.events.outputs import EventColumns, event_columns
from stream_monitor.events.schema import (
    AlertEvent,
    ScoredPrediction,
    label_str,
)
from stream_monitor.monitor.join import FUTURE_CONFIRM, EarlyLabels, LabelJoin, PendingPrediction
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.reference.profile import Profile

__all__ = ["Failure", "PartitionState"]

log = logging.getLogger(__name__)

#: 2: ``labels_behind``; 3: ``models_forgotten``.
SNAPSHOT_VERSION = 3
REFUSED_MEMORY = 1000


class Failure(NamedTuple):
    """Events of one model whose processing raised, and the exception."""

    events: list[Any]
    error: Exception


class PartitionState:
    """Monitors the models of one partition.

    An exception while one model processes its part of a batch does not stop the others: its
    events are kept, with the exception, for :meth:`take_failures` (the application sends them
    to the dead-letter topic with reason ``processing_error``); the model goes on with the next
    batch.

    Examples
    --------
    >>> from stream_monitor.config import MonitorConfig
    >>> from stream_monitor.events.schema import PredictionEvent
    >>> st = PartitionState(0, MonitorConfig(bootstrap_servers="unused:9092"))
    >>> ev = PredictionEvent(event_id="1", model_id="m", timestamp=1.0,
    ...                      features={"x": 0.5}, prediction=0.1)
    >>> st.process([ev], [])
    []
    >>> list(st.models), st.models["m"].n_events
    (['m'], 1)
    """

    def __init__(
        self,
        partition: int,
        cfg: MonitorConfig,
        profiles: Mapping[tuple[str, str | None], Profile] | None = None,
    ) -> None:
        self.partition = partition
        self.cfg = cfg
        #: Reference profiles by (model_id, model_version); version None matches any version.
        self.profiles = profiles or {}
        self.models: dict[str, ModelMonitor] = {}
        lab = cfg.labels
        self.join = LabelJoin(
            lab.capacity,
            lab.ttl_seconds,
            overrides={m: (c.ttl_seconds, c.capacity) for m, c in lab.models.items()},
            max_future_seconds=lab.max_future_seconds,
        )
        self.early = EarlyLabels(
            lab.early_capacity, lab.early_grace_seconds, max_future_seconds=lab.max_future_seconds
        )
        self.tracker = AlertTracker(cfg.alerts, windows=describe_windows(cfg))
        #: Distinct refused model ids, remembered up to ``REFUSED_MEMORY`` (bounded).
        self._refused_models: set[str] = set()
        self.events_refused = 0
        #: The partition's event-time clock (see :meth:`_forget_idle`; derived, not state),
        #: and the models forgotten for being idle.
        self.clock = float("-inf")
        self.models_forgotten = 0
        #: Labels that found no waiting prediction and were more than the early labels'
        #: grace behind their model's prediction watermark: counted unmatched at once.
        self.labels_behind = 0
        #: Called with every observation before the alert rules see it (the backtest report
        #: plots them); not part of the state.
        self.observer: Callable[[Observation], None] | None = None
        #: Events whose processing raised, with the exception, until :meth:`take_failures`.
        self._failures: list[Failure] = []

    def process(
        self,
        predictions: Sequence[AnyPrediction],
        labels: Sequence[AnyLabel],
        decoded: ModelBatches | None = None,
    ) -> list[AlertEvent]:
        """Feed one batch (predictions first, then labels); return the alert events it causes.

        ``decoded``: the predictions as :func:`~stream_monitor.events.decode.decode_by_model`
        gave them (grouped by model, with the columns of some), when the caller decoded them
        so; ``predictions`` holds the same events then.

        Never raises on data: what failed is kept for :meth:`take_failures` (one model's
        events, or the whole batch if the failure was outside any one model)."""
        n = len(self._failures)
        try:
            return self._process(predictions, labels, decoded)
        except Exception as exc:
            del self._failures[n:]  # the whole batch covers a model's failure of it too
            self._failures.append(Failure([*predictions, *labels], exc))
            return []

    def _process(
        self,
        predictions: Sequence[AnyPrediction],
        labels: Sequence[AnyLabel],
        decoded: ModelBatches | None = None,
    ) -> list[AlertEvent]:
        # Per model: the observations of its predictions, and of its labels.
        seen: dict[str, list[Observation]] = {}
        labelled_obs: dict[str, list[Observation]] = {}
        joined: dict[str, list[tuple[PendingPrediction, Any]]] = {}
        #: When each joined pair was completed: its label's event time, or its prediction's
        #: when the label was read first.
        joined_at: dict[str, list[float]] = {}
        #: Predictions of this batch that met a label read in an earlier one.
        met_early: dict[str, list[AnyPrediction]] = {}
        if decoded is None:
            by_model, given = _group(predictions), {}
        else:
            by_model, given = decoded.by_model, decoded.columns
        for model_id, events in by_model.items():
            model = self._model(model_id, events[0].model_version)
            if model is None:
                self.events_refused += len(events)
                continue
            try:
                seen[model_id] = model.update(events, given.get(model_id))
                columns, model.last_columns = model.last_columns, None
                self._join_predictions(
                    model_id, events, model.last_routes, joined, joined_at, met_early, columns
                )
            except Exception as exc:  # one model's failure must not stop the others
                self._failures.append(Failure(list(events), exc))
        early, join = self.early, self.join
        if predictions and len(early):
            early.expire_behind(join.model_watermark)
        # Matching leaves the join's watermarks as they are and touches neither the early
        # labels nor the unmatched counts, so the labels that found nothing are handled after
        # all the matches, in order, with the same outcome as one at a time.
        found_all = join.match_many(map(_LABEL_KEY, labels))
        # Per model, in order: the labels read in this batch that joined, and their predictions.
        labelled: dict[str, tuple[list[AnyLabel], list[PendingPrediction]]] = {}
        for lab, found in zip(labels, found_all, strict=True):
            if found is None:
                model_id = lab.model_id
                wm = join.model_watermark(model_id)
                if wm is not None and lab.timestamp < wm - early.grace_seconds:
                    # Its prediction was read long ago and left the join (evicted, expired):
                    # waiting among the early labels could only fill them up.
                    join.count_unmatched(model_id)
                    self.labels_behind += 1
                else:
                    early.add(model_id, lab.event_id, lab.timestamp, lab.label)
                continue
            hits = labelled.get(lab.model_id)
            if hits is None:
                hits = labelled[lab.model_id] = ([], [])
            hits[0].append(lab)
            hits[1].append(found)
        for model_id, (labs, founds) in labelled.items():  # after any pairs met early
            joined.setdefault(model_id, []).extend(zip(founds, map(_LABEL, labs), strict=True))
            joined_at.setdefault(model_id, []).extend(map(_TIMESTAMP, labs))
        for model_id, pairs in joined.items():
            model = self.models.get(model_id)
            if model is not None:
                try:
                    labelled_obs[model_id] = model.update_errors(pairs, joined_at[model_id])
                except Exception as exc:
                    # The labels read in this batch that joined, and the predictions of this
                    # batch that met a label read earlier (whose record is committed).
                    labs = labelled[model_id][0] if model_id in labelled else []
                    involved = [*labs, *met_early.get(model_id, [])]
                    self._failures.append(Failure(involved, exc))
        observations = _interleave(seen, labelled_obs)
        if self.observer is not None:
            for o in observations:
                self.observer(o)
        alerts = self.tracker.observe_many(observations)
        if predictions:
            alerts.extend(self._forget_idle())
        return alerts

    def _forget_idle(self) -> list[AlertEvent]:
        """Forget the models idle for ``limits.model_idle_seconds`` on the partition's clock:
        the newest of the label join's per-model watermarks (a model's does not follow a
        lone jump of event time, see ``LabelJoin``) among models with at least
        ``FUTURE_CONFIRM`` events (one event of a new model with a wrong clock does not move
        it either)."""
        idle = self.cfg.limits.model_idle_seconds
        if idle is None:
            return []
        marks = [
            wm
            for m, mon in self.models.items()
            if mon.n_events >= FUTURE_CONFIRM and (wm := self.join.model_watermark(m)) is not None
        ]
        self.clock = max(marks, default=self.clock)
        horizon = self.clock - idle
        gone = [m for m, mon in self.models.items() if mon.last_event_time < horizon]
        out: list[AlertEvent] = []
        for m in gone:
            del self.models[m]
            waiting = self.join.forget_model(m)
            out.extend(self.tracker.forget_model(m, self.clock))
            self.models_forgotten += 1
            log.info(
                "forgot model=%s partition=%d: no prediction for more than %.0f s of event time "
                "(%d predictions were awaiting labels)",
                m,
                self.partition,
                idle,
                waiting,
            )
        return out

    def take_failures(self) -> list[Failure]:
        """The events whose processing raised since the last call (each with its exception),
        for the caller to dead-letter: the rest of their batch was processed."""
        out, self._failures = self._failures, []
        return out

    def _join_predictions(
        self,
        model_id: str,
        events: Sequence[AnyPrediction],
        routes: Sequence[tuple[str, ...] | None] | None,
        joined: dict[str, list[tuple[PendingPrediction, Any]]],
        joined_at: dict[str, list[float]],
        met_early: dict[str, list[AnyPrediction]],
        columns: EventColumns | None = None,
    ) -> None:
        """Predictions of one model into the label join, or straight to ``joined`` when their
        label was read first (in event order: runs between such events go in as one batch).
        ``columns``: the events' ``event_columns``, when the model read them."""
        if columns is None:
            columns = event_columns(events)
        ids = columns.event_ids
        early = self.early.take_many(model_id, ids) if self.early else {}
        if not early:  # the usual case: every prediction waits, in one batch, by columns
            n = len(events)
            segs = [None] * n if routes is None else [r or None for r in routes]
            times = columns.timestamps
            fields = (times, columns.labels, columns.scores, columns.model_versions, segs)
            waiting = list(map(PendingPrediction, *fields))  # the columns are of length n
            self.join.add_columns(
                model_id, ids, waiting, newest=max(times) if n else None, columns=fields
            )
            return
        rows: list[tuple[str, PendingPrediction]] = []
        for i, e in enumerate(events):
            label, score = _outputs(e)
            segments = routes[i] if routes is not None and routes[i] else None
            pending = PendingPrediction(e.timestamp, label, score, e.model_version, segments)
            hit = early.get(i) if early else None
            if hit is None:
                rows.append((e.event_id, pending))
                continue
            if rows:  # keep the order of the join's operations
                self.join.add_predictions(model_id, rows)
                rows = []
            label_ts, true_label = hit
            self.join.count_early_match(model_id, e.timestamp, label_ts)
            joined.setdefault(model_id, []).append((pending, true_label))
            joined_at.setdefault(model_id, []).append(e.timestamp)
            met_early.setdefault(model_id, []).append(e)
        if rows:
            self.join.add_predictions(model_id, rows)

    def _model(self, model_id: str, version: str | None) -> ModelMonitor | None:
        model = self.models.get(model_id)
        if model is None:
            if len(self.models) >= self.cfg.limits.max_models_per_partition:
                if len(self._refused_models) < REFUSED_MEMORY:
                    self._refused_models.add(model_id)
                return None
            profile = self._profile(model_id, version)
            model = self.models[model_id] = ModelMonitor(model_id, self.cfg, profile)
        return model

    def _profile(self, model_id: str, version: str | None) -> Profile | None:
        return self.profiles.get((model_id, version)) or self.profiles.get((model_id, None))

    @property
    def unmatched_labels(self) -> int:
        """Labels that never met their prediction (expired or evicted while waiting)."""
        return self.join.unmatched_labels + self.early.expired + self.early.evicted

    @property
    def models_refused(self) -> int:
        """How many distinct models the cap refused (exact up to ``REFUSED_MEMORY``)."""
        return len(self._refused_models)

    def snapshot(self, *, join: bool = True) -> dict[str, Any]:
        """JSON-able state; without the label join's waiting predictions (``"join": None``)
        when ``join`` is false: the state to rewind to after an aborted transaction, whose
        join goes back by its own undo journal (:meth:`LabelJoin.mark`)."""
        return {
            "v": SNAPSHOT_VERSION,
            "partition": self.partition,
            "models": [m.snapshot() for m in self.models.values()],
            "join": self.join.snapshot() if join else None,
            "early": self.early.snapshot(),
            "tracker": self.tracker.snapshot(),
            "refused_models": sorted(self._refused_models),
            "events_refused": self.events_refused,
            "labels_behind": self.labels_behind,
            "models_forgotten": self.models_forgotten,
        }

    @classmethod
    def from_snapshot(
        cls,
        d: dict[str, Any],
        cfg: MonitorConfig,
        profiles: Mapping[tuple[str, str | None], Profile] | None = None,
        join: LabelJoin | None = None,
    ) -> PartitionState:
        """Rebuild from :meth:`snapshot`; models already in the snapshot keep the reference
        they had (a profile applies to models first seen after it was configured). A snapshot
        taken without the join takes ``join`` (already rewound) instead."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported partition snapshot version {d.get('v')!r}")
        st = cls(d["partition"], cfg, profiles)
        st.models = {
            m["model_id"]: ModelMonitor.from_snapshot(m, cfg, st._profile(m["model_id"], None))
            for m in d["models"]
        }
        if d["join"] is not None:
            st.join = LabelJoin.from_snapshot(d["join"])
        elif join is not None:
            st.join = join
        else:
            raise ValueError("partition snapshot without its label join, and no join given")
        st.early = EarlyLabels.from_snapshot(d["early"])
        st.tracker = AlertTracker.from_snapshot(d["tracker"], cfg.alerts, describe_windows(cfg))
        st._refused_models = set(d["refused_models"])
        st.events_refused = d["events_refused"]
        st.labels_behind = d["labels_behind"]
        st.models_forgotten = int(d["models_forgotten"])
        return st


def describe_windows(cfg: MonitorConfig) -> dict[str, str]:
    """The window each kind's values are computed over, as alert events name it.

    >>> describe_windows(MonitorConfig(bootstrap_servers="x:1"))["data_drift"]
    'count 1000'
    """

    def text(w: Any) -> str:
        unit = "s" if w.kind == "time" else ""
        out = f"{w.kind} {w.size:g}{unit}"
        if w.slide is not None and w.slide != w.size:
            out += f" sliding every {w.slide:g}{unit}"
        return out

    drift, perf = text(cfg.drift.window), text(cfg.performance.window)
    return {
        "data_drift": drift,
        "prediction_drift": drift,
        "data_quality": drift,
        "performance": perf,
        "concept_drift": "error stream",
    }


def _outputs(e: AnyPrediction) -> tuple[str | None, float | None]:
    """``(e.prediction_label(), e.prediction_score())``, without the two method calls for a
    plain float or int prediction (a regression value or a 0/1 score) or a scored one."""
    p = e.prediction
    if type(p) is float:
        return None, p
    if type(p) is ScoredPrediction or type(p) is Scored:
        label, score = p.label, p.score
        return (
            label if type(label) is str else label_str(label),
            score if type(score) is float else float(score),
        )
    if type(p) is int:
        return None, float(p)
    return e.prediction_label(), e.prediction_score()


#: What the label join matches a label by, its label, and its event time.
_LABEL_KEY: Callable[[AnyLabel], tuple[str, str, float]] = operator.attrgetter(
    "model_id", "event_id", "timestamp"
)
_LABEL: Callable[[AnyLabel], Any] = operator.attrgetter("label")
#: A label's event time.
_TIMESTAMP: Callable[[AnyLabel], float] = operator.attrgetter("timestamp")


def _interleave(
    seen: Mapping[str, list[Observation]], labelled: Mapping[str, list[Observation]]
) -> list[Observation]:
    """Per model and segment (in order of first appearance), the observations of its
    predictions and of its labels merged by event time, a prediction's first on equal times:
    as the two input files merge in a replay, so that the tracker sees each incident's
    observations in the same sequence however the stream was cut into batches (e.g. the model
    drift score a performance alert carries comes from the same window)."""
    out: list[Observation] = []
    for model_id in dict.fromkeys([*seen, *labelled]):
        a, b = seen.get(model_id, []), labelled.get(model_id, [])
        if not (a and b):
            out.extend(a or b)
            continue
        by_segment: dict[str | None, tuple[list[Observation], list[Observation]]] = {}
        for side, obs in enumerate((a, b)):
            for o in obs:
                by_segment.setdefault(o.segment, ([], []))[side].append(o)
        for x, y in by_segment.values():
            out.extend(heapq.merge(x, y, key=_observed_at) if x and y else x or y)
    return out


def _observed_at(o: Observation) -> float:
    return o.observed_at


def _group(events: Sequence[AnyPrediction]) -> dict[str, list[AnyPrediction]]:
    """The events of each model, in order; models in order of first appearance."""
    out: defaultdict[str, list[AnyPrediction]] = defaultdict(list)
    for e in events:
        out[e.model_id].append(e)
    return dict(out)
