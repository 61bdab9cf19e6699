"""Windowed model performance once labels arrive, judged against the model's own baseline.

Joined (prediction, label) pairs are placed in panes by the prediction's event time (or by
count), with the same :class:`~stream_monitor.stats.windows.PaneClock` as drift windows; each
pane holds an additive sketch (:mod:`stream_monitor.stats.performance`), and a window is the
merge of its panes. With time windows, ``allowed_lateness_seconds`` is how long a window waits
for its labels; labels for a window already judged are counted as late.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import PerformanceConfig
from stream_monitor.events.schema import _label_str
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.stats.performance import ClassificationSketch, RegressionSketch
from stream_monitor.stats.windows import Closure, PaneClock

__all__ = ["HIGHER_IS_BETTER", "PerformanceMonitor", "fairness_rates"]

SNAPSHOT_VERSION = 1
HIGHER_IS_BETTER = frozenset(
    {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "r2"}
)

Sketch = ClassificationSketch | RegressionSketch


class PerformanceMonitor:
    """Performance of one model over windows of labelled predictions.

    The task is decided by the first labelled pair: a predicted class makes it classification
    (the label is compared as a string, the score is the positive class's score), a numeric
    prediction with a numeric truth makes it regression. Pairs that do not fit the task are
    counted in ``incompatible``.

    Examples
    --------
    >>> from stream_monitor.monitor.join import PendingPrediction
    >>> pm = PerformanceMonitor(PerformanceConfig(window={"size": 10}, baseline_windows=1))
    >>> good = [(PendingPrediction(float(i), "1", 0.9), 1) for i in range(10)]
    >>> pm.update(good, 10.0, "m")  # the first window is the baseline
    []
    >>> bad = [(PendingPrediction(float(i), "1", 0.9), i % 2) for i in range(10, 20)]
    >>> o = pm.update(bad, 20.0, "m")[0]
    >>> o.signal, o.value, o.threshold, o.breached
    ('accuracy', 0.5, 0.9, True)
    """

    def __init__(self, cfg: PerformanceConfig) -> None:
        self.cfg = cfg
        w = cfg.window
        self.clock = PaneClock(w.kind, w.size, w.slide, allowed_lateness=w.allowed_lateness_seconds)
        self.task: str | None = None
        self.panes: list[Sketch] = []
        self.incompatible = 0
        self.last_metrics: dict[str, float] = {}
        #: Positive-prediction, true-positive and false-positive rates of the last window.
        self.last_fairness: dict[str, float] = {}
        self.baseline_values: list[float] = []
        self.windows = 0

    @property
    def metric(self) -> str:
        return (
            self.cfg.regression_metric
            if self.task == "regression"
            else self.cfg.classification_metric
        )

    @property
    def baseline(self) -> float | None:
        if len(self.baseline_values) < self.cfg.baseline_windows:
            return None
        return float(np.mean(self.baseline_values))

    @property
    def late_labels(self) -> int:
        return self.clock.late_events

    def _new_sketch(self) -> Sketch:
        if self.task == "regression":
            return RegressionSketch()
        return ClassificationSketch(max_classes=self.cfg.max_classes)

    def update(
        self,
        pairs: Sequence[tuple[PendingPrediction, Any]],
        observed_at: float,
        model_id: str = "",
    ) -> list[Observation]:
        """Add joined pairs (in arrival order); return the observations of closed windows."""
        rows = self._rows(pairs)
        if rows is None:
            return []
        ts, y_true, y_pred, score, version = rows
        out: list[Observation] = []
        for seg in self.clock.plan(ts):
            slots = seg.slots
            for slot in np.unique(slots[slots >= 0]).tolist():
                idx = np.flatnonzero(slots == slot) + seg.start
                self._add(int(slot), idx, y_true, y_pred, score)
            for closure in seg.closures:
                o = self._close(closure, model_id, observed_at, version)
                if o is not None:
                    out.append(o)
        return out

    def _rows(
        self, pairs: Sequence[tuple[PendingPrediction, Any]]
    ) -> tuple[np.ndarray, list[Any], list[Any], np.ndarray, str | None] | None:
        kept: list[tuple[PendingPrediction, Any]] = []
        for pending, truth in pairs:
            if self.task is None:
                if pending.label is not None:
                    self.task = "classification"
                elif pending.score is not None and _is_number(truth):
                    self.task = "regression"
                else:
                    self.incompatible += 1
                    continue
                self.panes = [self._new_sketch() for _ in range(self.clock.ring_size)]
            if self.task == "classification" and pending.label is not None:
                kept.append((pending, _label_str(truth)))
            elif self.task == "regression" and pending.score is not None and _is_number(truth):
                kept.append((pending, float(truth)))
            else:
                self.incompatible += 1
        if not kept:
            return None
        ts = np.array([p.timestamp for p, _ in kept], dtype=float)
        score = np.array([np.nan if p.score is None else p.score for p, _ in kept], dtype=float)
        y_true = [t for _, t in kept]
        y_pred = [p.label for p, _ in kept]
        version = getattr(kept[-1][0], "model_version", None)
        return ts, y_true, y_pred, score, version

    def _add(
        self,
        slot: int,
        idx: np.ndarray,
        y_true: list[Any],
        y_pred: list[Any],
        score: np.ndarray,
    ) -> None:
        sketch = self.panes[slot]
        if isinstance(sketch, RegressionSketch):
            sketch.update(np.asarray([y_true[i] for i in idx], dtype=float), score[idx])
        else:
            s = score[idx]
            sketch.update(
                [y_true[i] for i in idx],
                [y_pred[i] for i in idx],
                None if np.isnan(s).all() else s,
            )

    def _close(
        self, closure: Closure, model_id: str, observed_at: float, version: str | None
    ) -> Observation | None:
        o: Observation | None = None
        if closure.window_slots:
            merged = self.panes[closure.window_slots[0]].copy()
            for s in closure.window_slots[1:]:
                merged.merge(self.panes[s])  # type: ignore[arg-type]
            if merged.n:
                self.last_metrics = merged.metrics()
                if isinstance(merged, ClassificationSketch):
                    self.last_fairness = fairness_rates(merged)
                self.windows += 1
                o = self._judge(model_id, closure.events, observed_at, version)
        for s in closure.release_slots:
            self.panes[s].reset()
        return o

    def _judge(
        self, model_id: str, n: int, observed_at: float, version: str | None
    ) -> Observation | None:
        value = self.last_metrics.get(self.metric)
        if value is None:
            return None
        base = self.baseline
        if base is None:
            self.baseline_values.append(value)
            return None
        change = self.cfg.max_relative_change
        margin = abs(base) * change
        if self.metric in HIGHER_IS_BETTER:
            threshold = base - margin
            breached, cleared = value < threshold, value >= base - margin / 2
        else:
            threshold = base + margin
            breached, cleared = value > threshold, value <= base + margin / 2
        return Observation(
            model_id=model_id,
            kind="performance",
            feature=None,
            signal=self.metric,
            value=value,
            threshold=threshold,
            breached=breached,
            cleared=cleared,
            observed_at=observed_at,
            window_events=n,
            model_version=version,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "clock": self.clock.snapshot(),
            "task": self.task,
            "panes": [p.snapshot() for p in self.panes],
            "incompatible": self.incompatible,
            "last_metrics": dict(self.last_metrics),
            "last_fairness": dict(self.last_fairness),
            "baseline_values": list(self.baseline_values),
            "windows": self.windows,
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], cfg: PerformanceConfig) -> PerformanceMonitor:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported performance snapshot version {d.get('v')!r}")
        pm = cls(cfg)
        pm.clock = PaneClock.from_snapshot(d["clock"])
        pm.task = d["task"]
        load = RegressionSketch if pm.task == "regression" else ClassificationSketch
        pm.panes = [load.from_snapshot(p) for p in d["panes"]]
        pm.incompatible = int(d["incompatible"])
        pm.last_metrics = dict(d["last_metrics"])
        pm.last_fairness = dict(d["last_fairness"])
        pm.baseline_values = [float(v) for v in d["baseline_values"]]
        pm.windows = int(d["windows"])
        return pm


def fairness_rates(sketch: ClassificationSketch) -> dict[str, float]:
    """``positive_rate`` (share predicted positive), ``tpr`` and ``fpr`` of a window, for the
    sketch's positive class; rates with an empty denominator are left out.

    Examples
    --------
    >>> sk = ClassificationSketch()
    >>> sk.update(["1", "1", "0", "0"], ["1", "0", "1", "0"], None)
    >>> fairness_rates(sk)
    {'positive_rate': 0.5, 'tpr': 0.5, 'fpr': 0.5}
    """
    pos = sketch.positive_class()
    if pos is None or pos not in sketch.classes:
        return {}
    i = sketch.classes.index(pos)
    cm = sketch.confusion
    n = int(cm.sum())
    if n == 0:
        return {}
    predicted = int(cm[:, i].sum())
    actual = int(cm[i, :].sum())
    tp = int(cm[i, i])
    out = {"positive_rate": predicted / n}
    if actual:
        out["tpr"] = tp / actual
    if n - actual:
        out["fpr"] = (predicted - tp) / (n - actual)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
