"""Chaos: SIGKILLs, a broker restart and a rebalance against an uninterrupted reference run.

    .venv/bin/python load_tests/chaos.py [--scenarios kill,broker,rebalance] [--seed 7]
        [--predictions 200000] [--no-results]
    .venv/bin/python load_tests/chaos.py --scenarios kill --predictions 60000 --kills 4 \\
        --no-results                                                  # ~4 min smoke run

On its own broker (deploy/local/kafka.sh through _harness.py, default ``--kafka-port 39392``),
each scenario runs `stream-monitor run` with its defaults (exactly-once, state checkpointed to
its changelog) on fresh co-partitioned topics (``--partitions`` 3) of TrafficGenerator traffic
(``--models`` 6 models whose keys fall evenly on the partitions, labels for ~80 % of the
predictions 2-10 s of event time later, a drift at the middle so that several alerts fire),
and a **reference**: one monitor that reads the same input topics from start to end
uninterrupted, with its own group, changelog and alerts topic. Both alerts topics are read
with a ``read_committed`` consumer, and the alerts are counted by ``(dedup_key, status)`` (each
monitor draws its own random incident ids, hence alert ids): **equal** if the two multisets
are, and **duplicates** counts alert ids seen
more than once.

* ``kill``: ``--predictions`` (200,000) predictions and their labels are pre-produced (event
  times: a past window ending now). The scenario's monitor is killed with SIGKILL at
  ``--kills`` (10) points of the drain, drawn with ``--seed``: one uniform point in each of
  10 equal slices of 5 %-95 % of the records; a point is reached when the group's committed
  offsets at the incarnation's start plus what the incarnation consumed reach it. Each time a
  new process starts with the same config (same instance id, hence the same transactional
  id, which fences the dead one's open transaction). The default is larger than 60,000 so
  that some incarnations commit checkpoints between kills (a checkpoint every 50,000 records
  or 5 s by default) and others die before their first one.
* ``broker``: a paced producer (idempotent, acks=all; event time = wall time) sends
  ``--rate`` (2,000) predictions/s plus labels for ``--live-seconds`` (60) while the monitor
  reads them; at a third of that time the broker is stopped (kafka.sh stop, same data folder)
  for ``--broker-down`` (6) s and started again. At the end: every record consumed (the
  monitor's ``events_consumed_total`` per topic against the topics' high watermarks; re-reads
  after a rewind would count twice) and the group's committed offsets at the end of both
  topics; then the reference reads the same topics.
* ``rebalance``: the same paced load; a second monitor (other instance id, same group)
  joins at a third of the time and gets SIGTERM at two thirds; then the reference.

Prints, per scenario: records, alerts (reference vs scenario), equal, duplicates, state
restores by outcome (``stream_monitor_state_restores_total`` summed over the scenario's
processes), transactions aborted and the time taken; for an unequal result, the differing
alerts and the WARNING/ERROR lines of the monitors' logs. Rewrites the ``chaos`` section of
load_tests/RESULTS.md (``--no-results`` to skip it). Logs and configs are kept (their folder
is printed) when a scenario is unequal or with ``--keep-workdir``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _harness import (
    BULK_PRODUCER,
    KAFKA_SH,
    Monitor,
    PacedProducer,
    RunRecord,
    Series,
    add_broker_args,
    add_results_args,
    add_run_args,
    broker_session,
    fmt,
    high_watermarks,
    lead_seconds,
    log,
    make_topics,
    metrics_path,
    note_lines,
    produce,
    spread_models,
    total,
)

from stream_monitor.simulate import TrafficGenerator

CONSUMED = "stream_monitor_events_consumed_total"
RESTORES = "stream_monitor_state_restores_total"
CHECKPOINTS = "stream_monitor_checkpoints_total"
ABORTED = "stream_monitor_transactions_aborted_total"
FAILURES = "stream_monitor_checkpoint_failures_total"
SCRAPE = metrics_path((CONSUMED, RESTORES, CHECKPOINTS, ABORTED, FAILURES))
SCENARIOS = ("kill", "broker", "rebalance")
AlertKey = tuple[str, str]


# --------------------------------------------------------------------------------------------
# Kafka helpers
# --------------------------------------------------------------------------------------------
def committed(bootstrap: str, group: str, topics: Sequence[str], partitions: int) -> list[int]:
    """The group's committed offsets of every partition of ``topics`` (-1: none); the
    coordinator can be slow to answer while the group rebalances, and a member killed between
    ``send_offsets_to_transaction`` and the commit leaves offsets pending that no one may read
    until its transaction times out (``transaction.timeout.ms``, 60 s): up to 6 tries of 15 s."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        for attempt in range(6):
            try:
                return [tp.offset for tp in c.committed(tps, timeout=15)]
            except KafkaException as exc:
                if attempt == 5:
                    raise
                log(f"committed offsets of {group}: {exc}; asking again")
        raise AssertionError("unreachable")
    finally:
        c.close()


