"""decode_by_model: one partition's predictions decoded model by model, with their columns.

Checked against the plain path it replaces in the Application: ``decode_records`` of the same
records, the accepted events grouped by model (as ``PartitionState`` groups them) and
``event_columns`` of each group; and a ``PartitionState`` fed either way must end in the same
state with the same alert events.
"""

from __future__ import annotations

import random
import re
from typing import Any

import msgspec
import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.config import MonitorConfig
from stream_monitor.events import decode as decode_module
from stream_monitor.events.decode import (
    DeadLetter,
    decode_by_model,
    decode_labels,
    decode_predictions,
    decode_records,
    layout_stats,
)
from stream_monitor.events.feature_rows import FeatureRow
from stream_monitor.events.live import Label, Prediction
from stream_monitor.events.outputs import event_columns
from stream_monitor.events.schema import LabelEvent
from stream_monitor.kafka.records import RawRecord
from stream_monitor.metrics.instruments import Instruments
from stream_monitor.monitor.partition import PartitionState
from tests.unit.test_decode import _generated

MAX_BYTES = 1 << 20
_UUID = re.compile(r'"[0-9a-f]{32}"|"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"')
MODELS = ["churn", "fraud", "eta"]


def _record(rng: random.Random, i: int, t: float) -> RawRecord:
    """A prediction of one of MODELS keyed by its model id: scored (usually), a bare score
    or a class, now and then with a version, a segment or a missing feature."""
    model = rng.choice(MODELS)
    features: dict[str, Any] = {f"x{j}": rng.gauss(j, 1.0) for j in range(6)}
    features["plan"] = rng.choice(["free", "pro", "team"])
    if rng.random() < 0.05:
        del features[f"x{rng.randrange(6)}"]
    if rng.random() < 0.03:
        features["x0"] = None
    obj: dict[str, Any] = {
        "event_id": f"{model}-{i}",
        "model_id": model,
        "timestamp": t,
        "features": features,
        "prediction": {"label": rng.choice([0, 1]), "score": rng.random()},
    }
    if model == "eta" and rng.random() < 0.5:
        obj["prediction"] = rng.choice([rng.random() * 30, 12, "late"])  # not scored
    if rng.random() < 0.3:
        obj["model_version"] = rng.choice(["v1", "v2", None])
    if rng.random() < 0.1:
        obj["segments"] = {"country": rng.choice(["fr", "de"])}
    return RawRecord(orjson.dumps(obj), key=model.encode(), topic="predictions", offset=i)


def keyed_records(features: list[dict[str, Any]], prediction: Any = 0.5) -> list[RawRecord]:
    """Predictions of model "m", keyed by it, one per ``features``, in order."""
    return [
        RawRecord(
            orjson.dumps(
                {
                    "event_id": str(i),
                    "model_id": "m",
                    "timestamp": 1.7e9 + i,
                    "features": f,
                    "prediction": prediction,
                }
            ),
            key=b"m",
            offset=i,
        )
        for i, f in enumerate(features)
    ]


def _plain(records: list[RawRecord]) -> tuple[dict[str, list[Any]], list[DeadLetter]]:
    """What the Application did before: decode in one call, group the accepted events."""
    by_model: dict[str, list[Any]] = {}
    dead = []
    for ev in decode_records(records, kind="prediction", max_bytes=MAX_BYTES):
        if isinstance(ev, DeadLetter):
            dead.append(ev)
        else:
            by_model.setdefault(ev.model_id, []).append(ev)
    return by_model, dead


def _canonical(e: Any) -> str:
    """An event's fields and reads, each value with its type, its features in name order: a
    FeatureRow lists them in its layout's order, a dict in the JSON object's (the same names
    and values). The same for a pydantic PredictionEvent and a Prediction of the live
    decoder (its scored prediction a ScoredPrediction or a Scored)."""
    p = e.prediction
    typed = lambda v: (v, type(v).__name__)  # noqa: E731
    pred = (typed(p.label), typed(p.score)) if hasattr(p, "score") else typed(p)
    return repr(
        (
            typed(e.event_id),
            typed(e.model_id),
            typed(e.model_version),
            typed(e.timestamp),
            sorted((name, *typed(v)) for name, v in e.features.items()),
            pred,
            e.segments,
            typed(e.prediction_label()),
            typed(e.prediction_score()),
        )
    )


