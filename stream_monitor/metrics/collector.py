"""A custom collector that reads the monitoring state at scrape time.

Series exist only for models and features the state holds now, so a model that moves to another
instance (rebalance) disappears from this one's /metrics; label values come from bounded
discovery (capped models per partition, capped features per model), never from raw payload keys.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from stream_monitor.monitor.feature import CategoricalFeature, NumericFeature
from stream_monitor.monitor.join import DELAY_BUCKETS
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.stats.statistics import REGISTRY as STATISTIC_REGISTRY

__all__ = ["QUALITY_HELP", "StateCollector"]

#: One gauge per data-quality signal (``stream_monitor_feature_<signal>``), last closed window.
#: ``name: help`` of every statistic (stats/statistics.py); those needing ordered bins apply
#: to numeric features only.
_STATISTICS_HELP = "; ".join(
    f"{s.name}: {s.help}{' (numeric features only)' if s.ordered else ''}"
    for s in STATISTIC_REGISTRY.values()
)

QUALITY_HELP = {
    "missing_ratio": "Share of missing values (null, absent, NaN) in the last closed window.",
    "absent_ratio": "Share of events without the field at all (schema drift: field removed).",
    "type_error_ratio": "Share of values of the wrong type (e.g. a string for a number).",
    "out_of_range_ratio": "Share of values outside the reference's [min, max].",
    "sentinel_ratio": "Share of the configured sentinel value (e.g. -999) whose share rose most.",
    "new_category_ratio": "Share of categories the reference never saw.",
}


class StateCollector(Collector):
    """Exports drift scores, data-quality ratios, detector counts, error rates and incidents.

    ``states`` returns the live partition states; ``lock`` is held by the processing loop while
    it mutates them, so a scrape never sees half a batch.
    """

    def __init__(
        self, states: Callable[[], Mapping[int, PartitionState]], lock: threading.Lock
    ) -> None:
        self._states = states
        self._lock = lock

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # dynamic collector: nothing to check at registration

    def collect(
        self,
    ) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        p = "stream_monitor_"
        mf = ["model_id", "feature"]
        drift = GaugeMetricFamily(
            p + "feature_drift_score",
            "Drift of the last closed window against the reference, by statistic ("
            + _STATISTICS_HELP
            + ").",
            labels=[*mf, "statistic"],
        )
        threshold = GaugeMetricFamily(
            p + "feature_drift_threshold",
            "Threshold the alerting statistic was judged against in the last closed window "
            "(fixed, or calibrated to the configured false-alarm rate for the window's size).",
            labels=[*mf, "statistic"],
        )
        drifting = GaugeMetricFamily(
            p + "feature_drifting",
            "1 if the last closed window breached an alerting statistic or a window detector.",
            labels=mf,
        )
        quality = {
            signal: GaugeMetricFamily(p + "feature_" + signal, help_, labels=mf)
            for signal, help_ in QUALITY_HELP.items()
        }
        window_det = CounterMetricFamily(
            p + "window_detector_detections",
            "Firings of change detectors fed one value per window (stream: statistic = the "
            "alerting statistic's z-score, mean = the standardised window mean).",
            labels=[*mf, "stream", "detector"],
        )
        model_score = GaugeMetricFamily(
            p + "model_drift_score",
            "Importance-weighted share of the model's input features drifting in the last window.",
            labels=["model_id"],
        )
        model_drifting = GaugeMetricFamily(
            p + "model_drifting_features",
            "Input features drifting in the last closed window.",
            labels=["model_id"],
        )
        late = CounterMetricFamily(
            p + "model_late_events",
            "Events that arrived after their event-time window had closed (not binned).",
            labels=["model_id"],
        )
        windows = CounterMetricFamily(
            p + "model_windows_closed", "Windows closed and judged.", labels=["model_id"]
        )
        ref_info = GaugeMetricFamily(
            p + "model_reference_info",
            "Where the model's reference comes from (profile or first_events).",
            labels=["model_id", "source"],
        )
        perf = GaugeMetricFamily(
            p + "model_performance",
            "Performance of the last closed window of labelled predictions (by prediction "
            'time); per-class metrics carry the class, aggregate ones class="".',
            labels=["model_id", "metric", "class"],
        )
        perf_base = GaugeMetricFamily(
            p + "model_performance_baseline",
            "Baseline of the main performance metric (mean of the first windows).",
            labels=["model_id", "metric"],
        )
        late_labels = CounterMetricFamily(
            p + "model_late_labels",
            "Labels whose performance window had already been judged (counted, not used).",
            labels=["model_id"],
        )
        delay = HistogramMetricFamily(
            p + "label_delay_seconds",
            "Label event time minus prediction event time, for joined predictions.",
            labels=["model_id"],
        )
        awaiting = GaugeMetricFamily(
            p + "model_labels_awaited_ratio",
            "Share of the model's predictions still waiting for their label "
            "(pending / (pending + matched + expired + evicted)).",
            labels=["model_id"],
        )
        model_expired = CounterMetricFamily(
            p + "model_label_join_expired",
            "The model's predictions whose label did not come within its TTL.",
            labels=["model_id"],
        )
        model_evicted = CounterMetricFamily(
            p + "model_label_join_evicted",
            "The model's predictions evicted from the full label-join buffer.",
            labels=["model_id"],
        )
        seg_lv = ["model_id", "segment"]
        seg_events = CounterMetricFamily(
            p + "segment_events", "Predictions monitored per segment.", labels=seg_lv
        )
        seg_drift = GaugeMetricFamily(
            p + "segment_drift_score",
            "Alerting drift statistics of the segment's last closed window, per feature.",
            labels=[*seg_lv, "feature", "statistic"],
        )
        seg_perf = GaugeMetricFamily(
            p + "segment_performance",
            "The segment's main performance metric, last closed window of its labels.",
            labels=[*seg_lv, "metric"],
        )
        seg_fair = GaugeMetricFamily(
            p + "segment_fairness",
            "Segment rates (segment_positive_rate, segment_tpr, segment_fpr) and their ratios "
            "to the reference (disparate_impact, tpr_ratio, fpr_ratio).",
            labels=[*seg_lv, "metric"],
        )
        seg_refused = CounterMetricFamily(
            p + "segment_values_refused",
            "Events whose segment value came after the per-key cap (sent to key=(other)).",
            labels=["model_id", "key"],
        )
        seg_firing = GaugeMetricFamily(
            p + "segment_alert_firing",
            "1 for each segment incident firing now.",
            labels=["model_id", "kind", "feature", "segment"],
        )
        ver_lv = ["model_id", "version", "baseline_version"]
        ver_psi = GaugeMetricFamily(
            p + "version_prediction_psi",
            "PSI of the version's outputs against the baseline version's, on the same last "
            "closed window (segments.by_version).",
            labels=[*ver_lv, "feature"],
        )
        ver_psi_thr = GaugeMetricFamily(
            p + "version_prediction_psi_threshold",
            "Threshold version_prediction_psi was judged against (calibrated under 'both "
            "versions' outputs come from one distribution', or fixed).",
            labels=[*ver_lv, "feature"],
        )
        ver_perf = GaugeMetricFamily(
            p + "version_performance",
            "Main performance metric of each compared version (baseline included), last closed "
            "window of labelled predictions.",
            labels=["model_id", "version", "metric"],
        )
        ver_change = GaugeMetricFamily(
            p + "version_performance_change",
            "Relative degradation of the version's main metric against the baseline version's "
            "in the last closed window (positive = worse).",
            labels=[*ver_lv, "metric"],
        )
        ver_refused = CounterMetricFamily(
            p + "versions_refused",
            "Events of model versions beyond segments.max_values, not compared between "
            "versions (stream=predictions: prediction drift; stream=labels: labelled pairs).",
            labels=["model_id", "stream"],
        )
        concept = CounterMetricFamily(
            p + "model_concept_detections",
            "Raw firings of each selected concept-drift detector on the error stream "
            "(detector=merged: distinct upward changes after merging duplicate firings).",
            labels=["model_id", "detector"],
        )
        confidence = GaugeMetricFamily(
            p + "model_confidence",
            "Proxy before labels, last closed window of a scored classifier: mean_confidence "
            "(max(p, 1-p)), mean_entropy (bits), low_confidence_ratio.",
            labels=["model_id", "statistic"],
        )
        mmd_p = GaugeMetricFamily(
            p + "model_multivariate_p_value",
            "Permutation p-value of the last multivariate (MMD) test of the joint distribution.",
            labels=["model_id"],
        )
        type_err = CounterMetricFamily(
            p + "feature_type_errors",
            "Values of the wrong type (e.g. a string for a number).",
            labels=mf,
        )
        unseen = CounterMetricFamily(
            p + "feature_unseen_categories",
            "Categorical values not among the reference categories.",
            labels=mf,
        )
        detections = CounterMetricFamily(
            p + "detector_detections",
            "Change detections per feature and detector (debounced; alerts need agreement).",
            labels=[*mf, "detector"],
        )
        agreeing = GaugeMetricFamily(
            p + "feature_agreeing_detectors",
            "Detectors that fired recently on this feature.",
            labels=mf,
        )
        events = CounterMetricFamily(
            p + "model_events", "Predictions monitored per model.", labels=["model_id"]
        )
        ref_ready = GaugeMetricFamily(
            p + "model_reference_ready",
            "1 once the model's reference is frozen.",
            labels=["model_id"],
        )
        unexpected = CounterMetricFamily(
            p + "model_unexpected_fields",
            "Feature fields seen after the reference was frozen (schema drift).",
            labels=["model_id"],
        )
        refused_f = CounterMetricFamily(
            p + "model_features_refused",
            "Feature occurrences not monitored because the per-model cap was reached.",
            labels=["model_id"],
        )
        err = GaugeMetricFamily(
            p + "model_error",
            "Current error-stream mean (ADWIN window) once labels arrive.",
            labels=["model_id", "metric"],
        )
        err_base = GaugeMetricFamily(
            p + "model_error_baseline",
            "Baseline error-stream mean.",
            labels=["model_id", "metric"],
        )
        labelled = CounterMetricFamily(
            p + "model_labelled_predictions",
            "Predictions joined with their label.",
            labels=["model_id"],
        )
        firing = GaugeMetricFamily(
            p + "alert_firing",
            "1 for each incident firing now.",
            labels=["model_id", "kind", "feature"],
        )
        incidents = GaugeMetricFamily(
            p + "alert_incidents",
            "Incidents pending (waiting for their rule's for_windows / for_seconds, or a "
            "cooldown) and firing now.",
            labels=["state", "kind", "severity"],
        )
        suppressed = CounterMetricFamily(
            p + "alerts_suppressed",
            "Fires held back by a cooldown after a resolution (one per pending spell).",
        )
        stale = CounterMetricFamily(
            p + "alerts_stale_resolved",
            "Open incidents resolved because none of their signals was judged for "
            "alerts.stale_seconds of event time.",
        )
        join_pending = GaugeMetricFamily(
            p + "label_join_pending", "Predictions awaiting their label.", labels=["partition"]
        )
        join_evicted = CounterMetricFamily(
            p + "label_join_evicted",
            "Predictions evicted from the full label-join buffer.",
            labels=["partition"],
        )
        join_expired = CounterMetricFamily(
            p + "label_join_expired",
            "Predictions whose label did not come within the TTL.",
            labels=["partition"],
        )
        unmatched = CounterMetricFamily(
            p + "label_join_unmatched_labels",
            "Labels with no waiting prediction.",
            labels=["partition"],
        )
        early = GaugeMetricFamily(
            p + "label_join_early_labels",
            "Labels read before their prediction, waiting for it.",
            labels=["partition"],
        )
        refused_m = GaugeMetricFamily(
            p + "models_refused",
            "Distinct models refused by the per-partition cap (counted up to a bound).",
            labels=["partition"],
        )
        refused_e = CounterMetricFamily(
            p + "predictions_refused",
            "Predictions of models refused by the per-partition cap.",
            labels=["partition"],
        )
        states: Counter[tuple[str, str, str]] = Counter()
        n_suppressed = n_stale = 0
        with self._lock:
            for part, st in sorted(self._states().items()):
                pl = [str(part)]
                states.update(st.tracker.states())
                n_suppressed += st.tracker.suppressed
                n_stale += st.tracker.stale_resolved
                join_pending.add_metric(pl, len(st.join))
                join_evicted.add_metric(pl, st.join.evicted)
                join_expired.add_metric(pl, st.join.expired)
                unmatched.add_metric(pl, st.unmatched_labels)
                early.add_metric(pl, len(st.early))
                refused_m.add_metric(pl, st.models_refused)
                refused_e.add_metric(pl, st.events_refused)
                for model_id, kind, feature in st.tracker.firing():
                    firing.add_metric([model_id, kind, feature or ""], 1)
                for model_id, kind, feature, segment in st.tracker.firing_segments():
                    seg_firing.add_metric([model_id, kind, feature or "", segment], 1)
                for mid in st.join.by_model.keys() & st.models.keys():
                    counts, total, count = st.join.delay_histogram(mid)
                    if count:
                        cum, buckets = 0, []
                        for bound, c in zip([*DELAY_BUCKETS, float("inf")], counts, strict=True):
                            cum += c
                            le = "+Inf" if bound == float("inf") else f"{bound:g}"
                            buckets.append((le, cum))
                        delay.add_metric([mid], buckets, total)
                    ratio = st.join.awaiting_ratio(mid)
                    if ratio is not None:
                        awaiting.add_metric([mid], ratio)
                    stats = st.join.by_model[mid]
                    model_expired.add_metric([mid], stats.expired)
                    model_evicted.add_metric([mid], stats.evicted)
                for mid, m in st.models.items():
                    events.add_metric([mid], m.n_events)
                    ref_ready.add_metric([mid], 1 if m.reference_frozen else 0)
                    unexpected.add_metric([mid], m.unexpected_fields)
                    refused_f.add_metric([mid], m.features_refused)
                    labelled.add_metric([mid], m.errors.n)
                    ref_info.add_metric([mid, m.reference_source], 1)
                    late.add_metric([mid], m.late_events)
                    if m.clock is not None:
                        windows.add_metric([mid], m.clock.windows_closed)
                    if m.drift_score is not None:
                        model_score.add_metric([mid], m.drift_score)
                        model_drifting.add_metric([mid], len(m.drifting_features))
                    for key, n in m.segments_refused.items():
                        seg_refused.add_metric([mid, key], n)
                    for sid, child in m.segments.items():
                        sl = [mid, sid]
                        seg_events.add_metric(sl, child.n_events)
                        for fname, f in [*child.features.items(), *child.outputs.items()]:
                            for stat in f.thresholds:
                                if stat in f.scores:
                                    seg_drift.add_metric([*sl, fname, stat], f.scores[stat])
                        cp = child.performance
                        if cp is not None and cp.task is not None:
                            value = cp.last_metrics.get(cp.metric)
                            if value is not None:
                                seg_perf.add_metric([*sl, cp.metric], value)
                        for metric, value in m.fairness.get(sid, {}).items():
                            seg_fair.add_metric([*sl, metric], value)
                    vc = m.versions
                    if vc is not None:
                        ver_refused.add_metric([mid, "predictions"], vc.refused)
                        for (fname, version), r in vc.last.items():
                            lv = [mid, version, r.baseline, fname]
                            ver_psi.add_metric(lv, r.psi)
                            ver_psi_thr.add_metric(lv, r.threshold)
                    vp = m.performance
                    if vp is not None and vp.max_versions:
                        ver_refused.add_metric([mid, "labels"], vp.versions_refused)
                        for version, value in vp.version_metrics.items():
                            ver_perf.add_metric([mid, version, vp.metric], value)
                        base = vp.version_baseline
                        for version, change in vp.version_changes.items():
                            ver_change.add_metric([mid, version, base or "", vp.metric], change)
                    for det, n in m.errors.detections.items():
                        concept.add_metric([mid, det], n)
                    concept.add_metric([mid, "merged"], m.errors.merged_detections)
                    for stat, value in m.confidence.items():
                        confidence.add_metric([mid, stat], value)
                    pm = m.performance
                    if pm is not None and pm.task is not None:
                        late_labels.add_metric([mid], pm.late_labels)
                        for key, value in pm.last_metrics.items():
                            metric, _, cls = key.partition(":")
                            perf.add_metric([mid, metric, cls], value)
                        if pm.baseline is not None:
                            perf_base.add_metric([mid, pm.metric], pm.baseline)
                    if m.last_mmd is not None:
                        mmd_p.add_metric([mid], m.last_mmd.p_value)
                    err_metric = m.errors.metric
                    if err_metric is not None and m.errors.mean is not None:
                        err.add_metric([mid, err_metric], m.errors.mean)
                    if err_metric is not None and m.errors.baseline is not None:
                        err_base.add_metric([mid, err_metric], m.errors.baseline)
                    for name, f in [*m.features.items(), *m.outputs.items()]:
                        lv = [mid, name]
                        for statistic, value in f.scores.items():
                            drift.add_metric([*lv, statistic], value)
                        for statistic, value in f.thresholds.items():
                            threshold.add_metric([*lv, statistic], value)
                        if f.windows_closed:
                            drifting.add_metric(lv, 1 if f.drifting else 0)
                        for signal, value in f.quality_ratios.items():
                            quality[signal].add_metric(lv, value)
                        if f.window_detectors is not None:
                            for key, n in f.window_detectors.detections.items():
                                stream, det = key.split("/", 1)
                                window_det.add_metric([*lv, stream, det], n)
                        type_err.add_metric(lv, f.type_errors)
                        if isinstance(f, CategoricalFeature):
                            unseen.add_metric(lv, f.unseen_total)
                        if isinstance(f, NumericFeature) and f.detectors:
                            for det, n in f.detections.items():
                                detections.add_metric([*lv, det], n)
                            agreeing.add_metric(lv, f.agreeing_detectors())
        for (state, kind, severity), n in sorted(states.items()):
            incidents.add_metric([state, kind, severity], n)
        suppressed.add_metric([], n_suppressed)
        stale.add_metric([], n_stale)
        yield from quality.values()
        yield from (
            drift,
            threshold,
            drifting,
            window_det,
            model_score,
            model_drifting,
            late,
            windows,
            ref_info,
            mmd_p,
            perf,
            perf_base,
            late_labels,
            delay,
            awaiting,
            model_expired,
            model_evicted,
            confidence,
            concept,
            seg_events,
            seg_drift,
            seg_perf,
            seg_fair,
            seg_refused,
            seg_firing,
            ver_psi,
            ver_psi_thr,
            ver_perf,
            ver_change,
            ver_refused,
            type_err,
            unseen,
            detections,
            agreeing,
            events,
            ref_ready,
            unexpected,
            refused_f,
            err,
            err_base,
            labelled,
            firing,
            incidents,
            suppressed,
            stale,
            join_pending,
            join_evicted,
            join_expired,
            unmatched,
            early,
            refused_m,
            refused_e,
        )