def end_offsets(bootstrap: str, topics: Sequence[str], partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-end-{uuid.uuid4().hex[:6]}"})
    try:
        return [
            c.get_watermark_offsets(TopicPartition(t, p), timeout=15)[1]
            for t in topics
            for p in range(partitions)
        ]
    finally:
        c.close()


def committed_sum(bootstrap: str, group: str, topics: Sequence[str], partitions: int) -> int:
    return sum(max(0, o) for o in committed(bootstrap, group, topics, partitions))


def caught_up(bootstrap: str, group: str, topics: Sequence[str], partitions: int) -> bool:
    """The group's committed offsets are at the end of every input partition (False while the
    broker cannot answer)."""
    from confluent_kafka import KafkaException

    try:
        done = committed(bootstrap, group, topics, partitions)
        end = end_offsets(bootstrap, topics, partitions)
    except KafkaException:
        return False
    # an empty partition has no committed offset (-1001)
    return all(c == e or (e == 0 and c < 0) for c, e in zip(done, end, strict=True))


def read_alerts(bootstrap: str, topic: str, idle: float = 4.0, limit: float = 90.0) -> list[dict]:
    """Every committed alert of ``topic`` (read_committed, from the start, until nothing came
    for ``idle`` s after the assignment, at most ``limit`` s)."""
    from confluent_kafka import Consumer, KafkaError

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
    )
    assigned: list[bool] = []
    c.subscribe([topic], on_assign=lambda _c, parts: assigned.append(bool(parts)))
    out: list[dict] = []
    deadline = time.monotonic() + limit
    last = time.monotonic()
    try:
        while time.monotonic() < deadline and (not assigned or time.monotonic() - last < idle):
            if not assigned:
                last = time.monotonic()
            for m in c.consume(500, 0.5):
                err = m.error()
                if err is None:
                    out.append(orjson.loads(m.value()))  # type: ignore[arg-type]
                    last = time.monotonic()
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topic}: {err}")
    finally:
        c.close()
    return out


def alert_key(a: dict) -> AlertKey:
    # Counted per (dedup_key, status), which is what the ids encoded before they were random
    # (UUIDv5 of dedup key, incident number, status): each monitor draws its own incident ids.
    return (a["dedup_key"], a["status"])


# --------------------------------------------------------------------------------------------
# monitors
# --------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What every scenario uses: options, broker, run id, work folder."""

    args: argparse.Namespace
    bootstrap: str
    broker: Any  # _harness.Broker or None
    run_id: str
    workdir: Path
    logs: list[Path] = field(default_factory=list)

    def monitor(self, name: str, topics: dict[str, str], group: str, instance: str) -> Monitor:
        mon = Monitor(
            self.workdir,
            name,
            self.bootstrap,
            topics,
            group=group,
            settings={**self.args.monitor_setting, "instance_id": instance},
        )
        self.logs.append(mon.log_path)
        return mon

    def topics(self, sc: str) -> tuple[dict[str, str], list[str], str]:
        """Fresh topics for scenario ``sc``, its two input topics and its consumer group."""
        topics = make_topics(self.bootstrap, self.run_id, sc, self.args.partitions)
        return topics, [topics["predictions"], topics["labels"]], f"chaos-{self.run_id}-{sc}"


