"""Throughput of `stream-monitor run` against the floor, on one broker and the same data.

    .venv/bin/python load_tests/bench_throughput.py [--predictions 500000] [--models 5]
        [--scenarios A,B] [--live-seconds 45] [--processes N] [--no-results]

For each scenario (A: predictions only; B: a label for every prediction, sent about
``--label-after`` 1,000 records after it), on unique topics of one broker:

1. produce: ``--predictions`` predictions of ``--models`` models, each with ``--numeric`` 20
   numeric and ``--categorical`` 3 categorical features and a drift at ``--drift-at`` (the
   middle), key = model_id, JSON value (docs/wire-contract.md), pre-produced as fast as one
   Python producer can.
2. floor: a bare confluent-kafka consumer reads every record of the input topics with
   ``consume(num_messages=<batch_size>, timeout=1.0)`` and ``orjson.loads`` of each value,
   nothing else: records/s between 10 % and 90 % read.
3. monitor: ``stream-monitor run`` (defaults except topics, group and ports; ``--processes N``
   passed through) drains the same topics; records/s between 10 % and 90 % consumed from its
   /metrics, polled every ``--poll`` s, RSS (VmRSS of /proc/<pid>/status) over time, at 1 M
   records and at the end, peak RSS (VmHWM); SIGTERM must end it with exit code 0.
4. live: a fresh monitor on fresh topics while a paced producer (event time = wall time)
   sends half the predictions/s the monitor sustained in 3. (``--live-rate`` to choose) for
   ``--live-seconds``; the event-to-metric lag is sampled at every poll after a warm-up
   (``--live-warmup``, 15 s, whose largest age is reported apart as the start-up).

Prints the figures and rewrites the ``bench_throughput`` section of load_tests/RESULTS.md
(``--no-results`` to skip it).
"""

from __future__ import annotations

import argparse
import subprocess
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _harness import (
    BULK_PRODUCER,
    KeyValue,
    Monitor,
    PacedProducer,
    Sample,
    add_broker_args,
    add_results_args,
    broker_label,
    broker_session,
    buckets,
    command_line,
    cpu_shares,
    cpu_text,
    fmt,
    high_watermarks,
    hist_delta,
    hist_quantile,
    increase,
    lead_seconds,
    log,
    machine_info,
    make_topics,
    metrics_path,
    newest,
    pct,
    poll,
    produce,
    spread_models,
    total,
    workdir_session,
    write_results,
)

from stream_monitor.config import MonitorConfig
from stream_monitor.simulate import Record

CONSUMED = "stream_monitor_events_consumed_total"
EVENT_TS = "stream_monitor_last_event_timestamp_seconds"
BATCH_TS = "stream_monitor_last_batch_timestamp_seconds"
BATCH_S = "stream_monitor_batch_processing_seconds"
CHECKPOINT_S = "stream_monitor_checkpoint_seconds"
SCRAPE = metrics_path(
    (
        CONSUMED,
        "stream_monitor_events_invalid_total",
        "stream_monitor_alerts_published_total",
        f"{BATCH_S}_bucket",
        f"{BATCH_S}_count",
        f"{BATCH_S}_sum",
        "stream_monitor_batch_events_count",
        "stream_monitor_batch_events_sum",
        EVENT_TS,
        BATCH_TS,
        "stream_monitor_checkpoints_total",
        f"{CHECKPOINT_S}_bucket",
        f"{CHECKPOINT_S}_count",
        f"{CHECKPOINT_S}_sum",
        "stream_monitor_label_partition_pauses_total",
    )
)
JOIN_SERIES = {
    "labelled predictions (joined)": "stream_monitor_model_labelled_predictions_total",
    "labels unmatched": "stream_monitor_label_join_unmatched_labels_total",
    "labels waiting early": "stream_monitor_label_join_early_labels",
    "predictions pending": "stream_monitor_label_join_pending",
    "predictions evicted": "stream_monitor_label_join_evicted_total",
    "predictions expired": "stream_monitor_label_join_expired_total",
}
SCENARIOS = {"A": "predictions only", "B": "a label for every prediction"}
RSS_POINTS = 8  # points of the RSS series
MILLION = 1_000_000


# --------------------------------------------------------------------------------------------
# the data: wide predictions of a few models (TrafficGenerator's archetypes are narrower)
# --------------------------------------------------------------------------------------------
_KINDS = ("amount", "ratio", "duration", "count", "score")
_CATEGORIES = (
    ("country", ("us", "gb", "de", "fr", "in", "br", "ca", "es", "it", "nl", "jp", "mx")),
    ("device", ("android", "ios", "web", "desktop")),
    ("channel", ("organic", "paid", "email", "referral", "social", "direct")),
)


@dataclass(frozen=True)
class Workload:
    """``predictions`` events of ``models`` with ``numeric`` + ``categorical`` features, a
    drift from the global index ``drift_at`` (None: none) and, with ``labels``, a label for
    every prediction sent ``label_after`` predictions later."""

    predictions: int
    models: tuple[str, ...]
    numeric: int
    categorical: int
    labels: bool
    label_after: int
    drift_at: int | None
    seed: int


