"""Reference profiles and event-time windows on the real broker.

A profile built from a training CSV with ``stream-monitor profile`` replaces the first-events
reference (no reference period: the very first events are judged), per-version profiles are
chosen by the version of a model's first event, bad profiles are refused at start, and event-time
windows count exactly the events that arrive after their window closed.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from stream_monitor.app import Application
from stream_monitor.cli import main as cli_main
from stream_monitor.errors import ConfigError
from stream_monitor.events.schema import AlertEvent
from stream_monitor.kafka.clients import ensure_input_topics
from stream_monitor.reference import build_profile, load_profile
from stream_monitor.simulate import DRIFTED_FEATURE, STABLE_FEATURES, TrafficGenerator

from .kafka_utils import monitor_config, produce_all, read_all, running_app, scrape, wait_until

pytestmark = pytest.mark.integration

START = 1_790_000_000.0
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def _alerts(bootstrap: str, topic: str) -> list[AlertEvent]:
    return [AlertEvent.model_validate(orjson.loads(m.value())) for m in read_all(bootstrap, topic)]


def _profile(csv_path: Path, out: Path, model_id: str, *extra: str) -> Path:
    """``stream-monitor profile`` as an operator runs it; returns the profile path."""
    argv = [str(csv_path), "--model-id", model_id, "-o", str(out), *extra]
    assert cli_main(["profile", *argv]) == 0
    assert out.is_file()
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        # None -> "" (missing); True/False -> "True"/"False" (read back as booleans).
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return path


def _wait_events(port: int, expected: dict[str, int], timeout: float = 60) -> None:
    def done() -> bool:
        m = scrape(port)
        return all(
            _get(m, "stream_monitor_model_events_total", model_id=mid) == n
            for mid, n in expected.items()
        )

    wait_until(done, timeout, f"events monitored {expected}")


# ------------------------------------------------------------------ 1. training CSV -> profile
MODEL = "fraud-detector"
COUNT_WINDOW = 500


def test_profile_from_training_csv_is_the_reference(kafka_bootstrap, topic_names, tmp_path):
    t = topic_names
    # Training data: the model's stable distribution (a different seed, never drifted).
    train = TrafficGenerator(seed=101, drift_at=None, models=(MODEL,), start_time=START)
    rows = []
    for r in train.events(20_000):
        if r.topic != train.prediction_topic:
            continue
        ev = orjson.loads(r.value)
        pred = ev["prediction"]
        rows.append({**ev["features"], "score": pred["score"], "label": pred["label"]})
    csv_path = _write_csv(tmp_path / "train.csv", rows)
    prof_path = _profile(
        csv_path,
        tmp_path / "fraud.profile.json",
        MODEL,
        "--score-column",
        "score",
        "--label-column",
        "label",
    )
    prof = load_profile(prof_path)
    assert prof.n_rows == 20_000
    assert set(prof.features) == {
        *STABLE_FEATURES[MODEL],
        DRIFTED_FEATURE[MODEL],
        "prediction.score",
        "prediction.label",
    }
    assert prof.features["is_international"].type == "categorical"

    # Production: stable, then the drifted feature shifts (x3) half way.
    stable_n, drift_n = 3000, 3000
    gen = TrafficGenerator(
        seed=7,
        drift_at=stable_n,
        models=(MODEL,),
        start_time=START,
        prediction_topic=t["predictions"],
        label_topic=t["labels"],
    )
    preds = [(r.topic, r.key, r.value) for r in gen.events(stable_n) if r.topic == t["predictions"]]
    ensure_input_topics(
        kafka_bootstrap, partitions=2, predictions=t["predictions"], labels=t["labels"]
    )
    cfg = monitor_config(
        kafka_bootstrap,
        t,
        references=[{"model_id": MODEL, "path": str(prof_path)}],
        drift={"window": {"size": COUNT_WINDOW}},
    )
    assert cfg.drift.reference.size > COUNT_WINDOW  # a reference period would delay windows
    with running_app(cfg) as app:
        assert app.server is not None
        port = app.server.port
        produce_all(kafka_bootstrap, preds)
        _wait_events(port, {MODEL: stable_n})
        m = scrape(port)
        assert _get(m, "stream_monitor_model_reference_info", model_id=MODEL, source="profile") == 1
        assert _get(m, "stream_monitor_model_reference_ready", model_id=MODEL) == 1
        # Every event was windowed: no reference period was learnt from the stream.
        assert (
            _get(m, "stream_monitor_model_windows_closed_total", model_id=MODEL)
            == stable_n // COUNT_WINDOW
        )
        for f in STABLE_FEATURES[MODEL]:
            assert _get(m, "stream_monitor_feature_drifting", model_id=MODEL, feature=f) == 0, f
        shifted = DRIFTED_FEATURE[MODEL]
        assert _get(m, "stream_monitor_feature_drifting", model_id=MODEL, feature=shifted) == 0

        drifted = [
            (r.topic, r.key, r.value)
            for r in gen.events(stable_n + drift_n)
            if r.topic == t["predictions"]
        ][stable_n:]
        assert len(drifted) == drift_n
        produce_all(kafka_bootstrap, drifted)
        _wait_events(port, {MODEL: stable_n + drift_n})
        m = scrape(port)

    total = stable_n + drift_n
    assert _get(m, "stream_monitor_model_windows_closed_total", model_id=MODEL) == (
        total // COUNT_WINDOW
    )
    key = {"model_id": MODEL, "feature": shifted, "statistic": "psi"}
    threshold = _get(m, "stream_monitor_feature_drift_threshold", **key)
    score = _get(m, "stream_monitor_feature_drift_score", **key)
    assert threshold is not None and threshold > 0
    assert score is not None and score > threshold
    assert _get(m, "stream_monitor_feature_drifting", model_id=MODEL, feature=shifted) == 1
    # The quality gauges are exported for profiled features too.
    assert _get(m, "stream_monitor_feature_missing_ratio", model_id=MODEL, feature="country") < 0.1
    for f in STABLE_FEATURES[MODEL]:
        k = {"model_id": MODEL, "feature": f, "statistic": "psi"}
        assert _get(m, "stream_monitor_feature_drift_score", **k) < 0.25, f

    alerts = _alerts(kafka_bootstrap, t["alerts"])
    firing = [a for a in alerts if a.status == "firing"]
    assert any(a.kind == "data_drift" and a.feature == shifted for a in firing), [
        a.dedup_key for a in alerts
    ]
    stable = set(STABLE_FEATURES[MODEL])
    on_stable = [a for a in alerts if a.feature in stable or stable & set(a.top_features)]
    assert not on_stable, [(a.dedup_key, a.signal, a.value, a.top_features) for a in on_stable]
    drift_time = START + stable_n / gen.rate
    assert all(a.observed_at >= drift_time for a in firing), [
        (a.dedup_key, a.observed_at - drift_time) for a in firing
    ]


# ----------------------------------------------------------------- 2. per-version profiles
def _synthetic(seed: int, n: int, mu: float) -> list[dict[str, Any]]:
    """Rows of a small model: ``x`` ~ N(mu, 1), a categorical ``tier`` and a score."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(mu, 1.0, n), 4).tolist()
    tier = rng.choice(["gold", "silver", "bronze"], size=n, p=[0.2, 0.3, 0.5]).tolist()
    score = np.round(rng.beta(2.0, 5.0, n), 4).tolist()
    return [{"x": a, "tier": b, "score": c} for a, b, c in zip(x, tier, score, strict=True)]


