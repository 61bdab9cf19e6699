"""Per-model monitoring: the reference, the window clock, features, model signals, concept drift."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MonitorConfig
from stream_monitor.events.feature_rows import FeatureRow
from stream_monitor.events.live import AnyPrediction
from stream_monitor.events.outputs import (
    PREDICTION_LABEL,
    PREDICTION_SCORE,
    EventColumns,
    event_columns,
)
from stream_monitor.events.schema import AlertKind, label_str
from stream_monitor.monitor.concept import ConceptDriftMonitor
from stream_monitor.monitor.confidence import ConfidenceProxy
from stream_monitor.monitor.confidence import units as confidence_units
from stream_monitor.monitor.feature import (
    ABSENT,
    NUMBER_TYPES,
    CategoricalFeature,
    FeatureMonitor,
    NumericFeature,
    Staged,
    feature_from_snapshot,
    is_numeric_value,
    run_detectors,
    stage_numeric,
    window_statistics,
)
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.monitor.joint import JointDrift
from stream_monitor.monitor.performance import PerformanceMonitor, Times, label_strs
from stream_monitor.monitor.schema_drift import SchemaDrift
from stream_monitor.monitor.segments import Segments
from stream_monitor.monitor.versions import VersionComparison
from stream_monitor.reference.profile import NumericProfile, Profile
from stream_monitor.stats.bounds import MAX_MAGNITUDE
from stream_monitor.stats.windows import Closure, PaneClock

__all__ = ["ModelMonitor"]

SNAPSHOT_VERSION = 4


class ModelMonitor:
    """Everything stream-monitor keeps about one model.

    The reference comes from a profile (``profile``, built by ``stream-monitor profile`` from
    training data) or, without one, from the model's first ``drift.reference.size`` events. In
    the latter case features are discovered from those events: a feature whose first non-null
    value is a number is numeric, a string or boolean makes it categorical. At most
    ``max_features_per_model`` are monitored; the others are counted in ``features_refused``.
    Fields unknown to the reference that appear later are schema drift: counted per window
    (``unexpected_field_ratio``, in :attr:`schema`), not monitored.

    Once the reference is frozen a :class:`~stream_monitor.stats.windows.PaneClock` cuts the
    stream into windows (by count or event time, tumbling or sliding, see ``drift.window``);
    at each closed window every feature is judged, then the model-level drift score (the
    importance-weighted share of drifting input features) and, if enabled, the multivariate
    test.

    With ``segments.by_version`` the whole-model monitor also compares model versions with
    each other on the same windows: the outputs' PSI of each version against the baseline
    version (:class:`~stream_monitor.monitor.versions.VersionComparison`, in :attr:`versions`)
    and, once labels arrive, their main performance metric (in :attr:`performance`).
    """

    def __init__(
        self,
        model_id: str,
        cfg: MonitorConfig,
        profile: Profile | None = None,
        segment: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.cfg = cfg
        #: ``key=value`` when this monitor watches one segment of its model, else None.
        self.segment = segment
        self._profile = profile
        #: Segment monitors by ``key=value`` (whole-model monitors only), and their fairness.
        self.segments: Segments[ModelMonitor] = Segments(cfg.segments, self._new_segment)
        #: Segments of each event of the last ``update`` (None without segment keys); the
        #: label join keeps them so labels reach the segments' performance.
        self.last_routes: list[tuple[str, ...]] | None = None
        #: The events of the last ``update`` as columns (ids, times, versions, features,
        #: predicted labels and scores; see :func:`~stream_monitor.events.outputs.event_columns`),
        #: read once for the model and the label join; the join takes them (and clears this).
        #: None for a segment's monitor.
        self.last_columns: EventColumns | None = None
        self.features: dict[str, FeatureMonitor] = {}
        self.outputs: dict[str, FeatureMonitor] = {}
        self._refused: set[str] = set()
        self.features_refused = 0
        self.n_events = 0
        self.n_reference = 0
        self.reference_frozen = False
        self.reference_source = "first_events"
        self.last_event_time = 0.0
        self.model_version: str | None = None
        lab = cfg.labels
        #: Concept drift: the selected detectors on the error stream, firings merged.
        self.concept = ConceptDriftMonitor(
            lab.model_detectors.get(model_id, lab.detectors),
            baseline_size=lab.baseline_size,
            min_relative_increase=lab.min_relative_increase,
            cooldown=lab.cooldown_errors,
            adwin_delta=lab.error_adwin_delta,
        )
        self.performance = (
            PerformanceMonitor(cfg.performance, **_version_args(cfg, segment))
            if cfg.performance.enabled
            else None
        )
        #: Prediction drift between model versions (whole-model monitor with ``by_version``),
        #: created with the reference's bins.
        self.versions: VersionComparison | None = None
        self.labels_incompatible = 0
        self.pane_clock: PaneClock | None = None
        #: Fields unknown to the reference, per pane.
        self.schema = SchemaDrift()
        #: A scored classifier's confidence per pane (a proxy before labels).
        self.confidence = ConfidenceProxy()
        self.drift_score: float | None = None
        self.drifting_features: list[str] = []
        #: The multivariate test (``drift.multivariate``).
        self.joint = JointDrift(cfg.drift.multivariate)
        if profile is not None:
            self._load_profile(profile)

    # --- reference ----------------------------------------------------------------------------
    def _new_clock(self) -> PaneClock:
        w = self.cfg.drift.window
        ref = self.cfg.drift.reference
        return PaneClock(
            w.kind,
            w.size,
            w.slide,
            allowed_lateness=w.allowed_lateness_seconds,
            reference_lag=ref.lag_windows if ref.mode == "rolling" else 0,
        )

    def _load_profile(self, profile: Profile) -> None:
        self.pane_clock = self._new_clock()
        ring = self.pane_clock.ring_size
        dcfg = self.cfg.drift
        cap = self.cfg.limits.max_features_per_model
        for name, prof in profile.features.items():
            is_output = name in (PREDICTION_SCORE, PREDICTION_LABEL)
            kind: AlertKind = "prediction_drift" if is_output else "data_drift"
            target = self.outputs if is_output else self.features
            if not is_output and len(self.features) >= cap:
                self._refused.add(name)
                self.features_refused += 1
                continue
            if isinstance(prof, NumericProfile):
                target[name] = NumericFeature.from_profile(name, kind, dcfg, prof, ring)
            else:
                target[name] = CategoricalFeature.from_profile(name, kind, dcfg, prof, ring)
        self.schema = SchemaDrift(ring)
        self.confidence = ConfidenceProxy(ring)
        self.reference_frozen = True
        self.reference_source = "profile"
        self._start_versions()
        if dcfg.multivariate.enabled:
            rows = [dict(zip(profile.sample_columns, r, strict=True)) for r in profile.sample_rows]
            self.joint.start(self.features, rows)

    def _freeze(self) -> None:
        self.pane_clock = self._new_clock()
        ring = self.pane_clock.ring_size
        for f in self._all():
            f.freeze(ring)
        self.schema = SchemaDrift(ring)
        self.confidence = ConfidenceProxy(ring)
        self.reference_frozen = True
        self._start_versions()
        if self.cfg.drift.multivariate.enabled:
            self.joint.start(self.features)

    def _start_versions(self) -> None:
        """Version comparison over the outputs' bins, for the whole model with ``by_version``."""
        if self.segment is not None or not self.cfg.segments.by_version or self.pane_clock is None:
            return
        bins = {name: f.counts.shape[1] for name, f in self.outputs.items() if f.frozen}
        if bins:
            self.versions = VersionComparison(
                bins, self.pane_clock.ring_size, self.cfg.drift, self.cfg.segments
            )

    # --- predictions --------------------------------------------------------------------------
    def update(
        self, events: Sequence[AnyPrediction], columns: EventColumns | None = None
    ) -> list[Observation]:
        """Feed a batch of this model's predictions (in order); return the observations.
        ``columns``: their ``event_columns``, when the caller has them."""
        out: list[Observation] = []
        if not events:
            return out
        i = 0
        if columns is None:
            columns = event_columns(events)
        # Only the whole-model monitor's are read (by the join): a segment's would stay.
        self.last_columns = columns if self.segment is None else None
        if not self.reference_frozen:
            size = self.cfg.drift.reference.size
            take = min(size - self.n_reference, len(events))
            chunk = columns.rows(0, take)
            self._discover(events[:take])
            for name, col in self._columns(chunk).by_name.items():
                self._monitor(name).observe_reference(col)
            if self.cfg.drift.multivariate.enabled:
                self.joint.collect(chunk.features)
            self.n_reference += take
            self.n_events += take
            i = take
            if self.n_reference >= size:
                self._freeze()
        if self.reference_frozen and i < len(events):
            out.extend(self._windowed(events[i:], columns.rows(i, len(events))))
        self.last_event_time = max(self.last_event_time, max(columns.timestamps))
        self.model_version = columns.model_versions[-1]
        self.last_routes = None
        if self.segment is None and self.cfg.segments.all_keys:
            routes = self.last_routes = self.segments.route(events)
            out.extend(self.segments.update(events, routes))
        return out

    def _new_segment(self, sid: str) -> ModelMonitor:
        return ModelMonitor(self.model_id, self.cfg, self._profile, segment=sid)

    def _windowed(
        self, events: Sequence[AnyPrediction], columns: EventColumns
    ) -> list[Observation]:
        """Feed a batch to the frozen monitors. What the values give without the panes (their
        columns, bins, scores, quality flags, the per-value detectors' verdicts) is worked out
        once for the batch (:meth:`_stage`); the segments the clock cuts it into are then
        added to the panes one at a time, each followed by the windows it closes (they
        release slots that a later segment may take). ``columns``: the events' columns."""
        assert self.pane_clock is not None
        out: list[Observation] = []
        times = columns.timestamps
        ts = np.fromiter(times, dtype=float, count=len(times))
        segments = self.pane_clock.plan(ts)
        # A value scored against a rolling reference reads the panes as its segment finds
        # them (NumericFeature._score_rolling): the segments are staged one at a time then.
        rolling = any(f.lag_panes for f in self._all())
        runs = [[s] for s in segments] if rolling else [segments] if segments else []
        version = self.model_version
        last_ts = self.last_event_time
        for run in runs:
            base = run[0].start
            chunk = events[base : run[-1].stop]
            cuts = [s.start - base for s in run] + [len(chunk)]
            slots = np.concatenate([s.slots for s in run])
            batch = self._stage(chunk, columns.rows(base, run[-1].stop), slots, cuts)
            next_point = 0
            for i, seg in enumerate(run):
                lo, hi = cuts[i], cuts[i + 1]
                # A time segment may be empty: closures due before its batch's first event.
                if hi > lo:
                    slots = seg.slots
                    self.schema.add(batch.unknown[lo:hi], slots)
                    for s in batch.staged:
                        s.add(i)
                    if batch.scored is not None:
                        self.confidence.add_units(batch.scored[lo:hi], slots)
                    if self.versions is not None:
                        self.versions.ingest(
                            batch.versions[lo:hi],
                            slots,
                            {name: f.last_bins for name, f in self.outputs.items()},
                        )
                    self.n_events += hi - lo
                    version = columns.model_versions[base + hi - 1]
                    last_ts = times[base + hi - 1]
                    points, first = batch.points, next_point
                    while next_point < len(points) and points[next_point][0] < hi:
                        next_point += 1
                    out.extend(o for _, o in points[first:next_point])
                    self.joint.feed(self.features, slots)
                for closure in seg.closures:
                    at = closure.end if self.pane_clock.kind == "time" else last_ts
                    out.extend(self._close(closure, at, version))
        return out

    def _stage(
        self,
        chunk: Sequence[AnyPrediction],
        columns: EventColumns,
        slots: np.ndarray,
        cuts: list[int],
    ) -> _Batch:
        """Work out a batch's values once: stage every monitor's (see
        :meth:`~stream_monitor.monitor.feature.FeatureMonitor.stage`; ``columns``: the
        chunk's, ``slots``: each event's ring slot, ``cuts``: the segments' bounds), feed the
        per-value detectors and take their verdicts."""
        if not chunk:
            return _Batch([], np.zeros(0, dtype=bool), None, [], [])
        cols, numeric, complete = self._columns(columns)
        # Every event carries every monitored feature: only those with more fields may carry
        # unknown ones.
        carried = len(self.features) if complete else None
        known = self.features.keys() | self._refused
        unknown = self.schema.unknown(columns.features, known, carried=carried)
        staged: list[Staged] = []
        done: frozenset[str] = frozenset()
        if numeric is not None:  # the numeric columns as one float matrix
            names, matrix = numeric
            feats = [self.features[n] for n in names]
            taken, block = stage_numeric(feats, matrix, slots, cuts)  # type: ignore[arg-type]
            staged.append(block)
            done = frozenset(names[j] for j in taken)
        staged.extend(
            self._monitor(name).stage(col, slots, cuts)
            for name, col in cols.items()
            if name not in done
        )
        run_detectors(self._all(), cuts)
        scored = None
        if PREDICTION_SCORE in cols and PREDICTION_LABEL in cols:
            low = self.cfg.performance.low_confidence
            scored = confidence_units(cols[PREDICTION_SCORE], low_confidence=low)
        versions = list(columns.model_versions) if self.versions is not None else []
        # The detectors' verdicts at the rows where they may change, in row order (features
        # of one row together), stamped with the row's event time.
        mid = self.model_id
        points = [p for f in self._all() for p in f.detector_observations(mid, chunk)]
        points.sort(key=operator.itemgetter(0))  # stable: features keep their order
        return _Batch(staged, unknown, scored, versions, points)

    def _close(
        self, closure: Closure, observed_at: float, version: str | None
    ) -> list[Observation]:
        out: list[Observation] = []
        features = self._all()
        for f, stats in zip(features, window_statistics(features, closure), strict=True):
            out.extend(f.close(closure, self.model_id, observed_at, version, stats))
        if closure.window_slots:
            out.extend(self._model_signals(closure, observed_at, version))
        if self.versions is not None:
            out.extend(self.versions.close(closure, self.model_id, observed_at))
        self.schema.release(closure.release_slots)
        self.confidence.release(closure.release_slots)
        return out

    def _model_signals(
        self, closure: Closure, observed_at: float, version: str | None
    ) -> list[Observation]:
        out: list[Observation] = []
        dcfg = self.cfg.drift
        n_win = closure.events
        judged = [(n, f) for n, f in self.features.items() if f.windows_closed]
        if judged:
            weights = {n: dcfg.weight(self.model_id, n) for n, _ in judged}
            total = sum(weights.values())
            self.drifting_features = sorted(n for n, f in judged if f.drifting)
            score = sum(weights[n] for n in self.drifting_features) / total if total else 0.0
            self.drift_score = score
            thr = dcfg.model_score_threshold
            out.append(
                Observation(
                    model_id=self.model_id,
                    kind="data_drift",
                    feature=None,
                    signal="model_drift_score",
                    value=score,
                    threshold=thr,
                    breached=score >= thr,
                    cleared=score <= thr / 2,
                    observed_at=observed_at,
                    window_events=n_win,
                    model_version=version,
                )
            )
        slots, mid = closure.window_slots, self.model_id
        for o in (
            self.schema.judge(
                slots,
                dcfg.quality.unexpected_field_ratio,
                model_id=mid,
                observed_at=observed_at,
                window_events=n_win,
                version=version,
            ),
            self.confidence.judge(
                slots,
                self.cfg,
                model_id=mid,
                observed_at=observed_at,
                window_events=n_win,
                version=version,
            ),
            self.joint.judge(
                model_id=mid, observed_at=observed_at, window_events=n_win, version=version
            ),
        ):
            if o is not None:
                out.append(o)
        return out

    def _all(self) -> list[FeatureMonitor]:
        return [*self.features.values(), *self.outputs.values()]

    def _monitor(self, name: str) -> FeatureMonitor:
        return self.outputs.get(name) or self.features[name]

    def _discover(self, chunk: Sequence[AnyPrediction]) -> None:
        if not self.outputs:
            first = chunk[0]
            if first.prediction_score() is not None:
                self.outputs[PREDICTION_SCORE] = NumericFeature(
                    PREDICTION_SCORE, "prediction_drift", self.cfg.drift
                )
            if first.prediction_label() is not None:
                self.outputs[PREDICTION_LABEL] = CategoricalFeature(
                    PREDICTION_LABEL, "prediction_drift", self.cfg.drift
                )
        known = self.features
        cap = self.cfg.limits.max_features_per_model
        for e in chunk:
            for name, v in e.features.items():
                if name in known or name in self._refused:
                    continue
                numeric = is_numeric_value(v)
                if numeric is None:
                    continue  # type still unknown: decided by the first non-null value
                if len(known) >= cap:
                    self._refused.add(name) if len(self._refused) < 4 * cap else None
                    self.features_refused += 1
                    continue
                cls = NumericFeature if numeric else CategoricalFeature
                known[name] = cls(name, "data_drift", self.cfg.drift)

    def _columns(self, columns: EventColumns) -> _FeatureColumns:
        """The events (their ``columns``) as one column per feature (``ABSENT`` where an event
        lacks the field), with the monitored ones of their predicted labels and scores.

        When every event carries every feature (``complete``) and the numeric ones hold only
        numbers or nulls (the usual case), the numeric columns are the rows of one float
        matrix converted in one call, returned too with their names (else None).

        Each pass over the events' objects reads memory the one before may have evicted
        from the cache (a batch of a few thousand events is larger than it): every feature is
        read in one pass.
        """
        features = columns.features
        monitored = self._output_columns(columns)
        cols: dict[str, Sequence[Any]] = {}
        matrix: tuple[list[str], np.ndarray] | None = None
        numeric = [n for n, f in self.features.items() if isinstance(f, NumericFeature)]
        other = [n for n, f in self.features.items() if not isinstance(f, NumericFeature)]
        kinds = set(map(type, features))
        try:
            by_field = _fields(features, numeric + other, kinds)  # one tuple per name
        except KeyError:  # an event lacks a field: the per-field path
            cols = {name: [f.get(name, ABSENT) for f in features] for name in self.features}
            cols.update(monitored)
            return _FeatureColumns(cols, None, complete=False)
        if numeric:
            values = by_field[: len(numeric)]
            # numbers and nulls only (numpy reads a null as NaN: missing, as it is); fromiter
            # converts each as np.array does, without its search for a common type
            if _typed_numeric(kinds, numeric) or _NUMBERS_OR_NULL.issuperset(
                map(type, _chain(values))
            ):
                size = len(numeric) * len(features)
                flat = np.fromiter(_chain(values), dtype=np.float64, count=size)
                matrix = (numeric, flat.reshape(len(numeric), len(features)))
                cols.update(zip(numeric, matrix[1], strict=True))
            else:
                cols.update(zip(numeric, values, strict=True))
        cols.update(zip(other, by_field[len(numeric) :], strict=True))
        cols.update(monitored)
        return _FeatureColumns(cols, matrix, complete=True)

    def _output_columns(self, columns: EventColumns) -> dict[str, Sequence[Any]]:
        """The monitored ones of the events' predicted labels and scores, as columns."""
        cols: dict[str, Sequence[Any]] = {}
        if PREDICTION_SCORE in self.outputs:
            cols[PREDICTION_SCORE] = columns.scores
        if PREDICTION_LABEL in self.outputs:
            cols[PREDICTION_LABEL] = columns.labels
        return cols

    @property
    def late_events(self) -> int:
        """Events that arrived after their time window had closed (counted, not binned)."""
        return 0 if self.pane_clock is None else self.pane_clock.late_events

    # --- labels -------------------------------------------------------------------------------
    def update_errors(
        self, pairs: Sequence[tuple[PendingPrediction, Any]], observed_at: Times
    ) -> list[Observation]:
        """Feed joined (prediction, true label) pairs, in order; return the observations.

        ``observed_at`` is the event time each pair was completed at (its label's, or its
        prediction's when the label was read first; one per pair, or one for all): each
        observation takes that of the pair that completed its evidence, so the same pairs give
        the same observations however they are cut into batches."""
        return [o for _, o in self.update_errors_indexed(pairs, observed_at)]

    def update_errors_indexed(
        self, pairs: Sequence[tuple[PendingPrediction, Any]], observed_at: Times
    ) -> list[tuple[int, Observation]]:
        """:meth:`update_errors`, each observation with the index of the pair that completed
        its evidence, in the order the pairs fed one at a time would give them (by pair;
        for one pair: performance, concept drift, segments)."""
        at = np.broadcast_to(np.asarray(observed_at, dtype=float), (len(pairs),))
        errors: list[float] = []
        erred: list[int] = []  # the pair of each error
        # The first labelled pair fixes the task; pairs of the other kind are incompatible.
        metric = self.concept.metric
        labels = [pending.label for pending, _ in pairs]
        if metric in (None, "error_rate") and None not in labels:
            # Classification pairs only (the usual case): compared as columns.
            truths = label_strs([truth for _, truth in pairs])
            errors = [0.0 if a == b else 1.0 for a, b in zip(labels, truths, strict=True)]
            erred = list(range(len(pairs)))
            if pairs:
                metric = "error_rate"
            pairs_left: Sequence[tuple[PendingPrediction, Any]] = ()
        else:
            pairs_left = pairs
        for i, (pending, truth) in enumerate(pairs_left):
            numeric_truth = isinstance(truth, int | float) and not isinstance(truth, bool)
            if pending.label is not None and metric in (None, "error_rate"):
                errors.append(0.0 if pending.label == label_str(truth) else 1.0)
                erred.append(i)
                metric = "error_rate"
            elif (
                pending.label is None
                and pending.score is not None
                and numeric_truth
                and metric in (None, "absolute_error")
            ):
                # both within +-MAX_MAGNITUDE, so the error and its square stay finite
                score = min(max(pending.score, -MAX_MAGNITUDE), MAX_MAGNITUDE)
                true = min(max(float(truth), -MAX_MAGNITUDE), MAX_MAGNITUDE)
                errors.append(abs(score - true))
                erred.append(i)
                metric = "absolute_error"
            else:
                self.labels_incompatible += 1
        out: list[tuple[int, int, Observation]] = []  # (pair, source, observation)
        if self.performance is not None:
            found = self.performance.update_indexed(pairs, at, self.model_id)
            out.extend((i, 0, o) for i, o in found)
        if errors and metric is not None:
            concept = self.concept
            for j in concept.judge(np.asarray(errors), metric):
                i = erred[j.position]
                version = getattr(pairs[i][0], "model_version", None)
                out.append((i, 1, concept.to_observation(j, self.model_id, float(at[i]), version)))
        if self.segments:
            found = self.segments.update_errors_indexed(
                pairs, at, self.performance, model_id=self.model_id
            )
            out.extend((i, 2, o) for i, o in found)
        out.sort(key=lambda t: (t[0], t[1]))  # stable: each source is in order already
        return [(i, o) for i, _, o in out]

    # --- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "model_id": self.model_id,
            "features": [f.snapshot() for f in self.features.values()],
            "outputs": [f.snapshot() for f in self.outputs.values()],
            "refused": sorted(self._refused),
            "counters": [
                self.features_refused,
                self.n_events,
                self.n_reference,
                self.labels_incompatible,
            ],
            "reference_frozen": self.reference_frozen,
            "reference_source": self.reference_source,
            "last_event_time": self.last_event_time,
            "model_version": self.model_version,
            "concept": self.concept.snapshot(),
            "performance": None if self.performance is None else self.performance.snapshot(),
            "versions": None if self.versions is None else self.versions.snapshot(),
            "clock": None if self.pane_clock is None else self.pane_clock.snapshot(),
            "schema": self.schema.snapshot(),
            "confidence": self.confidence.snapshot(),
            "drift": [self.drift_score, self.drifting_features],
            "joint": self.joint.snapshot(),
            "segment": self.segment,
            "segments": self.segments.snapshot(),
        }

    @classmethod
    def from_snapshot(
        cls, d: dict[str, Any], cfg: MonitorConfig, profile: Profile | None = None
    ) -> ModelMonitor:
        """Rebuild from :meth:`snapshot`. ``profile`` is the model's configured profile: the
        state keeps the references it had, and segments first seen later start from it."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported model snapshot version {d.get('v')!r}")
        m = cls(d["model_id"], cfg)
        m._profile = profile
        m.features = {f["name"]: feature_from_snapshot(f, cfg.drift) for f in d["features"]}
        m.outputs = {f["name"]: feature_from_snapshot(f, cfg.drift) for f in d["outputs"]}
        m._refused = set(d["refused"])
        (
            m.features_refused,
            m.n_events,
            m.n_reference,
            m.labels_incompatible,
        ) = d["counters"]
        m.reference_frozen = d["reference_frozen"]
        m.reference_source = d["reference_source"]
        m.last_event_time = d["last_event_time"]
        m.model_version = d["model_version"]
        m.concept = ConceptDriftMonitor.from_snapshot(d["concept"])
        perf = d["performance"]
        m.performance = (
            None
            if perf is None or not cfg.performance.enabled
            else PerformanceMonitor.from_snapshot(
                perf, cfg.performance, **_version_args(cfg, d["segment"])
            )
        )
        m.pane_clock = None if d["clock"] is None else PaneClock.from_snapshot(d["clock"])
        m.schema = SchemaDrift.from_snapshot(d["schema"])
        m.confidence = ConfidenceProxy.from_snapshot(d["confidence"])
        m.drift_score, m.drifting_features = d["drift"]
        m.joint = JointDrift.from_snapshot(d["joint"], cfg.drift.multivariate)
        m.segment = d["segment"]
        vs = d["versions"]
        m.versions = None
        if vs is not None and m.segment is None and cfg.segments.by_version:
            m.versions = VersionComparison.from_snapshot(vs, cfg.drift, cfg.segments)
        elif m.reference_frozen:
            m._start_versions()
        m.segments = Segments.from_snapshot(
            d["segments"],
            cfg.segments,
            m._new_segment,
            lambda c: cls.from_snapshot(c, cfg, profile),
        )
        return m


class _Batch(NamedTuple):
    """A batch of a model's events worked out once (see :meth:`ModelMonitor._stage`)."""

    #: Every monitor's staged values, each added to the panes segment by segment.
    staged: list[Staged]
    #: Per event: whether it carries fields unknown to the reference.
    unknown: np.ndarray
    #: Per event: the confidence proxy's micro-units (None: not a scored classifier).
    scored: np.ndarray | None
    #: Per event: its model version (only with a version comparison).
    versions: list[str | None]
    #: The per-value detectors' verdicts, by row.
    points: list[tuple[int, Observation]]


