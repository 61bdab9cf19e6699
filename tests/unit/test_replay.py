"""``stream-monitor replay`` from JSON Lines files, without Kafka.

A generated stream (three models, labels, one numeric feature per model shifted at a known
event) is written as the raw record values a topic would hold, with malformed lines mixed in,
then replayed. The alert rules are being reworked elsewhere, so these tests assert on what the
drift is (which feature, from when), not on how many alert events it gives.
"""

from __future__ import annotations

import gzip
import heapq
import io
import math
import random
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_monitor.alerts.observation import Observation
from stream_monitor.backtest import (
    IncidentLog,
    Position,
    Progress,
    Replay,
    ReplayResult,
    SeriesRecorder,
    format_summary,
    murmur2,
    parse_position,
    partition_for,
    replay_files,
    run_replay,
)
from stream_monitor.cli import main
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import AlertEvent, LabelEvent, PredictionEvent
from stream_monitor.simulate import TrafficGenerator

N = 18_000
DRIFT_AT = 9_000
RATE = 100.0
START = 1_700_000_000.0
T_CHANGE = START + DRIFT_AT / RATE

#: Malformed lines inserted into the predictions file after line 100, and their reasons.
BAD_PREDICTIONS = [
    (b"{not json", "decode_error"),
    (b"", "empty"),
    (b"[1, 2, 3]", "decode_error"),
    (
        b'{"event_id": "x", "model_id": "fraud-detector", "timestamp": "yesterday"}',
        "validation_error",
    ),
]
BAD_LABELS = [(b'{"event_id": "y", "model_id": "churn-model"}', "validation_error")]


def _cfg(**extra: Any) -> MonitorConfig:
    return MonitorConfig.model_validate({"bootstrap_servers": "unused:9092", **extra})


def _generator() -> TrafficGenerator:
    return TrafficGenerator(seed=21, drift_at=DRIFT_AT, rate=RATE, start_time=START)


def _write_stream(folder: Path, n: int, *, bad: bool) -> tuple[Path, Path]:
    preds, labels = folder / "predictions.jsonl", folder / "labels.jsonl"
    np_, nl = 0, 0
    with open(preds, "wb") as fp, open(labels, "wb") as fl:
        for r in _generator().events(n):
            if r.topic == "predictions":
                fp.write(r.value + b"\n")
                np_ += 1
                if bad and np_ == 100:
                    fp.write(b"".join(v + b"\n" for v, _ in BAD_PREDICTIONS))
            else:
                fl.write(r.value + b"\n")
                nl += 1
                if bad and nl == 50:
                    fl.write(b"".join(v + b"\n" for v, _ in BAD_LABELS))
    return preds, labels


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_stream(tmp_path_factory.mktemp("stream"), N, bad=True)


