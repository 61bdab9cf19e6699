"""A custom collector that reads the monitoring state at scrape time, one small class per area.

Each ``*Samples`` class owns the metric families of one area (features, models, performance,
the label join, segments, versions, alerts, partition caps) and reads the piece of state it
describes in ``add``; :class:`StateCollector` walks the partitions once (on the loop's thread
between two batches, see ``metrics/reads.py``) and hands each piece to its area. A new metric
goes into the area whose state it reads.

Series exist only for models and features the state holds now, so a model that moves to another
instance (rebalance) disappears from this one's /metrics; label values come from bounded
discovery (capped models per partition, capped features per model), never from raw payload keys.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from stream_monitor.alerts.tracker import AlertTracker
from stream_monitor.metrics.reads import OwnerReads
from stream_monitor.monitor.feature import CategoricalFeature, FeatureMonitor, NumericFeature
from stream_monitor.monitor.join import DELAY_BUCKETS
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.stats.statistics import REGISTRY as STATISTIC_REGISTRY

__all__ = ["QUALITY_HELP", "StateCollector"]

Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily
P = "stream_monitor_"
MF = ["model_id", "feature"]

#: ``name: help`` of every statistic (stats/statistics.py); those needing ordered bins apply
#: to numeric features only.
_STATISTICS_HELP = "; ".join(
    f"{s.name}: {s.help}{' (numeric features only)' if s.ordered else ''}"
    for s in STATISTIC_REGISTRY.values()
)

#: One gauge per data-quality signal (``stream_monitor_feature_<signal>``), last closed window.
QUALITY_HELP = {
    "missing_ratio": "Share of missing values (null, absent, NaN) in the last closed window.",
    "absent_ratio": "Share of events without the field at all (schema drift: field removed).",
    "type_error_ratio": "Share of values of the wrong type (e.g. a string for a number).",
    "out_of_range_ratio": "Share of values outside the reference's [min, max].",
    "sentinel_ratio": "Share of the configured sentinel value (e.g. -999) whose share rose most.",
    "new_category_ratio": "Share of categories the reference never saw.",
}


class FeatureSamples:
    """Per feature and model output: drift statistics, thresholds, quality ratios, detectors."""

    def __init__(self) -> None:
        self.drift = GaugeMetricFamily(
            P + "feature_drift_score",
            "Drift of the last closed window against the reference, by statistic ("
            + _STATISTICS_HELP
            + ").",
            labels=[*MF, "statistic"],
        )
        self.threshold = GaugeMetricFamily(
            P + "feature_drift_threshold",
            "Threshold the alerting statistic was judged against in the last closed window "
            "(fixed, or calibrated to the configured false-alarm rate for the window's size).",
            labels=[*MF, "statistic"],
        )
        self.drifting = GaugeMetricFamily(
            P + "feature_drifting",
            "1 if the last closed window breached an alerting statistic or a window detector.",
            labels=MF,
        )
        self.quality = {
            signal: GaugeMetricFamily(P + "feature_" + signal, help_, labels=MF)
            for signal, help_ in QUALITY_HELP.items()
        }
        self.window_det = CounterMetricFamily(
            P + "window_detector_detections",
            "Firings of change detectors fed one value per window (stream: statistic = the "
            "alerting statistic's z-score, mean = the standardised window mean).",
            labels=[*MF, "stream", "detector"],
        )
        self.type_err = CounterMetricFamily(
            P + "feature_type_errors",
            "Values of the wrong type (e.g. a string for a number).",
            labels=MF,
        )
        self.unseen = CounterMetricFamily(
            P + "feature_unseen_categories",
            "Categorical values not among the reference categories.",
            labels=MF,
        )
        self.detections = CounterMetricFamily(
            P + "detector_detections",
            "Change detections per feature and detector (debounced; alerts need agreement).",
            labels=[*MF, "detector"],
        )
        self.agreeing = GaugeMetricFamily(
            P + "feature_agreeing_detectors",
            "Detectors that fired recently on this feature.",
            labels=MF,
        )

    def add(self, mid: str, name: str, f: FeatureMonitor) -> None:
        lv = [mid, name]
        for statistic, value in f.scores.items():
            self.drift.add_metric([*lv, statistic], value)
        for statistic, value in f.thresholds.items():
            self.threshold.add_metric([*lv, statistic], value)
        if f.windows_closed:
            self.drifting.add_metric(lv, 1 if f.drifting else 0)
        for signal, value in f.quality_ratios.items():
            self.quality[signal].add_metric(lv, value)
        if f.window_detectors is not None:
            for key, n in f.window_detectors.detections.items():
                stream, det = key.split("/", 1)
                self.window_det.add_metric([*lv, stream, det], n)
        self.type_err.add_metric(lv, f.type_errors)
        if isinstance(f, CategoricalFeature):
            self.unseen.add_metric(lv, f.unseen_total)
        if isinstance(f, NumericFeature) and f.detectors:
            for det, n in f.detections.items():
                self.detections.add_metric([*lv, det], n)
            self.agreeing.add_metric(lv, f.agreeing_detectors())

    def families(self) -> list[Family]:
        return [
            *self.quality.values(),
            self.drift,
            self.threshold,
            self.drifting,
            self.window_det,
            self.type_err,
            self.unseen,
            self.detections,
            self.agreeing,
        ]


class ModelSamples:
    """Per model: events, reference, windows, model-level drift, the proxy before labels and the
    error stream."""

    def __init__(self) -> None:
        self.model_score = GaugeMetricFamily(
            P + "model_drift_score",
            "Importance-weighted share of the model's input features drifting in the last window.",
            labels=["model_id"],
        )
        self.model_drifting = GaugeMetricFamily(
            P + "model_drifting_features",
            "Input features drifting in the last closed window.",
            labels=["model_id"],
        )
        self.late = CounterMetricFamily(
            P + "model_late_events",
            "Events that arrived after their event-time window had closed (not binned).",
            labels=["model_id"],
        )
        self.windows = CounterMetricFamily(
            P + "model_windows_closed", "Windows closed and judged.", labels=["model_id"]
        )
        self.ref_info = GaugeMetricFamily(
            P + "model_reference_info",
            "Where the model's reference comes from (profile or first_events).",
            labels=["model_id", "source"],
        )
        self.mmd_p = GaugeMetricFamily(
            P + "model_multivariate_p_value",
            "Permutation p-value of the last multivariate (MMD) test of the joint distribution.",
            labels=["model_id"],
        )
        self.confidence = GaugeMetricFamily(
            P + "model_confidence",
            "Proxy before labels, last closed window of a scored classifier: mean_confidence "
            "(max(p, 1-p)), mean_entropy (bits), low_confidence_ratio.",
            labels=["model_id", "statistic"],
        )
        self.concept = CounterMetricFamily(
            P + "model_concept_detections",
            "Raw firings of each selected concept-drift detector on the error stream "
            "(detector=merged: distinct upward changes after merging duplicate firings).",
            labels=["model_id", "detector"],
        )
        self.events = CounterMetricFamily(
            P + "model_events", "Predictions monitored per model.", labels=["model_id"]
        )
        self.ref_ready = GaugeMetricFamily(
            P + "model_reference_ready",
            "1 once the model's reference is frozen.",
            labels=["model_id"],
        )
        self.unexpected = CounterMetricFamily(
            P + "model_unexpected_fields",
            "Feature fields seen after the reference was frozen (schema drift).",
            labels=["model_id"],
        )
        self.refused_f = CounterMetricFamily(
            P + "model_features_refused",
            "Feature occurrences not monitored because the per-model cap was reached.",
            labels=["model_id"],
        )
        self.err = GaugeMetricFamily(
            P + "model_error",
            "Current error-stream mean (ADWIN window) once labels arrive.",
            labels=["model_id", "metric"],
        )
        self.err_base = GaugeMetricFamily(
            P + "model_error_baseline",
            "Baseline error-stream mean.",
            labels=["model_id", "metric"],
        )
        self.labelled = CounterMetricFamily(
            P + "model_labelled_predictions",
            "Predictions joined with their label.",
            labels=["model_id"],
        )

    def add(self, mid: str, m: ModelMonitor) -> None:
        self.events.add_metric([mid], m.n_events)
        self.ref_ready.add_metric([mid], 1 if m.reference_frozen else 0)
        self.unexpected.add_metric([mid], m.schema.unexpected_fields)
        self.refused_f.add_metric([mid], m.features_refused)
        self.labelled.add_metric([mid], m.concept.n)
        self.ref_info.add_metric([mid, m.reference_source], 1)
        self.late.add_metric([mid], m.late_events)
        if m.pane_clock is not None:
            self.windows.add_metric([mid], m.pane_clock.windows_closed)
        if m.drift_score is not None:
            self.model_score.add_metric([mid], m.drift_score)
            self.model_drifting.add_metric([mid], len(m.drifting_features))
        for det, n in m.concept.detections.items():
            self.concept.add_metric([mid, det], n)
        self.concept.add_metric([mid, "merged"], m.concept.merged_detections)
        for stat, value in m.confidence.summary.items():
            self.confidence.add_metric([mid, stat], value)
        if m.joint.last is not None:
            self.mmd_p.add_metric([mid], m.joint.last.p_value)
        err_metric = m.concept.metric
        if err_metric is not None and m.concept.mean is not None:
            self.err.add_metric([mid, err_metric], m.concept.mean)
        if err_metric is not None and m.concept.baseline is not None:
            self.err_base.add_metric([mid, err_metric], m.concept.baseline)

    def families(self) -> list[Family]:
        return [
            self.model_score,
            self.model_drifting,
            self.late,
            self.windows,
            self.ref_info,
            self.mmd_p,
            self.confidence,
            self.concept,
            self.events,
            self.ref_ready,
            self.unexpected,
            self.refused_f,
            self.err,
            self.err_base,
            self.labelled,
        ]


class PerformanceSamples:
    """Per model once labels arrive: windowed performance and its baseline."""

    def __init__(self) -> None:
        self.perf = GaugeMetricFamily(
            P + "model_performance",
            "Performance of the last closed window of labelled predictions (by prediction "
            'time); per-class metrics carry the class, aggregate ones class="".',
            labels=["model_id", "metric", "class"],
        )
        self.perf_base = GaugeMetricFamily(
            P + "model_performance_baseline",
            "Baseline of the main performance metric (mean of the first windows).",
            labels=["model_id", "metric"],
        )
        self.late_labels = CounterMetricFamily(
            P + "model_late_labels",
            "Labels whose performance window had already been judged (counted, not used).",
            labels=["model_id"],
        )

    def add(self, mid: str, m: ModelMonitor) -> None:
        pm = m.performance
        if pm is None or pm.task is None:
            return
        self.late_labels.add_metric([mid], pm.late_labels)
        for key, value in pm.last_metrics.items():
            metric, _, cls = key.partition(":")
            self.perf.add_metric([mid, metric, cls], value)
        if pm.baseline is not None:
            self.perf_base.add_metric([mid, pm.metric], pm.baseline)

    def families(self) -> list[Family]:
        return [self.perf, self.perf_base, self.late_labels]


class LabelJoinSamples:
    """The prediction/label join: per model (delays, awaited share) and per partition."""

    def __init__(self) -> None:
        self.delay = HistogramMetricFamily(
            P + "label_delay_seconds",
            "Label event time minus prediction event time, for joined predictions.",
            labels=["model_id"],
        )
        self.awaiting = GaugeMetricFamily(
            P + "model_labels_awaited_ratio",
            "Share of the model's predictions still waiting for their label "
            "(pending / (pending + matched + expired + evicted)).",
            labels=["model_id"],
        )
        self.model_expired = CounterMetricFamily(
            P + "model_label_join_expired",
            "The model's predictions whose label did not come within its TTL.",
            labels=["model_id"],
        )
        self.model_evicted = CounterMetricFamily(
            P + "model_label_join_evicted",
            "The model's predictions evicted from the full label-join buffer.",
            labels=["model_id"],
        )
        self.join_pending = GaugeMetricFamily(
            P + "label_join_pending", "Predictions awaiting their label.", labels=["partition"]
        )
        self.join_evicted = CounterMetricFamily(
            P + "label_join_evicted",
            "Predictions evicted from the full label-join buffer.",
            labels=["partition"],
        )
        self.join_expired = CounterMetricFamily(
            P + "label_join_expired",
            "Predictions whose label did not come within the TTL.",
            labels=["partition"],
        )
        self.unmatched = CounterMetricFamily(
            P + "label_join_unmatched_labels",
            "Labels with no waiting prediction.",
            labels=["partition"],
        )
        self.early = GaugeMetricFamily(
            P + "label_join_early_labels",
            "Labels read before their prediction, waiting for it.",
            labels=["partition"],
        )

    def add(self, part: int, st: PartitionState) -> None:
        pl = [str(part)]
        self.join_pending.add_metric(pl, len(st.join))
        self.join_evicted.add_metric(pl, st.join.evicted)
        self.join_expired.add_metric(pl, st.join.expired)
        self.unmatched.add_metric(pl, st.unmatched_labels)
        self.early.add_metric(pl, len(st.early))
        for mid in st.join.by_model.keys() & st.models.keys():
            counts, total, count = st.join.delay_histogram(mid)
            if count:
                cum, buckets = 0, []
                for bound, c in zip([*DELAY_BUCKETS, float("inf")], counts, strict=True):
                    cum += c
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    buckets.append((le, cum))
                self.delay.add_metric([mid], buckets, total)
            ratio = st.join.awaiting_ratio(mid)
            if ratio is not None:
                self.awaiting.add_metric([mid], ratio)
            stats = st.join.by_model[mid]
            self.model_expired.add_metric([mid], stats.expired)
            self.model_evicted.add_metric([mid], stats.evicted)

    def families(self) -> list[Family]:
        return [
            self.delay,
            self.awaiting,
            self.model_expired,
            self.model_evicted,
            self.join_pending,
            self.join_evicted,
            self.join_expired,
            self.unmatched,
            self.early,
        ]


class SegmentSamples:
    """Per segment of a model: events, drift, performance, fairness, incidents."""

    def __init__(self) -> None:
        seg_lv = ["model_id", "segment"]
        self.seg_events = CounterMetricFamily(
            P + "segment_events", "Predictions monitored per segment.", labels=seg_lv
        )
        self.seg_drift = GaugeMetricFamily(
            P + "segment_drift_score",
            "Alerting drift statistics of the segment's last closed window, per feature.",
            labels=[*seg_lv, "feature", "statistic"],
        )
        self.seg_perf = GaugeMetricFamily(
            P + "segment_performance",
            "The segment's main performance metric, last closed window of its labels.",
            labels=[*seg_lv, "metric"],
        )
        self.seg_fair = GaugeMetricFamily(
            P + "segment_fairness",
            "Segment rates (segment_positive_rate, segment_tpr, segment_fpr) and their ratios "
            "to the reference (disparate_impact, tpr_ratio, fpr_ratio).",
            labels=[*seg_lv, "metric"],
        )
        self.seg_refused = CounterMetricFamily(
            P + "segment_values_refused",
            "Events whose segment value came after the per-key cap (sent to key=(other)).",
            labels=["model_id", "key"],
        )
        self.seg_firing = GaugeMetricFamily(
            P + "segment_alert_firing",
            "1 for each segment incident firing now.",
            labels=["model_id", "kind", "feature", "segment"],
        )

    def add(self, mid: str, m: ModelMonitor) -> None:
        for key, n in m.segments.refused.items():
            self.seg_refused.add_metric([mid, key], n)
        for sid, child in m.segments.items():
            sl = [mid, sid]
            self.seg_events.add_metric(sl, child.n_events)
            for fname, f in [*child.features.items(), *child.outputs.items()]:
                for stat in f.thresholds:
                    if stat in f.scores:
                        self.seg_drift.add_metric([*sl, fname, stat], f.scores[stat])
            cp = child.performance
            if cp is not None and cp.task is not None:
                value = cp.last_metrics.get(cp.metric)
                if value is not None:
                    self.seg_perf.add_metric([*sl, cp.metric], value)
            for metric, value in m.segments.fairness.get(sid, {}).items():
                self.seg_fair.add_metric([*sl, metric], value)

    def add_firing(self, tracker: AlertTracker) -> None:
        for model_id, kind, feature, segment in tracker.firing_segments():
            self.seg_firing.add_metric([model_id, kind, feature or "", segment], 1)

    def families(self) -> list[Family]:
        return [
            self.seg_events,
            self.seg_drift,
            self.seg_perf,
            self.seg_fair,
            self.seg_refused,
            self.seg_firing,
        ]


class VersionSamples:
    """Model versions compared side by side (``segments.by_version``)."""

    def __init__(self) -> None:
        ver_lv = ["model_id", "version", "baseline_version"]
        self.ver_psi = GaugeMetricFamily(
            P + "version_prediction_psi",
            "PSI of the version's outputs against the baseline version's, on the same last "
            "closed window (segments.by_version).",
            labels=[*ver_lv, "feature"],
        )
        self.ver_psi_thr = GaugeMetricFamily(
            P + "version_prediction_psi_threshold",
            "Threshold version_prediction_psi was judged against (calibrated under 'both "
            "versions' outputs come from one distribution', or fixed).",
            labels=[*ver_lv, "feature"],
        )
        self.ver_perf = GaugeMetricFamily(
            P + "version_performance",
            "Main performance metric of each compared version (baseline included), last closed "
            "window of labelled predictions.",
            labels=["model_id", "version", "metric"],
        )
        self.ver_change = GaugeMetricFamily(
            P + "version_performance_change",
            "Relative degradation of the version's main metric against the baseline version's "
            "in the last closed window (positive = worse).",
            labels=[*ver_lv, "metric"],
        )
        self.ver_refused = CounterMetricFamily(
            P + "versions_refused",
            "Events of model versions beyond segments.max_values, not compared between "
            "versions (stream=predictions: prediction drift; stream=labels: labelled pairs).",
            labels=["model_id", "stream"],
        )

    def add(self, mid: str, m: ModelMonitor) -> None:
        vc = m.versions
        if vc is not None:
            self.ver_refused.add_metric([mid, "predictions"], vc.refused)
            for (fname, version), r in vc.last.items():
                lv = [mid, version, r.baseline, fname]
                self.ver_psi.add_metric(lv, r.psi)
                self.ver_psi_thr.add_metric(lv, r.threshold)
        vp = m.performance
        if vp is not None and vp.max_versions:
            self.ver_refused.add_metric([mid, "labels"], vp.versions_refused)
            for version, value in vp.version_metrics.items():
                self.ver_perf.add_metric([mid, version, vp.metric], value)
            base = vp.version_baseline
            for version, change in vp.version_changes.items():
                self.ver_change.add_metric([mid, version, base or "", vp.metric], change)

    def families(self) -> list[Family]:
        return [self.ver_psi, self.ver_psi_thr, self.ver_perf, self.ver_change, self.ver_refused]


class AlertSamples:
    """The alert tracker: incidents firing and pending, suppressed and stale-resolved fires."""

    def __init__(self) -> None:
        self.firing = GaugeMetricFamily(
            P + "alert_firing",
            "1 for each incident firing now.",
            labels=["model_id", "kind", "feature"],
        )
        self.incidents = GaugeMetricFamily(
            P + "alert_incidents",
            "Incidents pending (waiting for their rule's for_windows / for_seconds, or a "
            "cooldown) and firing now.",
            labels=["state", "kind", "severity"],
        )
        self.suppressed = CounterMetricFamily(
            P + "alerts_suppressed",
            "Fires held back by a cooldown after a resolution (one per pending spell).",
        )
        self.stale = CounterMetricFamily(
            P + "alerts_stale_resolved",
            "Open incidents resolved because none of their signals was judged for "
            "alerts.stale_seconds of event time.",
        )
        self._states: Counter[tuple[str, str, str]] = Counter()
        self._suppressed = self._stale = 0

    def add(self, tracker: AlertTracker) -> None:
        self._states.update(tracker.states())
        self._suppressed += tracker.suppressed
        self._stale += tracker.stale_resolved
        for model_id, kind, feature in tracker.firing():
            self.firing.add_metric([model_id, kind, feature or ""], 1)

    def families(self) -> list[Family]:
        for (state, kind, severity), n in sorted(self._states.items()):
            self.incidents.add_metric([state, kind, severity], n)
        self.suppressed.add_metric([], self._suppressed)
        self.stale.add_metric([], self._stale)
        return [self.firing, self.incidents, self.suppressed, self.stale]


class PartitionSamples:
    """The per-partition caps: models and their predictions refused, models forgotten."""

    def __init__(self) -> None:
        self.refused_m = GaugeMetricFamily(
            P + "models_refused",
            "Distinct models refused by the per-partition cap (counted up to a bound).",
            labels=["partition"],
        )
        self.refused_e = CounterMetricFamily(
            P + "predictions_refused",
            "Predictions of models refused by the per-partition cap.",
            labels=["partition"],
        )
        self.forgotten = CounterMetricFamily(
            P + "models_forgotten",
            "Models forgotten after limits.model_idle_seconds without a prediction "
            "(their state, series and slot freed).",
            labels=["partition"],
        )

    def add(self, part: int, st: PartitionState) -> None:
        pl = [str(part)]
        self.refused_m.add_metric(pl, st.models_refused)
        self.refused_e.add_metric(pl, st.events_refused)
        self.forgotten.add_metric(pl, st.models_forgotten)

    def families(self) -> list[Family]:
        return [self.refused_m, self.refused_e, self.forgotten]


class _Area(Protocol):
    def families(self) -> list[Family]: ...


class StateCollector(Collector):
    """Reads every partition's state at scrape time into the area samples.

    ``reads`` runs the reading on the loop's thread between two batches
    (:class:`~stream_monitor.metrics.reads.OwnerReads`); a plain lock reads under it on the
    scrape's thread. Rendering the families happens afterwards, on the scrape's thread.
    """

    def __init__(
        self,
        states: Callable[[], Mapping[int, PartitionState]],
        reads: OwnerReads | threading.Lock,
    ) -> None:
        self._states = states
        self._reads = reads if isinstance(reads, OwnerReads) else OwnerReads(reads)

    def describe(self) -> Iterable[Any]:
        return []  # dynamic collector: nothing to check at registration

    def collect(self) -> Iterable[Family]:
        for area in self._reads.read(self._read):
            yield from area.families()

    def _read(self) -> list[_Area]:
        features, models, performance = FeatureSamples(), ModelSamples(), PerformanceSamples()
        join, segments, versions = LabelJoinSamples(), SegmentSamples(), VersionSamples()
        alerts, partitions = AlertSamples(), PartitionSamples()
        for part, st in sorted(self._states().items()):
            alerts.add(st.tracker)
            segments.add_firing(st.tracker)
            join.add(part, st)
            partitions.add(part, st)
            for mid, m in st.models.items():
                models.add(mid, m)
                performance.add(mid, m)
                segments.add(mid, m)
                versions.add(mid, m)
                for name, f in [*m.features.items(), *m.outputs.items()]:
                    features.add(mid, name, f)
        return [features, models, performance, join, segments, versions, alerts, partitions]
