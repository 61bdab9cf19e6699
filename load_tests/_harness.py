"""What the load tests share: the broker, topics, producing, the monitor subprocess,
/metrics scraping, CPU and RSS readings from /proc, the results block (RESULTS.md helpers come
from ``_results.py`` and are re-exported), model names and, for the in-process scripts,
decoded TrafficGenerator events fed to ``PartitionState`` in batches.

Used by the broker scripts (``bench_throughput.py``, ``bench_checkpoint.py``, ``soak.py``,
``chaos.py``) and some in-process ones. Everything talks to 127.0.0.1 only, and every wait is
bounded.
"""

from __future__ import annotations

import argparse
import contextlib
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
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _results import (  # noqa: E402
    add_results_args,
    command_line,
    machine_busy_cores_s,
    machine_info,
    results_head,
    source_digest,
    sources_changed,
    update_section,
)

from stream_monitor.config import MonitorConfig  # noqa: E402
from stream_monitor.simulate import ARCHETYPES, Record, TrafficGenerator  # noqa: E402

if TYPE_CHECKING:
    from stream_monitor.events.schema import LabelEvent, PredictionEvent

__all__ = [
    "BULK_PRODUCER",
    "DEFAULT_JARS",
    "Broker",
    "CpuMark",
    "KeyValue",
    "Monitor",
    "PacedProducer",
    "ProduceResult",
    "RunRecord",
    "Sample",
    "Series",
    "add_broker_args",
    "add_results_args",
    "add_run_args",
    "batches",
    "broker_label",
    "broker_session",
    "buckets",
    "command_line",
    "cpu_mark",
    "cpu_shares",
    "cpu_text",
    "decoded_events",
    "fmt",
    "high_watermarks",
    "hist_delta",
    "hist_quantile",
    "increase",
    "lead_seconds",
    "log",
    "machine_info",
    "make_topics",
    "metrics_path",
    "model_names",
    "newest",
    "note_lines",
    "parse_metrics",
    "pct",
    "poll",
    "produce",
    "self_cpu_s",
    "spread_models",
    "total",
    "workdir_session",
    "write_results",
]

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
DEFAULT_JARS = ROOT / "deploy" / "local" / ".kafka" / "lib"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRAPE_FAILURE_LIMIT = 20.0  # seconds of failing /metrics scrapes before giving up


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt(v: Any, spec: str = ",.0f", unit: str = "") -> str:
    """``v`` formatted, or ``n/a`` for None."""
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


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


