"""The real scrape path: Kafka, the monitor process, Prometheus, the alerting rules and the
Grafana dashboard's queries, end to end.

A real ``stream-monitor run`` process consumes synthetic traffic (stream_monitor/simulate.py)
from the real broker; the real Prometheus server (Debian's ``prometheus``, installed by
deploy/local/setup.sh) scrapes it every second and evaluates deploy/prometheus/
stream-monitor.rules.yml every second. Traffic comes in two phases: a stable one, after which
no model alert may be pending or firing, then the injected drift (one shifted numeric feature
and a drop of accuracy per model), with a canary version, a schema change, wrongly typed values
and malformed records on top. Then

* the alerting rules reach ``firing`` for the drift: exactly the shifted feature of every
  model, the model outputs, the performance drop, the concept drift, the data-quality incident;
* every query of deploy/grafana/stream-monitor.json (panel targets, annotations, template
  variables), with its variables replaced by values of this run, parses and returns data through
  the Prometheus HTTP API, except the targets listed in ``NO_DATA_HERE`` with the reason: those
  must return nothing, and their metric names must be declared by the monitor's /metrics.

The rules' ``for:`` durations (1 minute to 1 hour) are rewritten to 1 s in a temporary copy of
the rules file so that the test takes seconds; nothing else of the rules changes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_monitor.kafka.clients import ensure_input_topics
from stream_monitor.simulate import DRIFTED_FEATURE, TrafficGenerator, bad_records

from ..unit.test_grafana_dashboard import (
    RULES,
    data_panels,
    load_dashboard,
    metric_names,
    queries,
    substitute,
    variable_selectors,
)
from .kafka_utils import produce_all, scrape

pytestmark = pytest.mark.integration

MODELS = ("fraud-detector", "churn-model", "eta-regressor")
PREDICTIONS = 12_000  # over the three models, about 4,000 each
DRIFT_AT = 6_000
CANARY = "3.3.0-canary"
JOB = "stream-monitor"
#: Rewritten ``for:`` of every alerting rule (see the module docstring).
FOR = "1s"
#: Values for Grafana's built-in interval variables (``$__range`` is the test's span).
BUILTINS = {"__rate_interval": "30s", "__interval": "1s"}

#: Panel targets (by panel title and refId) whose series cannot exist in this scenario.
NO_DATA_HERE = {
    ("Checkpoints / s", "B"): "stream_monitor_checkpoint_failures_total{reason} has a series "
    "only after a checkpoint failed (a broker not acknowledging, or a snapshot over 64 MiB)",
    ("Kafka client errors / s", "B"): "stream_monitor_delivery_failures_total{topic} has a "
    "series only after a produce attempt failed and was retried",
}
#: Alerts the injected drift must fire, and the labels that tell which series fired.
DRIFT_ALERTS: dict[str, tuple[str, str]] = {
    "StreamMonitorFeatureDrift": ("model_id", "feature"),
    "StreamMonitorPredictionDrift": ("model_id", "feature"),
    "StreamMonitorPerformanceBelowBaseline": ("model_id", "metric"),
    "StreamMonitorConceptDrift": ("model_id", "metric"),
    "StreamMonitorDataQuality": ("model_id", "feature"),
}
#: Alerts on the models' signals (the groups other than stream-monitor-health).
MODEL_ALERTS = {*DRIFT_ALERTS, "StreamMonitorModelDriftScoreHigh", "StreamMonitorLateEventsHigh"}


# ------------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _poll(
    cond: Callable[[], Any],
    timeout: float,
    what: str,
    alive: Callable[[], None] = lambda: None,
    interval: float = 0.5,
) -> Any:
    """Call ``cond`` until it returns something truthy; fail after ``timeout`` seconds, or as
    soon as ``alive`` raises (a process of the stack exited)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        alive()
        try:
            value = cond()
        except (OSError, ValueError, KeyError) as exc:  # not up yet, or not scraped yet
            last_error, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last_error})")


class PromAPI:
    """The Prometheus HTTP API (``/api/v1``)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            body = urllib.request.urlopen(url, timeout=10).read()
        except urllib.error.HTTPError as exc:  # 400 bad_data, 422 execution error
            body = exc.read()
        data = json.loads(body)
        if data.get("status") != "success":
            raise QueryError(f"{path} {params}: {data.get('errorType')}: {data.get('error')}")
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query_range", query=expr, start=start, end=end, step="1s")
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.get("/api/v1/alerts")["alerts"]
        return alerts

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else math.nan


class QueryError(Exception):
    """Prometheus refused a query (it does not parse, or cannot be evaluated)."""


def _finite(result: list[dict[str, Any]]) -> bool:
    """True if a vector or matrix result holds at least one finite value."""
    for series in result:
        points = series.get("values") or [series["value"]]
        if any(math.isfinite(float(v)) for _, v in points):
            return True
    return False


@dataclass
class Stack:
    """The running monitor and Prometheus."""

    api: PromAPI
    port: int  # the monitor's metrics port
    started: float  # wall-clock time before either started
    procs: dict[str, tuple[subprocess.Popen[str], Path]]  # name -> process, log file

    def alive(self) -> None:
        """Raise with the log's tail if a process of the stack has exited."""
        for name, (proc, log) in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{_tail(log)}")


