"""CPU per record of decode + ``PartitionState.process`` on bench_throughput's records, in process.

No broker: the records of ``bench_throughput.py``'s scenario (A: predictions of 5 models with
20 numeric + 3 categorical features; B: a label for every prediction, 1,000 predictions later)
are decoded with ``decode_records`` per topic and fed to one ``PartitionState`` in batches of
``--batch`` records, under the Application's collector settings. Prints the CPU time per
record over the whole run and after its first 20 % (the steady state: the first windows of
every feature calibrate their thresholds). For an A/B between revisions, run it alternately
from two checkouts (``--source``), since the machine's speed drifts between runs:

    .venv/bin/python load_tests/inproc_ab.py --scenario A --predictions 200000
    .venv/bin/python load_tests/inproc_ab.py --source /tmp/base --scenario A --predictions 200000

``--profile cumulative`` (or ``tottime``) prints cProfile's top functions of the steady state
(the run after its first 20 %); the CPU figures then include the profiler's overhead.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", choices=("A", "B"), default="A")
    ap.add_argument("--predictions", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000, help="records per process() call")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--source", type=Path, default=HERE.parent, help="checkout to measure")
    ap.add_argument(
        "--profile",
        choices=("cumulative", "tottime"),
        help="cProfile the steady state (after the first 20 %%); top 40 in this order",
    )
    args = ap.parse_args(argv)
    if args.predictions < 1000 or args.batch < 1:
        ap.error("need --predictions >= 1000 and --batch >= 1")
    # The checkout measured comes first on the path; the records come from this one's bench.
    sys.path[:0] = [str(args.source.resolve()), str(HERE)]
    bt = importlib.import_module("bench_throughput")
    config = importlib.import_module("stream_monitor.config")
    decode = importlib.import_module("stream_monitor.events.decode")
    records = importlib.import_module("stream_monitor.kafka.records")
    partition = importlib.import_module("stream_monitor.monitor.partition")
    gc_tuning = importlib.import_module("stream_monitor.gc_tuning")

    shape = SimpleNamespace(
        models=5, numeric=20, categorical=3, label_after=1000, drift_at=0.5, seed=args.seed
    )
    w = bt.workload(shape, args.scenario, args.predictions)
    topics = {"predictions": "predictions", "labels": "labels"}
    start = time.time() - args.predictions / 1000.0
    msgs = [
        records.RawRecord(r.value, key=r.key, topic=r.topic, offset=i)
        for i, r in enumerate(bt.wide_records(w, topics, start, 1000.0))
    ]
    cfg = config.MonitorConfig(bootstrap_servers="unused:9092")
    state = partition.PartitionState(0, cfg)
    max_bytes = cfg.limits.max_event_bytes
    warm: list[tuple[int, float]] = []
    prof = cProfile.Profile() if args.profile else None

    def run() -> int:
        alerts = 0
        for lo in range(0, len(msgs), args.batch):
            if not warm and lo >= len(msgs) // 5:
                warm.append((lo, time.process_time()))
                if prof is not None:
                    prof.enable()
            chunk = msgs[lo : lo + args.batch]
            preds = [m for m in chunk if m.topic() == "predictions"]
            labels = [m for m in chunk if m.topic() != "predictions"]
            pe = decode.decode_records(preds, kind="prediction", max_bytes=max_bytes)
            le = decode.decode_records(labels, kind="label", max_bytes=max_bytes)
            alerts += len(state.process(pe, le))
        return alerts

    with gc_tuning.fewer_collections():
        gc.collect()
        c0 = time.process_time()
        alerts = run()
        c1 = time.process_time()
    if prof is not None:
        prof.disable()
        pstats.Stats(prof).sort_stats(args.profile).print_stats(40)
    at, cw = warm[0]
    print(
        f"{args.scenario}: {len(msgs):,} records, {alerts} alert events, source {args.source}; "
        f"CPU per record {(c1 - c0) / len(msgs) * 1e6:.2f} us, after the first 20 % "
        f"{(c1 - cw) / (len(msgs) - at) * 1e6:.2f} us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