@pytest.fixture(scope="module")
def replayed(files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> ReplayResult:
    out = tmp_path_factory.mktemp("out")
    return run_replay(_cfg(), out, predictions=files[0], labels=files[1], config_path="x.toml")


def _drifted(model: str) -> str:
    return _generator().drifted_feature(model)


def _features_named(a: AlertEvent) -> set[str | None]:
    return {a.feature, *(s.feature for s in a.signals), *a.top_features}


# --- the drift ----------------------------------------------------------------------------------
def test_drifted_features_fire_after_the_change_point_only(replayed: ReplayResult) -> None:
    alerts = replayed.alerts
    firing = [a for a in alerts if a.status == "firing"]
    assert firing, "no alert at all"
    # Nothing, of any kind, before the change point.
    early = [(a.dedup_key, a.observed_at - T_CHANGE) for a in firing if a.observed_at < T_CHANGE]
    assert not early, early
    gen = _generator()
    for model in gen.models:
        drifted = gen.drifted_feature(model)
        data = [a for a in firing if a.model_id == model and a.kind == "data_drift"]
        assert any(drifted in _features_named(a) for a in data), (model, drifted, data)
        # No input-drift alert names a stable feature.
        stable = set(gen.stable_features(model))
        named = set().union(*(_features_named(a) for a in data))
        assert not named & stable, (model, named & stable)
    # The incidents tell the same story, with a peak at least as large as the firing value.
    data_incidents = [i for i in replayed.incidents if i.kind == "data_drift"]
    assert {i.model_id for i in data_incidents} == set(gen.models)
    for inc in replayed.incidents:
        assert inc.started_at >= T_CHANGE
        assert math.isfinite(inc.peak)


def test_drift_statistic_of_the_drifted_feature_rises_after_the_change(
    replayed: ReplayResult,
) -> None:
    series = replayed.replay.recorder.series
    for model in _generator().models:
        s = series[(model, "data_drift", _drifted(model), None, "psi")]
        before = [v for _i, _b, t, v, _thr in s.points if t < T_CHANGE]
        after = [v for _i, _b, t, v, thr in s.points if t > T_CHANGE + 30 and v > thr]
        assert before and after, (model, s.points)
        assert max(before) < min(after)


def test_invalid_lines_are_counted_by_reason_and_not_fatal(replayed: ReplayResult) -> None:
    r = replayed.replay
    expected: Counter[tuple[str, str]] = Counter()
    for _, reason in BAD_PREDICTIONS:
        expected[("prediction", reason)] += 1
    for _, reason in BAD_LABELS:
        expected[("label", reason)] += 1
    assert r.invalid == expected
    assert r.predictions == N
    assert r.labels > 0.7 * N
    assert r.events == N + r.labels + len(BAD_PREDICTIONS) + len(BAD_LABELS)
    assert replayed.invalid_by_reason() == {"decode_error": 2, "validation_error": 2, "empty": 1}
    text = format_summary(replayed)
    assert "decode_error 2" in text and "validation_error 2" in text and "empty 1" in text


def test_alerts_jsonl_parses_back_as_the_alert_events(replayed: ReplayResult) -> None:
    assert replayed.out_dir is not None
    lines = (replayed.out_dir / "alerts.jsonl").read_bytes().splitlines()
    parsed = [AlertEvent.model_validate(orjson.loads(line)) for line in lines]
    assert parsed == replayed.alerts
    assert all(a.published_at is None for a in parsed)  # replayed, never published


def test_pages_are_the_critical_firing_alerts(replayed: ReplayResult) -> None:
    pages = replayed.pages()
    assert pages == [
        a for a in replayed.alerts if a.status == "firing" and a.severity == "critical"
    ]
    assert sum(replayed.pages_per_day().values()) == len(pages)
    assert "pages" in format_summary(replayed)


# --- the report ---------------------------------------------------------------------------------
_VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"}
_SVG_EMPTY = {"line", "rect", "polyline", "path", "circle"}


class _Report(HTMLParser):
    """Checks nesting and collects, per <svg class="series">, the classes drawn inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs: dict[str, list[str]] = {}
        self.current: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" or (tag == "link" and a.get("href")) or a.get("src"):
            self.external.append(tag)
        if tag == "svg" and a.get("class") == "series":
            self.current = a.get("data-series") or ""
            self.svgs[self.current] = []
        elif self.current is not None and a.get("class"):
            self.svgs[self.current].append(a["class"] or "")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self.current is not None and a.get("class"):
            self.svgs[self.current].append(a["class"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "svg":
            self.current = None


def test_report_is_self_contained_html_with_a_plot_per_series(replayed: ReplayResult) -> None:
    assert replayed.out_dir is not None
    text = (replayed.out_dir / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    p = _Report()
    p.feed(text)
    p.close()
    assert not p.errors, p.errors[:5]
    assert p.stack == [], p.stack
    assert not p.external and "http://" not in text.replace('xmlns="http://www.w3.org', "")
    assert text.count("<svg") == len(p.svgs) > 0
    assert "x.toml" in text and f"{N:,}" in text
    # Every model's drifted feature is plotted with its threshold and its alert band.
    for model in _generator().models:
        title = f"{model} / data_drift / {_drifted(model)}: psi"
        assert title in p.svgs, sorted(p.svgs)
        classes = p.svgs[title]
        assert "values" in classes and "threshold" in classes and "alert-band" in classes
    # A stable feature, if plotted, has no alert band.
    for title, classes in p.svgs.items():
        if "/ data_drift / customer_age:" in title:
            assert "alert-band" not in classes
    # Incidents are listed with their dedup keys.
    for inc in replayed.incidents:
        assert inc.dedup_key in text


# --- bounded observation memory -----------------------------------------------------------------
def _obs(i: int, value: float, *, breached: bool, signal: str = "psi") -> Observation:
    return Observation(
        "m", "data_drift", "x", signal, value, 0.25, breached, not breached, float(i)
    )


def test_series_stay_bounded_and_spread_over_a_long_stream() -> None:
    rec = SeriesRecorder(cap=100)
    n = 200_000
    for i in range(n):
        spike = i == 123_457  # one breach in the middle of a month of quiet windows
        rec(_obs(i, 0.9 if spike else 0.01 * (i % 10), breached=spike))
        if i % 1000 == 0:
            rec.take_batch()
    s = rec.series[("m", "data_drift", "x", None, "psi")]
    assert s.n == n and s.n_breached == 1
    assert len(s.points) <= 100
    times = [t for _i, _b, t, _v, _thr in s.points]
    assert times == sorted(times)
    assert times[0] == 0 and times[-1] > 0.9 * n  # spread over the whole stream
    assert (123_457, 0, 123_457.0, 0.9, 0.25) in s.points  # the breach is kept
    assert s.max_value == 0.9 and s.first_at == 0 and s.last_at == n - 1
    assert s.direction == 1 and s.ratio == pytest.approx(0.9 / 0.25)


def test_series_stay_bounded_when_every_point_breaches() -> None:
    rec = SeriesRecorder(cap=64)
    for i in range(100_000):
        rec(_obs(i, 1.0 + i, breached=True))
    s = next(iter(rec.series.values()))
    assert len(s.points) <= 64 and s.n == s.n_breached == 100_000
    assert s.points[0][2] == 0 and s.points[-1][2] > 90_000


def test_every_replayed_series_is_capped(files: tuple[Path, Path]) -> None:
    cap = 8
    r = Replay(_cfg(drift={"window": {"size": 200}}), series_cap=cap)
    replay_files(r, files[0], files[1], batch_size=1000)
    series = list(r.recorder.series.values())
    assert all(len(s.points) <= cap for s in series)
    assert sum(s.n > 3 * cap for s in series) > 10  # decimation did happen, and often


# --- partitions ---------------------------------------------------------------------------------
def test_partitions_give_the_same_alerts_as_one_state(
    files: tuple[Path, Path], replayed: ReplayResult
) -> None:
    """Every signal is per model (or per segment of a model), and a model lives in one
    partition: splitting the stream by partition changes nothing but the order across models.
    """
    r = Replay(_cfg())
    replay_files(r, files[0], files[1], batch_size=5000, partitions=3)
    # The models are split as the producer's default partitioner would split them.
    models = _generator().models
    assert set(r.states) == {partition_for(m.encode(), 3) for m in models}
    assert len(r.states) > 1
    for p, st in r.states.items():
        assert all(partition_for(m.encode(), 3) == p for m in st.models)

    def by_key(alerts: list[AlertEvent]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for a in alerts:
            # every alert tracker draws its own random incident ids: compare the rest
            d = a.model_dump(exclude={"alert_id", "incident_id"})
            out.setdefault(a.dedup_key, []).append(d)
        return out

    assert by_key(r.alerts) == by_key(replayed.alerts)
    assert r.invalid == replayed.replay.invalid


def test_partition_for_matches_kafka() -> None:
    # Test vectors of Kafka's own UtilsTest.testMurmur2.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    for key in (b"fraud-detector", b"churn-model", b"eta-regressor", b""):
        assert partition_for(key, 1) == 0
        assert 0 <= partition_for(key, 7) < 7
        assert 0 <= partition_for(key, 7, "consistent") < 7


# --- the merge ----------------------------------------------------------------------------------
def _pred(i: int, t: float) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e{i}",
            "model_id": "m",
            "timestamp": t,
            "features": {"x": 1.0},
            "prediction": 0.5,
        }
    )


def _label(i: int, t: float) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "model_id": "m", "timestamp": t, "label": 0.5})


class _Recording(Replay):
    def __init__(self) -> None:
        super().__init__(_cfg())
        self.calls: list[tuple[list[str], list[str]]] = []

    def process(self, predictions: Any, labels: Any) -> list[AlertEvent]:
        self.calls.append(
            (
                [f"p{e.timestamp:g}" for evs in predictions.values() for e in evs],
                [f"l{e.timestamp:g}" for evs in labels.values() for e in evs],
            )
        )
        return super().process(predictions, labels)


def test_files_are_merged_in_event_time_order_and_bad_lines_keep_their_place(
    tmp_path: Path,
) -> None:
    preds = tmp_path / "p.jsonl"
    labels = tmp_path / "l.jsonl"
    preds.write_bytes(b"\n".join([_pred(1, 1), _pred(3, 3), _pred(5, 5)]) + b"\n")
    # The bad line follows the label at t=2: it keeps that place in the merged stream.
    labels.write_bytes(b"\n".join([_label(1, 2), b"{oops", _label(3, 4)]) + b"\n")
    r = _Recording()
    replay_files(r, preds, labels, batch_size=2)
    # Merged: p1 l2 (bad) p3 l4 p5 -> batches of two records: [p1 l2] [bad p3] [l4 p5].
    assert r.calls == [(["p1"], ["l2"]), (["p3"], []), (["p5"], ["l4"])]
    assert r.invalid == Counter({("label", "decode_error"): 1})
    # Equal times: the prediction goes first (stable merge, predictions file first).
    labels.write_bytes(_label(1, 1) + b"\n")
    r = _Recording()
    replay_files(r, preds, labels, batch_size=1)
    assert r.calls[:2] == [(["p1"], []), ([], ["l1"])]


def _merged_batches(
    preds: list[tuple[float | None, str]], labels: list[tuple[float | None, str]], size: int
) -> list[tuple[list[str], list[str]]]:
    """The batches of the reference merge: ``heapq.merge`` of both files one line at a time,
    a bad line (time None) taking the time of the line before it in its file."""

    def keyed(lines: list[tuple[float | None, str]], kind: str) -> list[tuple[float, str, str]]:
        last, out = -math.inf, []
        for t, name in lines:
            last = last if t is None else t
            out.append((last, kind, "" if t is None else name))
        return out

    merged = list(heapq.merge(keyed(preds, "p"), keyed(labels, "l"), key=lambda x: x[0]))
    batches = []
    for i in range(0, len(merged), size):
        chunk = merged[i : i + size]
        batches.append(
            (
                [n for _t, k, n in chunk if k == "p" and n],
                [n for _t, k, n in chunk if k == "l" and n],
            )
        )
    return batches


@pytest.mark.parametrize("seed", range(6))
def test_batches_are_cut_as_the_line_by_line_merge_cuts_them(tmp_path: Path, seed: int) -> None:
    """Files are decoded a batch ahead and each batch is cut with the running maxima of event
    time; the batches (and so the alerts) are those of a line-by-line heapq.merge, for times
    that go backwards, equal times and bad lines, whatever the batch size."""
    rng = random.Random(seed)

    def lines(n: int) -> list[tuple[float | None, str]]:
        out: list[tuple[float | None, str]] = []
        t = 0.0
        for _ in range(n):
            if rng.random() < 0.1:
                out.append((None, ""))
                continue
            t = max(0.0, t + rng.choice([-3, -1, 0, 0, 1, 1, 2, 5]))
            out.append((t, f"{t:g}"))
        return out

    preds, labels = lines(rng.randint(0, 300)), lines(rng.randint(0, 300))

    def write(path: Path, rows: list[tuple[float | None, str]], make: Any) -> None:
        path.write_bytes(
            b"".join(
                (b"{oops" if t is None else make(i, t)) + b"\n" for i, (t, _) in enumerate(rows)
            )
        )

    write(tmp_path / "p.jsonl", preds, _pred)
    write(tmp_path / "l.jsonl", labels, _label)
    for size in (1, 2, 7, 100, 5000):
        r = _Recording()
        replay_files(r, tmp_path / "p.jsonl", tmp_path / "l.jsonl", batch_size=size)
        expected = _merged_batches(preds, labels, size)
        got = [([n[1:] for n in p], [n[1:] for n in lab]) for p, lab in r.calls]
        assert got == expected, size
        assert r.predictions + r.labels + sum(r.invalid.values()) == len(preds) + len(labels)


def test_gzip_files_and_windows_line_ends(tmp_path: Path) -> None:
    preds = tmp_path / "p.jsonl.gz"
    with gzip.open(preds, "wb") as fh:
        fh.write(b"\r\n".join(_pred(i, i) for i in range(50)) + b"\r\n")
    r = Replay(_cfg())
    progress = Progress(io.StringIO(), enabled=True, interval=0.0)
    replay_files(r, preds, batch_size=10, progress=progress)
    assert r.predictions == 50 and not r.invalid
    assert "replay: 50 events, 100.0%" in progress.stream.getvalue()  # type: ignore[union-attr]


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        run_replay(_cfg(), tmp_path / "out", predictions=tmp_path / "nope.jsonl")
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


# --- incidents ----------------------------------------------------------------------------------
def test_incident_peak_covers_the_open_span_only() -> None:
    from stream_monitor.alerts.tracker import AlertTracker

    tracker = AlertTracker()
    rec, log = SeriesRecorder(), IncidentLog()
    values = [0.05, 0.4, 0.9, 0.6, 0.02, 0.03, 0.02, 0.01, 0.02, 0.03, 0.7, 0.8, 0.01]
    for i, v in enumerate(values):
        o = Observation("m", "data_drift", "age", "psi", v, 0.25, v > 0.25, v < 0.1, i * 600.0)
        rec(o)
        log.feed(rec.take_batch(), tracker.observe_many([o]))
    assert log.incidents, "the tracker opened no incident"
    first = log.incidents[0]
    assert first.started_at >= 600.0 and first.resolved_at is not None
    # The peak is the largest value between firing and resolving, not the later 0.8.
    opened = [v for i, v in enumerate(values) if first.started_at <= i * 600 <= first.resolved_at]
    assert first.peak == max(opened)
    assert ("m", "data_drift", "age", None) in first.scopes


def test_report_lists_breached_series_first_and_apart_from_the_closest() -> None:
    """A series that breached without an incident (held pending, in a cooldown) comes before
    those that only came close, under its own heading, even when its value/threshold ratio
    says nothing (a threshold of 0)."""
    from stream_monitor.backtest.report import render_report

    replay = Replay(_cfg())
    rec = replay.recorder
    for j in range(25):  # 25 quiet series, from 0.5 to 0.98 of their threshold
        v = 0.25 * (0.5 + 0.02 * j)
        for i in range(5):
            rec(Observation("m", "data_drift", f"f{j:02d}", "psi", v, 0.25, False, True, i))
    for i in range(5):
        rec(Observation("m", "data_quality", "x", "sentinel_ratio", 0.3, 0.0, i == 2, i != 2, i))
    rec.take_batch()
    result = ReplayResult(config_path=None, input="test", replay=replay, wall_seconds=1.0)
    text = render_report(result, max_other_series=20)
    breached = text.index("Other series: 1 that breached without an incident")
    closest = text.index("Other series: the 19 closest to their thresholds")
    hit = text.index("m / data_quality / x: sentinel_ratio")
    assert breached < hit < closest
    # the closest are the 19 nearest to their thresholds, nearest first
    assert text.index("m / data_drift / f24: psi") < text.index("m / data_drift / f23: psi")
    assert "m / data_drift / f05: psi" not in text


# --- positions and progress ---------------------------------------------------------------------
def test_positions() -> None:
    assert parse_position("0") == Position("offset", 0)
    assert parse_position("2023-11-14T23:13:20+01:00") == Position("time", 1_700_000_000_000)
    assert parse_position("2023-11-14T22:13:20.5Z") == Position("time", 1_700_000_000_500)
    from stream_monitor.errors import ConfigError

    for bad in ("-1", "yesterday", "2023-11-14T22:13:20"):
        with pytest.raises(ConfigError):
            parse_position(bad)


def test_progress_is_throttled_and_always_finishes() -> None:
    now = [0.0]
    out = io.StringIO()
    p = Progress(out, enabled=True, interval=1.0, clock=lambda: now[0])
    for i in range(100):
        now[0] = i * 0.1  # 10 s of updates, ten per second
        p.update(i * 1000, i / 100, 3)
    p.finish(100_000, 4)
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) - 1 <= 10  # about once a second
    assert "ETA" in lines[0] and "events/s" in lines[0] and "3 alerts" in lines[0]
    assert lines[-1].startswith("replay: 100,000 events") and "done in" in lines[-1]
    quiet = io.StringIO()
    p = Progress(quiet, enabled=False, clock=lambda: now[0])
    p.update(5, 0.5, 0)
    now[0] += 100
    p.update(5, 0.5, 0)
    p.finish(10, 0)
    assert len(quiet.getvalue().splitlines()) == 1  # only the final line


# --- the command line ---------------------------------------------------------------------------
@pytest.fixture
def small_files(tmp_path: Path) -> tuple[Path, Path]:
    return _write_stream(tmp_path, 3000, bad=True)


def test_cli_replay_writes_outputs_and_prints_a_summary(
    small_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text('bootstrap_servers = "unused:9092"\n[drift.window]\nsize = 500\n')
    out = tmp_path / "out" / "nested"
    rc = main(
        [
            "replay", "--config", str(cfg), "--predictions", str(small_files[0]),
            "--labels", str(small_files[1]), "--out", str(out), "--batch-size", "700",
            "--partitions", "2",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "events read    " in captured.out and "predictions 3,000" in captured.out
    assert "events/s" in captured.out and "pages" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("replay: ")  # the final progress
    assert (out / "alerts.jsonl").exists() and (out / "report.html").exists()


@pytest.mark.parametrize(
    ("toml", "extra", "message"),
    [
        ('bootstrap_servers = "x:1"\n', ["--predictions", "{missing}"], "nope.jsonl"),
        ('bootstrap_servers = "x:1"\n[drift.window]\nsize = 0\n', [], "size"),
        ("bootstrap_servers = \n", [], "Invalid value"),
        ('bootstrap_servers = "x:1"\n', ["--start", "5"], "--from-kafka"),
        (
            'bootstrap_servers = "x:1"\n[[references]]\nmodel_id = "m"\npath = "gone.json"\n',
            [],
            "gone.json",
        ),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(
    small_files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    toml: str,
    extra: list[str],
    message: str,
) -> None:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(toml)
    args = ["replay", "--config", str(cfg), "--out", str(tmp_path / "out")]
    if "--predictions" in extra:
        extra = ["--predictions", str(tmp_path / "nope.jsonl")]
    else:
        args += ["--predictions", str(small_files[0])]
    rc = main(args + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("stream-monitor replay: error: "), err
    assert message in err[0]


def test_cli_needs_one_input(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--config", "x.toml", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_replayed_events_decode_like_live(files: tuple[Path, Path]) -> None:
    """Sanity of the fixture: each line is one record value as published."""
    first = files[0].read_bytes().splitlines()[0]
    assert isinstance(PredictionEvent.model_validate(orjson.loads(first)), PredictionEvent)
    first_label = files[1].read_bytes().splitlines()[0]
    assert LabelEvent.model_validate(orjson.loads(first_label)).model_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-kafka", "--labels", "l.jsonl"], "--labels goes with --predictions"),
        (["--from-kafka", "--partitions", "3"], "--partitions is for file replays"),
        (["--from-kafka", "--start", "last tuesday"], "not an offset nor an RFC 3339 time"),
        (["--predictions", "p.jsonl", "--config", "missing.toml"], "missing.toml"),
    ],
)
def test_cli_argument_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text('bootstrap_servers = "x:1"\n')
    rc = main(["replay", "--config", str(cfg), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("stream-monitor replay: error: "), err
    assert message in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_without_a_config_uses_the_defaults(
    tmp_path: Path, small_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = main(["replay", "--predictions", str(small_files[0]), "--out", str(out)])
    assert rc == 0
    assert (out / "alerts.jsonl").exists() and (out / "report.html").exists()
    assert "events read" in capsys.readouterr().out
