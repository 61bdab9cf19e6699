"""Profile the monitoring pipeline in-process, without Kafka.

Generates TrafficGenerator records, then measures, each on its own and without a profiler:

* ``generate``: TrafficGenerator.events() alone (records/s);
* ``decode``:   each batch of ``--batch`` records (the Application's default batch size,
                2000) decoded as Application.process_batch decodes it: the predictions model
                by model with their columns (``decode_by_model``), the labels in one
                ``decode_labels`` call;
* ``monitor``:  PartitionState.process over the already decoded batches;
* ``bookkeeping``: the work the Application loop adds around those two: per record the
                checks, ``Checkpoint.add_offset``, the checkpoint positions and the event-time
                maxima of the label alignment; per batch the counters and gauges;

then runs decode + monitor once more under cProfile and prints the top functions.

    .venv/bin/python load_tests/profile_pipeline.py [--predictions 200000] [--models 20]

No broker, no network; bounded by --predictions (and --max-seconds, checked between phases).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import model_names  # noqa: E402
from _results import (  # noqa: E402
    add_results_args,
    command_line,
    machine_busy_cores_s,
    machine_info,
    results_head,
    write_section,
)

from stream_monitor.checkpoint import Checkpoint  # noqa: E402
from stream_monitor.config import MonitorConfig  # noqa: E402
from stream_monitor.events.decode import (  # noqa: E402
    DeadLetter,
    ModelBatches,
    decode_by_model,
    decode_labels,
    decode_records,
)
from stream_monitor.events.live import AnyLabel, AnyPrediction  # noqa: E402
from stream_monitor.kafka.records import RawRecord  # noqa: E402
from stream_monitor.metrics.instruments import Instruments  # noqa: E402
from stream_monitor.monitor.partition import PartitionState  # noqa: E402
from stream_monitor.simulate import TrafficGenerator  # noqa: E402

PRED_TOPIC, LABEL_TOPIC = "predictions", "labels"


def decode_all(msgs: Sequence[RawRecord], max_bytes: int) -> list[Any]:
    """Each topic's records in one decode_records call, as Application.process_batch decodes
    a batch; the events come back in the records' order."""
    where: dict[str, list[int]] = {PRED_TOPIC: [], LABEL_TOPIC: []}
    for i, m in enumerate(msgs):
        where[PRED_TOPIC if m.topic() == PRED_TOPIC else LABEL_TOPIC].append(i)
    out: list[Any] = [None] * len(msgs)
    kinds: dict[str, Literal["prediction", "label"]] = {
        PRED_TOPIC: "prediction",
        LABEL_TOPIC: "label",
    }
    for topic, rows in where.items():
        decoded = decode_records([msgs[i] for i in rows], kind=kinds[topic], max_bytes=max_bytes)
        for i, ev in zip(rows, decoded, strict=True):
            out[i] = ev
    return out


#: A decoded batch: its predictions, its labels, and the predictions grouped by model.
Decoded = tuple[list[AnyPrediction], list[AnyLabel], ModelBatches]


def decode_batch(msgs: Sequence[RawRecord], max_bytes: int) -> tuple[Decoded, int]:
    """One batch of one partition decoded as Application.process_batch decodes it; and its
    dead letters."""
    grouped = decode_by_model([m for m in msgs if m.topic() == PRED_TOPIC], max_bytes=max_bytes)
    labels = decode_labels([m for m in msgs if m.topic() != PRED_TOPIC], max_bytes=max_bytes)
    ok = [e for e in labels if not isinstance(e, DeadLetter)]
    preds = grouped.events()
    return (preds, ok, grouped), len(grouped.dead) + len(labels) - len(ok)  # type: ignore[return-value]


def decode_batches(
    msgs: Sequence[RawRecord], max_bytes: int, size: int
) -> tuple[list[Decoded], int]:
    """Every batch of ``size`` records decoded (:func:`decode_batch`); the dead letters."""
    out: list[Decoded] = []
    dead = 0
    for i in range(0, len(msgs), size):
        batch, n = decode_batch(msgs[i : i + size], max_bytes)
        out.append(batch)
        dead += n
    return out, dead