def free_ports(n: int = 1) -> int:
    """The first of ``n`` consecutive free ports on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n - 1 <= 65535 and all(port_free(base + i) for i in range(1, n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports found")


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


def add_broker_args(ap: argparse.ArgumentParser, port: int) -> None:
    """The options choosing the broker: an external one, or ours on ``--kafka-port``."""
    ap.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    ap.add_argument("--kafka-port", type=int, default=port)
    ap.add_argument("--kafka-jars-dir", type=Path, default=DEFAULT_JARS)
    ap.add_argument("--kafka-heap", default="1g")
    ap.add_argument("--keep-broker-dir", action="store_true")


def add_run_args(ap: argparse.ArgumentParser, setting_help: str) -> None:
    """``--monitor-setting KEY=VALUE`` (repeatable, described by ``setting_help``), ``--note``
    and ``--keep-workdir``: the options of the scripts whose monitors run for long."""
    ap.add_argument(
        "--monitor-setting", action=KeyValue, default={}, metavar="KEY=VALUE", help=setting_help
    )
    ap.add_argument("--note", default="", help="a sentence for the results (e.g. load)")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the monitors' TOML and logs")


def note_lines(args: argparse.Namespace) -> list[str]:
    """``--note`` as a paragraph of the results, or nothing."""
    return ["", f"Note: {args.note}"] if args.note else []


def broker_label(args: argparse.Namespace) -> str:
    """The Kafka version for the results (``external broker`` with --bootstrap-servers)."""
    return "external broker" if args.bootstrap_servers else kafka_version(args.kafka_jars_dir)


@contextlib.contextmanager
def broker_session(args: argparse.Namespace) -> Iterator[tuple[str, Broker | None]]:
    """(bootstrap servers, our Broker or None): the external broker, or ours, stopped and
    deleted at the end."""
    if args.bootstrap_servers:
        yield args.bootstrap_servers, None
        return
    broker = Broker(args.kafka_port, args.kafka_jars_dir, args.kafka_heap, args.keep_broker_dir)
    try:
        yield broker.start(), broker
    finally:
        broker.stop()


@contextlib.contextmanager
def workdir_session(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temp folder for the monitors' TOML files and logs: kept on failure (its path is
    logged) or with ``keep``, else deleted."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    except BaseException:
        log(f"failed; monitor configs and logs are in {workdir}")
        raise
    if keep:
        log(f"monitor configs and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# /proc: CPU and memory
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


def vm_kib(pid: int, key: str) -> int | None:
    """A field of /proc/<pid>/status in KiB (``VmRSS``, ``VmHWM``), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far by the monitor, the broker, the machine and this script."""

    t: float
    monitor: float | None
    broker: float | None
    machine: float | None
    bench: float


def cpu_mark(monitor_pids: Sequence[int], broker_pid: int | None) -> CpuMark:
    mon = [cpu_seconds(p) for p in monitor_pids]
    return CpuMark(
        time.monotonic(),
        sum(x for x in mon if x is not None) if any(x is not None for x in mon) else None,
        cpu_seconds(broker_pid),
        machine_busy_cores_s(),
        self_cpu_s(),
    )


def cpu_shares(a: CpuMark, b: CpuMark) -> dict[str, float]:
    """Cores used between two marks: monitor, broker, this script, whole machine, others."""
    dt = b.t - a.t
    out: dict[str, float] = {}
    if dt <= 0:
        return out
    for name in ("monitor", "broker", "machine", "bench"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None:
            out[name] = (y - x) / dt
    if "machine" in out:
        out["others"] = max(
            0.0, out["machine"] - sum(out.get(k, 0.0) for k in ("monitor", "broker", "bench"))
        )
    return out


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


# --------------------------------------------------------------------------------------------
# /metrics
# --------------------------------------------------------------------------------------------
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Series = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str, wanted: tuple[str, ...] | None = None) -> Series:
    """Samples of the Prometheus text format by name (only names starting with ``wanted``)."""
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


def metrics_path(names: Iterable[str]) -> str:
    """/metrics asking only for ``names`` (prometheus_client's ``name[]`` filter): a smaller
    response. Collectors that describe no names (the monitor's StateCollector) are skipped."""
    return "/metrics?" + "&".join(f"name[]={n}" for n in names)


def total(s: Series, name: str, **match: str) -> float:
    """Sum of the samples of ``name`` whose labels match (all members of a group summed)."""
    return sum(v for lab, v in s.get(name, []) if all(lab.get(k) == x for k, x in match.items()))


def increase(a: Series, b: Series, name: str, **match: str) -> float:
    """How much the (summed) samples of ``name`` grew from scrape ``a`` to scrape ``b``."""
    return total(b, name, **match) - total(a, name, **match)


def newest(s: Series, name: str, **match: str) -> float | None:
    """Largest sample of ``name`` whose labels match (for timestamps), or None."""
    vals = [v for lab, v in s.get(name, []) if all(lab.get(k) == x for k, x in match.items())]
    return max(vals) if vals else None


def buckets(s: Series, base: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of a histogram (summed over members), by bound."""
    out: dict[float, float] = {}
    for lab, v in s.get(base + "_bucket", []):
        le = float(lab["le"])
        out[le] = out.get(le, 0.0) + v
    return sorted(out.items())


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
    """One scrape of every member, with the CPU and RSS read right after it."""

    t: float  # monotonic, when the responses arrived
    wall: float  # wall clock, midpoint of the requests
    scrape_s: float
    series: Series
    cpu: CpuMark
    rss_mib: float | None = None


# --------------------------------------------------------------------------------------------
# the monitor
# --------------------------------------------------------------------------------------------
def _toml_value(v: str) -> str:
    """A command-line value as TOML: numbers and booleans as they are, anything else quoted."""
    if v in ("true", "false") or re.fullmatch(r"-?\d+(\.\d+)?", v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Monitor:
    """`stream-monitor run --config <toml>` as a subprocess, with a /metrics scraper.

    With ``processes`` > 1 it runs ``run --processes N``: the members serve /metrics on
    consecutive ports, and scrapes, CPU and RSS are summed over the members (and the parent).
    """

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
        processes: int = 1,
        source: Path | None = None,
    ) -> None:
        self.profile = profile
        #: A folder holding another revision's ``stream_monitor`` package to run instead.
        self.source = source
        self.processes = processes
        self.port = free_ports(processes)
        self.bootstrap = bootstrap
        self.cfg_path = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        settings = dict(settings or {})
        # A unique instance id (where the config has one): it names the transactional
        # producer, which must not fence another monitor on a shared broker.
        if "instance_id" in MonitorConfig.model_fields:
            settings.setdefault("instance_id", group)
        # A dotted key (``checkpoint.hmac_key``) is a TOML dotted key: a field of that table.
        self.cfg_path.write_text(
            f'bootstrap_servers = "{bootstrap}"\n'
            f'group_id = "{group}"\n'
            + "".join(f"{k} = {_toml_value(v)}\n" for k, v in settings.items())
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
        spy = self.profile is not None and self.profile.suffix == ".txt"
        if self.profile is not None and not spy:
            exe = [sys.executable, "-m", "cProfile", "-o", str(self.profile), "-m"]
            exe.append("stream_monitor")
        # --bootstrap-servers on the command line as well: some versions of `run` let their
        # default (KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092) override the file's value.
        cmd = [*exe, "--log-level", "INFO", "run", "--config", str(self.cfg_path)]
        cmd += ["--bootstrap-servers", self.bootstrap]
        if self.processes > 1:
            cmd += ["--processes", str(self.processes)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        env = None
        if self.source is not None:  # PYTHONPATH comes before the editable install
            env = {**os.environ, "PYTHONPATH": str(self.source.resolve())}
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env
        )
        if spy:
            # py-spy (installed in the venv by hand) samples the running monitor until it
            # exits and writes collapsed stacks: little overhead, unlike cProfile.
            spy_cmd = [str(VENV_BIN / "py-spy"), "record", "--format", "raw", "--rate", "200"]
            spy_cmd += ["--nonblocking", "--pid", str(self.proc.pid), "-o", str(self.profile)]
            subprocess.Popen(
                spy_cmd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The monitor process and, with ``processes`` > 1, its members."""
        return [self.pid, *children(self.pid)] if self.processes > 1 else [self.pid]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 5.0, member: int = 0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port + member}{path}", timeout=timeout
            ) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return all(self.get("/readyz", 2.0, i)[0] == 200 for i in range(self.processes))

    def wait_ready(self, limit: float) -> float:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"monitor exited during start-up; log:\n{self.tail()}")
            if self.ready():
                return time.monotonic() - self.started_at
            time.sleep(0.2)
        raise RuntimeError(f"monitor not ready within {limit:.0f} s; log:\n{self.tail()}")

    def metrics(self, path: str = "/metrics", timeout: float = 10.0) -> Series | None:
        """One scrape of every member, their samples together, each with a ``member`` label
        (its index); None if one failed."""
        out: Series = {}
        for i in range(self.processes):
            status, text = self.get(path, timeout, i)
            if status != 200:
                return None
            for name, samples in parse_metrics(text).items():
                out.setdefault(name, []).extend(
                    ({**lab, "member": str(i)}, v) for lab, v in samples
                )
        return out

    def scrape(self, path: str, broker_pid: int | None) -> Sample | None:
        """One sample, or None; raises after ``SCRAPE_FAILURE_LIMIT`` s of failures."""
        w0, t0 = time.time(), time.monotonic()
        series = self.metrics(path, 5.0)
        t1, w1 = time.monotonic(), time.time()
        if series is None:
            if self._failing_since is None:
                self._failing_since = t1
            elif t1 - self._failing_since > SCRAPE_FAILURE_LIMIT:
                raise RuntimeError(
                    f"/metrics failing for {SCRAPE_FAILURE_LIMIT:.0f} s; log:\n{self.tail()}"
                )
            return None
        self._failing_since = None
        pids = self.pids()
        return Sample(
            t1, (w0 + w1) / 2, t1 - t0, series, cpu_mark(pids, broker_pid), self.rss_mib()
        )

    def _vm_mib(self, key: str) -> float | None:
        kib = [vm_kib(p, key) for p in self.pids()]
        return sum(k for k in kib if k) / 1024 if any(kib) else None

    def rss_mib(self) -> float | None:
        """VmRSS, summed over the members."""
        return self._vm_mib("VmRSS")

    def peak_rss_mib(self) -> float | None:
        """VmHWM (peak RSS), summed over the members; read it before stopping."""
        return self._vm_mib("VmHWM")

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


