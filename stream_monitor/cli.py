"""Command line: ``stream-monitor run | simulate | alerts | forward | config | profile |
replay``."""

# The only module that configures logging handlers, reads the environment and installs signal
# handlers (kept out of the docstring, which is the --help text).

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from stream_monitor.errors import ConfigError
from stream_monitor.logs import LOG_FORMATS, LOG_LEVELS, configure_logging

if TYPE_CHECKING:
    from stream_monitor.config import MonitorConfig

__all__ = ["DISTRIBUTION", "build_parser", "main", "package_version", "parse_args"]

#: The distribution's name on PyPI (the import package is ``stream_monitor`` and the command
#: ``stream-monitor``; the name ``stream-monitor`` on PyPI is another project's).
DISTRIBUTION = "stream-drift-monitor"

log = logging.getLogger("stream_monitor.cli")


def _bootstrap_default() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def _load_config(args: argparse.Namespace, **overrides: Any) -> MonitorConfig:
    """The command's configuration: defaults < ``--config`` file < ``STREAM_MONITOR_*``
    environment < flags (``overrides`` not None)."""
    from stream_monitor.config import load_config

    return load_config(
        getattr(args, "config", None),
        defaults={"bootstrap_servers": _bootstrap_default()},
        environ=os.environ,
        **overrides,
    )


def _install_stop(stop: Any) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s received, stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_run(args: argparse.Namespace) -> int:
    from stream_monitor.app import Application

    overrides: dict[str, Any] = {
        "bootstrap_servers": args.bootstrap_servers,
        "metrics_port": args.metrics_port,
        "group_id": args.group_id,
        "instance_id": args.instance_id,
        "processing_guarantee": args.processing_guarantee,
    }
    secret = os.environ.get("STREAM_MONITOR_CHECKPOINT_KEY")
    cfg = _load_config(args, **overrides)
    if secret and cfg.checkpoint.hmac_key is None:
        cfg = cfg.model_copy(
            update={"checkpoint": cfg.checkpoint.model_copy(update={"hmac_key": secret})}
        )
        cfg = type(cfg).model_validate(cfg.model_dump())
    if args.processes > 1:
        return _run_members(args, cfg.instance_id or socket.gethostname(), cfg.metrics_port)
    app = Application(cfg)
    _install_stop(app.stop)
    app.run()
    return 0


def _member_argv(args: argparse.Namespace, instance_id: str, metrics_port: int) -> list[str]:
    """The command line of one member: this ``run`` with one process, its own id and port.

    >>> a = build_parser().parse_args(["run", "--config", "m.toml", "--processes", "2"])
    >>> _member_argv(a, "h-1", 9109)[3:]  # doctest: +NORMALIZE_WHITESPACE
    ['--log-level', 'INFO', '--log-format', 'text', 'run', '--instance-id', 'h-1',
     '--metrics-port', '9109', '--config', 'm.toml']
    """
    argv = [sys.executable, "-m", "stream_monitor", "--log-level", args.log_level]
    argv += ["--log-format", args.log_format, "run"]
    argv += ["--instance-id", instance_id, "--metrics-port", str(metrics_port)]
    for flag, value in (
        ("--config", args.config),
        ("--bootstrap-servers", args.bootstrap_servers),
        ("--group-id", args.group_id),
        ("--processing-guarantee", args.processing_guarantee),
    ):
        if value is not None:
            argv += [flag, value]
    return argv


