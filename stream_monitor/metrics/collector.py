"""A custom collector that reads the monitoring state at scrape time.

Series exist only for models and features the state holds now, so a model that moves to another
instance (rebalance) disappears from this one's /metrics; label values come from bounded
discovery (capped models per partition, capped features per model), never from raw payload keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stream_monitor.monitor.feature import CategoricalFeature, NumericFeature
from stream_monitor.monitor.partition import PartitionState

__all__ = ["StateCollector"]


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

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        p = "stream_monitor_"
        mf = ["model_id", "feature"]
        drift = GaugeMetricFamily(
            p + "feature_drift_score",
            "Drift of the last closed window against the reference, by statistic (psi, "
            "jensen_shannon, hellinger; numeric features also ks and wasserstein, the latter "
            "scaled by the reference IQR).",
            labels=[*mf, "statistic"],
        )
        missing = GaugeMetricFamily(
            p + "feature_missing_ratio",
            "Share of missing values in the last closed window.",
            labels=mf,
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
        with self._lock:
            for part, st in sorted(self._states().items()):
                pl = [str(part)]
                join_pending.add_metric(pl, len(st.join))
                join_evicted.add_metric(pl, st.join.evicted)
                join_expired.add_metric(pl, st.join.expired)
                unmatched.add_metric(pl, st.unmatched_labels)
                early.add_metric(pl, len(st.early))
                refused_m.add_metric(pl, st.models_refused)
                refused_e.add_metric(pl, st.events_refused)
                for model_id, kind, feature in st.tracker.firing():
                    firing.add_metric([model_id, kind, feature or ""], 1)
                for mid, m in st.models.items():
                    events.add_metric([mid], m.n_events)
                    ref_ready.add_metric([mid], 1 if m.reference_frozen else 0)
                    unexpected.add_metric([mid], m.unexpected_fields)
                    refused_f.add_metric([mid], m.features_refused)
                    labelled.add_metric([mid], m.errors.n)
                    if m.errors.mean is not None:
                        err.add_metric([mid, m.errors.metric], m.errors.mean)
                    if m.errors.baseline is not None:
                        err_base.add_metric([mid, m.errors.metric], m.errors.baseline)
                    for name, f in [*m.features.items(), *m.outputs.items()]:
                        lv = [mid, name]
                        for statistic, value in f.scores.items():
                            drift.add_metric([*lv, statistic], value)
                        if f.missing_ratio is not None:
                            missing.add_metric(lv, f.missing_ratio)
                        type_err.add_metric(lv, f.type_errors)
                        if isinstance(f, CategoricalFeature):
                            unseen.add_metric(lv, f.unseen_total)
                        if isinstance(f, NumericFeature) and f.detectors:
                            for det, n in f.detections.items():
                                detections.add_metric([*lv, det], n)
                            agreeing.add_metric(lv, f.agreeing_detectors())
        yield from (
            drift,
            missing,
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
            join_pending,
            join_evicted,
            join_expired,
            unmatched,
            early,
            refused_m,
            refused_e,
        )
