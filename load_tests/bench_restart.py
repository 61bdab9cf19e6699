"""What a restored partition pays before it is back to its steady pace: a restart, or a
rebalance that hands a partition to another member, restores its checkpoint into a process
whose calibration memo is empty.

In process, no broker: one partition of ``bench_throughput.py``'s scenario A (5 models with 20
numeric + 3 categorical features) takes ``--before`` predictions in batches of ``--batch``; its
snapshot then goes through the changelog's encoding (orjson) to fresh processes, each of which
restores it and times its next ``--after`` predictions batch by batch (CPU time; the compiled
detectors are loaded first, as the monitor loads them before it consumes). Each round
restores it twice, in turn: as taken (the features keep the calibrations they judged their
windows with) and without them (as a snapshot of version 4 of the features had it, so the
windows are simulated again).

    .venv/bin/python load_tests/bench_restart.py
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import (  # noqa: E402
    add_results_args,
    command_line,
    machine_info,
    results_head,
    write_section,
)

#: bench_throughput.py's scenario (its defaults).
SHAPE = SimpleNamespace(
    models=5, numeric=20, categorical=3, label_after=1000, drift_at=0.5, seed=11
)


def _records(n: int) -> list[Any]:
    """The scenario's first ``n`` predictions as the monitor reads them."""
    bt = importlib.import_module("bench_throughput")
    from stream_monitor.kafka.records import RawRecord

    w = bt.workload(SHAPE, "A", n)
    topics = {"predictions": "predictions", "labels": "labels"}
    raw = bt.wide_records(w, topics, time.time() - n / 1000.0, 1000.0)
    return [RawRecord(r.value, key=r.key, topic=r.topic, offset=i) for i, r in enumerate(raw)]


def _feed(state: Any, chunk: list[Any], max_bytes: int) -> None:
    from stream_monitor.events.decode import decode_records

    state.process(decode_records(chunk, kind="prediction", max_bytes=max_bytes), [])


def without_calibrations(snapshot: Any) -> Any:
    """The snapshot as features of version 4 wrote it: no kept calibrations."""
    if isinstance(snapshot, dict):
        out = {k: without_calibrations(v) for k, v in snapshot.items()}
        if "calibrations" in snapshot and "last_z" in snapshot:  # a feature's
            del out["calibrations"]
            out["v"] = 4
        return out
    if isinstance(snapshot, list):
        return [without_calibrations(v) for v in snapshot]
    return snapshot


def _restored(path: Path, kept: bool, before: int, after: int, batch: int) -> dict[str, Any]:
    """In this (fresh) process: restore the snapshot at ``path`` and time the next batches."""
    from stream_monitor.config import MonitorConfig
    from stream_monitor.gc_tuning import fewer_collections
    from stream_monitor.monitor.partition import PartitionState
    from stream_monitor.stats.drift import warm_up

    calibrate = importlib.import_module("stream_monitor.stats.calibrate")
    cfg = MonitorConfig(bootstrap_servers="unused:9092")
    msgs = _records(before + after)[before:]
    warm_up()  # as the monitor does before it consumes: the compiled detectors loaded
    snap = orjson.loads(path.read_bytes())
    if not kept:
        snap = without_calibrations(snap)
    # The collector's thresholds as the monitor sets them around its loop, where restores
    # happen too: at CPython's defaults a full collection over the restored state (about
    # 110 ms for this one) falls into every few batches, the first one included.
    with fewer_collections():
        t0 = time.process_time()
        state = PartitionState.from_snapshot(snap, cfg)
        restore = time.process_time() - t0
        simulated = len(calibrate._CALIBRATIONS)
        times = []
        for lo in range(0, after, batch):
            t0 = time.process_time()
            _feed(state, msgs[lo : lo + batch], cfg.limits.max_event_bytes)
            times.append(time.process_time() - t0)
        simulated = len(calibrate._CALIBRATIONS) - simulated
    return {"restore": restore, "batches": times, "simulated": simulated}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=int, default=40_000, help="predictions before the snapshot")
    ap.add_argument("--after", type=int, default=20_000, help="predictions timed after it")
    ap.add_argument("--batch", type=int, default=2_500, help="predictions per batch (live size)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("SNAPSHOT", "KEPT"), help=argparse.SUPPRESS)
    add_results_args(ap)
    args = ap.parse_args(argv)
    if args.child:
        out = _restored(
            Path(args.child[0]), args.child[1] == "1", args.before, args.after, args.batch
        )
        sys.stdout.buffer.write(orjson.dumps(out))
        return 0

    from stream_monitor.config import MonitorConfig
    from stream_monitor.monitor.partition import PartitionState

    cfg = MonitorConfig(bootstrap_servers="unused:9092")
    state = PartitionState(0, cfg)
    msgs = _records(args.before)
    for lo in range(0, args.before, args.batch):
        _feed(state, msgs[lo : lo + args.batch], cfg.limits.max_event_bytes)
    data = orjson.dumps(state.snapshot())
    lean = orjson.dumps(without_calibrations(orjson.loads(data)))
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp:
        path = Path(tmp) / "snapshot.json"
        path.write_bytes(data)
        for r in range(args.rounds):
            for kept in (True, False) if r % 2 == 0 else (False, True):
                cmd = [sys.executable, __file__, "--child", str(path), "1" if kept else "0"]
                cmd += ["--before", str(args.before), "--after", str(args.after)]
                cmd += ["--batch", str(args.batch)]
                res = orjson.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
                rows.append(("kept" if kept else "simulated again", res))
                print(rows[-1][0], res, flush=True)

    md = results_head(machine_info(None), command_line("bench_restart.py", argv))
    md += [
        f"One partition of scenario A (5 models, 20 numeric + 3 categorical features) after "
        f"{args.before:,} predictions; its snapshot ({len(data):,} bytes as JSON; "
        f"{len(data) - len(lean):,} of them the kept calibrations) restored in a fresh process, "
        f"which then takes {args.after:,} predictions in batches of {args.batch:,} (CPU time), "
        "with the garbage collector's thresholds the monitor runs with (at CPython's defaults "
        "a full collection over the restored state, about 110 ms, falls into the first batch "
        "and every few after it).",
        "",
        "| round | calibrations | restore ms | simulated | first batches, ms | "
        "first 3 batches, s | later batches, median ms |",
        "|---:|---|---:|---:|---|---:|---:|",
    ]
    for i, (label, res) in enumerate(rows):
        ms = [round(t * 1e3) for t in res["batches"]]
        later = sorted(res["batches"][3:])
        median = later[len(later) // 2] * 1e3 if later else float("nan")
        md.append(
            f"| {i // 2 + 1} | {label} | {res['restore'] * 1e3:.0f} | {res['simulated']} | "
            f"{', '.join(map(str, ms[:5]))} | {sum(res['batches'][:3]):.2f} | {median:.0f} |"
        )
    write_section(args, "bench_restart", "A restored partition (load_tests/bench_restart.py)", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