def _run_members(args: argparse.Namespace, base_id: str, base_port: int) -> int:
    """``run --processes N``: N child processes, each an ordinary member of the consumer group.

    Member ``i`` runs as instance ``<base_id>-<i>`` (its own transactional id under
    exactly-once) with metrics on ``base_port + i`` (each on an ephemeral port when the base
    is 0). SIGTERM and SIGINT are forwarded to the members; the parent waits for all of them.
    A member that fails stops the others. Exit status 1 if any member failed, else 0.
    """
    n = args.processes
    if base_port and base_port + n - 1 > 65535:
        raise ConfigError(f"metrics ports {base_port}..{base_port + n - 1} exceed 65535")
    members: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def stop(signum: int) -> None:
        stopping.append(signum)
        for m in members:
            if m.poll() is None:
                m.send_signal(signum)

    def forward(signum: int, _frame: Any) -> None:
        log.info("signal %s received, stopping the members", signal.Signals(signum).name)
        stop(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        for i in range(n):
            if stopping:
                break
            port = base_port + i if base_port else 0
            members.append(subprocess.Popen(_member_argv(args, f"{base_id}-{i}", port)))
            log.info("member %d started: instance=%s-%d pid=%d", i, base_id, i, members[-1].pid)
    except BaseException:
        stop(signal.SIGTERM)  # no orphans when a member cannot be started
        raise
    failed = False
    running = dict(enumerate(members))
    while running:
        for i, m in list(running.items()):
            rc = m.poll()
            if rc is None:
                continue
            del running[i]
            # A member stopped by the forwarded signal before it installed its handler counts
            # as stopped, not failed.
            ok = rc == 0 or (bool(stopping) and -rc in (signal.SIGTERM, signal.SIGINT))
            log.log(logging.INFO if ok else logging.ERROR, "member %d exited with %d", i, rc)
            if not ok:
                failed = True
                if not stopping:  # fail as a whole: a supervisor restarts every member
                    stop(signal.SIGTERM)
        time.sleep(0.2)
    return 1 if failed else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from stream_monitor.kafka.clients import ensure_input_topics, with_defaults
    from stream_monitor.simulate import TrafficGenerator, run_simulation

    cfg = _load_config(args, bootstrap_servers=args.bootstrap_servers)
    t = cfg.topics
    ensure_input_topics(cfg, partitions=args.partitions, predictions=t.predictions, labels=t.labels)
    defaults = {
        "linger.ms": 20,
        "acks": "all",
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
    }
    producer = Producer(with_defaults(cfg, defaults, cfg.producer_overrides))
    gen = TrafficGenerator(
        seed=args.seed,
        drift_at=args.drift_at,
        rate=args.rate or 1000.0,
        start_time=time.time(),
        prediction_topic=t.predictions,
        label_topic=t.labels,
    )
    stop = threading.Event()
    _install_stop(stop.set)
    log.info("simulating events=%d rate=%s drift_at=%s", args.events, args.rate, args.drift_at)

    def progress(n: int) -> None:
        if n and n % max(1, args.events // 20) == 0:
            marker = " (drift injected)" if args.drift_at is not None and n >= args.drift_at else ""
            log.info("produced predictions=%d%s", n, marker)

    n = run_simulation(producer, gen, args.events, rate=args.rate, on_progress=progress, stop=stop)
    log.info("done records=%d", n)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective configuration (file, environment and flags merged) as JSON, every
    secret masked as ``**********``."""
    cfg = _load_config(args, bootstrap_servers=args.bootstrap_servers)
    print(cfg.model_dump_json(indent=2), flush=True)
    return 0


def _format_alert(args: argparse.Namespace, value: bytes) -> str:
    """One alert record as the ``alerts`` sub-command prints it (``--format``)."""
    if args.format == "json":
        return value.decode()
    if args.format == "text":
        a = orjson.loads(value)
        mark = {"firing": "FIRING  ", "updated": "UPDATED "}.get(a["status"], "RESOLVED")
        stamp = time.strftime("%H:%M:%S", time.localtime(a.get("published_at") or time.time()))
        return f"{stamp} {mark} [{a['severity']}] {a['dedup_key']}: {a['summary']}"
    from stream_monitor.alerts.routing import to_alertmanager, to_pagerduty
    from stream_monitor.events.schema import AlertEvent

    alert = AlertEvent.model_validate(orjson.loads(value))
    if args.format == "pagerduty":
        body = to_pagerduty(alert, args.routing_key)
    else:
        body = to_alertmanager(alert)
    return orjson.dumps(body).decode()


def cmd_alerts(args: argparse.Namespace) -> int:
    """Print alert events as they arrive: one line each (``--format text``), the raw JSON, or
    the PagerDuty Events v2 / Alertmanager body each maps to (docs/alerts.md)."""
    from confluent_kafka import Consumer, KafkaError

    from stream_monitor.kafka.clients import with_defaults

    if args.json:
        args.format = "json"
    if args.format == "pagerduty" and not args.routing_key:
        print(
            "stream-monitor alerts: error: --format pagerduty needs --routing-key", file=sys.stderr
        )
        return 2
    cfg = _load_config(args, bootstrap_servers=args.bootstrap_servers)
    conf = with_defaults(cfg, {}, cfg.consumer_overrides)
    conf.update(
        {
            "group.id": f"stream-monitor-alerts-tail-{os.getpid()}",
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer = Consumer(conf)
    stop = threading.Event()
    _install_stop(stop.set)
    consumer.subscribe([args.topic or cfg.topics.alerts])
    try:
        while not stop.is_set():
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err, value = msg.error(), msg.value()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error=%s", err)
                continue
            if value is None:
                continue
            try:
                line = _format_alert(args, value)
            except (ValueError, KeyError, TypeError) as exc:  # not an alert event: skip it
                log.warning("skipping a record that is not an alert event: %s", exc)
                continue
            print(line, flush=True)
    finally:
        consumer.close()
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    """Post alert events to Alertmanager or PagerDuty (stream_monitor/alerts/forward.py)."""
    from stream_monitor.alerts.forward import Forwarder
    from stream_monitor.alerts.http_sinks import sinks_from_args

    sinks = sinks_from_args(args)  # a missing --url / --routing-key: ConfigError, exit status 2
    cfg = _load_config(args, bootstrap_servers=args.bootstrap_servers)
    forwarder = Forwarder(
        cfg,
        sinks,
        topic=args.topic,
        group_id=args.group_id,
        from_beginning=args.from_beginning,
    )
    _install_stop(forwarder.stop)
    forwarder.run()
    return 0


def _add_http_sink_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The flags :func:`stream_monitor.alerts.http_sinks.sinks_from_args` reads."""
    g = p.add_argument_group("alert destination (stream_monitor/alerts/http_sinks.py)")
    g.add_argument("--to", choices=["alertmanager", "pagerduty"], required=required)
    g.add_argument(
        "--url",
        default=None,
        help="Alertmanager base URL (http://host:9093); for PagerDuty default "
        "https://events.pagerduty.com/v2/enqueue",
    )
    g.add_argument(
        "--routing-key",
        default=os.environ.get("STREAM_MONITOR_PAGERDUTY_ROUTING_KEY"),
        help="PagerDuty integration key; default $STREAM_MONITOR_PAGERDUTY_ROUTING_KEY",
    )
    g.add_argument("--source", default="stream-monitor", help="PagerDuty payload.source")
    g.add_argument("--client-url", default=None, help="PagerDuty client_url")
    g.add_argument("--generator-url", default=None, help="Alertmanager generatorURL")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    g.add_argument("--retries", type=int, default=8, help="retries on 429/5xx/network errors")
    g.add_argument(
        "--resend-seconds",
        type=float,
        default=60.0,
        help="Alertmanager: re-post firing alerts this often (keep below its resolve_timeout)",
    )


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _share(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {x:g}")
    return x


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


class RowProgress:
    """``profile``'s progress on stderr: a line every ``every_rows`` rows, and at most every
    ``every_seconds`` in between (checked each 4,096 rows), so a large input shows it is
    moving and the output stays bounded; a final line only when one was printed before.

    >>> import io
    >>> out = io.StringIO()
    >>> p = RowProgress(out, every_rows=2, every_seconds=1e9)
    >>> sum(1 for _ in p.count(iter(range(5))))
    5
    >>> p.finish()
    >>> print(out.getvalue(), end="")  # doctest: +ELLIPSIS
    profile: 2 rows read (... rows/s)
    profile: 4 rows read (... rows/s)
    profile: 5 rows read in ... s
    """

    def __init__(
        self,
        stream: Any,
        *,
        every_rows: int = 1_000_000,
        every_seconds: float = 10.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.stream = stream
        self.every_rows = every_rows
        self.every_seconds = every_seconds
        self.clock = clock
        self.rows = 0
        self.lines = 0
        self.started = self._last = clock()

    def count(self, rows: Iterator[Any]) -> Iterator[Any]:
        every = self.every_rows
        next_line = every if every > 0 else -1
        for row in rows:
            yield row
            self.rows += 1
            n = self.rows
            if n == next_line:
                self._line()
                next_line += every
            elif every > 0 and n & 4095 == 0 and self.clock() - self._last >= self.every_seconds:
                self._line()

    def _line(self) -> None:
        now = self.clock()
        rate = self.rows / max(now - self.started, 1e-9)
        self.stream.write(f"profile: {self.rows:,} rows read ({rate:,.0f} rows/s)\n")
        self.stream.flush()
        self._last = now
        self.lines += 1

    def finish(self) -> None:
        if self.lines:
            took = self.clock() - self.started
            self.stream.write(f"profile: {self.rows:,} rows read in {took:,.1f} s\n")
            self.stream.flush()


def cmd_profile(args: argparse.Namespace) -> int:
    """Profile a training set into a reference profile file; one summary line per feature."""
    from stream_monitor.errors import ConfigError
    from stream_monitor.reference import NumericProfile, build_profile, infer_format, read_rows

    out = args.output
    if out is None:
        stem = args.model_id + (f"-{args.model_version}" if args.model_version else "")
        out = stem.replace("/", "_").replace(os.sep, "_") + ".profile.json"
    try:
        # profile_file's steps, with the rows counted on their way to the profile
        fmt = args.format or infer_format(args.input)
        progress = RowProgress(sys.stderr, every_rows=args.progress_rows)
        prof = build_profile(
            progress.count(read_rows(args.input, fmt)),
            source=os.path.basename(args.input),
            text_cells=fmt == "csv",
            model_id=args.model_id,
            model_version=args.model_version,
            n_bins=args.n_bins,
            top_k=args.top_k,
            score_column=args.score_column,
            label_column=args.label_column,
            exclude=args.exclude,
            categorical=args.categorical,
            features=args.features,
            sample_size=args.sample_size,
        )
        progress.finish()
        prof.write(out)
    except (ConfigError, OSError) as exc:
        print(f"stream-monitor profile: error: {exc}", file=sys.stderr)
        return 2
    width = max((len(n) for n in prof.features), default=0)
    for name, f in prof.features.items():
        rate = f.missing / f.n if f.n else 0.0
        if isinstance(f, NumericProfile):
            shape = f"bins={len(f.counts)}"
        else:
            distinct = f"{len(f.known)}{'' if f.known_complete else '+'}"
            shape = f"categories={len(f.categories)}+other distinct={distinct}"
        print(
            f"{name:<{width}}  {f.type:<11}  n={f.n} missing={rate:.1%} "
            f"type_errors={f.type_errors} {shape}"
        )
    print(f"wrote {out} ({prof.n_rows} rows, {len(prof.features)} features)")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Backtest: replay recorded events through the pipeline; alerts.jsonl, report.html."""
    from confluent_kafka import KafkaException

    from stream_monitor.alerts.http_sinks import sinks_from_args
    from stream_monitor.backtest import (
        Progress,
        ReplayError,
        format_summary,
        parse_position,
        run_replay,
    )

    if not args.from_kafka and (args.start is not None or args.end is not None):
        raise ConfigError("--start and --end select a range of the topics: use --from-kafka")
    if args.from_kafka and args.labels is not None:
        raise ConfigError("--labels goes with --predictions; --from-kafka reads both topics")
    if args.from_kafka and args.partitions is not None:
        raise ConfigError("--partitions is for file replays; a topic keeps its own partitions")
    # The configuration is read as `run` reads it (same file, same defaults).
    cfg = _load_config(args, bootstrap_servers=args.bootstrap_servers)
    start = parse_position(args.start) if args.start is not None else None
    end = parse_position(args.end) if args.end is not None else None
    # --to: the backtest's alerts also go to Alertmanager or PagerDuty (a staging one)
    sinks = sinks_from_args(args) if args.to is not None else []
    progress = Progress(sys.stderr, enabled=True if args.progress else None)
    try:
        result = run_replay(
            cfg,
            args.out,
            predictions=args.predictions,
            labels=args.labels,
            from_kafka=args.from_kafka,
            start=start,
            end=end,
            batch_size=args.batch_size,
            partitions=args.partitions,
            partitioner=args.partitioner,
            progress=progress,
            config_path=args.config,
            alert_sinks=sinks,
        )
    except (ReplayError, KafkaException) as exc:
        msg = " ".join(str(exc).split())
        print(f"stream-monitor replay: error: {msg}", file=sys.stderr)
        return 2
    print(format_summary(result), flush=True)
    share = result.invalid_share
    if share > args.max_invalid_share:
        print(
            f"stream-monitor replay: error: {share:.1%} of the records read were invalid, "
            f"more than --max-invalid-share {args.max_invalid_share:g}: see the hints above and "
            f"{result.replay.dead_letters.written:,} records in "
            f"{os.path.join(args.out, 'dead_letters.jsonl')}",
            file=sys.stderr,
        )
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stream-monitor",
        description="Streaming drift monitor for ML models in production: Kafka in, "
        "Prometheus metrics and alert events out.",
        epilog="Global options may also follow the command. Example: stream-monitor run "
        "--config monitor.toml --log-format json",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    _add_global_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="monitor the predictions and labels topics")
    run.add_argument(
        "--bootstrap-servers",
        help="overrides the config file; default $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    run.add_argument("--config", help="TOML configuration file")
    run.add_argument("--metrics-port", type=int, default=None, help="default 9108")
    run.add_argument("--group-id", default=None, help="consumer group (default stream-monitor)")
    run.add_argument(
        "--instance-id", default=None, help="stable id of this instance (default: host name)"
    )
    run.add_argument(
        "--processing-guarantee", choices=["exactly_once", "at_least_once"], default=None
    )
    run.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="members of the consumer group to run on this host, as child processes: member "
        "i is instance <instance-id>-i with metrics on <metrics-port>+i (default 1: this process)",
    )
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="produce synthetic model traffic with a drift")
    sim.add_argument("--config", help="TOML configuration file (bootstrap, [kafka], input topics)")
    sim.add_argument("--bootstrap-servers", default=None, help="overrides the config file")
    sim.add_argument(
        "--rate", type=float, default=500.0, help="predictions per second (0 = as fast as possible)"
    )
    sim.add_argument("--events", type=int, default=60_000, help="predictions to produce")
    sim.add_argument(
        "--drift-at",
        type=int,
        default=20_000,
        help="prediction index where drift starts (-1 = never)",
    )
    sim.add_argument("--partitions", type=int, default=3)
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=cmd_simulate)

    al = sub.add_parser("alerts", help="print alert events as they arrive")
    al.add_argument("--config", help="TOML configuration file (bootstrap, [kafka], topics)")
    al.add_argument("--bootstrap-servers", default=None, help="overrides the config file")
    al.add_argument("--topic", default=None, help="default: the config's topics.alerts")
    al.add_argument("--from-beginning", action="store_true")
    al.add_argument("--json", action="store_true", help="same as --format json")
    al.add_argument(
        "--format",
        choices=["text", "json", "pagerduty", "alertmanager"],
        default="text",
        help="text lines (default), the raw events, or the body posted to PagerDuty Events v2 "
        "/ Alertmanager (docs/alerts.md)",
    )
    al.add_argument(
        "--routing-key",
        default=os.environ.get("STREAM_MONITOR_PAGERDUTY_ROUTING_KEY"),
        help="for --format pagerduty; default $STREAM_MONITOR_PAGERDUTY_ROUTING_KEY",
    )
    al.set_defaults(func=cmd_alerts)

    fw = sub.add_parser("forward", help="post alert events to Alertmanager or PagerDuty")
    fw.add_argument("--config", help="TOML configuration file (bootstrap, security, topics)")
    fw.add_argument("--bootstrap-servers", default=None, help="overrides the config file")
    fw.add_argument("--topic", default=None, help="default: the config's topics.alerts")
    fw.add_argument("--group-id", default="stream-monitor-forward")
    fw.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new group starts at the oldest retained alert (default: new alerts only)",
    )
    _add_http_sink_arguments(fw)
    fw.set_defaults(func=cmd_forward)

    co = sub.add_parser(
        "config",
        help="print the effective configuration (file < STREAM_MONITOR_* environment < "
        "flags), secrets masked",
    )
    co.add_argument("--config", help="TOML configuration file")
    co.add_argument("--bootstrap-servers", default=None, help="overrides the config file")
    co.set_defaults(func=cmd_config)

    pr = sub.add_parser("profile", help="build a reference profile from a training set")
    pr.add_argument("input", help="CSV, JSON Lines or Parquet file (.gz for CSV/JSON Lines)")
    pr.add_argument("--model-id", required=True)
    pr.add_argument("--model-version", default=None)
    pr.add_argument("--format", choices=["csv", "jsonl", "parquet"], default=None)
    pr.add_argument("--n-bins", type=_positive_int, default=10)
    pr.add_argument("--top-k", type=_positive_int, default=20, help="categories kept")
    pr.add_argument("--score-column", default=None, help="profiled as prediction.score")
    pr.add_argument("--label-column", default=None, help="profiled as prediction.label")
    pr.add_argument("--exclude", type=_names, default=[], help="columns to skip: a,b")
    pr.add_argument("--categorical", type=_names, default=[], help="force categorical: a,b")
    pr.add_argument("--features", type=_names, default=None, help="profile only these: a,b")
    pr.add_argument("--sample-size", type=_positive_int, default=1_000_000)
    pr.add_argument(
        "-o", "--output", default=None, help="default <model_id>[-<version>].profile.json"
    )
    pr.add_argument(
        "--progress-rows",
        type=int,
        default=1_000_000,
        help="a progress line on stderr every this many rows (and at most every 10 s in "
        "between); 0: none",
    )
    pr.set_defaults(func=cmd_profile)

    rp = sub.add_parser(
        "replay",
        help="backtest a configuration on recorded events (files or a topic range)",
        description="Run the monitoring pipeline over recorded events as fast as the CPU "
        "allows; write the alert timeline (alerts.jsonl) and an HTML report to --out, and "
        "print a summary. See docs/backtest.md.",
    )
    rp.add_argument("--config", help="TOML configuration file (as for run; optional: the defaults)")
    src = rp.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--predictions", help="JSON Lines file of prediction record values (.gz allowed)"
    )
    src.add_argument(
        "--from-kafka",
        action="store_true",
        help="read the config's input topics (assigned consumer, no group, no commits)",
    )
    rp.add_argument("--labels", help="JSON Lines file of label record values (.gz allowed)")
    rp.add_argument(
        "--start", help="with --from-kafka: an offset or an RFC 3339 time (default: earliest)"
    )
    rp.add_argument(
        "--end",
        help="with --from-kafka: an offset or an RFC 3339 time, exclusive (default: the end "
        "offsets when the replay starts)",
    )
    rp.add_argument("--out", required=True, help="output folder (created)")
    _add_http_sink_arguments(rp, required=False)  # optional: also post the backtest's alerts
    rp.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="records per batch (default: 10000 from files; from Kafka as the live monitor "
        "drains a backlog: the config's batch_size, topped up to batch_max_records)",
    )
    rp.add_argument(
        "--partitions",
        type=_positive_int,
        default=None,
        help="file replay: one state per partition of the key model_id (default: one state)",
    )
    rp.add_argument(
        "--partitioner",
        choices=["murmur2", "consistent"],
        default="murmur2",
        help="with --partitions: murmur2 (Java client default) or consistent (librdkafka's "
        "default consistent_random, CRC-32)",
    )
    rp.add_argument(
        "--bootstrap-servers", default=None, help="overrides the config file (--from-kafka)"
    )
    rp.add_argument(
        "--max-invalid-share",
        type=_share,
        default=0.5,
        help="exit with status 1 when more than this share of the records read is invalid "
        "(default 0.5; 1: never); they are in <out>/dead_letters.jsonl",
    )
    rp.add_argument(
        "--progress",
        action="store_true",
        help="progress on stderr about once a second even when it is not a terminal",
    )
    rp.set_defaults(func=cmd_replay)
    for name, command in sub.choices.items():
        # Global options are accepted after the command too (without overriding those given
        # before it when absent); each command's help ends with an example.
        _add_global_options(command, suppress=True)
        command.epilog = _EXAMPLES.get(name)
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


#: The example at the end of each command's --help.
_EXAMPLES = {
    "run": "example: stream-monitor run --config monitor.toml --log-format json",
    "simulate": "example: stream-monitor simulate --events 60000 --drift-at 20000 --rate 500",
    "alerts": "example: stream-monitor alerts --from-beginning --format text",
    "forward": "example: stream-monitor forward --config monitor.toml --to alertmanager "
    "--url http://alertmanager:9093",
    "config": "example: STREAM_MONITOR_KAFKA__SASL_USERNAME=monitor stream-monitor config "
    "--config monitor.toml",
    "profile": "example: stream-monitor profile train.csv --model-id fraud --model-version v7 "
    "-o fraud-v7.profile.json",
    "replay": "example: stream-monitor replay --config monitor.toml --predictions "
    "predictions.jsonl --labels labels.jsonl --out backtest/",
}


def _log_level(text: str) -> str:
    """``--log-level``: a level name of the logging module, in any case."""
    level = text.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid log level {text!r} (choose from {', '.join(LOG_LEVELS)})"
        )
    return level


def _log_format(text: str) -> str:
    """``--log-format`` (its environment default is checked too)."""
    fmt = text.strip().lower()
    if fmt not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(
            f"invalid log format {text!r} (choose from {', '.join(LOG_FORMATS)})"
        )
    return fmt


def _add_global_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``--log-level``, ``--log-format`` and ``--config``, on the main parser (with their
    defaults) or on a command's (``suppress``: no default, so that an option given before
    the command stays when it is not repeated after it)."""
    g = p.add_argument_group("global options")

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g.add_argument(
        "--log-level",
        type=_log_level,
        default=default(os.environ.get("STREAM_MONITOR_LOG_LEVEL", "INFO")),
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default $STREAM_MONITOR_LOG_LEVEL or INFO)",
    )
    g.add_argument(
        "--log-format",
        type=_log_format,
        choices=LOG_FORMATS,
        default=default(os.environ.get("STREAM_MONITOR_LOG_FORMAT", "text")),
        help="text lines, or one JSON object per line (default $STREAM_MONITOR_LOG_FORMAT or text)",
    )
    if not suppress:
        g.add_argument(
            "--config",
            dest="global_config",
            metavar="CONFIG",
            default=None,
            help="TOML configuration file, for the commands that read one (also accepted "
            "after the command)",
        )


def package_version() -> str:
    """The installed distribution's version (``stream_monitor.__version__`` from a source
    tree that is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from stream_monitor import __version__

        return __version__


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; global options may come before or after the command
    (usage errors exit with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = args.__dict__.pop("global_config", None)
    if given is not None:  # --config before the command
        if not hasattr(args, "config"):
            parser.error(f"argument --config: {args.command} reads no configuration file")
        if args.config is not None and args.config != given:
            parser.error("argument --config: given twice, with different files")
        args.config = given
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if getattr(args, "rate", None) == 0:
        args.rate = None
    if getattr(args, "drift_at", None) is not None and args.drift_at < 0:
        args.drift_at = None
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValidationError, OSError, tomllib.TOMLDecodeError) as exc:
        # Bad configuration is the operator's to fix: one clear line, no traceback.
        msg = " ".join(str(exc).split())
        print(f"stream-monitor {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