class _FeatureColumns(NamedTuple):
    """A batch's features and monitored outputs as columns (see
    :meth:`ModelMonitor._columns`)."""

    #: One column per feature and monitored output.
    by_name: dict[str, Sequence[Any]]
    #: The numeric features' names and their columns as one float matrix (None: not read so).
    numeric: tuple[list[str], np.ndarray] | None
    #: Whether every event carries every monitored feature.
    complete: bool


#: What a numeric column may hold to be converted in one call: numbers, and nulls (NaN).
_NUMBERS_OR_NULL = NUMBER_TYPES | {type(None)}
_chain = itertools.chain.from_iterable
_astuple = msgspec.structs.astuple


def _fields(
    features: Sequence[Mapping[str, Any]], names: list[str], kinds: set[type]
) -> list[tuple[Any, ...]]:
    """Per name of ``names``, the tuple of its values in the events (their ``features``, of
    the types ``kinds``); raises ``KeyError`` when an event lacks one.

    FeatureRows (:mod:`~stream_monitor.events.feature_rows`) are read by ``astuple``, their
    values in layout order, without a lookup per value; dicts by name.

    >>> _fields([{"a": 1, "b": 2}, {"b": 4, "a": 3}], ["b", "a"], {dict})
    [(2, 4), (1, 3)]
    """
    if not names:
        return []
    layouts = [k for k in kinds if issubclass(k, FeatureRow)]
    if not layouts:
        return list(zip(*map(_getter(names), features), strict=True))
    if len(kinds) == 1:  # one layout (the usual case): transposed, then picked
        at = _positions(layouts[0], names)
        by_layout = list(zip(*map(_astuple, features), strict=True))  # type: ignore[arg-type]
        return [by_layout[i] for i in at]
    # Mixed: each row's values picked from its tuple by position, each dict's by name.
    pick = {k: _getter(_positions(k, names)) for k in layouts}
    by_name = _getter(names)
    rows = [
        pick[t](_astuple(f)) if (t := type(f)) in pick else by_name(f)  # type: ignore[index,arg-type]
        for f in features
    ]
    return list(zip(*rows, strict=True))


