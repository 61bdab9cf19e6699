"""The Prometheus side of alerting (deploy/prometheus): promtool checks and unit tests, and a
check that every metric and label the rules and their tests use is one the monitor exports.

promtool comes with Debian's ``prometheus`` package (``deploy/local/setup.sh`` installs it); a
missing promtool fails these tests, it never skips them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import typing
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.config import DriftConfig, MonitorConfig, PerformanceConfig
from stream_monitor.events.schema import LabelEvent, PredictionEvent
from stream_monitor.metrics.collector import StateCollector
from stream_monitor.metrics.instruments import Instruments
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.monitor.performance import HIGHER_IS_BETTER

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "stream-monitor.rules.yml"
CONFIG = PROM / "prometheus.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
DOC = ROOT / "docs" / "prometheus.md"
RUNBOOK = "https://github.com/stream-monitor/stream-monitor/blob/main/docs/prometheus.md#"
PRIORITY = {"critical": "P0", "warning": "P1", "info": "P2"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

METRIC = re.compile(r"(?<![\w:])stream_monitor_[a-z0-9_]+(?![\w:])")
RECORDED = re.compile(r"(?<![\w:])stream_monitor:[a-z0-9_:]+(?![\w:])")
SELECTOR = re.compile(r"(?<![\w:])(stream_monitor_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
CLAUSE = re.compile(r"\b(?:by|on|ignoring|without|group_left|group_right)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")
RULE_START = re.compile(r"^\s*- (alert|record):\s*(\S+)\s*$", re.M)


# ------------------------------------------------------------------------------- promtool


def _promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not installed: run deploy/local/setup.sh "
            "(it installs Debian's prometheus package)",
            pytrace=False,
        )
    proc = subprocess.run(
        [exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_promtool_check_rules() -> None:
    out = _promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert "SUCCESS" in out


def test_promtool_check_config() -> None:
    out = _promtool("check", "config", str(CONFIG))
    assert "valid prometheus config" in out
    assert "1 rule files found" in out  # the rules file is loaded, relative to the config


def test_promtool_unit_tests() -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    out = _promtool("test", "rules", *(str(p) for p in RULE_TESTS))
    assert out.count("SUCCESS") == len(RULE_TESTS), out


# ----------------------------------------------------------------- what the monitor exports

CFG = MonitorConfig.model_validate(
    {
        "bootstrap_servers": "unused:9092",
        "drift": {"reference": {"size": 200}, "window": {"size": 200}},
        "performance": {"window": {"size": 100}, "baseline_windows": 1},
        "labels": {"baseline_size": 50},
        "limits": {"max_models_per_partition": 1},
    }
)


def _traffic_state() -> PartitionState:
    """A partition after 1,600 scored predictions of one classifier (all labelled), whose input
    `amount` and error rate change half-way, and a second model refused by the cap: drift,
    quality, performance (with a baseline), concept-drift and refusal series all appear."""
    rng = np.random.default_rng(7)
    n, change = 1600, 800
    preds: list[PredictionEvent] = []
    labels: list[LabelEvent] = []
    for i in range(n):
        p = float(rng.random())
        truth = int(rng.random() < (p if i < change else 1.0 - p))
        preds.append(
            PredictionEvent(
                event_id=f"f-{i}",
                model_id="fraud",
                timestamp=float(i),
                features={
                    "amount": float(rng.normal(0.0, 1.0) + (3.0 if i >= change else 0.0)),
                    "country": str(rng.choice(["fr", "de", "it"])),
                    "age": None if i % 5 == 0 else 30.0,
                },
                prediction={"label": int(p > 0.5), "score": round(p, 4)},
            )
        )
        labels.append(
            LabelEvent(event_id=f"f-{i}", model_id="fraud", timestamp=i + 0.5, label=truth)
        )
        if i % 50 == 0:
            preds.append(
                PredictionEvent(
                    event_id=f"o-{i}",
                    model_id="over-the-cap",
                    timestamp=float(i),
                    features={"a": 1.0},
                    prediction=1.0,
                )
            )
    st = PartitionState(0, CFG)
    for lo in range(0, n, 200):
        st.process(
            [e for e in preds if lo <= e.timestamp < lo + 200],
            [e for e in labels if lo <= e.timestamp < lo + 200],
        )
    return st


#: Sample names a family of each type exposes (prometheus_client text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str] | None]:
    """Every sample name /metrics can carry, with the label names seen on it (None: the family
    produced no sample here, so its labels are unknown)."""
    st = _traffic_state()
    reg = CollectorRegistry()
    inst = Instruments(reg)
    for metric in vars(inst).values():  # one child per labelled instrument
        labelnames = getattr(metric, "_labelnames", ())
        if labelnames:
            metric.labels(*("x" for _ in labelnames))
    reg.register(StateCollector(lambda: {0: st}, threading.Lock()))
    names: dict[str, set[str] | None] = {}
    for family in reg.collect():
        for suffix in SUFFIXES[family.type]:
            names.setdefault(family.name + suffix, None)
        for sample in family.samples:
            seen = names.get(sample.name) or set()
            names[sample.name] = seen | set(sample.labels)
    return names


def _strip_comments(text: str) -> str:
    return re.sub(r"(?m)(^|\s)#.*$", "", text)


def _unknown_names(text: str, exported: dict[str, set[str] | None]) -> set[str]:
    """Metric names in a rules file that the monitor does not export."""
    return set(METRIC.findall(_strip_comments(text))) - exported.keys()


def _unknown_labels(text: str, exported: dict[str, set[str] | None]) -> set[str]:
    """`metric:label` for label names the rules use on a metric that does not carry them;
    `*:label` for labels in by/on/ignoring clauses or annotations that no metric carries."""
    text = _strip_comments(text)
    bad: set[str] = set()
    for name, matchers in SELECTOR.findall(text):
        known = exported.get(name)
        if known is None:
            bad.add(f"{name}:(no sample exported: extend the traffic in this test)")
            continue
        bad |= {f"{name}:{lab}" for lab in MATCHER_LABEL.findall(matchers)} - {
            f"{name}:{lab}" for lab in known | TARGET_LABELS
        }
    every = set().union(*(v for v in exported.values() if v)) | TARGET_LABELS
    used = {lab.strip() for clause in CLAUSE.findall(text) for lab in clause.split(",")}
    used |= set(TEMPLATE_LABEL.findall(text))
    bad |= {f"*:{lab}" for lab in used - every - {""}}
    return bad


def test_rules_use_only_exported_metrics(exported: dict[str, set[str] | None]) -> None:
    text = RULES.read_text()
    used = set(METRIC.findall(_strip_comments(text)))
    assert len(used) >= 20, used  # the regex does find the names
    assert _unknown_names(text, exported) == set()


def test_rules_use_only_exported_labels(exported: dict[str, set[str] | None]) -> None:
    assert _unknown_labels(RULES.read_text(), exported) == set()


def test_recorded_series_used_are_defined() -> None:
    text = _strip_comments(RULES.read_text())
    defined = {name for kind, name in RULE_START.findall(text) if kind == "record"}
    assert defined
    assert set(RECORDED.findall(text)) - defined == set()


def test_the_name_and_label_checks_can_fail(exported: dict[str, set[str] | None]) -> None:
    """A misspelt metric, a suffix the family does not have, or a wrong label is reported."""
    text = RULES.read_text()
    names = _unknown_names(text, exported)
    labels = _unknown_labels(text, exported)
    typo = text.replace("stream_monitor_consumer_lag)", "stream_monitor_consumer_lags)", 1)
    assert _unknown_names(typo, exported) - names == {"stream_monitor_consumer_lags"}
    no_total = text.replace("stream_monitor_checkpoints_total", "stream_monitor_checkpoints", 1)
    assert _unknown_names(no_total, exported) - names == {"stream_monitor_checkpoints"}
    gauge_as_counter = text + "\n        expr: rate(stream_monitor_consumer_lag_total[5m])\n"
    assert _unknown_names(gauge_as_counter, exported) - names == {
        "stream_monitor_consumer_lag_total"
    }
    label = text.replace('{kind="data_quality"}', '{alert_kind="data_quality"}', 1)
    assert _unknown_labels(label, exported) - labels == {"stream_monitor_alert_firing:alert_kind"}
    template = text.replace("{{ $labels.model_id }}", "{{ $labels.model }}", 1)
    assert _unknown_labels(template, exported) - labels == {"*:model"}


def test_unit_test_series_are_real_metrics(exported: dict[str, set[str] | None]) -> None:
    """The promtool tests feed series named and labelled like the monitor's own."""
    series = [
        s for path in RULE_TESTS for s in re.findall(r"series:\s*'([^']*)'", path.read_text())
    ]
    assert series
    bad = []
    for s in series:
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)\{(.*)\}", s)
        assert m, s
        name, labels = m.group(1), set(re.findall(r"(\w+)\s*=", m.group(2)))
        if name == "up":
            continue
        known = exported.get(name)
        if known is None or not labels <= known | TARGET_LABELS:
            bad.append(s)
    assert bad == []


