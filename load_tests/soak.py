"""A soak: `stream-monitor run` for an hour at half its maximum rate; are RSS and lag flat?

    .venv/bin/python load_tests/soak.py [--minutes 60] [--every 30] [--rate P]
        [--note TEXT] [--no-results]
    .venv/bin/python load_tests/soak.py --minutes 2 --every 10 --no-results   # ~3 min smoke run

On its own broker (deploy/local/kafka.sh through _harness.py, default ``--kafka-port 39292``):

1. max rate (skipped with ``--rate``): ``--measure-predictions`` 2,000,000 predictions of
   ``--models`` 6 models (keys chosen to fall evenly on the partitions) plus their labels
   (TrafficGenerator traffic, ``--label-rate`` 0.8) are pre-produced on ``--partitions`` 3
   partitions and drained by a monitor with its defaults, as bench_throughput.py does:
   predictions/s between 10 % and 90 % consumed (about 40 s). The soak rate is half of that.
   The backlog's event times are ``--measure-event-rate`` (25,000) predictions per second
   apart, about the soak's own density (its event time is wall time), so that the label join
   and the early labels hold as much per second of event time in both phases: at 1,000/s, as
   this script had it until 2026-12-07, the same monitor drained 1.3 times as fast (92,916
   against 70,012 records/s, load_tests/RESULTS.md), and half of that rate was no longer half
   of what the monitor could do on the soak's traffic.
2. soak: a fresh monitor (defaults: exactly-once, state checkpointed to its changelog) on
   fresh topics while a paced producer thread (acks=all, lz4, linger ``--linger-ms`` 5) sends
   that many predictions/s for ``--minutes`` (60), event time = wall time. Each prediction
   gets a label with probability ``--label-rate``, 2 to 10 s of event time later (sent then);
   the rest wait in the label join until its capacity evicts them. The models are split in
   two groups of TrafficGenerator traffic; group 1 drifts at ``--drifts`` 25 % of the run and
   group 2 at 65 % (one numeric feature shifts and the accuracy drops), so alerts fire.
   Each group's events are drawn once, ``--pool`` 50,000 before its drift and as many after
   it, and cycled with fresh event ids and times (the script, drawing every event as it was
   sent, took 0.8 of the machine's two cores at 27,000 predictions/s; with the pools its
   producer thread takes 0.48 instead of 0.58 cores at 16,000/s, load_tests/RESULTS.md).
   Every ``--poll`` s (1) a small /metrics scrape gives the event-to-metric lag (scrape wall
   time minus the newest prediction event time, as in bench_throughput's live phase); every
   ``--every`` s (30) a full scrape records a point: the monitor's RSS (VmRSS), records
   consumed, the same lag for the newest label (a labels topic left behind shows there, not
   in the predictions' lag), consumer lag (sum of ``stream_monitor_consumer_lag``, and that
   of the labels topic), checkpoints and their
   snapshot bytes, predictions pending in the label join, alerts, the broker's disk use and
   the CPU of the monitor, the broker, this script and other processes since the last point.
3. end: a bounded wait (``--catch-up`` 120 s) for the monitor to consume every record
   produced (per topic, from the high watermarks), then SIGTERM (exit code expected 0).
   It "kept up" if it did, the producer was never more than 1 s behind schedule and the
   last block's lag p99 is at most ``--max-lag`` (30 s): a monitor slower than its input
   would have fallen minutes behind by then.

Prints about 15 points over time, the RSS of the first vs the last block (``--block``
minutes, 10; shorter for short runs) and their ratio, the lag p50/p95/p99 per block, whether
it kept up (every record consumed within the catch-up wait, the producer on schedule), and
rewrites the ``soak`` section of load_tests/RESULTS.md (``--no-results`` to skip it). The
machine is shared: the "other processes" CPU column shows how much else ran.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from _harness import (
    BULK_PRODUCER,
    Monitor,
    RunRecord,
    Series,
    add_broker_args,
    add_results_args,
    add_run_args,
    broker_session,
    cpu_mark,
    cpu_shares,
    fmt,
    high_watermarks,
    log,
    make_topics,
    metrics_path,
    newest,
    note_lines,
    pct,
    poll,
    produce,
    spread_models,
    total,
    workdir_session,
)

from stream_monitor.simulate import Record, TrafficGenerator

CONSUMED = "stream_monitor_events_consumed_total"
EVENT_TS = "stream_monitor_last_event_timestamp_seconds"
CONSUMER_LAG = "stream_monitor_consumer_lag"
LIGHT = metrics_path((CONSUMED, EVENT_TS, CONSUMER_LAG))
TABLE_ROWS = 15


# --------------------------------------------------------------------------------------------
# traffic
# --------------------------------------------------------------------------------------------
#: One pooled event: key, model id, the prediction's JSON after its event id and time, the
#: label's JSON after them (None: no label) and the label's delay (s).
PoolEntry = tuple[bytes, bytes, bytes, bytes | None, float]


def _tail(doc: dict[str, Any]) -> bytes:
    """``doc`` as JSON without its ``event_id`` and ``timestamp``, and without the opening
    brace: what follows them in a record this script writes."""
    rest = {k: v for k, v in doc.items() if k not in ("event_id", "timestamp")}
    return orjson.dumps(rest)[1:]


def event_pool(gen: TrafficGenerator, n: int) -> list[PoolEntry]:
    """``n`` predictions of ``gen`` (and their labels) as :data:`PoolEntry` items, in order.

    >>> pool = event_pool(TrafficGenerator(seed=1, models=["m0"], label_rate=1.0), 3)
    >>> key, model, body, label, delay = pool[0]
    >>> key, model, body[:12], label[:14], 2.0 <= delay <= 10.0
    (b'm0', b'm0', b'"model_id":"', b'"model_id":"m0', True)
    """
    preds: list[tuple[bytes, dict[str, Any], float]] = []
    labels: dict[str, tuple[bytes, float]] = {}
    for rec in gen.events(n):
        doc = orjson.loads(rec.value)
        if rec.topic == gen.prediction_topic:
            preds.append((rec.key, doc, rec.timestamp))
        else:
            labels[doc["event_id"]] = (_tail(doc), rec.timestamp)
    pool: list[PoolEntry] = []
    for key, doc, t in preds:
        lab = labels.get(doc["event_id"])
        pool.append(
            (
                key,
                doc["model_id"].encode(),
                _tail(doc),
                None if lab is None else lab[0],
                0.0 if lab is None else lab[1] - t,
            )
        )
    return pool


def pooled_events(
    pools: tuple[list[PoolEntry], list[PoolEntry]],
    drift_at: int | None,
    n: int,
    start: float,
    rate: float,
    topics: dict[str, str],
) -> Iterator[Record]:
    """``n`` predictions at ``rate``/s from ``start`` (event time) and their labels, in
    event-time order: prediction ``g`` is entry ``g % len(pool)`` of ``pools[0]`` before
    ``drift_at`` and of ``pools[1]`` from then on, with event id ``<model>-<g>`` and its own
    event time; its label (if the entry has one) follows by the entry's delay.

    >>> pool = event_pool(TrafficGenerator(seed=1, models=["m0"], label_rate=1.0), 2)
    >>> recs = list(pooled_events((pool, pool), None, 5, 100.0, 10.0,
    ...                           {"predictions": "p", "labels": "l"}))
    >>> [r.topic for r in recs], [orjson.loads(r.value)["event_id"] for r in recs][:3]
    (['p', 'p', 'p', 'p', 'p', 'l', 'l', 'l', 'l', 'l'], ['m0-0', 'm0-1', 'm0-2'])
    >>> orjson.loads(recs[2].value)["features"] == orjson.loads(b"{" + pool[0][2])["features"]
    True
    """
    ptopic, ltopic = topics["predictions"], topics["labels"]
    heap: list[tuple[float, int, Record]] = []
    push, pop, dumps = heapq.heappush, heapq.heappop, orjson.dumps
    for g in range(n):
        pool = pools[1] if drift_at is not None and g >= drift_at else pools[0]
        key, model, body, label, delay = pool[g % len(pool)]
        t = start + g / rate
        while heap and heap[0][0] <= t:
            yield pop(heap)[2]
        eid = b"%b-%d" % (model, g)
        yield Record(ptopic, key, b'{"event_id":"%b","timestamp":%b,%b' % (eid, dumps(t), body), t)
        if label is not None:
            due = max(round(t + delay, 3), t)
            value = b'{"event_id":"%b","timestamp":%b,%b' % (eid, dumps(due), label)
            push(heap, (due, g, Record(ltopic, key, value, due)))
    while heap:
        yield pop(heap)[2]


Pools = list[tuple[list[PoolEntry], list[PoolEntry]]]


def group_pools(args: argparse.Namespace, n: int) -> tuple[list[list[str]], Pools]:
    """The models split in two groups, and per group its pools of events before and after
    its drift (``--pool`` predictions each, fewer if the run has fewer). Drawing and encoding
    each event as it was sent cost 14.8 µs per record against 5.1 from the pools (in
    process), next to a monitor that needs most of the machine's two cores. Built before the
    clock starts (a few seconds)."""
    names = spread_models(args.models, args.partitions)
    groups = [names[0::2], names[1::2]] if len(names) > 1 else [names]
    pools: Pools = []
    for k, models in enumerate(groups):
        size = min(args.pool, max(1, int(n * len(models) / len(names))))
        before, after = (
            event_pool(
                TrafficGenerator(
                    seed=args.seed + 2 * k + phase,
                    drift_at=0 if phase else None,
                    models=models,
                    label_rate=args.label_rate,
                ),
                size,
            )
            for phase in (0, 1)
        )
        pools.append((before, after))
    return groups, pools


def traffic(
    args: argparse.Namespace,
    pools: tuple[list[list[str]], Pools],
    topics: dict[str, str],
    start: float,
    rate: float,
    n: int,
) -> Iterator[Record]:
    """``n`` predictions at ``rate``/s from ``start`` (event time) and their labels, in
    event-time order: each group of :func:`group_pools` its own share of the rate, cycling
    through its pools (:func:`pooled_events`), group k drifting at ``--drifts``[k] of the
    run."""
    groups, group_pool = pools
    total_models = sum(len(g) for g in groups)
    streams = []
    for k, (models, both) in enumerate(zip(groups, group_pool, strict=True)):
        share = len(models) / total_models
        frac = args.drifts[k] if k < len(args.drifts) else None
        drift_at = None if frac is None or frac < 0 else int(frac * n * share)
        streams.append(pooled_events(both, drift_at, int(n * share), start, rate * share, topics))
    return heapq.merge(*streams, key=lambda r: r.timestamp)


@dataclass
class Pacing:
    """What the paced producer did, read by the poller (counters only: bounded memory)."""

    handed: int = 0
    predictions: int = 0
    late_max_s: float = 0.0  # since the last reset, predictions sent behind schedule
    late_over_1s: int = 0  # predictions sent more than 1 s behind schedule, whole run
    errors: list[str] = field(default_factory=list)
    undelivered: int = 0
    first_wall: float = 0.0
    last_wall: float = 0.0
    finished: bool = False

    def take_late_max(self) -> float:
        v, self.late_max_s = self.late_max_s, 0.0
        return v


class StreamProducer:
    """A thread producing an iterator of records at their event times (wall clock): the
    records are generated as they are sent, so an hour of traffic never sits in memory."""

    def __init__(
        self,
        bootstrap: str,
        records: Iterator[Record],
        pred_topic: str,
        limit: float,
        linger_ms: float,
    ) -> None:
        self.stop = threading.Event()
        self.pacing = Pacing()
        self._args = (bootstrap, records, pred_topic, limit, linger_ms)
        self.thread = threading.Thread(target=self._run, name="soak-producer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from confluent_kafka import Producer

        bootstrap, records, pred_topic, limit, linger_ms = self._args
        st = self.pacing
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.type": "lz4",
                "linger.ms": linger_ms,
                "acks": "all",
                "queue.buffering.max.messages": 500_000,
                "error_cb": lambda e: st.errors.append(str(e)) if len(st.errors) < 20 else None,
            }
        )
        deadline = time.monotonic() + limit
        now = time.time
        try:
            for rec in records:
                delay = rec.timestamp - now()
                if delay > 0.002 and self.stop.wait(delay):
                    break
                while True:
                    try:
                        p.produce(
                            rec.topic,
                            value=rec.value,
                            key=rec.key,
                            timestamp=round(rec.timestamp * 1000),
                        )
                        break
                    except BufferError:
                        p.poll(0.05)
                st.handed += 1
                if rec.topic == pred_topic:
                    t = now()
                    late = t - rec.timestamp
                    if late > st.late_max_s:
                        st.late_max_s = late
                    if late > 1.0:
                        st.late_over_1s += 1
                    st.predictions += 1
                    st.last_wall = t
                    if st.predictions == 1:
                        st.first_wall = t
                if st.handed & 1023 == 0:
                    p.poll(0)
                    if time.monotonic() > deadline or self.stop.is_set():
                        break
        finally:
            st.undelivered = p.flush(60)
            st.finished = True

    def alive(self) -> bool:
        return self.thread.is_alive()

    def finish(self, limit: float = 90.0) -> Pacing:
        self.thread.join(limit)
        if self.thread.is_alive():
            self.stop.set()
            raise RuntimeError("soak producer did not finish")
        return self.pacing


# --------------------------------------------------------------------------------------------
# 1. the maximum rate
# --------------------------------------------------------------------------------------------
def measure_max_rate(
    args: argparse.Namespace, bootstrap: str, broker_pid: int | None, run_id: str, workdir: Path
) -> dict[str, Any]:
    """Predictions/s (and records/s) of a default monitor draining a pre-produced backlog of
    the soak's traffic, between 10 % and 90 % consumed."""
    topics = make_topics(bootstrap, run_id, "max", args.partitions)
    n = args.measure_predictions
    ev_rate = args.measure_event_rate  # a past window of event time ending about now
    start = time.time() - n / ev_rate - 60
    log(f"max rate: pre-producing {n:,} predictions + labels")
    pr = produce(
        bootstrap,
        traffic(args, group_pools(args, n), topics, start, ev_rate, n),
        topics["predictions"],
        time_limit=240,
        paced=False,
        conf=BULK_PRODUCER,
    )
    inputs = [topics["predictions"], topics["labels"]]
    produced = sum(high_watermarks(bootstrap, inputs).values())
    log(f"max rate: {produced:,} records in {pr.seconds:.1f} s")
    mon = Monitor(
        workdir,
        "max",
        bootstrap,
        topics,
        group=f"soak-{run_id}-max",
        settings=args.monitor_setting,
    )
    mon.start()
    try:
        mon.wait_ready(60)
        path = metrics_path((CONSUMED,))
        samples = poll(
            mon,
            path,
            broker_pid,
            every=0.5,
            limit=120,
            done=lambda s: total(s.series, CONSUMED) >= 0.9 * produced,
        )
    finally:
        rc, _ = mon.stop(30)
    ptopic = topics["predictions"]

    def at(frac: float) -> Any:
        return next((s for s in samples if total(s.series, CONSUMED) >= frac * produced), None)

    a, b = at(0.1), at(0.9) or (samples[-1] if samples else None)
    if a is None or b is None or b.t <= a.t:
        raise RuntimeError(f"max rate: no usable window; log:\n{mon.tail()}")
    dt = b.t - a.t
    r = {
        "records": produced,
        "window_s": dt,
        "predictions_s": (
            total(b.series, CONSUMED, topic=ptopic) - total(a.series, CONSUMED, topic=ptopic)
        )
        / dt,
        "records_s": (total(b.series, CONSUMED) - total(a.series, CONSUMED)) / dt,
        "cpu": cpu_shares(a.cpu, b.cpu),
        "exit_code": rc,
        "event_rate": ev_rate,
    }
    log(
        f"max rate: {r['predictions_s']:,.0f} predictions/s ({r['records_s']:,.0f} records/s) "
        f"over {dt:.1f} s; exit code {rc}"
    )
    return r


