"""Fuzz the whole pipeline: no exception skips input, every record is accounted for.

A seeded generator (``random.Random``, no extra dependency) writes wire-contract-valid
prediction and label records (docs/wire-contract.md) that mix ordinary values with extremes:
+-1.7e308, +-5e-324, -0.0, integers beyond float precision and beyond 64 bits, scores outside
[0, 1], empty and long unicode strings (combining marks, RTL overrides, emoji, NUL), names of
exactly 128 characters, events with all 2,048 features the contract allows, hundreds of class
labels, labels of mixed types for one model, regression errors that overflow to inf, duplicate
event ids, labels of unknown predictions, labels read before their prediction, timestamps at
the edges of the accepted range; and a share of invalid records, each with the dead-letter
reason the contract documents for it.

The records go through ``Application.process_batch`` (in process, a fake Checkpoint recording
outputs and offsets) and, as JSON Lines files, through ``run_replay``, under configurations that
between them switch on most of the monitor (segments, model versions, window detectors, the
multivariate test, every concept-drift detector, rolling references, time windows, every
performance metric family, alert rules of each mode). Checked, per case:

* live: nothing raises; every record fed is, exactly once, processed or dead-lettered (with the
  reason the contract gives an invalid record, or ``processing_error`` and the exception class
  for a valid one), unchanged; every event a partition state reports as failed is
  dead-lettered, and no failure is reported without records; the offsets committed cover
  exactly the records fed; a failure stays with the batch of the record that caused it (it
  does not poison the model for the batches after);
* /metrics renders, with label values no longer than the names they come from may be, and
  counters that agree with the records;
* each partition's snapshot holds only finite numbers (the changelog is JSON: NaN and inf
  would come back as null), and a state restored from the changelog record goes on exactly
  as the live one;
* replay: every line is counted once, with the same decode outcomes as the live monitor, and
  ``run_replay`` writes alerts.jsonl (parsing as alert events) and the report.

Plus two deterministic cases the fuzzing does not reach: a model's failure and a failure
outside any model in the same batch must still dead-letter each record once; and a pair that
fails when its prediction meets a label read in an earlier batch dead-letters the prediction.

The runs are shared between the tests of a case (each test checks one property, so one bug
fails one test); the one that goes on with a run takes it for itself.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_monitor.app import Application
from stream_monitor.backtest import Replay, partition_for, replay_files, run_replay
from stream_monitor.checkpoint import OutputRecord
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import MAX_NAME_LENGTH, AlertEvent, PredictionEvent
from stream_monitor.kafka.records import RawRecord
from stream_monitor.monitor.partition import Failure, PartitionState
from stream_monitor.state import Snapshot, decode_snapshot

# numpy warns about the overflows these values provoke on purpose
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

PREDICTIONS, LABELS, DEAD = "predictions", "labels", "stream-monitor-dead-letter"
PARTITIONS = 2  # both assigned; a few records of a third one are not ours and must be skipped
DECODE_REASONS = {"empty", "oversized", "decode_error", "validation_error", "key_mismatch"}
REASONS = DECODE_REASONS | {"processing_error"}
MAX_EVENT_BYTES = 512 * 1024  # a 2,048-feature event of 128-character names fits
#: A prediction or label this large makes errors whose sums or squares may overflow: a batch
#: holding one may fail (``processing_error``); a batch without one must not.
EXTREME = 1e15

# --- values ---------------------------------------------------------------------------------

EXTREME_FLOATS = [
    1.7e308, -1.7e308, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -5e-324,
    2.2250738585072014e-308, 0.0, -0.0, 1e-300, 9.999999999999999e307,
]  # fmt: skip
HUGE_INTS = [10**18, -(10**18), 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 10**30, -(10**30)]
UNICODE = [
    "", " ", "é", "e\u0301", "\u202eevil\u202c", "שלום", "مرحبا", "👩\u200d👩\u200d👧\u200d👦",
    "🇫🇷", "\x00", "nul\x00in", "\u2028", "tab\tnew\nline", 'quote"back\\slash', "\ufeffbom",
    "\U0010ffff", "Z̴̢̛a̶l̵g̷o̷", "null", "NaN", "-Infinity", "1e400", "日本語のラベル",
]  # fmt: skip
NAME_ALPHABET = ["a", "é", "🚀", "日", "\u0301", "\u202e"]
EDGE_TIMESTAMPS: list[float | int | str] = [
    0, 0.0, -0.0, 5e-324, 99_999_999_999, 99_999_999_999.99998, "1970-01-01T00:00:00Z",
    "2026-11-22T10:00:00-23:59", "5138-11-16T09:46:39+00:00",
]  # fmt: skip
#: RFC 3339 times outside the range [0, 1e11) that a number must be in: the schema accepts
#: them (docs/wire-contract.md bounds numbers only), so today they are valid events. Should the
#: contract come to refuse them like such numbers, this becomes "validation_error".
BEYOND_RANGE_TIMESTAMPS = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999+00:00"]
BEYOND_RANGE: str | None = "validation_error"  # RFC 3339 times get the range of numbers


def name(rng: random.Random, length: int = MAX_NAME_LENGTH) -> str:
    """A string of exactly ``length`` characters (code points), unicode mixed in."""
    return "".join(rng.choice(NAME_ALPHABET) for _ in range(length))


def odd_string(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return rng.choice(UNICODE)
    if r < 0.7:
        return name(rng)
    # longer than a name: valid as a categorical feature value (bounded when counted)
    return name(rng, rng.choice([129, 500, 5000]))


def odd_number(rng: random.Random) -> float | int:
    return rng.choice(EXTREME_FLOATS) if rng.random() < 0.6 else rng.choice(HUGE_INTS)


def odd_value(rng: random.Random) -> Any:
    """Any feature value the contract allows, at an extreme."""
    r = rng.random()
    if r < 0.45:
        return odd_number(rng)
    if r < 0.85:
        return odd_string(rng)
    return rng.choice([None, True, False])


def is_extreme(v: Any) -> bool:
    if isinstance(v, dict):
        return any(is_extreme(x) for x in v.values())
    return isinstance(v, int | float) and not isinstance(v, bool) and abs(v) >= EXTREME


def timestamp(rng: random.Random, t: float) -> float | int | str:
    """Event time ``t`` as Unix seconds (float or int) or RFC 3339 with some UTC offset."""
    r = rng.random()
    if r < 0.7:
        return t
    if r < 0.85:
        return int(t)
    tz = dt.timezone(dt.timedelta(minutes=rng.choice([0, 0, 120, -300, 14 * 60, -12 * 60])))
    text = dt.datetime.fromtimestamp(t, tz).isoformat()
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def dumps(rng: random.Random, obj: Any) -> bytes:
    """JSON as producers write it: compact or not, escaped or raw UTF-8, and integers of any
    size (orjson refuses to write those beyond 64 bits, the standard library does not)."""
    compact = rng.random() < 0.5
    text = json.dumps(
        obj,
        ensure_ascii=rng.random() < 0.3,
        allow_nan=False,
        separators=(",", ":") if compact else None,
    )
    return text.encode("utf-8")


# --- the stream -----------------------------------------------------------------------------


@dataclass
class Rec:
    """One input record and what decoding it must give: None (an event) or a reason."""

    topic: str
    key: bytes | None
    value: bytes | None
    expect: str | None
    #: The same record without a key (a replay line): the same, but never key_mismatch.
    expect_keyless: str | None
    model_id: str | None = None
    event_id: str | None = None
    #: Its prediction or label carries a number of magnitude >= EXTREME.
    extreme: bool = False


@dataclass
class Model:
    model_id: str
    task: str  # scored | regression | multiclass | binary | counts
    edge_times: bool = False  # its events sometimes carry edge timestamps
    wide: bool = False  # many features, sometimes all 2,048 the contract allows


class Stream:
    """The records of one seed: predictions, their labels some records later, and junk."""

    def __init__(self, seed: int) -> None:
        rng = self.rng = random.Random(seed)
        self.t = 1_790_000_000.0 + rng.random() * 1e6
        self.models = [
            Model("fraud-detector", "scored"),
            Model("price-regressor", "regression"),
            Model("intent-classifier", "multiclass"),
            Model("m" * 256, "binary", edge_times=True),  # the longest model id
            Model("модель-🚀-\u202eltr", "counts", edge_times=True),
            Model("wide-model", "scored", wide=True),
        ]
        self.weights = [6, 4, 4, 2, 2, 1]
        self.sent: Counter[str] = Counter()  # predictions per model
        self.ids: dict[str, list[str]] = {}  # event ids per model
        self.step = 0
        self.due: list[tuple[int, Rec]] = []  # labels to emit at a later step

    def features(self, m: Model, drifted: bool) -> dict[str, Any]:
        rng = self.rng
        f: dict[str, Any] = {
            "amount": rng.lognormvariate(3.5 if drifted else 3.0, 1.0),
            "country": rng.choice(["fr", "us", "br"] if drifted else ["fr", "de", "es"]),
            "vip": rng.random() < 0.1,
            "age": rng.randint(18, 90) if rng.random() < 0.9 else None,
            "note": rng.choice(["ok", "", "refund please", "🙂"]),
            "mixed": rng.random() if rng.random() < 0.8 else rng.choice(["n/a", "-", "∞"]),
            "sentinel": -999.0 if rng.random() < (0.3 if drifted else 0.02) else rng.random(),
        }
        if m.wide:
            f.update({f"f{k:03d}": rng.gauss(0.0, 1.0) for k in range(150)})
            if rng.random() < 0.02:  # as many features as allowed, names of 128 characters
                f = {}
                while len(f) < 2048:  # mostly ASCII, or the event would be oversized
                    k = name(rng) if rng.random() < 0.01 else f"{len(f):04d}" + "n" * 124
                    f[k] = rng.gauss(0.0, 1.0) if rng.random() < 0.9 else odd_number(rng)
        for k in list(f):
            r = rng.random()
            if r < 0.04:
                f[k] = odd_value(rng)
            elif r < 0.06:
                del f[k]  # absent
        if rng.random() < 0.03:  # a field the reference never saw
            f[rng.choice([name(rng), rng.choice(UNICODE), "x" * rng.randint(1, 128)])] = odd_value(
                rng
            )
        return f

    def prediction(self, m: Model, i: int, drifted: bool) -> Any:
        rng = self.rng
        odd = rng.random() < 0.05
        if m.task == "scored":
            score: Any = min(1.0, max(0.0, rng.gauss(0.7 if drifted else 0.3, 0.2)))
            if odd:
                score = odd_number(rng)
            elif rng.random() < 0.02:
                score = rng.choice([1.5, -0.2, 2, -1, 100])  # outside [0, 1]
            return {"label": rng.choice([0, 1, 1.0, "1", True, False, "0", -0.0]), "score": score}
        if m.task == "regression":
            if i > 400 and rng.random() < 0.1:  # the regressor's outputs turn into classes
                return rng.choice(["high", "low", True])
            return odd_number(rng) if odd else rng.gauss(100.0, 10.0)
        if m.task == "multiclass":  # hundreds of classes, odd ones, numbers among them
            r = rng.random()
            if r < 0.7:
                return f"class-{rng.randint(0, 399)}"
            if r < 0.8:
                return rng.randint(0, 50)
            return name(rng) if r < 0.9 else rng.choice(UNICODE)
        if m.task == "binary":
            return rng.choice([True, False, "true", "false"])
        return rng.choice([0, 1, 2, 3, odd_number(rng)])  # counts

    def truth(self, m: Model, predicted: Any, i: int) -> Any:
        rng = self.rng
        if m.task == "scored":  # numbers first, then mixed types
            return rng.choice([0, 1]) if i < 300 else rng.choice(["0", "1", "yes", True, 1.0, 0])
        if m.task == "regression":
            if isinstance(predicted, float | int) and not isinstance(predicted, bool):
                if abs(predicted) > 1e300:  # the absolute error overflows to inf
                    return -predicted if rng.random() < 0.7 else odd_number(rng)
                r = rng.random()
                if r < 0.05:
                    return odd_number(rng)
                if r < 0.08:
                    return rng.choice(["n/a", True, "high"])  # not a number
                return predicted + rng.gauss(0.0, 5.0)
            return rng.choice(["high", "low", 1.5, True])
        if m.task == "multiclass":
            if isinstance(predicted, str) and rng.random() < 0.6:
                return predicted
            return rng.choice([f"class-{rng.randint(0, 399)}", rng.randint(0, 50), name(rng)])
        if m.task == "binary":
            return rng.choice([True, False, "true", 1, 0.0])
        return rng.choice([0, 1, 2, 3, odd_number(rng), "3"])

    def _key(self, model_id: str) -> bytes | None:
        return None if self.rng.random() < 0.05 else model_id.encode()

    def prediction_record(self, m: Model) -> tuple[Rec, float, Any]:
        rng = self.rng
        i = self.sent[m.model_id]
        self.sent[m.model_id] += 1
        ids = self.ids.setdefault(m.model_id, [])
        if ids and rng.random() < 0.02:
            event_id = rng.choice(ids)  # a duplicate event id
        else:
            event_id = rng.choice([f"{m.model_id[:20]}-{i}", f"{i}-" + "é" * 200, f"ev{i}"])
            ids.append(event_id)
        self.t += rng.expovariate(2.0)
        obj: dict[str, Any] = {
            "event_id": event_id,
            "model_id": m.model_id,
            "timestamp": timestamp(rng, self.t),
            "features": self.features(m, drifted=i > 350),
            "prediction": self.prediction(m, i, drifted=i > 350),
        }
        beyond = self._edge_time(m, obj)
        r = rng.random()
        if r < 0.8:
            obj["model_version"] = rng.choice(["v1", "v1", "v1", "v2", "", name(rng)])
        elif r < 0.9:
            obj["model_version"] = None
        r = rng.random()
        if r < 0.8:
            region = rng.choice(["eu", "us", "eu", "apac"])
            if rng.random() < 0.1:
                region = odd_string(rng)[:MAX_NAME_LENGTH]
            obj["segments"] = {"region": region, rng.choice(["tier", name(rng)]): "gold"}
        elif r < 0.9:
            obj["segments"] = None
        if rng.random() < 0.05:
            obj["unknown_field"] = {"ignored": [1, 2, 3]}
        value = dumps(rng, obj)
        expect = "oversized" if len(value) > MAX_EVENT_BYTES else beyond
        extreme = is_extreme(obj["prediction"])
        rec = Rec(PREDICTIONS, self._key(m.model_id), value, expect, expect, m.model_id,
                  event_id, extreme)  # fmt: skip
        return rec, self.t, obj["prediction"]

    def label_record(self, m: Model, event_id: str, t: float, truth: Any) -> Rec:
        rng = self.rng
        obj = {
            "event_id": event_id,
            "model_id": m.model_id,
            "timestamp": timestamp(rng, t + rng.uniform(0.0, 300.0)),
            "label": truth,
        }
        expect = self._edge_time(m, obj)
        return Rec(
            LABELS, self._key(m.model_id), dumps(rng, obj), expect, expect, m.model_id, event_id,
            is_extreme(truth),
        )  # fmt: skip

    def _edge_time(self, m: Model, obj: dict[str, Any]) -> str | None:
        """Sometimes an edge timestamp for a model that has them; what decoding must give."""
        rng = self.rng
        if not m.edge_times or rng.random() >= 0.03:
            return None
        if rng.random() < 0.7:
            obj["timestamp"] = rng.choice(EDGE_TIMESTAMPS)
            return None
        obj["timestamp"] = rng.choice(BEYOND_RANGE_TIMESTAMPS)
        return BEYOND_RANGE

    def invalid(self) -> Rec:
        """A record that must be dead-lettered, with the reason it must get."""
        rng = self.rng
        m = rng.choice(self.models)
        topic = rng.choice([PREDICTIONS, LABELS])
        key = m.model_id.encode()
        base: dict[str, Any] = (
            {"event_id": "bad", "model_id": m.model_id, "timestamp": self.t,
             "features": {"x": 1.0}, "prediction": 0.5}
            if topic == PREDICTIONS
            else {"event_id": "bad", "model_id": m.model_id, "timestamp": self.t, "label": 1}
        )  # fmt: skip
        r = rng.random()
        if r < 0.1:
            return Rec(topic, key, rng.choice([b"", None]), "empty", "empty")
        if r < 0.13:
            big = dict(base, note="x" * (MAX_EVENT_BYTES + 10))
            return Rec(topic, key, dumps(rng, big), "oversized", "oversized")
        if r < 0.35:
            junk = rng.choice([
                b"{not json", b"[1, 2, 3]", b'"a string"', b"42", b"null", b"\xff\xfe{}",
                b'{"event_id": "\\ud800"}', b'{"timestamp": NaN}', b'{"x": 1e400}',
                b'{"a": 1,}', dumps(rng, base)[:-1], b"\x00", b"{}{}", b"  ",
            ])  # fmt: skip
            return Rec(topic, key, junk, "decode_error", "decode_error")
        if r < 0.85:
            obj = self._invalid_fields(base, topic)
            return Rec(topic, key, dumps(rng, obj), "validation_error", "validation_error")
        # valid, but keyed by another model (a key-less replay line is simply valid)
        other = rng.choice([x for x in self.models if x is not m])
        return Rec(topic, other.model_id.encode(), dumps(rng, base), "key_mismatch", None,
                   m.model_id, "bad")  # fmt: skip

    def _invalid_fields(self, base: dict[str, Any], topic: str) -> dict[str, Any]:
        rng = self.rng
        long = name(rng, MAX_NAME_LENGTH + 1)
        cases: list[tuple[str, Any]] = [
            ("timestamp", 1_790_000_000_000),  # milliseconds
            ("timestamp", 1e11),
            ("timestamp", -1),
            ("timestamp", True),
            ("timestamp", "2026-11-22T10:00:00"),  # no UTC offset
            ("timestamp", "yesterday"),
            ("timestamp", None),
            ("event_id", ""),
            ("event_id", 17),
            ("event_id", "e" * 257),
            ("model_id", ""),
            ("model_id", None),
            ("model_id", "m" * 257),
        ]
        if topic == PREDICTIONS:
            cases += [
                ("features", [1, 2]),
                ("features", None),
                ("features", {long: 1.0}),  # a name of 129 characters
                ("features", {"x": [1]}),
                ("features", {"x": {"y": 1}}),
                ("features", {f"f{k}": 0 for k in range(2049)}),
                ("prediction", [0.5]),
                ("prediction", None),
                ("prediction", long),
                ("prediction", {"label": 1}),
                ("prediction", {"label": 1, "score": "0.5"}),
                ("prediction", {"label": 1, "score": True}),
                ("prediction", {"label": long, "score": 0.5}),
                ("prediction", {"label": [1], "score": 0.5}),
                ("model_version", long),
                ("model_version", 2),
                ("segments", {"region": long}),
                ("segments", {long: "eu"}),
                ("segments", {"region": 1}),
                ("segments", ["eu"]),
            ]
        else:
            cases += [("label", long), ("label", None), ("label", [1]), ("label", {})]
        if rng.random() < 0.1:
            obj = dict(base)
            del obj[rng.choice(list(obj))]  # a required field missing
            return obj
        k, v = rng.choice(cases)
        return dict(base, **{k: v})

    def records(self, n: int) -> list[Rec]:
        rng = self.rng
        out: list[Rec] = []
        while len(out) < n:
            self.step += 1
            out.extend(rec for at, rec in self.due if at <= self.step)
            self.due = [(at, rec) for at, rec in self.due if at > self.step]
            r = rng.random()
            if r < 0.08:
                out.append(self.invalid())
                continue
            m = rng.choices(self.models, self.weights)[0]
            if r < 0.1:  # a label nobody predicted
                truth = self.truth(m, 0.0, 0)
                out.append(self.label_record(m, f"ghost-{self.step}", self.t, truth))
                continue
            if r < 0.11:  # models beyond the per-partition cap: their predictions are refused
                m = Model(f"spam-{rng.randint(0, 30)}", "binary")
            rec, t, predicted = self.prediction_record(m)
            assert rec.event_id is not None
            label = self.label_record(
                m, rec.event_id, t, self.truth(m, predicted, self.sent[m.model_id])
            )
            s = rng.random()
            if s < 0.06:  # its label is read first, the prediction a little later
                out.append(label)
                self.due.append((self.step + rng.randint(1, 30), rec))
                continue
            out.append(rec)
            if s < 0.75:
                self.due.append((self.step + rng.randint(0, 400), label))
                if rng.random() < 0.03:  # delivered twice
                    self.due.append((self.step + rng.randint(0, 400), label))
        return out


# --- configurations -------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "bootstrap_servers": "unused:9092",
    "processing_guarantee": "at_least_once",
    "limits": {
        "max_models_per_partition": 5,
        "max_features_per_model": 40,
        "max_event_bytes": MAX_EVENT_BYTES,
    },
}
CONFIGS: dict[str, dict[str, Any]] = {
    # count windows and most things on: segments and versions, the multivariate test, every
    # concept-drift detector, window detectors, rules of every mode
    "count": {
        "drift": {
            "reference": {"size": 60},
            "window": {"size": 60},
            "thresholds": {"calibration_draws": 200},
            "window_detectors": {"min_windows": 2, "kinds": ["page_hinkley", "adwin", "kswin"]},
            "multivariate": {"enabled": True, "reference_sample": 30, "window_sample": 30,
                             "permutations": 20, "p_value": 0.05},
            "importance": {"*": {"amount": 3.0}},
        },
        "labels": {"baseline_size": 20, "cooldown_errors": 20, "ttl_seconds": 600,
                   "capacity": 500, "early_capacity": 50,
                   "detectors": ["adwin", "page_hinkley", "ddm", "eddm", "hddm_a", "hddm_w"]},
        "performance": {"window": {"size": 40}, "baseline_windows": 1, "max_classes": 200},
        "segments": {"keys": ["region"], "by_version": True, "version_min_events": 10,
                     "max_values": 4},
        "alerts": {
            "cooldown_seconds": 0,
            "max_signals": 3,
            "rules": [
                {"name": "mean-shift", "kind": "data_drift", "signal": "mean",
                 "mode": "relative", "threshold": 0.1, "direction": "both"},
                {"name": "accuracy-floor", "kind": "performance", "signal": "accuracy",
                 "mode": "absolute", "threshold": 0.9, "direction": "below", "retrain": True},
                {"name": "mae-ceiling", "kind": "performance", "signal": "mae",
                 "mode": "absolute", "threshold": 1.0, "for_windows": 2},
                {"name": "quiet", "kind": "data_quality", "enabled": False},
            ],
        },
    },
    # time windows, sliding, late events, a rolling reference, fixed thresholds, log loss and
    # MAPE (labels of 0), fairness against a reference segment, ungrouped alerts
    "time": {
        "drift": {
            "reference": {"size": 50, "mode": "rolling", "min_events": 10},
            "window": {"kind": "time", "size": 120, "slide": 60, "allowed_lateness_seconds": 30},
            "thresholds": {"mode": "fixed", "calibration_draws": 200},
            "window_detectors": {"min_windows": 2},
        },
        "labels": {"baseline_size": 20, "cooldown_errors": 20, "ttl_seconds": 900,
                   "max_future_seconds": 60, "early_grace_seconds": 30},
        "performance": {
            "window": {"kind": "time", "size": 300, "allowed_lateness_seconds": 60},
            "classification_metric": "log_loss",
            "regression_metric": "mape",
            "baseline_windows": 1,
        },
        "segments": {"keys": ["region"], "fairness_reference": {"region": "eu"}},
        "alerts": {"group_features": False, "stale_seconds": 600},
    },
    # ROC AUC and R², sliding count windows, a fixed baseline version
    "auc": {
        "drift": {"reference": {"size": 80}, "window": {"size": 40, "slide": 20},
                  "thresholds": {"calibration_draws": 200}},
        "labels": {"baseline_size": 10, "detectors": ["ddm", "hddm_w"]},
        "performance": {"window": {"size": 30}, "classification_metric": "roc_auc",
                        "regression_metric": "r2"},
        "segments": {"by_version": True, "baseline_version": "v1", "version_min_events": 5},
    },
}  # fmt: skip
CASES = [("count", 1), ("count", 2), ("time", 3), ("time", 4), ("auc", 5)]
RECORDS = 3000
MORE_RECORDS = 800  # after the checkpoint, fed to the live state and to the restored one


def config(name: str) -> MonitorConfig:
    return MonitorConfig.model_validate({**BASE, **CONFIGS[name]})


# --- the live pipeline ----------------------------------------------------------------------


class FakeCheckpoint:
    """The part of checkpoint.Checkpoint the application uses, recording everything."""

    def __init__(self) -> None:
        self.outputs: list[OutputRecord] = []
        self.next_offset: dict[tuple[str, int], int] = {}
        self.count: Counter[tuple[str, int]] = Counter()
        self.committed: list[list[OutputRecord]] = []

    def add_offsets(self, topic: str, partition: int, offset: int, count: int) -> None:
        key = (topic, partition)
        self.next_offset[key] = max(self.next_offset.get(key, 0), offset + 1)
        self.count[key] += count

    def add_output(self, rec: OutputRecord) -> None:
        self.outputs.append(rec)

    def has_pending(self) -> bool:
        return True

    def commit(self, records: list[OutputRecord]) -> bool:
        self.committed.append(list(records))
        return True


def new_app(cfg: MonitorConfig) -> tuple[Application, FakeCheckpoint]:
    app = Application(cfg, registry=CollectorRegistry(), serve_metrics=False)
    ckpt = FakeCheckpoint()
    app._ckpt = ckpt  # type: ignore[assignment]
    for p in range(PARTITIONS):
        app.states[p] = PartitionState(p, cfg)
    return app, ckpt


Where = tuple[str, int, int]  # topic, partition, offset
HEADERS: list[tuple[str, bytes | None]] = [("trace", b"\x00\xff"), ("empty", None)]


class Feed:
    """Cuts records into batches of raw Kafka records, with offsets per topic-partition."""

    def __init__(self, rng: random.Random, start: Counter[tuple[str, int]] | None = None) -> None:
        self.rng = rng
        self.next: Counter[tuple[str, int]] = Counter(start or {})
        self.fed: dict[Where, Rec] = {}
        self.batch_of: dict[Where, int] = {}
        self.foreign = 0  # records of a partition not assigned here

    @staticmethod
    def partition_of(rec: Rec) -> int:
        key = rec.key if rec.key is not None else (rec.model_id or "").encode()
        return partition_for(key, PARTITIONS)

    def batches(self, recs: list[Rec]) -> Iterator[list[RawRecord]]:
        i = n = 0
        while i < len(recs):
            size = self.rng.choice([1, 7, 50, 300, 700])
            batch: list[RawRecord] = []
            for rec in recs[i : i + size]:
                if self.rng.random() < 0.01:  # a stray record of an unassigned partition
                    self._append(batch, rec, PARTITIONS)
                    self.foreign += 1
                where = self._append(batch, rec, self.partition_of(rec))
                self.fed[where] = rec
                self.batch_of[where] = n
            i += size
            n += 1
            yield batch

    def _append(self, batch: list[RawRecord], rec: Rec, part: int) -> Where:
        tp = (rec.topic, part)
        offset = self.next[tp]
        self.next[tp] += 1
        batch.append(
            RawRecord(
                rec.value,
                key=rec.key,
                topic=rec.topic,
                partition=part,
                offset=offset,
                headers=list(HEADERS),
                timestamp=(1, 1_790_000_000_000 + offset),
            )
        )
        return (rec.topic, part, offset)


def dead_letters(ckpt: FakeCheckpoint) -> dict[Where, list[OutputRecord]]:
    """The dead-letter records produced, by the record they came from."""
    out: dict[Where, list[OutputRecord]] = {}
    for r in ckpt.outputs:
        if r.topic == DEAD:
            h = dict(r.headers or [])
            where = (
                h["x-source-topic"].decode(),
                int(h["x-source-partition"]),
                int(h["x-source-offset"]),
            )
            out.setdefault(where, []).append(r)
    return out


@dataclass
class LiveRun:
    cfg: MonitorConfig
    stream: Stream
    recs: list[Rec]
    app: Application
    ckpt: FakeCheckpoint
    feed: Feed
    alerts: list[AlertEvent] = field(default_factory=list)
    #: The events the partition states reported as failed, by topic.
    failed: Counter[str] = field(default_factory=Counter)
    #: The failures reported without any event (nothing to dead-letter).
    failed_alone: list[str] = field(default_factory=list)


_RUNS: dict[tuple[str, int], LiveRun] = {}


def live(config_name: str, seed: int, *, own: bool = False) -> LiveRun:
    """The live run of a case, shared by the tests that only read it; ``own``: taken away
    from them (for a test that goes on with it: they would run it again)."""
    run = _RUNS.pop((config_name, seed), None) if own else _RUNS.get((config_name, seed))
    if run is not None:
        return run
    cfg = config(config_name)
    stream = Stream(seed)
    recs = stream.records(RECORDS)
    app, ckpt = new_app(cfg)
    run = LiveRun(cfg, stream, recs, app, ckpt, Feed(random.Random(seed)))
    for state in app.states.values():  # what the states report as failed, by topic
        state.take_failures = functools.partial(_taking, state.take_failures, run)  # type: ignore[method-assign]
    for batch in run.feed.batches(recs):
        run.alerts.extend(app.process_batch(batch))  # never raises
    if not own:
        _RUNS[(config_name, seed)] = run
    return run


@pytest.fixture(scope="module", autouse=True)
def _forget_runs() -> Iterator[None]:
    yield
    _RUNS.clear()


def _taking(take: Any, run: LiveRun) -> list[Failure]:
    out: list[Failure] = take()
    for f in out:
        run.failed.update(
            PREDICTIONS if isinstance(e, PredictionEvent) else LABELS for e in f.events
        )
        if not f.events:
            run.failed_alone.append(f"{type(f.error).__name__}: {f.error}")
    return out


def outcomes(run: LiveRun) -> dict[Where, str | None]:
    """The reason each record fed was dead-lettered with, or None (processed)."""
    dead = dead_letters(run.ckpt)
    return {
        where: dict(dead[where][0].headers or [])["x-dead-letter-reason"].decode()
        if where in dead
        else None
        for where in run.feed.fed
    }


def _exception_names() -> set[str]:
    names, todo = set(), [BaseException]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize(("config_name", "seed"), CASES)
def test_every_record_is_processed_or_dead_lettered_once(config_name: str, seed: int) -> None:
    run = live(config_name, seed)
    kinds = Counter(r.expect for r in run.recs)
    assert kinds[None] > 0.85 * len(run.recs) and all(kinds[r] for r in DECODE_REASONS), kinds
    dead = dead_letters(run.ckpt)
    assert set(dead) <= set(run.feed.fed), "a dead letter of a record not fed (or not ours)"
    once = {where: len(rs) for where, rs in dead.items() if len(rs) > 1}
    assert not once, f"dead-lettered more than once: {list(once.items())[:5]}"
    exceptions = _exception_names()
    got = outcomes(run)
    for where, rec in run.feed.fed.items():
        reason = got[where]
        if rec.expect is not None:
            assert reason == rec.expect, f"{where}: {reason}, not {rec.expect}: {rec.value!r:.200}"
        else:  # a valid record: processed, or dead-lettered because processing it raised
            assert reason in (None, "processing_error"), f"{where}: valid, but {reason}"
    for where, (dl,) in dead.items():
        rec = run.feed.fed[where]
        assert (dl.key, dl.value) == (rec.key, rec.value or b""), f"{where}: not unchanged"
        h = dl.headers or []
        assert [k for k, _ in h] == [
            "x-dead-letter-reason", "x-dead-letter-detail", "x-source-topic",
            "x-source-partition", "x-source-offset", "x-source-timestamp-ms", "trace", "empty",
        ]  # fmt: skip
        assert h[6:] == [("trace", b"\x00\xff"), ("empty", b"")]  # the original headers
        assert dict(h)["x-source-timestamp-ms"] == str(1_790_000_000_000 + where[2]).encode()
        reason, detail = dict(h)["x-dead-letter-reason"].decode(), dict(h)["x-dead-letter-detail"]
        assert reason in REASONS and 0 < len(detail.decode()) <= 1000
        if reason == "processing_error":  # the detail names the exception class
            cls = re.match(rb"(\w+): ", detail)
            assert cls is not None and cls[1].decode() in exceptions, detail
    # every event a state reported as failed was dead-lettered (none swallowed)
    failed_dead = Counter(w[0] for w, r in got.items() if r == "processing_error")
    assert failed_dead == run.failed
    # offsets advance over exactly the records fed: processed or dead-lettered, and only ours
    assert run.feed.foreign > 0
    fed_per_tp = Counter((t, p) for t, p, _ in run.feed.fed)
    assert run.ckpt.count == fed_per_tp
    assert run.ckpt.next_offset == {tp: run.feed.next[tp] for tp in fed_per_tp}
    assert run.app.assignment.positions == run.ckpt.next_offset


@pytest.mark.parametrize(("config_name", "seed"), CASES)
def test_a_failure_stays_with_the_batch_of_the_record_that_caused_it(
    config_name: str, seed: int
) -> None:
    """A model's records fail only in a batch holding one of its extreme predictions or
    labels (or the other half of such a pair): a failure must not poison the model."""
    run = live(config_name, seed)
    risky = {(r.model_id, r.event_id) for r in run.recs if r.extreme}
    got = outcomes(run)
    suspects: set[tuple[int, str | None]] = set()
    for where, rec in run.feed.fed.items():
        if (rec.model_id, rec.event_id) in risky:
            suspects.add((run.feed.batch_of[where], rec.model_id))
    dead = dead_letters(run.ckpt)
    innocent = [
        (run.feed.batch_of[where], run.feed.fed[where].model_id, where, dead[where][0])
        for where, reason in got.items()
        if reason == "processing_error"
        and (run.feed.batch_of[where], run.feed.fed[where].model_id) not in suspects
    ]
    assert not innocent, (
        f"{len(innocent)} records failed in batches without any extreme value of their model; "
        "the first: batch {}, model {!r:.40}, {}: {!r}".format(
            *innocent[0][:3], dict(innocent[0][3].headers or [])["x-dead-letter-detail"]
        )
    )


@pytest.mark.parametrize(("config_name", "seed"), CASES)
def test_every_failure_dead_letters_the_records_involved(config_name: str, seed: int) -> None:
    """A failure must name records to dead-letter: one reported without any leaves the
    records whose processing raised counted as processed (a label read before its prediction
    was committed with its batch; the prediction that met it is in none)."""
    run = live(config_name, seed)
    assert not run.failed_alone, (
        f"{len(run.failed_alone)} failures dead-lettered nothing, e.g. {run.failed_alone[:3]}"
    )


#: Longest label value per label name where it comes from the input: model ids are identifiers
#: (256), a segment is ``key=value`` (two names), the rest are names (128).
LABEL_BOUNDS = {"model_id": 256, "segment": 2 * MAX_NAME_LENGTH + 1}


@pytest.mark.parametrize(("config_name", "seed"), CASES)
def test_metrics_render_with_bounded_labels_and_agree_with_the_records(
    config_name: str, seed: int
) -> None:
    run = live(config_name, seed)
    text = generate_latest(run.app.registry).decode()
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    assert any(s.name == "stream_monitor_feature_drift_score" for s in samples)
    too_long = [
        f"{s.name}{{{label}}}: {len(value)} characters"
        for s in samples
        for label, value in s.labels.items()
        if len(value) > LABEL_BOUNDS.get(label, MAX_NAME_LENGTH)
    ]
    assert not too_long, too_long[:10]
    get = run.app.registry.get_sample_value
    got = outcomes(run)
    for topic in (PREDICTIONS, LABELS):
        fed = sum(1 for t, _, _ in run.feed.fed if t == topic)
        assert get("stream_monitor_events_consumed_total", {"topic": topic}) == fed
        for reason in REASONS:
            n = sum(1 for (t, _, _), r in got.items() if t == topic and r == reason)
            labels = {"topic": topic, "reason": reason}
            assert (get("stream_monitor_events_invalid_total", labels) or 0) == n, labels


def non_finite(obj: Any, path: str = "$") -> Iterator[str]:
    """Paths of the floats in ``obj`` that are NaN or infinite."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            yield f"{path} = {obj}"
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from non_finite(v, f"{path}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from non_finite(v, f"{path}[{i}]")


@pytest.mark.parametrize(("config_name", "seed"), CASES)
def test_partition_snapshots_hold_only_finite_numbers(config_name: str, seed: int) -> None:
    """The changelog is JSON: a NaN or an infinity in the state would come back as null."""
    run = live(config_name, seed)
    for p in range(PARTITIONS):
        snap = run.app.states[p].snapshot()
        assert orjson.loads(orjson.dumps(snap))["partition"] == p
        bad = sorted({re.sub(r"\[\d+\]", "[]", x) for x in non_finite(snap)})
        assert not bad, f"partition {p}: {len(bad)} non-finite numbers, e.g. {bad[:8]}"


@pytest.mark.parametrize(("config_name", "seed"), CASES)
def test_a_state_restored_from_the_changelog_goes_on_as_the_live_one(
    config_name: str, seed: int
) -> None:
    run = live(config_name, seed, own=True)
    cfg, app = run.cfg, run.app
    assert app.checkpoint()
    dead_total = sum(1 for r in outcomes(run).values() if r is not None)
    assert app.registry.get_sample_value("stream_monitor_dead_letters_published_total") == (
        dead_total
    )
    (records,) = run.ckpt.committed
    assert sorted(r.partition or 0 for r in records) == list(range(PARTITIONS))
    twin, twin_ckpt = new_app(cfg)
    for rec in records:
        p = rec.partition
        assert p is not None
        headers: list[tuple[str, bytes | None]] = list(rec.headers or [])
        snap = decode_snapshot(rec.key, rec.value, headers, None, expected_partition=p)
        assert isinstance(snap, Snapshot), snap
        assert snap.offsets == {t: o for (t, q), o in run.ckpt.next_offset.items() if q == p}
        try:
            twin.states[p] = PartitionState.from_snapshot(snap.state, cfg)
        except Exception as exc:  # Assignment.restore would start the partition afresh
            pytest.fail(f"partition {p}: its changelog record does not restore: {exc!r}")
    # the same further records to both
    n_before = len(run.ckpt.outputs)
    more = run.stream.records(MORE_RECORDS)
    feeds = [Feed(random.Random(seed), run.feed.next) for _ in range(2)]
    for a, b in zip(feeds[0].batches(more), feeds[1].batches(more), strict=True):
        alerts = [
            [x.model_dump(exclude={"published_at"}) for x in target.process_batch(batch)]
            for target, batch in ((app, a), (twin, b))
        ]
        assert alerts[0] == alerts[1]
    for p in range(PARTITIONS):
        live_state = orjson.dumps(app.states[p].snapshot())
        assert orjson.dumps(twin.states[p].snapshot()) == live_state, f"partition {p}"

    # and dead-letter the same records for the same reasons
    def dead(outputs: list[OutputRecord]) -> list[tuple[Any, ...]]:
        return [(r.key, r.value, r.headers) for r in outputs if r.topic == DEAD]

    assert dead(run.ckpt.outputs[n_before:]) == dead(twin_ckpt.outputs)
    assert twin_ckpt.count == Counter((t, p) for t, p, _ in feeds[1].fed)


@pytest.mark.parametrize(("config_name", "seed"), CASES)
def test_a_replay_counts_every_line_as_the_live_monitor_decoded_it(
    config_name: str, seed: int, tmp_path: Path
) -> None:
    cfg, recs = config(config_name), Stream(seed).records(RECORDS)  # what the live run read
    pred_file, label_file = tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl"
    with open(pred_file, "wb") as pf, open(label_file, "wb") as lf:
        for rec in recs:
            (pf if rec.topic == PREDICTIONS else lf).write((rec.value or b"") + b"\n")
    # the replay's loop, as run_replay drives it: every line counted once, as live
    replay = Replay(cfg)
    replay_files(replay, pred_file, label_file, batch_size=500, partitions=PARTITIONS)
    for kind, topic in (("prediction", PREDICTIONS), ("label", LABELS)):
        lines = [r for r in recs if r.topic == topic]
        expect = Counter(r.expect_keyless for r in lines)
        invalid = {reason: replay.invalid[(kind, reason)] for reason in DECODE_REASONS}
        assert invalid == {reason: expect[reason] for reason in DECODE_REASONS}, kind
        # decoded live too (a key-less line cannot mismatch its key)
        live_ok = sum(1 for r in lines if r.expect in (None, "key_mismatch"))
        monitored = replay.predictions if kind == "prediction" else replay.labels
        failed = replay.invalid[(kind, "processing_error")]
        assert monitored >= 0 and monitored + failed == live_ok, kind
    assert replay.events == len(recs)
    assert {reason for _, reason in replay.invalid} <= REASONS
    # the whole command: the same counts, alerts.jsonl and the report written
    out = tmp_path / "out"
    try:
        result = run_replay(cfg, out, predictions=pred_file, labels=label_file,
                            batch_size=500, partitions=PARTITIONS)  # fmt: skip
    except Exception as exc:
        pytest.fail(f"run_replay raised after processing every line: {exc!r}")
    assert result.replay.invalid == replay.invalid
    assert (result.replay.predictions, result.replay.labels) == (
        replay.predictions,
        replay.labels,
    )
    assert result.events == len(recs)
    timeline = (out / "alerts.jsonl").read_bytes().splitlines()
    assert len(timeline) == len(result.alerts) == len(replay.alerts)
    for line in timeline:
        AlertEvent.model_validate(orjson.loads(line))
    assert (out / "report.html").stat().st_size > 0


def test_a_record_is_dead_lettered_once_when_its_model_and_its_partition_both_fail() -> None:
    """One model raises and then so does something outside any model (the alert tracker):
    the partition's whole batch is dead-lettered, the failed model's records not twice."""
    cfg = config("count")
    app, ckpt = new_app(cfg)
    recs = [
        RawRecord(
            orjson.dumps({"event_id": f"{m}-{i}", "model_id": m, "timestamp": 1e9 + i,
                          "features": {"x": 1.0}, "prediction": 0.5}),
            key=m.encode(), topic=PREDICTIONS, partition=0, offset=k,
        )
        for k, (i, m) in enumerate((i, m) for i in range(10) for m in ("a", "b"))
    ]  # fmt: skip
    app.process_batch(recs[:2])  # both models exist

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    state = app.states[0]
    state.models["a"].update = broken  # type: ignore[method-assign]
    state.tracker.observe_many = broken  # type: ignore[method-assign]
    app.process_batch(recs[2:])
    dead = dead_letters(ckpt)
    assert set(dead) == {(PREDICTIONS, 0, k) for k in range(2, 20)}
    twice = sorted(where[2] for where, rs in dead.items() if len(rs) > 1)
    assert not twice, f"offsets dead-lettered twice: {twice}"


def test_a_pair_failing_after_its_label_was_read_first_is_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The label is read first and waits; its prediction comes in a later batch and using the
    pair raises: the prediction's record, of the batch where processing raised, must be
    dead-lettered (the label's was committed already)."""
    from stream_monitor.monitor.concept import ConceptDriftMonitor

    cfg = config("count")
    app, ckpt = new_app(cfg)
    label = {"event_id": "e", "model_id": "m", "timestamp": 100.0, "label": 1.7e308}
    pred = {"event_id": "e", "model_id": "m", "timestamp": 99.0, "features": {"x": 1.0},
            "prediction": -1.7e308}  # fmt: skip

    def broken(self: Any, errors: Any, metric: Any, *, judge: bool) -> None:
        raise RuntimeError("the error stream failed")

    monkeypatch.setattr(ConceptDriftMonitor, "_feed", broken)  # update and judge alike
    app.process_batch([RawRecord(orjson.dumps(label), key=b"m", topic=LABELS, offset=0)])
    app.process_batch([RawRecord(orjson.dumps(pred), key=b"m", topic=PREDICTIONS, offset=0)])
    assert {w: [dict(r.headers or [])["x-dead-letter-reason"] for r in rs]
            for w, rs in dead_letters(ckpt).items()} == {
        (PREDICTIONS, 0, 0): [b"processing_error"]
    }  # fmt: skip


def test_huge_but_finite_values_are_used_with_a_bounded_magnitude() -> None:
    """-1.7e308 predicted, 1.7e308 true: both count as +-1e100 (stats/bounds.py), so the error
    is finite, the pair is used, and the state stays finite."""
    cfg = config("count")
    app, ckpt = new_app(cfg)
    label = {"event_id": "e", "model_id": "m", "timestamp": 100.0, "label": 1.7e308}
    pred = {"event_id": "e", "model_id": "m", "timestamp": 99.0, "features": {"x": 1.0},
            "prediction": -1.7e308}  # fmt: skip
    app.process_batch([RawRecord(orjson.dumps(label), key=b"m", topic=LABELS, offset=0)])
    app.process_batch([RawRecord(orjson.dumps(pred), key=b"m", topic=PREDICTIONS, offset=0)])
    assert not dead_letters(ckpt)
    concept = app.states[0].models["m"].concept
    assert concept.n == 1
    snap = app.states[0].snapshot()
    assert orjson.loads(orjson.dumps(snap)) == snap  # nothing became null: all finite
