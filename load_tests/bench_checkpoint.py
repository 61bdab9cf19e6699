"""What state checkpoints cost: snapshot size and encode time, and commit latency on Kafka.

    .venv/bin/python load_tests/bench_checkpoint.py [--part abc] [--no-results]

Part a (in-process, no broker): builds ``PartitionState`` objects from TrafficGenerator traffic
(records decoded with orjson + ``PredictionEvent``/``LabelEvent.model_validate`` and fed to
``PartitionState.process`` in batches of ``--batch`` records) for ``--models`` models (1, 5
and 20 by default, ``--per-model`` predictions each, labels included, drift at the middle),
then measures the signed changelog record (``encode_snapshot``) and splits its bytes by part:
models, features (numeric / categorical, inputs and model outputs), error monitor, label join,
early labels and alert tracker. It then fills the label join of the largest state with each
of ``--pending`` predictions (and the capacity with UUID event ids) to show how the join
dominates, and times ``snapshot()``, ``encode_snapshot`` and the way back
(``decode_snapshot`` + ``PartitionState.from_snapshot``).

Part b (real broker): starts its own broker with deploy/local/kafka.sh (as bench_throughput.py
does) and runs ``stream-monitor run --config <toml>`` with ``checkpoint.hmac_key`` set for each
``--guarantees`` entry, ``--rounds`` times in alternating order, while a paced producer sends
``--rate`` predictions/s (+ labels) for ``--seconds``. It polls the checkpoint metrics every
``--poll`` s, so that each checkpoint's own duration is the increase of
``stream_monitor_checkpoint_seconds_sum`` between two polls, and reads every alert with a
``read_committed`` consumer to measure when alerts become visible (arrival minus the alert's
``published_at``, which the monitor sets when it processed the batch).

Part c (same broker): one partition whose label join fills to capacity with predictions that
never get a label (UUID event ids); the monitor reads them and is started a second time, to
check that checkpoints of a full join are written and restored.

Prints the figures and rewrites the ``bench_checkpoint`` section of load_tests/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _harness as h
import orjson
from _results import machine_busy_cores_s

from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.kafka.clients import producer_config
from stream_monitor.monitor.join import LabelJoin
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.simulate import TrafficGenerator
from stream_monitor.state import CHANGELOG_MAX_MESSAGE_BYTES
from stream_monitor.state.envelope import (
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    key_from_secret,
)

SECRET = "bench-checkpoint-secret-not-for-production"
PRED_TOPIC, LABEL_TOPIC = "predictions", "labels"
#: The monitor's producer refuses records larger than this (``message.max.bytes``).
PRODUCER_MAX_BYTES = int(
    producer_config(MonitorConfig(bootstrap_servers="unused:9092"))["message.max.bytes"]
)


def nbytes(obj: Any) -> int:
    return len(orjson.dumps(obj))


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(median ms of ``repeat`` calls, ms of the first call before them, last result).

    The first call is reported apart: it is slower (cold caches, lazy imports)."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    first = (time.perf_counter() - t0) * 1000
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), first, out


# --------------------------------------------------------------------------------------------
# part a: snapshot size and encode time, in-process
# --------------------------------------------------------------------------------------------
def build_state(
    cfg: MonitorConfig, names: list[str], per_model: int, seed: int, batch: int
) -> tuple[PartitionState, dict[str, int], list[tuple[str, str, float, str | None, float | None]]]:
    """Feed TrafficGenerator traffic to one PartitionState; also return the input offsets and
    (model, event id, time, label, score) of the predictions (for filling a join later)."""
    n = per_model * len(names)
    gen = TrafficGenerator(
        seed=seed,
        drift_at=n // 2,
        models=names,
        rate=1000.0,
        start_time=1_700_000_000.0,
        prediction_topic=PRED_TOPIC,
        label_topic=LABEL_TOPIC,
    )
    state = PartitionState(0, cfg)
    offsets = {PRED_TOPIC: 0, LABEL_TOPIC: 0}
    pending: list[tuple[str, str, float, str | None, float | None]] = []
    chunk: list[Any] = []

    def flush() -> None:
        preds = [
            PredictionEvent.model_validate(orjson.loads(r.value))
            for r in chunk
            if r.topic == PRED_TOPIC
        ]
        labels = [
            LabelEvent.model_validate(orjson.loads(r.value))
            for r in chunk
            if r.topic == LABEL_TOPIC
        ]
        state.process(preds, labels)
        for e in preds:
            pending.append(
                (e.model_id, e.event_id, e.timestamp, e.prediction_label(), e.prediction_score())
            )
        chunk.clear()

    for rec in gen.events(n):
        offsets[rec.topic] += 1
        chunk.append(rec)
        if len(chunk) >= batch:
            flush()
    if chunk:
        flush()
    return state, offsets, pending


def split_bytes(state: PartitionState) -> dict[str, Any]:
    """Bytes of each part of ``state.snapshot()`` (compact JSON, as orjson writes it)."""
    snap = state.snapshot()
    models = list(state.models.values())
    per_model = {m.model_id: nbytes(m.snapshot()) for m in models}
    feats: dict[str, list[int]] = {
        "numeric input feature": [],
        "categorical input feature": [],
        "prediction.score (numeric output)": [],
        "prediction.label (categorical output)": [],
    }
    detectors: list[int] = []  # the river detectors' share of a numeric feature
    errors: list[int] = []
    other: list[int] = []
    for m in models:
        fsum = 0
        for f in m.features.values():
            d = f.snapshot()
            b = nbytes(d)
            fsum += b
            feats[f"{f.type_name} input feature"].append(b)
            if f.type_name == "numeric":
                detectors.append(nbytes(d["detectors"]))
        for name, f in m.outputs.items():
            b = nbytes(f.snapshot())
            fsum += b
            kind = "numeric" if f.type_name == "numeric" else "categorical"
            feats[f"{name} ({kind} output)"].append(b)
        e = nbytes(m.concept.snapshot())
        errors.append(e)
        other.append(per_model[m.model_id] - fsum - e)
    return {
        "snapshot": snap,
        "models": nbytes(snap["models"]),
        "join": nbytes(snap["join"]),
        "early": nbytes(snap["early"]),
        "tracker": nbytes(snap["tracker"]),
        "per_model": per_model,
        "features": feats,
        "detectors": detectors,
        "errors": errors,
        "model_other": other,
        "pending": len(state.join),
        "waiting": len(state.early),
        "incidents": len(snap["tracker"]["incidents"]),
    }


def gc_off_ms(fn: Callable[[], Any]) -> float:
    """ms of one call with the cyclic garbage collector off (the work itself, no GC passes)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000
    finally:
        gc.enable()