# --------------------------------------------------------------------------------------------
# 2. the soak
# --------------------------------------------------------------------------------------------
@dataclass
class Point:
    """One full scrape every ``--every`` s, with CPU shares since the previous point."""

    elapsed: float  # s since the producer's start
    rss_mib: float | None
    consumed: float
    consumed_predictions: float
    produced_predictions: int
    consumer_lag: float
    age_s: float | None  # event-to-metric lag at this scrape
    label_age_s: float | None  # the same for the newest label
    consumer_lag_labels: float
    checkpoints: float
    snapshot_bytes: float  # cumulative sum of snapshot bytes
    snapshot_count: float
    checkpoint_s: float  # cumulative seconds spent checkpointing
    pending: float | None
    alerts: float
    aborted: float
    failures: float
    late_max_s: float
    disk_gib: float | None
    cpu: dict[str, float]
    # the garbage collector's full collections (generation 2), cumulative: how many, their
    # seconds, and how many held the process longer than 0.25 s
    gc_full: float = 0.0
    gc_full_s: float = 0.0
    gc_full_slow: float = 0.0


def dir_gib(path: Path) -> float | None:
    try:
        n = 0
        for root, _dirs, files in os.walk(path):
            for f in files:
                with contextlib.suppress(OSError):
                    n += os.stat(os.path.join(root, f)).st_size
        return n / 2**30
    except OSError:
        return None