class _Model:
    """Per-model distribution parameters, drawn once from the seed."""

    def __init__(self, rng: np.random.Generator, numeric: int, categorical: int) -> None:
        self.kinds = [_KINDS[k % len(_KINDS)] for k in range(numeric)]
        self.a = rng.uniform(1.0, 4.0, numeric)  # location / shape
        self.b = rng.uniform(0.5, 1.5, numeric)  # scale
        self.missing = np.where(np.arange(numeric) % 7 == 3, 0.01, 0.0)
        self.cat_p = []
        for c in range(categorical):
            levels = len(_CATEGORIES[c % len(_CATEGORIES)][1])
            p = rng.dirichlet(np.linspace(3.0, 0.3, levels))  # a few common, a long tail
            self.cat_p.append(p)
        self.w = rng.normal(0.0, 0.7, min(6, numeric))
        self.bias = rng.normal(-0.5, 0.3)

    def draw(self, rng: np.random.Generator, n: int, drifted: np.ndarray) -> dict[str, Any]:
        """Columns: raw numeric values (list per feature, None = missing), z-scores, cats."""
        cols: list[list[Any]] = []
        z = np.zeros((n, len(self.kinds)))
        for k, kind in enumerate(self.kinds):
            a, b = self.a[k], self.b[k]
            shift = drifted if k < 3 else np.zeros(n, dtype=bool)  # three features drift
            if kind == "amount":  # lognormal money amounts
                mu = a + 0.8 * shift
                x = np.round(rng.lognormal(mu, b), 2)
                z[:, k] = (np.log(np.maximum(x, 0.01)) - a) / b
            elif kind == "ratio":  # beta, in [0, 1]
                x = rng.beta(a, b + 2.0 + 3.0 * shift)
                mean = a / (a + b + 2.0)
                z[:, k] = (x - mean) / 0.2
                x = np.round(x, 4)
            elif kind == "duration":  # gamma seconds
                scale = 10.0 * b * (1.0 + 0.7 * shift)
                x = np.round(rng.gamma(a, scale), 3)
                z[:, k] = (x - a * 10.0 * b) / (np.sqrt(a) * 10.0 * b)
            elif kind == "count":  # poisson counts
                lam = 3.0 * a * (1.0 + 0.5 * shift)
                x = rng.poisson(lam)
                z[:, k] = (x - 3.0 * a) / np.sqrt(3.0 * a)
            else:  # an upstream score, normal
                x = np.round(rng.normal(a - 2.5 + shift, b), 4)
                z[:, k] = (x - (a - 2.5)) / b
            col = x.tolist()
            if self.missing[k]:
                for i in np.flatnonzero(rng.random(n) < self.missing[k]).tolist():
                    col[i] = None
                    z[i, k] = 0.0
            cols.append(col)
        cats: list[list[str]] = []
        for c, p in enumerate(self.cat_p):
            values = _CATEGORIES[c % len(_CATEGORIES)][1]
            idx = rng.choice(len(values), n, p=p)
            if c == 0:  # after the drift, a rare level takes 30 % of the traffic
                idx[drifted & (rng.random(n) < 0.3)] = len(values) - 1
            cats.append([values[i] for i in idx.tolist()])
        score = 1.0 / (1.0 + np.exp(-(z[:, : len(self.w)] @ self.w + self.bias)))
        truth = rng.random(n) < score
        truth ^= drifted & (rng.random(n) < 0.25)  # concept drift: the model gets worse
        return {"cols": cols, "cats": cats, "score": score, "truth": truth}


def feature_names(numeric: int, categorical: int) -> list[str]:
    nums = [f"{_KINDS[k % len(_KINDS)]}_{k}" for k in range(numeric)]
    cats = [
        _CATEGORIES[c % len(_CATEGORIES)][0] + (f"_{c}" if c >= len(_CATEGORIES) else "")
        for c in range(categorical)
    ]
    return nums + cats


def wide_records(
    w: Workload, topics: dict[str, str], start: float, rate: float
) -> Iterator[Record]:
    """Records in send order: prediction ``i`` at event time ``start + i / rate``, each model
    chosen at random; its label (if any) right after prediction ``i + label_after``, with
    that prediction's event time. Deterministic for a seed."""
    rng = np.random.default_rng(w.seed)
    models = [_Model(rng, w.numeric, w.categorical) for _ in w.models]
    names = feature_names(w.numeric, w.categorical)
    ptopic, ltopic = topics["predictions"], topics["labels"]
    keys = [m.encode() for m in w.models]
    waiting: deque[tuple[str, bytes, str, int]] = deque()  # (model, key, event id, label)
    dumps = orjson.dumps
    block = 5000
    for lo in range(0, w.predictions, block):
        n = min(block, w.predictions - lo)
        idx = np.arange(lo, lo + n)
        which = rng.integers(0, len(models), n)
        drifted = idx >= w.drift_at if w.drift_at is not None else np.zeros(n, dtype=bool)
        rows: list[tuple[int, dict[str, Any], float, bool]] = [None] * n  # type: ignore[list-item]
        for m, model in enumerate(models):
            sel = np.flatnonzero(which == m)
            if not len(sel):
                continue
            d = model.draw(rng, len(sel), drifted[sel])
            columns = d["cols"] + d["cats"]
            for i, feats, score, truth in zip(
                sel.tolist(),
                zip(*columns, strict=True),
                d["score"].tolist(),
                d["truth"].tolist(),
                strict=True,
            ):
                rows[i] = (m, dict(zip(names, feats, strict=True)), score, truth)
        for j, (m, features, score, truth) in enumerate(rows):
            i = lo + j
            ts = start + i / rate
            eid = f"e{i}"
            value = dumps(
                {
                    "event_id": eid,
                    "model_id": w.models[m],
                    "timestamp": ts,
                    "features": features,
                    "prediction": {"label": int(score > 0.5), "score": round(float(score), 5)},
                }
            )
            yield Record(ptopic, keys[m], value, ts)
            if w.labels:
                waiting.append((w.models[m], keys[m], eid, int(truth)))
                if i >= w.label_after:
                    yield _label(ltopic, waiting.popleft(), ts)
    end = start + w.predictions / rate
    for item in waiting:  # the last labels, after the last prediction
        yield _label(ltopic, item, end)