def started(mon: Monitor, limit: float = 90.0) -> Monitor:
    mon.start()
    try:
        mon.wait_ready(limit)
    except BaseException:
        mon.stop(10)
        raise
    return mon


def scrape(mon: Monitor) -> Series | None:
    return mon.metrics(SCRAPE, 5.0)


def restores_of(s: Series | None) -> Counter[str]:
    out: Counter[str] = Counter()
    for lab, v in (s or {}).get(RESTORES, []):
        out[lab.get("outcome", "?")] += int(v)
    return out


STATE = {
    "predictions monitored": "stream_monitor_model_events_total",
    "labelled predictions": "stream_monitor_model_labelled_predictions_total",
    "pending in the join": "stream_monitor_label_join_pending",
    "early labels": "stream_monitor_label_join_early_labels",
    "unmatched labels": "stream_monitor_label_join_unmatched_labels_total",
}


def state_figures(mon: Monitor) -> dict[str, float]:
    """The models' state at the end, from one full scrape (state, not process, counters)."""
    s = mon.metrics("/metrics", 30.0) or {}
    return {k: total(s, n) for k, n in STATE.items() if n in s}


def kill9(mon: Monitor) -> None:
    """SIGKILL, then reap the process and close its log."""
    if mon.proc is not None and mon.proc.poll() is None:
        mon.proc.send_signal(signal.SIGKILL)
        mon.proc.wait(15)
    mon.stop(5)


def wait_for(cond: Callable[[], bool], limit: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return False


# --------------------------------------------------------------------------------------------
# traffic
# --------------------------------------------------------------------------------------------
def generator(args: argparse.Namespace, topics: dict[str, str], n: int, **kw: Any) -> Any:
    return TrafficGenerator(
        seed=args.seed,
        drift_at=n // 2,
        models=spread_models(args.models, args.partitions),
        prediction_topic=topics["predictions"],
        label_topic=topics["labels"],
        **kw,
    )


def start_live(ctx: Ctx, topics: dict[str, str]) -> tuple[PacedProducer, float]:
    """A paced idempotent producer (acks=all, so that retries across a broker restart write
    no duplicate) sending ``--rate`` x ``--live-seconds`` predictions and their labels, event
    time = the wall time they are due, generated before the clock starts; and that start
    (time.time())."""
    args = ctx.args
    n = int(args.rate * args.live_seconds)
    start = time.time() + lead_seconds(int(n * 1.8))
    records = list(generator(args, topics, n, start_time=start, rate=args.rate).events(n))
    pacer = PacedProducer(
        ctx.bootstrap, records, topics["predictions"], args.live_seconds + 120, idempotent=True
    )
    return pacer, start


# --------------------------------------------------------------------------------------------
# scenario results
# --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    name: str
    records: dict[str, int] = field(default_factory=dict)  # produced, per topic
    ref_alerts: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    restores: Counter[str] = field(default_factory=Counter)
    aborted: float = 0.0
    failures: float = 0.0
    seconds: float = 0.0
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, ok, detail)
    ref_state: dict[str, float] = field(default_factory=dict)
    state: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # what happened, in order
    exit_codes: list[int | None] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return Counter(map(alert_key, self.alerts)) == Counter(map(alert_key, self.ref_alerts))

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(a["alert_id"] for a in self.alerts).values() if n > 1)

    @property
    def ref_duplicates(self) -> int:
        return sum(n - 1 for n in Counter(a["alert_id"] for a in self.ref_alerts).values() if n > 1)

    @property
    def alerts_ok(self) -> bool:
        return self.equal and self.duplicates == 0 and bool(self.ref_alerts)

    @property
    def ok(self) -> bool:
        return self.alerts_ok and all(ok for _, ok, _ in self.checks)

    def stopped(self, mon: Monitor, check: str) -> tuple[int | None, float]:
        """SIGTERM ``mon`` (60 s at most): its exit code recorded, and checked (``check``) to
        be 0; (exit code, seconds to exit)."""
        rc, sec = mon.stop(60)
        self.exit_codes.append(rc)
        self.checks.append((check, rc == 0, f"code {rc}"))
        return rc, sec

    def absorb(self, s: Series | None) -> None:
        """Add one process's last scrape: restores, aborted transactions, failed checkpoints."""
        self.restores += restores_of(s)
        self.aborted += total(s or {}, ABORTED)
        self.failures += total(s or {}, FAILURES)