def light_age(series: Series, ptopic: str, wall: float) -> float | None:
    ev = newest(series, EVENT_TS, topic=ptopic)
    return wall - ev if ev else None


def soak(
    args: argparse.Namespace,
    bootstrap: str,
    broker: Any,
    run_id: str,
    workdir: Path,
    rate: float,
) -> dict[str, Any]:
    topics = make_topics(bootstrap, run_id, "soak", args.partitions)
    ptopic, ltopic = topics["predictions"], topics["labels"]
    seconds = args.minutes * 60.0
    n = int(rate * seconds)
    broker_pid = broker.pid() if broker else None
    mon = Monitor(
        workdir,
        "soak",
        bootstrap,
        topics,
        group=f"soak-{run_id}-soak",
        settings=args.monitor_setting,
    )
    mon.start()
    r: dict[str, Any] = {"rate": rate, "predictions_planned": n}
    points: list[Point] = []
    ages: list[tuple[float, float]] = []  # (s since start, event-to-metric lag)
    producer: StreamProducer | None = None
    try:
        r["ready_s"] = mon.wait_ready(60)
        r["mode"] = mon.mode()
        pools = group_pools(args, n)
        start = time.time() + 2.0
        t_start = time.monotonic() + 2.0
        producer = StreamProducer(
            bootstrap,
            traffic(args, pools, topics, start, rate, n),
            ptopic,
            seconds + 120,
            args.linger_ms,
        )
        log(
            f"soak: {rate:,.0f} predictions/s (+ ~{args.label_rate:.0%} labels) for "
            f"{args.minutes:g} min, {args.models} models, {args.partitions} partitions; "
            f"monitor log {mon.log_path}"
        )
        prev_mark = cpu_mark([mon.pid], broker_pid)
        next_point = t_start + args.every
        tick = time.monotonic()
        failing_since: float | None = None
        hard_end = t_start + seconds + 180
        while producer.alive() and time.monotonic() < hard_end:
            tick += args.poll
            if not mon.alive():
                raise RuntimeError(f"monitor exited; log:\n{mon.tail()}")
            w0 = time.time()
            light = mon.metrics(LIGHT, 5.0)
            wall = (w0 + time.time()) / 2
            now = time.monotonic()
            if light is None:
                failing_since = failing_since or now
                if now - failing_since > 60:
                    raise RuntimeError(f"/metrics failing for 60 s; log:\n{mon.tail()}")
            else:
                failing_since = None
                age = light_age(light, ptopic, wall)
                if age is not None and now >= t_start:
                    ages.append((now - t_start, age))
            if now >= next_point:
                next_point += args.every
                got = take_point(
                    mon, broker, broker_pid, producer.pacing, (ptopic, ltopic), t_start, prev_mark
                )
                if got is not None:
                    pt, prev_mark = got
                    points.append(pt)
                    log(
                        f"soak {pt.elapsed / 60:5.1f} min: RSS {fmt(pt.rss_mib)} MiB, "
                        f"lag {fmt(pt.age_s, '.2f')} s, consumer lag {pt.consumer_lag:,.0f}, "
                        f"consumed {pt.consumed:,.0f}, pending {fmt(pt.pending)}, "
                        f"checkpoints {pt.checkpoints:,.0f}, alerts {pt.alerts:,.0f}, "
                        f"monitor {pt.cpu.get('monitor', 0):.2f} / others "
                        f"{pt.cpu.get('others', 0):.2f} cores"
                    )
            time.sleep(max(0.0, tick - time.monotonic()))
        pacing = producer.finish(90)
        t_end = time.monotonic()
        counts = high_watermarks(bootstrap, [ptopic, ltopic])
        r["produced"] = counts
        # 3. a bounded wait for the monitor to read everything produced
        caught: Series | None = None
        deadline = time.monotonic() + args.catch_up
        while time.monotonic() < deadline:
            s = mon.metrics(metrics_path((CONSUMED,)), 5.0)
            if s is not None and all(total(s, CONSUMED, topic=t) >= c for t, c in counts.items()):
                caught = s
                break
            if not mon.alive():
                raise RuntimeError(f"monitor exited; log:\n{mon.tail()}")
            time.sleep(1.0)
        r["caught_up_s"] = time.monotonic() - t_end if caught is not None else None
        last = take_point(mon, broker, broker_pid, pacing, (ptopic, ltopic), t_start, prev_mark)
        if last is not None:
            points.append(last[0])
        final = mon.metrics("/metrics", 30.0) or {}
        r["consumed"] = {t: total(final, CONSUMED, topic=t) for t in counts}
        r["peak_rss_mib"] = mon.peak_rss_mib()
        r["restores"] = {
            lab.get("outcome", "?"): v
            for lab, v in final.get("stream_monitor_state_restores_total", [])
        }
        r["alerts_by_status"] = {}
        for lab, v in final.get("stream_monitor_alerts_published_total", []):
            key = f"{lab.get('kind')}/{lab.get('status')}"
            r["alerts_by_status"][key] = r["alerts_by_status"].get(key, 0.0) + v
        r["evicted"] = total(final, "stream_monitor_label_join_evicted_total")
        r["joined"] = total(final, "stream_monitor_model_labelled_predictions_total")
        r["pacing"] = pacing
        r["achieved_rate"] = (pacing.predictions - 1) / max(
            1e-9, pacing.last_wall - pacing.first_wall
        )
    finally:
        if producer is not None:
            producer.stop.set()
        r["exit_code"], r["exit_s"] = mon.stop(30)
    r["points"], r["ages"] = points, ages
    r["log_problems"] = log_problems(mon.log_path)
    return r