def monitor_all(cfg: MonitorConfig, batches: Sequence[Decoded]) -> tuple[int, PartitionState]:
    state = PartitionState(0, cfg)
    alerts = 0
    for preds, labels, grouped in batches:
        alerts += len(state.process(preds, labels, grouped))
    return alerts, state


def scrape_cost(state: PartitionState, repeat: int = 15) -> tuple[float, int, int]:
    """Median seconds of one /metrics rendering (all collectors), bytes and lines."""
    from prometheus_client import CollectorRegistry, generate_latest

    from stream_monitor.metrics.collector import StateCollector

    reg = CollectorRegistry()
    Instruments(reg)
    reg.register(StateCollector(lambda: {0: state}, threading.Lock()))
    times, out = [], b""
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = generate_latest(reg)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], len(out), out.count(b"\n")


def decode_and_monitor(cfg: MonitorConfig, msgs: Sequence[RawRecord], size: int) -> int:
    state = PartitionState(0, cfg)
    alerts = 0
    for i in range(0, len(msgs), size):
        (preds, labels, grouped), _ = decode_batch(msgs[i : i + size], cfg.limits.max_event_bytes)
        alerts += len(state.process(preds, labels, grouped))
    return alerts


class _NullProducer:
    def produce(self, *a: Any, **k: Any) -> None: ...
    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class _NullConsumer:
    def store_offsets(self, *, offsets: Any) -> None: ...