def reference(
    ctx: Ctx, sc: str, topics: dict[str, str], produced: dict[str, int]
) -> tuple[list[dict], dict[str, float]]:
    """An uninterrupted monitor over ``topics`` from the start, its own group and alerts
    topic; its committed alerts and its state figures at the end."""
    ref_topics = {
        **topics,
        "alerts": topics["alerts"] + "-ref",
        "dead_letter": topics["dead_letter"] + "-ref",
    }
    group = f"chaos-{ctx.run_id}-{sc}-ref"
    mon = started(ctx.monitor(f"{sc}-ref", ref_topics, group, f"{sc}-ref"))
    try:
        ok = wait_for(
            lambda: (
                all(total(scrape(mon) or {}, CONSUMED, topic=t) >= c for t, c in produced.items())
                or not mon.alive()
            ),
            ctx.args.drain_timeout,
        )
        if not ok or not mon.alive():
            raise RuntimeError(f"{sc}: the reference did not read every record; log:\n{mon.tail()}")
        group_topics = [topics["predictions"], topics["labels"]]
        wait_for(lambda: caught_up(ctx.bootstrap, group, group_topics, ctx.args.partitions), 30)
        state = state_figures(mon)
    finally:
        rc, _ = mon.stop(60)
    if rc != 0:
        raise RuntimeError(f"{sc}: the reference exited with {rc}; log:\n{mon.tail()}")
    alerts = read_alerts(ctx.bootstrap, ref_topics["alerts"])
    log(f"{sc}: reference committed {len(alerts)} alerts")
    return alerts, state


def against_reference(ctx: Ctx, out: Outcome, topics: dict[str, str], t0: float) -> Outcome:
    """A live scenario's end: its time since ``t0``, its committed alerts, then the
    reference's over the same topics."""
    out.seconds = time.monotonic() - t0
    out.alerts = read_alerts(ctx.bootstrap, topics["alerts"])
    out.ref_alerts, out.ref_state = reference(ctx, out.name, topics, out.records)
    return out


# --------------------------------------------------------------------------------------------
# kill
# --------------------------------------------------------------------------------------------
def kill_points(total_records: int, kills: int, seed: int) -> list[int]:
    """One uniform point in each of ``kills`` equal slices of 5 %-95 % of the records."""
    rng = np.random.default_rng(seed)
    lo, hi = 0.05 * total_records, 0.95 * total_records
    width = (hi - lo) / kills
    return [int(lo + width * (i + rng.random())) for i in range(kills)]


