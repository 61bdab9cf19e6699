"""Concept drift from the error stream: ADWIN on per-prediction errors once labels arrive."""

from __future__ import annotations

from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import LabelJoinConfig
from stream_monitor.stats import StreamDetector

__all__ = ["ErrorMonitor"]

SNAPSHOT_VERSION = 1
#: Errors needed after a detection before the new mean is trusted.
MIN_SEGMENT = 30


class ErrorMonitor:
    """Tracks a model's error stream (0/1 for classifiers, absolute error for regressors).

    The first ``baseline_size`` errors form the baseline mean. ADWIN then watches the stream; an
    incident is breached when ADWIN has detected a change and its current mean exceeds the
    baseline by ``min_relative_increase``; it clears when the mean is back within half that margin.
    """

    def __init__(self, cfg: LabelJoinConfig) -> None:
        self.cfg = cfg
        self.detector = StreamDetector("adwin", delta=cfg.error_adwin_delta)
        self.n = 0
        self.baseline_sum = 0.0
        self.baseline_n = 0
        self.detected_since_clear = False
        self.mean: float | None = None
        self.fresh = False
        self.metric = "error_rate"

    @property
    def baseline(self) -> float | None:
        if self.baseline_n < self.cfg.baseline_size:
            return None
        return self.baseline_sum / self.baseline_n

    def update(self, errors: np.ndarray, metric: str) -> None:
        self.metric = metric
        room = self.cfg.baseline_size - self.baseline_n
        if room > 0:
            head = errors[:room]
            self.baseline_sum += float(head.sum())
            self.baseline_n += len(head)
        if self.detector.update_many(errors) and self.baseline is not None:
            self.detected_since_clear = True
        self.n += len(errors)
        # The mean since ADWIN's last detection: after a change, the new level only. Until
        # MIN_SEGMENT errors follow a detection the mean is stale and nothing is judged.
        self.fresh = self.detector.segment_length >= MIN_SEGMENT
        if self.fresh:
            self.mean = self.detector.segment_mean

    def observation(
        self, model_id: str, observed_at: float, model_version: str | None
    ) -> Observation | None:
        base = self.baseline
        if base is None or self.mean is None or not self.fresh:
            return None
        margin = max(base, 1e-9) * self.cfg.min_relative_increase
        threshold = base + margin
        breached = self.detected_since_clear and self.mean > threshold
        cleared = self.mean <= base + margin / 2
        if cleared:
            self.detected_since_clear = False
        return Observation(
            model_id=model_id,
            kind="concept_drift",
            feature=None,
            signal=f"adwin_{self.metric}",
            value=self.mean,
            threshold=threshold,
            breached=breached,
            cleared=cleared,
            observed_at=observed_at,
            model_version=model_version,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "detector": self.detector.snapshot(),
            "n": self.n,
            "baseline": [self.baseline_sum, self.baseline_n],
            "detected_since_clear": self.detected_since_clear,
            "mean": self.mean,
            "fresh": self.fresh,
            "metric": self.metric,
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], cfg: LabelJoinConfig) -> ErrorMonitor:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported error-monitor snapshot version {d.get('v')!r}")
        m = cls(cfg)
        m.detector = StreamDetector.from_snapshot(d["detector"])
        m.n = d["n"]
        m.baseline_sum, m.baseline_n = d["baseline"]
        m.detected_since_clear = d["detected_since_clear"]
        m.mean = d["mean"]
        m.fresh = d["fresh"]
        m.metric = d["metric"]
        return m