def _label(topic: str, item: tuple[str, bytes, str, int], ts: float) -> Record:
    model, key, eid, label = item
    value = orjson.dumps({"event_id": eid, "model_id": model, "timestamp": ts, "label": label})
    return Record(topic, key, value, ts)


def workload(args: argparse.Namespace, scenario: str, n: int, seed_offset: int = 0) -> Workload:
    return Workload(
        predictions=n,
        models=tuple(
            spread_models(args.models, args.partitions)
            if getattr(args, "spread", False)
            else (f"model-{i}" for i in range(args.models))
        ),
        numeric=args.numeric,
        categorical=args.categorical,
        labels=scenario == "B",
        label_after=args.label_after,
        drift_at=None if args.drift_at < 0 else int(n * args.drift_at),
        seed=args.seed + seed_offset,
    )


def input_topics(topics: dict[str, str], scenario: str) -> list[str]:
    return [topics["predictions"]] + ([topics["labels"]] if scenario == "B" else [])


# --------------------------------------------------------------------------------------------
# the floor
# --------------------------------------------------------------------------------------------
def floor(bootstrap: str, topics: list[str], expected: int, limit: float) -> dict[str, Any]:
    """Read every record of ``topics`` with a bare consumer (batched ``consume``,
    ``orjson.loads`` of every value, nothing else): records/s between 10 % and 90 % read,
    the same window as the monitor's. Same batch size as the monitor's default."""
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    c.subscribe(topics)
    batch = MonitorConfig(bootstrap_servers="x:1").batch_size
    loads = orjson.loads
    n = 0
    marks: dict[float, tuple[float, int]] = {}
    deadline = time.monotonic() + limit
    try:
        while n < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=batch, timeout=1.0):
                if m.error() is None:
                    loads(m.value())  # type: ignore[arg-type]  # records have values
                    n += 1
            for q in (0.1, 0.9):
                if q not in marks and n >= q * expected:
                    marks[q] = (time.perf_counter(), n)
    finally:
        c.close()
    rate = None
    if 0.1 in marks and 0.9 in marks and marks[0.9][0] > marks[0.1][0]:
        rate = (marks[0.9][1] - marks[0.1][1]) / (marks[0.9][0] - marks[0.1][0])
    return {"floor_records": n, "floor_rate": rate, "floor_complete": n >= expected}


# --------------------------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------------------------
def consumed_of(s: Sample, **match: str) -> float:
    return total(s.series, CONSUMED, **match)


@dataclass(frozen=True)
class Bench:
    """What every phase of one benchmark run uses: options, broker, run id, work folder."""

    args: argparse.Namespace
    bootstrap: str
    broker_pid: int | None
    run_id: str
    workdir: Path

    def topics(self, scenario: str, phase: str) -> dict[str, str]:
        """Fresh topics of this scenario and phase."""
        name = f"{scenario.lower()}-{phase}"
        return make_topics(self.bootstrap, self.run_id, name, self.args.partitions)

    def start_monitor(
        self,
        scenario: str,
        phase: str,
        topics: dict[str, str],
        profile: Path | None = None,
        source: Path | None = None,
    ) -> tuple[Monitor, float]:
        """A started `stream-monitor run` on ``topics`` and the seconds until it was ready."""
        name = f"{scenario}-{phase}"
        mon = Monitor(
            self.workdir,
            name,
            self.bootstrap,
            topics,
            group=f"bench-{self.run_id}-{name}",
            consumer_overrides=self.args.consumer_override,
            profile=profile,
            settings=self.args.monitor_setting,
            processes=self.args.processes,
            source=source,
        )
        mon.start()
        try:
            return mon, mon.wait_ready(60)
        except BaseException:
            mon.stop(10)
            raise

    def poll(self, mon: Monitor, limit: float, **until: Any) -> list[Sample]:
        """Samples of ``mon`` every ``--poll`` s (see _harness.poll for ``until``)."""
        return poll(mon, SCRAPE, self.broker_pid, every=self.args.poll, limit=limit, **until)


def rss_series(samples: list[Sample], t0: float) -> list[tuple[float, float, float | None, str]]:
    """About ``RSS_POINTS`` samples evenly spread in time: (s since start, records consumed,
    RSS MiB, monitor cores since the previous point)."""
    if not samples:
        return []
    span = samples[-1].t - samples[0].t
    picked = [samples[0]]
    for s in samples[1:]:
        if s.t - picked[-1].t >= span / RSS_POINTS * 0.999 or s is samples[-1]:
            picked.append(s)
    out = []
    prev: Sample | None = None
    for s in picked:
        cores = None if prev is None else cpu_shares(prev.cpu, s.cpu).get("monitor")
        out.append((s.t - t0, consumed_of(s), s.rss_mib, fmt(cores, ".2f")))
        prev = s
    return out


def batch_figures(a: Sample, b: Sample) -> dict[str, Any]:
    """Batch time (histogram-interpolated median and p95, exact mean) and size between two
    samples."""
    nb = increase(a.series, b.series, f"{BATCH_S}_count")
    sb = increase(a.series, b.series, f"{BATCH_S}_sum")
    ne = increase(a.series, b.series, "stream_monitor_batch_events_sum")
    hb = hist_delta(buckets(a.series, BATCH_S), buckets(b.series, BATCH_S))
    return {
        "batch_p50_s": hist_quantile(0.5, hb),
        "batch_p95_s": hist_quantile(0.95, hb),
        "batch_mean_s": sb / nb if nb else None,
        "batch_mean_records": ne / nb if nb else None,
        "busy_fraction": sb / (b.t - a.t) if b.t > a.t else None,
        **checkpoint_figures(a, b),
    }