def scenario_kill(ctx: Ctx) -> Outcome:
    args, bootstrap = ctx.args, ctx.bootstrap
    out = Outcome("kill")
    topics, inputs, group = ctx.topics("kill")
    n = args.predictions
    ev_rate = 200.0
    gen = generator(args, topics, n, start_time=time.time() - n / ev_rate - 60, rate=ev_rate)
    log(f"kill: pre-producing {n:,} predictions + labels")
    produce(
        bootstrap,
        gen.events(n),
        topics["predictions"],
        time_limit=300,
        paced=False,
        conf=BULK_PRODUCER,
    )
    out.records = high_watermarks(bootstrap, inputs)
    total_records = sum(out.records.values())
    t0 = time.monotonic()
    out.ref_alerts, out.ref_state = reference(ctx, "kill", topics, out.records)

    points = kill_points(total_records, args.kills, args.seed)
    log(f"kill: {total_records:,} records; SIGKILL at {', '.join(f'{p:,}' for p in points)}")
    for i, point in enumerate([*points, None]):
        start_pos = committed_sum(bootstrap, group, inputs, args.partitions)
        mon = started(ctx.monitor(f"kill-{i}", topics, group, "kill"))
        last: Series | None = None
        reached = False
        deadline = time.monotonic() + args.drain_timeout
        try:
            while time.monotonic() < deadline and mon.alive():
                s = scrape(mon)
                if s is not None:
                    last = s
                    pos = start_pos + total(s, CONSUMED)
                    if point is not None and pos >= point:
                        reached = True
                        break
                    if point is None and pos >= total_records:
                        reached = True
                        break
                time.sleep(args.kill_poll)
            if not reached:
                raise RuntimeError(f"kill: incarnation {i} stalled; log:\n{mon.tail()}")
            consumed = total(last or {}, CONSUMED)
            ckpts = total(last or {}, CHECKPOINTS)
            if point is not None:
                kill9(mon)
                out.exit_codes.append(-9)
                out.events.append(
                    f"#{i + 1} started at {start_pos:,} committed, killed at "
                    f"≈{start_pos + consumed:,.0f} (point {point:,}) after {ckpts:.0f} "
                    "checkpoint(s)"
                )
            else:
                # the last incarnation reads the rest; SIGTERM commits a final checkpoint
                ok = wait_for(lambda: caught_up(bootstrap, group, inputs, args.partitions), 30)
                last = scrape(mon) or last
                out.state = state_figures(mon)
                rc, _ = out.stopped(mon, "last process exit code 0")
                out.events.append(
                    f"last started at {start_pos:,} committed, read the rest; SIGTERM → exit "
                    f"code {rc}"
                )
                out.checks.append(
                    (
                        "committed offsets at the end of the inputs",
                        ok or caught_up(bootstrap, group, inputs, args.partitions),
                        "",
                    )
                )
        finally:
            if mon.alive():
                mon.stop(30)
        out.absorb(last)
    log("kill: " + "; ".join(out.events))
    out.alerts = read_alerts(bootstrap, topics["alerts"])
    out.seconds = time.monotonic() - t0
    return out


# --------------------------------------------------------------------------------------------
# broker
# --------------------------------------------------------------------------------------------
def kafka_sh(ctx: Ctx, cmd: str, limit: float) -> subprocess.CompletedProcess[str]:
    assert ctx.broker is not None
    return subprocess.run(
        ["bash", str(KAFKA_SH), cmd],
        env=ctx.broker.env,
        text=True,
        capture_output=True,
        timeout=limit,
    )


