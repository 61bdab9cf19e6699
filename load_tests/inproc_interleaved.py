"""CPU per record of several checkouts in one process, batch by batch in turn.

``inproc_ab.py`` measures one checkout per run, and on a shared machine the speed drifts by
more than a change is worth between two runs minutes apart. This script loads each checkout's
``stream_monitor`` under a name of its own (a copy in a temporary folder with every
``stream_monitor`` import renamed), gives each its own ``PartitionState`` and feeds them the
same records of ``bench_throughput.py``'s scenario in batches, each batch to every checkout
in turn (the first in the turn rotating), so a drift of the machine's speed falls on all of
them alike. It prints, per checkout, the alert events and the CPU time per record of decode +
``PartitionState.process`` after the first 20 % of the records (the steady state):

    .venv/bin/python load_tests/inproc_interleaved.py /tmp/base . --scenario A
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import importlib
import pstats
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
_NAME = re.compile(r"\bstream_monitor\b")


def _renamed_copy(source: Path, name: str, into: Path) -> None:
    """``source``'s ``stream_monitor`` package as package ``name`` in ``into``."""
    target = into / name
    # Without __pycache__: numba's cache files there name the original module, so the copy's
    # kernels would fail to load (PartitionState then records each batch as a failure).
    shutil.copytree(source / "stream_monitor", target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        path.write_text(_NAME.sub(name, path.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sources", nargs="+", type=Path, help="checkouts to measure")
    ap.add_argument("--scenario", choices=("A", "B"), default="A")
    ap.add_argument(
        "--predictions",
        type=int,
        default=400_000,
        help="400,000 by default: past 200,000 predictions waiting for labels (scenario A) the "
        "label join is full, as in every long drain and live run, and its intake evicts",
    )
    ap.add_argument("--batch", type=int, default=10_000, help="records per process() call")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile the first checkout's steady state and print its N functions of "
        "largest cumulative time (the profiler inflates small calls: shares, not timings)",
    )
    ap.add_argument(
        "--sort",
        choices=("cumulative", "tottime"),
        default="cumulative",
        help="the profile's order: cumulative time (default) or time in the function itself",
    )
    args = ap.parse_args(argv)
    if args.predictions < 1000 or args.batch < 1:
        ap.error("need --predictions >= 1000 and --batch >= 1")
    sys.path.insert(0, str(HERE))
    bt = importlib.import_module("bench_throughput")
    shape = SimpleNamespace(
        models=5, numeric=20, categorical=3, label_after=1000, drift_at=0.5, seed=args.seed
    )
    w = bt.workload(shape, args.scenario, args.predictions)
    start = time.time() - args.predictions / 1000.0
    topics = {"predictions": "predictions", "labels": "labels"}
    raw = list(bt.wide_records(w, topics, start, 1000.0))
    with tempfile.TemporaryDirectory(prefix="inproc-interleaved-") as tmp:
        sys.path.insert(0, tmp)
        revs = []
        for k, source in enumerate(args.sources):
            name = f"sm_checkout_{k}"
            _renamed_copy(source.resolve(), name, Path(tmp))
            records = importlib.import_module(f"{name}.kafka.records")
            cfg = importlib.import_module(f"{name}.config").MonitorConfig(
                bootstrap_servers="unused:9092"
            )
            revs.append(
                SimpleNamespace(
                    source=source,
                    decode=importlib.import_module(f"{name}.events.decode").decode_records,
                    # decode_labels and decode_by_model where the checkout has them (from
                    # 2026-12-07), as the Application decodes
                    labels=getattr(
                        importlib.import_module(f"{name}.events.decode"), "decode_labels", None
                    ),
                    by_model=getattr(
                        importlib.import_module(f"{name}.events.decode"), "decode_by_model", None
                    ),
                    state=importlib.import_module(f"{name}.monitor.partition").PartitionState(
                        0, cfg
                    ),
                    max_bytes=cfg.limits.max_event_bytes,
                    msgs=[
                        records.RawRecord(r.value, key=r.key, topic=r.topic, offset=i)
                        for i, r in enumerate(raw)
                    ],
                    cpu=0.0,
                    alerts=[],
                )
            )
        warm = len(raw) // 5
        old = gc.get_threshold()
        gc.set_threshold(max(old[0], 100_000), *old[1:])  # as the monitor runs (gc_tuning)
        gc.collect()
        prof = cProfile.Profile()
        try:
            for turn, lo in enumerate(range(0, len(raw), args.batch)):
                k = turn % len(revs)
                for r in revs[k:] + revs[:k]:
                    chunk = r.msgs[lo : lo + args.batch]
                    profiled = args.profile and r is revs[0] and lo >= warm
                    if profiled:
                        prof.enable()
                    t0 = time.process_time()
                    preds = [m for m in chunk if m.topic() == "predictions"]
                    labels = [m for m in chunk if m.topic() != "predictions"]
                    if r.labels is None:
                        le = r.decode(labels, kind="label", max_bytes=r.max_bytes)
                    else:  # as the Application decodes them
                        le = r.labels(labels, max_bytes=r.max_bytes)
                    if r.by_model is None:
                        pe = r.decode(preds, kind="prediction", max_bytes=r.max_bytes)
                        r.alerts.extend(r.state.process(pe, le))
                    else:  # as the Application decodes a partition's predictions
                        grouped = r.by_model(preds, max_bytes=r.max_bytes)
                        pe = grouped.events()
                        r.alerts.extend(r.state.process(pe, le, grouped))
                    if lo >= warm:
                        r.cpu += time.process_time() - t0
                    if profiled:
                        prof.disable()
        finally:
            gc.set_threshold(*old)
    if args.profile:
        print(f"cProfile of {args.sources[0]} after the first 20 %:")
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.profile)
    steady = len(raw) - -(-warm // args.batch) * args.batch  # records in batches from warm on
    for r in revs:
        # the alert events' fields, to tell at a glance whether the checkouts agree
        # (but their ids: an incident's is random, and the alert's is derived from it)
        digest = hashlib.sha256()
        for a in r.alerts:
            digest.update(a.model_dump_json(exclude={"alert_id", "incident_id"}).encode())
        print(
            f"{args.scenario} {r.source}: {len(r.alerts)} alert events (digest "
            f"{digest.hexdigest()[:12]}); CPU per record after the first 20 % "
            f"{r.cpu / steady * 1e6:.2f} us"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
