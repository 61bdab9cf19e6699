"""Bounded, additive sketches of model performance, computed once labels arrive.

The monitor windows events by *prediction* time and keeps one sketch per pane of its ring (see
:mod:`stream_monitor.stats.windows`); a window's sketch is the merge of its panes' sketches::

    window = ClassificationSketch(...)          # or RegressionSketch(...)
    for slot in closure.window_slots:
        window.merge(panes[slot])
    window.metrics()
    panes[slot].reset()                          # for each released slot, after use

Every piece of state is a count or a sum, so :meth:`~ClassificationSketch.merge` is plain
addition (after aligning classes by name) and "sketch of all events" equals "merge of the
sketches of any partition of the events": integer-derived metrics (accuracy, precision, recall,
F1, ROC AUC, error quantiles) are then bitwise identical, float sums (log-loss, Brier, ECE, MAE,
RMSE, MAPE, R²) agree up to floating-point summation order (~1e-15 relative). Memory is
bounded by the constructor arguments, never by the number of events.

:class:`ClassificationSketch` keeps a confusion matrix over at most ``max_classes`` discovered
classes plus a shared ``"(other)"`` slot, and, per true class, histograms of the positive-class
score (for a binned ROC AUC and a calibration table) and loss sums (log-loss, Brier). Keeping
the score state *per true class* rather than positive-vs-negative means the positive class can
be resolved when metrics are computed, so panes that saw the classes in a different order still
merge exactly.

:class:`RegressionSketch` keeps error sums, Chan's mergeable mean / sum of squared deviations
of ``y_true`` (for R²) and a fixed log-spaced histogram of the absolute error whose quantiles
have a documented relative precision.

``metrics()`` returns only defined values: an undefined metric (no events, no positives, zero
variance, ...) is omitted from the dict, never NaN. Snapshots are plain JSON-serialisable dicts
carrying a ``"v"`` version key.
"""

from __future__ import annotations

import copy as _copy
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.stats.bounds import clip_magnitude

SNAPSHOT_VERSION = 1


_PROB_EPS = 1e-15
_LOSS_COLUMNS = 4  # per true class: sum -log p, sum -log(1-p), sum (1-p)^2, sum p^2
_LOSS_RANGE = np.arange(_LOSS_COLUMNS)


def _check_version(d: Mapping[str, Any], kind: str) -> None:
    if d.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported {kind} snapshot version {d.get('v')!r}")
    if d.get("kind") != kind:
        raise ValueError(f"not a {kind} snapshot (kind={d.get('kind')!r})")


_EPS = float(np.finfo(np.float64).eps)


def _array(values: Any, dtype: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=dtype)
    if a.size == 0 and math.prod(shape) == 0:
        a = a.reshape(shape)
    if a.shape != shape:
        raise ValueError(f"{what} has shape {a.shape}, expected {shape}")
    return a