def _assert_as_plain(records: list[RawRecord]) -> Any:
    got = decode_by_model(records, max_bytes=MAX_BYTES)
    by_model, dead = _plain(records)
    assert list(got.by_model) == list(by_model)  # models in order of their first record
    for model_id, events in by_model.items():
        mine = got.by_model[model_id]
        assert [_canonical(e) for e in mine] == [_canonical(e) for e in events]
        assert [e.features for e in mine] == [e.features for e in events]
        for e in mine:  # a row has the dict's names, in its layout's order
            if isinstance(e.features, FeatureRow):
                assert sorted(e.features) == sorted(orjson.loads(_value_of(got, e))["features"])
        # each event's own record, for a dead letter should processing it fail
        assert [orjson.loads(r.value())["event_id"] for r in got.records[model_id]] == [
            e.event_id for e in events
        ]
        if model_id in got.columns:
            assert got.columns[model_id] == event_columns(events)
            assert [type(c) for c in got.columns[model_id]] == [
                type(c) for c in event_columns(events)
            ]
    assert got.dead == dead  # same reasons and records, in consumption order
    return got


def _value_of(got: Any, event: Any) -> bytes:
    """The record value of one of ``got``'s events."""
    events = got.by_model[event.model_id]
    return got.records[event.model_id][next(i for i, e in enumerate(events) if e is event)].value()


def test_models_of_a_keyed_partition_come_with_their_columns() -> None:
    rng = random.Random(7)
    records = [_record(rng, i, 1.7e9 + i) for i in range(3000)]
    got = _assert_as_plain(records)
    # every model came with its columns, and every event as the Prediction msgspec decoded
    assert list(got.columns) == list(got.by_model)
    assert all(isinstance(e, Prediction) for e in got.events())
    assert sum(map(len, got.by_model.values())) == 3000
    # Each key's events of the layout of its first one (the usual names, none missing) came
    # as FeatureRows, that first one too; the others (a feature missing) as dicts.
    for events in got.by_model.values():
        first_names = list(events[0].features)
        for e in events:
            fits = sorted(e.features) == sorted(first_names)
            assert isinstance(e.features, FeatureRow) == fits
            if fits:
                assert list(e.features) == first_names  # the layout's order
    rows = sum(isinstance(e.features, FeatureRow) for e in got.events())
    assert rows > 0.8 * 3000


def test_a_key_whose_events_rarely_fit_its_layout_gives_it_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past 8 misfits that are more than an eighth of a key's events, its batch learns the
    next event's layout; past as many again, it decodes the rest into dicts (each misfit
    cost a second parse), and the metrics count the batch as given up."""
    misses = {"names_cap": 0, "misfits": 0}
    monkeypatch.setattr(decode_module, "_layout_misses", misses)
    monkeypatch.setattr(decode_module, "_LAYOUTS", {})  # the names cap out of reach
    monkeypatch.setattr(decode_module, "_layout_names", [0])
    rng = random.Random(5)
    # 3 layouts at random
    features = [{f"x{j}": float(j) for j in range(rng.randrange(1, 4))} for _ in range(400)]
    got = _assert_as_plain(keyed_records(features))
    events = got.by_model["m"]
    rows = [i for i, e in enumerate(events) if isinstance(e.features, FeatureRow)]
    assert rows and max(rows) < 100  # rows only before it gave up
    assert len({type(events[i].features) for i in rows}) == 2  # the first layout, then one more
    assert misses == {"names_cap": 0, "misfits": 1}  # _assert_as_plain decodes it once
    assert layout_stats().misses == misses


def test_a_layout_learnt_again_is_no_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose first event had unusual names learns the next one's layout: that batch
    kept a layout, and no miss is counted."""
    misses = {"names_cap": 0, "misfits": 0}
    monkeypatch.setattr(decode_module, "_layout_misses", misses)
    monkeypatch.setattr(decode_module, "_LAYOUTS", {})  # the names cap out of reach
    monkeypatch.setattr(decode_module, "_layout_names", [0])
    usual = {f"x{j}": float(j) for j in range(5)}
    _assert_as_plain(keyed_records([{"x0": 1.0}] + [usual] * 299))
    assert misses == {"names_cap": 0, "misfits": 0}