def scenario_broker(ctx: Ctx) -> Outcome:
    args, bootstrap = ctx.args, ctx.bootstrap
    out = Outcome("broker")
    if ctx.broker is None:
        out.checks.append(
            ("broker restart", False, "needs our own broker (no --bootstrap-servers)")
        )
        return out
    topics, inputs, group = ctx.topics("broker")
    t0 = time.monotonic()
    mon = started(ctx.monitor("broker", topics, group, "broker"))
    pacer: PacedProducer | None = None
    last: Series | None = None
    try:
        pacer, start = start_live(ctx, topics)
        wall_stop = start + args.live_seconds / 3
        time.sleep(max(0.0, wall_stop - time.time()))
        s = scrape(mon)
        t_stop = time.monotonic()
        res = kafka_sh(ctx, "stop", 90)
        out.events.append(
            f"broker stopped at {args.live_seconds / 3:.0f} s of {args.live_seconds:g} s "
            f"(monitor had consumed {total(s or {}, CONSUMED):,.0f}): "
            f"{(res.stderr or res.stdout).strip()}"
        )
        time.sleep(args.broker_down)
        res = kafka_sh(ctx, "start", 200)
        if res.returncode != 0:
            raise RuntimeError(f"broker restart failed:\n{res.stderr[-2000:]}")
        out.events.append(
            f"broker started again {time.monotonic() - t_stop:.1f} s after the stop "
            f"(down for {args.broker_down:g} s + stop/start time)"
        )
        log(f"broker: {out.events[-1]}")
        pr = pacer.finish(args.live_seconds + 150)
        out.events.append(
            f"producer sent {pr.handed:,} records ({pr.predictions:,} predictions) in "
            f"{pr.seconds:.0f} s" + (" (STOPPED AT THE TIME LIMIT)" if pr.stopped_early else "")
        )
        out.records = high_watermarks(bootstrap, inputs)

        def done() -> bool:
            nonlocal last
            s = scrape(mon)
            if s is not None:
                last = s
            return s is not None and all(
                total(s, CONSUMED, topic=t) >= c for t, c in out.records.items()
            )

        t_wait = time.monotonic()
        read_all = wait_for(lambda: done() or not mon.alive(), args.drain_timeout) and mon.alive()
        out.events.append(
            f"monitor read every record {time.monotonic() - t_wait:.0f} s after the producer's end"
            if read_all
            else "monitor did NOT read every record in time"
        )
        committed_ok = wait_for(lambda: caught_up(bootstrap, group, inputs, args.partitions), 60)
        out.state = state_figures(mon)
        consumed = {t: total(last or {}, CONSUMED, topic=t) for t in out.records}
        aborted = total(last or {}, ABORTED)
        for t, c in out.records.items():
            # events_consumed_total counts what a rewind (after an aborted transaction) makes
            # the monitor read again: more than produced is right only after one
            out.checks.append(
                (
                    f"{t.rsplit('-', 1)[-1]}: events_consumed_total = produced"
                    + (" (or more after a rewind)" if aborted else ""),
                    consumed[t] == c or (consumed[t] > c and aborted > 0),
                    f"{consumed[t]:,.0f} consumed / {c:,} produced"
                    + (f", {consumed[t] - c:,.0f} read again" if consumed[t] > c else ""),
                )
            )
        out.checks.append(("committed offsets at the end of the inputs", committed_ok, ""))
    finally:
        if pacer is not None:
            pacer.stop.set()
        if mon.alive():
            last = scrape(mon) or last
        out.stopped(mon, "exit code 0 after SIGTERM")
    out.absorb(last)
    return against_reference(ctx, out, topics, t0)


# --------------------------------------------------------------------------------------------
# rebalance
# --------------------------------------------------------------------------------------------
def scenario_rebalance(ctx: Ctx) -> Outcome:
    args, bootstrap = ctx.args, ctx.bootstrap
    out = Outcome("rebalance")
    topics, inputs, group = ctx.topics("rebalance")
    t0 = time.monotonic()
    a = started(ctx.monitor("rebalance-a", topics, group, "a"))
    b: Monitor | None = None
    pacer: PacedProducer | None = None
    last_a: Series | None = None
    last_b: Series | None = None
    try:
        pacer, start = start_live(ctx, topics)
        time.sleep(max(0.0, start + args.live_seconds / 3 - time.time()))
        b = bm = ctx.monitor("rebalance-b", topics, group, "b")
        bm.start()
        b_ready = wait_for(lambda: bm.ready() or not bm.alive(), 60, 0.2)
        last_b = scrape(b)
        out.events.append(
            f"b joined at {args.live_seconds / 3:.0f} s"
            + ("" if b_ready and b.alive() else " (NOT ready within 60 s)")
            + f"; a consumed {total(scrape(a) or {}, CONSUMED):,.0f} so far"
        )
        time.sleep(max(0.0, start + 2 * args.live_seconds / 3 - time.time()))
        last_b = scrape(b) or last_b
        rc_b, sec_b = out.stopped(b, "b: exit code 0 after SIGTERM")
        out.events.append(
            f"b got SIGTERM at {2 * args.live_seconds / 3:.0f} s after consuming "
            f"{total(last_b or {}, CONSUMED):,.0f} records; exit code {rc_b} in {sec_b:.1f} s"
        )
        pr = pacer.finish(args.live_seconds + 150)
        out.events.append(f"producer sent {pr.handed:,} records in {pr.seconds:.0f} s")
        out.records = high_watermarks(bootstrap, inputs)
        committed_ok = wait_for(lambda: caught_up(bootstrap, group, inputs, args.partitions), 120)
        last_a = scrape(a)
        out.state = state_figures(a)
        out.checks.append(("committed offsets at the end of the inputs", committed_ok, ""))
        out.events.append(f"a consumed {total(last_a or {}, CONSUMED):,.0f} records in all")
    finally:
        if pacer is not None:
            pacer.stop.set()
        if b is not None and b.alive():
            b.stop(30)
        if a.alive():
            last_a = scrape(a) or last_a
        out.stopped(a, "a: exit code 0 after SIGTERM")
    out.absorb(last_a)
    out.absorb(last_b)
    return against_reference(ctx, out, topics, t0)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b")