class ClassificationSketch:
    """Additive sketch of classification performance over a bounded set of classes.

    Parameters
    ----------
    classes
        Classes known up front (distinct strings); they take the first indices. Further classes
        are discovered in order of appearance -- within a batch, event by event, the true label
        before the predicted one -- until there are ``max_classes``. Labels of any further class
        are counted in a shared ``"(other)"`` slot and in :attr:`classes_refused`.
    max_classes
        Maximum number of distinct classes kept (the confusion matrix is at most
        ``(max_classes + 1)`` square, the extra row/column being ``"(other)"``).
    score_bins
        Equal-width bins on ``[0, 1]`` of the score histograms used for ROC AUC. Bin ``i`` is
        ``[i/B, (i+1)/B)``, the last bin also holds 1.0.
    calibration_bins
        Equal-width bins on ``[0, 1]`` of the calibration table used for ECE (same convention).
    positive
        The positive class of the binary score metrics; added to ``classes`` if absent.

    Notes
    -----
    **Positive class.** ``score`` is the model's score for the positive class. The positive
    class is resolved when :meth:`metrics` runs, from the classes discovered so far (the same
    answer whatever order they were discovered in):

    1. ``positive`` if given;
    2. else, if every class is ``"0"`` or ``"1"``: ``"1"``;
    3. else, if every class is ``"false"`` or ``"true"`` (any case): the ``"true"`` one;
    4. else, with exactly two classes: the greater in string order (``"neg" < "pos"``,
       ``"no" < "yes"``, ``"ham" < "spam"``);
    5. else (one unrecognised class, or three or more): none -- ``roc_auc``, ``log_loss``,
       ``brier`` and ``ece`` are omitted.

    With more than two classes and an explicit ``positive`` the score metrics are one-vs-rest.

    **Scores.** NaN scores are ignored by the score metrics and counted in
    :attr:`scores_missing`; scores outside ``[0, 1]`` (including infinities) are clipped and
    counted in :attr:`scores_clipped`. Log-loss clips ``p`` to ``[1e-15, 1 - 1e-15]`` (computed
    as ``-log(max(p, 1e-15))`` and ``-log(max(1 - p, 1e-15))``, which avoids rounding
    ``1 - 1e-15``).

    **ROC AUC** is the trapezoidal area under the ROC curve of the *binned* scores, i.e.
    ``P(bin(s+) > bin(s-)) + 0.5 P(bin(s+) == bin(s-))`` over positive/negative pairs. It equals
    the exact AUC (``sklearn.metrics.roc_auc_score``) when scores sharing a bin are equal -- e.g.
    all scores on bin centres ``(i + 0.5) / score_bins`` -- and otherwise differs from it by at
    most half the fraction of positive/negative pairs that share a bin,
    ``0.5 * sum_b pos_b * neg_b / (P * N)``: about ``1 / (2 * score_bins)`` for scores spread
    evenly over ``[0, 1]``.

    **ECE** is ``sum_b (n_b / n) * |mean score_b - positive rate_b|`` over the calibration bins.

    **Precision, recall, F1** follow scikit-learn with ``zero_division=0`` per class; the
    macro averages are over the discovered classes that occur as a true or a predicted label
    (``"(other)"`` is excluded). ``accuracy`` compares the label strings, so it stays exact
    when classes are refused.

    **Merging** aligns classes by name; a class of ``other`` that ``self`` has no room for goes
    to ``self``'s ``"(other)"`` slot. Merging is exact (and order-independent) as long as no
    class was refused.

    Examples
    --------
    >>> sk = ClassificationSketch()
    >>> sk.update(["0", "1", "1", "0"], ["0", "1", "0", "0"], np.array([0.1, 0.8, 0.4, 0.3]))
    >>> m = sk.metrics()
    >>> m["accuracy"], m["recall:1"], m["precision:1"], m["roc_auc"]
    (0.75, 0.5, 1.0, 1.0)
    >>> sk.classes, sk.n
    (['0', '1'], 4)
    >>> pane = ClassificationSketch()
    >>> pane.update(["1", "0"], ["1", "1"], None)
    >>> sk.merge(pane)
    >>> sk.n, sk.metrics()["accuracy"]
    (6, 0.6666666666666666)
    >>> ClassificationSketch.from_snapshot(sk.snapshot()).metrics() == sk.metrics()
    True
    """

    def __init__(
        self,
        classes: Sequence[str] = (),
        max_classes: int = 20,
        score_bins: int = 100,
        calibration_bins: int = 10,
        positive: str | None = None,
    ) -> None:
        if max_classes < 1:
            raise ValueError("max_classes must be >= 1")
        if score_bins < 1 or calibration_bins < 1:
            raise ValueError("score_bins and calibration_bins must be >= 1")
        declared = [str(c) for c in classes]
        if len(set(declared)) != len(declared):
            raise ValueError("classes must be distinct")
        if positive is not None:
            positive = str(positive)
            if positive not in declared:
                declared.append(positive)
        if len(declared) > max_classes:
            raise ValueError("more declared classes than max_classes")
        self.max_classes: int = int(max_classes)
        self.score_bins: int = int(score_bins)
        self.calibration_bins: int = int(calibration_bins)
        self.positive: str | None = positive
        self.declared: tuple[str, ...] = tuple(declared)
        self._init_state()

    def _init_state(self) -> None:
        self.classes: list[str] = list(self.declared)
        """Discovered class names; index ``len(classes)`` of every per-class array is
        ``"(other)"``."""
        self._index: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        #: Derived, not state: the class list it was made for, its length, the sorted names
        #: and their indices in ``classes`` (see :meth:`_known`).
        self._lookup: tuple[list[str], int, np.ndarray, np.ndarray] | None = None
        m = len(self.classes) + 1
        self.confusion: np.ndarray = np.zeros((m, m), dtype=np.int64)
        """int64 ``[true, predicted]`` counts; last row/column is ``"(other)"``."""
        self.n_correct: int = 0
        self.classes_refused: int = 0
        """Labels (true or predicted) that fell into ``"(other)"``."""
        self.scores_missing: int = 0
        self.scores_clipped: int = 0
        self.score_hist: np.ndarray = np.zeros((m, self.score_bins), dtype=np.int64)
        """int64 ``[true class, score bin]`` counts."""
        self.calib_count: np.ndarray = np.zeros((m, self.calibration_bins), dtype=np.int64)
        """int64 ``[true class, calibration bin]`` counts."""
        self.calib_score_sum: np.ndarray = np.zeros(self.calibration_bins, dtype=np.float64)
        self.loss_sums: np.ndarray = np.zeros((m, _LOSS_COLUMNS), dtype=np.float64)
        """float64 ``[true class, (sum -log p, sum -log(1-p), sum (1-p)^2, sum p^2)]``."""

    # -- state ----------------------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of (true, predicted) pairs counted."""
        return int(self.confusion.sum())

    @property
    def n_scored(self) -> int:
        """Number of pairs with a (non-NaN) score."""
        return int(self.score_hist.sum())

    def reset(self) -> None:
        """Forget everything, including discovered classes (declared ones are kept)."""
        self._init_state()

    def copy(self) -> ClassificationSketch:
        """An independent copy."""
        out = _copy.copy(self)
        out.classes = list(self.classes)
        out._index = dict(self._index)
        for name in ("confusion", "score_hist", "calib_count", "calib_score_sum", "loss_sums"):
            setattr(out, name, getattr(self, name).copy())
        return out

    def _add_classes(self, names: Sequence[str]) -> None:
        """Append new classes, keeping ``"(other)"`` as the last slot of every array."""
        if not names:
            return
        k_old = len(self.classes)
        for c in names:
            self._index[c] = len(self.classes)
            self.classes.append(c)
        k_new = len(self.classes)
        where = np.append(np.arange(k_old), k_new)

        def grow(a: np.ndarray) -> np.ndarray:
            out = np.zeros((k_new + 1, *a.shape[1:]), dtype=a.dtype)
            out[where] = a
            return out

        cm = np.zeros((k_new + 1, k_new + 1), dtype=np.int64)
        cm[np.ix_(where, where)] = self.confusion
        self.confusion = cm
        self.score_hist = grow(self.score_hist)
        self.calib_count = grow(self.calib_count)
        self.loss_sums = grow(self.loss_sums)

    def _encode(self, yt: np.ndarray, yp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class indices of the labels, discovering new classes; ``-1`` for refused ones.

        Vectorised over the distinct labels of the batch: only they go through the dict.
        When every label is a known class (the usual case once the classes are found), a
        binary search of the sorted class names gives the same indices.
        """
        known = self._known(yt, yp)
        if known is not None:
            return known
        u_t, first_t, inv_t = np.unique(yt, return_index=True, return_inverse=True)
        u_p, first_p, inv_p = np.unique(yp, return_index=True, return_inverse=True)
        names_t, names_p = u_t.tolist(), u_p.tolist()
        room = self.max_classes - len(self.classes)
        if room > 0:
            # Position of a label's first appearance in the order t0, p0, t1, p1, ...
            first: dict[str, int] = {}
            for names, pos, offset in ((names_t, first_t, 0), (names_p, first_p, 1)):
                for c, i in zip(names, pos.tolist(), strict=True):
                    if c not in self._index:
                        first[c] = min(first.get(c, 2 * i + offset), 2 * i + offset)
            self._add_classes(sorted(first, key=first.__getitem__)[:room])
        get = self._index.get
        t = np.array([get(c, -1) for c in names_t], dtype=np.intp)[inv_t.ravel()]
        p = np.array([get(c, -1) for c in names_p], dtype=np.intp)[inv_p.ravel()]
        return t, p

    def _known(self, yt: np.ndarray, yp: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The class indices of ``yt`` and ``yp`` if every label is a known class, else None.

        The sorted class names are kept while the class list is the same object with the same
        length (classes are only appended, or the list replaced)."""
        classes = self.classes
        lookup = self._lookup
        if lookup is None or lookup[0] is not classes or lookup[1] != len(classes):
            if not classes:
                return None
            order = np.argsort(np.asarray(classes, dtype=str), kind="stable")
            names = np.asarray(classes, dtype=str)[order]
            if len(set(names.tolist())) != len(classes) or names.tolist() != sorted(classes):
                return None  # names NumPy cannot hold as they are (e.g. trailing NULs)
            lookup = self._lookup = (classes, len(classes), names, order.astype(np.intp))
        _, _, names, order = lookup
        out = []
        for y in (yt, yp):
            pos = np.minimum(np.searchsorted(names, y), names.size - 1)
            if not np.array_equal(names[pos], y):
                return None
            out.append(order[pos])
        return out[0], out[1]

    def update(
        self,
        y_true: Sequence[str] | np.ndarray,
        y_pred: Sequence[str] | np.ndarray,
        score: np.ndarray | None = None,
    ) -> None:
        """Add a batch of labelled predictions.

        Parameters
        ----------
        y_true, y_pred
            True and predicted class labels (strings; anything else goes through ``str``),
            same length.
        score
            Model score for the positive class, one per pair (NaN = none), or ``None``.
        """
        yt = np.asarray(y_true).astype(str).ravel()
        yp = np.asarray(y_pred).astype(str).ravel()
        n = yt.size
        if yp.size != n:
            raise ValueError("y_true and y_pred must have the same length")
        s: np.ndarray | None = None
        if score is not None:
            s = np.asarray(score, dtype=np.float64).ravel()
            if s.size != n:
                raise ValueError("score must have one value per pair")
        if n == 0:
            return
        t, p = self._encode(yt, yp)
        other = len(self.classes)
        refused_t, refused_p = t < 0, p < 0
        self.classes_refused += int(refused_t.sum() + refused_p.sum())
        t[refused_t] = other
        p[refused_p] = other
        m = other + 1
        self.confusion += np.bincount(t * m + p, minlength=m * m).reshape(m, m)
        correct = int(np.count_nonzero((t == p) & ~refused_t))
        both = refused_t & refused_p  # both in "(other)": compare the label strings
        self.n_correct += correct + int(np.count_nonzero(yt[both] == yp[both]))
        if s is None:
            return
        ok = ~np.isnan(s)
        self.scores_missing += int(n - np.count_nonzero(ok))
        s, ts = s[ok], t[ok]
        if s.size == 0:
            return
        self.scores_clipped += int(np.count_nonzero((s < 0.0) | (s > 1.0)))
        s = np.clip(s, 0.0, 1.0)
        nb, nc = self.score_bins, self.calibration_bins
        b = np.minimum((s * nb).astype(np.intp), nb - 1)
        self.score_hist += np.bincount(ts * nb + b, minlength=m * nb).reshape(m, nb)
        c = np.minimum((s * nc).astype(np.intp), nc - 1)
        self.calib_count += np.bincount(ts * nc + c, minlength=m * nc).reshape(m, nc)
        self.calib_score_sum += np.bincount(c, weights=s, minlength=nc)
        q = 1.0 - s  # exact for s >= 0.5; log1p below that
        nll_pos = -np.log(np.maximum(s, _PROB_EPS))
        nll_neg = np.where(
            s < 0.5, -np.log1p(-np.minimum(s, 0.5)), -np.log(np.maximum(q, _PROB_EPS))
        )
        # One bincount for the four columns: each (class, column) bin still sums its values
        # in pair order, as a bincount per column would.
        w = np.column_stack((nll_pos, nll_neg, q * q, s * s))
        cells = (ts * _LOSS_COLUMNS)[:, None] + _LOSS_RANGE
        self.loss_sums += np.bincount(
            cells.ravel(), weights=w.ravel(), minlength=m * _LOSS_COLUMNS
        ).reshape(m, _LOSS_COLUMNS)

    def merge(self, other: ClassificationSketch) -> None:
        """Add ``other``'s counts into this sketch (in place), aligning classes by name.

        Classes of ``other`` with at least one label are discovered here in ``other``'s order
        if there is room; the rest (and ``other``'s ``"(other)"`` slot) go to ``"(other)"``.
        Raises ``ValueError`` if the bin layouts or explicit positive classes differ.
        """
        if (other.score_bins, other.calibration_bins) != (self.score_bins, self.calibration_bins):
            raise ValueError("cannot merge sketches with different score/calibration bins")
        if other.positive != self.positive:
            raise ValueError("cannot merge sketches with different positive classes")
        if other is self:
            other = other.copy()
        labels = other.confusion.sum(axis=0) + other.confusion.sum(axis=1)
        room = self.max_classes - len(self.classes)
        new = [c for i, c in enumerate(other.classes) if labels[i] > 0 and c not in self._index][
            : max(room, 0)
        ]
        self._add_classes(new)
        mine = len(self.classes)
        where = np.array([self._index.get(c, mine) for c in other.classes] + [mine], np.intp)
        refused = np.flatnonzero(where[:-1] == mine)
        self.classes_refused += other.classes_refused + int(labels[refused].sum())
        np.add.at(self.confusion, (where[:, None], where[None, :]), other.confusion)
        np.add.at(self.score_hist, where, other.score_hist)
        np.add.at(self.calib_count, where, other.calib_count)
        np.add.at(self.loss_sums, where, other.loss_sums)
        self.calib_score_sum += other.calib_score_sum
        self.n_correct += other.n_correct
        self.scores_missing += other.scores_missing
        self.scores_clipped += other.scores_clipped

    # -- metrics --------------------------------------------------------------------------

    def positive_class(self) -> str | None:
        """The positive class of the score metrics (see the class notes), or ``None``."""
        if self.positive is not None:
            return self.positive
        names = set(self.classes)
        if not names:
            return None
        if names <= {"0", "1"}:
            return "1"
        if {c.lower() for c in names} <= {"false", "true"}:
            trues = sorted(c for c in names if c.lower() == "true")
            return trues[0] if trues else "true"
        if len(names) == 2:
            return max(names)
        return None

    def metrics(self) -> dict[str, float]:
        """Performance metrics; undefined ones are omitted (``{}`` when empty).

        Keys: ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``,
        ``precision:<class>``, ``recall:<class>``, ``f1:<class>`` and, with scores and a
        positive class, ``log_loss``, ``brier``, ``ece`` and (with both positives and
        negatives) ``roc_auc``.
        """
        n = self.n
        if n == 0:
            return {}
        out: dict[str, float] = {"accuracy": self.n_correct / n}
        cm = self.confusion
        true_count = cm.sum(axis=1).tolist()
        pred_count = cm.sum(axis=0).tolist()
        tp = np.diagonal(cm).tolist()
        per_class: dict[str, tuple[float, float, float]] = {}
        for i, c in sorted(enumerate(self.classes), key=operator.itemgetter(1)):
            t, p = true_count[i], pred_count[i]
            if t + p == 0:
                continue
            per_class[c] = (
                tp[i] / p if p else 0.0,
                tp[i] / t if t else 0.0,
                2 * tp[i] / (t + p),
            )
        if per_class:
            k = len(per_class)
            for j, name in enumerate(("precision", "recall", "f1")):
                out[f"{name}_macro"] = math.fsum(v[j] for v in per_class.values()) / k
            for c, values in per_class.items():
                for name, v in zip(("precision", "recall", "f1"), values, strict=True):
                    out[f"{name}:{c}"] = v
        out.update(self._score_metrics())
        return out

    def _score_metrics(self) -> dict[str, float]:
        n = self.n_scored
        name = self.positive_class()
        if n == 0 or name is None:
            return {}
        pos = self._index.get(name)  # None: the positive class was never seen
        # Per true class: the positive row contributes its "y = 1" sums, the others "y = 0".
        log_terms, brier_terms = [], []
        for r, (ll_pos, ll_neg, br_pos, br_neg) in enumerate(self.loss_sums.tolist()):
            log_terms.append(ll_pos if r == pos else ll_neg)
            brier_terms.append(br_pos if r == pos else br_neg)
        out: dict[str, float] = {}
        hist_all = self.score_hist.sum(axis=0)
        hist_pos = self.score_hist[pos] if pos is not None else np.zeros_like(hist_all)
        hist_neg = hist_all - hist_pos
        n_pos = int(hist_pos.sum())
        n_neg = n - n_pos
        if n_pos and n_neg:
            # Each positive beats the negatives in lower bins and ties (half) those in its bin.
            below = np.concatenate(([0], np.cumsum(hist_neg)[:-1]))
            weights = (2 * below + hist_neg).tolist()
            twice = sum(map(operator.mul, hist_pos.tolist(), weights))  # exact Python ints
            out["roc_auc"] = twice / (2 * n_pos * n_neg)
        out["log_loss"] = math.fsum(log_terms) / n
        out["brier"] = math.fsum(brier_terms) / n
        cal_pos = self.calib_count[pos] if pos is not None else np.zeros(self.calibration_bins)
        gaps = np.abs(self.calib_score_sum - cal_pos).tolist()
        out["ece"] = math.fsum(gaps) / n
        return out

    # -- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "v": SNAPSHOT_VERSION,
            "kind": "classification",
            "max_classes": self.max_classes,
            "score_bins": self.score_bins,
            "calibration_bins": self.calibration_bins,
            "positive": self.positive,
            "declared": list(self.declared),
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
            "n_correct": int(self.n_correct),
            "classes_refused": int(self.classes_refused),
            "scores_missing": int(self.scores_missing),
            "scores_clipped": int(self.scores_clipped),
            "score_hist": self.score_hist.tolist(),
            "calib_count": self.calib_count.tolist(),
            "calib_score_sum": self.calib_score_sum.tolist(),
            "loss_sums": self.loss_sums.tolist(),
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> ClassificationSketch:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version or shape."""
        _check_version(d, "classification")
        declared = [str(c) for c in d["declared"]]
        positive = d["positive"]
        sk = cls(
            [c for c in declared if c != positive],
            max_classes=int(d["max_classes"]),
            score_bins=int(d["score_bins"]),
            calibration_bins=int(d["calibration_bins"]),
            positive=positive,
        )
        sk.declared = tuple(declared)
        classes = [str(c) for c in d["classes"]]
        if classes[: len(declared)] != declared or len(set(classes)) != len(classes):
            raise ValueError("classes must start with the declared classes and be distinct")
        if len(classes) > sk.max_classes:
            raise ValueError("more classes than max_classes")
        sk.classes = classes
        sk._index = {c: i for i, c in enumerate(classes)}
        m = len(classes) + 1
        sk.confusion = _array(d["confusion"], np.int64, (m, m), "confusion")
        sk.score_hist = _array(d["score_hist"], np.int64, (m, sk.score_bins), "score_hist")
        sk.calib_count = _array(d["calib_count"], np.int64, (m, sk.calibration_bins), "calib_count")
        sk.calib_score_sum = _array(
            d["calib_score_sum"], np.float64, (sk.calibration_bins,), "calib_score_sum"
        )
        sk.loss_sums = _array(d["loss_sums"], np.float64, (m, _LOSS_COLUMNS), "loss_sums")
        sk.n_correct = int(d["n_correct"])
        sk.classes_refused = int(d["classes_refused"])
        sk.scores_missing = int(d["scores_missing"])
        sk.scores_clipped = int(d["scores_clipped"])
        return sk


def _combine_moments(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[float, float]:
    """Chan et al.'s pairwise update of (mean, sum of squared deviations)."""
    if n_b == 0:
        return mean_a, m2_a
    if n_a == 0:
        return mean_b, m2_b
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


class RegressionSketch:
    """Additive sketch of regression performance with log-binned absolute-error quantiles.

    Parameters
    ----------
    error_bins
        Number of geometric bins between ``min_abs_error`` and ``max_abs_error``. ``None``
        (default) gives 8 bins per decade: 120 bins for the default range ``[1e-6, 1e9)``.
    max_abs_error
        Top of the binned range (default ``1e9``).
    min_abs_error
        Bottom of the binned range (default ``1e-6``).

    Notes
    -----
    The absolute error ``|y_pred - y_true|`` is counted in ``error_bins + 3`` bins: exactly 0,
    ``(0, min_abs_error)``, the geometric bins ``[a, a*r)`` with
    ``r = (max_abs_error / min_abs_error) ** (1 / error_bins)``, and ``[max_abs_error, inf)``.
    A quantile is the order statistic of rank ``floor(q * (n - 1))`` (numpy's
    ``method="lower"``) estimated from its bin as ``2ab / (a + b)`` and clipped to the largest
    error seen, so for an error in the geometric range it is within a relative
    :attr:`relative_precision` ``= (r - 1) / (r + 1)`` of the true one (about 14.3% at 8 bins
    per decade), and exactly 0 for the zero bin. Below the range it is reported as
    ``min_abs_error`` (an upper bound), above it as the largest error seen (exact max).

    MAPE is ``mean(|e| / |y_true|)`` over pairs with ``y_true != 0`` (the others are counted in
    :attr:`mape_skipped`). R² is ``1 - SSE / SST`` with SST from the mergeable mean and sum of
    squared deviations of ``y_true`` (more robust than ``sum y² - (sum y)² / n``); it is omitted
    when SST is 0 (fewer than two pairs, or constant ``y_true``). Pairs with a non-finite value
    are skipped and counted in :attr:`invalid`.

    Examples
    --------
    >>> rs = RegressionSketch()
    >>> rs.update(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.0, 4.5]))
    >>> m = rs.metrics()
    >>> m["mae"], round(m["rmse"], 4), round(m["r2"], 4)
    (0.5, 0.6124, 0.7)
    >>> abs(m["abs_error_p50"] - 0.5) <= 0.5 * rs.relative_precision
    True
    >>> rs2 = RegressionSketch.from_snapshot(rs.snapshot())
    >>> rs2.merge(rs)
    >>> rs2.n, rs2.metrics()["mae"]
    (8, 0.5)
    """

    def __init__(
        self,
        error_bins: int | None = None,
        max_abs_error: float | None = None,
        min_abs_error: float = 1e-6,
    ) -> None:
        hi = 1e9 if max_abs_error is None else float(max_abs_error)
        lo = float(min_abs_error)
        if not (0.0 < lo < hi < math.inf):
            raise ValueError("need 0 < min_abs_error < max_abs_error < inf")
        if error_bins is None:
            error_bins = max(1, math.ceil(8 * math.log10(hi / lo) - 1e-9))
        if error_bins < 1:
            raise ValueError("error_bins must be >= 1")
        self.error_bins: int = int(error_bins)
        self.max_abs_error: float | None = max_abs_error
        self.min_abs_error: float = lo
        self.edges: np.ndarray = np.geomspace(lo, hi, self.error_bins + 1)
        """Edges of the geometric bins (``error_bins + 1`` floats)."""
        ratio = (hi / lo) ** (1.0 / self.error_bins)
        self.relative_precision: float = (ratio - 1.0) / (ratio + 1.0)
        """Bound on the relative error of a quantile in the geometric range."""
        self.reset()

    def reset(self) -> None:
        """Zero all counts and sums (the bin layout is kept)."""
        self.counts: np.ndarray = np.zeros(self.error_bins + 3, dtype=np.int64)
        """int64 counts: zero, below range, geometric bins, above range."""
        self._n: int = 0
        self.invalid: int = 0
        self.sum_abs: float = 0.0
        self.sum_sq: float = 0.0
        self.sum_ape: float = 0.0
        self.n_ape: int = 0
        self.mape_skipped: int = 0
        self.mean_true: float = 0.0
        self.m2_true: float = 0.0
        self.abs_max: float = 0.0

    @property
    def n(self) -> int:
        """Number of valid (finite) pairs counted."""
        return self._n

    def copy(self) -> RegressionSketch:
        """An independent copy."""
        out = _copy.copy(self)
        out.counts = self.counts.copy()
        return out

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Add a batch of (true, predicted) values of the same length."""
        yt = np.asarray(y_true, dtype=np.float64).ravel()
        yp = np.asarray(y_pred, dtype=np.float64).ravel()
        if yt.shape != yp.shape:
            raise ValueError("y_true and y_pred must have the same length")
        ok = np.isfinite(yt) & np.isfinite(yp)
        n = int(np.count_nonzero(ok))
        self.invalid += int(yt.size - n)
        if n == 0:
            return
        yt, yp = clip_magnitude(yt[ok]), clip_magnitude(yp[ok])  # sums stay finite
        e = yp - yt
        a = np.abs(e)
        self.sum_abs += float(a.sum())
        self.sum_sq += float(np.dot(e, e))
        nz = yt != 0.0
        n_nz = int(np.count_nonzero(nz))
        # A tiny true value (5e-324) would make the ratio infinite: its denominator is at
        # least the machine epsilon, as scikit-learn's mean_absolute_percentage_error does.
        self.sum_ape += float((a[nz] / np.maximum(np.abs(yt[nz]), _EPS)).sum())
        self.n_ape += n_nz
        self.mape_skipped += n - n_nz
        if yt.min() == yt.max():  # exact, so equal constant panes merge to SST == 0
            mean, m2 = float(yt[0]), 0.0
        else:
            mean = float(yt.mean())
            m2 = float(np.square(yt - mean).sum())
        self.mean_true, self.m2_true = _combine_moments(
            self._n, self.mean_true, self.m2_true, n, mean, m2
        )
        self._n += n
        self.abs_max = max(self.abs_max, float(a.max()))
        idx = np.searchsorted(self.edges, a, side="right") + 1
        idx[a == 0.0] = 0
        self.counts += np.bincount(idx, minlength=self.counts.size)

    def merge(self, other: RegressionSketch) -> None:
        """Add ``other``'s counts and sums into this sketch (in place).

        Raises ``ValueError`` if the bin layouts differ.
        """
        if other.counts.shape != self.counts.shape or not np.array_equal(other.edges, self.edges):
            raise ValueError("cannot merge sketches with different error bins")
        self.mean_true, self.m2_true = _combine_moments(
            self._n, self.mean_true, self.m2_true, other._n, other.mean_true, other.m2_true
        )
        self._n += other._n
        self.counts += other.counts
        self.invalid += other.invalid
        self.sum_abs += other.sum_abs
        self.sum_sq += other.sum_sq
        self.sum_ape += other.sum_ape
        self.n_ape += other.n_ape
        self.mape_skipped += other.mape_skipped
        self.abs_max = max(self.abs_max, other.abs_max)

    def quantile(self, q: float) -> float | None:
        """Estimated ``q``-quantile of the absolute error (``None`` when empty)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be in [0, 1]")
        if self._n == 0:
            return None
        rank = math.floor((self._n - 1) * q)
        b = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        if b == 0:
            return 0.0
        if b == 1:
            est = self.min_abs_error
        elif b == self.counts.size - 1:
            est = self.abs_max
        else:
            lo, hi = float(self.edges[b - 2]), float(self.edges[b - 1])
            est = 2.0 * lo * hi / (lo + hi)
        return min(est, self.abs_max)

    def metrics(self) -> dict[str, float]:
        """``mae``, ``rmse``, ``mape``, ``r2``, ``abs_error_p50/p90/p99``; undefined ones omitted
        (``{}`` when empty)."""
        n = self._n
        if n == 0:
            return {}
        out: dict[str, float] = {"mae": self.sum_abs / n, "rmse": math.sqrt(self.sum_sq / n)}
        if self.n_ape:
            out["mape"] = self.sum_ape / self.n_ape
        if self.m2_true > 0.0:
            out["r2"] = 1.0 - self.sum_sq / self.m2_true
        for name, q in (("abs_error_p50", 0.5), ("abs_error_p90", 0.9), ("abs_error_p99", 0.99)):
            v = self.quantile(q)
            if v is not None:
                out[name] = v
        return out

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "v": SNAPSHOT_VERSION,
            "kind": "regression",
            "error_bins": self.error_bins,
            "max_abs_error": self.max_abs_error,
            "min_abs_error": self.min_abs_error,
            "counts": self.counts.tolist(),
            "n": self._n,
            "invalid": self.invalid,
            "sum_abs": self.sum_abs,
            "sum_sq": self.sum_sq,
            "sum_ape": self.sum_ape,
            "n_ape": self.n_ape,
            "mape_skipped": self.mape_skipped,
            "mean_true": self.mean_true,
            "m2_true": self.m2_true,
            "abs_max": self.abs_max,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> RegressionSketch:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version or shape."""
        _check_version(d, "regression")
        mx = d["max_abs_error"]
        rs = cls(int(d["error_bins"]), None if mx is None else float(mx), float(d["min_abs_error"]))
        rs.counts = _array(d["counts"], np.int64, rs.counts.shape, "counts")
        rs._n = int(d["n"])
        if int(rs.counts.sum()) != rs._n:
            raise ValueError("counts do not add up to n")
        rs.invalid = int(d["invalid"])
        rs.sum_abs = float(d["sum_abs"])
        rs.sum_sq = float(d["sum_sq"])
        rs.sum_ape = float(d["sum_ape"])
        rs.n_ape = int(d["n_ape"])
        rs.mape_skipped = int(d["mape_skipped"])
        rs.mean_true = float(d["mean_true"])
        rs.m2_true = float(d["m2_true"])
        rs.abs_max = float(d["abs_max"])
        return rs
