"""Throughput and end-to-end lag of `stream-monitor run` against a real Kafka broker.

    .venv/bin/python load_tests/bench_throughput.py [--predictions 2000000] [--models 20]
        [--partitions 6] [--live-rate 5000] [--live-seconds 30] [--kafka-port 39092]
        [--bootstrap-servers HOST:PORT] [--no-results]

Phases (each bounded by a count and a time limit):

0. broker: starts its own single-node broker with deploy/local/kafka.sh on ``--kafka-port``
   (its own KAFKA_HOME_DIR in a temp dir, removed at the end), unless ``--bootstrap-servers``.
1. produce: creates unique co-partitioned input topics and pre-produces ``--predictions``
   predictions (plus the ~80 % labels the generator emits) of ``--models`` models with a drift
   at the middle, as fast as one Python producer can (lz4, linger, big queue).
2. drain: starts ``stream-monitor run --config <toml>`` as a subprocess, polls its /metrics every
   ``--poll`` s until every produced record is consumed, and computes the sustained throughput
   between 10 % and 90 % consumed, the median batch time over that window (from the
   histogram), the CPU the monitor used and its peak RSS (VmHWM); then SIGTERM, exit code 0
   expected within 30 s.
3. live: a fresh monitor on fresh topics while a paced producer sends ``--live-rate``
   predictions/s (event time = wall time) for ``--live-seconds``; samples the consumer-lag
   gauge and wall time minus stream_monitor_last_event_timestamp_seconds every ``--poll`` s.

Prints a results block and rewrites the ``bench_throughput`` section of load_tests/RESULTS.md
(``--no-results`` to skip, e.g. for debugging runs).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _results import machine_busy_cores_s, machine_info, update_section  # noqa: E402

from stream_monitor.config import MonitorConfig  # noqa: E402
from stream_monitor.simulate import ARCHETYPES, Record, TrafficGenerator  # noqa: E402

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
DEFAULT_JARS = ROOT / "deploy" / "local" / ".kafka" / "lib"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRAPE_FAILURE_LIMIT = 20.0  # seconds of failing /metrics scrapes before giving up


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# broker
# --------------------------------------------------------------------------------------------
def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (TIME_WAIT leftovers do not count, as for
    the broker's own server socket, which sets SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Our own broker: deploy/local/kafka.sh with a private KAFKA_HOME_DIR and port."""

    def __init__(self, port: int, jars: Path, heap: str, keep_dir: bool) -> None:
        self.port = port
        self.home = Path(tempfile.mkdtemp(prefix="stream-monitor-bench-kafka-"))
        self.keep_dir = keep_dir
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(port),
            "KAFKA_HOME_DIR": str(self.home),
            "KAFKA_JARS_DIR": str(jars),
            "KAFKA_HEAP": heap,
        }
        self.started = False

    @property
    def inst(self) -> Path:
        return self.home / f"broker-{self.port}"

    def start(self) -> str:
        for p in (self.port, self.port + 1):
            if not port_free(p):
                raise SystemExit(
                    f"port {p} is in use: choose another --kafka-port "
                    "(the broker also takes --kafka-port + 1 for its controller)"
                )
        t0 = time.monotonic()
        res = subprocess.run(
            ["bash", str(KAFKA_SH), "start"],
            env=self.env,
            text=True,
            capture_output=True,
            timeout=200,
        )
        self.started = True
        if res.returncode != 0:
            raise SystemExit(f"broker failed to start:\n{res.stderr[-3000:]}")
        log(
            f"broker up at {res.stdout.strip()} in {time.monotonic() - t0:.1f} s (home {self.home})"
        )
        return res.stdout.strip().splitlines()[-1]

    def pid(self) -> int | None:
        try:
            return int((self.inst / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.started:
            try:
                subprocess.run(
                    ["bash", str(KAFKA_SH), "stop"],
                    env=self.env,
                    text=True,
                    capture_output=True,
                    timeout=60,
                )
                log("broker stopped")
            except subprocess.TimeoutExpired:
                pid = self.pid()
                if pid:
                    os.kill(pid, signal.SIGKILL)
                log("broker stop timed out; killed")
        if self.keep_dir:
            log(f"broker folder kept: {self.home}")
        else:
            shutil.rmtree(self.home, ignore_errors=True)


def kafka_version(jars: Path) -> str:
    for j in sorted(jars.glob("kafka_2.*-*.jar")):
        m = re.match(r"kafka_[\d.]+-(.+)\.jar$", j.name)
        if m:
            return m.group(1)
    return "?"


# --------------------------------------------------------------------------------------------
# /proc and /metrics
# --------------------------------------------------------------------------------------------
def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _kib_to_mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def vm_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_WANTED = (
    "stream_monitor_events_consumed_total",
    "stream_monitor_events_invalid_total",
    "stream_monitor_alerts_published_total",
    "stream_monitor_batch_processing_seconds_",
    "stream_monitor_batch_events_",
    "stream_monitor_consumer_lag",
    "stream_monitor_last_event_timestamp_seconds",
    "stream_monitor_label_partition_pauses_total",
    "stream_monitor_label_join_pending",
    "stream_monitor_label_join_early_labels",
)

# Only these samples are sent back (prometheus_client's `name[]` filter): a smaller response
# to parse. prometheus_client skips collectors that describe no names for such requests, so
# the monitor's StateCollector (per-model and label-join series) does not run for them: the
# label-join series come from full scrapes at the timeline marks (add_full_series).
_SCRAPE_PATH = "/metrics?" + "&".join(
    f"name[]={n}"
    for n in (
        "stream_monitor_events_consumed_total",
        "stream_monitor_events_invalid_total",
        "stream_monitor_alerts_published_total",
        "stream_monitor_batch_processing_seconds_bucket",
        "stream_monitor_batch_processing_seconds_count",
        "stream_monitor_batch_processing_seconds_sum",
        "stream_monitor_batch_events_count",
        "stream_monitor_batch_events_sum",
        "stream_monitor_consumer_lag",
        "stream_monitor_last_event_timestamp_seconds",
        "stream_monitor_label_partition_pauses_total",
        "stream_monitor_label_join_pending",
        "stream_monitor_label_join_early_labels",
    )
)

Series = dict[str, list[tuple[dict[str, str], float]]]


_JOIN_SERIES = {
    "model events (predictions monitored)": "stream_monitor_model_events_total",
    "labelled predictions (joined)": "stream_monitor_model_labelled_predictions_total",
    "labels unmatched": "stream_monitor_label_join_unmatched_labels_total",
    "labels waiting early": "stream_monitor_label_join_early_labels",
    "predictions pending": "stream_monitor_label_join_pending",
    "predictions evicted": "stream_monitor_label_join_evicted_total",
    "predictions expired": "stream_monitor_label_join_expired_total",
}


def parse_metrics(text: str, wanted: tuple[str, ...] | None = _WANTED) -> Series:
    """The series the benchmark reads (fast: other lines are skipped by prefix); all if None."""
    out: Series = {}
    for line in text.splitlines():
        if line.startswith("#") or (wanted is not None and not line.startswith(wanted)):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def total(s: Series, name: str, **match: str) -> float:
    return sum(v for lab, v in s.get(name, []) if all(lab.get(k) == x for k, x in match.items()))


def buckets(s: Series, base: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of a histogram, sorted by bound."""
    out = [(float(lab["le"]), v) for lab, v in s.get(base + "_bucket", [])]
    return sorted(out)


def hist_quantile(q: float, cum: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus histogram_quantile: linear interpolation inside the bucket."""
    if not cum or cum[-1][1] <= 0:
        return None
    rank = q * cum[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cum:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # beyond the largest finite bucket
            if count == lower_count:
                return bound
            frac = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * frac
        lower_bound, lower_count = bound, count
    return None


def hist_delta(
    a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    prev = dict(a)
    return [(bound, c - prev.get(bound, 0.0)) for bound, c in b]


@dataclass
class Sample:
    t: float  # monotonic, when the response arrived
    wall: float  # wall clock, midpoint of the request
    scrape_s: float
    series: Series
    cpu_monitor: float | None
    cpu_broker: float | None
    cpu_machine: float | None = None
    cpu_bench: float = 0.0
    rss_mib: float | None = None
    full: bool = False  # the StateCollector's join series were added from a full scrape


def _toml_value(v: str) -> str:
    """A command-line value as TOML: numbers and booleans as they are, anything else quoted."""
    if v in ("true", "false") or re.fullmatch(r"-?\d+(\.\d+)?", v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Monitor:
    """`stream-monitor run --config <toml>` as a subprocess, with a /metrics scraper."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        bootstrap: str,
        topics: dict[str, str],
        group: str,
        consumer_overrides: dict[str, str] | None = None,
        profile: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.profile = profile
        self.port = free_port()
        self.bootstrap = bootstrap
        self.cfg_path = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        # A unique instance id (where the config has one): it names the transactional
        # producer, which must not fence another monitor on a shared broker.
        instance = (
            f'instance_id = "{group}"\n' if "instance_id" in MonitorConfig.model_fields else ""
        )
        self.cfg_path.write_text(
            f'bootstrap_servers = "{bootstrap}"\n'
            f'group_id = "{group}"\n'
            + instance
            + "".join(f"{k} = {_toml_value(v)}\n" for k, v in (settings or {}).items())
            + 'metrics_host = "127.0.0.1"\n'
            f"metrics_port = {self.port}\n"
            "\n[topics]\n"
            + "".join(f'{k} = "{v}"\n' for k, v in topics.items())
            + ("\n[consumer_overrides]\n" if consumer_overrides else "")
            + "".join(f'"{k}" = "{v}"\n' for k, v in (consumer_overrides or {}).items())
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._failing_since: float | None = None

    def start(self) -> None:
        exe = [str(VENV_BIN / "stream-monitor")]
        if self.profile is not None:
            exe = [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(self.profile),
                "-m",
                "stream_monitor",
            ]
        # --bootstrap-servers on the command line as well: some versions of `run` let their
        # default (KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092) override the file's value.
        cmd = [
            *exe,
            "--log-level",
            "INFO",
            "run",
            "--config",
            str(self.cfg_path),
            "--bootstrap-servers",
            self.bootstrap,
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout
            ) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def wait_ready(self, limit: float) -> float:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"monitor exited during start-up; log:\n{self.tail()}")
            if self.get("/readyz", 2.0)[0] == 200:
                return time.monotonic() - self.started_at
            time.sleep(0.2)
        raise RuntimeError(f"monitor not ready within {limit:.0f} s; log:\n{self.tail()}")

    def scrape(self, broker_pid: int | None) -> Sample | None:
        """One /metrics sample, or None; raises after ``SCRAPE_FAILURE_LIMIT`` s of failures."""
        w0, t0 = time.time(), time.monotonic()
        status, text = self.get(_SCRAPE_PATH)
        t1, w1 = time.monotonic(), time.time()
        if status != 200:
            if self._failing_since is None:
                self._failing_since = t1
            elif t1 - self._failing_since > SCRAPE_FAILURE_LIMIT:
                raise RuntimeError(
                    f"/metrics failing for {SCRAPE_FAILURE_LIMIT:.0f} s "
                    f"(last HTTP status {status}); log:\n{self.tail()}"
                )
            return None
        self._failing_since = None
        return Sample(
            t1,
            (w0 + w1) / 2,
            t1 - t0,
            parse_metrics(text),
            cpu_seconds(self.pid),
            cpu_seconds(broker_pid),
            machine_busy_cores_s(),
            self_cpu_s(),
            _kib_to_mib(vm_kib(self.pid, "VmRSS")),
        )

    def add_full_series(self, s: Sample) -> None:
        """Add the label-join series of one full scrape to ``s`` (marks it ``full``)."""
        status, text = self.get("/metrics", 30.0)
        if status == 200:
            full = parse_metrics(text, None)
            for name in (
                "stream_monitor_label_join_pending",
                "stream_monitor_label_join_early_labels",
            ):
                s.series[name] = full.get(name, [])
            s.full = True

    def join_figures(self) -> dict[str, float | None]:
        """Label-join totals from one full scrape (None for a series the monitor lacks)."""
        status, text = self.get("/metrics", 30.0)
        if status != 200:
            return {}
        series = parse_metrics(text, None)
        return {
            k: (total(series, name) if name in series else None) for k, name in _JOIN_SERIES.items()
        }

    def peak_rss_mib(self) -> float | None:
        kib = vm_kib(self.pid, "VmHWM")
        return None if kib is None else kib / 1024

    def stop(self, limit: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM; returns (exit code or None if it had to be killed, seconds to exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        rc: int | None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = None
        self._log.close()
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def mode(self) -> str:
        """What the monitor says about its guarantee and checkpointing at start-up, if it does."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "?"
        m = re.search(r"(guarantee=\S+(?: changelog=\S+)?)", text)
        return m.group(1) if m else "not logged"

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0


# --------------------------------------------------------------------------------------------
# producing
# --------------------------------------------------------------------------------------------
def model_names(n: int) -> list[str]:
    """``fraud-detector-0, churn-model-1, eta-regressor-2, fraud-detector-3, ...``"""
    return [f"{ARCHETYPES[i % len(ARCHETYPES)]}-{i}" for i in range(n)]


def make_topics(bootstrap: str, run_id: str, phase: str, partitions: int) -> dict[str, str]:
    from stream_monitor.kafka.clients import ensure_input_topics

    t = {k: f"bench-{run_id}-{phase}-{k}" for k in ("predictions", "labels", "alerts")}
    t["dead_letter"] = f"bench-{run_id}-{phase}-dead-letter"
    ensure_input_topics(
        bootstrap, partitions=partitions, predictions=t["predictions"], labels=t["labels"]
    )
    return t


def high_watermarks(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Records in each topic (sum of the partitions' high watermarks; topics start at 0)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-wm-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        out = {}
        for topic in topics:
            meta = c.list_topics(topic, timeout=10).topics[topic]
            out[topic] = sum(
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in meta.partitions
            )
        return out
    finally:
        c.close()


@dataclass
class ProduceResult:
    handed: int = 0
    predictions: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    lateness: list[float] = field(default_factory=list)  # paced mode: s behind schedule
    first_pred_wall: float = 0.0
    last_pred_wall: float = 0.0


def produce(
    bootstrap: str,
    records: Iterable[Record],
    pred_topic: str,
    *,
    time_limit: float,
    paced: bool,
    conf: dict[str, Any],
    stop: threading.Event | None = None,
    progress_every: int = 0,
) -> ProduceResult:
    """Produce ``records``; paced: each record at its event time (wall clock)."""
    from confluent_kafka import Producer

    errors: list[str] = []
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": "lz4",
            "error_cb": lambda e: errors.append(str(e)),
            **conf,
        }
    )
    res = ProduceResult()
    t0 = time.monotonic()
    deadline = t0 + time_limit
    send = p.produce
    now = time.time
    for rec in records:
        if paced:
            delay = rec.timestamp - now()
            if delay > 0.002:
                time.sleep(delay)
            elif delay < 0 and rec.topic == pred_topic:
                res.lateness.append(-delay)
        while True:
            try:
                send(rec.topic, value=rec.value, key=rec.key, timestamp=round(rec.timestamp * 1000))
                break
            except BufferError:
                p.poll(0.05)
        res.handed += 1
        if rec.topic == pred_topic:
            res.predictions += 1
            res.last_pred_wall = now()
            if res.predictions == 1:
                res.first_pred_wall = res.last_pred_wall
            if progress_every and res.predictions % progress_every == 0:
                el = time.monotonic() - t0
                log(
                    f"  produced {res.predictions:,} predictions ({res.handed:,} records) "
                    f"in {el:.0f} s"
                )
        if res.handed & 1023 == 0:
            p.poll(0)
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                res.stopped_early = True
                break
    left = p.flush(60)
    res.seconds = time.monotonic() - t0
    if left:
        log(f"WARNING: {left} records undelivered after flush")
    if errors:
        log(f"producer errors ({len(errors)}): {errors[:3]}")
    return res


# --------------------------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def consumed_of(s: Sample) -> float:
    return total(s.series, "stream_monitor_events_consumed_total")


def cpu_shares(a: Sample, b: Sample) -> dict[str, float]:
    """Cores used between two samples: monitor, broker, this script, whole machine, others."""
    dt = b.t - a.t
    out: dict[str, float] = {}
    if dt <= 0:
        return out
    for name, x, y in (
        ("monitor", a.cpu_monitor, b.cpu_monitor),
        ("broker", a.cpu_broker, b.cpu_broker),
        ("machine", a.cpu_machine, b.cpu_machine),
        ("bench", a.cpu_bench, b.cpu_bench),
    ):
        if x is not None and y is not None:
            out[name] = (y - x) / dt
    if "machine" in out:
        out["others"] = max(
            0.0, out["machine"] - sum(out.get(k, 0.0) for k in ("monitor", "broker", "bench"))
        )
    return out


TIMELINE_STEP = 15.0  # seconds between the rows of the drain timeline


def timeline_row(a: Sample, b: Sample, pred_topic: str, r: dict[str, Any]) -> dict[str, str]:
    """Progress between two samples: rates by topic, CPU, RSS (strings, for log and table)."""
    dt = b.t - a.t
    ca, cb = consumed_of(a), consumed_of(b)
    pa = total(a.series, "stream_monitor_events_consumed_total", topic=pred_topic)
    pb = total(b.series, "stream_monitor_events_consumed_total", topic=pred_topic)
    c = cpu_shares(a, b)
    ts = "stream_monitor_last_event_timestamp_seconds"
    t_pred = total(b.series, ts, topic=pred_topic)
    t_label = sum(v for lab, v in b.series.get(ts, []) if lab.get("topic") != pred_topic)
    pauses = "stream_monitor_label_partition_pauses_total"
    return {
        "until s": f"{b.t - r.get('_t0', a.t):.0f}",
        "consumed": f"{cb / r['produced']:.0%}",
        "predictions consumed": f"{pb / max(1, r['produced_predictions']):.0%}",
        "labels consumed": f"{(cb - pb) / max(1, r['produced_labels']):.0%}",
        "records/s": f"{(cb - ca) / dt:,.0f}",
        "predictions/s": f"{(pb - pa) / dt:,.0f}",
        "labels/s": f"{((cb - pb) - (ca - pa)) / dt:,.0f}",
        "newest label - newest prediction, event s": (
            f"{t_label - t_pred:,.0f}" if t_pred > 0 and t_label > 0 else "n/a"
        ),
        "label pauses": f"{total(b.series, pauses) - total(a.series, pauses):,.0f}",
        "predictions pending": f"{total(b.series, 'stream_monitor_label_join_pending'):,.0f}",
        "labels waiting early": f"{total(b.series, 'stream_monitor_label_join_early_labels'):,.0f}",
        "monitor cores": f"{c.get('monitor', 0):.2f}",
        "other processes cores": f"{c.get('others', 0):.2f}",
        "RSS MiB": f(b.rss_mib),
    }


def drift_index(args: argparse.Namespace, n: int) -> int | None:
    return None if args.drift_at < 0 else int(n * args.drift_at)


def wide_events(
    n: int, models: list[str], topic: str, rate: float, seed: int, drift_at: int | None
) -> Iterable[Record]:
    """``--wide``: predictions only (no labels) of models with 20 numeric and 3 categorical
    features each and a scored prediction; from ``drift_at`` on, two numeric features of every
    model shift by one standard deviation and one category doubles its share."""
    rng = np.random.default_rng(seed)
    start = time.time() - n / rate - 60
    cats = np.array(["a", "b", "c", "d", "e"])
    block = 5000
    for lo in range(0, n, block):
        m = min(block, n - lo)
        x = rng.normal(0.0, 1.0, (m, 20))
        c = rng.choice(cats, (m, 3), p=[0.4, 0.25, 0.15, 0.1, 0.1])
        score = rng.random(m)
        idx = np.arange(lo, lo + m)
        if drift_at is not None:
            late = idx >= drift_at
            x[late, :2] += 1.0
            c[late & (rng.random(m) < 0.3), 0] = "e"
        for j in range(m):
            i = lo + j
            model = models[i % len(models)]
            features: dict[str, Any] = {f"x{k}": v for k, v in enumerate(x[j].tolist())}
            features.update({f"c{k}": v for k, v in enumerate(c[j].tolist())})
            ts = start + i / rate
            value = orjson.dumps(
                {
                    "event_id": f"w{i}",
                    "model_id": model,
                    "timestamp": ts,
                    "features": features,
                    "prediction": {"score": float(score[j]), "label": int(score[j] > 0.5)},
                }
            )
            yield Record(topic, model.encode(), value, ts)


def floor(
    bootstrap: str, topics: list[str], expected: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Read every record of ``topics`` with a bare confluent-kafka consumer (batched
    ``consume``, ``orjson.loads`` of every value, nothing else): the speed a monitor could at
    best reach on this broker and data. Same batch size as the monitor's default."""
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
    n = 0
    started: float | None = None
    deadline = time.monotonic() + args.consume_timeout
    try:
        while n < expected and time.monotonic() < deadline:
            msgs = c.consume(batch, 1.0)
            if msgs and started is None:
                started = time.perf_counter()  # assignment and first fetch excluded
            for m in msgs:
                if m.error() is None:
                    orjson.loads(m.value())
                    n += 1
        seconds = time.perf_counter() - (started or time.perf_counter())
    finally:
        c.close()
    return {
        "floor_records": n,
        "floor_seconds": seconds,
        "floor_rate": n / seconds if seconds > 0 else None,
        "floor_complete": n >= expected,
    }


def phase_drain(
    args: argparse.Namespace,
    bootstrap: str,
    run_id: str,
    workdir: Path,
    broker: Broker | None,
    names: list[str],
) -> dict[str, Any]:
    r: dict[str, Any] = {}
    topics = make_topics(bootstrap, run_id, "drain", args.partitions)
    n = args.predictions
    # Event times: a past window ending now (the broker rejects records > 1 h in the future
    # and its 24 h retention would delete older ones), at >= 1000 predictions/s of event time.
    ev_rate = max(1000.0, n / (20 * 3600.0))
    gen = TrafficGenerator(
        seed=args.seed,
        drift_at=drift_index(args, n),
        models=names,
        rate=ev_rate,
        start_time=time.time() - n / ev_rate - 60,
        prediction_topic=topics["predictions"],
        label_topic=topics["labels"],
    )
    log(
        f"phase 1: producing {n:,} predictions (+ labels), {len(names)} models, "
        f"{args.partitions} partitions, drift at {drift_index(args, n)}"
    )
    records = (
        wide_events(n, names, topics["predictions"], ev_rate, args.seed, drift_index(args, n))
        if args.wide
        else gen.events(n)
    )
    pr = produce(
        bootstrap,
        records,
        topics["predictions"],
        time_limit=args.produce_timeout,
        paced=False,
        conf={
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "acks": "1",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        },
        progress_every=max(1, n // 5),
    )
    counts = high_watermarks(bootstrap, [topics["predictions"], topics["labels"]])
    produced = sum(counts.values())
    r.update(
        produced=produced,
        produced_predictions=counts[topics["predictions"]],
        produced_labels=counts[topics["labels"]],
        handed=pr.handed,
        produce_seconds=pr.seconds,
        produce_rate=produced / pr.seconds,
        produce_pred_rate=counts[topics["predictions"]] / pr.seconds,
        produce_stopped_early=pr.stopped_early,
    )
    log(
        f"produced {produced:,} records ({r['produced_predictions']:,} predictions, "
        f"{r['produced_labels']:,} labels) in {pr.seconds:.1f} s = "
        f"{r['produce_rate']:,.0f} records/s"
        + (" (STOPPED AT THE TIME LIMIT)" if pr.stopped_early else "")
        + ("" if produced == pr.handed else f"; WARNING {pr.handed - produced} not delivered")
    )

    log("phase 1b: the floor, a bare consumer that reads and parses every record")
    r.update(floor(bootstrap, [topics["predictions"], topics["labels"]], produced, args))
    log(
        f"floor: {r['floor_records']:,} records in {r['floor_seconds']:.1f} s = "
        f"{r['floor_rate']:,.0f} records/s"
    )

    log("phase 2: draining with `stream-monitor run`")
    mon = Monitor(
        workdir,
        "drain",
        bootstrap,
        topics,
        f"bench-{run_id}-drain",
        args.consumer_override,
        args.monitor_profile,
        args.monitor_setting,
    )
    broker_pid = broker.pid() if broker else None
    samples: list[Sample] = []
    try:
        mon.start()
        r["_t0"] = mon.started_at
        r["ready_seconds"] = mon.wait_ready(60)
        deadline = time.monotonic() + args.consume_timeout
        next_log = time.monotonic() + TIMELINE_STEP
        logged: list[Sample] = []

        tick = time.monotonic()
        while time.monotonic() < deadline:
            tick += args.poll
            s = mon.scrape(broker_pid)
            if s is not None:
                samples.append(s)
                done = total(s.series, "stream_monitor_events_consumed_total")
                if done >= produced:
                    mon.add_full_series(s)
                    break
                if s.t >= next_log and logged:
                    mon.add_full_series(s)
                    row = timeline_row(logged[-1], s, topics["predictions"], r)
                    log("  " + "; ".join(f"{k} {v}" for k, v in row.items()))
                    logged.append(s)
                    next_log = s.t + TIMELINE_STEP
                elif not logged:
                    mon.add_full_series(s)
                    logged.append(s)
            if not mon.alive():
                raise RuntimeError(f"monitor exited while draining; log:\n{mon.tail()}")
            time.sleep(max(0.0, tick - time.monotonic()))
        r["peak_rss_mib"] = mon.peak_rss_mib()
        r["join"] = mon.join_figures()
        last = samples[-1]
        marks = [samples[0]]
        for x in samples[1:]:
            if x.full or x is last:
                if x is last and len(marks) > 1 and x.t - marks[-1].t < TIMELINE_STEP / 3:
                    marks[-1] = x  # fold a short final stretch into the previous row
                else:
                    marks.append(x)
        r["timeline"] = [
            timeline_row(a_, b_, topics["predictions"], r) for a_, b_ in itertools.pairwise(marks)
        ]
        consumed = total(last.series, "stream_monitor_events_consumed_total")
        r["consumed"] = consumed
        r["complete"] = consumed >= produced
        first = next((s for s in samples if consumed_of(s) > 0), last)
        r["drain_seconds"] = last.t - mon.started_at
        r["first_record_seconds"] = first.t - mon.started_at

        # steady window: first sample at >= 10 % consumed to first at >= 90 %
        def at(frac: float) -> Sample:
            return next((s for s in samples if consumed_of(s) >= frac * produced), last)

        r["rss_at"] = {q: at(q).rss_mib for q in (0.1, 0.5, 0.9)}
        a, b = at(0.10), at(0.90)
        if b.t - a.t < 2 * args.poll:  # too short to tell: use the whole drain
            a, b = first, last
        dt = b.t - a.t
        ptopic = topics["predictions"]
        recs = total(b.series, "stream_monitor_events_consumed_total") - total(
            a.series, "stream_monitor_events_consumed_total"
        )
        preds = total(b.series, "stream_monitor_events_consumed_total", topic=ptopic) - total(
            a.series, "stream_monitor_events_consumed_total", topic=ptopic
        )
        r.update(
            window_seconds=dt,
            window_records=recs,
            rate_records=recs / dt,
            rate_predictions=preds / dt,
        )
        r["overall_rate_records"] = consumed / max(1e-9, last.t - first.t)
        hb = hist_delta(
            buckets(a.series, "stream_monitor_batch_processing_seconds"),
            buckets(b.series, "stream_monitor_batch_processing_seconds"),
        )
        r["batch_p50_s"] = hist_quantile(0.5, hb)
        r["batch_p95_s"] = hist_quantile(0.95, hb)
        nb = total(b.series, "stream_monitor_batch_processing_seconds_count") - total(
            a.series, "stream_monitor_batch_processing_seconds_count"
        )
        sb = total(b.series, "stream_monitor_batch_processing_seconds_sum") - total(
            a.series, "stream_monitor_batch_processing_seconds_sum"
        )
        ne = total(b.series, "stream_monitor_batch_events_sum") - total(
            a.series, "stream_monitor_batch_events_sum"
        )
        r["batches_in_window"] = nb
        r["batch_mean_s"] = sb / nb if nb else None
        r["batch_mean_records"] = ne / nb if nb else None
        r["busy_fraction"] = sb / dt  # share of wall time spent inside process_batch
        r["cpu"] = cpu_shares(a, b)
        if r["cpu"].get("monitor") and r["rate_records"]:
            r["cpu_us_per_record"] = 1e6 * r["cpu"]["monitor"] / r["rate_records"]
        r["scrape_p50_ms"] = 1000 * (pct([s.scrape_s for s in samples], 50) or 0)
        r["alerts_published"] = total(last.series, "stream_monitor_alerts_published_total")
        r["invalid"] = total(last.series, "stream_monitor_events_invalid_total")
        log(
            f"drained {consumed:,.0f}/{produced:,} in {r['drain_seconds']:.1f} s; steady "
            f"{r['rate_records']:,.0f} records/s ({r['rate_predictions']:,.0f} predictions/s)"
        )
    finally:
        rc, secs = mon.stop(30) if mon.proc else (None, 0.0)
    r["exit_code"], r["exit_seconds"] = rc, secs
    r["mode"] = mon.mode()
    log(f"monitor stopped: exit code {rc} after {secs:.1f} s")
    return r


def phase_live(
    args: argparse.Namespace,
    bootstrap: str,
    run_id: str,
    workdir: Path,
    broker: Broker | None,
    names: list[str],
) -> dict[str, Any]:
    r: dict[str, Any] = {}
    topics = make_topics(bootstrap, run_id, "live", args.partitions)
    n = int(args.live_rate * args.live_seconds)
    log(
        f"phase 3: live, {args.live_rate:,.0f} predictions/s for {args.live_seconds:.0f} s "
        f"({n:,} predictions)"
    )
    mon = Monitor(
        workdir,
        "live",
        bootstrap,
        topics,
        f"bench-{run_id}-live",
        args.consumer_override,
        settings=args.monitor_setting,
    )
    broker_pid = broker.pid() if broker else None
    stop = threading.Event()
    samples: list[Sample] = []
    holder: dict[str, ProduceResult] = {}
    try:
        mon.start()
        r["ready_seconds"] = mon.wait_ready(60)
        # Records are generated before the clock starts, so that the paced producer does not
        # stall on the generator's blocks; event time = the wall time they are due.
        lead = 2.0 + 1.8 * n / 40_000  # generation runs at ~40-120k records/s
        start = time.time() + lead
        gen = TrafficGenerator(
            seed=args.seed + 1,
            drift_at=drift_index(args, n),
            models=names,
            rate=args.live_rate,
            start_time=start,
            prediction_topic=topics["predictions"],
            label_topic=topics["labels"],
        )
        records = list(gen.events(n))
        r["generated_ahead_s"] = start - time.time()
        if r["generated_ahead_s"] < 0:
            log(f"WARNING: generation ended {-r['generated_ahead_s']:.1f} s after the start")

        def run() -> None:
            holder["p"] = produce(
                bootstrap,
                records,
                topics["predictions"],
                time_limit=args.live_seconds + 30,
                paced=True,
                stop=stop,
                conf={
                    "linger.ms": args.live_linger_ms,
                    "acks": "all",
                    "queue.buffering.max.messages": 500_000,
                },
            )

        th = threading.Thread(target=run, name="live-producer", daemon=True)
        th.start()
        t_start_mono = time.monotonic() + (start - time.time())
        end_preds = t_start_mono + args.live_seconds
        tick = time.monotonic()
        while th.is_alive() and time.monotonic() < end_preds + 60:
            tick += args.poll
            s = mon.scrape(broker_pid)
            if s is not None:
                samples.append(s)
            if not mon.alive():
                raise RuntimeError(f"monitor exited during the live phase; log:\n{mon.tail()}")
            time.sleep(max(0.0, tick - time.monotonic()))
        th.join(5)
        pr = holder.get("p")
        if pr is None:
            raise RuntimeError("live producer did not finish")
        counts = high_watermarks(bootstrap, [topics["predictions"], topics["labels"]])
        produced = sum(counts.values())
        # wait (bounded) for the monitor to consume the rest
        drain_deadline = time.monotonic() + 60
        consumed = 0.0
        t_drain0 = time.monotonic()
        while time.monotonic() < drain_deadline:
            s = mon.scrape(broker_pid)
            if s is not None:
                consumed = total(s.series, "stream_monitor_events_consumed_total")
                if consumed >= produced:
                    break
            time.sleep(args.poll)
        r["drain_after_seconds"] = time.monotonic() - t_drain0
        r["peak_rss_mib"] = mon.peak_rss_mib()
        r["join"] = mon.join_figures()
        r["produced_labels"] = counts[topics["labels"]]
        r.update(
            produced=produced,
            produced_predictions=counts[topics["predictions"]],
            consumed=consumed,
            complete=consumed >= produced,
            achieved_pred_rate=(pr.predictions - 1)
            / max(1e-9, pr.last_pred_wall - pr.first_pred_wall),
            producer_stopped_early=pr.stopped_early,
        )
        lat = pr.lateness
        r["producer_late_share"] = len(lat) / max(1, pr.predictions)
        r["producer_late_p95_s"] = pct(lat, 95) if lat else 0.0
        r["producer_late_max_s"] = max(lat) if lat else 0.0
        # the sampled window: warm-up excluded, prediction traffic only
        lo, hi = t_start_mono + args.live_warmup, end_preds
        win = [s for s in samples if lo <= s.t <= hi]
        ptopic = topics["predictions"]
        lags = [
            total(s.series, "stream_monitor_consumer_lag")
            for s in win
            if s.series.get("stream_monitor_consumer_lag")
        ]
        ages = []
        for s in win:
            ts = total(s.series, "stream_monitor_last_event_timestamp_seconds", topic=ptopic)
            if ts > 0:
                ages.append(s.wall - ts)
        r.update(
            samples=len(win),
            lag_p50=pct(lags, 50),
            lag_p95=pct(lags, 95),
            lag_max=max(lags) if lags else None,
            age_p50=pct(ages, 50),
            age_p95=pct(ages, 95),
            age_max=max(ages) if ages else None,
        )
        r["scrape_p50_ms"] = 1000 * (pct([s.scrape_s for s in win], 50) or 0)
        if len(win) >= 2:
            r["cpu"] = cpu_shares(win[0], win[-1])
            r["rate_records"] = (consumed_of(win[-1]) - consumed_of(win[0])) / (
                win[-1].t - win[0].t
            )
            if r["cpu"].get("monitor") and r["rate_records"]:
                r["cpu_us_per_record"] = 1e6 * r["cpu"]["monitor"] / r["rate_records"]
            a, b = win[0], win[-1]
            nb = total(b.series, "stream_monitor_batch_processing_seconds_count") - total(
                a.series, "stream_monitor_batch_processing_seconds_count"
            )
            ne = total(b.series, "stream_monitor_batch_events_sum") - total(
                a.series, "stream_monitor_batch_events_sum"
            )
            r["batch_p50_s"] = hist_quantile(
                0.5,
                hist_delta(
                    buckets(a.series, "stream_monitor_batch_processing_seconds"),
                    buckets(b.series, "stream_monitor_batch_processing_seconds"),
                ),
            )
            r["batch_mean_records"] = ne / nb if nb else None
            r["batch_mean_s"] = (
                (
                    total(b.series, "stream_monitor_batch_processing_seconds_sum")
                    - total(a.series, "stream_monitor_batch_processing_seconds_sum")
                )
                / nb
                if nb
                else None
            )
        r["alerts_published"] = (
            total(samples[-1].series, "stream_monitor_alerts_published_total") if samples else 0
        )
        log(
            f"live: lag p50 {f(r['lag_p50'])} records, age p50 {f(r['age_p50'], '.2f')} s "
            f"over {len(win)} samples"
        )
    finally:
        stop.set()
        rc, secs = mon.stop(30) if mon.proc else (None, 0.0)
    r["exit_code"], r["exit_seconds"] = rc, secs
    log(f"monitor stopped: exit code {rc} after {secs:.1f} s")
    return r


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def f(v: Any, fmt: str = ",.0f", unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{fmt}}{unit}"


def cpu_text(c: dict[str, float] | None) -> str:
    if not c:
        return "n/a"
    names = [
        ("monitor", "monitor"),
        ("broker", "broker"),
        ("bench", "this script"),
        ("others", "other processes"),
        ("machine", "machine total"),
    ]
    return ", ".join(f"{label} {c[k]:.2f}" for k, label in names if k in c)


def join_text(r: dict[str, Any]) -> str:
    j = r.get("join") or {}
    if not j:
        return "n/a"
    parts = [f"{k} {f(v)}" for k, v in j.items() if v is not None]
    labelled = j.get("labelled predictions (joined)")
    if labelled is not None and r.get("produced_labels"):
        parts.insert(0, f"**{labelled / r['produced_labels']:.1%} of the labels joined**")
    return "; ".join(parts)


def timeline_md(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    return [
        "",
        "Drain timeline (rates and label pauses between successive rows, other figures at the "
        "end of the row; seconds since the monitor process started; event times are the "
        "newest per topic over all partitions):",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---:|" * len(keys),
    ] + ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]


def report(
    args: argparse.Namespace,
    d: dict[str, Any],
    lv: dict[str, Any] | None,
    total_s: float,
    machine: str,
    cmd: str,
) -> tuple[str, str]:
    ok = bool(d.get("complete")) and d.get("exit_code") == 0
    settings = ", ".join(
        f"{k}={v}" for k, v in {**args.monitor_setting, **args.consumer_override}.items()
    )
    rows: list[tuple[str, str]] = [
        (
            "monitor",
            "`stream-monitor run`, defaults except topics/group/ports"
            + (f" and {settings}" if settings else "")
            + f"; start-up log: {d.get('mode', '?')}",
        ),
        (
            "records pre-produced",
            f"{d['produced']:,} ({d['produced_predictions']:,} predictions + "
            f"{d['produced_labels']:,} labels; {args.models} models, {args.partitions} partitions, "
            + (
                "no drift)"
                if args.drift_at < 0
                else f"drift at {args.drift_at:.0%} of the predictions)"
            ),
        ),
        (
            "produce rate (one Python producer, generation included)",
            f"{f(d['produce_rate'])} records/s ({f(d['produce_pred_rate'])} predictions/s)"
            + (" STOPPED AT THE TIME LIMIT" if d.get("produce_stopped_early") else ""),
        ),
        (
            "**sustained throughput, 10 %→90 % consumed**",
            f"**{f(d.get('rate_records'))} records/s = {f(d.get('rate_predictions'))} "
            f"predictions/s** (over {f(d.get('window_seconds'), '.1f')} s)",
        ),
        (
            "**floor: bare consumer, `consume` + `orjson.loads` of every record**",
            f"**{f(d.get('floor_rate'))} records/s** ({f(d.get('floor_records'))} records in "
            f"{f(d.get('floor_seconds'), '.1f')} s"
            + ("" if d.get("floor_complete") else ", **INCOMPLETE**")
            + "); monitor / floor = **"
            + (
                f"{d['rate_records'] / d['floor_rate']:.2f}"
                if d.get("rate_records") and d.get("floor_rate")
                else "n/a"
            )
            + "** (same broker, same records, this run)",
        ),
        (
            "whole drain",
            f"{f(d.get('consumed'))} records in {f(d.get('drain_seconds'), '.1f')} s from process "
            f"start (first record at {f(d.get('first_record_seconds'), '.1f')} s)"
            + ("" if d.get("complete") else " — **INCOMPLETE**"),
        ),
        (
            "batch processing time, steady window",
            f"median {f(d.get('batch_p50_s'), '.3f')} s, p95 {f(d.get('batch_p95_s'), '.3f')} s "
            f"(histogram-interpolated), mean {f(d.get('batch_mean_s'), '.3f')} s; "
            f"{f(d.get('batch_mean_records'))} records/batch; process_batch busy "
            f"{f(d.get('busy_fraction'), '.0%')} of wall time",
        ),
        (
            "CPU cores used, steady window",
            cpu_text(d.get("cpu"))
            + f"; monitor CPU per record {f(d.get('cpu_us_per_record'), '.0f')} µs",
        ),
        (
            "peak RSS of the monitor (VmHWM)",
            f"{f(d.get('peak_rss_mib'), '.0f')} MiB; RSS at 10/50/90 % consumed: "
            + " / ".join(f(v) for v in (d.get("rss_at") or {}).values())
            + " MiB",
        ),
        ("label join at the end of the drain", join_text(d)),
        (
            "alerts published / dead letters",
            f"{f(d.get('alerts_published'))} / {f(d.get('invalid'))}",
        ),
        ("/metrics scrape time (median)", f"{f(d.get('scrape_p50_ms'), '.1f')} ms"),
        ("SIGTERM → exit", f"code {d.get('exit_code')} in {f(d.get('exit_seconds'), '.1f')} s"),
    ]
    if lv:
        ok = ok and bool(lv.get("complete")) and lv.get("exit_code") == 0
        rows += [
            (
                "live phase",
                f"{args.live_rate:,.0f} predictions/s (+ labels) for {args.live_seconds:.0f} s "
                f"(producer linger.ms={args.live_linger_ms:g}, acks=all, lz4), "
                f"achieved {f(lv.get('achieved_pred_rate'))}/s; {lv.get('samples')} samples every "
                f"{args.poll} s after a {args.live_warmup:.0f} s warm-up; producer behind schedule "
                f"on {f(lv.get('producer_late_share'), '.1%')} of predictions (p95 "
                f"{f(lv.get('producer_late_p95_s'), '.3f')} s, max "
                f"{f(lv.get('producer_late_max_s'), '.3f')} s)",
            ),
            (
                "**live consumer lag** (sum over partitions)",
                f"**median {f(lv.get('lag_p50'))}, p95 {f(lv.get('lag_p95'))} records** "
                f"(max {f(lv.get('lag_max'))})",
            ),
            (
                "**live event age** (wall - last_event_timestamp)",
                f"**median {f(lv.get('age_p50'), '.2f')} s, p95 {f(lv.get('age_p95'), '.2f')} s** "
                f"(max {f(lv.get('age_max'), '.2f')} s)",
            ),
            (
                "live batches",
                f"median {f(lv.get('batch_p50_s'), '.3f')} s (histogram-interpolated), mean "
                f"{f(lv.get('batch_mean_s'), '.3f')} s, {f(lv.get('batch_mean_records'))} "
                f"records/batch; scrape median {f(lv.get('scrape_p50_ms'), '.1f')} ms",
            ),
            (
                "live CPU cores",
                cpu_text(lv.get("cpu"))
                + f"; consumed {f(lv.get('rate_records'))} records/s, monitor CPU per record "
                f"{f(lv.get('cpu_us_per_record'), '.0f')} µs",
            ),
            ("live peak RSS (VmHWM)", f"{f(lv.get('peak_rss_mib'))} MiB"),
            ("live label join at the end", join_text(lv)),
            (
                "live end",
                f"caught up {lv.get('complete')} ({f(lv.get('consumed'))}/{f(lv.get('produced'))} "
                f"records); SIGTERM → exit code {lv.get('exit_code')} in "
                f"{f(lv.get('exit_seconds'), '.1f')} s",
            ),
        ]
    verdict = (
        "all checks passed (every record consumed, exit code 0 within 30 s)"
        if ok
        else "SOME CHECKS FAILED"
    )
    width = max(len(k.replace("**", "")) for k, _ in rows)
    text = "\n".join(
        ["=== stream-monitor throughput benchmark ==="]
        + [f"{k.replace('**', ''):<{width}}  {v.replace('**', '')}" for k, v in rows]
        + [f"total benchmark time {total_s:.0f} s; {verdict}"]
    )
    md = "\n".join(
        [
            f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} — {machine}",
            "",
            f"Command: `{cmd}` (total {total_s:.0f} s)",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        + [f"| {k} | {v} |" for k, v in rows]
        + ["", f"Overall: {verdict}."]
        + timeline_md(d.get("timeline") or [])
    )
    return text, md


class _KeyValue(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        ns: argparse.Namespace,
        value: Any,
        option: str | None = None,
    ) -> None:
        k, sep, v = str(value).partition("=")
        if not sep or not k:
            parser.error(f"{option}: expected KEY=VALUE, got {value!r}")
        setattr(ns, self.dest, {**getattr(ns, self.dest), k: v})


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--predictions", type=int, default=2_000_000)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument(
        "--wide",
        action="store_true",
        help="predictions only, 20 numeric + 3 categorical features per model (the issue-13 "
        "scenario: --wide --models 5 --predictions 500000)",
    )
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--drift-at",
        type=float,
        default=0.5,
        help="drift from this fraction of the predictions on (negative: no drift)",
    )
    ap.add_argument(
        "--monitor-profile",
        type=Path,
        help="run the drain-phase monitor under cProfile and write its stats here "
        "(slows it down; for finding costs, not for the figures)",
    )
    ap.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    ap.add_argument("--kafka-port", type=int, default=39092)
    ap.add_argument("--kafka-jars-dir", type=Path, default=DEFAULT_JARS)
    ap.add_argument("--kafka-heap", default="1g")
    ap.add_argument("--keep-broker-dir", action="store_true")
    ap.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the monitors' TOML files and logs (kept anyway on failure)",
    )
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between /metrics scrapes")
    ap.add_argument("--produce-timeout", type=float, default=240.0)
    ap.add_argument("--consume-timeout", type=float, default=420.0)
    ap.add_argument("--live-rate", type=float, default=5000.0, help="predictions/s (0: skip)")
    ap.add_argument("--live-seconds", type=float, default=30.0)
    ap.add_argument("--live-warmup", type=float, default=5.0)
    ap.add_argument(
        "--live-linger-ms",
        type=float,
        default=5.0,
        help="linger.ms of the live producer (acks=all)",
    )
    ap.add_argument(
        "--consumer-override",
        action=_KeyValue,
        default={},
        metavar="KEY=VALUE",
        help="librdkafka setting for the monitor's consumer (consumer_overrides in "
        "its TOML); repeatable",
    )
    ap.add_argument(
        "--monitor-setting",
        action=_KeyValue,
        default={},
        metavar="KEY=VALUE",
        help="top-level MonitorConfig field for the monitors' TOML, e.g. "
        "processing_guarantee=at_least_once or batch_size=5000; repeatable",
    )
    ap.add_argument("--results-file", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args(argv)
    if args.predictions < 1000 or args.models < 1 or args.partitions < 1:
        ap.error("need --predictions >= 1000, --models >= 1, --partitions >= 1")

    t0 = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="stream-monitor-bench-"))
    names = model_names(args.models)
    broker: Broker | None = None
    kafka = "external broker"
    if args.bootstrap_servers is None:
        kafka = kafka_version(args.kafka_jars_dir)
    machine = machine_info(kafka=kafka)
    cmd = " ".join(
        [
            ".venv/bin/python load_tests/bench_throughput.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    try:
        if args.bootstrap_servers:
            bootstrap = args.bootstrap_servers
        else:
            broker = Broker(
                args.kafka_port, args.kafka_jars_dir, args.kafka_heap, args.keep_broker_dir
            )
            bootstrap = broker.start()
        d = phase_drain(args, bootstrap, run_id, workdir, broker, names)
        lv = (
            phase_live(args, bootstrap, run_id, workdir, broker, names)
            if args.live_rate > 0
            else None
        )
    except BaseException:
        if any(workdir.iterdir()):
            log(f"failed; monitor configs and logs are in {workdir}")
        else:
            workdir.rmdir()
        raise
    finally:
        if broker is not None:
            broker.stop()
    total_s = time.monotonic() - t0
    text, md = report(args, d, lv, total_s, machine, cmd.strip())
    print(text, flush=True)
    if not args.no_results:
        update_section(
            args.results_file,
            "bench_throughput",
            "Throughput and lag against Kafka (load_tests/bench_throughput.py)",
            md,
        )
        log(f"updated {args.results_file}")
    if args.keep_workdir:
        log(f"monitor configs and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if d.get("complete") and d.get("exit_code") == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