def _events(
    topic: str, model: str, version: str, rows: list[dict[str, Any]]
) -> list[tuple[str, bytes, bytes]]:
    out = []
    for i, r in enumerate(rows):
        ev = {
            "event_id": f"{model}-{version}-{i}",
            "model_id": model,
            "model_version": version,
            "timestamp": START + i * 0.01,
            "features": {"x": r["x"], "tier": r["tier"]},
            "prediction": r["score"],
        }
        out.append((topic, model.encode(), orjson.dumps(ev)))
    return out


def test_profile_of_the_model_version_is_chosen(kafka_bootstrap, topic_names, tmp_path):
    t = topic_names
    base_mu, v2_mu = 0.0, 3.0  # 3 sd apart: the wrong profile makes x drift massively
    refs = []
    for i, model in enumerate(("scorer", "ranker")):
        base = _write_csv(tmp_path / f"{model}.csv", _synthetic(10 + i, 10_000, base_mu))
        v2 = _write_csv(tmp_path / f"{model}-v2.csv", _synthetic(20 + i, 10_000, v2_mu))
        score = ("--score-column", "score")
        refs.append(
            {
                "model_id": model,
                "path": str(_profile(base, tmp_path / f"{model}.json", model, *score)),
            }
        )
        out = tmp_path / f"{model}-v2.json"
        _profile(v2, out, model, "--model-version", "v2", *score)
        refs.append({"model_id": model, "model_version": "v2", "path": str(out)})

    n = 2000
    # scorer runs v2 (its own profile); ranker runs v1, which has none: the versionless one.
    records = _events(t["predictions"], "scorer", "v2", _synthetic(30, n, v2_mu)) + _events(
        t["predictions"], "ranker", "v1", _synthetic(31, n, base_mu)
    )
    ensure_input_topics(
        kafka_bootstrap, partitions=2, predictions=t["predictions"], labels=t["labels"]
    )
    produce_all(kafka_bootstrap, records)
    cfg = monitor_config(
        kafka_bootstrap, t, references=refs, drift={"window": {"size": COUNT_WINDOW}}
    )
    with running_app(cfg) as app:
        assert app.server is not None
        _wait_events(app.server.port, {"scorer": n, "ranker": n})
        m = scrape(app.server.port)
        with app.lock:
            chosen = {
                mid: model.features["x"].ref_max
                for st in app.states.values()
                for mid, model in st.models.items()
            }

    for model in ("scorer", "ranker"):
        assert _get(m, "stream_monitor_model_reference_info", model_id=model, source="profile") == 1
        assert _get(m, "stream_monitor_model_windows_closed_total", model_id=model) == (
            n // COUNT_WINDOW
        )
        key = {"model_id": model, "feature": "x", "statistic": "psi"}
        thr = _get(m, "stream_monitor_feature_drift_threshold", **key)
        assert thr is not None and _get(m, "stream_monitor_feature_drift_score", **key) < thr
        # With the other profile a sixth of x would lie beyond the reference's range.
        oor = _get(m, "stream_monitor_feature_out_of_range_ratio", model_id=model, feature="x")
        assert oor is not None and oor < 0.02, (model, oor)
        assert _get(m, "stream_monitor_feature_drifting", model_id=model, feature="x") == 0

    alerts = _alerts(kafka_bootstrap, t["alerts"])
    drift = [a for a in alerts if a.kind in ("data_drift", "data_quality")]
    assert not drift, [(a.dedup_key, a.signal, a.value) for a in drift]
    # The monitors hold the references of the expected profiles.
    assert chosen["scorer"] == load_profile(tmp_path / "scorer-v2.json").features["x"].max
    assert chosen["ranker"] == load_profile(tmp_path / "ranker.json").features["x"].max