def _typed_numeric(kinds: set[type], names: list[str]) -> bool:
    """Whether the rows (of the types ``kinds``) are all of one layout whose values of
    ``names`` are typed as numbers or nulls (``FeatureRow.NUMERIC``): then no value needs a
    type check."""
    if len(kinds) != 1:
        return False
    (kind,) = kinds
    return issubclass(kind, FeatureRow) and kind.NUMERIC.issuperset(names)


def _positions(layout: type[FeatureRow], names: list[str]) -> list[int]:
    """Where each of ``names`` is in a row of ``layout``; a KeyError when one is not."""
    at = {name: i for i, name in enumerate(layout.NAMES)}
    return [at[name] for name in names]


def _getter(keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """``itemgetter`` of ``keys`` that gives a tuple for one key too."""
    if len(keys) == 1:
        key = keys[0]
        return lambda x: (x[key],)
    return operator.itemgetter(*keys)


def _version_args(cfg: MonitorConfig, segment: str | None) -> dict[str, Any]:
    """How a model's PerformanceMonitor compares versions: only the whole-model monitor does,
    with ``segments.by_version``."""
    seg = cfg.segments
    if segment is not None or not seg.by_version:
        return {}
    return {
        "versions": seg.max_values,
        "baseline_version": seg.baseline_version,
        "min_events": seg.version_min_events,
    }
