"""A model's batch read as columns: the one-pass paths against the general ones.

``event_columns`` reads every field of a batch of events in one pass; ``ModelMonitor._columns``
reads every feature of each event in one pass and converts the numeric ones to one float matrix
when they hold only numbers and nulls; ``SchemaDrift.unknown`` looks only at the events with
more fields than the monitored ones when every event carries those. Each must give what the
general path (field by field, event by event) gives, bit for bit, on batches mixing what
events may carry: nulls, ints, bools, strings and absent fields among numbers; and the same
whether the events' features are dicts or FeatureRows (events/feature_rows.py, as the
Application's decoder gives them), of one layout or several, or mixed with dicts.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MonitorConfig
from stream_monitor.events.feature_rows import FeatureRow, row_type
from stream_monitor.events.outputs import PREDICTION_LABEL, PREDICTION_SCORE, event_columns
from stream_monitor.events.schema import PredictionEvent, ScoredPrediction
from stream_monitor.monitor import model as model_module
from stream_monitor.monitor.feature import ABSENT, CategoricalFeature, NumericFeature
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.monitor.schema_drift import SchemaDrift

CFG = MonitorConfig.model_validate(
    {"bootstrap_servers": "unused:9092", "drift": {"window": {"size": 300}}}
)
NUMERIC = ["a", "b", "c"]
#: What a numeric feature may hold besides floats: the matrix takes nulls and ints, the
#: others send the batch down the per-field path.
ODD: list[Any] = [None, 0, 7, 2**60 + 1, True, False, "1.5", "n/a", -0.0]


def _events(seed: int, n: int, odd: float, absent: float, extra: float) -> list[PredictionEvent]:
    """``n`` events of features a, b, c (numeric) and shop (categorical): an odd value with
    probability ``odd`` per cell, an absent field with ``absent``, an unknown field with
    ``extra`` per event; scored predictions with int or str labels, float or int scores."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        features: dict[str, Any] = {k: float(rng.normal(j, 1.0)) for j, k in enumerate(NUMERIC)}
        features["shop"] = str(rng.choice(["s1", "s2", "s3"]))
        for k in NUMERIC:
            if rng.random() < odd:
                features[k] = ODD[int(rng.integers(len(ODD)))]
        if rng.random() < absent:
            del features[str(rng.choice([*NUMERIC, "shop"]))]
        if rng.random() < extra:
            features[f"new{int(rng.integers(3))}"] = 1.0
        label: Any = int(rng.integers(2)) if seed % 2 else str(rng.choice(["yes", "no"]))
        score: Any = float(rng.random()) if i % 3 else int(rng.integers(2))
        out.append(
            PredictionEvent.model_construct(
                event_id=f"e{i}",
                model_id="m",
                model_version=None if i % 4 else "v2",
                timestamp=1000.0 + i,
                features=features,
                prediction=ScoredPrediction.model_construct(label=label, score=score),
                segments=None,
            )
        )
    return out


def _monitor() -> ModelMonitor:
    m = ModelMonitor("m", CFG)
    for k in NUMERIC:
        m.features[k] = NumericFeature(k, "data_drift", CFG.drift)
    m.features["shop"] = CategoricalFeature("shop", "data_drift", CFG.drift)
    m.outputs[PREDICTION_SCORE] = NumericFeature(PREDICTION_SCORE, "prediction_drift", CFG.drift)
    m.outputs[PREDICTION_LABEL] = CategoricalFeature(
        PREDICTION_LABEL, "prediction_drift", CFG.drift
    )
    return m


def _typed(values: Any) -> list[tuple[type, str]]:
    return [(type(v), repr(v)) for v in values]


