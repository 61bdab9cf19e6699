"""Windowed model performance once labels arrive, judged against the model's own baseline.

Joined (prediction, label) pairs are placed in panes by the prediction's event time (or by
count), with the same :class:`~stream_monitor.stats.windows.PaneClock` as drift windows; each
pane holds an additive sketch (:mod:`stream_monitor.stats.performance_sketch`), and a window is the
merge of its panes. With time windows, ``allowed_lateness_seconds`` is how long a window waits
for its labels; labels for a window already judged are counted as late.

The whole-model monitor of a model with ``segments.by_version`` also keeps a ring of sketches
per model version, in the same slots, and compares the versions with each other in every
window (``version_relative_change``): the same labelled pairs, split by the version that made
the prediction.

Every observation is stamped with the event time of the pair that completed its window (the
time the caller gives for that pair: its label's, or its prediction's when the label was read
first), so the same pairs give the same observations however they are cut into batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, TypeAlias

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import PerformanceConfig
from stream_monitor.events.schema import label_str, label_strs
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.monitor.versions import assign_rows
from stream_monitor.stats.performance_sketch import ClassificationSketch, RegressionSketch
from stream_monitor.stats.windows import Closure, PaneClock

__all__ = ["HIGHER_IS_BETTER", "PerformanceMonitor", "fairness_rates", "label_strs"]

#: A waiting prediction's fields, read column by column (:meth:`PerformanceMonitor._columns`).
_TIMESTAMP = attrgetter("timestamp")
_LABEL = attrgetter("label")
_SCORE = attrgetter("score")
_VERSION = attrgetter("model_version")

SNAPSHOT_VERSION = 1
HIGHER_IS_BETTER = frozenset(
    {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "r2"}
)

Sketch = ClassificationSketch | RegressionSketch
#: When each pair was completed (event time): one per pair, or one for all of them.
Times: TypeAlias = float | Sequence[float] | np.ndarray


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
    >>> [o.signal for o in pm.update(good, 10.0, "m")][:6]  # the first window is the baseline
    ['precision_macro', 'recall_macro', 'f1_macro', 'precision:1', 'recall:1', 'f1:1']
    >>> bad = [(PendingPrediction(float(i), "1", 0.9), i % 2) for i in range(10, 20)]
    >>> o, *others = pm.update(bad, 20.0, "m")
    >>> o.signal, o.value, o.threshold, o.breached
    ('accuracy', 0.5, 0.9, True)

    The window's other metrics follow, judged by no threshold of the monitor's (only by rules
    that name them), each with the mean of its first ``baseline_windows`` values as baseline:

    >>> [(x.signal, x.value, x.baseline) for x in others if x.signal == "precision:1"]
    [('precision:1', 0.5, 1.0)]

    With ``versions`` (at most that many model versions, in order of first appearance; pairs of
    later ones are counted in ``versions_refused``), every window also compares each version's
    main metric with the baseline version's; a version or baseline with fewer than
    ``min_events`` pairs in the window is not compared. The baseline is ``baseline_version``,
    else the version with the most labelled pairs in a window, kept while it has ``min_events``
    pairs per window (as in :class:`~stream_monitor.monitor.versions.VersionComparison`):

    >>> pm = PerformanceMonitor(PerformanceConfig(window={"size": 20}), versions=5, min_events=5)
    >>> pairs = [(PendingPrediction(float(i), "1", 0.9, "v1"), 1) for i in range(10)]
    >>> pairs += [(PendingPrediction(10.0 + i, "1", 0.9, "v2"), i % 2) for i in range(10)]
    >>> [o] = [x for x in pm.update(pairs, 20.0, "m") if x.signal.startswith("version_")]
    >>> o.signal, o.model_version, o.value, o.threshold, o.breached
    ('version_relative_change', 'v2', 0.5, 0.1, True)
    >>> pm.version_baseline, pm.version_metrics, pm.version_pairs
    ('v1', {'v1': 1.0, 'v2': 0.5}, {'v1': 10, 'v2': 10})
    """

    def __init__(
        self,
        cfg: PerformanceConfig,
        versions: int = 0,
        baseline_version: str | None = None,
        min_events: int = 100,
    ) -> None:
        self.cfg = cfg
        w = cfg.window
        self.pane_clock = PaneClock(
            w.kind, w.size, w.slide, allowed_lateness=w.allowed_lateness_seconds
        )
        self.task: str | None = None
        self.panes: list[Sketch] = []
        self.incompatible = 0
        self.last_metrics: dict[str, float] = {}
        #: Positive-prediction, true-positive and false-positive rates of the last window.
        self.last_fairness: dict[str, float] = {}
        self.baseline_values: list[float] = []
        #: The first ``baseline_windows`` values of every metric: baselines for relative rules.
        self.metric_baselines: dict[str, list[float]] = {}
        self.windows = 0
        #: Version comparison: at most ``max_versions`` versions (0: off), each with a ring of
        #: sketches in the same slots as ``panes``.
        self.max_versions = versions
        self.baseline_version = baseline_version
        self.min_events = min_events
        self.version_names: list[str] = []
        self.version_panes: list[list[Sketch]] = []
        #: Labelled pairs of versions beyond ``max_versions`` (not compared).
        self.versions_refused = 0
        #: Last closed window: the main metric and labelled pairs of each version compared
        #: (baseline included), the baseline, and each other version's relative degradation.
        self.version_metrics: dict[str, float] = {}
        self.version_pairs: dict[str, int] = {}
        self.version_baseline: str | None = None
        self.version_changes: dict[str, float] = {}
        #: Of the last :meth:`update_indexed` call only (not state): :attr:`last_fairness` as
        #: it was before the call, and after each window it closed, with the index of the pair
        #: that completed the window. Segments judge fairness against it (see ``fairness_at``).
        self.fairness_before: dict[str, float] = {}
        self.fairness_log: list[tuple[int, dict[str, float]]] = []

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
        return self.pane_clock.late_events

    def _new_sketch(self) -> Sketch:
        if self.task == "regression":
            return RegressionSketch()
        return ClassificationSketch(max_classes=self.cfg.max_classes)

    def update(
        self,
        pairs: Sequence[tuple[PendingPrediction, Any]],
        observed_at: Times,
        model_id: str = "",
    ) -> list[Observation]:
        """Add joined pairs (in arrival order); return the observations of closed windows.

        ``observed_at`` is the event time each pair was completed at (one per pair, or one for
        all): a window's observations take that of the pair that completed the window."""
        return [o for _, o in self.update_indexed(pairs, observed_at, model_id)]

    def update_indexed(
        self,
        pairs: Sequence[tuple[PendingPrediction, Any]],
        observed_at: Times,
        model_id: str = "",
    ) -> list[tuple[int, Observation]]:
        """:meth:`update`, each observation with the index (into ``pairs``) of the pair that
        completed its window: for count windows the pair that filled it, for time windows the
        pair that moved the watermark past its end (the window closes before that pair is
        added)."""
        self.fairness_before, self.fairness_log = self.last_fairness, []
        at = np.broadcast_to(np.asarray(observed_at, dtype=float), (len(pairs),))
        rows = self._rows(pairs)
        if rows is None:
            return []
        ts, true_list, pred_list, score, versions, kept = rows
        # As arrays, so that each pane takes its pairs by index (classes are strings).
        regression = self.task == "regression"
        y_true = np.asarray(true_list, dtype=float) if regression else np.asarray(true_list)
        y_pred = np.asarray(pred_list, dtype=object) if regression else np.asarray(pred_list)
        rings = self._register(versions) if self.max_versions else None
        after = 1 if self.pane_clock.kind == "count" else 0  # count windows: the filling pair
        out: list[tuple[int, Observation]] = []
        for seg in self.pane_clock.plan(ts):
            slots = seg.slots
            for slot in np.unique(slots[slots >= 0]).tolist():
                idx = np.flatnonzero(slots == slot) + seg.start
                self._add(self.panes[slot], idx, y_true, y_pred, score)
                if rings is not None:
                    ring = rings[idx]
                    for j in np.unique(ring[ring >= 0]).tolist():
                        sketch = self.version_panes[j][slot]
                        self._add(sketch, idx[ring == j], y_true, y_pred, score)
            if seg.closures:
                k = seg.stop - after
                i = kept[k]
                for closure in seg.closures:
                    windows = self.windows
                    obs = self._close(closure, model_id, float(at[i]), versions[k])
                    out.extend((i, o) for o in obs)
                    if self.windows > windows:
                        self.fairness_log.append((i, self.last_fairness))
        return out

    def _register(self, versions: list[str | None]) -> np.ndarray:
        """Ring of each pair's version (-1: no version, or refused), adding new versions while
        there is room."""
        new, rings, refused = assign_rows(versions, self.version_names, self.max_versions)
        for v in new:
            self.version_names.append(v)
            self.version_panes.append(
                [self._new_sketch() for _ in range(self.pane_clock.ring_size)]
            )
        self.versions_refused += refused
        return rings

    def _rows(
        self, pairs: Sequence[tuple[PendingPrediction, Any]]
    ) -> tuple[np.ndarray, list[Any], list[Any], np.ndarray, list[str | None], list[int]] | None:
        """The pairs that fit the task: timestamps, truths, predicted labels, scores, versions
        and their indices in ``pairs``."""
        if self.task == "classification":  # the usual case: every pair fits, columns at once
            preds, truths = zip(*pairs, strict=True) if pairs else ((), ())
            ts, y_pred, score, versions = self._columns(preds)
            if None not in y_pred:
                y_true = label_strs(list(truths))
                return ts, y_true, y_pred, score, versions, list(range(len(preds)))
        kept: list[tuple[PendingPrediction, Any]] = []
        index: list[int] = []
        for i, (pending, truth) in enumerate(pairs):
            if self.task is None:
                if pending.label is not None:
                    self.task = "classification"
                elif pending.score is not None and _is_number(truth):
                    self.task = "regression"
                else:
                    self.incompatible += 1
                    continue
                self.panes = [self._new_sketch() for _ in range(self.pane_clock.ring_size)]
            if self.task == "classification" and pending.label is not None:
                kept.append((pending, label_str(truth)))
                index.append(i)
            elif self.task == "regression" and pending.score is not None and _is_number(truth):
                kept.append((pending, float(truth)))
                index.append(i)
            else:
                self.incompatible += 1
        if not kept:
            return None
        ts, y_pred, score, versions = self._columns([p for p, _ in kept])
        return ts, [t for _, t in kept], y_pred, score, versions, index

    @staticmethod
    def _columns(
        preds: Sequence[PendingPrediction],
    ) -> tuple[np.ndarray, list[str | None], np.ndarray, list[str | None]]:
        """Timestamps, predicted labels, scores (NaN: none) and model versions of the
        predictions (one pass per column; ``None`` becomes NaN in a float array).

        >>> ts, labels, score, versions = PerformanceMonitor._columns(
        ...     [PendingPrediction(1.0, "a", None, "v1"), PendingPrediction(2.0, "b", 0.5)]
        ... )
        >>> ts.tolist(), labels, score.tolist(), versions
        ([1.0, 2.0], ['a', 'b'], [nan, 0.5], ['v1', None])
        """
        if not preds:
            return np.zeros(0), [], np.zeros(0), []
        return (
            np.array(list(map(_TIMESTAMP, preds)), dtype=float),
            list(map(_LABEL, preds)),
            np.array(list(map(_SCORE, preds)), dtype=float),
            list(map(_VERSION, preds)),
        )

    @staticmethod
    def _add(
        sketch: Sketch,
        idx: np.ndarray,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        score: np.ndarray,
    ) -> None:
        if isinstance(sketch, RegressionSketch):
            sketch.update(y_true[idx], score[idx])
        else:
            s = score[idx]
            sketch.update(y_true[idx], y_pred[idx], None if np.isnan(s).all() else s)

    def _close(
        self, closure: Closure, model_id: str, observed_at: float, version: str | None
    ) -> list[Observation]:
        out: list[Observation] = []
        if closure.window_slots:
            merged = _merge(self.panes, closure.window_slots)
            if merged.n:
                self.last_metrics = merged.metrics()
                if isinstance(merged, ClassificationSketch):
                    self.last_fairness = fairness_rates(merged)
                self.windows += 1
                o = self._judge(model_id, closure.events, observed_at, version)
                if o is not None:
                    out.append(o)
                n = closure.events
                out.extend(self._metric_observations(model_id, n, observed_at, version))
            if self.version_panes:
                out.extend(self._compare_versions(closure.window_slots, model_id, observed_at))
        for s in closure.release_slots:
            self.panes[s].reset()
            for ring in self.version_panes:
                ring[s].reset()
        return out

    def _compare_versions(
        self, slots: tuple[int, ...], model_id: str, observed_at: float
    ) -> list[Observation]:
        """Each version's main metric against the baseline version's, on this window's pairs."""
        metric, need = self.metric, self.min_events
        values: dict[str, float] = {}
        pairs: dict[str, int] = {}
        for name, ring in zip(self.version_names, self.version_panes, strict=True):
            merged = _merge(ring, slots)
            value = merged.metrics().get(metric) if merged.n >= need else None
            if value is not None:
                values[name], pairs[name] = value, merged.n
        want = self.baseline_version
        if want is not None:
            base = want if want in values else None
        elif self.version_baseline in values:
            base = self.version_baseline  # the baseline stays while it has enough pairs
        elif values:  # the most labelled pairs; a tie goes to the smaller name
            base = min(values, key=lambda v: (-pairs[v], v))
        else:
            base = None
        self.version_metrics, self.version_pairs, self.version_changes = values, pairs, {}
        if base is not None:
            self.version_baseline = base
        if base is None or values[base] == 0:
            return []
        ref = values[base]
        limit = self.cfg.max_relative_change
        out: list[Observation] = []
        for name, value in values.items():
            if name == base:
                continue
            # Oriented so that a positive change is a degradation of the candidate.
            diff = ref - value if metric in HIGHER_IS_BETTER else value - ref
            change = diff / abs(ref)
            self.version_changes[name] = change
            out.append(
                Observation(
                    model_id=model_id,
                    kind="performance",
                    feature=None,
                    signal="version_relative_change",
                    value=change,
                    threshold=limit,
                    breached=change > limit,
                    cleared=change <= limit / 2,
                    observed_at=observed_at,
                    window_events=pairs[name],
                    model_version=name,
                    segment=f"model_version={name}",
                )
            )
        return out

    def _metric_observations(
        self, model_id: str, n: int, observed_at: float, version: str | None
    ) -> list[Observation]:
        """Every other metric of the window, with the mean of its first ``baseline_windows``
        values as baseline: no monitor threshold judges them, only rules that name them
        ("precision:1 below 0.7 for two windows")."""
        out = []
        need = self.cfg.baseline_windows
        for name, value in self.last_metrics.items():
            seen = self.metric_baselines.setdefault(name, [])
            if len(seen) < need:
                seen.append(value)
            if name == self.metric:
                continue
            out.append(
                Observation(
                    model_id=model_id,
                    kind="performance",
                    feature=None,
                    signal=name,
                    value=value,
                    threshold=math.nan,
                    breached=False,
                    cleared=True,
                    observed_at=observed_at,
                    window_events=n,
                    model_version=version,
                    baseline=float(np.mean(seen)) if len(seen) >= need else None,
                )
            )
        return out

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
            baseline=base,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "clock": self.pane_clock.snapshot(),
            "task": self.task,
            "panes": [p.snapshot() for p in self.panes],
            "incompatible": self.incompatible,
            "last_metrics": dict(self.last_metrics),
            "last_fairness": dict(self.last_fairness),
            "baseline_values": list(self.baseline_values),
            "metric_baselines": {k: list(v) for k, v in self.metric_baselines.items()},
            "windows": self.windows,
            "versions": {
                "names": list(self.version_names),
                "panes": [[p.snapshot() for p in ring] for ring in self.version_panes],
                "refused": self.versions_refused,
                "last": [
                    self.version_metrics,
                    self.version_pairs,
                    self.version_baseline,
                    self.version_changes,
                ],
            },
        }

    @classmethod
    def from_snapshot(
        cls,
        d: dict[str, Any],
        cfg: PerformanceConfig,
        versions: int = 0,
        baseline_version: str | None = None,
        min_events: int = 100,
    ) -> PerformanceMonitor:
        """Rebuild from :meth:`snapshot`; the version arguments are those of the constructor
        (a snapshot without version state, or one taken without them, starts the comparison
        afresh)."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported performance snapshot version {d.get('v')!r}")
        pm = cls(cfg, versions, baseline_version, min_events)
        pm.pane_clock = PaneClock.from_snapshot(d["clock"])
        pm.task = d["task"]
        load = RegressionSketch if pm.task == "regression" else ClassificationSketch
        pm.panes = [load.from_snapshot(p) for p in d["panes"]]
        pm.incompatible = int(d["incompatible"])
        pm.last_metrics = dict(d["last_metrics"])
        pm.last_fairness = dict(d["last_fairness"])
        pm.baseline_values = [float(v) for v in d["baseline_values"]]
        pm.metric_baselines = {k: [float(x) for x in v] for k, v in d["metric_baselines"].items()}
        pm.windows = int(d["windows"])
        vs = d["versions"]
        if vs is not None and versions:
            pm.version_names = [str(v) for v in vs["names"]]
            pm.version_panes = [[load.from_snapshot(p) for p in ring] for ring in vs["panes"]]
            pm.versions_refused = int(vs["refused"])
            values, pairs, base, changes = vs["last"]
            pm.version_metrics = {k: float(v) for k, v in values.items()}
            pm.version_pairs = {k: int(v) for k, v in pairs.items()}
            pm.version_baseline = base
            pm.version_changes = {k: float(v) for k, v in changes.items()}
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


def _merge(ring: list[Sketch], slots: tuple[int, ...]) -> Sketch:
    """A window's sketch: the merge of its panes."""
    merged = ring[slots[0]].copy()
    for s in slots[1:]:
        merged.merge(ring[s])  # type: ignore[arg-type]
    return merged


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
