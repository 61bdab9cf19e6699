from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.utils.multiclass import unique_labels

from stream_monitor.stats.performance_sketch import ClassificationSketch, RegressionSketch

SEEDS = [0, 1, 2, 3]
REL = 1e-12  # float sums in a different order / grouping

# Metrics computed from integer counts only: bitwise equal under any partition into panes.
EXACT_PREFIXES = ("accuracy", "precision", "recall", "f1", "roc_auc", "abs_error_p")


def _round_trip(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(d))
    return out


def _assert_same_metrics(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        if k.startswith(EXACT_PREFIXES):
            assert got[k] == v, k
        else:
            assert got[k] == pytest.approx(v, rel=REL, abs=1e-15), k


def _multiclass_data(
    rng: np.random.Generator,
    n: int,
    classes: Sequence[str],
    probs: Sequence[float],
    extra: Sequence[str] = ("never_true",),
) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced true labels; predictions right 70% of the time, else uniform over the classes
    and ``extra`` (classes that are only ever predicted)."""
    y_true = rng.choice(np.array(classes), size=n, p=np.asarray(probs))
    pool = np.array([*classes, *extra])
    noise = rng.choice(pool, size=n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, noise)
    return y_true, y_pred


def _binary_data(
    rng: np.random.Generator, n: int, bins: int, *, centres: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Imbalanced binary labels "0"/"1" (10% positives) with informative scores."""
    y = (rng.random(n) < 0.1).astype(np.int64)
    logit = rng.normal(size=n) + 1.5 * y - 1.0
    s = 1.0 / (1.0 + np.exp(-logit))
    if centres:
        s = (np.minimum(np.floor(s * bins), bins - 1) + 0.5) / bins
    pred = (s >= 0.5).astype(np.int64)
    return y.astype(str), pred.astype(str), s


def _brute_ece(y01: np.ndarray, s: np.ndarray, bins: int) -> float:
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(len(s)) if lo <= s[i] < hi or (b == bins - 1 and s[i] == hi)]
        if members:
            mean_score = sum(s[i] for i in members) / len(members)
            rate = sum(y01[i] for i in members) / len(members)
            total += len(members) / len(s) * abs(mean_score - rate)
    return total


# -- classification vs scikit-learn ---------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("classes", "probs"),
    [(["0", "1"], [0.9, 0.1]), (["a", "b", "c", "d"], [0.6, 0.25, 0.1, 0.05])],
    ids=["binary", "4-class"],
)
def test_label_metrics_match_sklearn(seed: int, classes: list[str], probs: list[float]) -> None:
    rng = np.random.default_rng(seed)
    y_true, y_pred = _multiclass_data(rng, 3000, classes, probs)
    sk = ClassificationSketch()
    sk.update(y_true, y_pred, None)
    m = sk.metrics()
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), rel=REL)
    labels = list(unique_labels(y_true, y_pred))
    assert "never_true" in labels
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        macro = fn(y_true, y_pred, average="macro", zero_division=0)
        assert m[f"{name}_macro"] == pytest.approx(macro, rel=REL)
        per_class = fn(y_true, y_pred, average=None, labels=labels, zero_division=0)
        for c, v in zip(labels, per_class, strict=True):
            assert m[f"{name}:{c}"] == pytest.approx(v, rel=REL, abs=1e-15)
    assert not any(k in m for k in ("roc_auc", "log_loss", "brier", "ece"))


def test_zero_division_classes_and_absent_classes() -> None:
    sk = ClassificationSketch(classes=["a", "b", "c", "unused"])
    sk.update(["a", "a", "b"], ["a", "c", "a"], None)  # "b" never predicted, "c" never true
    m = sk.metrics()
    assert m["precision:b"] == 0.0 and m["recall:b"] == 0.0 and m["f1:b"] == 0.0
    assert m["recall:c"] == 0.0 and m["precision:c"] == 0.0
    assert not any(k.endswith(":unused") for k in m)  # appears nowhere: undefined, omitted
    y_true, y_pred = ["a", "a", "b"], ["a", "c", "a"]
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert m[f"{name}_macro"] == pytest.approx(
            fn(y_true, y_pred, average="macro", zero_division=0), rel=REL
        )
    assert all(not math.isnan(v) for v in m.values())


