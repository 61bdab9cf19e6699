"""Cost of decoding one record, in microseconds per event, in-process (no broker).

    .venv/bin/python load_tests/bench_decode.py [--records 5000] [--rounds 7] [--seed 1]
        [--clock wall|cpu] [--baseline OLD_DECODE_PY]

Builds ``--records`` realistic prediction values (20 numeric features, one in seven of them
sometimes missing, 3 categorical features, a scored prediction ``{"label", "score"}``, Unix
seconds, a model_version) and label values, then times, in interleaved rounds so that load
from other processes hits every stage alike:

* ``orjson.loads``: parsing alone, the floor of any decoder;
* ``loads + model_validate``: the pydantic validation decode_record used to run on every event;
* ``pydantic only``: the decode without its fast path (as before the fast path existed: size
  checks, parsing, model_validate, key check), record by record;
* ``decode_record``: as shipped, one call per record (msgspec's typed decode of the usual
  shapes, hand checks where it refuses, pydantic for the rest);
* ``decode_records``: as shipped, one call for all the records (as the Application and the
  replay decode a batch);

* with ``--baseline FILE`` (a copy of an earlier stream_monitor/events/decode.py), that
  version's ``decode_record`` (and its ``decode_records`` if it has one) too, so that a change
  is measured against the code before it in the same process, round by round;

and the same for the same predictions with RFC 3339 timestamps, and for labels. Each figure
is the median over the rounds (the best round in brackets); "on top of loads" is a decode
minus orjson.loads. Before timing, every decode result is checked to equal pydantic's.
The machine is shared: the CPU that other processes used during the run is printed too, and
``--clock cpu`` times with this process's CPU time instead of the wall clock (less disturbed
by the other processes).
Nothing is written anywhere; no assertion is made on the times.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import machine_busy_cores_s, machine_info  # noqa: E402

from stream_monitor.events.decode import (  # noqa: E402
    JSON,
    _decode_by_pydantic,
    decode_record,
    decode_records,
)
from stream_monitor.events.schema import LabelEvent, PredictionEvent  # noqa: E402
from stream_monitor.kafka.records import RawRecord  # noqa: E402

MODELS = ("fraud-scorer", "churn-v2", "credit-limit", "upsell", "ltv")
CATEGORIES = (
    ("country", ("us", "gb", "de", "fr", "in", "br", "ca", "es", "it", "nl", "jp", "mx")),
    ("device", ("android", "ios", "web", "desktop")),
    ("channel", ("organic", "paid", "email", "referral", "social", "direct")),
)
MAX_BYTES = 1 << 20


def predictions(n: int, seed: int, *, rfc3339: bool = False) -> list[RawRecord]:
    """``n`` prediction records keyed by model_id, 20 numeric + 3 categorical features."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        features: dict[str, Any] = {}
        for k in range(20):
            if k % 7 == 3 and rng.random() < 0.05:
                features[f"num_{k}"] = None
            elif k % 4 == 0:
                features[f"num_{k}"] = rng.randrange(0, 40)  # a count
            else:
                features[f"num_{k}"] = round(rng.lognormvariate(1.0, 0.8), 4)
        for name, levels in CATEGORIES:
            features[name] = rng.choice(levels)
        model = rng.choice(MODELS)
        seconds = 1_795_305_600.0 + i * 0.013
        ts: float | str = seconds
        if rfc3339:
            ts = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
        score = rng.random()
        value = orjson.dumps(
            {
                "event_id": f"evt-{seed}-{i:09d}",
                "model_id": model,
                "model_version": "2026.11.3",
                "timestamp": ts,
                "features": features,
                "prediction": {"label": int(score > 0.5), "score": round(score, 5)},
            }
        )
        out.append(RawRecord(value, key=model.encode(), topic="predictions", offset=i))
    return out