# ------------------------------------------------------------------- 3. bad profiles refused
def _bad_references(tmp_path: Path) -> dict[str, tuple[list[dict[str, Any]], str]]:
    other = tmp_path / "other.profile.json"
    build_profile([{"x": float(i)} for i in range(50)], model_id="other").write(other)
    notjson = tmp_path / "broken.profile.json"
    notjson.write_text('{"format": "stream-monitor-profile", ')
    return {
        "missing_file": (
            [{"model_id": "m", "path": str(tmp_path / "nope.json")}],
            "profile file not found",
        ),
        "another_model": (
            [{"model_id": "m", "path": str(other)}],
            "profiles model 'other', configured for 'm'",
        ),
        "not_json": ([{"model_id": "m", "path": str(notjson)}], "not valid JSON"),
        "duplicate": (
            [{"model_id": "other", "path": str(other)}, {"model_id": "other", "path": str(other)}],
            "two references for model 'other'",
        ),
    }


CASES = ["missing_file", "another_model", "not_json", "duplicate"]


@pytest.mark.parametrize("case", CASES)
def test_bad_reference_is_refused_at_start(kafka_bootstrap, topic_names, tmp_path, case):
    refs, message = _bad_references(tmp_path)[case]
    cfg = monitor_config(kafka_bootstrap, topic_names, references=refs)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Application(cfg)