def _rules_copy(tmp: Path) -> Path:
    """deploy/prometheus/stream-monitor.rules.yml with every ``for:`` set to ``FOR``."""
    text = RULES.read_text()
    new, n = re.subn(r"(?m)^([ \t]+for:[ \t]*)\S+[ \t]*$", rf"\g<1>{FOR}", text)
    assert n == len(re.findall(r"(?m)^\s*- alert:", text)), "every alert has one for:"
    assert re.sub(r"(?m)^(\s+for:).*$", r"\1", new) == re.sub(r"(?m)^(\s+for:).*$", r"\1", text)
    path = tmp / "stream-monitor.rules.yml"
    path.write_text(new)
    return path


def _traffic(
    t: dict[str, str],
) -> tuple[list[tuple[str, bytes | None, bytes]], list[tuple[str, bytes | None, bytes]]]:
    """The two phases of records ``(topic, key, value)``: stable traffic, then the drift.

    On top of the generator's traffic: every fourth prediction of fraud-detector comes from a
    canary version (both phases); after the drift, fraud-detector's events carry a field its
    reference never saw (schema drift) and a fifth of its ``customer_age`` values arrive as
    strings (type errors); malformed records of both topics go to the dead-letter topic.
    """
    gen = TrafficGenerator(
        seed=23,
        drift_at=DRIFT_AT,
        models=MODELS,
        label_rate=1.0,
        prediction_topic=t["predictions"],
        label_topic=t["labels"],
    )
    before: list[tuple[str, bytes | None, bytes]] = []
    after: list[tuple[str, bytes | None, bytes]] = []
    seen = fraud = 0
    for r in gen.events(PREDICTIONS):
        value = r.value
        if r.topic == t["predictions"]:
            seen += 1
            ev = orjson.loads(value)
            if ev["model_id"] == "fraud-detector":
                fraud += 1
                if fraud % 4 == 0:
                    ev["model_version"] = CANARY
                if seen > DRIFT_AT:
                    ev["features"]["coupon"] = "spring"
                    if fraud % 5 == 0 and ev["features"]["customer_age"] is not None:
                        ev["features"]["customer_age"] = str(ev["features"]["customer_age"])
                value = orjson.dumps(ev)
        (before if seen <= DRIFT_AT else after).append((r.topic, r.key, value))
    for topic in ("predictions", "labels"):
        after += [(t[topic], k, v) for k, v, _ in bad_records(t[topic])]
    return before, after


def _monitor_config(path: Path, bootstrap: str, t: dict[str, str], port: int) -> None:
    path.write_text(
        f'bootstrap_servers = "{bootstrap}"\n'
        f'group_id = "{t["group"]}"\n'
        'metrics_host = "127.0.0.1"\n'
        f"metrics_port = {port}\n"
        "[topics]\n"
        + "".join(f'{k} = "{t[k]}"\n' for k in ("predictions", "labels", "alerts", "dead_letter"))
        + """
[checkpoint]
interval_seconds = 1.0
[drift.reference]
size = 500
[drift.window]
size = 500
[drift.multivariate]
enabled = true
reference_sample = 128
window_sample = 64
permutations = 20
p_value = 0.05
[performance]
baseline_windows = 2
[performance.window]
size = 500
[labels]
baseline_size = 200
[segments]
keys = ["region"]
max_values = 2
by_version = true
"""
    )


def _prometheus_config(path: Path, rules: Path, target_port: int) -> None:
    path.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        f"rule_files:\n  - {json.dumps(str(rules))}\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    static_configs:\n"
        f'      - targets: ["127.0.0.1:{target_port}"]\n'
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def prometheus_exe() -> str:
    exe = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if exe is None:
        pytest.fail(
            "prometheus is not installed: run deploy/local/setup.sh "
            "(it installs Debian's prometheus package)",
            pytrace=False,
        )
    return exe