@pytest.mark.parametrize("seed", SEEDS)
def test_score_metrics_on_bin_centres_match_sklearn(seed: int) -> None:
    bins = 50
    rng = np.random.default_rng(seed)
    y_true, y_pred, s = _binary_data(rng, 4000, bins, centres=True)
    sk = ClassificationSketch(score_bins=bins, calibration_bins=7)
    sk.update(y_true, y_pred, s)
    m = sk.metrics()
    y01 = (y_true == "1").astype(np.int64)
    assert sk.positive_class() == "1"
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y01, s), rel=REL)
    assert m["log_loss"] == pytest.approx(log_loss(y01, s), rel=REL)
    assert m["brier"] == pytest.approx(brier_score_loss(y01, s), rel=REL)
    assert m["ece"] == pytest.approx(_brute_ece(y01, s, 7), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_continuous_scores_within_documented_bound(seed: int) -> None:
    bins = 100
    rng = np.random.default_rng(seed)
    y_true, y_pred, s = _binary_data(rng, 4000, bins, centres=False)
    sk = ClassificationSketch(score_bins=bins)
    sk.update(y_true, y_pred, s)
    m = sk.metrics()
    y01 = (y_true == "1").astype(np.int64)
    exact = roc_auc_score(y01, s)
    # Documented bound: half the share of positive/negative pairs sharing a bin.
    pos = sk.score_hist[sk.classes.index("1")]
    neg = sk.score_hist.sum(axis=0) - pos
    bound = 0.5 * float(np.dot(pos, neg)) / (pos.sum() * neg.sum())
    assert abs(m["roc_auc"] - exact) <= bound + 1e-12
    assert abs(m["roc_auc"] - exact) <= 1.0 / bins
    assert m["log_loss"] == pytest.approx(log_loss(y01, s), rel=1e-9)
    assert m["brier"] == pytest.approx(brier_score_loss(y01, s), rel=REL)
    assert m["ece"] == pytest.approx(_brute_ece(y01, s, 10), rel=1e-9, abs=1e-12)


def test_one_vs_rest_with_explicit_positive() -> None:
    rng = np.random.default_rng(7)
    y_true, y_pred = _multiclass_data(rng, 2000, ["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1])
    s = np.clip(0.3 * (y_true == "c") + rng.random(2000) * 0.7, 0.001, 0.999)
    sk = ClassificationSketch(positive="c", score_bins=1000)
    assert sk.classes == ["c"]
    sk.update(y_true, y_pred, s)
    y01 = (y_true == "c").astype(np.int64)
    m = sk.metrics()
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y01, s), abs=1e-3)
    assert m["log_loss"] == pytest.approx(log_loss(y01, s), rel=1e-9)
    assert m["brier"] == pytest.approx(brier_score_loss(y01, s), rel=REL)
    no_positive = ClassificationSketch()
    no_positive.update(y_true, y_pred, s)
    assert no_positive.positive_class() is None
    assert not any(k in no_positive.metrics() for k in ("roc_auc", "log_loss", "brier", "ece"))


@pytest.mark.parametrize(
    ("labels", "positive"),
    [
        (["1", "0"], "1"),
        (["0"], "1"),
        (["True", "False"], "True"),
        (["false"], "true"),
        (["pos", "neg"], "pos"),
        (["neg", "pos"], "pos"),
        (["yes", "no"], "yes"),
        (["x"], None),
        (["a", "b", "c"], None),
    ],
)
def test_positive_class_rule_is_order_independent(labels: list[str], positive: str) -> None:
    sk = ClassificationSketch()
    sk.update(labels, labels, np.full(len(labels), 0.5))
    assert sk.positive_class() == positive
    reversed_sk = ClassificationSketch()
    reversed_sk.update(labels[::-1], labels[::-1], None)
    assert reversed_sk.positive_class() == positive


def test_single_class_pane_scores_and_missing_auc() -> None:
    sk = ClassificationSketch()
    sk.update(["0", "0"], ["0", "1"], np.array([0.2, 0.6]))
    m = sk.metrics()
    assert "roc_auc" not in m  # no positives
    assert m["log_loss"] == pytest.approx(log_loss([0, 0], [0.2, 0.6], labels=[0, 1]), rel=REL)
    assert m["brier"] == pytest.approx((0.04 + 0.36) / 2, rel=REL)


def test_nan_and_out_of_range_scores() -> None:
    y_true = ["0", "1", "1", "0", "1", "0"]
    y_pred = ["0", "1", "0", "0", "1", "1"]
    s = np.array([0.1, np.nan, 1.7, -0.2, 0.9, np.inf])
    sk = ClassificationSketch(score_bins=10)
    sk.update(y_true, y_pred, s)
    assert (sk.scores_missing, sk.scores_clipped, sk.n, sk.n_scored) == (1, 3, 6, 5)
    keep = ~np.isnan(s)
    y01 = (np.array(y_true) == "1").astype(np.int64)[keep]
    sc = np.clip(s[keep], 0.0, 1.0)
    m = sk.metrics()
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["brier"] == pytest.approx(brier_score_loss(y01, sc), rel=REL)
    assert m["log_loss"] == pytest.approx(
        np.mean(-np.log(np.where(y01 == 1, np.maximum(sc, 1e-15), np.maximum(1 - sc, 1e-15)))),
        rel=1e-9,
    )
    only_nan = ClassificationSketch()
    only_nan.update(["0", "1"], ["0", "1"], np.array([np.nan, np.nan]))
    assert set(only_nan.metrics()) >= {"accuracy"}
    assert not any(k in only_nan.metrics() for k in ("roc_auc", "log_loss", "brier", "ece"))


# -- additivity -----------------------------------------------------------------------------


def _panes(rng: np.random.Generator, n: int, k: int) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=k - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", [["neg", "pos"], ["a", "b", "c", "d"]], ids=["bin", "multi"])
def test_classification_merge_of_panes_equals_one_sketch(seed: int, classes: list[str]) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    binary = len(classes) == 2
    probs = [0.85, 0.15] if binary else [0.5, 0.3, 0.15, 0.05]
    extra = () if binary else ("never_true",)
    y_true, y_pred = _multiclass_data(rng, n, classes, probs, extra)
    s = rng.random(n)
    s[rng.random(n) < 0.05] = np.nan
    positive = None if binary else "c"  # binary: resolved to "pos" by the default rule
    whole = ClassificationSketch(positive=positive, score_bins=20, calibration_bins=5)
    whole.update(y_true, y_pred, s)
    panes = []
    for sl in _panes(rng, n, 12):
        p = ClassificationSketch(positive=positive, score_bins=20, calibration_bins=5)
        p.update(y_true[sl], y_pred[sl], s[sl])
        panes.append(p)
    # Panes saw the classes in different orders; merge them in a random order, too.
    orders = {tuple(p.classes) for p in panes}
    assert len(orders) > 1
    merged = ClassificationSketch(positive=positive, score_bins=20, calibration_bins=5)
    for i in rng.permutation(len(panes)):
        merged.merge(panes[i])
    want = whole.metrics()
    assert {"roc_auc", "log_loss", "brier", "ece"} <= set(want)
    assert binary or "precision:never_true" in want
    _assert_same_metrics(merged.metrics(), want)
    assert merged.n == whole.n and merged.n_scored == whole.n_scored
    assert merged.scores_missing == whole.scores_missing
    # Same counts once aligned by class name.
    order = [merged.classes.index(c) for c in whole.classes] + [len(merged.classes)]
    assert np.array_equal(merged.confusion[np.ix_(order, order)], whole.confusion)
    assert np.array_equal(merged.score_hist[order], whole.score_hist)
    # Merging into a copy of the first pane works too and leaves the pane untouched.
    first = panes[0].copy()
    before = panes[0].snapshot()
    for p in panes[1:]:
        first.merge(p)
    _assert_same_metrics(first.metrics(), want)
    assert panes[0].snapshot() == before


def test_merge_into_self_doubles_counts() -> None:
    sk = ClassificationSketch()
    sk.update(["0", "1", "1"], ["0", "0", "1"], np.array([0.2, 0.4, 0.9]))
    m = sk.metrics()
    sk.merge(sk)
    assert sk.n == 6
    _assert_same_metrics(sk.metrics(), m)


def test_merge_rejects_different_layouts() -> None:
    with pytest.raises(ValueError, match="bins"):
        ClassificationSketch(score_bins=10).merge(ClassificationSketch(score_bins=20))
    with pytest.raises(ValueError, match="positive"):
        ClassificationSketch(positive="a").merge(ClassificationSketch())
    with pytest.raises(ValueError, match="bins"):
        RegressionSketch().merge(RegressionSketch(error_bins=10))


# -- bounds, snapshots, empty ---------------------------------------------------------------


def test_more_classes_than_max_are_refused_and_bounded() -> None:
    rng = np.random.default_rng(3)
    names = np.array([f"c{i:02d}" for i in range(30)])
    y_true = rng.choice(names, size=5000)
    y_pred = np.where(rng.random(5000) < 0.5, y_true, rng.choice(names, size=5000))
    sk = ClassificationSketch(max_classes=5)
    for sl in _panes(rng, 5000, 7):
        sk.update(y_true[sl], y_pred[sl], None)
    assert len(sk.classes) == 5 and sk.confusion.shape == (6, 6)
    kept = set(sk.classes)
    # First five distinct labels in order of appearance (true before predicted).
    interleaved = np.column_stack([y_true, y_pred]).ravel().tolist()
    assert sk.classes == list(dict.fromkeys(interleaved))[:5]
    refused = sum(v not in kept for v in y_true) + sum(v not in kept for v in y_pred)
    assert sk.classes_refused == refused
    assert sk.n == 5000
    # Accuracy compares strings, so it stays exact despite the shared "(other)" slot.
    assert sk.metrics()["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), rel=REL)
    assert not any("(other)" in k for k in sk.metrics())
    other = ClassificationSketch(max_classes=5)
    other.update(y_true[::-1], y_pred[::-1], None)
    total_refused = sk.classes_refused + other.classes_refused
    moved = int(other.confusion.sum(axis=0)[:-1].sum() + other.confusion.sum(axis=1)[:-1].sum())
    moved -= sum(
        int(other.confusion[i].sum() + other.confusion[:, i].sum())
        for i, c in enumerate(other.classes)
        if c in kept
    )
    sk.merge(other)
    assert sk.confusion.shape == (6, 6) and sk.n == 10000
    assert sk.classes_refused == total_refused + moved


def test_declared_classes_validation() -> None:
    with pytest.raises(ValueError):
        ClassificationSketch(classes=["a", "a"])
    with pytest.raises(ValueError):
        ClassificationSketch(classes=["a", "b", "c"], max_classes=2)
    sk = ClassificationSketch(classes=["x"], positive="y")
    assert sk.classes == ["x", "y"]
    sk.update(["z"], ["z"], None)
    sk.reset()
    assert sk.classes == ["x", "y"] and sk.metrics() == {} and sk.n == 0


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_classification_snapshot_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true, y_pred = _multiclass_data(rng, 1000, ["a", "b", "c"], [0.5, 0.3, 0.2])
    s = rng.random(1000)
    sk = ClassificationSketch(classes=["b"], positive="a", max_classes=3, score_bins=16)
    sk.update(y_true, y_pred, s)
    assert sk.classes_refused > 0  # "never_true" refused
    back = ClassificationSketch.from_snapshot(_round_trip(sk.snapshot()))
    assert back.metrics() == sk.metrics()
    assert back.snapshot() == sk.snapshot()
    assert back.declared == sk.declared
    back.update(y_true, y_pred, s)  # still usable
    sk.merge(sk.copy())
    assert back.snapshot() == sk.snapshot()
    bad = sk.snapshot() | {"v": 99}
    with pytest.raises(ValueError, match="version"):
        ClassificationSketch.from_snapshot(bad)
    with pytest.raises(ValueError, match="kind"):
        ClassificationSketch.from_snapshot(RegressionSketch().snapshot())
    with pytest.raises(ValueError, match="shape"):
        ClassificationSketch.from_snapshot(sk.snapshot() | {"score_hist": [[1, 2]]})


def test_empty_sketches() -> None:
    for sk in (ClassificationSketch(), ClassificationSketch(classes=["a", "b"], positive="a")):
        assert sk.metrics() == {} and sk.n == 0
        sk.update([], [], np.array([]))
        assert sk.metrics() == {}
        assert ClassificationSketch.from_snapshot(_round_trip(sk.snapshot())).metrics() == {}
    rs = RegressionSketch()
    assert rs.metrics() == {} and rs.n == 0 and rs.quantile(0.5) is None
    rs.update(np.array([]), np.array([]))
    rs.update(np.array([np.nan]), np.array([1.0]))
    assert rs.metrics() == {} and rs.invalid == 1
    assert RegressionSketch.from_snapshot(_round_trip(rs.snapshot())).metrics() == {}


def test_length_mismatch_leaves_state_untouched() -> None:
    sk = ClassificationSketch()
    with pytest.raises(ValueError):
        sk.update(["a", "b"], ["a"], None)
    with pytest.raises(ValueError):
        sk.update(["a", "b"], ["a", "b"], np.array([0.5]))
    assert sk.classes == [] and sk.n == 0
    with pytest.raises(ValueError):
        RegressionSketch().update(np.ones(2), np.ones(3))


# -- regression -----------------------------------------------------------------------------


def _regression_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.normal(50.0, 20.0, size=n)
    y[rng.random(n) < 0.05] = 0.0  # exact zeros: skipped by MAPE
    err = rng.lognormal(mean=0.0, sigma=2.0, size=n) * rng.choice([-1.0, 1.0], size=n)
    err[rng.random(n) < 0.03] = 0.0  # exact hits
    return y, y + err


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_matches_sklearn_and_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, yhat = _regression_data(rng, 5000)
    rs = RegressionSketch()
    rs.update(y, yhat)
    m = rs.metrics()
    assert m["mae"] == pytest.approx(mean_absolute_error(y, yhat), rel=REL)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, yhat)), rel=REL)
    nz = y != 0
    assert rs.mape_skipped == int((~nz).sum())
    assert m["mape"] == pytest.approx(mean_absolute_percentage_error(y[nz], yhat[nz]), rel=1e-9)
    assert m["r2"] == pytest.approx(r2_score(y, yhat), rel=1e-9)
    a = np.abs(yhat - y)
    alpha = rs.relative_precision
    assert alpha == pytest.approx((10 ** (1 / 8) - 1) / (10 ** (1 / 8) + 1))
    for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0):
        est = rs.quantile(q)
        true = float(np.quantile(a, q, method="lower"))
        assert est is not None
        if true == 0.0:
            assert est == 0.0
        else:
            assert abs(est - true) <= alpha * true * (1 + 1e-9), q
        # Against numpy's default (linear) quantile: within alpha of the bracketing values.
        lo, hi = np.quantile(a, q, method="lower"), np.quantile(a, q, method="higher")
        assert lo * (1 - alpha) - 1e-12 <= est <= hi * (1 + alpha) + 1e-12
    assert m["abs_error_p99"] == rs.quantile(0.99)
    assert rs.quantile(1.0) == pytest.approx(a.max(), rel=alpha)