@pytest.mark.parametrize("case", ["missing_file", "another_model"])
def test_run_with_a_bad_reference_exits_with_one_line(kafka_bootstrap, topic_names, tmp_path, case):
    refs, message = _bad_references(tmp_path)[case]
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'bootstrap_servers = "{kafka_bootstrap}"\n'
        f'group_id = "{topic_names["group"]}"\n'
        "metrics_port = 0\n"
        + "".join(
            f'[[references]]\nmodel_id = "{r["model_id"]}"\npath = "{r["path"]}"\n' for r in refs
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "stream_monitor", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("stream-monitor run: error: ") and message in lines[0], lines


# --------------------------------------------------------------------- 4. event-time windows
def _produce_in_order(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    """Like ``produce_all``, with the idempotent producer: the log keeps the produce order."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    errors: list[Any] = []
    for topic, key, value in records:
        p.produce(topic, value=value, key=key, on_delivery=lambda e, _m: e and errors.append(e))
        p.poll(0)
    assert p.flush(60) == 0, "producer did not drain"
    assert not errors, errors[:3]


def test_time_windows_count_late_events_exactly(kafka_bootstrap, topic_names):
    t = topic_names
    size_s, lateness_s, reference = 5, 1, 100
    rng = np.random.default_rng(4)
    n = 1500
    t0_ms = int(START * 1000)
    # Milliseconds ending in 3: no timestamp (nor watermark) ever sits on a window edge.
    ts_ms = [t0_ms + i * 50 + 3 for i in range(n)]  # 20 events/s of event time
    for i in range(reference + 10, n):
        if rng.random() < 0.12:  # backdated by 0.5..9 s: late or not, depending on the edge
            ts_ms[i] -= int(rng.integers(50, 900)) * 10
    rows = _synthetic(5, n, 0.0)
    records = []
    for i, (r, ms) in enumerate(zip(rows, ts_ms, strict=True)):
        ev = {
            "event_id": f"clock-{i}",
            "model_id": "clock",
            "model_version": "1",
            "timestamp": ms / 1000,
            "features": {"x": r["x"], "tier": r["tier"]},
            "prediction": r["score"],
        }
        records.append((t["predictions"], b"clock", orjson.dumps(ev)))

    # Independently: the first `reference` events are the reference; after that an event is
    # late when its window ended at or before the watermark (max event time - lateness).
    late, backdated, max_ms = 0, 0, None
    closed_panes: set[int] = set()
    for ms in ts_ms[reference:]:
        max_ms = ms if max_ms is None else max(max_ms, ms)
        backdated += ms < max_ms
        if ms // (size_s * 1000) < (max_ms - lateness_s * 1000) // (size_s * 1000):
            late += 1
        else:
            closed_panes.add(ms // (size_s * 1000))
    assert max_ms is not None
    last_complete = (max_ms - lateness_s * 1000) // (size_s * 1000) - 1
    windows = sum(1 for p in closed_panes if p <= last_complete)
    assert 10 < late < backdated  # some backdated events are late, some are within lateness

    ensure_input_topics(
        kafka_bootstrap, partitions=2, predictions=t["predictions"], labels=t["labels"]
    )
    _produce_in_order(kafka_bootstrap, records)
    cfg = monitor_config(
        kafka_bootstrap,
        t,
        drift={
            "window": {"kind": "time", "size": size_s, "allowed_lateness_seconds": lateness_s},
            "reference": {"size": reference},
            # Calibrating each new window size takes ~0.1 s per feature while the state lock
            # is held, which would stall /metrics scrapes; lateness needs no calibration.
            "thresholds": {"mode": "fixed"},
            "window_detectors": {"enabled": False},
        },
    )
    with running_app(cfg) as app:
        assert app.server is not None
        _wait_events(app.server.port, {"clock": n})
        m = scrape(app.server.port)
    assert _get(m, "stream_monitor_model_late_events_total", model_id="clock") == late
    assert _get(m, "stream_monitor_model_windows_closed_total", model_id="clock") == windows
    assert (
        _get(m, "stream_monitor_model_reference_info", model_id="clock", source="first_events") == 1
    )