def log_problems(paths: Sequence[Path], keep: int = 6) -> list[str]:
    """WARNING/ERROR lines of the monitors' logs (file: line), the first ``keep``."""
    out: list[str] = []
    for p in paths:
        try:
            lines = p.read_text(errors="replace").splitlines()
        except OSError:
            continue
        out += [f"{p.name}: {x[:300]}" for x in lines if _PROBLEM.search(x)]
    return out[:keep]


def diff_lines(o: Outcome, keep: int = 8) -> list[str]:
    ref, got = Counter(map(alert_key, o.ref_alerts)), Counter(map(alert_key, o.alerts))
    by_key = {alert_key(a): a for a in [*o.ref_alerts, *o.alerts]}
    out = []
    for what, diff in (("missing", ref - got), ("extra", got - ref)):
        for k, c in list(diff.items())[:keep]:
            a = by_key[k]
            out.append(
                f"{what} x{c}: {a['status']} {a['kind']} model={a['model_id']} "
                f"feature={a.get('feature')} signal={a['signal']} "
                f"observed_at={a['observed_at']:.1f} alert_id={a['alert_id'][:16]}"
            )
    return out


def restores_text(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def report(args: argparse.Namespace, outcomes: list[Outcome], ctx_logs: list[Path]) -> list[str]:
    md = [
        f"TrafficGenerator traffic, {args.models} models, labels for ~80 % of the predictions, "
        f"a drift at the middle, {args.partitions} partitions; `stream-monitor run` with its "
        "defaults (exactly-once, checkpoints to the changelog)"
        + (
            " and " + ", ".join(f"{k}={v}" for k, v in args.monitor_setting.items())
            if args.monitor_setting
            else ""
        )
        + ". Each scenario is compared with a reference monitor that read the same input topics "
        "uninterrupted (own group, changelog and alerts topic); committed alerts read with "
        "`read_committed`, counted by (dedup_key, status). kill: "
        f"{args.predictions:,} predictions pre-produced, {args.kills} SIGKILLs (seed "
        f"{args.seed}); broker and rebalance: {args.rate:,.0f} predictions/s for "
        f"{args.live_seconds:g} s from a paced idempotent producer.",
    ]
    md += [
        *note_lines(args),
        "",
        "| scenario | records (predictions + labels) | alerts: reference / scenario | **equal** "
        "| duplicates | restores by outcome | transactions aborted | other checks | time |",
        "|---|---:|---:|---|---:|---|---:|---|---:|",
    ]
    for o in outcomes:
        checks = "; ".join(f"{w}: {'ok' if ok else 'FAILED'}" for w, ok, _ in o.checks) or "-"
        md.append(
            f"| {o.name} | {sum(o.records.values()):,} | {len(o.ref_alerts)} / {len(o.alerts)} "
            f"| **{'yes' if o.equal else 'NO'}** | {o.duplicates} | {restores_text(o.restores)} "
            f"| {o.aborted:.0f} | {checks} | {o.seconds:.0f} s |"
        )
    for o in outcomes:
        md += ["", f"**{o.name}**: " + "; ".join(o.events) + "."]
        if o.state or o.ref_state:
            md.append(
                "State at the end, reference / scenario: "
                + "; ".join(f"{k} {fmt(o.ref_state.get(k))} / {fmt(o.state.get(k))}" for k in STATE)
                + "."
            )
        lost = o.state.get("unmatched labels", 0) - o.ref_state.get("unmatched labels", 0)
        if o.state and o.ref_state and lost > 0:
            md.append(
                f"The scenario's label join lost predictions: {lost:,.0f} more labels than in "
                "the reference never met their prediction (the restored states lacked "
                "predictions that were awaiting labels), so labelled predictions, and the "
                "alerts that depend on them, differ."
            )
        details = [f"{w}: {d}" for w, ok, d in o.checks if d]
        if details:
            md.append("Checks: " + "; ".join(details) + ".")
        if not o.ref_alerts:
            md.append("The reference raised no alert: the comparison is empty.")
        if o.ref_duplicates:
            md.append(f"The reference itself has {o.ref_duplicates} duplicate alert ids.")
        if not o.equal:
            md += ["", "Alerts not equal:", *(f"- {x}" for x in diff_lines(o))]
        probs = log_problems([p for p in ctx_logs if p.name.startswith(o.name)])
        if probs:
            md += ["", "WARNING/ERROR lines of its monitors' logs (first ones):"]
            md += [f"- `{x}`" for x in probs]
    alerts_ok = all(o.alerts_ok for o in outcomes)
    checks_ok = all(ok for o in outcomes for _, ok, _ in o.checks)
    verdict = (
        "committed alerts equal to the reference's in every scenario, none doubled"
        if alerts_ok
        else "SOME SCENARIOS' COMMITTED ALERTS DIFFER FROM THE REFERENCE'S OR ARE DOUBLED"
    ) + ("; every other check passed" if checks_ok else "; SOME OTHER CHECKS FAILED")
    return [*md, "", f"Overall: {verdict}."]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--predictions", type=int, default=200_000, help="kill: the backlog")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--kill-poll", type=float, default=0.1, help="s between scrapes (kill)")
    ap.add_argument("--models", type=int, default=6, help="spread evenly on the partitions")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2000.0, help="broker/rebalance: predictions/s")
    ap.add_argument("--live-seconds", type=float, default=60.0)
    ap.add_argument("--broker-down", type=float, default=6.0, help="s the broker stays down")
    ap.add_argument("--drain-timeout", type=float, default=420.0)
    add_run_args(ap, "MonitorConfig field for every monitor (dotted for a table); repeatable")
    add_broker_args(ap, 39392)
    add_results_args(ap)
    args = ap.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not scenarios or set(scenarios) - set(SCENARIOS):
        ap.error(f"--scenarios takes some of {','.join(SCENARIOS)}")
    if args.predictions < 1000 or args.kills < 1 or args.models < 1 or args.partitions < 1:
        ap.error("need --predictions >= 1000 and positive --kills, --models, --partitions")

    rec = RunRecord.begin("chaos.py", args, argv)
    workdir = Path(tempfile.mkdtemp(prefix="stream-monitor-chaos-"))
    outcomes: list[Outcome] = []
    keep = args.keep_workdir
    ctx: Ctx | None = None
    try:
        with broker_session(args) as (bootstrap, broker):
            ctx = Ctx(args, bootstrap, broker, rec.run_id, workdir)
            run = {
                "kill": scenario_kill,
                "broker": scenario_broker,
                "rebalance": scenario_rebalance,
            }
            for sc in scenarios:
                log(f"--- scenario {sc}")
                o = run[sc](ctx)
                outcomes.append(o)
                log(
                    f"{sc}: {sum(o.records.values()):,} records; alerts reference "
                    f"{len(o.ref_alerts)} / scenario {len(o.alerts)}; equal "
                    f"{'yes' if o.equal else 'NO'}; duplicates {o.duplicates}; restores "
                    f"{restores_text(o.restores)}; aborted {o.aborted:.0f}; {o.seconds:.0f} s"
                )
                keep = keep or not o.ok
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            log(f"monitor configs and logs kept in {workdir}")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    rec.write(
        args,
        "chaos",
        "Chaos: kills, a broker restart and a rebalance (load_tests/chaos.py)",
        report(args, outcomes, ctx.logs if ctx else []),
    )
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
