"""The confidence proxy: how sure a scored classifier is, per window, before labels arrive.

Per ring slot of the model's :class:`~stream_monitor.stats.windows.PaneClock`: scored
predictions, the sum of their confidence (``max(p, 1 - p)``), of their entropy (bits) and the
low-confidence predictions (confidence below ``performance.low_confidence``), all in integer
micro-units so that the sums do not depend on how batches were cut. The first window sets the
baseline of the low-confidence share; a later window breaches when its share rises by more than
``performance.low_confidence_increase`` (and, with calibrated thresholds, significantly so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MonitorConfig
from stream_monitor.stats.calibrate import share_increase_limit

__all__ = ["CONFIDENCE", "ConfidenceProxy", "units"]

#: The ``feature`` of the confidence proxy signals of a scored classifier.
CONFIDENCE = "prediction.confidence"
_UNIT = 1_000_000


def units(scores: Sequence[Any], *, low_confidence: float) -> np.ndarray:
    """Per score (None where unscored) what a pane sums, in micro-units: one, its confidence,
    its entropy and whether it is a low-confidence one; a row of zeros where unscored.

    >>> units([0.9, None], low_confidence=0.95).tolist()
    [[1000000, 900000, 468996, 1000000], [0, 0, 0, 0]]
    """
    p = np.array([np.nan if v is None else v for v in scores], dtype=float)
    ok = np.isfinite(p)
    out = np.zeros((len(p), 4), dtype=np.int64)
    p = np.clip(p[ok], 0.0, 1.0)
    conf = np.maximum(p, 1.0 - p)  # the score is the positive class's probability
    q = np.clip(p, 1e-12, 1 - 1e-12)
    entropy = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    low = conf < low_confidence
    for j, w in enumerate((np.ones(len(p)), conf, entropy, low.astype(float))):
        out[ok, j] = np.rint(w * _UNIT).astype(np.int64)
    return out


class ConfidenceProxy:
    """Confidence and entropy of a scored classifier's predictions, per pane and per window.

    >>> from stream_monitor.config import MonitorConfig
    >>> p = ConfidenceProxy(ring=2)
    >>> p.add([0.9, 0.6, None], np.array([0, 0, 0]), low_confidence=0.7)
    >>> round(p.window([0])[1] / _UNIT, 6)  # sum of confidence of the 2 scored predictions
    1.5
    """

    def __init__(self, ring: int = 0) -> None:
        #: Per ring slot: scored predictions, sum of confidence, sum of entropy (bits), and
        #: low-confidence predictions (micro-units).
        self.panes = np.zeros((ring, 4), dtype=np.int64)
        #: Of the last closed window: mean_confidence, mean_entropy, low_confidence_ratio.
        self.summary: dict[str, float] = {}
        self.baseline: float | None = None
        #: Scored predictions in the baseline window (None: no baseline yet).
        self.baseline_n: int | None = None

    def add(self, scores: Sequence[Any], slots: np.ndarray, *, low_confidence: float) -> None:
        """Add a chunk's scores (None where unscored) to the panes of their ``slots``."""
        self.add_units(units(scores, low_confidence=low_confidence), slots)

    def add_units(self, per_score: np.ndarray, slots: np.ndarray) -> None:
        """Add a chunk's :func:`units` to the panes of their ``slots``."""
        ok = (slots >= 0) & (per_score[:, 0] > 0)
        if not ok.any():
            return
        r = len(self.panes)
        s = slots[ok]
        for j in range(per_score.shape[1]):
            self.panes[:, j] += np.bincount(s, weights=per_score[ok, j], minlength=r).astype(
                np.int64
            )

    def window(self, window_slots: Sequence[int]) -> tuple[int, int, int, int]:
        """The four pane sums over a window's slots."""
        n, conf, entropy, low = (int(x) for x in self.panes[list(window_slots)].sum(axis=0))
        return n, conf, entropy, low

    def judge(
        self,
        window_slots: Sequence[int],
        cfg: MonitorConfig,
        *,
        model_id: str,
        observed_at: float,
        window_events: int,
        version: str | None,
    ) -> Observation | None:
        """The ``low_confidence_ratio`` observation of a closed window (None: nothing scored)."""
        n_conf, sum_conf, sum_entropy, n_low = self.window(window_slots)
        if n_conf <= 0:
            return None
        self.summary = {
            "mean_confidence": float(sum_conf / n_conf),
            "mean_entropy": float(sum_entropy / n_conf),
            "low_confidence_ratio": float(n_low / n_conf),
        }
        low = self.summary["low_confidence_ratio"]
        n_scored = n_conf // _UNIT  # the panes count in micro-units
        if self.baseline is None:
            # The first window sets the baseline.
            self.baseline, self.baseline_n = low, n_scored
        increase = cfg.performance.low_confidence_increase
        base, n_base = self.baseline, self.baseline_n
        th = cfg.drift.thresholds
        if th.mode == "fixed" or n_base is None:
            limit = base + increase
        else:  # a share of a small window is noisy: the increase must also be significant
            limit = share_increase_limit(
                base * n_base, n_base, n_low // _UNIT, n_scored, th.false_alarm_rate, increase
            )
        margin = limit - base
        return Observation(
            model_id=model_id,
            kind="prediction_drift",
            feature=CONFIDENCE,
            signal="low_confidence_ratio",
            value=low,
            threshold=limit,
            breached=low > limit,
            cleared=low <= limit - margin / 2,
            observed_at=observed_at,
            window_events=window_events,
            model_version=version,
        )

    def release(self, slots: Sequence[int]) -> None:
        for s in slots:
            self.panes[s] = 0

    def snapshot(self) -> list[Any]:
        return [self.panes.tolist(), self.summary, self.baseline, self.baseline_n]

    @classmethod
    def from_snapshot(cls, d: Sequence[Any]) -> ConfidenceProxy:
        panes, summary, baseline, baseline_n = d
        p = cls()
        p.panes = np.asarray(panes, dtype=np.int64).reshape(-1, 4)
        p.summary, p.baseline, p.baseline_n = dict(summary), baseline, baseline_n
        return p