def poll(
    mon: Monitor,
    path: str,
    broker_pid: int | None,
    *,
    every: float,
    limit: float,
    done: Callable[[Sample], bool] | None = None,
    running: Callable[[], bool] | None = None,
) -> list[Sample]:
    """Scrape ``mon`` every ``every`` s until ``done(sample)``, until ``running()`` turns
    false or for ``limit`` s at most; RuntimeError (with its log) if the monitor exits."""
    samples: list[Sample] = []
    deadline = time.monotonic() + limit
    tick = time.monotonic()
    while time.monotonic() < deadline and (running is None or running()):
        tick += every
        s = mon.scrape(path, broker_pid)
        if s is not None:
            samples.append(s)
            if done is not None and done(s):
                break
        if not mon.alive():
            raise RuntimeError(f"monitor exited; log:\n{mon.tail()}")
        time.sleep(max(0.0, tick - time.monotonic()))
    return samples


# --------------------------------------------------------------------------------------------
# topics and producing
# --------------------------------------------------------------------------------------------
def model_names(n: int) -> list[str]:
    """``fraud-detector-0, churn-model-1, eta-regressor-2, fraud-detector-3, ...``"""
    return [f"{ARCHETYPES[i % len(ARCHETYPES)]}-{i}" for i in range(n)]