@pytest.fixture
def stack(
    kafka_bootstrap: str, topic_names: dict[str, str], tmp_path: Path, prometheus_exe: str
) -> Iterator[Stack]:
    """The monitor process and a Prometheus scraping it."""
    t = topic_names
    ensure_input_topics(
        kafka_bootstrap, partitions=1, predictions=t["predictions"], labels=t["labels"]
    )
    mport, pport = _free_port(), _free_port()
    cfg = tmp_path / "monitor.toml"
    _monitor_config(cfg, kafka_bootstrap, t, mport)
    prom_cfg = tmp_path / "prometheus.yml"
    _prometheus_config(prom_cfg, _rules_copy(tmp_path), mport)
    mlog, plog = tmp_path / "monitor.log", tmp_path / "prometheus.log"
    started = time.time()
    with mlog.open("w") as mout, plog.open("w") as pout:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "stream_monitor", "run", "--config", str(cfg)],
            stdout=mout,
            stderr=subprocess.STDOUT,
            text=True,
        )
        prom = subprocess.Popen(
            [
                prometheus_exe,
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{pport}",
                "--log.level=warn",
            ],
            stdout=pout,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stack = Stack(
            PromAPI(pport),
            mport,
            started,
            {"the monitor": (monitor, mlog), "prometheus": (prom, plog)},
        )
        try:
            _poll(
                lambda: stack.api.query(f'up{{job="{JOB}"}} == 1'),
                60,
                "Prometheus scraping the monitor",
                stack.alive,
            )
            yield stack
        finally:
            _stop(prom)
            _stop(monitor)
    assert monitor.returncode == 0, _tail(mlog)


# --------------------------------------------------------------------------------- test


def _consumed(port: int) -> float:
    return sum(
        v for (name, _), v in scrape(port).items() if name == "stream_monitor_events_consumed_total"
    )


def _declared(port: int) -> set[str]:
    """Sample names the monitor's /metrics declares (``# TYPE`` lines), with or without samples:
    a labelled counter declares its family before its first increment."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    names = set()
    for family, kind in re.findall(r"(?m)^# TYPE (\S+) (\S+)$", body):
        suffixes = {"counter": ("", "_total"), "histogram": ("_bucket", "_count", "_sum")}
        base = family.removesuffix("_total") if kind == "counter" else family
        names |= {base + x for x in suffixes.get(kind, ("",))}
    return names


def _wait_for_rules_after(stack: Stack, n: int) -> None:
    """Wait until the monitor consumed ``n`` records, Prometheus scraped its state after that,
    and every rule group was evaluated (twice, so ``for: 1s`` has elapsed) on that scrape."""
    api, port = stack.api, stack.port
    _poll(lambda: _consumed(port) == n, 120, f"{n} records consumed", stack.alive)
    windows = sum(
        v
        for (name, _), v in scrape(port).items()
        if name == "stream_monitor_model_windows_closed_total"
    )
    _poll(
        lambda: api.value("sum(stream_monitor_model_windows_closed_total)") == windows,
        60,
        "Prometheus scraping the final state",
        stack.alive,
    )
    seen = time.time()

    def evaluated() -> bool:
        groups = api.get("/api/v1/rules")["groups"]
        return bool(groups) and all(
            datetime.fromisoformat(g["lastEvaluation"].replace("Z", "+00:00")).timestamp()
            > seen + 1.5
            for g in groups
        )

    _poll(evaluated, 60, "the rules evaluated on the final state", stack.alive)


def _active(api: PromAPI, names: set[str]) -> list[tuple[str, str, dict[str, str]]]:
    return [
        (a["labels"]["alertname"], a["state"], a["labels"])
        for a in api.alerts()
        if a["labels"]["alertname"] in names
    ]


def test_dashboard_queries_and_alert_rules_on_a_real_prometheus(
    stack: Stack, kafka_bootstrap: str, topic_names: dict[str, str]
) -> None:
    api, started = stack.api, stack.started
    before, after = _traffic(topic_names)

    # Phase 1: stable traffic. The models' windows close and are judged; no model alert.
    produce_all(kafka_bootstrap, before)
    _wait_for_rules_after(stack, len(before))
    assert api.query("stream_monitor:feature_drift_score:ratio_to_threshold"), "rules not loaded"
    assert _active(api, MODEL_ALERTS) == [], "model alerts before any drift"
    since = f"{math.ceil(time.time() - started)}s"
    names = "|".join(sorted(MODEL_ALERTS))
    ever = api.query(f'max_over_time(ALERTS{{alertname=~"{names}"}}[{since}])')
    assert ever == [], f"model alerts pending or firing before any drift: {ever}"

    # Phase 2: the drift. The alerting rules fire for it.
    produce_all(kafka_bootstrap, after)
    _wait_for_rules_after(stack, len(before) + len(after))

    def firing() -> dict[str, set[tuple[str, str]]]:
        out: dict[str, set[tuple[str, str]]] = {name: set() for name in DRIFT_ALERTS}
        for name, state, labels in _active(api, set(DRIFT_ALERTS)):
            if state == "firing":
                a, b = DRIFT_ALERTS[name]
                out[name].add((labels[a], labels.get(b, "")))
        return out

    drifted = {(m, DRIFTED_FEATURE[m]) for m in MODELS}
    outputs = {"prediction.score", "prediction.label"}

    def models(fired: set[tuple[str, str]]) -> set[str]:
        return {m for m, _ in fired}

    expected: dict[str, tuple[str, Callable[[set[tuple[str, str]]], bool]]] = {
        # exactly the shifted feature of each model, none of the stable ones
        "StreamMonitorFeatureDrift": (f"exactly {sorted(drifted)}", lambda f: f == drifted),
        "StreamMonitorPredictionDrift": (
            "every model, on its outputs",
            lambda f: models(f) == set(MODELS) and {x for _, x in f} <= outputs,
        ),
        "StreamMonitorPerformanceBelowBaseline": (
            "every model",
            lambda f: models(f) == set(MODELS),
        ),
        "StreamMonitorConceptDrift": ("every model", lambda f: models(f) == set(MODELS)),
        # the type errors of customer_age (and the schema change, in the same incident)
        "StreamMonitorDataQuality": (
            "fraud-detector's customer_age",
            lambda f: ("fraud-detector", "customer_age") in f and models(f) == {"fraud-detector"},
        ),
    }

    def as_expected() -> bool:
        fired = firing()
        return all(ok(fired[name]) for name, (_, ok) in expected.items())

    failures: list[str] = []
    try:
        _poll(as_expected, 60, "the drift alerts firing", stack.alive)
    except AssertionError:
        fired = firing()
        failures += [
            f"{name}: expected firing for {what}, firing for {sorted(fired[name])}"
            for name, (what, ok) in expected.items()
            if not ok(fired[name])
        ]

    # Every dashboard query parses and returns data.
    dash = load_dashboard()
    span = f"{math.ceil(time.time() - started) + 60}s"
    # The variables' values in this run, as Grafana substitutes them: all (the default), and a
    # selection of single and multiple values (Grafana joins those into a regex group).
    selections = [
        {"job": JOB, "model": ".*", "feature": ".*", "segment": ".*", "statistic": "psi"},
        {
            "job": JOB,
            "model": "fraud-detector",
            "feature": "(amount|country|customer_age)",
            "segment": "region=us",
            "statistic": "psi",
        },
    ]
    exposed = _declared(stack.port)
    targets = {(p["title"], t["refId"]) for p in data_panels(dash) for t in p["targets"]}
    assert NO_DATA_HERE.keys() <= targets, "NO_DATA_HERE names a target the dashboard lacks"
    no_data: dict[str, Callable[[], bool]] = {}  # retried below
    for values in selections:
        values = {**values, **BUILTINS, "__range": span}
        for name, selector in variable_selectors(dash).items():
            series = api.get("/api/v1/series", **{"match[]": substitute(selector, values)})
            label = re.search(r",\s*(\w+)\)\s*$", _variable_query(dash, name))
            assert label is not None
            options = {s[label.group(1)] for s in series if label.group(1) in s}
            chosen = set(values[name].strip("()").split("|"))
            if not options or (values[name] != ".*" and not chosen <= options):
                failures.append(f"variable ${name}: {sorted(chosen)} not among {sorted(options)}")
        for where, key, target, expr in queries(dash):
            q = substitute(expr, values)

            def has_data(
                q: str = q,
                instant: bool = bool(target.get("instant")),
                excluded: bool = key in NO_DATA_HERE,
            ) -> bool:
                """True if the query returns data (for a target of NO_DATA_HERE: none)."""
                # Grafana runs table targets marked instant at the end of the time range, and
                # everything else (graphs, annotations) as a range query with a step.
                result = api.query(q) if instant else api.query_range(q, started, time.time())
                return not result if excluded else _finite(result)

            try:
                ok = has_data()
            except QueryError as exc:  # does not parse, or cannot be evaluated
                failures.append(f"{where}: {exc}")
                continue
            if key in NO_DATA_HERE:
                if not ok:
                    failures.append(f"{where} returned data: remove it from NO_DATA_HERE")
                for name in metric_names(q) - exposed:
                    failures.append(f"{where}: the monitor's /metrics does not declare {name}")
            elif not ok:
                no_data[f"{where}: no data for {q}"] = has_data
    # An instant query right after a slow scrape (a loaded machine) can find the series stale:
    # ask again for a while before calling a query empty.
    deadline = time.monotonic() + 20
    while no_data and time.monotonic() < deadline:
        time.sleep(1)
        no_data = {what: again for what, again in no_data.items() if not again()}
    failures += list(no_data)
    assert failures == [], "\n".join(failures)


def _variable_query(dash: dict[str, Any], name: str) -> str:
    for v in dash["templating"]["list"]:
        if v["name"] == name:
            q = v["query"]
            return str(q["query"] if isinstance(q, dict) else q)
    raise KeyError(name)