def take_point(
    mon: Monitor,
    broker: Any,
    broker_pid: int | None,
    pacing: Pacing,
    topics: tuple[str, str],
    t_start: float,
    prev_mark: Any,
) -> tuple[Point, Any] | None:
    """A full scrape (the label join's gauges come only with it), RSS and CPU."""
    ptopic, ltopic = topics
    w0 = time.time()
    s = mon.metrics("/metrics", 20.0)
    wall = (w0 + time.time()) / 2
    if s is None:
        return None
    mark = cpu_mark([mon.pid], broker_pid)
    pt = Point(
        elapsed=mark.t - t_start,
        rss_mib=mon.rss_mib(),
        consumed=total(s, CONSUMED),
        consumed_predictions=total(s, CONSUMED, topic=ptopic),
        produced_predictions=pacing.predictions,
        consumer_lag=total(s, CONSUMER_LAG),
        age_s=light_age(s, ptopic, wall),
        label_age_s=light_age(s, ltopic, wall),
        consumer_lag_labels=total(s, CONSUMER_LAG, topic=ltopic),
        checkpoints=total(s, "stream_monitor_checkpoints_total"),
        snapshot_bytes=total(s, "stream_monitor_checkpoint_snapshot_bytes_sum"),
        snapshot_count=total(s, "stream_monitor_checkpoint_snapshot_bytes_count"),
        checkpoint_s=total(s, "stream_monitor_checkpoint_seconds_sum"),
        pending=total(s, "stream_monitor_label_join_pending")
        if "stream_monitor_label_join_pending" in s
        else None,
        alerts=total(s, "stream_monitor_alerts_published_total"),
        aborted=total(s, "stream_monitor_transactions_aborted_total"),
        failures=total(s, "stream_monitor_checkpoint_failures_total"),
        late_max_s=pacing.take_late_max(),
        disk_gib=dir_gib(broker.home) if broker is not None else None,
        cpu=cpu_shares(prev_mark, mark),
        gc_full=total(s, f"{GC_PAUSE}_count", generation="2"),
        gc_full_s=total(s, f"{GC_PAUSE}_sum", generation="2"),
        gc_full_slow=total(s, f"{GC_PAUSE}_count", generation="2")
        - total(s, f"{GC_PAUSE}_bucket", generation="2", le="0.25"),
    )
    return pt, mark