BATCHES = [
    (0.0, 0.0, 0.0),  # numbers only: the matrix
    (0.05, 0.0, 0.1),  # odd values, unknown fields
    (0.02, 0.01, 0.0),  # and absent ones
    (0.0, 0.02, 0.3),
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kinds", BATCHES, ids=repr)
def test_event_columns_are_each_events_fields(seed: int, kinds: tuple[float, ...]) -> None:
    events = _events(seed, 200, *kinds)
    cols = event_columns(events)
    assert list(cols.event_ids) == [e.event_id for e in events]
    assert _typed(cols.timestamps) == _typed(e.timestamp for e in events)
    assert list(cols.model_versions) == [e.model_version for e in events]
    assert all(a is e.features for a, e in zip(cols.features, events, strict=True))
    assert _typed(cols.labels) == _typed(e.prediction_label() for e in events)
    assert _typed(cols.scores) == _typed(e.prediction_score() for e in events)
    part = cols.rows(50, 120)
    assert part == event_columns(events[50:120])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kinds", BATCHES, ids=repr)
@pytest.mark.parametrize("rows", [0.0, 0.7, 1.0])
def test_columns_are_the_per_field_columns(
    seed: int, kinds: tuple[float, ...], rows: float
) -> None:
    """The columns and the float matrix against the general path's columns (per field,
    ``ABSENT`` where an event lacks it): equal values of equal types, the matrix bit for bit
    as each column converted alone (a null as NaN). The matrix is taken exactly when every
    event carries every feature and the numeric ones hold only floats, ints and nulls.
    ``rows``: the share of events whose features are FeatureRows."""
    events = _as_rows(_events(seed, 300, *kinds), rows, seed)
    if rows == 1.0:
        assert all(isinstance(e.features, FeatureRow) for e in events)
    m = _monitor()
    cols, matrix, complete = m._columns(event_columns(events))
    general = {k: [e.features.get(k, ABSENT) for e in events] for k in m.features}
    general[PREDICTION_SCORE] = [e.prediction_score() for e in events]
    general[PREDICTION_LABEL] = [e.prediction_label() for e in events]
    assert list(cols) == list(general)
    carried = all(m.features.keys() <= e.features.keys() for e in events)
    numbers = all(
        type(general[k][i]) in (float, int, type(None)) for k in NUMERIC for i in range(300)
    )
    assert complete == carried
    assert (matrix is not None) == (carried and numbers)
    for name, want in general.items():
        got = cols[name]
        if matrix is not None and name in NUMERIC:
            assert isinstance(got, np.ndarray) and got.dtype == np.float64
            alone = np.fromiter(want, dtype=np.float64, count=len(want))
            assert got.tobytes() == alone.tobytes(), name
        else:
            assert _typed(got) == _typed(want), name
    if matrix is not None:
        names, values = matrix
        assert names == NUMERIC and values.shape == (len(NUMERIC), len(events))


_LAYOUTS: dict[tuple[tuple[str, ...], frozenset[str]], Any] = {}


def _as_rows(
    events: list[PredictionEvent], share: float, seed: int, typed: bool = False
) -> list[PredictionEvent]:
    """The events, a ``share`` of them (at random) with their features as a FeatureRow of
    their own names; ``typed``: its names holding a number typed as numbers (as the live
    decoder types a layout's)."""
    rng = np.random.default_rng(seed)
    out = []
    for e in events:
        if rng.random() < share:
            names = tuple(e.features)
            numeric = frozenset(
                n for n, v in e.features.items() if typed and type(v) in (int, float)
            )
            kind = _LAYOUTS.get((names, numeric))
            if kind is None:
                kind = _LAYOUTS[names, numeric] = row_type(
                    names, bool | int | float | str | None, numeric, int | float | None
                )
            row = msgspec.json.decode(orjson.dumps(e.features), type=kind)
            e = e.model_copy(update={"features": row})
        out.append(e)
    return out


def _stream(seed: int) -> list[PredictionEvent]:
    """A stream whose batches take every path: numbers only, odd values here and there (a
    complete batch holding strings or bools), absent fields; unknown fields after the
    reference (whose fields become the monitored ones)."""
    reference = _events(seed, 1000, 0.0, 0.0, 0.0)
    clean = _events(seed + 100, 1000, 0.0, 0.0, 0.05)
    odd = _events(seed + 200, 1000, 0.004, 0.0, 0.05)
    absent = _events(seed + 300, 300, 0.0, 0.01, 0.05)
    events = reference + clean[:500] + odd[:500] + clean[500:] + absent + odd[500:]
    return [e.model_copy(update={"event_id": f"s{i}"}) for i, e in enumerate(events)]


def _run(events: list[PredictionEvent], cuts: list[int]) -> tuple[list[str], str]:
    m = ModelMonitor("m", CFG)
    obs: list[Observation] = []
    for lo, hi in itertools.pairwise(cuts):
        obs.extend(m.update(events[lo:hi]))
    return [repr(o) for o in obs], repr(m.snapshot())


@pytest.mark.parametrize("seed", range(3))
def test_one_pass_paths_give_what_the_general_paths_give(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monitor fed the stream as usual against one forced down the general paths (every
    batch read field by field, every event's fields looked up): the same observations and
    the same state, to the bit."""
    events = _stream(seed)
    rng = np.random.default_rng(seed)
    cuts = sorted({0, len(events), *rng.integers(1, len(events), 25).tolist()})
    taken: set[tuple[bool, bool]] = set()
    columns = ModelMonitor._columns

    def spy(self: ModelMonitor, cols: Any) -> Any:
        out = columns(self, cols)
        taken.add((out.numeric is not None, out.complete))
        return out

    monkeypatch.setattr(ModelMonitor, "_columns", spy)
    fast = _run(events, cuts)
    assert taken == {(True, True), (False, True), (False, False)}  # every path taken
    # the same with the features as FeatureRows: all of them, or most of them among dicts
    assert _run(_as_rows(events, 1.0, seed), cuts) == fast
    assert _run(_as_rows(events, 0.8, seed), cuts) == fast
    # and as rows typed numeric where their values are numbers: batches of one such layout
    # skip the type check of each value
    typed = model_module._typed_numeric
    shortcuts = []

    def count(kinds: Any, names: Any) -> bool:
        shortcuts.append(typed(kinds, names))
        return shortcuts[-1]

    monkeypatch.setattr(model_module, "_typed_numeric", count)
    assert _run(_as_rows(events, 1.0, seed, typed=True), cuts) == fast
    assert any(shortcuts) and not all(shortcuts)
    monkeypatch.setattr(model_module, "_typed_numeric", typed)
    monkeypatch.setattr(ModelMonitor, "_columns", columns)

    def lacking(features: Any, names: list[str], kinds: Any) -> list[Any]:
        raise KeyError(names[0] if names else "")

    monkeypatch.setattr(model_module, "_fields", lacking)
    unknown = SchemaDrift.unknown
    monkeypatch.setattr(
        SchemaDrift, "unknown", lambda self, f, known, carried=None: unknown(self, f, known)
    )
    general = _run(events, cuts)
    assert fast == general
    signals = " ".join(fast[0])
    assert "unexpected_field_ratio" in signals and "type_error_ratio" in signals


@pytest.mark.parametrize("seed", range(5))
def test_unknown_fields_looked_up_only_beyond_the_carried_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    known = {"a", "b", "c", "refused"}
    rows = []
    for _ in range(500):
        row = {"a": 1, "b": 2, "c": 3}
        for extra in ("refused", "new", "other"):
            if rng.random() < 0.1:
                row[extra] = 0
        rows.append(row)
    one, other = SchemaDrift(), SchemaDrift()
    flags = one.unknown(rows, known)
    assert np.array_equal(other.unknown(rows, known, carried=3), flags)
    assert one.unexpected_fields == other.unexpected_fields > 0
    assert 0 < flags.sum() < len(rows)
    # FeatureRows (each of its own layout; all, or some among dicts) count the same
    for share in (1.0, 0.5):
        events = [
            PredictionEvent(event_id=str(i), model_id="m", timestamp=0, features=r, prediction=0)
            for i, r in enumerate(rows)
        ]
        features = [e.features for e in _as_rows(events, share, seed)]
        assert any(isinstance(f, FeatureRow) for f in features)
        third = SchemaDrift()
        assert np.array_equal(third.unknown(features, known, carried=3), flags)
        assert third.unexpected_fields == one.unexpected_fields
    uniform = [e.features for e in _as_rows(events[:50], 1.0, seed) if len(e.features) == 3]
    assert len({type(f) for f in uniform}) == 1  # one layout: flagged at once
    assert not SchemaDrift().unknown(uniform, known).any()
    assert SchemaDrift().unknown(uniform, {"a", "b"}).all()