def test_a_first_event_of_unusual_names_does_not_cost_the_batch_its_layout() -> None:
    usual = {f"x{j}": float(j) for j in range(5)}
    features = [{"x0": 1.0}] + [usual] * 299
    events = _assert_as_plain(keyed_records(features)).by_model["m"]
    assert sum(isinstance(e.features, FeatureRow) for e in events) > 250


def test_a_layout_types_the_numbers_of_its_first_event_and_is_relearnt_untyped() -> None:
    """The names holding a number in a key's first event are typed as numbers (the monitor
    reads them without a type check); an event with another type there misfits and decodes
    into a dict, and when such events are many, the layout learnt again is not typed."""
    usual = {"a": 1.5, "b": 2, "c": "x", "d": None, "e": True}
    odd = {**usual, "b": "two"}  # a string where the first event had a number
    few = _assert_as_plain(keyed_records([usual] * 200 + [odd] * 3)).by_model["m"]
    first = type(few[0].features)
    typed: frozenset[str] = first.NUMERIC  # type: ignore[union-attr]
    assert typed == {"a", "b"}
    assert [type(e.features) for e in few] == [first] * 200 + [dict] * 3
    many = _assert_as_plain(keyed_records([usual, odd] * 100)).by_model["m"]
    kinds = [type(e.features) for e in many]
    relearnt = kinds[-1]
    untyped: frozenset[str] = relearnt.NUMERIC  # type: ignore[union-attr]
    assert relearnt is not dict and untyped == frozenset()
    assert kinds[:2] == [first, dict] and kinds[-20:] == [relearnt] * 20


def test_dead_letters_and_other_paths_keep_groups_and_order() -> None:
    rng = random.Random(11)
    records = [_record(rng, i, 1.7e9 + i) for i in range(2000)]
    bad = [
        RawRecord(b"{not json", key=b"fraud"),
        RawRecord(b"", key=b"churn"),
        # valid, but for another model than its key
        RawRecord(
            records[5].value(), key=b"fraud" if b'"churn"' in records[5].value() else b"churn"
        ),
        # an unknown field takes the second way, and is accepted
        RawRecord(records[9].value()[:-1] + b',"note":"x"}', key=records[9].key()),
        # a timestamp string takes the pydantic path
        RawRecord(
            records[11]
            .value()
            .replace(b'"timestamp":', b'"timestamp":"2024-01-01T00:00:00Z","t0":'),
            key=records[11].key(),
        ),
    ]
    mixed = list(records)
    for k, b in enumerate(bad):
        mixed.insert(100 + 300 * k, RawRecord(b.value(), key=b.key(), offset=5000 + k))
    got = _assert_as_plain(mixed)
    assert [d.reason for d in got.dead] == ["decode_error", "empty", "key_mismatch"]
    # the two accepted by other paths are among their model's events (ids repeated)
    ids = [e.event_id for evs in got.by_model.values() for e in evs]
    for r in (records[9], records[11]):
        assert ids.count(orjson.loads(r.value())["event_id"]) == 2


def test_keyless_records_are_grouped_after_decoding() -> None:
    rng = random.Random(5)
    records = [_record(rng, i, 1.7e9 + i) for i in range(500)]
    records[17] = RawRecord(records[17].value(), key=None, offset=17)
    got = _assert_as_plain(records)
    assert got.columns == {}  # left to the monitor


@pytest.mark.parametrize("seed", [1, 2])
def test_generated_payloads_of_every_kind(seed: int) -> None:
    """test_decode's generated payloads, valid and invalid, keyed and not; then the same with
    every record keyed by what it claims to be (so the groups are decoded one by one)."""
    records = _generated("prediction", 1500, seed)
    _assert_as_plain(records)
    keyed = []
    for r in records:
        try:
            model_id = orjson.loads(r.value()).get("model_id")
        except (orjson.JSONDecodeError, AttributeError):
            model_id = None
        key = model_id.encode() if isinstance(model_id, str) else b"junk"
        keyed.append(RawRecord(r.value(), key=key, offset=r.offset()))
    got = _assert_as_plain(keyed)
    assert len(got.by_model) > 3 and got.dead