#: The monitor's histogram of garbage-collection pauses (its full collections: generation 2).
GC_PAUSE = "stream_monitor_gc_pause_seconds"


_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")


def log_problems(path: Path, keep: int = 8) -> tuple[int, list[str]]:
    """(number of WARNING/ERROR lines in the monitor's log, the first ``keep`` of them)."""
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if _PROBLEM.search(x)]
    except OSError:
        return 0, []
    return len(lines), [x[:300] for x in lines[:keep]]


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def block_minutes(args: argparse.Namespace) -> float:
    return args.block if args.minutes >= 3 * args.block else max(args.minutes / 4, 0.25)


def blocks(args: argparse.Namespace, r: dict[str, Any]) -> list[dict[str, Any]]:
    """Per block of ``block_minutes``: lag percentiles, RSS, consumer lag, CPU."""
    size = block_minutes(args) * 60
    nblocks = max(1, round(args.minutes * 60 / size))
    out = []
    pts: list[Point] = r["points"]
    for b in range(nblocks):
        lo, hi = b * size, (b + 1) * size
        ag = [a for t, a in r["ages"] if lo <= t < hi]
        bp = [p for p in pts if lo < p.elapsed <= hi + 1]
        mon_cores = [p.cpu.get("monitor") for p in bp if "monitor" in p.cpu]
        others = [p.cpu.get("others") for p in bp if "others" in p.cpu]
        rss = [p.rss_mib for p in bp if p.rss_mib is not None]
        # the full collections within the block: from the last point before it to its last
        before = [p for p in pts if p.elapsed <= lo + 1]
        gc0, gc1 = (before[-1] if before else None), (bp[-1] if bp else None)
        out.append(
            {
                "from_min": lo / 60,
                "to_min": hi / 60,
                "lag_n": len(ag),
                "lag_p50": pct(ag, 50),
                "lag_p95": pct(ag, 95),
                "lag_p99": pct(ag, 99),
                "lag_max": max(ag) if ag else None,
                "rss_median": pct(rss, 50),
                "rss_max": max(rss) if rss else None,
                "consumer_lag_max": max((p.consumer_lag for p in bp), default=None),
                "label_lag_max": max(
                    (p.label_age_s for p in bp if p.label_age_s is not None), default=None
                ),
                "monitor_cores": sum(mon_cores) / len(mon_cores) if mon_cores else None,
                "other_cores": sum(others) / len(others) if others else None,
                **{
                    k: None if gc1 is None else getattr(gc1, k) - (getattr(gc0, k) if gc0 else 0)
                    for k in ("gc_full", "gc_full_s", "gc_full_slow")
                },
            }
        )
    return out