# -------------------------------------------------------------------- the alerts themselves


def _rules() -> list[tuple[str, str, str]]:
    """(kind, name, text of the rule) for every rule of the file, in order."""
    text = RULES.read_text()
    starts = list(RULE_START.finditer(text))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return [
        (m.group(1), m.group(2), text[m.start() : end]) for m, end in zip(starts, ends, strict=True)
    ]


def _alerts() -> dict[str, str]:
    return {name: body for kind, name, body in _rules() if kind == "alert"}


def _field(body: str, key: str) -> str | None:
    m = re.search(rf"(?m)^\s+{key}:\s*(.+?)\s*$", body)
    return None if m is None else m.group(1).strip('"')


def _github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_every_alert_has_for_severity_priority_and_runbook() -> None:
    alerts = _alerts()
    assert len(alerts) >= 15
    headings = re.findall(r"(?m)^#{1,6}\s+(.+)$", DOC.read_text())
    anchors = {_github_anchor(h) for h in headings}
    for name, body in alerts.items():
        assert name.startswith("StreamMonitor"), name
        assert _field(body, "for"), f"{name}: no for:"
        severity = _field(body, "severity")
        assert severity in PRIORITY, f"{name}: severity {severity}"
        assert _field(body, "priority") == PRIORITY[severity], f"{name}: priority"
        assert _field(body, "summary"), f"{name}: no summary"
        description = _field(body, "description")
        assert description and "{{" in description, f"{name}: description without templating"
        url = _field(body, "runbook_url")
        assert url and url.startswith(RUNBOOK), f"{name}: runbook_url {url}"
        assert url.removeprefix(RUNBOOK) == name.lower(), f"{name}: anchor {url}"
        assert name.lower() in anchors, f"{name}: no section {name} in docs/prometheus.md"


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        current = None
        for line in path.read_text().splitlines():
            m = re.match(r"\s*alertname:\s*(\S+)", line)
            if m:
                current = m.group(1)
                continue
            m = re.match(r"\s*exp_alerts:\s*(\[\])?\s*$", line)
            if m and current is not None:
                (silent if m.group(1) else fires).add(current)
    alerts = set(_alerts())
    assert alerts - fires == set(), "alerts never seen firing in deploy/prometheus/tests"
    assert alerts - silent == set(), "alerts never checked silent in deploy/prometheus/tests"
    assert (fires | silent) - alerts == set(), "tests of alerts that do not exist"