def checkpoint_figures(a: Sample, b: Sample) -> dict[str, Any]:
    """Checkpoints between two samples: how many, their mean and histogram-interpolated p95
    time (a checkpoint holds up the batches behind it)."""
    n = increase(a.series, b.series, f"{CHECKPOINT_S}_count")
    total = increase(a.series, b.series, f"{CHECKPOINT_S}_sum")
    h = hist_delta(buckets(a.series, CHECKPOINT_S), buckets(b.series, CHECKPOINT_S))
    return {
        "checkpoints_between": n,
        "checkpoint_mean_s": total / n if n else None,
        "checkpoint_p95_s": hist_quantile(0.95, h) if n else None,
        "checkpoint_fraction": total / (b.t - a.t) if b.t > a.t else None,
    }


def phase_drain(bench: Bench, scenario: str) -> dict[str, Any]:
    args, bootstrap = bench.args, bench.bootstrap
    topics = bench.topics(scenario, "drain")
    inputs = input_topics(topics, scenario)
    n = args.predictions
    w = workload(args, scenario, n)
    # Event times: a past window ending now (the broker rejects records > 1 h in the future
    # and its 24 h retention would delete older ones), at >= 1000 predictions/s of event time.
    ev_rate = max(1000.0, n / (20 * 3600.0))
    log(
        f"{scenario}: producing {n:,} predictions"
        + (" + as many labels" if w.labels else "")
        + f", {args.models} models x {args.numeric}+{args.categorical} features, "
        f"{args.partitions} partitions, drift at {w.drift_at}"
    )
    records = wide_records(w, topics, time.time() - n / ev_rate - 60, ev_rate)
    pr = produce(
        bootstrap,
        records,
        topics["predictions"],
        time_limit=args.produce_timeout,
        paced=False,
        conf=BULK_PRODUCER,
        progress_every=max(1, n // 5),
    )
    counts = high_watermarks(bootstrap, inputs)
    produced = sum(counts.values())
    r: dict[str, Any] = {
        "produced": produced,
        "produced_predictions": counts[topics["predictions"]],
        "produce_rate": produced / pr.seconds,
        "produce_stopped_early": pr.stopped_early,
    }
    log(
        f"{scenario}: {produced:,} records in {pr.seconds:.1f} s = {r['produce_rate']:,.0f}/s"
        + (" (STOPPED AT THE TIME LIMIT)" if pr.stopped_early else "")
        + ("" if produced == pr.handed else f"; WARNING {pr.handed - produced} not delivered")
    )
    r.update(floor(bootstrap, inputs, produced, args.consume_timeout))
    log(f"{scenario}: floor {fmt(r['floor_rate'])} records/s ({r['floor_records']:,} read)")

    r.update(drain(bench, scenario, topics, produced, w.labels, profile=args.monitor_profile))
    if args.baseline_source is not None:
        # The same records drained by another revision (a checkout of it), in this run.
        base = drain(bench, scenario, topics, produced, w.labels, source=args.baseline_source)
        kept = ("rate_records", "cpu_us_per_record", "checkpoints_between", "checkpoint_fraction")
        r["baseline"] = {k: base.get(k) for k in kept}
        r["baseline"]["revision"] = revision_of(args.baseline_source)
        log(
            f"{scenario}: baseline {args.baseline_source} {fmt(base.get('rate_records'))} records/s"
        )
    return r


def revision_of(folder: Path) -> str:
    """The git revision checked out in ``folder`` (short), or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def drain(
    bench: Bench,
    scenario: str,
    topics: dict[str, str],
    produced: int,
    labels: bool,
    *,
    profile: Path | None = None,
    source: Path | None = None,
) -> dict[str, Any]:
    """A monitor (of this checkout, or of ``source``) drains ``topics`` from the start."""
    args = bench.args
    r: dict[str, Any] = {}
    phase = "drain" if source is None else "drain-baseline"
    mon, r["ready_seconds"] = bench.start_monitor(scenario, phase, topics, profile, source)
    try:
        samples = bench.poll(mon, args.consume_timeout, done=lambda s: consumed_of(s) >= produced)
        if not samples:
            raise RuntimeError(f"no /metrics sample; log:\n{mon.tail()}")
        r["peak_rss_mib"] = mon.peak_rss_mib()
        if labels:
            r["join"] = join_figures(mon)
    finally:
        r["exit_code"], r["exit_seconds"] = mon.stop(30)
    r["mode"] = mon.mode()
    last = samples[-1]
    r["consumed"] = consumed_of(last)
    r["complete"] = r["consumed"] >= produced
    r["drain_seconds"] = last.t - mon.started_at

    def at(frac: float) -> Sample:
        return next((s for s in samples if consumed_of(s) >= frac * produced), last)

    a, b = at(0.10), at(0.90)
    if b.t - a.t < 2 * args.poll:  # too short to tell: use the whole drain
        a, b = samples[0], last
    dt = b.t - a.t
    ptopic = topics["predictions"]
    r["window_seconds"] = dt
    r["rate_records"] = (consumed_of(b) - consumed_of(a)) / dt if dt > 0 else None
    r["rate_predictions"] = (
        (consumed_of(b, topic=ptopic) - consumed_of(a, topic=ptopic)) / dt if dt > 0 else None
    )
    r.update(batch_figures(a, b))
    r["cpu"] = cpu_shares(a.cpu, b.cpu)
    if r["cpu"].get("monitor") and r["rate_records"]:
        r["cpu_us_per_record"] = 1e6 * r["cpu"]["monitor"] / r["rate_records"]
    r["rss_series"] = rss_series(samples, mon.started_at)
    r["rss_at_1m"] = next((s.rss_mib for s in samples if consumed_of(s) >= MILLION), None)
    r["rss_end"] = last.rss_mib
    r["checkpoints"] = total(last.series, "stream_monitor_checkpoints_total")
    r["alerts_published"] = total(last.series, "stream_monitor_alerts_published_total")
    r["invalid"] = total(last.series, "stream_monitor_events_invalid_total")
    log(
        f"{scenario}: {'monitor' if source is None else 'baseline'} drained "
        f"{r['consumed']:,.0f}/{produced:,} in "
        f"{r['drain_seconds']:.1f} s; {fmt(r['rate_records'])} records/s; exit code "
        f"{r['exit_code']} after {r['exit_seconds']:.1f} s"
    )
    return r


def join_figures(mon: Monitor) -> dict[str, float | None]:
    """Label-join totals from one full scrape (None for a series the monitor lacks)."""
    series = mon.metrics("/metrics", 30.0) or {}
    return {k: (total(series, n) if n in series else None) for k, n in JOIN_SERIES.items()}


def lags(samples: list[Sample], ptopic: str) -> tuple[list[float], list[float]]:
    """(event age at each scrape, event-to-batch-end lag of each batch seen).

    Event age: scrape wall time minus the newest prediction event time (the stalest member's
    with several processes): what an operator sees, including the time since the last batch.
    Batch lag: the batch's end (last_batch_timestamp) minus the newest event time it
    processed, once per batch seen: the end-to-end delay of the freshest record of a batch."""
    ages: list[float] = []
    batch_lags: dict[tuple[str, float], float] = {}
    for s in samples:
        members = {lab.get("member", "0") for lab, _ in s.series.get(EVENT_TS, [])}
        per_member = [newest(s.series, EVENT_TS, topic=ptopic, member=m) for m in members]
        known = [t for t in per_member if t]
        if known:
            ages.append(s.wall - min(known))
        for m in members:
            ev = newest(s.series, EVENT_TS, topic=ptopic, member=m)
            end = newest(s.series, BATCH_TS, member=m)
            if ev and end:
                batch_lags[(m, end)] = end - ev
    return ages, list(batch_lags.values())


def age_series(samples: list[Sample], ptopic: str, t0: float) -> list[tuple[float, float]]:
    """(seconds since ``t0``, event age) of every scrape from ``t0`` on that saw an event."""
    out = []
    for s in samples:
        if s.t >= t0:
            ages, _ = lags([s], ptopic)
            if ages:
                out.append((s.t - t0, ages[0]))
    return out


def start_up(series: list[tuple[float, float]], warmup: float) -> dict[str, Any]:
    """The start-up transient a fresh monitor shows before the measured window: the largest
    event age during the warm-up, when it was seen, and the first scrape after it with an age
    under 1 s (caught up; None if none before the end of the warm-up).

    >>> start_up([(0.5, 0.2), (1.0, 2.5), (1.5, 3.0), (2.0, 0.4), (9.0, 0.1)], 5.0)
    {'start_peak_age': 3.0, 'start_peak_at': 1.5, 'start_caught_up_at': 2.0}
    """
    early = [(t, a) for t, a in series if t <= warmup]
    if not early:
        return {"start_peak_age": None, "start_peak_at": None, "start_caught_up_at": None}
    peak_at, peak = max(early, key=lambda ta: ta[1])
    caught = next((t for t, a in early if t > peak_at and a < 1.0), None)
    if peak < 1.0:
        caught = early[0][0]
    return {"start_peak_age": peak, "start_peak_at": peak_at, "start_caught_up_at": caught}


def phase_live(bench: Bench, scenario: str, rate: float) -> dict[str, Any]:
    args, bootstrap = bench.args, bench.bootstrap
    topics = bench.topics(scenario, "live")
    inputs = input_topics(topics, scenario)
    n = max(1, int(rate * args.live_seconds))
    w = workload(args, scenario, n, seed_offset=1)
    log(f"{scenario}: live, {rate:,.0f} predictions/s for {args.live_seconds:.0f} s")
    mon, ready = bench.start_monitor(scenario, "live", topics)
    r: dict[str, Any] = {"ready_seconds": ready, "rate": rate}
    producer: PacedProducer | None = None
    try:
        # Records are generated before the clock starts, so that the paced producer does not
        # stall on the generator; event time = the wall time they are due. On a slow spell of
        # the machine generation may outlast the lead guessed from the count: then the same
        # records (one seed) are generated again with a lead from the time it took, once.
        lead = lead_seconds(n * (2 if w.labels else 1))
        for again in (False, True):
            start = time.time() + lead
            began = time.monotonic()
            records = list(wide_records(w, topics, start, rate))
            took = time.monotonic() - began
            if start >= time.time():
                break
            log(f"WARNING: generation ended {time.time() - start:.1f} s after the start")
            if not again:
                lead = 2.0 + 1.5 * took
                log(f"generating the live records again, {lead:.0f} s ahead")
        producer = PacedProducer(
            bootstrap, records, topics["predictions"], args.live_seconds + 30, args.live_linger_ms
        )
        t_start = time.monotonic() + (start - time.time())
        end = t_start + args.live_seconds
        samples = bench.poll(mon, end + 60 - time.monotonic(), running=producer.alive)
        pr = producer.finish()
        produced = sum(high_watermarks(bootstrap, inputs).values())
        # a bounded wait for the monitor to read the rest
        rest = bench.poll(mon, 60, done=lambda s: consumed_of(s) >= produced)
        consumed = consumed_of(rest[-1]) if rest else 0.0
        r["peak_rss_mib"] = mon.peak_rss_mib()
    finally:
        if producer is not None:
            producer.stop.set()
        r["exit_code"], r["exit_seconds"] = mon.stop(30)
    r.update(produced=produced, consumed=consumed, complete=consumed >= produced)
    r["achieved_rate"] = pr.achieved_rate
    r["producer_late_p95_s"] = pct(pr.lateness, 95) if pr.lateness else 0.0
    win = [s for s in samples if t_start + args.live_warmup <= s.t <= end]
    ages, batch_lags = lags(win, topics["predictions"])
    series = age_series(samples, topics["predictions"], t_start)
    r.update(start_up(series, args.live_warmup))
    if args.live_series is not None:
        path = args.live_series
        path.with_name(f"{path.stem}-{scenario}{path.suffix}").write_text(
            "seconds_since_first_record,event_age_seconds\n"
            + "".join(f"{t:.2f},{a:.3f}\n" for t, a in series)
        )
    for q in (50, 95, 99):
        r[f"age_p{q}"] = pct(ages, q)
        r[f"batch_lag_p{q}"] = pct(batch_lags, q)
    r["age_max"] = max(ages) if ages else None
    r["samples"], r["batches_seen"] = len(ages), len(batch_lags)
    if len(win) >= 2:
        r["cpu"] = cpu_shares(win[0].cpu, win[-1].cpu)
        r.update(batch_figures(win[0], win[-1]))
    log(
        f"{scenario}: live lag p50/p95/p99 {fmt(r['age_p50'], '.2f')} / "
        f"{fmt(r['age_p95'], '.2f')} / {fmt(r['age_p99'], '.2f')} s over {len(ages)} samples "
        f"after the {args.live_warmup:g} s warm-up (start-up: up to "
        f"{fmt(r['start_peak_age'], '.2f')} s, under 1 s from "
        f"{fmt(r['start_caught_up_at'], '.1f')} s); exit code {r['exit_code']}"
    )
    return r


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def ratio(d: dict[str, Any]) -> float | None:
    if d.get("rate_records") and d.get("floor_rate"):
        return d["rate_records"] / d["floor_rate"]
    return None


def ok_of(res: dict[str, Any]) -> bool:
    phases = [res["drain"]] + ([res["live"]] if res.get("live") else [])
    return all(p.get("complete") and p.get("exit_code") == 0 for p in phases) and bool(
        res["drain"].get("floor_complete")
    )


def summary_md(results: dict[str, dict[str, Any]]) -> list[str]:
    md = [
        "| scenario | records | **floor**, records/s | **monitor**, records/s (predictions/s) "
        "| **monitor / floor** | monitor CPU per record | RSS at 1 M / end / peak, MiB "
        "| live rate, predictions/s | **live lag p50 / p95 / p99** |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc, res in results.items():
        d, lv = res["drain"], res.get("live") or {}
        md.append(
            f"| {sc}: {SCENARIOS[sc]} | {d['produced']:,} | **{fmt(d.get('floor_rate'))}** "
            f"| **{fmt(d.get('rate_records'))}** ({fmt(d.get('rate_predictions'))}) "
            f"| **{fmt(ratio(d), '.3f')}** | {fmt(d.get('cpu_us_per_record'), '.0f', ' µs')} "
            f"| {fmt(d.get('rss_at_1m'))} / {fmt(d.get('rss_end'))} / "
            f"{fmt(d.get('peak_rss_mib'))} | {fmt(lv.get('rate'))} "
            f"| **{fmt(lv.get('age_p50'), '.2f')} / {fmt(lv.get('age_p95'), '.2f')} / "
            f"{fmt(lv.get('age_p99'), '.2f')} s** |"
        )
    for sc, res in results.items():
        d = res["drain"]
        base = d.get("baseline")
        if base and base.get("rate_records") and d.get("rate_records"):
            md.append("")
            md.append(
                f"Scenario {sc}, the same records drained in this run by the baseline "
                f"(`--baseline-source`, revision {base.get('revision', 'unknown')}): "
                f"**{fmt(base['rate_records'])} records/s** = "
                f"{fmt(base['rate_records'] / d['floor_rate'], '.3f')} of the floor, "
                f"{fmt(base.get('cpu_us_per_record'), '.0f', ' µs')} CPU per record, "
                f"{fmt(base.get('checkpoints_between'))} checkpoints taking "
                f"{fmt(base.get('checkpoint_fraction'), '.0%')} of the wall time; this "
                f"revision / baseline = **{fmt(d['rate_records'] / base['rate_records'], '.2f')}**."
            )
    return md


def details_md(args: argparse.Namespace, sc: str, res: dict[str, Any]) -> list[str]:
    d, lv = res["drain"], res.get("live")
    rows = [
        (
            "monitor start-up log",
            f"{d.get('mode')}; ready after {fmt(d.get('ready_seconds'), '.1f')} s",
        ),
        (
            "pre-produced",
            f"{d['produced']:,} records ({d['produced_predictions']:,} predictions) at "
            f"{fmt(d.get('produce_rate'))} records/s (one Python producer, generation included)"
            + (" **STOPPED AT THE TIME LIMIT**" if d.get("produce_stopped_early") else ""),
        ),
        (
            "floor",
            f"{fmt(d.get('floor_rate'))} records/s, 10 %→90 % read"
            + ("" if d.get("floor_complete") else " **INCOMPLETE**"),
        ),
        (
            "monitor, 10 %→90 % consumed",
            f"{fmt(d.get('rate_records'))} records/s over {fmt(d.get('window_seconds'), '.1f')} s; "
            f"whole drain {fmt(d.get('consumed'))} records in {fmt(d.get('drain_seconds'), '.1f')}"
            " s from process start" + ("" if d.get("complete") else " **INCOMPLETE**"),
        ),
        (
            "batches",
            f"median {fmt(d.get('batch_p50_s'), '.3f')} s, p95 {fmt(d.get('batch_p95_s'), '.3f')}"
            f" s (histogram-interpolated), mean {fmt(d.get('batch_mean_s'), '.3f')} s, "
            f"{fmt(d.get('batch_mean_records'))} records/batch; busy "
            f"{fmt(d.get('busy_fraction'), '.0%')} of wall time",
        ),
        ("CPU cores, 10 %→90 %", cpu_text(d.get("cpu"))),
        (
            "RSS over time (s since start: records consumed, RSS MiB, monitor cores)",
            "; ".join(
                f"{t:.0f} s: {c:,.0f}, {fmt(m)}, {cores}" for t, c, m, cores in d["rss_series"]
            ),
        ),
        (
            "checkpoints, 10 %→90 %",
            f"{fmt(d.get('checkpoints_between'))}, mean {fmt(d.get('checkpoint_mean_s'), '.3f')}"
            f" s, p95 {fmt(d.get('checkpoint_p95_s'), '.3f')} s (histogram-interpolated); "
            f"{fmt(d.get('checkpoint_fraction'), '.0%')} of wall time",
        ),
        (
            "checkpoints / alerts / dead letters",
            f"{fmt(d.get('checkpoints'))} / {fmt(d.get('alerts_published'))} / "
            f"{fmt(d.get('invalid'))}",
        ),
    ]
    if d.get("join"):
        rows.append(
            ("label join at the end", "; ".join(f"{k} {fmt(v)}" for k, v in d["join"].items()))
        )
    rows.append(
        ("SIGTERM → exit", f"code {d.get('exit_code')} in {fmt(d.get('exit_seconds'), '.1f')} s")
    )
    if lv:
        rows += [
            (
                "live input",
                f"{fmt(lv['rate'])} predictions/s"
                + (" (+ labels)" if sc == "B" else "")
                + f" for {args.live_seconds:g} s, achieved {fmt(lv.get('achieved_rate'))}/s; "
                f"paced producer (acks=all, linger.ms={args.live_linger_ms:g}), p95 behind "
                f"schedule {fmt(lv.get('producer_late_p95_s'), '.3f')} s",
            ),
            (
                "live event age (scrape wall time - newest prediction event time)",
                f"p50 {fmt(lv.get('age_p50'), '.2f')} s, p95 {fmt(lv.get('age_p95'), '.2f')} s, "
                f"p99 {fmt(lv.get('age_p99'), '.2f')} s, max {fmt(lv.get('age_max'), '.2f')} s "
                f"({lv.get('samples')} scrapes every {args.poll:g} s after "
                f"{args.live_warmup:g} s)",
            ),
            (
                "live start-up (the warm-up: first reference windows and their calibrations)",
                f"event age up to {fmt(lv.get('start_peak_age'), '.2f')} s, "
                f"{fmt(lv.get('start_peak_at'), '.1f')} s after the first record; under 1 s "
                f"from {fmt(lv.get('start_caught_up_at'), '.1f')} s",
            ),
            (
                "live batch lag (batch end - newest event time in it)",
                f"p50 {fmt(lv.get('batch_lag_p50'), '.2f')} s, p95 "
                f"{fmt(lv.get('batch_lag_p95'), '.2f')} s, p99 "
                f"{fmt(lv.get('batch_lag_p99'), '.2f')} s ({lv.get('batches_seen')} batches)",
            ),
            (
                "live batches / CPU",
                f"mean {fmt(lv.get('batch_mean_s'), '.3f')} s, "
                f"{fmt(lv.get('batch_mean_records'))} records/batch; {cpu_text(lv.get('cpu'))}",
            ),
            (
                "live checkpoints",
                f"{fmt(lv.get('checkpoints_between'))}, mean "
                f"{fmt(lv.get('checkpoint_mean_s'), '.3f')} s, p95 "
                f"{fmt(lv.get('checkpoint_p95_s'), '.3f')} s (histogram-interpolated)",
            ),
            (
                "live end",
                f"caught up {lv.get('complete')} ({fmt(lv.get('consumed'))}/"
                f"{fmt(lv.get('produced'))}); peak RSS {fmt(lv.get('peak_rss_mib'))} MiB; "
                f"SIGTERM → exit code {lv.get('exit_code')} in "
                f"{fmt(lv.get('exit_seconds'), '.1f')} s",
            ),
        ]
    return [
        f"**Scenario {sc}: {SCENARIOS[sc]}**",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
    ]


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> list[str]:
    settings = ", ".join(
        f"{k}={v}" for k, v in {**args.monitor_setting, **args.consumer_override}.items()
    )
    md = [
        f"{args.predictions:,} predictions of {args.models} models with {args.numeric} numeric "
        f"+ {args.categorical} categorical features, "
        + ("no drift" if args.drift_at < 0 else f"drift at {args.drift_at:.0%}")
        + f", {args.partitions} partitions"
        + (" (model ids spread evenly over them)" if args.spread else "")
        + "; scenario B adds a label for every prediction, "
        f"sent {args.label_after:,} predictions later. Floor: one bare consumer "
        "(`consume` + `orjson.loads`). Monitor: `stream-monitor run`, defaults except "
        "topics/group/ports"
        + (f" and {settings}" if settings else "")
        + (f", `--processes {args.processes}`" if args.processes > 1 else "")
        + ". Rates between 10 % and 90 % read, same broker and records. Live: half the "
        "monitor's predictions/s (or `--live-rate`), lag percentiles of the event age.",
        "",
        *summary_md(results),
    ]
    for sc, res in results.items():
        md += ["", *details_md(args, sc, res)]
    verdict = (
        "all checks passed" if all(ok_of(r) for r in results.values()) else "SOME CHECKS FAILED"
    )
    return [*md, "", f"Overall: {verdict} (every record read, exit code 0 within 30 s)."]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--predictions", type=int, default=500_000)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--numeric", type=int, default=20, help="numeric features per model")
    ap.add_argument("--categorical", type=int, default=3, help="categorical features per model")
    ap.add_argument(
        "--scenarios",
        default="A,B",
        help="A: predictions only; B: a label for every prediction; e.g. A or A,B",
    )
    ap.add_argument(
        "--label-after", type=int, default=1000, help="B: predictions between one and its label"
    )
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument(
        "--spread",
        action="store_true",
        help="model ids whose keys fall evenly on the partitions (default: model-0, model-1, "
        "..., which leave some partitions empty and others doubled): for --processes N, so "
        "that every member gets an equal share",
    )
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--drift-at", type=float, default=0.5, help="fraction of the predictions; negative: none"
    )
    ap.add_argument(
        "--processes", type=int, default=1, help="passed to `stream-monitor run --processes N`"
    )
    ap.add_argument(
        "--baseline-source",
        type=Path,
        help="also drain the same records with the stream_monitor package of this folder "
        "(e.g. `git worktree add /tmp/base <rev>`), in the same run, after this revision's "
        "drain: before/after figures (the second drain ran ~6 %% faster in an A/A check)",
    )
    ap.add_argument(
        "--monitor-profile",
        type=Path,
        help="profile the drain-phase monitor into this file: py-spy collapsed stacks if it ends "
        "in .txt (py-spy must be installed in the venv), else cProfile stats (slow)",
    )
    add_broker_args(ap, 39092)
    ap.add_argument("--keep-workdir", action="store_true", help="keep the monitors' TOML and logs")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between /metrics scrapes")
    ap.add_argument("--produce-timeout", type=float, default=240.0)
    ap.add_argument("--consume-timeout", type=float, default=420.0)
    ap.add_argument(
        "--live-rate", type=float, default=0.0, help="predictions/s (0: half the measured rate)"
    )
    ap.add_argument("--live-seconds", type=float, default=45.0, help="0: no live phase")
    ap.add_argument(
        "--live-warmup",
        type=float,
        default=15.0,
        help="seconds of live input before the lag is measured: a fresh monitor learns each "
        "model's reference from its first events and calibrates the first windows' "
        "thresholds (about 1.4 s of CPU in scenario A), reported apart as the start-up",
    )
    ap.add_argument(
        "--live-series",
        type=Path,
        help="write the live phase's event age at every scrape as CSV, one file per scenario "
        "(NAME.csv gives NAME-A.csv, NAME-B.csv)",
    )
    ap.add_argument("--live-linger-ms", type=float, default=5.0)
    ap.add_argument(
        "--consumer-override",
        action=KeyValue,
        default={},
        metavar="KEY=VALUE",
        help="librdkafka setting for the monitor's consumer; repeatable",
    )
    ap.add_argument(
        "--monitor-setting",
        action=KeyValue,
        default={},
        metavar="KEY=VALUE",
        help="MonitorConfig field (dotted for a table, e.g. checkpoint.hmac_key=...); repeatable",
    )
    add_results_args(ap)
    args = ap.parse_args(argv)
    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    if not scenarios or set(scenarios) - set(SCENARIOS):
        ap.error("--scenarios takes A, B or A,B")
    if args.predictions < 1000 or args.models < 1 or args.partitions < 1 or args.processes < 1:
        ap.error("need --predictions >= 1000, --models, --partitions, --processes >= 1")
    if args.numeric < 1 or args.categorical < 0:
        ap.error("need --numeric >= 1 and --categorical >= 0")

    t0 = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    machine = machine_info(kafka=broker_label(args))
    cmd = command_line("bench_throughput.py", argv)
    results: dict[str, dict[str, Any]] = {}
    with (
        workdir_session("stream-monitor-bench-", args.keep_workdir) as workdir,
        broker_session(args) as (bootstrap, broker),
    ):
        bench = Bench(args, bootstrap, broker.pid() if broker else None, run_id, workdir)
        for sc in scenarios:
            d = phase_drain(bench, sc)
            results[sc] = {"drain": d}
            rate = args.live_rate or 0.5 * (d.get("rate_predictions") or 0.0)
            if args.live_seconds > 0 and rate > 0:
                results[sc]["live"] = phase_live(bench, sc, rate)
    total_s = time.monotonic() - t0
    md = report(args, results)
    print("\n".join(line.replace("**", "") for line in md), flush=True)
    write_results(
        args,
        "bench_throughput",
        "Throughput against the floor, and lag (load_tests/bench_throughput.py)",
        machine=machine,
        cmd=cmd,
        total_s=total_s,
        body=md,
    )
    return 0 if all(ok_of(r) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