def table_points(pts: list[Point]) -> list[tuple[Point, Point | None]]:
    """About ``TABLE_ROWS`` points evenly spread, each with the previous row's point."""
    if not pts:
        return []
    step = max(1, round(len(pts) / TABLE_ROWS))
    picked = pts[step - 1 :: step]
    if picked[-1] is not pts[-1]:
        picked.append(pts[-1])
    return [(p, picked[i - 1] if i else None) for i, p in enumerate(picked)]


def report(args: argparse.Namespace, mx: dict[str, Any] | None, r: dict[str, Any]) -> list[str]:
    pacing: Pacing = r["pacing"]
    bl = blocks(args, r)
    size = block_minutes(args)
    first, last = bl[0], bl[-1]
    rss_ratio = (
        last["rss_median"] / first["rss_median"]
        if first["rss_median"] and last["rss_median"]
        else None
    )
    produced = r["produced"]
    complete = all(r["consumed"].get(t, 0) >= c for t, c in produced.items())
    on_schedule = pacing.late_over_1s == 0 and pacing.undelivered == 0 and not pacing.errors
    last_ok = last["lag_p99"] is not None and last["lag_p99"] <= args.max_lag
    kept_up = complete and r["caught_up_s"] is not None and on_schedule and last_ok
    md: list[str] = []
    if mx:
        md.append(
            f"Max rate (step 1): a default monitor drained {mx['records']:,} pre-produced "
            f"records at **{mx['predictions_s']:,.0f} predictions/s** "
            f"({mx['records_s']:,.0f} records/s) between 10 % and 90 % consumed "
            f"({mx['window_s']:.1f} s; monitor {mx['cpu'].get('monitor', 0):.2f} cores, other "
            f"processes {mx['cpu'].get('others', 0):.2f}); event times "
            f"{mx['event_rate']:,.0f} predictions per second apart. Soak rate: half of it."
        )
    else:
        md.append("Rate given with `--rate` (no max-rate measurement).")
    md += [
        "",
        f"Soak: **{r['rate']:,.0f} predictions/s** (achieved {r['achieved_rate']:,.0f}/s) plus "
        f"labels for ~{args.label_rate:.0%} of them 2-10 s later, for {args.minutes:g} min, "
        f"{args.models} models (TrafficGenerator archetypes, two groups drifting at "
        f"{', '.join(f'{d:.0%}' for d in args.drifts)} of the run; {args.pool:,} events "
        "drawn per group before and after its drift, cycled with fresh ids and times), "
        f"{args.partitions} "
        f"partitions, event time = wall time; paced producer acks=all, lz4, "
        f"linger.ms={args.linger_ms:g}. Monitor: `stream-monitor run` with its defaults"
        + "".join(f", {k}={v}" for k, v in args.monitor_setting.items())
        + " "
        f"({r.get('mode', '?')}; ready after {fmt(r.get('ready_s'), '.1f')} s). Points every "
        f"{args.every:g} s (full /metrics scrape); lag sampled every {args.poll:g} s "
        f"(scrape wall time - newest prediction event time).",
    ]
    md += [
        *note_lines(args),
        "",
        "| min | records consumed | RSS MiB | lag s, predictions / labels "
        "| consumer lag (labels) | checkpoints (+since) "
        "| MB per snapshot | checkpoint s each | join pending | alerts | producer late max s "
        "| broker disk GiB | CPU monitor / broker / script / others |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p, q in table_points(r["points"]):
        dck = p.checkpoints - (q.checkpoints if q else 0)
        dsb = p.snapshot_bytes - (q.snapshot_bytes if q else 0)
        dsn = p.snapshot_count - (q.snapshot_count if q else 0)
        mb = dsb / dsn / 1e6 if dsn else None
        dcs = p.checkpoint_s - (q.checkpoint_s if q else 0)
        c = p.cpu
        md.append(
            f"| {p.elapsed / 60:.1f} | {p.consumed:,.0f} | {fmt(p.rss_mib)} "
            f"| {fmt(p.age_s, '.2f')} / {fmt(p.label_age_s, '.1f')} "
            f"| {p.consumer_lag:,.0f} ({p.consumer_lag_labels:,.0f}) "
            f"| {p.checkpoints:,.0f} (+{dck:,.0f}) | {fmt(mb, '.1f')} "
            f"| {fmt(dcs / dck if dck else None, '.2f')} | {fmt(p.pending)} | {p.alerts:,.0f} "
            f"| {p.late_max_s:.2f} | {fmt(p.disk_gib, '.1f')} "
            f"| {c.get('monitor', 0):.2f} / {c.get('broker', 0):.2f} / "
            f"{c.get('bench', 0):.2f} / {c.get('others', 0):.2f} |"
        )
    md += [
        "",
        f"(CPU: cores over the {args.every:g} s before the point; MB per snapshot and "
        "checkpoint seconds: mean since the previous row.)",
        "",
        f"Per {size:g}-minute block (lag samples every {args.poll:g} s):",
        "",
        "| block, min | lag p50 / p95 / p99 / max, s | samples | RSS median / max, MiB "
        "| consumer lag max | labels lag max, s | monitor cores | other processes, cores "
        "| full GCs (over 0.25 s), seconds in all |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in bl:
        md.append(
            f"| {b['from_min']:g}-{b['to_min']:g} | {fmt(b['lag_p50'], '.2f')} / "
            f"{fmt(b['lag_p95'], '.2f')} / {fmt(b['lag_p99'], '.2f')} / "
            f"{fmt(b['lag_max'], '.2f')} | {b['lag_n']} | {fmt(b['rss_median'])} / "
            f"{fmt(b['rss_max'])} | {fmt(b['consumer_lag_max'])} "
            f"| {fmt(b['label_lag_max'], '.1f')} "
            f"| {fmt(b['monitor_cores'], '.2f')} | {fmt(b['other_cores'], '.2f')} "
            f"| {fmt(b['gc_full'])} ({fmt(b['gc_full_slow'])}), {fmt(b['gc_full_s'], '.2f')} |"
        )
    caught_text = (
        f"within {r['caught_up_s']:.1f} s"
        if r["caught_up_s"] is not None
        else f"NOT within {args.catch_up:g} s"
    )
    alerts = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(r["alerts_by_status"].items()))
    nprob, probs = r["log_problems"]
    md += [
        "",
        f"- **RSS, first {size:g} min vs last {size:g} min (medians): "
        f"{fmt(first['rss_median'])} → {fmt(last['rss_median'])} MiB, ratio "
        f"{fmt(rss_ratio, '.2f')}**; peak (VmHWM) {fmt(r.get('peak_rss_mib'))} MiB.",
        f"- **Lag p50 first vs last block: {fmt(first['lag_p50'], '.2f')} → "
        f"{fmt(last['lag_p50'], '.2f')} s; p99 {fmt(first['lag_p99'], '.2f')} → "
        f"{fmt(last['lag_p99'], '.2f')} s.**",
        f"- **Kept up: {'yes' if kept_up else 'NO'}** — every record consumed: "
        + ", ".join(
            f"{t.rsplit('-', 1)[-1]} {r['consumed'].get(t, 0):,.0f}/{c:,}"
            for t, c in produced.items()
        )
        + f" ({caught_text} of the producer's end); producer on schedule: predictions more "
        f"than 1 s late "
        f"{pacing.late_over_1s:,}, undelivered {pacing.undelivered}, errors {len(pacing.errors)}; "
        f"last block's lag p99 {fmt(last['lag_p99'], '.2f')} s "
        f"{'<=' if last_ok else '>'} {args.max_lag:g} s (`--max-lag`).",
        f"- Alerts published: {alerts or 'none'}. Label join: {r['joined']:,.0f} predictions "
        f"joined, {r['evicted']:,.0f} evicted (capacity). Restores: "
        + (", ".join(f"{k} {v:,.0f}" for k, v in r["restores"].items()) or "none")
        + f". Transactions aborted {fmt(r['points'][-1].aborted if r['points'] else None)}, "
        f"checkpoint failures {fmt(r['points'][-1].failures if r['points'] else None)}.",
        f"- SIGTERM → exit code {r['exit_code']} in {r['exit_s']:.1f} s. Monitor log: "
        f"{nprob} WARNING/ERROR lines" + (":" if probs else "."),
    ]
    md += [f"  - `{x}`" for x in probs]
    r["kept_up"] = kept_up
    return md


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between points")
    ap.add_argument("--poll", type=float, default=1.0, help="seconds between lag samples")
    ap.add_argument("--rate", type=float, default=0.0, help="predictions/s (0: half the max)")
    ap.add_argument("--measure-predictions", type=int, default=2_000_000)
    ap.add_argument(
        "--measure-event-rate",
        type=float,
        default=25_000.0,
        help="predictions per second of event time in the max-rate backlog (about the soak's)",
    )
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--label-rate", type=float, default=0.8)
    ap.add_argument(
        "--drifts",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[0.25, 0.65],
        help="fraction of the run at which each of the two model groups drifts (<0: never)",
    )
    ap.add_argument("--block", type=float, default=10.0, help="minutes per block")
    ap.add_argument("--catch-up", type=float, default=120.0, help="s to wait at the end")
    ap.add_argument(
        "--max-lag",
        type=float,
        default=30.0,
        help="kept up only if the last block's lag p99 is at most this many seconds",
    )
    ap.add_argument("--linger-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument(
        "--pool",
        type=int,
        default=50_000,
        help="predictions drawn per model group and phase (before, after its drift), cycled",
    )
    add_run_args(ap, "MonitorConfig field of both monitors (dotted for a table); repeatable")
    add_broker_args(ap, 39292)
    add_results_args(ap)
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.every <= 0 or args.poll <= 0 or args.models < 1:
        ap.error("need positive --minutes, --every, --poll and --models")
    if args.measure_event_rate <= 0:
        ap.error("need a positive --measure-event-rate")

    rec = RunRecord.begin("soak.py", args, argv)
    run_id = rec.run_id
    mx: dict[str, Any] | None = None
    with (
        workdir_session("stream-monitor-soak-", args.keep_workdir) as workdir,
        broker_session(args) as (bootstrap, broker),
    ):
        log(f"run {run_id}; work folder {workdir}")
        rate = args.rate
        if rate <= 0:
            broker_pid = broker.pid() if broker else None
            mx = measure_max_rate(args, bootstrap, broker_pid, run_id, workdir)
            rate = 0.5 * mx["predictions_s"]
        r = soak(args, bootstrap, broker, run_id, workdir, rate)
    rec.write(
        args, "soak", "Soak at half the maximum rate (load_tests/soak.py)", report(args, mx, r)
    )
    return 0 if r["kept_up"] and r["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