def bookkeeping(msgs: Sequence[RawRecord], events: Sequence[Any], size: int) -> None:
    """The per-record work Application.process_batch does besides decode and process: error
    check, assignment check, consumed count, ``Checkpoint.add_offset``, start/position/dirty
    bookkeeping for checkpoints and the event-time maxima for the label alignment; then, per
    batch, the consumed counters and last-event-time gauges."""
    from prometheus_client import CollectorRegistry

    metrics = Instruments(CollectorRegistry())
    ckpt = Checkpoint(_NullProducer(), _NullConsumer(), threading.Event())  # type: ignore[arg-type]
    states = {0: None}
    start: dict[tuple[str, int], int] = {}
    positions: dict[tuple[str, int], int] = {}
    dirty: set[int] = set()
    event_time: dict[tuple[str, int], float] = {}
    for i in range(0, len(msgs), size):
        consumed: dict[str, int] = {}
        newest: dict[str, float] = {}
        for m, ev in zip(msgs[i : i + size], events[i : i + size], strict=True):
            if m.error() is not None:
                continue
            topic, part, offset = m.topic(), m.partition(), m.offset()
            if part not in states:
                continue
            consumed[topic] = consumed.get(topic, 0) + 1
            ckpt.add_offset(topic, part, offset)
            start.setdefault((topic, part), offset)
            positions[(topic, part)] = offset + 1
            dirty.add(part)
            if not isinstance(ev, DeadLetter):
                newest[topic] = max(newest.get(topic, 0.0), ev.timestamp)
                key = (topic, part)
                if ev.timestamp > event_time.get(key, float("-inf")):
                    event_time[key] = ev.timestamp
        for topic, n in consumed.items():
            metrics.events_consumed.labels(topic=topic).inc(n)
        for topic, ts in newest.items():
            metrics.last_event_timestamp.labels(topic=topic).set(ts)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def top_functions(prof: cProfile.Profile, key: str, n: int) -> str:
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.strip_dirs().sort_stats(key).print_stats(n)
    lines = buf.getvalue().splitlines()
    # keep the table only (drop pstats' preamble up to the header line)
    for i, line in enumerate(lines):
        if line.lstrip().startswith("ncalls"):
            return "\n".join(lines[i:]).rstrip()
    return buf.getvalue().rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--predictions",
        type=int,
        default=200_000,
        help="predictions to generate (labels ~80%% on top)",
    )
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2000, help="records per process() batch")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--repeat", type=int, default=3, help="timing rounds of each stage (medians are reported)"
    )
    ap.add_argument("--top", type=int, default=20, help="functions to list from the profile")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="skip the remaining phases once this much time has passed",
    )
    add_results_args(ap)
    args = ap.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    machine = machine_info(kafka=None)  # at start: load average and source digest

    cfg = MonitorConfig(bootstrap_servers="unused:9092")
    names = model_names(args.models)
    gen = TrafficGenerator(
        seed=args.seed,
        drift_at=args.predictions // 2,
        models=names,
        rate=1000.0,
        start_time=1_700_000_000.0,
        prediction_topic=PRED_TOPIC,
        label_topic=LABEL_TOPIC,
    )
    t_gen, records = timed(lambda: list(gen.events(args.predictions)))
    n_rec = len(records)
    n_pred = sum(1 for r in records if r.topic == PRED_TOPIC)
    msgs = [
        RawRecord(
            r.value, key=r.key, topic=r.topic, offset=i, timestamp=(1, round(r.timestamp * 1000))
        )
        for i, r in enumerate(records)
    ]
    print(
        f"generated {n_rec:,} records ({n_pred:,} predictions, {args.models} models) "
        f"in {t_gen:.2f} s = {n_rec / t_gen:,.0f} records/s",
        flush=True,
    )

    # Stages are timed in rounds (decode, monitor, bookkeeping, decode, ...) so that load from
    # other processes on a shared machine hits all of them alike; medians are reported.
    t_decs: list[float] = []
    t_mons: list[float] = []
    t_books: list[float] = []
    alerts, n_models, dead, n_batches = 0, 0, 0, 0
    t_scrape, scrape_bytes, scrape_lines = 0.0, 0, 0
    busy0, own0, wall0 = machine_busy_cores_s(), _own_cpu(), time.monotonic()
    for rnd in range(args.repeat):
        if rnd and time.monotonic() > deadline:
            print("time limit reached; no more rounds", file=sys.stderr)
            break
        t, (fed, dead) = timed(decode_batches, msgs, cfg.limits.max_event_bytes, args.batch)
        t_decs.append(t)
        n_batches = len(fed)
        t, (alerts, state) = timed(monitor_all, cfg, fed)
        t_mons.append(t)
        n_models = len(state.models)
        del fed
        if rnd == 0:
            try:
                t_scrape, scrape_bytes, scrape_lines = scrape_cost(state)
            except Exception as exc:  # a broken collector must not stop the run
                print(f"/metrics rendering failed: {exc!r}", file=sys.stderr)
                t_scrape = float("nan")
        del state
        events = decode_all(msgs, cfg.limits.max_event_bytes)  # each record's, for bookkeeping
        t, _ = timed(bookkeeping, msgs, events, args.batch)
        t_books.append(t)
        del events
        print(
            f"round {rnd + 1}: decode {n_rec / t_decs[-1]:,.0f}, monitor "
            f"{n_rec / t_mons[-1]:,.0f}, bookkeeping {n_rec / t_books[-1]:,.0f} records/s",
            flush=True,
        )
    t_dec, t_mon, t_book = (statistics.median(x) for x in (t_decs, t_mons, t_books))
    busy1, own1, wall1 = machine_busy_cores_s(), _own_cpu(), time.monotonic()
    others = (
        None
        if busy0 is None or busy1 is None
        else max(0.0, (busy1 - busy0 - (own1 - own0)) / (wall1 - wall0))
    )
    contention = (
        "n/a"
        if others is None
        else f"{others:.2f} cores used by other processes (of {os.cpu_count()}) on average "
        f"during the timed rounds; this script {(own1 - own0) / (wall1 - wall0):.2f}"
    )
    print(contention)

    def spread(ts: list[float]) -> str:
        return f"{n_rec / max(ts):,.0f}-{n_rec / min(ts):,.0f}"

    print(
        f"decode:   {n_rec / t_dec:>9,.0f} records/s median of {len(t_decs)} "
        f"(range {spread(t_decs)}; dead letters {dead})"
    )
    print(
        f"monitor:  {n_rec / t_mon:>9,.0f} records/s median (range {spread(t_mons)}; "
        f"{n_batches} batches, {alerts} alert events, {n_models} models)"
    )
    print(
        f"bookkeeping (offsets, positions, event time, counters): {n_rec / t_book:,.0f} records/s "
        f"median (range {spread(t_books)})"
    )
    print(
        f"/metrics rendering with these {n_models} models: {t_scrape * 1000:.1f} ms "
        f"({scrape_bytes / 1024:.0f} KiB, {scrape_lines:,} lines)",
        flush=True,
    )
    t_all = t_dec + t_mon + t_book
    print(
        f"=> single-core ceiling of decode+monitor+bookkeeping: {n_rec / t_all:,.0f} records/s "
        f"({n_pred / t_all:,.0f} predictions/s); share decode {t_dec / t_all:.0%}, "
        f"monitor {t_mon / t_all:.0%}, bookkeeping {t_book / t_all:.0%}",
        flush=True,
    )

    if time.monotonic() > deadline:
        print("time limit reached; skipping the profile", file=sys.stderr)
        return 1
    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    decode_and_monitor(cfg, msgs, args.batch)
    prof.disable()
    by_tottime = top_functions(prof, "tottime", args.top)
    by_cum = top_functions(prof, "cumulative", args.top)
    print(f"\n--- cProfile, decode + monitor, top {args.top} by own time ---\n{by_tottime}")
    print(f"\n--- top {args.top} by cumulative time ---\n{by_cum}")

    if not args.no_results:
        body = [
            *results_head(machine, command_line("profile_pipeline.py", argv)),
            f"{n_rec:,} records ({n_pred:,} predictions + {n_rec - n_pred:,} labels), "
            f"{args.models} models, drift at prediction {args.predictions // 2:,}, "
            f"batches of {args.batch} records, one PartitionState, no profiler:",
            "",
            f"Machine contention: {contention}.",
            "",
            f"| stage | records/s (median of {len(t_decs)} rounds) | range | seconds |",
            "|---|---:|---:|---:|",
            f"| generate (TrafficGenerator, 1 round) | {n_rec / t_gen:,.0f} | | {t_gen:.2f} |",
            f"| decode (decode_by_model + decode_labels: msgspec + checks + event objects "
            f"+ columns) | {n_rec / t_dec:,.0f} "
            f"| {spread(t_decs)} | {t_dec:.2f} |",
            f"| monitor (PartitionState.process) | {n_rec / t_mon:,.0f} | {spread(t_mons)} "
            f"| {t_mon:.2f} |",
            f"| app bookkeeping (add_offset, positions, event time, counters) "
            f"| {n_rec / t_book:,.0f} | {spread(t_books)} | {t_book:.2f} |",
            f"| **decode + monitor + bookkeeping** | **{n_rec / t_all:,.0f}** "
            f"({n_pred / t_all:,.0f} predictions/s) | | {t_all:.2f} |",
            "",
            f"Alert events: {alerts}. Shares of the in-process time: decode {t_dec / t_all:.0%}, "
            f"monitor {t_mon / t_all:.0%}, bookkeeping {t_book / t_all:.0%}. One /metrics "
            f"rendering (all collectors, {n_models} models) takes {t_scrape * 1000:.1f} ms "
            f"({scrape_bytes / 1024:.0f} KiB, {scrape_lines:,} lines), holding the state lock.",
            "",
            f"cProfile of decode + monitor (top {args.top} by own time; profiler overhead "
            "inflates per-call costs of small functions):",
            "",
            "```",
            by_tottime,
            "```",
        ]
        print()
        write_section(
            args, "profile_pipeline", "In-process profile (load_tests/profile_pipeline.py)", body
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