def timings(state: PartitionState, offsets: dict[str, int], key: bytes, repeat: int) -> dict:
    """snapshot() ms, encode ms (orjson + HMAC) and restore ms (verify + parse + rebuild).

    Repeated calls keep the previous result alive while the next is built, as the monitor
    does (it keeps each partition's last committed snapshot for rewinding): the garbage
    collector's full passes then fall inside the timed calls, as they would in the monitor."""
    cfg = state.cfg
    snap_ms, snap_first, snap = median_ms(state.snapshot, repeat)
    snap_gc_off = gc_off_ms(state.snapshot)

    def encode() -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        return encode_snapshot(Snapshot(0, dict(offsets), snap, 1_700_000_000.0), key)

    enc_ms, _, (rkey, value, headers) = median_ms(encode, repeat)

    def restore() -> PartitionState:
        s = decode_snapshot(rkey, value, headers, key, expected_partition=0)
        assert isinstance(s, Snapshot), s
        return PartitionState.from_snapshot(s.state, cfg)

    restore_ms, _, back = median_ms(restore, max(1, repeat // 2))
    assert len(back.join) == len(state.join) and set(back.models) == set(state.models)
    return {
        "bytes": len(value),
        "snapshot_ms": snap_ms,
        "snapshot_first_ms": snap_first,
        "snapshot_gc_off_ms": snap_gc_off,
        "encode_ms": enc_ms,
        "restore_ms": restore_ms,
    }


def stats_text(values: Sequence[int]) -> str:
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    rng = f" ({lo:,}-{hi:,})" if lo != hi else ""
    return f"{statistics.mean(values):,.0f}{rng}"


def part_a(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Returns (printed lines, markdown lines)."""
    cfg = MonitorConfig(bootstrap_servers="unused:9092")
    key = key_from_secret(SECRET)
    busy0, own0, wall0 = machine_busy_cores_s(), h.self_cpu_s(), time.monotonic()
    rows = []
    largest: tuple[PartitionState, dict[str, int], list[Any], dict[str, Any]] | None = None
    for n_models in args.models:
        t0 = time.monotonic()
        names = h.model_names(n_models)
        state, offsets, preds = build_state(cfg, names, args.per_model, args.seed, args.batch)
        parts = split_bytes(state)
        tm = timings(state, offsets, key, args.repeat)
        rows.append((n_models, parts, tm))
        h.log(
            f"part a: {n_models} models, {sum(offsets.values()):,} records in "
            f"{time.monotonic() - t0:.1f} s -> {tm['bytes']:,} bytes, pending {parts['pending']:,}"
        )
        if largest is None or n_models > len(largest[0].models):
            largest = (state, offsets, preds, parts)
        else:
            del state, preds
    assert largest is not None
    state, offsets, preds, parts = largest

    # The join sweep: the largest state with N pending predictions (real ids and values).
    sweep = []
    saved = state.join
    base_bytes = None
    cases = [(min(n, cfg.labels.capacity), False) for n in args.pending]
    cases.append((cfg.labels.capacity, True))  # at capacity, with UUID event ids
    for n, uuids in cases:
        j = LabelJoin(cfg.labels.capacity, cfg.labels.ttl_seconds)
        for i in range(n):
            m, e, ts, label, score = preds[i % len(preds)]
            if uuids:  # 36 characters instead of the generator's ~20
                e = str(uuid.UUID(int=(i + 1) * 0x9E3779B97F4A7C15 % (1 << 128)))
            elif i >= len(preds):  # more than were generated: new ids in the generator's format
                e = f"{m}-{i}"
            j.add_prediction(m, e, ts, label=label, score=score)
        state.join = j
        tm = timings(state, offsets, key, args.repeat)
        jb = nbytes(j.snapshot())
        if n == 0:
            base_bytes = tm["bytes"]
        sweep.append((n, uuids, jb, tm))
        h.log(
            f"part a: join with {n:,} pending{' (UUID ids)' if uuids else ''} "
            f"-> {tm['bytes']:,} bytes"
        )
    state.join = saved
    busy1, own1, wall1 = machine_busy_cores_s(), h.self_cpu_s(), time.monotonic()
    others = (
        None
        if busy0 is None or busy1 is None
        else max(0.0, (busy1 - busy0 - (own1 - own0)) / (wall1 - wall0))
    )

    md: list[str] = []
    md += [
        f"**a. Size and encode time** (in-process; {args.per_model:,} predictions per model plus "
        f"~80 % labels, drift at the middle, batches of {args.batch} records, one "
        f"PartitionState; times are medians of {args.repeat} calls that follow a first one; "
        "in brackets: that first call, made right after a full garbage collection, and one "
        "call with the garbage collector off; "
        + ("n/a" if others is None else f"{others:.2f} cores used by other processes during part a")
        + "):",
        "",
        "| models | record bytes (encode_snapshot value) | models part | label join (pending) | "
        "early labels | tracker (incidents) | snapshot() ms (first; GC off) | encode ms "
        "| restore ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n_models, p, tm in rows:
        md.append(
            f"| {n_models} | {tm['bytes']:,} | {p['models']:,} | {p['join']:,} "
            f"({p['pending']:,}) | {p['early']:,} ({p['waiting']:,}) | {p['tracker']:,} "
            f"({p['incidents']}) | {tm['snapshot_ms']:.1f} ({tm['snapshot_first_ms']:.1f}; "
            f"{tm['snapshot_gc_off_ms']:.1f}) "
            f"| {tm['encode_ms']:.1f} | {tm['restore_ms']:.1f} |"
        )
    n_big, p_big, _ = rows[-1]
    by_arch: dict[str, list[int]] = {}
    for mid, b in p_big["per_model"].items():
        by_arch.setdefault(mid.rsplit("-", 1)[0], []).append(b)
    md += [
        "",
        f"Per part, over the {n_big} models of the largest state (mean bytes, range):",
        "",
        "| part | count | bytes each |",
        "|---|---:|---:|",
        f"| model (all of it) | {len(p_big['per_model'])} "
        f"| {stats_text(list(p_big['per_model'].values()))} |",
    ]
    for arch, vals in sorted(by_arch.items()):
        md.append(f"| … {arch} model | {len(vals)} | {stats_text(vals)} |")
    for name, vals in p_big["features"].items():
        md.append(f"| {name} | {len(vals)} | {stats_text(vals)} |")
        if name.startswith("numeric"):
            md.append(
                f"| … of which its two change detectors (ADWIN, Page-Hinkley; plain data) "
                f"| {len(p_big['detectors'])} | {stats_text(p_big['detectors'])} |"
            )
    md += [
        f"| error monitor (ADWIN on errors) | {len(p_big['errors'])} "
        f"| {stats_text(p_big['errors'])} |",
        f"| rest of a model (counters, names) | {len(p_big['model_other'])} "
        f"| {stats_text(p_big['model_other'])} |",
    ]
    md += [
        "",
        f"Label-join sweep: the {n_big}-model state with its join replaced by one holding N "
        "pending predictions (real ids and values from the generated traffic); the join's "
        f"capacity is {cfg.labels.capacity:,} per partition:",
        "",
        "| pending predictions | join bytes | record bytes | join share | bytes per pending "
        "| snapshot() ms (first; GC off) | encode ms | restore ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, uuids, jb, tm in sweep:
        per = "" if n == 0 or base_bytes is None else f"{(tm['bytes'] - base_bytes) / n:.1f}"
        over = " **> producer limit**" if tm["bytes"] > PRODUCER_MAX_BYTES else ""
        if tm["bytes"] > CHANGELOG_MAX_MESSAGE_BYTES:
            over += " **> topic limit**"
        md.append(
            f"| {n:,}{' (36-char UUID event ids)' if uuids else ''} | {jb:,} "
            f"| {tm['bytes']:,}{over} | {jb / tm['bytes']:.0%} | {per} "
            f"| {tm['snapshot_ms']:.0f} ({tm['snapshot_first_ms']:.0f}; "
            f"{tm['snapshot_gc_off_ms']:.0f}) | {tm['encode_ms']:.1f} | {tm['restore_ms']:.0f} |"
        )
    md += [
        "",
        f"Limits: the monitor's producer has `message.max.bytes` {PRODUCER_MAX_BYTES:,} "
        f"({PRODUCER_MAX_BYTES / 2**20:.2f} MiB) and the changelog topic `max.message.bytes` "
        f"{CHANGELOG_MAX_MESSAGE_BYTES:,} ({CHANGELOG_MAX_MESSAGE_BYTES / 2**20:.0f} MiB). A "
        "record goes out lz4-compressed (part b shows the size on the broker's disk).",
    ]
    text = [line.replace("**", "") for line in md]
    return text, md


# --------------------------------------------------------------------------------------------
# part b: commit latency against a broker
# --------------------------------------------------------------------------------------------
_CKPT_SERIES = (
    "stream_monitor_checkpoints_total",
    "stream_monitor_checkpoint_failures_total",
    "stream_monitor_checkpoint_seconds_bucket",
    "stream_monitor_checkpoint_seconds_count",
    "stream_monitor_checkpoint_seconds_sum",
    "stream_monitor_checkpoint_snapshot_bytes_bucket",
    "stream_monitor_checkpoint_snapshot_bytes_count",
    "stream_monitor_checkpoint_snapshot_bytes_sum",
    "stream_monitor_events_consumed_total",
    "stream_monitor_alerts_published_total",
    "stream_monitor_transactions_aborted_total",
    "stream_monitor_state_restores_total",
    "stream_monitor_label_partition_pauses_total",
    "stream_monitor_batch_processing_seconds_count",
    "stream_monitor_batch_processing_seconds_sum",
)
_CKPT_PATH = h.metrics_path(_CKPT_SERIES)


class AlertReader:
    """Reads the alerts topic (read_committed) and records when each alert became visible."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.delays: list[float] = []
        self.stop = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="alert-reader", daemon=True)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-ckpt-alerts-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            meta = c.list_topics(self.topic, timeout=10).topics[self.topic]
            c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            while not self.stop.is_set():
                msg = c.poll(0.05)
                value = None if msg is None or msg.error() is not None else msg.value()
                if value is None:
                    continue
                now = time.time()
                published = orjson.loads(value).get("published_at")
                if published:
                    self.delays.append(now - published)
        except Exception as exc:  # reported, not fatal
            self.error = repr(exc)
        finally:
            c.close()


def dir_bytes(path: Path, suffix: str = ".log") -> int | None:
    try:
        return sum(p.stat().st_size for p in path.rglob(f"*{suffix}"))
    except OSError:
        return None


def run_guarantee(
    args: argparse.Namespace,
    guarantee: str,
    bootstrap: str,
    run_id: str,
    workdir: Path,
    broker: h.Broker | None,
    run_no: int = 1,
) -> dict[str, Any]:
    r: dict[str, Any] = {"guarantee": guarantee, "run": run_no}
    phase = ("eos" if guarantee == "exactly_once" else "alo") + str(run_no)
    topics = h.make_topics(bootstrap, run_id, phase, args.partitions)
    group = f"bench-{run_id}-{phase}"
    settings = {"processing_guarantee": guarantee, "checkpoint.hmac_key": SECRET}
    if args.interval_seconds is not None:
        settings["checkpoint.interval_seconds"] = str(args.interval_seconds)
    mon = h.Monitor(workdir, f"ckpt-{phase}", bootstrap, topics, group, settings=settings)
    n = int(args.rate * args.seconds)
    names = h.model_names(args.live_models)
    reader: AlertReader | None = None
    producer: h.PacedProducer | None = None
    polls: list[h.Series] = []
    try:
        mon.start()
        r["ready_seconds"] = mon.wait_ready(60)
        reader = AlertReader(bootstrap, topics["alerts"])
        reader.thread.start()
        start = time.time() + h.lead_seconds(n)
        gen = TrafficGenerator(
            seed=args.seed + 1,
            drift_at=int(n * args.drift_at),
            models=names,
            rate=args.rate,
            start_time=start,
            prediction_topic=topics["predictions"],
            label_topic=topics["labels"],
        )
        producer = h.PacedProducer(
            bootstrap, list(gen.events(n)), topics["predictions"], args.seconds + 30
        )
        t_start = time.monotonic() + (start - time.time())
        samples = h.poll(
            mon,
            _CKPT_PATH,
            broker.pid() if broker else None,
            every=args.poll,
            limit=t_start + args.seconds + 60 - time.monotonic(),
            running=producer.alive,
        )
        polls += [s.series for s in samples]
        while_producing = [s for s in samples if s.t >= t_start]
        if len(while_producing) >= 2:
            r["cpu"] = h.cpu_shares(while_producing[0].cpu, while_producing[-1].cpu)
        pr = producer.finish()
        counts = h.high_watermarks(bootstrap, [topics["predictions"], topics["labels"]])
        produced = sum(counts.values())
        # Catch up, then wait for one more checkpoint so that the last alerts are committed.
        deadline = time.monotonic() + 60
        consumed, ckpts_at_catchup = 0.0, None
        while time.monotonic() < deadline:
            s = mon.metrics(_CKPT_PATH)
            if s is not None:
                polls.append(s)
                consumed = h.total(s, "stream_monitor_events_consumed_total")
                ck = h.total(s, "stream_monitor_checkpoints_total")
                if consumed >= produced and ckpts_at_catchup is None:
                    ckpts_at_catchup = ck
                elif ckpts_at_catchup is not None and ck > ckpts_at_catchup:
                    break
            time.sleep(args.poll)
        time.sleep(1.0)  # let the alert reader fetch what the last commit released
        final = mon.metrics("/metrics", 30.0) or {}
        r.update(produced=produced, consumed=consumed, complete=consumed >= produced)
        r["produced_predictions"] = counts[topics["predictions"]]
        r["achieved_rate"] = pr.achieved_rate
        r["peak_rss_mib"] = mon.peak_rss_mib()
        r["mode"] = mon.mode()
    finally:
        if producer is not None:
            producer.stop.set()
        if reader is not None:
            reader.stop.set()
            reader.thread.join(10)
        rc, secs = mon.stop(30) if mon.proc else (None, 0.0)
    r["exit_code"], r["exit_seconds"] = rc, secs

    # --- figures from the final scrape ---------------------------------------------------------
    def tot(name: str, **match: str) -> float:
        return h.total(final, name, **match)

    count = tot("stream_monitor_checkpoint_seconds_count")
    ssum = tot("stream_monitor_checkpoint_seconds_sum")
    cum = h.buckets(final, "stream_monitor_checkpoint_seconds")
    r["checkpoints"] = tot("stream_monitor_checkpoints_total")
    r["ckpt_mean_s"] = ssum / count if count else None
    r["ckpt_p50_hist_s"] = h.hist_quantile(0.5, cum)
    r["ckpt_p95_hist_s"] = h.hist_quantile(0.95, cum)
    r["ckpt_buckets"] = [(b, c) for b, c in cum if c > 0][:4]
    bcount = tot("stream_monitor_checkpoint_snapshot_bytes_count")
    r["snapshot_records"] = bcount
    r["snapshot_bytes_mean"] = (
        tot("stream_monitor_checkpoint_snapshot_bytes_sum") / bcount if bcount else None
    )
    r["snapshot_bytes_p50_hist"] = h.hist_quantile(
        0.5, h.buckets(final, "stream_monitor_checkpoint_snapshot_bytes")
    )
    r["failures"] = tot("stream_monitor_checkpoint_failures_total")
    r["aborted"] = tot("stream_monitor_transactions_aborted_total")
    r["restores"] = {
        lab.get("outcome", "?"): v
        for lab, v in final.get("stream_monitor_state_restores_total", [])
    }
    r["pauses"] = tot("stream_monitor_label_partition_pauses_total")
    r["alerts_published"] = tot("stream_monitor_alerts_published_total")
    r["pending"] = tot("stream_monitor_label_join_pending")
    nb = tot("stream_monitor_batch_processing_seconds_count")
    r["batch_mean_s"] = tot("stream_monitor_batch_processing_seconds_sum") / nb if nb else None
    # each checkpoint's own duration: sum increase between polls where the count rose by one
    singles: list[float] = []
    sizes: list[float] = []
    for a, b in itertools.pairwise(polls):
        if h.increase(a, b, "stream_monitor_checkpoint_seconds_count") == 1:
            singles.append(h.increase(a, b, "stream_monitor_checkpoint_seconds_sum"))
            if h.increase(a, b, "stream_monitor_checkpoint_snapshot_bytes_count"):
                sizes.append(h.increase(a, b, "stream_monitor_checkpoint_snapshot_bytes_sum"))
    r["single_ckpt_s"] = singles
    r["single_ckpt_bytes"] = sizes  # bytes of all snapshot records of one checkpoint
    if reader is not None:
        r["alert_delays"] = sorted(reader.delays)
        r["alert_reader_error"] = reader.error
    if broker is not None:
        r["changelog_disk_bytes"] = sum(
            dir_bytes(p) or 0 for p in (broker.inst / "data").glob(f"{group}-changelog-*")
        )
    h.log(
        f"{guarantee}: {r['checkpoints']:.0f} checkpoints, mean "
        f"{1000 * (r['ckpt_mean_s'] or 0):.1f} ms, snapshot mean "
        f"{h.fmt(r['snapshot_bytes_mean'])} bytes, {len(r.get('alert_delays', []))} alerts read"
    )
    return r


def run_capacity(
    args: argparse.Namespace, bootstrap: str, run_id: str, workdir: Path
) -> dict[str, Any]:
    """Part c: one partition whose label join fills to capacity with predictions that never
    get a label, with UUID event ids; the monitor runs (exactly_once, key set) until it has
    read everything or exits, and is then started once more on the same group."""
    from stream_monitor.simulate import Record

    r: dict[str, Any] = {"attempts": []}
    topics = h.make_topics(bootstrap, run_id, "cap", 1)
    group = f"bench-{run_id}-cap"
    n = args.capacity_predictions
    gen = TrafficGenerator(
        seed=args.seed + 2,
        drift_at=None,
        models=["fraud-detector-0"],
        label_rate=0.0,
        rate=1000.0,
        start_time=time.time() - n / 1000.0 - 60,
        prediction_topic=topics["predictions"],
        label_topic=topics["labels"],
    )
    records = []
    for i, rec in enumerate(gen.events(n)):
        ev = orjson.loads(rec.value)
        ev["event_id"] = str(uuid.UUID(int=(i + 1) * 0x9E3779B97F4A7C15 % (1 << 128)))
        records.append(Record(rec.topic, rec.key, orjson.dumps(ev), rec.timestamp))
    h.log(f"part c: producing {n:,} predictions without labels (UUID event ids), 1 partition")
    h.produce(
        bootstrap,
        records,
        topics["predictions"],
        time_limit=120,
        paced=False,
        conf={"linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000},
    )
    del records
    produced = sum(h.high_watermarks(bootstrap, [topics["predictions"]]).values())
    r["produced"] = produced
    for attempt in (1, 2):
        mon = h.Monitor(
            workdir,
            f"cap-{attempt}",
            bootstrap,
            topics,
            group,
            settings={"checkpoint.hmac_key": SECRET},
        )
        a: dict[str, Any] = {"attempt": attempt}
        largest, pending, consumed, ck = 0.0, 0.0, 0.0, 0.0
        prev: h.Series | None = None
        seen: list[tuple[float, float]] = []  # (snapshot bytes, seconds) of single checkpoints
        try:
            mon.start()
            deadline = time.monotonic() + args.capacity_timeout
            while time.monotonic() < deadline and mon.alive():
                if "ready_s" not in a and mon.ready():
                    a["ready_s"] = time.monotonic() - mon.started_at
                s = mon.metrics("/metrics", 10.0)
                if s is not None:
                    pending = h.total(s, "stream_monitor_label_join_pending")
                    consumed = h.total(s, "stream_monitor_events_consumed_total")
                    ck = h.total(s, "stream_monitor_checkpoints_total")
                    a["restores"] = {
                        lab.get("outcome", "?"): v
                        for lab, v in s.get("stream_monitor_state_restores_total", [])
                    }
                    if prev is not None and (
                        h.increase(prev, s, "stream_monitor_checkpoint_snapshot_bytes_count") == 1
                    ):
                        size = h.increase(prev, s, "stream_monitor_checkpoint_snapshot_bytes_sum")
                        secs = h.increase(prev, s, "stream_monitor_checkpoint_seconds_sum")
                        largest = max(largest, size)
                        seen.append((size, secs))
                    prev = s
                    # Done once it has read everything and is ready (a restored monitor may
                    # have nothing left to read before /readyz turns 200).
                    caught_up = consumed >= produced - restored_at(mon, topics["predictions"])
                    if caught_up and "ready_s" in a:
                        break
                time.sleep(0.5)
            a["alive_at_end"] = mon.alive()
        finally:
            rc, _ = mon.stop(30) if mon.proc else (None, 0.0)
        a.update(
            exit_code=rc,
            consumed=consumed,
            pending=pending,
            checkpoints=ck,
            largest_record=largest,
            seen=seen,
        )
        tail = mon.tail(200).splitlines()
        errors = [line for line in tail if "Error" in line or "ERROR" in line or "MSG_SIZE" in line]
        a["error"] = errors[-1][-300:] if errors else ""
        frames = [
            line.strip().split("stream_monitor/", 1)[1].replace('", line ', ":")
            for line in tail
            if line.strip().startswith('File "') and "stream_monitor/" in line
        ]
        a["frames"] = " → ".join(frames[-4:])
        r["attempts"].append(a)
        h.log(
            f"part c attempt {attempt}: exit code {rc}, consumed {consumed:,.0f}/{produced:,}, "
            f"pending {pending:,.0f}, checkpoints {ck:.0f}, error: {a['error'][:160]}"
        )
    return r


def restored_at(mon: h.Monitor, topic: str) -> int:
    """The offset of ``topic`` the monitor restored from its checkpoint (0 if none), from its
    log line ``restored partition=0 models=1 offsets={'<topic>': N, ...}``."""
    try:
        text = mon.log_path.read_text(errors="replace")
    except OSError:
        return 0
    m = re.search(r"restored partition=0 .*'" + re.escape(topic) + r"': (\d+)", text)
    return int(m.group(1)) if m else 0


def capacity_md(r: dict[str, Any], args: argparse.Namespace) -> list[str]:
    md = [
        f"**c. A label join at capacity, on the broker**: one partition, one model, "
        f"{r['produced']:,} predictions that never get a label (the generator's "
        "`label_rate=0`) with 36-character UUID event ids, pre-produced; `stream-monitor run` "
        "(exactly_once, key set, default checkpoint settings) reads them, then is started "
        "a second time on the same group (it restores the last checkpoint and reads what is "
        f"left); the producer's `message.max.bytes` is {PRODUCER_MAX_BYTES:,}:",
        "",
        "| attempt | restores at start | ready after | consumed | pending at the last poll "
        "| checkpoints committed | checkpoints seen: snapshot MB in seconds | still running at "
        "the end | exit code | last error line of its log (innermost stream_monitor frames) |",
        "|---:|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for a in r["attempts"]:
        err = a["error"].replace("|", "\\|") or "-"
        md.append(
            f"| {a['attempt']} | "
            + (", ".join(f"{k} {v:.0f}" for k, v in sorted(a.get("restores", {}).items())) or "-")
            + (f" | {a['ready_s']:.1f} s" if "ready_s" in a else " | n/a")
            + f" | {a['consumed']:,.0f} | {a['pending']:,.0f} | {a['checkpoints']:,.0f} | "
            + (", ".join(f"{b / 1e6:.1f} in {t:.2f}" for b, t in a.get("seen", [])) or "-")
            + f" | {a.get('alive_at_end')} | {a['exit_code']} "
            f"| `{err}`" + (f" ({a['frames']})" if a.get("frames") else "") + " |"
        )
    return md


def part_b(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    run_id = uuid.uuid4().hex[:8]
    kafka = h.broker_label(args)
    results: list[dict[str, Any]] = []
    with (
        h.workdir_session("stream-monitor-bench-ckpt-") as workdir,
        h.broker_session(args) as (
            bootstrap,
            broker,
        ),
    ):
        # Rounds alternate the order (A B, B A, ...) so that broker warm-up and drifting load
        # do not all fall on one guarantee.
        for k in range(args.rounds if "b" in args.part else 0):
            order = args.guarantees if k % 2 == 0 else args.guarantees[::-1]
            for g in order:
                r = run_guarantee(args, g, bootstrap, run_id, workdir, broker, k + 1)
                results.append(r)
        capacity = run_capacity(args, bootstrap, run_id, workdir) if "c" in args.part else None
    md: list[str] = []
    if results:
        md += b_md(args, results, kafka)
    if capacity is not None:
        md += ([""] if md else []) + capacity_md(capacity, args)
    text = [line.replace("**", "") for line in md]
    return text, md, kafka


def ms(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None else f"{1000 * v:{spec}}"


def b_md(args: argparse.Namespace, results: list[dict[str, Any]], kafka: str) -> list[str]:
    md = [
        f"**b. Commit latency on a real broker** (Kafka {kafka}, single node, local): "
        f"`stream-monitor run` with `checkpoint.hmac_key` set, "
        f"{args.partitions} partitions, {args.live_models} models, a paced producer at "
        f"{args.rate:,.0f} predictions/s (+ ~80 % labels) for {args.seconds:.0f} s with a drift "
        f"at {args.drift_at:.0%}; checkpoint interval "
        + (f"{args.interval_seconds:g} s" if args.interval_seconds is not None else "5 s (default)")
        + f". /metrics polled every {args.poll} s; one checkpoint's duration is the increase of "
        "`_checkpoint_seconds_sum` between two polls where the count rose by one. Alert visibility "
        "is when a `read_committed` consumer received each alert minus its `published_at`.",
        "",
        "| figure | "
        + " | ".join(f"`{r['guarantee']}` (round {r['run']})" for r in results)
        + " |",
        "|---|" + "---:|" * len(results),
    ]

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        md.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("start-up log", lambda r: r.get("mode", "?"))
    row(
        "records consumed / produced",
        lambda r: f"{h.fmt(r.get('consumed'))} / {h.fmt(r.get('produced'))}",
    )
    row("predictions/s achieved", lambda r: h.fmt(r.get("achieved_rate")))
    row("checkpoints committed", lambda r: h.fmt(r.get("checkpoints")))
    row(
        "**checkpoint time, mean (sum/count)**",
        lambda r: f"**{ms(r.get('ckpt_mean_s'))} ms**",
    )
    row(
        "checkpoint time, each (from polls): median / max",
        lambda r: (
            f"{ms(h.pct(r['single_ckpt_s'], 50))} / {ms(max(r['single_ckpt_s']))} ms "
            f"(n={len(r['single_ckpt_s'])})"
            if r.get("single_ckpt_s")
            else "n/a"
        ),
    )
    row(
        "checkpoint time, histogram median / p95 (interpolated, coarse)",
        lambda r: f"{ms(r.get('ckpt_p50_hist_s'))} / {ms(r.get('ckpt_p95_hist_s'))} ms",
    )
    row(
        "snapshot records / mean bytes (histogram median)",
        lambda r: (
            f"{h.fmt(r.get('snapshot_records'))} / {h.fmt(r.get('snapshot_bytes_mean'))} "
            f"({h.fmt(r.get('snapshot_bytes_p50_hist'))})"
        ),
    )
    row(
        "bytes of all snapshots of one checkpoint: median / max",
        lambda r: (
            f"{h.fmt(h.pct(r['single_ckpt_bytes'], 50))} / {h.fmt(max(r['single_ckpt_bytes']))}"
            if r.get("single_ckpt_bytes")
            else "n/a"
        ),
    )
    row(
        "changelog on the broker's disk (lz4) / per snapshot record",
        lambda r: (
            f"{h.fmt(r.get('changelog_disk_bytes'))} / "
            f"{h.fmt(r['changelog_disk_bytes'] / r['snapshot_records'])}"
            if r.get("changelog_disk_bytes") and r.get("snapshot_records")
            else "n/a"
        ),
    )
    row("predictions pending in the join at the end", lambda r: h.fmt(r.get("pending")))
    row(
        "**alert visibility** (received - published_at): median / p95 / max",
        lambda r: (
            f"**{h.pct(r['alert_delays'], 50):.3f} / {h.pct(r['alert_delays'], 95):.3f} / "
            f"{max(r['alert_delays']):.3f} s** ({len(r['alert_delays'])} alerts; "
            f"{h.fmt(r.get('alerts_published'))} published)"
            if r.get("alert_delays")
            else f"n/a ({r.get('alert_reader_error') or 'no alerts'})"
        ),
    )
    row("batch processing mean", lambda r: f"{ms(r.get('batch_mean_s'))} ms")
    row(
        "CPU cores while producing: monitor / broker / other processes; monitor peak RSS",
        lambda r: (
            " / ".join(h.fmt(r["cpu"].get(k), ".2f") for k in ("monitor", "broker", "others"))
            + f"; {h.fmt(r.get('peak_rss_mib'))} MiB"
            if r.get("cpu")
            else "n/a"
        ),
    )
    row(
        "restores at start / aborted transactions / failed checkpoints",
        lambda r: (
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.get("restores", {}).items()))
            + f" / {h.fmt(r.get('aborted'))} / {h.fmt(r.get('failures'))}"
        ),
    )
    row("label-partition pauses", lambda r: h.fmt(r.get("pauses")))
    row(
        "SIGTERM → exit",
        lambda r: f"code {r.get('exit_code')} in {r.get('exit_seconds', 0):.1f} s",
    )
    md += [
        "",
        "Pooled over the rounds:",
        "",
        "| guarantee | checkpoints | checkpoint time mean / median / max | alert visibility "
        "median / p95 / max (alerts) |",
        "|---|---:|---:|---:|",
    ]
    for g in args.guarantees:
        rs = [r for r in results if r["guarantee"] == g]
        singles = [x for r in rs for x in r.get("single_ckpt_s", [])]
        total_n = sum(r.get("checkpoints") or 0 for r in rs)
        total_s = sum((r.get("ckpt_mean_s") or 0) * (r.get("checkpoints") or 0) for r in rs)
        delays = sorted(x for r in rs for x in r.get("alert_delays", []))
        md.append(
            f"| `{g}` | {total_n:,.0f} | **{ms(total_s / total_n if total_n else None)}** / "
            f"{ms(h.pct(singles, 50))} / {ms(max(singles) if singles else None)} ms "
            + (
                f"| **{h.pct(delays, 50):.3f}** / {h.pct(delays, 95):.3f} / {max(delays):.3f} s "
                f"({len(delays)}) |"
                if delays
                else "| n/a |"
            )
        )
    return md


def _int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--part",
        default="abc",
        help="which parts to run: any of a (in-process sizes), b (commit latency) and "
        "c (a join at capacity), e.g. --part a or --part bc",
    )
    ap.add_argument(
        "--capacity-predictions",
        type=int,
        default=230_000,
        help="part c: predictions without labels (the join holds 200,000)",
    )
    ap.add_argument("--capacity-timeout", type=float, default=120.0, help="part c, per attempt")
    ap.add_argument("--models", type=_int_list, default=[1, 5, 20], help="part a, e.g. 1,5,20")
    ap.add_argument("--per-model", type=int, default=20_000, help="part a: predictions per model")
    ap.add_argument(
        "--pending",
        type=_int_list,
        default=[0, 10_000, 100_000, 200_000],
        help="part a: pending predictions in the join sweep",
    )
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5, help="part a: timed calls per figure")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--guarantees", default="exactly_once,at_least_once")
    ap.add_argument("--rate", type=float, default=2000.0, help="part b: predictions/s")
    ap.add_argument("--seconds", type=float, default=30.0, help="part b: producing time")
    ap.add_argument("--live-models", type=int, default=20, help="part b: models")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--drift-at", type=float, default=0.5, help="part b: fraction")
    ap.add_argument("--interval-seconds", type=float, default=None)
    ap.add_argument(
        "--rounds", type=int, default=2, help="part b: runs per guarantee (order alternates)"
    )
    ap.add_argument("--poll", type=float, default=0.25)
    h.add_broker_args(ap, 39192)
    h.add_results_args(ap)
    args = ap.parse_args(argv)
    args.guarantees = [g for g in args.guarantees.split(",") if g]
    for g in args.guarantees:
        if g not in ("exactly_once", "at_least_once"):
            ap.error(f"unknown guarantee {g!r}")
    args.models = sorted(args.models)
    t0 = time.monotonic()
    if not args.part or set(args.part) - set("abc"):
        ap.error("--part takes letters among a, b and c")
    machine = h.machine_info(kafka=None if args.part == "a" else h.broker_label(args))
    cmd = h.command_line("bench_checkpoint.py", argv)
    md: list[str] = []
    out: list[str] = []
    if "a" in args.part:
        text, m = part_a(args)
        out += text
        md += m
    if "b" in args.part or "c" in args.part:
        text, m, _ = part_b(args)
        out += ["", *text]
        md += ["", *m]
    total_s = time.monotonic() - t0
    print("\n".join(out), flush=True)
    h.write_results(
        args,
        "bench_checkpoint",
        "Checkpoint costs (load_tests/bench_checkpoint.py)",
        machine=machine,
        cmd=cmd,
        total_s=total_s,
        body=md,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
