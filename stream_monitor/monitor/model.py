"""Per-model monitoring: feature discovery, the reference, tumbling windows, detectors, errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import PredictionEvent, _label_str
from stream_monitor.monitor.errors import ErrorMonitor
from stream_monitor.monitor.feature import (
    CategoricalFeature,
    FeatureMonitor,
    NumericFeature,
    feature_from_snapshot,
    is_numeric_value,
)
from stream_monitor.monitor.join import PendingPrediction

__all__ = ["PREDICTION_LABEL", "PREDICTION_SCORE", "ModelMonitor"]

SNAPSHOT_VERSION = 1
#: Pseudo-features that carry the model's output, monitored for prediction drift.
PREDICTION_SCORE = "prediction.score"
PREDICTION_LABEL = "prediction.label"


class ModelMonitor:
    """Everything stream-monitor keeps about one model.

    With no configuration, features are discovered from the events of the reference period (the
    first ``reference_size`` events): a feature whose first non-null value is a number is
    numeric, a string or boolean makes it categorical. At most ``max_features_per_model`` are
    monitored; the others are counted in ``features_refused``. Fields first seen after the
    reference is frozen are counted in ``unexpected_fields`` (schema drift), not monitored.
    """

    def __init__(self, model_id: str, cfg: MonitorConfig) -> None:
        self.model_id = model_id
        self.cfg = cfg
        self.features: dict[str, FeatureMonitor] = {}
        self.outputs: dict[str, FeatureMonitor] = {}
        self._refused: set[str] = set()
        self.features_refused = 0
        self.unexpected_fields = 0
        self.n_events = 0
        self.n_reference = 0
        self.n_window = 0
        self.reference_frozen = False
        self.last_event_time = 0.0
        self.model_version: str | None = None
        self.errors = ErrorMonitor(cfg.labels)
        self.labels_incompatible = 0

    # --- predictions --------------------------------------------------------------------------
    def update(self, events: Sequence[PredictionEvent]) -> list[Observation]:
        """Feed a batch of this model's predictions (in order); return the observations."""
        out: list[Observation] = []
        dcfg = self.cfg.drift
        i = 0
        while i < len(events):
            if not self.reference_frozen:
                take = min(dcfg.reference_size - self.n_reference, len(events) - i)
                chunk = events[i : i + take]
                self._discover(chunk)
                for name, col in self._columns(chunk).items():
                    self._monitor(name).observe_reference(col)
                self.n_reference += take
                if self.n_reference >= dcfg.reference_size:
                    for f in self._all():
                        f.freeze()
                    self.reference_frozen = True
            else:
                take = min(dcfg.window_size - self.n_window, len(events) - i)
                chunk = events[i : i + take]
                self._count_unexpected(chunk)
                for name, col in self._columns(chunk).items():
                    self._monitor(name).observe_window(col)
                self.n_window += take
            self.n_events += take
            last = chunk[-1]
            self.last_event_time = max(self.last_event_time, last.timestamp)
            self.model_version = last.model_version
            if self.reference_frozen:
                for f in self._all():
                    row = f.agreement_row
                    at = last.timestamp if row is None else chunk[row].timestamp
                    o = f.detector_observation(self.model_id, at, self.model_version)
                    if o is not None:
                        out.append(o)
                if self.n_window >= dcfg.window_size:
                    for f in self._all():
                        out.extend(
                            f.close_window(self.model_id, last.timestamp, self.model_version)
                        )
                    self.n_window = 0
            i += take
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

    def _count_unexpected(self, chunk: Sequence[PredictionEvent]) -> None:
        known = self.features.keys() | self._refused
        for e in chunk:
            if not known.issuperset(e.features.keys()):
                self.unexpected_fields += len(e.features.keys() - known)

    def _columns(self, chunk: Sequence[PredictionEvent]) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = {
            name: [e.features.get(name) for e in chunk] for name in self.features
        }
        if PREDICTION_SCORE in self.outputs:
            cols[PREDICTION_SCORE] = [e.prediction_score() for e in chunk]
        if PREDICTION_LABEL in self.outputs:
            cols[PREDICTION_LABEL] = [e.prediction_label() for e in chunk]
        return cols

    # --- labels -------------------------------------------------------------------------------
    def update_errors(
        self, pairs: Sequence[tuple[PendingPrediction, Any]], observed_at: float
    ) -> list[Observation]:
        """Feed joined (prediction, true label) pairs, in order; return the observations."""
        errors: list[float] = []
        metric = self.errors.metric
        for pending, truth in pairs:
            if pending.label is not None:
                errors.append(0.0 if pending.label == _label_str(truth) else 1.0)
                metric = "error_rate"
            elif (
                pending.score is not None
                and isinstance(truth, int | float)
                and not isinstance(truth, bool)
            ):
                errors.append(abs(pending.score - float(truth)))
                metric = "absolute_error"
            else:
                self.labels_incompatible += 1
        if not errors:
            return []
        self.errors.update(np.asarray(errors), metric)
        o = self.errors.observation(self.model_id, observed_at, self.model_version)
        return [] if o is None else [o]

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
                self.n_window,
                self.labels_incompatible,
            ],
            "reference_frozen": self.reference_frozen,
            "last_event_time": self.last_event_time,
            "model_version": self.model_version,
            "errors": self.errors.snapshot(),
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], cfg: MonitorConfig) -> ModelMonitor:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported model snapshot version {d.get('v')!r}")
        m = cls(d["model_id"], cfg)
        m.features = {f["name"]: feature_from_snapshot(f, cfg.drift) for f in d["features"]}
        m.outputs = {f["name"]: feature_from_snapshot(f, cfg.drift) for f in d["outputs"]}
        m._refused = set(d["refused"])
        (
            m.features_refused,
            m.unexpected_fields,
            m.n_events,
            m.n_reference,
            m.n_window,
            m.labels_incompatible,
        ) = d["counters"]
        m.reference_frozen = d["reference_frozen"]
        m.last_event_time = d["last_event_time"]
        m.model_version = d["model_version"]
        m.errors = ErrorMonitor.from_snapshot(d["errors"], cfg.labels)
        return m