def labels(n: int, seed: int) -> list[RawRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        model = rng.choice(MODELS)
        value = orjson.dumps(
            {
                "event_id": f"evt-{seed}-{i:09d}",
                "model_id": model,
                "timestamp": 1_795_305_600.0 + i * 0.013,
                "label": rng.randrange(2),
            }
        )
        out.append(RawRecord(value, key=model.encode(), topic="labels", offset=i))
    return out


def load_baseline(path: Path) -> Any:
    """An earlier decode.py as a module of its own (it imports the current schema)."""
    spec = importlib.util.spec_from_file_location("baseline_decode", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def stages(
    records: Sequence[RawRecord], kind: str, baseline: Any = None
) -> dict[str, Callable[[], object]]:
    """The timed functions, each over all ``records``."""
    values = [r.value() for r in records]
    model = PredictionEvent if kind == "prediction" else LabelEvent
    loads, validate = orjson.loads, model.model_validate

    def run_loads() -> object:
        return [loads(v) for v in values]  # type: ignore[arg-type]

    def run_validate() -> object:
        return [validate(loads(v)) for v in values]  # type: ignore[arg-type]

    def run_decode() -> object:
        return [decode_record(r, kind=kind, max_bytes=MAX_BYTES) for r in records]  # type: ignore[arg-type]

    def run_decode_records() -> object:
        return decode_records(records, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]

    def run_pydantic_only() -> object:
        return [_decode_by_pydantic(r, kind, MAX_BYTES, JSON) for r in records]  # type: ignore[arg-type]

    timed: dict[str, Callable[[], object]] = {
        "orjson.loads": run_loads,
        "loads + model_validate": run_validate,
        "pydantic only": run_pydantic_only,
        "decode_record": run_decode,
        "decode_records": run_decode_records,
    }
    if baseline is not None:
        old_one = baseline.decode_record
        timed["baseline decode_record"] = lambda: [
            old_one(r, kind=kind, max_bytes=MAX_BYTES) for r in records
        ]
        old_many = getattr(baseline, "decode_records", None)
        if old_many is not None:
            timed["baseline decode_records"] = lambda: old_many(
                records, kind=kind, max_bytes=MAX_BYTES
            )
    return timed


def check(records: Sequence[RawRecord], kind: str) -> None:
    """decode_record and decode_records give pydantic's events (the unit tests check this far
    more widely)."""
    model = PredictionEvent if kind == "prediction" else LabelEvent
    batch = decode_records(records, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
    for r, one in zip(records, batch, strict=True):
        got = decode_record(r, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
        want = model.model_validate_json(r.value())  # type: ignore[arg-type]
        for x in (got, one):
            if x != want or repr(x) != repr(want) or x.model_fields_set != want.model_fields_set:
                raise SystemExit(f"decode differs from pydantic on {r.value()!r}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=5000, help="records per workload")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time with the wall clock or with this process's CPU time",
    )
    ap.add_argument(
        "--baseline", type=Path, help="an earlier decode.py to time alongside, for comparison"
    )
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    baseline = load_baseline(args.baseline) if args.baseline else None
    n = max(1, args.records)

    workloads = {
        "predictions (20 numeric + 3 categorical features, scored, Unix seconds)": (
            predictions(n, args.seed),
            "prediction",
        ),
        "the same predictions, RFC 3339 timestamps": (
            predictions(n, args.seed, rfc3339=True),
            "prediction",
        ),
        "labels": (labels(n, args.seed), "label"),
    }
    print(machine_info(None))
    first = next(iter(workloads.values()))[0]
    size = statistics.mean(len(r.value() or b"") for r in first)
    print(
        f"{n:,} records per workload, {args.rounds} rounds, {args.clock} clock; "
        f"predictions ~{size:.0f} bytes"
    )
    busy0, cpu0, wall0 = machine_busy_cores_s(), time.process_time(), time.perf_counter()
    for title, (records, kind) in workloads.items():
        check(records, kind)
        timed = stages(records, kind, baseline)
        times: dict[str, list[float]] = {name: [] for name in timed}
        gc.collect()
        gc.disable()
        try:
            for _ in range(max(1, args.rounds)):
                for name, fn in timed.items():
                    t0 = clock()
                    fn()
                    times[name].append((clock() - t0) / n * 1e6)
        finally:
            gc.enable()
        print(f"\n{title}")
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, ts in times.items():
            print(f"  {name:30s} {med[name]:6.2f} us/event  (best {min(ts):.2f})")
        loads = med["orjson.loads"]
        print(
            f"  on top of loads: decode_records {med['decode_records'] - loads:.2f} us/event, "
            f"decode_record {med['decode_record'] - loads:.2f}, "
            f"pydantic only {med['pydantic only'] - loads:.2f} "
            f"(model_validate alone {med['loads + model_validate'] - loads:.2f})"
        )
        for name in ("baseline decode_record", "baseline decode_records"):
            if name in med:
                print(f"  on top of loads: {name} {med[name] - loads:.2f} us/event")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    busy1 = machine_busy_cores_s()
    if busy0 is not None and busy1 is not None:
        others = max(0.0, busy1 - busy0 - cpu)
        print(
            f"\nwall {wall:.1f} s, this process {cpu:.1f} CPU-s, other processes "
            f"{others:.1f} CPU-s on {os.cpu_count()} cores"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