def test_a_partition_fed_either_way_ends_in_the_same_state() -> None:
    rng = random.Random(3)
    cfg = MonitorConfig(bootstrap_servers="unused:9092")
    plain, grouped = PartitionState(0, cfg), PartitionState(0, cfg)
    alerts: tuple[list[Any], list[Any]] = ([], [])
    t = 1.7e9
    for batch in range(12):
        records = []
        for i in range(1500):
            r = _record(rng, batch * 1500 + i, t)
            if batch >= 6 and b'"fraud"' in r.value():  # a drift of fraud's x1 halfway
                obj = orjson.loads(r.value())
                obj["features"]["x1"] = obj["features"].get("x1", 0.0) + 4.0
                r = RawRecord(orjson.dumps(obj), key=r.key(), offset=r.offset())
            records.append(r)
            t += 1.0
        by_model, _ = _plain(records)
        alerts[0].extend(plain.process([e for evs in by_model.values() for e in evs], []))
        got = decode_by_model(records, max_bytes=MAX_BYTES)
        flat = got.events()
        alerts[1].extend(grouped.process(flat, [], got))
    assert [(a.kind, a.feature, a.signal, a.status) for a in alerts[1]] == [
        (a.kind, a.feature, a.signal, a.status) for a in alerts[0]
    ]
    assert any(a.model_id == "fraud" and a.feature == "x1" for a in alerts[1])
    # the same but for what each tracker draws at random: its secret and the alert ids
    mine, theirs = (
        _UUID.sub("<id>", orjson.dumps(s.snapshot()).decode()) for s in (grouped, plain)
    )
    assert mine == theirs


@pytest.mark.parametrize(
    "values",
    [
        # names msgspec cannot take as a struct's fields: no layout, dicts, no error
        [{'a"b': 1, "\\": 2}] * 3,
        [{"a\x01": 1, "b": None}] * 3,
        # names that are methods of a row, or look like its fields, or are empty
        [{"": 1.0, "f0": 2, "get": None, "keys": "k", "__class__": True, "é\u2028": "x"}] * 3,
    ],
)
def test_any_feature_names_decode_as_their_dicts(values: list[dict[str, Any]]) -> None:
    events = _assert_as_plain(keyed_records(values)).by_model["m"]
    assert [e.features for e in events] == values


def test_escaped_and_repeated_names_decode_into_the_layout_as_into_dicts() -> None:
    head = b'{"event_id":"%d","model_id":"m","timestamp":1,"prediction":0.5,"features":'
    features = [
        '{"\u00e9":1,"b":2}'.encode(),
        b'{"\\u00e9":3,"\\u0062":4}',  # the same names, escaped
        b'{"\\u00e9":3,"b":4,"\\u00e9":5}',  # a repeated name: its last value, as in a dict
        b'{"b":6,"\\u00e9":7}',  # another order
    ]
    records = [RawRecord(head % i + f + b"}", key=b"m", offset=i) for i, f in enumerate(features)]
    events = _assert_as_plain(records).by_model["m"]
    assert all(isinstance(e.features, FeatureRow) for e in events)
    assert [dict(e.features) for e in events] == [
        {"é": 1, "b": 2},
        {"é": 3, "b": 4},
        {"é": 5, "b": 4},
        {"é": 7, "b": 6},
    ]


