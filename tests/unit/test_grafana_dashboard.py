"""The Grafana dashboard (deploy/grafana/stream-monitor.json), checked without Grafana.

Structure: unique panel ids, a grid without overlaps, every target on the ``${datasource}``
template variable, every ``$variable`` defined. Names: every metric a query selects is one the
monitor exports (derived from ``Instruments`` and ``StateCollector`` as the application registers
them), a recording rule of deploy/prometheus/stream-monitor.rules.yml, or a series Prometheus
itself writes; every label a matcher or a ``by``/``on`` clause uses exists. Syntax: every query,
its template variables replaced, goes through ``promtool check rules`` as a recording rule (this
promtool, 2.42, has no standalone PromQL parse command; ``check rules`` parses each ``expr``).
tests/integration/test_prometheus_grafana.py runs every query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.metrics.collector import StateCollector
from stream_monitor.metrics.instruments import Instruments

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "stream-monitor.json"
RULES = ROOT / "deploy" / "prometheus" / "stream-monitor.rules.yml"

#: Series that Prometheus writes itself, not the monitor: the scrape health of each target, and
#: the state of the alerting rules of deploy/prometheus (with the rules' labels).
PROMETHEUS_SERIES = {"up": {"job", "instance"}, "ALERTS": {"alertname", "alertstate"}}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
#: Grafana's built-in variables the dashboard may use, with a value valid in PromQL.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}

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

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_RECORD = re.compile(r"^\s*- record:\s*(\S+)\s*$", re.M)
_RULE_LABELS = re.compile(r"^\s*labels:\s*\n((?:\s+\w+:.*\n)+)", re.M)
#: PromQL words that are not metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on"}


# ------------------------------------------------------------------------------- helpers


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def data_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows excluded), including panels nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for p in dash["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def queries(dash: dict[str, Any]) -> Iterator[tuple[str, tuple[str, str], dict[str, Any], str]]:
    """``(where, key, target-like dict, expr)`` for every PromQL expression of the dashboard:
    panel targets (key: panel title, refId) and annotation queries (key: "annotation", name).
    Template variable queries are ``label_values`` calls, see :func:`variable_selectors`."""
    for p in data_panels(dash):
        for t in p.get("targets", []):
            where = f"panel {p['id']} {p.get('title')!r} target {t.get('refId')}"
            yield where, (p.get("title", ""), t.get("refId", "")), t, t["expr"]
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" in a:
            yield f"annotation {a['name']!r}", ("annotation", a["name"]), a, a["expr"]


def variable_selectors(dash: dict[str, Any]) -> dict[str, str]:
    """Template variable name -> the series selector of its ``label_values(selector, label)``."""
    out = {}
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q)
            assert m, f"variable {v['name']}: expected label_values(selector, label), got {q!r}"
            out[v["name"]] = m.group(1)
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` by ``values[name]``; an unknown variable is an error."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(repl, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names,
    strings and durations left out)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _CLAUSE.sub(" ", text)
    return {n for n in _IDENT.findall(text) if n.lower() not in KEYWORDS}


def selector_labels(expr: str) -> set[tuple[str, str]]:
    """``(metric, label)`` for every label a matcher of a selector uses."""
    text = _STRING.sub('""', expr)
    return {
        (name, lab)
        for name, matchers in _SELECTOR.findall(text)
        for lab in _MATCHER_LABEL.findall(matchers)
    }


def clause_labels(expr: str) -> set[str]:
    """Labels of ``by``/``without``/``on``/``ignoring``/``group_*`` clauses."""
    return {
        lab.strip() for clause in _CLAUSE.findall(expr) for lab in clause.split(",") if lab.strip()
    }


def recording_rules() -> set[str]:
    return set(_RECORD.findall(RULES.read_text()))


def exported_families() -> dict[str, set[str]]:
    """Every sample name /metrics can carry -> the label names of its family, from the
    monitor's own definitions: ``Instruments`` and ``StateCollector`` on a fresh registry, as
    ``Application`` registers them (an empty state still yields every family)."""
    reg = CollectorRegistry()
    inst = Instruments(reg)
    for metric in vars(inst).values():  # one child per labelled instrument, to see its labels
        labelnames = getattr(metric, "_labelnames", ())
        if labelnames:
            metric.labels(*("x" for _ in labelnames))
    reg.register(StateCollector(lambda: {}, threading.Lock()))
    names: dict[str, set[str]] = {}
    for family in reg.collect():
        labels = set(getattr(family, "_labelnames", ()))
        for sample in family.samples:
            labels |= set(sample.labels)
        for suffix in SUFFIXES[family.type]:
            names.setdefault(family.name + suffix, set()).update(labels)
    return names


def known_series() -> dict[str, set[str] | None]:
    """Names a dashboard query may select, with their labels (None: any label, for recording
    rules, whose labels follow from their expressions)."""
    known: dict[str, set[str] | None] = {
        name: labels | TARGET_LABELS for name, labels in exported_families().items()
    }
    known.update({name: None for name in recording_rules()})
    rule_labels = {
        line.split(":", 1)[0].strip()
        for block in _RULE_LABELS.findall(RULES.read_text())
        for line in block.splitlines()
        if line.strip()
    }
    known["up"] = set(PROMETHEUS_SERIES["up"])
    alert_labels = PROMETHEUS_SERIES["ALERTS"] | rule_labels
    every = set().union(*(v for v in known.values() if v))
    known["ALERTS"] = alert_labels | every  # an alert carries its rule's and its series' labels
    return known


def problems(exprs: list[str], known: dict[str, set[str] | None]) -> list[str]:
    """Unknown metric names and label names in ``exprs`` (template variables replaced)."""
    every = set().union(*(v for v in known.values() if v))
    bad = []
    for expr in exprs:
        for name in sorted(metric_names(expr) - known.keys()):
            bad.append(f"unknown metric {name!r} in {expr!r}")
        for name, lab in sorted(selector_labels(expr)):
            labels = known.get(name)
            if name in known and labels is not None and lab not in labels:
                bad.append(f"{name} has no label {lab!r} (in {expr!r})")
        for lab in sorted(clause_labels(expr) - every - {"le"}):
            bad.append(f"no exported series has label {lab!r} (in {expr!r})")
    return bad


def placeholder_values(dash: dict[str, Any]) -> dict[str, str]:
    values = {v["name"]: "x" for v in dash["templating"]["list"]}
    return {**values, **BUILTINS}


# --------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    return load_dashboard()


def test_dashboard_model(dash: dict[str, Any]) -> None:
    assert dash["uid"] == "stream-monitor"
    assert dash["title"]
    assert 36 <= dash["schemaVersion"] <= 41
    assert isinstance(dash["panels"], list) and dash["panels"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "model", "feature", "segment", "statistic"):
        v = variables[name]
        assert v["type"] == "query", name
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
    assert variables["model"]["multi"] and variables["model"]["includeAll"]
    assert variables["model"]["allValue"] == ".*"


def test_panel_ids_are_unique_and_the_grid_has_no_overlap(dash: dict[str, Any]) -> None:
    panels = [*dash["panels"], *(q for p in dash["panels"] for q in p.get("panels", []))]
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and all(isinstance(g[k], int) for k in g), p["id"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] >= 0 and g["y"] >= 0, p["id"]
        assert g["x"] + g["w"] <= 24, f"panel {p['id']} is wider than the grid"
        if p.get("type") == "row":
            assert g["w"] == 24 and g["h"] == 1 and g["x"] == 0, p["id"]
        boxes.append((p["id"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1 :]:
            overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
            assert not overlap, f"panels {a} and {b} overlap"


def test_every_target_uses_the_datasource_variable(dash: dict[str, Any]) -> None:
    ds = {"type": "prometheus", "uid": "${datasource}"}
    panels = data_panels(dash)
    assert panels
    for p in panels:
        assert p.get("title"), p["id"]
        assert p["datasource"] == ds, f"panel {p['id']}"
        targets = p.get("targets", [])
        assert targets, f"panel {p['id']} has no query"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"panel {p['id']}: duplicate refId"
        for t in targets:
            assert t["datasource"] == ds, f"panel {p['id']} target {t['refId']}"
            assert t["expr"].strip(), f"panel {p['id']} target {t['refId']}"
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == ds


def test_every_variable_used_is_defined(dash: dict[str, Any]) -> None:
    values = placeholder_values(dash)
    for where, _, _, expr in queries(dash):
        substitute(expr, values)  # raises KeyError on an undefined variable
        assert "$" not in substitute(expr, values), where
    for name, selector in variable_selectors(dash).items():
        assert "$" not in substitute(selector, values), name
    for p in data_panels(dash):
        substitute(p["title"], values)


def test_every_metric_and_label_is_exported(dash: dict[str, Any]) -> None:
    known = known_series()
    values = placeholder_values(dash)
    exprs = [substitute(expr, values) for _, _, _, expr in queries(dash)]
    exprs += [substitute(s, values) for s in variable_selectors(dash).values()]
    assert problems(exprs, known) == []
    used = set().union(*(metric_names(e) for e in exprs))
    # the dashboard covers every area: drift, quality, performance, labels, alerts, health
    for name in (
        "stream_monitor_model_drift_score",
        "stream_monitor_feature_drift_threshold",
        "stream_monitor_feature_missing_ratio",
        "stream_monitor_model_unexpected_fields_total",
        "stream_monitor_model_performance_baseline",
        "stream_monitor_model_error_baseline",
        "stream_monitor_label_delay_seconds_bucket",
        "stream_monitor_alert_firing",
        "stream_monitor_consumer_lag",
        "stream_monitor_events_consumed_total",
        "stream_monitor_events_invalid_total",
        "stream_monitor_checkpoint_seconds_bucket",
        "stream_monitor_batch_processing_seconds_bucket",
    ):
        assert name in used, name


def test_the_name_check_catches_mistakes() -> None:
    known = known_series()
    assert problems(['max by (model_id) (stream_monitor_model_drift_score{job=~"x"})'], known) == []
    assert problems(["rate(stream_monitor_events_consumed_total[1m])"], known) == []
    bad = {
        "stream_monitor_model_drift_scor",  # misspelt
        "rate(stream_monitor_events_consumed[1m])",  # counter without _total
        "stream_monitor_info",  # not a name at all
        "histogram_quantile(0.9, rate(stream_monitor_label_delay_seconds[1m]))",  # no _bucket
    }
    for expr in bad:
        assert problems([expr], known), expr
    assert problems(['stream_monitor_model_drift_score{modle_id="a"}'], known)
    assert problems(["max by (modle_id) (stream_monitor_model_drift_score)"], known)
    # names in strings, label names and functions are not metric names
    assert metric_names('sum by (le) (rate(a_b{c="d_e"}[5m])) / on (x) vector(1)') == {"a_b"}
    assert metric_names("histogram_quantile(0.5, b) and time() - c offset 5m") == {"b", "c"}


def test_every_query_parses_with_promtool(dash: dict[str, Any], tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not installed: run deploy/local/setup.sh "
            "(it installs Debian's prometheus package)",
            pytrace=False,
        )
    values = placeholder_values(dash)
    lines = ["groups:", "  - name: grafana-dashboard-queries", "    rules:"]
    n = 0
    for where, _, _, expr in queries(dash):
        n += 1
        lines.append(f"      - record: grafana_query_{n}  # {where}")
        lines.append(f"        expr: {json.dumps(substitute(expr, values))}")
    for name, selector in variable_selectors(dash).items():
        lines.append(f"      - record: grafana_variable_{name}")
        lines.append(f"        expr: {json.dumps(substitute(selector, values))}")
    path = tmp_path / "dashboard-queries.yml"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"{n + len(variable_selectors(dash))} rules found" in proc.stdout


def test_promtool_check_fails_on_a_bad_query(tmp_path: Path) -> None:
    """The promtool step above can fail: a query that does not parse is reported."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run deploy/local/setup.sh", pytrace=False)
    path = tmp_path / "bad.yml"
    path.write_text(
        "groups:\n  - name: g\n    rules:\n      - record: bad\n"
        '        expr: "sum by (model_id (stream_monitor_model_drift_score)"\n'
    )
    proc = subprocess.run(
        [exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode != 0
