"""Cost of decoding one record, in microseconds per event, in-process (no broker).

    .venv/bin/python load_tests/bench_decode.py [--records 5000] [--rounds 7] [--seed 1]

Builds ``--records`` realistic prediction values (20 numeric features, one in seven of them
sometimes missing, 3 categorical features, a scored prediction ``{"label", "score"}``, Unix
seconds, a model_version) and label values, then times, in interleaved rounds so that load
from other processes hits every stage alike:

* ``orjson.loads``: parsing alone, the floor of any decoder;
* ``loads + model_validate``: the pydantic validation decode_record used to run on every event;
* ``decode_record, pydantic only``: decode_record with its fast path switched off (as before
  the fast path existed: size checks, parsing, model_validate, key check);
* ``decode_record``: as shipped (hand checks of the usual shapes, pydantic for the rest);

and the same for the same predictions with RFC 3339 timestamps, and for labels. Each figure
is the median over the rounds (the best round in brackets); "on top of loads" is decode_record
minus orjson.loads. Before timing, every decode_record result is checked to equal pydantic's.
The machine is shared: the CPU that other processes used during the run is printed too.
Nothing is written anywhere; no assertion is made on the times.
"""

from __future__ import annotations

import argparse
import gc
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

import stream_monitor.events.decode as decode_module  # noqa: E402
from stream_monitor.events.decode import decode_record  # noqa: E402
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


def _no_fast_path(obj: dict[str, Any]) -> None:
    return None


def stages(records: Sequence[RawRecord], kind: str) -> dict[str, Callable[[], object]]:
    """The timed functions, each over all ``records``."""
    values = [r.value() for r in records]
    model = PredictionEvent if kind == "prediction" else LabelEvent
    fast_name = "_fast_prediction" if kind == "prediction" else "_fast_label"
    fast = getattr(decode_module, fast_name)
    loads, validate = orjson.loads, model.model_validate

    def run_loads() -> object:
        return [loads(v) for v in values]  # type: ignore[arg-type]

    def run_validate() -> object:
        return [validate(loads(v)) for v in values]  # type: ignore[arg-type]

    def run_decode() -> object:
        return [decode_record(r, kind=kind, max_bytes=MAX_BYTES) for r in records]  # type: ignore[arg-type]

    def run_decode_pydantic_only() -> object:
        setattr(decode_module, fast_name, _no_fast_path)
        try:
            return run_decode()
        finally:
            setattr(decode_module, fast_name, fast)

    return {
        "orjson.loads": run_loads,
        "loads + model_validate": run_validate,
        "decode_record, pydantic only": run_decode_pydantic_only,
        "decode_record": run_decode,
    }


def check(records: Sequence[RawRecord], kind: str) -> None:
    """decode_record gives pydantic's events (the unit tests check this far more widely)."""
    model = PredictionEvent if kind == "prediction" else LabelEvent
    for r in records:
        got = decode_record(r, kind=kind, max_bytes=MAX_BYTES)  # type: ignore[arg-type]
        want = model.model_validate_json(r.value())  # type: ignore[arg-type]
        if got != want or repr(got) != repr(want):
            raise SystemExit(f"decode_record differs from pydantic on {r.value()!r}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=5000, help="records per workload")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
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
    print(f"{n:,} records per workload, {args.rounds} rounds; predictions ~{size:.0f} bytes")
    busy0, cpu0, wall0 = machine_busy_cores_s(), time.process_time(), time.perf_counter()
    for title, (records, kind) in workloads.items():
        check(records, kind)
        timed = stages(records, kind)
        times: dict[str, list[float]] = {name: [] for name in timed}
        gc.collect()
        gc.disable()
        try:
            for _ in range(max(1, args.rounds)):
                for name, fn in timed.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - t0) / n * 1e6)
        finally:
            gc.enable()
        print(f"\n{title}")
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, ts in times.items():
            print(f"  {name:30s} {med[name]:6.2f} us/event  (best {min(ts):.2f})")
        loads = med["orjson.loads"]
        print(
            f"  on top of loads: decode_record {med['decode_record'] - loads:.2f} us/event, "
            f"pydantic only {med['decode_record, pydantic only'] - loads:.2f} "
            f"(model_validate alone {med['loads + model_validate'] - loads:.2f})"
        )
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