@pytest.mark.parametrize("seed", range(4))
def test_random_names_and_values_decode_as_by_decode_records(seed: int) -> None:
    """Keys of a few layouts, each event now and then with a name missing, added, renamed to
    an odd one (quotes, backslashes, control characters, non-ASCII, too long) or a value of
    any JSON type (lists, objects, ints past 64 bits): decode_by_model must accept, refuse
    and build exactly what decode_records does."""
    rng = random.Random(seed)
    odd = ['a"b', "c\\d", "e\x01", "\u00e9t\u00e9", "\U0001f600", "", " ", "x" * 129, "f0"]
    values: list[Any] = [1.5, -2, 0, True, None, "s", "", "<big>", [1], {"k": 1}, 1e300]
    layouts = [[f"n{j}" for j in range(rng.randrange(1, 6))] for _ in range(3)]
    records = []
    for i in range(600):
        model = rng.randrange(3)
        names = list(layouts[model])
        if rng.random() < 0.1:
            names.pop(rng.randrange(len(names)))
        if rng.random() < 0.1:
            names.append(rng.choice(odd))
        if rng.random() < 0.05 and names:
            names[rng.randrange(len(names))] = rng.choice(odd)
        features = {
            n: rng.choice(values) if rng.random() < 0.05 else rng.gauss(0, 1) for n in names
        }
        obj = {
            "event_id": str(i),
            "model_id": f"m{model}",
            "timestamp": 1.7e9 + i,
            "features": features,
            "prediction": 0.5,
        }
        value = orjson.dumps(obj).replace(b'"<big>"', str(2**70).encode())  # past 64 bits
        records.append(RawRecord(value, key=f"m{model}".encode(), offset=i))
    got = _assert_as_plain(records)
    assert any(isinstance(e.features, FeatureRow) for e in got.events())
    assert any(type(e.features) is dict for e in got.events())


@pytest.mark.parametrize("keyed", [True, False])
def test_decode_predictions_is_decode_records_as_the_monitor_reads_it(keyed: bool) -> None:
    """The replay's decode: records of several models, keyed or not (a file's lines have no
    key), come back in their order as decode_records gives them, most as Predictions with
    FeatureRows."""
    rng = random.Random(3)
    records = [_record(rng, i, 1.7e9 + i) for i in range(2000)]
    if not keyed:
        records = [
            RawRecord(r.value(), topic="predictions", offset=i) for i, r in enumerate(records)
        ]
    records.insert(10, RawRecord(b'{"model_id":"churn"}', offset=9999))  # the field last
    records.insert(20, RawRecord(b"[1]", offset=9998))
    got = decode_predictions(records, max_bytes=MAX_BYTES)
    plain = decode_records(records, kind="prediction", max_bytes=MAX_BYTES)
    assert [_canonical(e) if not isinstance(e, DeadLetter) else e for e in got] == [
        _canonical(e) if not isinstance(e, DeadLetter) else e for e in plain
    ]
    rows = sum(isinstance(getattr(e, "features", None), FeatureRow) for e in got)
    assert rows > 0.8 * len(records)
    assert sum(isinstance(e, Prediction) for e in got) == len(records) - 2


def test_past_the_cap_on_layout_names_events_keep_their_dicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The layouts' names are bounded in all (each costs its struct and decoder): past the
    cap, a new layout is not made, and its events decode into dicts, as decode_records'."""
    monkeypatch.setattr(decode_module, "_LAYOUTS", {})
    monkeypatch.setattr(decode_module, "_layout_names", [0])
    monkeypatch.setattr(decode_module, "LAYOUT_NAMES_CAP", 7)
    monkeypatch.setattr(decode_module, "_layout_misses", {"names_cap": 0, "misfits": 0})
    first = _assert_as_plain(keyed_records([{f"a{j}": j for j in range(4)}] * 5))
    assert layout_stats() == (1, 4, 7, {"names_cap": 0, "misfits": 0})
    second = _assert_as_plain(keyed_records([{f"b{j}": j for j in range(4)}] * 5))
    assert all(isinstance(e.features, FeatureRow) for e in first.events())  # 4 names of 7
    assert all(type(e.features) is dict for e in second.events())  # 8 would be past 7
    assert decode_module._layout_names == [4]
    # the second key's batch went without a layout: counted, and shown to Prometheus
    assert layout_stats() == (1, 4, 7, {"names_cap": 1, "misfits": 0})
    reg = CollectorRegistry()
    Instruments(reg)
    assert reg.get_sample_value("stream_monitor_decode_layouts") == 1.0
    assert reg.get_sample_value("stream_monitor_decode_layout_names") == 4.0
    assert reg.get_sample_value("stream_monitor_decode_layout_names_max") == 7.0
    name = "stream_monitor_decode_layout_misses_total"
    got = {r: reg.get_sample_value(name, {"reason": r}) for r in ("names_cap", "misfits")}
    assert got == {"names_cap": 1.0, "misfits": 0.0}
    # a scrape that asks for one series by name (prometheus_client's name[] filter) finds it
    only = reg.restricted_registry(["stream_monitor_decode_layouts"]).collect()
    assert [(m.name, m.samples[0].value) for m in only] == [("stream_monitor_decode_layouts", 1.0)]