def test_recording_rules_are_unit_tested() -> None:
    tested = {
        re.sub(r"\{.*", "", expr.strip())
        for path in RULE_TESTS
        for expr in re.findall(r"-\s*expr:\s*(.+)", path.read_text())
    }
    recorded = {name for kind, name, _ in _rules() if kind == "record"}
    assert recorded - tested == set()


# ------------------------------------------------------- thresholds mirrored from the code


def test_performance_directions_match_the_code() -> None:
    text = RULES.read_text()
    higher = re.findall(
        r'stream_monitor_model_performance_baseline\{metric=~"([^"]+)"\}\)\s*-\s*on', text
    )
    lower = re.findall(
        r"-\s*on\s*\([^)]*\)\s*max by\s*\([^)]*\)\s*"
        r'\(stream_monitor_model_performance_baseline\{metric=~"([^"]+)"\}',
        text,
    )
    assert len(higher) == len(lower) == 1, (higher, lower)
    fields = PerformanceConfig.model_fields
    metrics = set(typing.get_args(fields["classification_metric"].annotation)) | set(
        typing.get_args(fields["regression_metric"].annotation)
    )
    assert set(higher[0].split("|")) == set(HIGHER_IS_BETTER)
    assert set(lower[0].split("|")) == metrics - HIGHER_IS_BETTER


def test_mirrored_thresholds_match_the_defaults() -> None:
    alerts = _alerts()
    score = re.search(
        r"model_drift_score\)\s*>=\s*([0-9.]+)", alerts["StreamMonitorModelDriftScoreHigh"]
    )
    assert score and float(score.group(1)) == DriftConfig().model_score_threshold
    change = re.search(
        r"degradation_ratio\s*>\s*([0-9.]+)", alerts["StreamMonitorPerformanceBelowBaseline"]
    )
    assert change and float(change.group(1)) == PerformanceConfig().max_relative_change