def test_regression_custom_range_zero_and_overflow() -> None:
    rs = RegressionSketch(error_bins=16, max_abs_error=100.0, min_abs_error=1e-2)
    assert rs.counts.size == 19
    y = np.zeros(10)
    yhat = np.array([0, 0, 0, 0, 0, 0, 1e-3, 5.0, 500.0, 2000.0])
    rs.update(y, yhat)
    assert rs.counts[0] == 6 and rs.counts[1] == 1 and rs.counts[-1] == 2
    assert rs.quantile(0.5) == 0.0
    assert rs.quantile(1.0) == 2000.0  # above the range: the exact maximum
    assert rs.quantile(6 / 9) == 1e-2  # below the range: reported as min_abs_error
    m = rs.metrics()
    assert "mape" not in m and "r2" not in m  # all y == 0: no MAPE, SST == 0
    assert rs.mape_skipped == 10


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_merge_of_panes_equals_one_sketch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    y, yhat = _regression_data(rng, n)
    yhat[rng.random(n) < 0.01] = np.nan
    whole = RegressionSketch()
    whole.update(y, yhat)
    merged = RegressionSketch()
    panes = []
    for sl in _panes(rng, n, 15):
        p = RegressionSketch()
        p.update(y[sl], yhat[sl])
        panes.append(p)
    for i in rng.permutation(len(panes)):
        merged.merge(panes[i])
    _assert_same_metrics(merged.metrics(), whole.metrics())
    assert np.array_equal(merged.counts, whole.counts)
    assert (merged.n, merged.invalid, merged.n_ape) == (whole.n, whole.invalid, whole.n_ape)
    back = RegressionSketch.from_snapshot(_round_trip(merged.snapshot()))
    assert back.metrics() == merged.metrics()
    assert back.snapshot() == merged.snapshot()
    c = merged.copy()
    c.merge(merged)
    assert c.n == 2 * merged.n and merged.n == whole.n
    merged.reset()
    assert merged.metrics() == {}


def test_constant_target_across_panes_omits_r2() -> None:
    whole, merged = RegressionSketch(), RegressionSketch()
    for _ in range(5):
        pane = RegressionSketch()
        pane.update(np.full(7, 0.1), np.full(7, 0.3))
        merged.merge(pane)
        whole.update(np.full(7, 0.1), np.full(7, 0.3))
    assert "r2" not in merged.metrics() and "r2" not in whole.metrics()
    one = RegressionSketch()
    one.update(np.array([3.0]), np.array([4.0]))
    assert "r2" not in one.metrics() and one.metrics()["mae"] == 1.0
    with pytest.raises(ValueError, match="version"):
        RegressionSketch.from_snapshot(one.snapshot() | {"v": 0})