def test_a_layout_that_refuses_its_own_first_event_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should a layout's decode ever refuse the event its names came from, the batch goes on
    with dicts (never an error out of the decoder)."""

    def refusing(value: bytes) -> Any:
        raise msgspec.ValidationError("refused")

    monkeypatch.setattr(decode_module, "_layout_decoder", lambda names, numeric: refusing)
    events = _assert_as_plain(keyed_records([{"a": 1.0, "b": "x"}] * 20)).by_model["m"]
    assert all(type(e.features) is dict for e in events)


@pytest.mark.parametrize("seed", [20261207, 5])
def test_live_events_read_as_the_reference_decode_gives_them(seed: int) -> None:
    """On generated payloads (valid and invalid, RFC 3339 and numeric timestamps, keys right,
    wrong and absent): each record decode_by_model takes is an event that reads as the
    reference decode's PredictionEvent (every field with its type, and both reads), a
    Prediction whenever msgspec took it; the others the same dead letters."""
    records = _generated("prediction", 3000, seed)
    by_key: dict[Any, list[RawRecord]] = {}
    for r in records:  # keyless records decode together; keyed ones key by key
        by_key.setdefault(r.key() is None, []).append(r)
    kinds: dict[str, int] = {}
    for group in by_key.values():
        got = decode_by_model(group, max_bytes=MAX_BYTES)
        mine = {
            id(r): e
            for m, evs in got.by_model.items()
            for r, e in zip(got.records[m], evs, strict=True)
        }
        dead = iter(got.dead)
        for r in group:
            want = decode_module._decode_by_pydantic(r, "prediction", MAX_BYTES, decode_module.JSON)
            if isinstance(want, DeadLetter):
                assert next(dead) == want
                kinds["dead"] = kinds.get("dead", 0) + 1
                continue
            e = mine[id(r)]
            assert _canonical(e) == _canonical(want), r.value()
            kind = "Prediction" if isinstance(e, Prediction) else type(e).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
        assert next(dead, None) is None
    # the generator reaches both kinds of event and dead letters often enough to mean something
    assert kinds.get("Prediction", 0) > 800 and kinds.get("dead", 0) > 800, kinds
    assert kinds.get("PredictionEvent", 0) > 0, kinds  # the second way's (extra fields)


@pytest.mark.parametrize("seed", [20261207, 5])
def test_live_labels_read_as_the_reference_decode_gives_them(seed: int) -> None:
    """decode_labels on generated label payloads: each record gives the reference decode's
    dead letter, or an event of its fields with their types, a Label whenever msgspec took
    it (as one call and record by record)."""
    records = _generated("label", 3000, seed)
    got = decode_labels(records, max_bytes=MAX_BYTES)
    assert got == [x for r in records for x in decode_labels([r], max_bytes=MAX_BYTES)]
    kinds: dict[str, int] = {}
    for r, e in zip(records, got, strict=True):
        want = decode_module._decode_by_pydantic(r, "label", MAX_BYTES, decode_module.JSON)
        if isinstance(want, DeadLetter):
            assert e == want
            kinds["dead"] = kinds.get("dead", 0) + 1
            continue
        assert not isinstance(e, DeadLetter)
        typed = [
            (getattr(x, f), type(getattr(x, f))) for x in (e, want) for f in LabelEvent.model_fields
        ]
        half = len(typed) // 2
        assert typed[:half] == typed[half:], r.value()
        kind = "Label" if isinstance(e, Label) else type(e).__name__
        kinds[kind] = kinds.get(kind, 0) + 1
        if isinstance(e, Label):
            assert e.to_event() == want
    assert kinds.get("Label", 0) > 800 and kinds.get("dead", 0) > 800, kinds