def spread_models(n: int, partitions: int) -> list[str]:
    """``n`` model ids (the archetypes in turn) whose keys fall evenly on the partitions under
    librdkafka's default partitioner (CRC32 of the key modulo the partition count), so that
    every partition carries traffic and state (``model_names(6)`` leaves one of 3 empty)."""
    per = -(-n // partitions)
    counts = [0] * partitions
    out: list[str] = []
    for i in range(100_000):
        name = f"{ARCHETYPES[len(out) % len(ARCHETYPES)]}-{i}"
        p = zlib.crc32(name.encode()) % partitions
        if counts[p] < per:
            counts[p] += 1
            out.append(name)
            if len(out) == n:
                break
    return out


def make_topics(bootstrap: str, run_id: str, phase: str, partitions: int) -> dict[str, str]:
    """Unique co-partitioned input topics (and names for the output topics) of one phase."""
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


#: Producer settings for pre-producing a backlog as fast as one Python producer can.
BULK_PRODUCER = {
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "acks": "1",
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


@dataclass
class ProduceResult:
    handed: int = 0
    predictions: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    lateness: list[float] = field(default_factory=list)  # paced mode: s behind schedule
    first_pred_wall: float = 0.0
    last_pred_wall: float = 0.0

    @property
    def achieved_rate(self) -> float:
        """Predictions/s between the first and the last prediction sent."""
        return (self.predictions - 1) / max(1e-9, self.last_pred_wall - self.first_pred_wall)


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
    """Produce ``records``; paced: each record at its event time (wall clock).

    Stops after ``time_limit`` seconds, counted from the first record's event time when
    paced (records generated ahead start well after the call: the limit is for sending)."""
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
            if not res.handed:
                deadline = time.monotonic() + max(0.0, delay) + time_limit
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


def lead_seconds(records: int) -> float:
    """How far ahead to put the first event time of a paced run whose ``records`` are
    generated after the start is chosen (generation runs at ~40-120k records/s)."""
    return 2.0 + 1.8 * records / 40_000


class PacedProducer:
    """A thread sending ``records`` at their event times (acks=all, lz4, ``linger_ms``);
    ``idempotent``: with an idempotent producer, so that retries across a broker restart
    write no duplicate."""

    def __init__(
        self,
        bootstrap: str,
        records: list[Record],
        pred_topic: str,
        time_limit: float,
        linger_ms: float = 5.0,
        *,
        idempotent: bool = False,
    ) -> None:
        self.stop = threading.Event()
        self.result: ProduceResult | None = None
        conf = {"linger.ms": linger_ms, "acks": "all", "queue.buffering.max.messages": 500_000}
        if idempotent:
            conf["enable.idempotence"] = True

        def run() -> None:
            self.result = produce(
                bootstrap,
                records,
                pred_topic,
                time_limit=time_limit,
                paced=True,
                stop=self.stop,
                conf=conf,
            )

        self.thread = threading.Thread(target=run, name="paced-producer", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def finish(self, limit: float = 5.0) -> ProduceResult:
        """Wait (bounded) for the thread; the result, or RuntimeError if it did not end."""
        self.thread.join(limit)
        if self.result is None:
            self.stop.set()
            raise RuntimeError("paced producer did not finish")
        return self.result


# --------------------------------------------------------------------------------------------
# command line and results
# --------------------------------------------------------------------------------------------
class KeyValue(argparse.Action):
    """A repeatable ``KEY=VALUE`` option gathered into a dict."""

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


def write_results(
    args: argparse.Namespace,
    name: str,
    title: str,
    *,
    machine: str,
    cmd: str,
    total_s: float,
    body: Sequence[str],
    echo: bool = False,
) -> None:
    """Rewrite the script's section of RESULTS.md (unless --no-results): date and machine,
    the command line, then ``body``; ``echo``: print ``body`` first (without its bold
    markers), with or without --no-results."""
    if echo:
        print("\n".join(line.replace("**", "") for line in body), flush=True)
    if args.no_results:
        return
    head = results_head(machine, cmd, total_s)
    update_section(args.results_file, name, title, "\n".join([*head, *body]))
    log(f"updated {args.results_file}")


@dataclass(frozen=True)
class RunRecord:
    """What a long broker run notes at its start for its results: its id and start time, the
    machine (and Kafka version), the command line and stream_monitor's source digest."""

    run_id: str
    t0: float
    machine: str
    cmd: str
    digest: str

    @classmethod
    def begin(cls, script: str, args: argparse.Namespace, argv: Sequence[str] | None) -> RunRecord:
        return cls(
            t0=time.monotonic(),
            run_id=uuid.uuid4().hex[:8],
            machine=machine_info(kafka=broker_label(args)),
            digest=source_digest(),
            cmd=command_line(script, argv),
        )

    def write(self, args: argparse.Namespace, name: str, title: str, md: Sequence[str]) -> None:
        """Print ``md`` and rewrite the section ``name`` of RESULTS.md with it (write_results),
        with a note if stream_monitor's sources changed since the start."""
        write_results(
            args,
            name,
            title,
            machine=self.machine,
            cmd=self.cmd,
            total_s=time.monotonic() - self.t0,
            body=[*md, *sources_changed(self.digest)],
            echo=True,
        )


# --------------------------------------------------------------------------------------------
# in-process runs: TrafficGenerator events through PartitionState
# --------------------------------------------------------------------------------------------
def decoded_events(
    n: int, seed: int, drift_at: int | None = None
) -> list[PredictionEvent | LabelEvent]:
    """``n`` predictions of TrafficGenerator's three models and their labels, decoded."""
    from stream_monitor.events.schema import LabelEvent, PredictionEvent

    out: list[PredictionEvent | LabelEvent] = []
    for rec in TrafficGenerator(seed=seed, drift_at=drift_at).events(n):
        if rec.topic == "predictions":
            out.append(PredictionEvent.model_validate_json(rec.value))
        else:
            out.append(LabelEvent.model_validate_json(rec.value))
    return out


def batches(
    events: Sequence[object], size: int
) -> Iterator[tuple[list[PredictionEvent], list[LabelEvent]]]:
    """``events`` in chunks of ``size``, each as (its predictions, its labels) for
    ``PartitionState.process``; anything else (a DeadLetter) is left out."""
    from stream_monitor.events.schema import LabelEvent, PredictionEvent

    for i in range(0, len(events), size):
        chunk = events[i : i + size]
        yield (
            [e for e in chunk if isinstance(e, PredictionEvent)],
            [e for e in chunk if isinstance(e, LabelEvent)],
        )
