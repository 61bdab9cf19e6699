"""Per-model monitoring: the reference, the window clock, features, model signals, concept drift."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MonitorConfig
from stream_monitor.events.outputs import PREDICTION_LABEL, PREDICTION_SCORE
from stream_monitor.events.schema import AlertKind, PredictionEvent, label_str
from stream_monitor.monitor.concept import ConceptDriftMonitor
from stream_monitor.monitor.feature import (
    ABSENT,
    NUMBER_TYPES,
    CategoricalFeature,
    FeatureMonitor,
    NumericFeature,
    feature_from_snapshot,
    is_numeric_value,
    pit_standardise,
    run_detectors,
    window_statistics,
)
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.monitor.performance import PerformanceMonitor
from stream_monitor.monitor.versions import VersionComparison
from stream_monitor.reference.profile import NumericProfile, Profile
from stream_monitor.stats.calibrate import share_increase_limit
from stream_monitor.stats.multivariate import MMDDrift, MMDResult
from stream_monitor.stats.windows import Closure, PaneClock

__all__ = ["CONFIDENCE", "JOINT", "ModelMonitor"]

SNAPSHOT_VERSION = 3
#: The ``feature`` of multivariate (joint) drift signals.
JOINT = "(joint)"
#: The ``feature`` of the confidence proxy signals of a scored classifier.
CONFIDENCE = "prediction.confidence"
CONFIDENCE_UNIT = 1_000_000
#: The value shared by a segment key's values beyond ``segments.max_values``.
OTHER_SEGMENT = "(other)"
_UNIFORM_STD = math.sqrt(1.0 / 12.0)


class ModelMonitor:
    """Everything stream-monitor keeps about one model.

    The reference comes from a profile (``profile``, built by ``stream-monitor profile`` from
    training data) or, without one, from the model's first ``drift.reference.size`` events. In
    the latter case features are discovered from those events: a feature whose first non-null
    value is a number is numeric, a string or boolean makes it categorical. At most
    ``max_features_per_model`` are monitored; the others are counted in ``features_refused``.
    Fields unknown to the reference that appear later are schema drift: counted per window
    (``unexpected_field_ratio``) and in ``unexpected_fields``, not monitored.

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
        #: Segment monitors by ``key=value`` (whole-model monitors only).
        self.segments: dict[str, ModelMonitor] = {}
        #: Per key: distinct values given a monitor, and events sent to ``key=(other)``.
        self.segment_values: dict[str, int] = {}
        self.segments_refused: dict[str, int] = {}
        #: Per segment: fairness ratios of its last performance window (see SegmentsConfig).
        self.fairness: dict[str, dict[str, float]] = {}
        self._profile = profile
        #: Segments of each event of the last ``update`` (None without segment keys); the
        #: label join keeps them so labels reach the segments' performance.
        self.last_routes: list[tuple[str, ...]] | None = None
        self.features: dict[str, FeatureMonitor] = {}
        self.outputs: dict[str, FeatureMonitor] = {}
        self._refused: set[str] = set()
        self.features_refused = 0
        self.unexpected_fields = 0
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
        self.clock: PaneClock | None = None
        #: Per ring slot: events, and events carrying fields unknown to the reference.
        self.schema_panes = np.zeros((0, 2), dtype=np.int64)
        #: Per ring slot: scored predictions, sum of confidence, sum of entropy (bits), and
        #: low-confidence predictions (proxy metrics before labels).
        self.confidence_panes = np.zeros((0, 4), dtype=np.int64)
        self.confidence: dict[str, float] = {}
        self.confidence_baseline: float | None = None
        #: Scored predictions in the baseline window (None: no baseline yet).
        self.confidence_baseline_n: int | None = None
        self.drift_score: float | None = None
        self.drifting_features: list[str] = []
        self.mmd: MMDDrift | None = None
        self.mmd_features: list[str] = []
        self.last_mmd: MMDResult | None = None
        #: Raw numeric rows of the reference period, for the multivariate reference sample.
        self._mv_rows: list[dict[str, Any]] = []
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
        self.clock = self._new_clock()
        ring = self.clock.ring_size
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
        self.schema_panes = np.zeros((ring, 2), dtype=np.int64)
        self.confidence_panes = np.zeros((ring, 4), dtype=np.int64)
        self.reference_frozen = True
        self.reference_source = "profile"
        self._start_versions()
        if dcfg.multivariate.enabled:
            rows = [dict(zip(profile.sample_columns, r, strict=True)) for r in profile.sample_rows]
            self._start_mmd(rows)

    def _freeze(self) -> None:
        self.clock = self._new_clock()
        ring = self.clock.ring_size
        for f in self._all():
            f.freeze(ring)
        self.schema_panes = np.zeros((ring, 2), dtype=np.int64)
        self.confidence_panes = np.zeros((ring, 4), dtype=np.int64)
        self.reference_frozen = True
        self._start_versions()
        if self.cfg.drift.multivariate.enabled:
            self._start_mmd(self._mv_rows)
        self._mv_rows = []

    def _start_versions(self) -> None:
        """Version comparison over the outputs' bins, for the whole model with ``by_version``."""
        if self.segment is not None or not self.cfg.segments.by_version or self.clock is None:
            return
        bins = {name: f.counts.shape[1] for name, f in self.outputs.items() if f.frozen}
        if bins:
            self.versions = VersionComparison(
                bins, self.clock.ring_size, self.cfg.drift, self.cfg.segments
            )

    def _start_mmd(self, rows: list[dict[str, Any]]) -> None:
        mv = self.cfg.drift.multivariate
        names = [
            n
            for n, f in self.features.items()
            if isinstance(f, NumericFeature) and f.pit_grid is not None
        ][: mv.max_features]
        if len(names) < 2 or len(rows) < 10:
            return
        u = np.column_stack([self._pit_u(n, [r.get(n) for r in rows]) for n in names])
        self.mmd_features = names
        self.mmd = MMDDrift(
            u,
            window_sample=mv.window_sample,
            permutations=mv.permutations,
            max_reference=mv.reference_sample,
            seed=0,
        )

    def _pit_u(self, name: str, raw: list[Any]) -> np.ndarray:
        f = self.features[name]
        assert isinstance(f, NumericFeature) and f.pit_grid is not None
        v = np.array([x if type(x) in (int, float) else np.nan for x in raw], dtype=float)
        out = np.full(len(v), np.nan)
        ok = np.isfinite(v)
        out[ok] = pit_standardise(v[ok], f.pit_grid) * _UNIFORM_STD + 0.5
        return out

    # --- predictions --------------------------------------------------------------------------
    def update(self, events: Sequence[PredictionEvent]) -> list[Observation]:
        """Feed a batch of this model's predictions (in order); return the observations."""
        out: list[Observation] = []
        if not events:
            return out
        i = 0
        if not self.reference_frozen:
            size = self.cfg.drift.reference.size
            take = min(size - self.n_reference, len(events))
            chunk = events[:take]
            self._discover(chunk)
            for name, col in self._columns(chunk).items():
                self._monitor(name).observe_reference(col)
            if self.cfg.drift.multivariate.enabled:
                room = self.cfg.drift.multivariate.reference_sample - len(self._mv_rows)
                self._mv_rows.extend(dict(e.features) for e in chunk[: max(room, 0)])
            self.n_reference += take
            self.n_events += take
            i = take
            if self.n_reference >= size:
                self._freeze()
        if self.reference_frozen and i < len(events):
            out.extend(self._windowed(events[i:]))
        last = events[-1]
        self.last_event_time = max(self.last_event_time, max(e.timestamp for e in events))
        self.model_version = last.model_version
        self.last_routes = None
        if self.segment is None and self.cfg.segments.all_keys:
            routes = self.last_routes = self.route(events)
            groups: dict[str, list[PredictionEvent]] = {}
            for e, sids in zip(events, routes, strict=True):
                for sid in sids:
                    groups.setdefault(sid, []).append(e)
            for sid, sub in groups.items():
                out.extend(replace(o, segment=sid) for o in self.segments[sid].update(sub))
        return out

    # --- segments -----------------------------------------------------------------------------
    def route(self, events: Sequence[PredictionEvent]) -> list[tuple[str, ...]]:
        """The ``key=value`` segments of each event, creating segment monitors as needed (at
        most ``max_values`` per key; later values share ``key=(other)``, counted)."""
        seg = self.cfg.segments
        keys = seg.all_keys
        out: list[tuple[str, ...]] = []
        for e in events:
            ids: list[str] = []
            for k in keys:
                v = e.model_version if k == "model_version" else (e.segments or {}).get(k)
                if v is None:
                    continue
                sid = f"{k}={v}"
                if sid not in self.segments:
                    if self.segment_values.get(k, 0) >= seg.max_values:
                        self.segments_refused[k] = self.segments_refused.get(k, 0) + 1
                        sid = f"{k}={OTHER_SEGMENT}"
                    else:
                        self.segment_values[k] = self.segment_values.get(k, 0) + 1
                    if sid not in self.segments:
                        self.segments[sid] = ModelMonitor(
                            self.model_id, self.cfg, self._profile, segment=sid
                        )
                ids.append(sid)
            out.append(tuple(ids))
        return out

    def _segment_errors(
        self, pairs: Sequence[tuple[PendingPrediction, Any]], observed_at: float
    ) -> list[Observation]:
        groups: dict[str, list[tuple[PendingPrediction, Any]]] = {}
        for pair in pairs:
            for sid in pair[0].segments or ():
                if sid in self.segments:
                    groups.setdefault(sid, []).append(pair)
        out: list[Observation] = []
        for sid, sub in groups.items():
            child = self.segments[sid]
            before = child.performance.windows if child.performance is not None else 0
            out.extend(replace(o, segment=sid) for o in child.update_errors(sub, observed_at))
            after = child.performance.windows if child.performance is not None else 0
            if after > before:
                out.extend(self._judge_fairness(sid, observed_at))
        return out

    def _judge_fairness(self, sid: str, observed_at: float) -> list[Observation]:
        """Ratios of a segment's positive-prediction and true-positive rates to the reference
        (the whole model, or the configured reference segment of the same key)."""
        seg = self.cfg.segments
        child = self.segments[sid].performance
        key = sid.split("=", 1)[0]
        ref_value = seg.fairness_reference.get(key)
        ref_monitor = self.segments.get(f"{key}={ref_value}") if ref_value else self
        if child is None or ref_monitor is None or ref_monitor.performance is None:
            return []
        mine, ref = child.last_fairness, ref_monitor.performance.last_fairness
        ratios = {
            name: mine[rate] / ref[rate]
            for name, rate in (("disparate_impact", "positive_rate"), ("tpr_ratio", "tpr"))
            if rate in mine and ref.get(rate)
        }
        fpr_ref = ref.get("fpr")
        if "fpr" in mine and fpr_ref:
            ratios["fpr_ratio"] = mine["fpr"] / fpr_ref
        self.fairness[sid] = {**{f"segment_{k}": v for k, v in mine.items()}, **ratios}
        lo = seg.min_ratio
        return [
            Observation(
                model_id=self.model_id,
                kind="performance",
                feature=None,
                signal=name,
                value=ratios[name],
                threshold=lo,
                breached=ratios[name] < lo,
                cleared=ratios[name] >= (1 + lo) / 2,
                observed_at=observed_at,
                model_version=self.model_version,
                segment=sid,
            )
            for name in ("disparate_impact", "tpr_ratio")
            if name in ratios
        ]

    def _windowed(self, events: Sequence[PredictionEvent]) -> list[Observation]:
        assert self.clock is not None
        out: list[Observation] = []
        ts = np.fromiter((e.timestamp for e in events), dtype=float, count=len(events))
        version = self.model_version
        last_ts = self.last_event_time
        for seg in self.clock.plan(ts):
            # A time segment may be empty: closures due before its batch's first event.
            chunk = events[seg.start : seg.stop]
            if chunk:
                slots = seg.slots
                self._count_unexpected(chunk, slots)
                cols = self._columns(chunk)
                for name, col in cols.items():
                    self._monitor(name).ingest(col, slots)
                run_detectors(self._all())
                if PREDICTION_SCORE in cols and PREDICTION_LABEL in cols:
                    self._add_confidence(cols[PREDICTION_SCORE], slots)
                if self.versions is not None:
                    self.versions.ingest(
                        [e.model_version for e in chunk],
                        slots,
                        {name: f.last_bins for name, f in self.outputs.items()},
                    )
                self.n_events += len(chunk)
                last = chunk[-1]
                version, last_ts = last.model_version, last.timestamp
                for f in self._all():
                    row = f.agreement_row
                    at = last.timestamp if row is None else chunk[row].timestamp
                    o = f.detector_observation(self.model_id, at, version)
                    if o is not None:
                        out.append(o)
                if self.mmd is not None:
                    self._feed_mmd(slots)
            for closure in seg.closures:
                at = closure.end if self.clock.kind == "time" else last_ts
                out.extend(self._close(closure, at, version))
        return out

    def _feed_mmd(self, slots: np.ndarray) -> None:
        assert self.mmd is not None
        cols = []
        for n in self.mmd_features:
            f = self.features[n]
            assert isinstance(f, NumericFeature)
            if f.last_u is None:
                return
            cols.append(f.last_u)
        rows = np.column_stack(cols)[slots >= 0]
        if len(rows):
            self.mmd.update(rows)

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
        for s in closure.release_slots:
            self.schema_panes[s] = 0
            self.confidence_panes[s] = 0
        return out

    def _add_confidence(self, scores: Sequence[Any], slots: np.ndarray) -> None:
        """Proxy metrics before labels: a scored classifier's confidence, per pane."""
        p = np.array([np.nan if v is None else v for v in scores], dtype=float)
        ok = (slots >= 0) & np.isfinite(p)
        if not ok.any():
            return
        p = np.clip(p[ok], 0.0, 1.0)
        conf = np.maximum(p, 1.0 - p)  # the score is the positive class's probability
        q = np.clip(p, 1e-12, 1 - 1e-12)
        entropy = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
        low = conf < self.cfg.performance.low_confidence
        r = len(self.confidence_panes)
        s = slots[ok]
        # Sums in integer micro-units: exact, so they do not depend on how batches were cut.
        for j, w in enumerate((np.ones(len(p)), conf, entropy, low.astype(float))):
            units = np.rint(w * CONFIDENCE_UNIT).astype(np.int64)
            self.confidence_panes[:, j] += np.bincount(s, weights=units, minlength=r).astype(
                np.int64
            )

    def _model_signals(
        self, closure: Closure, observed_at: float, version: str | None
    ) -> list[Observation]:
        out: list[Observation] = []
        dcfg = self.cfg.drift
        n_win = closure.events

        def obs(
            kind: AlertKind,
            feature: str | None,
            signal: str,
            value: float,
            thr: float,
            clear: float,
            breached: bool | None = None,
        ) -> None:
            out.append(
                Observation(
                    model_id=self.model_id,
                    kind=kind,
                    feature=feature,
                    signal=signal,
                    value=value,
                    threshold=thr,
                    breached=value > thr if breached is None else breached,
                    cleared=value <= clear,
                    observed_at=observed_at,
                    window_events=n_win,
                    model_version=version,
                )
            )

        judged = [(n, f) for n, f in self.features.items() if f.windows_closed]
        if judged:
            weights = {n: dcfg.weight(self.model_id, n) for n, _ in judged}
            total = sum(weights.values())
            self.drifting_features = sorted(n for n, f in judged if f.drifting)
            score = sum(weights[n] for n in self.drifting_features) / total if total else 0.0
            self.drift_score = score
            thr = dcfg.model_score_threshold
            obs("data_drift", None, "model_drift_score", score, thr, thr / 2, score >= thr)
        events, unexpected = self.schema_panes[list(closure.window_slots)].sum(axis=0)
        if events:
            limit = dcfg.quality.unexpected_field_ratio
            obs(
                "data_quality",
                None,
                "unexpected_field_ratio",
                unexpected / events,
                limit,
                limit / 2,
            )
        n_conf, sum_conf, sum_entropy, n_low = (
            int(x) for x in self.confidence_panes[list(closure.window_slots)].sum(axis=0)
        )
        if n_conf > 0:
            self.confidence = {
                "mean_confidence": float(sum_conf / n_conf),
                "mean_entropy": float(sum_entropy / n_conf),
                "low_confidence_ratio": float(n_low / n_conf),
            }
            low = self.confidence["low_confidence_ratio"]
            n_scored = n_conf // CONFIDENCE_UNIT  # the panes count in micro-units
            if self.confidence_baseline is None:
                # The first window sets the baseline.
                self.confidence_baseline, self.confidence_baseline_n = low, n_scored
            increase = self.cfg.performance.low_confidence_increase
            base, n_base = self.confidence_baseline, self.confidence_baseline_n
            th = dcfg.thresholds
            if th.mode == "fixed" or n_base is None:
                limit = base + increase
            else:  # a share of a small window is noisy: the increase must also be significant
                k_low = n_low // CONFIDENCE_UNIT
                limit = share_increase_limit(
                    base * n_base, n_base, k_low, n_scored, th.false_alarm_rate, increase
                )
            margin = limit - base
            obs(
                "prediction_drift",
                CONFIDENCE,
                "low_confidence_ratio",
                low,
                limit,
                limit - margin / 2,
            )
        if self.mmd is not None:
            res = self.mmd.close_window()
            if res is not None:
                self.last_mmd = res
                alpha = dcfg.multivariate.p_value
                # Judged as 1 - p so that a larger value is worse, like every other signal.
                obs("data_drift", JOINT, "mmd", 1.0 - res.p_value, 1.0 - alpha, 0.9)
        return out

    def _all(self) -> list[FeatureMonitor]:
        return [*self.features.values(), *self.outputs.values()]

    def _monitor(self, name: str) -> FeatureMonitor:
        return self.outputs.get(name) or self.features[name]

    def _discover(self, chunk: Sequence[PredictionEvent]) -> None:
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

    def _count_unexpected(self, chunk: Sequence[PredictionEvent], slots: np.ndarray) -> None:
        known = self.features.keys() | self._refused
        flags = np.zeros(len(chunk), dtype=bool)
        for i, e in enumerate(chunk):
            if not known.issuperset(e.features.keys()):
                self.unexpected_fields += len(e.features.keys() - known)
                flags[i] = True
        ok = slots >= 0
        r = len(self.schema_panes)
        self.schema_panes[:, 0] += np.bincount(slots[ok], minlength=r)
        self.schema_panes[:, 1] += np.bincount(slots[ok & flags], minlength=r)

    def _columns(self, chunk: Sequence[PredictionEvent]) -> dict[str, Sequence[Any]]:
        """The chunk as one column per feature (``ABSENT`` where an event lacks the field).

        When every event carries every feature and the numeric ones hold only numbers (the
        usual case), the numeric columns come as float arrays converted in one call.
        """
        cols: dict[str, Sequence[Any]] = {}
        numeric = [n for n, f in self.features.items() if isinstance(f, NumericFeature)]
        other = [n for n, f in self.features.items() if not isinstance(f, NumericFeature)]
        try:
            num_rows = _rows(chunk, numeric)
            other_rows = _rows(chunk, other)
        except KeyError:  # an event lacks a field: the per-field path
            return self._columns_by_field(chunk)
        if numeric:
            if NUMBER_TYPES.issuperset(map(type, itertools.chain.from_iterable(num_rows))):
                matrix = np.array(num_rows, dtype=np.float64).reshape(len(chunk), len(numeric))
                cols.update(zip(numeric, np.ascontiguousarray(matrix.T), strict=True))
            else:
                cols.update(zip(numeric, zip(*num_rows, strict=True), strict=True))
        if other:
            cols.update(zip(other, zip(*other_rows, strict=True), strict=True))
        self._add_outputs(cols, chunk)
        return cols

    def _columns_by_field(self, chunk: Sequence[PredictionEvent]) -> dict[str, Sequence[Any]]:
        cols: dict[str, Sequence[Any]] = {
            name: [e.features.get(name, ABSENT) for e in chunk] for name in self.features
        }
        self._add_outputs(cols, chunk)
        return cols

    def _add_outputs(
        self, cols: dict[str, Sequence[Any]], chunk: Sequence[PredictionEvent]
    ) -> None:
        if PREDICTION_SCORE in self.outputs:
            cols[PREDICTION_SCORE] = [e.prediction_score() for e in chunk]
        if PREDICTION_LABEL in self.outputs:
            cols[PREDICTION_LABEL] = [e.prediction_label() for e in chunk]

    @property
    def late_events(self) -> int:
        """Events that arrived after their time window had closed (counted, not binned)."""
        return 0 if self.clock is None else self.clock.late_events

    # --- labels -------------------------------------------------------------------------------
    def update_errors(
        self, pairs: Sequence[tuple[PendingPrediction, Any]], observed_at: float
    ) -> list[Observation]:
        """Feed joined (prediction, true label) pairs, in order; return the observations."""
        errors: list[float] = []
        # The first labelled pair fixes the task; pairs of the other kind are incompatible.
        metric = self.concept.metric
        for pending, truth in pairs:
            numeric_truth = isinstance(truth, int | float) and not isinstance(truth, bool)
            if pending.label is not None and metric in (None, "error_rate"):
                errors.append(0.0 if pending.label == label_str(truth) else 1.0)
                metric = "error_rate"
            elif (
                pending.label is None
                and pending.score is not None
                and numeric_truth
                and metric in (None, "absolute_error")
            ):
                errors.append(abs(pending.score - float(truth)))
                metric = "absolute_error"
            else:
                self.labels_incompatible += 1
        out: list[Observation] = []
        if self.performance is not None:
            out.extend(self.performance.update(pairs, observed_at, self.model_id))
        if errors and metric is not None:
            self.concept.update(np.asarray(errors), metric)
            o = self.concept.observation(self.model_id, observed_at, self.model_version)
            if o is not None:
                out.append(o)
        if self.segments:
            out.extend(self._segment_errors(pairs, observed_at))
        return out

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
                self.unexpected_fields,
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
            "clock": None if self.clock is None else self.clock.snapshot(),
            "schema_panes": self.schema_panes.tolist(),
            "confidence": [
                self.confidence_panes.tolist(),
                self.confidence,
                self.confidence_baseline,
                self.confidence_baseline_n,
            ],
            "drift": [self.drift_score, self.drifting_features],
            "mmd": None if self.mmd is None else self.mmd.snapshot(),
            "mmd_features": self.mmd_features,
            "mv_rows": self._mv_rows,
            "segment": self.segment,
            "segments": {sid: child.snapshot() for sid, child in self.segments.items()},
            "segment_counts": [self.segment_values, self.segments_refused],
            "fairness": self.fairness,
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
            m.unexpected_fields,
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
        m.clock = None if d["clock"] is None else PaneClock.from_snapshot(d["clock"])
        m.schema_panes = np.asarray(d["schema_panes"], dtype=np.int64).reshape(-1, 2)
        panes, m.confidence, m.confidence_baseline, m.confidence_baseline_n = d["confidence"]
        m.confidence_panes = np.asarray(panes, dtype=np.int64).reshape(-1, 4)
        m.drift_score, m.drifting_features = d["drift"]
        m.mmd = None if d["mmd"] is None else MMDDrift.from_snapshot(d["mmd"])
        m.mmd_features = list(d["mmd_features"])
        m._mv_rows = list(d["mv_rows"])
        m.segment = d["segment"]
        vs = d["versions"]
        m.versions = None
        if vs is not None and m.segment is None and cfg.segments.by_version:
            m.versions = VersionComparison.from_snapshot(vs, cfg.drift, cfg.segments)
        elif m.reference_frozen:
            m._start_versions()
        m.segments = {sid: cls.from_snapshot(c, cfg, profile) for sid, c in d["segments"].items()}
        m.segment_values, m.segments_refused = (dict(x) for x in d["segment_counts"])
        m.fairness = {sid: dict(v) for sid, v in d["fairness"].items()}
        return m


def _rows(chunk: Sequence[PredictionEvent], names: list[str]) -> list[Any]:
    """Per event, the tuple of the values of ``names``; raises ``KeyError`` when an event
    lacks one."""
    if not names:
        return []
    if len(names) == 1:
        name = names[0]
        return [(e.features[name],) for e in chunk]
    get = operator.itemgetter(*names)
    return [get(e.features) for e in chunk]


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
