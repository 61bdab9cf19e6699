"""The label side's batch paths against the per-label paths they replace, state for state on
seeded streams: the join's delay histograms by column (``_Delays.observe_many``,
``LabelJoin._observe_delays``) and its batched removal notes against one label at a time, the
concept-drift monitor's run of plain segment updates against ``_step`` per error, the
performance monitor's transposed columns against one list per column, and the partition's
label loop against the one it replaced (kept here as the reference)."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from stream_monitor.config import MonitorConfig, PerformanceConfig
from stream_monitor.events.schema import AlertEvent, LabelEvent, PredictionEvent
from stream_monitor.monitor.concept import (
    ConceptDriftMonitor,
    Metric,
)
from stream_monitor.monitor.join import DELAY_BUCKETS, LabelJoin, PendingPrediction, _Delays
from stream_monitor.monitor.partition import Failure, PartitionState, _interleave
from stream_monitor.monitor.performance import PerformanceMonitor
from stream_monitor.simulate import TrafficGenerator

# ------------------------------------------------------------------------- join: delays


def _delays(rng: random.Random, n: int) -> list[float]:
    """Delays of every kind a label can give: bucket bounds exactly, just around them,
    negative (clock skew), zero of both signs, non-finite, huge, and ordinary ones."""
    special = [*DELAY_BUCKETS, 0.0, -0.0, math.inf, -math.inf, math.nan, 1e300, -1e-300]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            out.append(rng.choice(special))
        elif r < 0.3:
            out.append(math.nextafter(rng.choice(DELAY_BUCKETS), rng.choice([0.0, math.inf])))
        elif r < 0.4:
            out.append(-rng.expovariate(1.0))
        else:
            out.append(rng.expovariate(1 / rng.choice([0.5, 30.0, 5000.0, 1e6])))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_delays_by_column_are_observe_per_delay_bit_for_bit(seed: int) -> None:
    rng = random.Random(seed)
    one, many = _Delays(), _Delays()
    for _ in range(20):
        ds = [d for d in _delays(rng, rng.randrange(0, 300)) if math.isfinite(d) and d >= 0]
        for d in ds:
            one.observe(d)
        many.observe_many(np.asarray(ds, dtype=np.float64))
        assert many.counts == one.counts
        assert many.total == one.total  # the same sum, in the same order: equal, not close
        assert type(many.total) is float and all(type(c) is int for c in many.counts)
        assert many.count == one.count
    assert one.count > 0


@pytest.mark.parametrize("seed", range(8))
def test_observe_delays_is_observe_delay_per_label(seed: int) -> None:
    rng = random.Random(seed)
    a, b = (LabelJoin(capacity=10, ttl_seconds=60.0) for _ in "ab")
    for _ in range(15):
        model = rng.choice("xyz")
        ds = _delays(rng, rng.randrange(0, 200))
        for d in ds:
            a._observe_delay(model, d)
        b.negative_delays += b._observe_delays(model, ds)
        assert b.negative_delays == a.negative_delays
        assert {m: b.delay_histogram(m) for m in "xyz"} == {m: a.delay_histogram(m) for m in "xyz"}
        assert b._delays.keys() == a._delays.keys()  # no histogram for only non-finite delays


@pytest.mark.parametrize("seed", range(4))
def test_removed_many_is_removed_per_sequence_number(seed: int) -> None:
    rng = random.Random(seed)
    a, b = (LabelJoin(capacity=50, ttl_seconds=60.0) for _ in "ab")
    a._gone, b._gone = [], []
    while a._gone is not None:
        seqs = [rng.randrange(1000) for _ in range(rng.randrange(0, 12))]
        for s in seqs:
            a._removed(s)
        b._removed_many(seqs)
        assert b._gone == a._gone
    b._removed_many([1, 2])
    assert b._gone is None


@pytest.mark.parametrize("seed", range(6))
def test_match_many_is_match_per_label_on_long_batches(seed: int) -> None:
    """Many labels per call over several models, expiring heads between matches, a bound on
    the removal notes that is crossed in the middle of a call, and the undo journal on."""
    rng = random.Random(seed)
    a = LabelJoin(capacity=120, ttl_seconds=40.0, model_capacity=60)
    a.settle(a.mark())
    a._gone = []
    t = 0.0
    added: list[tuple[str, str, float]] = []
    for step in range(30):
        for _ in range(rng.randrange(5, 40)):
            t += rng.choice([0.0, 0.5, 2.0])
            m = rng.choice("abcd")
            ts = t - rng.choice([0.0, 0.0, 10.0, 39.0, 45.0])
            added.append((m, f"e{rng.randrange(300)}", ts))
            a.add_prediction(*added[-1], label="1", score=0.5)
        labels = []
        for _ in range(rng.randrange(0, 60)):
            m, e, ts = rng.choice(added[-80:])
            if rng.random() < 0.1:
                m = "unknown"
            labels.append((m, e, ts + rng.choice([0.0, 1.0, -2.0, 30.0, 1e4, math.nan, math.inf])))
        b = copy.deepcopy(a)
        one = [a.match(m, e, count_unmatched=False, label_timestamp=ts) for m, e, ts in labels]
        assert b.match_many(iter(labels)) == one
        assert b.snapshot() == a.snapshot()
        assert b._journal == a._journal and b._gone == a._gone
        assert (b.matched, b.expired, b._size, b.negative_delays) == (
            a.matched,
            a.expired,
            a._size,
            a.negative_delays,
        )
        assert b.by_model == a.by_model
        assert {m: b.delay_histogram(m) for m in "abcd"} == {
            m: a.delay_histogram(m) for m in "abcd"
        }
        if step % 7 == 6:
            a.settle(a.mark())
            a._gone = []
    assert a.matched > 0 and a.expired > 0


def test_match_many_counts_the_match_of_a_bad_timestamp_as_match_does() -> None:
    a, b = (LabelJoin(capacity=10, ttl_seconds=60.0) for _ in "ab")
    for j in (a, b):
        j.settle(j.mark())
        for e, t in [("x", 0.0), ("y", 1.0)]:
            j.add_prediction("m", e, t, label="1", score=None)
    with pytest.raises(TypeError):
        a.match("m", "x", count_unmatched=False, label_timestamp=2.0)
        a.match("m", "y", count_unmatched=False, label_timestamp="late")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        b.match_many([("m", "x", 2.0), ("m", "y", "late")])  # type: ignore[list-item]
    assert b.snapshot() == a.snapshot() and b._journal == a._journal
    assert b.matched == a.matched == 2 and b.delay_histogram("m")[2] == 1


# ------------------------------------------------------------------ concept drift: _feed


class _PerError(ConceptDriftMonitor):
    """The monitor with every error through the full ``_step``, as ``_feed`` took them one by
    one before: every position is a stop, so no error only joins the segment in bulk."""

    def _stops(self, start: int, n: int, firings: Collection[int], judge: bool) -> Iterator[int]:
        yield from range(n)
        while True:
            yield n


def _error_stream(rng: np.random.Generator, metric: Metric) -> np.ndarray:
    """Errors whose level steps up, down and up again, with NaNs sprinkled in."""
    levels = [0.1, 0.35, 0.05, 0.3]
    n = [1500, 1200, 1500, 1800]
    if metric == "error_rate":
        parts = [(rng.random(k) < p).astype(float) for p, k in zip(levels, n, strict=True)]
    else:
        parts = [np.abs(rng.normal(0, 10 * p, k)) for p, k in zip(levels, n, strict=True)]
    x = np.concatenate(parts)
    x[rng.random(x.size) < 0.01] = np.nan
    return x


@pytest.mark.parametrize(
    ("metric", "kinds"),
    [
        ("error_rate", ("adwin",)),
        ("error_rate", ("adwin", "page_hinkley", "ddm", "eddm", "hddm_a", "hddm_w")),
        ("absolute_error", ("adwin", "page_hinkley", "hddm_a")),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_concept_feed_is_step_per_error(metric: Metric, kinds: tuple[str, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = _error_stream(rng, metric)
    kw: dict[str, Any] = {"baseline_size": int(rng.integers(50, 700)), "cooldown": 300}
    fast, slow = ConceptDriftMonitor(kinds, **kw), _PerError(kinds, **kw)
    a, judge = 0, bool(seed % 2) or metric == "absolute_error"
    while a < x.size:
        b = a + int(rng.choice([1, 7, 99, 100, 101, 333, 1000, 2500]))
        if judge or rng.random() < 0.5:
            assert fast.judge(x[a:b], metric) == slow.judge(x[a:b], metric)
        else:
            assert fast.update(x[a:b], metric) == slow.update(x[a:b], metric)
        assert fast.snapshot() == slow.snapshot()  # segment moments bit for bit
        a = b
    assert fast.merged_detections >= 1 and fast.snapshot()["changed"]


# ---------------------------------------------------------------- performance: columns


def _old_columns(
    preds: Sequence[PendingPrediction],
) -> tuple[np.ndarray, list[str | None], np.ndarray, list[str | None]]:
    ts = np.array([p.timestamp for p in preds], dtype=float)
    score = np.array([np.nan if p.score is None else p.score for p in preds], dtype=float)
    versions = [getattr(p, "model_version", None) for p in preds]
    return ts, [p.label for p in preds], score, versions


@pytest.mark.parametrize("seed", range(4))
def test_performance_columns_are_one_list_per_column(seed: int) -> None:
    rng = random.Random(seed)
    for n in (0, 1, 2, 50, 500):
        preds = [
            PendingPrediction(
                rng.random() * 1e9,
                rng.choice(["0", "1", "cat", None]),
                rng.choice([None, 0.0, 1.0, rng.random()]),
                rng.choice([None, "v1", "v2"]),
                rng.choice([None, ("k=a",)]),
            )
            for _ in range(n)
        ]
        got, want = PerformanceMonitor._columns(preds), _old_columns(preds)
        for g, w in zip(got, want, strict=True):
            if isinstance(w, np.ndarray):
                assert isinstance(g, np.ndarray) and g.dtype == w.dtype and g.shape == w.shape
                assert np.array_equal(g, w, equal_nan=True)
            else:
                assert g == w and type(g) is list


def test_performance_rows_of_no_pairs_are_as_before() -> None:
    pm = PerformanceMonitor(PerformanceConfig())
    pm.task = "classification"
    rows = pm._rows([])
    assert rows is not None
    ts, y_true, y_pred, score, versions, kept = rows
    assert (ts.shape, ts.dtype, score.shape, score.dtype) == ((0,), float, (0,), float)
    assert (y_true, y_pred, versions, kept) == ([], [], [], [])


# ------------------------------------------------------------------- partition: labels


class _PerLabel(PartitionState):
    """The partition with the label loop of ``_process`` as it was (three dict appends per
    label, the join's keys built as a list)."""

    def _process(
        self,
        predictions: Sequence[PredictionEvent],
        labels: Sequence[LabelEvent],
        decoded: Any = None,  # not given by these tests
    ) -> list[AlertEvent]:
        assert decoded is None
        seen: dict[str, list[Any]] = {}
        labelled_obs: dict[str, list[Any]] = {}
        joined: dict[str, list[tuple[PendingPrediction, Any]]] = {}
        joined_at: dict[str, list[float]] = {}
        met_early: dict[str, list[PredictionEvent]] = {}
        by_model: dict[str, list[PredictionEvent]] = {}
        for e in predictions:
            by_model.setdefault(e.model_id, []).append(e)
        for model_id, events in by_model.items():
            model = self._model(model_id, events[0].model_version)
            if model is None:
                self.events_refused += len(events)
                continue
            try:
                seen[model_id] = model.update(events)
                self._join_predictions(
                    model_id, events, model.last_routes, joined, joined_at, met_early
                )
            except Exception as exc:
                self._failures.append(Failure(list(events), exc))
        early, join = self.early, self.join
        if predictions and len(early):
            early.expire_behind(join.model_watermark)
        labelled: dict[str, list[LabelEvent]] = {}
        found_all = join.match_many([(lab.model_id, lab.event_id, lab.timestamp) for lab in labels])
        for lab, found in zip(labels, found_all, strict=True):
            model_id = lab.model_id
            if found is None:
                wm = join.model_watermark(model_id)
                if wm is not None and lab.timestamp < wm - early.grace_seconds:
                    join.count_unmatched(model_id)
                    self.labels_behind += 1
                else:
                    early.add(model_id, lab.event_id, lab.timestamp, lab.label)
                continue
            pairs = joined.get(model_id)
            if pairs is None:
                pairs = joined[model_id] = []
                joined_at[model_id] = []
            pairs.append((found, lab.label))
            joined_at[model_id].append(lab.timestamp)
            labelled.setdefault(model_id, []).append(lab)
        for model_id, pairs in joined.items():
            model = self.models.get(model_id)
            if model is not None:
                try:
                    labelled_obs[model_id] = model.update_errors(pairs, joined_at[model_id])
                except Exception as exc:
                    involved = [*labelled.get(model_id, []), *met_early.get(model_id, [])]
                    self._failures.append(Failure(involved, exc))
        observations = _interleave(seen, labelled_obs)
        alerts = self.tracker.observe_many(observations)
        if predictions:
            alerts.extend(self._forget_idle())
        return alerts


def _traffic(seed: int, n: int) -> list[PredictionEvent | LabelEvent]:
    """The simulator's mixed traffic, its labels moved around: some read before their
    prediction (early labels), some read twice, some of a model that never predicted here."""
    gen = TrafficGenerator(seed=seed, drift_at=n // 2)
    events: list[PredictionEvent | LabelEvent] = []
    for r in gen.events(n):
        obj = orjson.loads(r.value)
        if r.topic == "predictions":
            events.append(PredictionEvent.model_validate(obj))
        else:
            events.append(LabelEvent.model_validate(obj))
    rng = random.Random(seed)
    at: dict[tuple[str, str], int] = {}  # each prediction's place
    keyed: list[tuple[float, PredictionEvent | LabelEvent]] = []
    for i, e in enumerate(events):
        if isinstance(e, PredictionEvent):
            at[(e.model_id, e.event_id)] = i
            keyed.append((i, e))
            continue
        r = rng.random()
        if r < 0.05:  # read a little before its prediction
            keyed.append((at[(e.model_id, e.event_id)] - rng.uniform(0.5, 40.0), e))
        elif r < 0.08:  # read twice: unmatched the second time
            keyed += [(i, e), (i + rng.uniform(0.0, 200.0), e)]
        elif r < 0.09:
            keyed.append((i, e.model_copy(update={"model_id": "nobody"})))
        else:
            keyed.append((i, e))
    keyed.sort(key=lambda t: t[0])
    return [e for _, e in keyed]


@pytest.mark.parametrize("seed", range(3))
def test_partition_labels_are_the_per_label_loop(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "unused:9092",
            "labels": {"capacity": 600, "early_capacity": 100, "early_grace_seconds": 5.0},
        }
    )
    events = _traffic(seed, 5000)
    fast, slow = PartitionState(0, cfg), _PerLabel(0, cfg)
    slow.tracker._secret = fast.tracker._secret  # (random per tracker: alert ids)
    rng = random.Random(seed)
    i = 0
    while i < len(events):
        chunk = events[i : i + rng.choice([1, 13, 200, 900])]
        preds = [e for e in chunk if isinstance(e, PredictionEvent)]
        labels = [e for e in chunk if isinstance(e, LabelEvent)]
        assert fast.process(preds, labels) == slow.process(preds, labels)
        assert fast.snapshot() == slow.snapshot()
        assert fast.join._journal == slow.join._journal
        assert fast.labels_behind == slow.labels_behind
        i += len(chunk)
    assert fast.join.matched > 0 and fast.labels_behind > 0 and fast.join.unmatched_labels > 0
    assert fast.early.parked > 0 and fast.early.matched > 0
    assert any(m.concept.n > 0 for m in fast.models.values())
    # A model's label processing that fails reports the same events either way.
    from stream_monitor.monitor.model import ModelMonitor

    def broken(self: ModelMonitor, pairs: Any, observed_at: Any) -> list[Any]:
        raise RuntimeError(f"broken {self.model_id}")

    monkeypatch.setattr(ModelMonitor, "update_errors", broken)
    truth = {e.model_id: e.label for e in events if isinstance(e, LabelEvent)}
    preds = [e for e in events if isinstance(e, PredictionEvent)][-300:]
    preds = [e.model_copy(update={"event_id": e.event_id + "+"}) for e in preds]
    labels = [
        LabelEvent(event_id=e.event_id, model_id=m, timestamp=e.timestamp + 0.5, label=truth[m])
        for e in preds
        if (m := e.model_id) in truth
    ]
    first, labels = labels[::10], [e for i, e in enumerate(labels) if i % 10]
    assert fast.process([], first) == slow.process([], first)  # read before their predictions
    assert fast.process(preds, labels) == slow.process(preds, labels)
    got, want = fast.take_failures(), slow.take_failures()
    assert [(f.events, str(f.error)) for f in got] == [(f.events, str(f.error)) for f in want]
    assert len(got) > 1 and all(str(f.error).startswith("broken") for f in got)
    kinds = {type(e) for f in got for e in f.events}
    assert kinds == {LabelEvent, PredictionEvent}  # labels joined now, predictions met early
