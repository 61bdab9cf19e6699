"""Replay equals live processing, on the real broker.

A generated stream with a drift (and some malformed records) is produced to the input topics
and processed by the live Application; then the same events are replayed (a) from the topics,
through ``stream-monitor replay --from-kafka``, and (b) from JSON Lines files holding the same
record values. The alert timelines must be the same.

Prediction-driven alerts (data drift, prediction drift, data quality) must be identical:
same status, dedup key, event time and value, in the same order per dedup key (not the same
ids: every monitor draws its own random incident ids). Their signals
depend only on each model's predictions, in order, whatever the batches (PartitionState is
batch-size invariant for them).

Label-driven alerts (concept drift, performance) are compared approximately: the same
incidents fire, at about the same event time. They cannot be equal in general: the
concept-drift monitor judges the error level once per ``PartitionState.process`` call (per
batch) and its detectors eat the errors in join order, and the performance windows count
labelled predictions in join order; both orders depend on how the consumer interleaved the
two topics and cut batches, which differs between any two live runs (see docs/backtest.md).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from stream_monitor.backtest import (
    Replay,
    partition_for,
    replay_files,
    run_replay,
)
from stream_monitor.cli import main
from stream_monitor.events.schema import AlertEvent
from stream_monitor.kafka.clients import ensure_input_topics
from stream_monitor.simulate import Record, TrafficGenerator, bad_records, run_simulation

from .kafka_utils import monitor_config, read_all, running_app, scrape, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 3
PREDICTIONS = 24_000
DRIFT_AT = 12_000
RATE = 100.0
#: Event time (and record timestamps) starts two hours ago: older records could be deleted by
#: the broker's retention (7 days by default) while the test runs.
START = float(int(time.time()) - 7200)
T_CHANGE = START + DRIFT_AT / RATE
PREDICTION_KINDS = {"data_drift", "prediction_drift", "data_quality"}
LABEL_KINDS = {"concept_drift", "performance"}
LABEL_RATE = 0.8  # the generator's default
#: Records per batch, live (the config's batch_size, and batch_max_records so that a live
#: drain does not take bigger ones) and replayed alike: smaller than the default 2,000 so that
#: label-driven alert times are comparable within the stream's length.
BATCH = 500
#: A label-driven judgement is stamped with the event time of the pair that completed it,
#: whatever the batch (docs/backtest.md), but live the join order can differ from a replay's:
#: a label read before its prediction in the same batch joins in label order, and which labels
#: the live consumer reads ahead of their predictions depends on fetch timing, within about a
#: batch of one partition's predictions, i.e. of one model's. Which performance window (1,000
#: labels of one model) breaches first may then differ by one. Live and replay must agree
#: within two batch spans and one window.
MODEL_BATCH_SECONDS = BATCH / (RATE / 3)
WINDOW_SECONDS = 1000 / (RATE * LABEL_RATE / 3)
LABEL_TOLERANCE_SECONDS = 2 * MODEL_BATCH_SECONDS + WINDOW_SECONDS


def _bad() -> list[tuple[str, bytes | None, bytes, str]]:
    """(kind, key, value, reason) of malformed records, none of them key mismatches (a file
    line has no key to mismatch)."""
    out = []
    for kind in ("prediction", "label"):
        for key, value, reason in bad_records(kind + "s", kind=kind):  # type: ignore[arg-type]
            out.append((kind, key, value, reason))
    return out


def _produce(bootstrap: str, t: dict[str, str], gen: TrafficGenerator) -> list[Record]:
    """Malformed records first (stamped with the stream's start), then the stream, each
    record stamped with its event time. Returns the stream's records in produced order."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "acks": "all",
            "message.max.bytes": 4_000_000,
            "queue.buffering.max.messages": 500_000,
        }
    )
    for kind, key, value, _reason in _bad():
        topic = t["predictions"] if kind == "prediction" else t["labels"]
        producer.produce(topic, value=value, key=key, timestamp=round(START * 1000))
    assert producer.flush(30) == 0
    run_simulation(producer, gen, PREDICTIONS, rate=None)
    return list(gen.events(PREDICTIONS))


def _write_files(folder: Path, t: dict[str, str], records: list[Record]) -> tuple[Path, Path]:
    preds, labels = folder / "predictions.jsonl", folder / "labels.jsonl"
    with open(preds, "wb") as fp, open(labels, "wb") as fl:
        for kind, _key, value, _reason in _bad():
            (fp if kind == "prediction" else fl).write(value + b"\n")
        for r in records:
            (fp if r.topic == t["predictions"] else fl).write(r.value + b"\n")
    return preds, labels


def _by_key(alerts: list[AlertEvent], kinds: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for a in alerts:
        if a.kind in kinds:
            out.setdefault(a.dedup_key, []).append((a.observed_at, a.status, a.dedup_key, a.value))
    return out


def _firsts(alerts: list[AlertEvent]) -> dict[str, float]:
    """Event time of the first firing per label-driven dedup key."""
    out: dict[str, float] = {}
    for a in alerts:
        if a.kind in LABEL_KINDS and a.status == "firing":
            out.setdefault(a.dedup_key, a.observed_at)
    return out


def _read_jsonl(path: Path) -> list[AlertEvent]:
    return [AlertEvent.model_validate(orjson.loads(x)) for x in path.read_bytes().splitlines()]


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def test_replay_equals_live_processing(
    kafka_bootstrap: str,
    topic_names: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    t = topic_names
    ensure_input_topics(
        kafka_bootstrap, partitions=PARTITIONS, predictions=t["predictions"], labels=t["labels"]
    )
    gen = TrafficGenerator(
        seed=17,
        drift_at=DRIFT_AT,
        label_rate=LABEL_RATE,
        rate=RATE,
        start_time=START,
        prediction_topic=t["predictions"],
        label_topic=t["labels"],
    )
    records = _produce(kafka_bootstrap, t, gen)
    produced = len(records) + len(_bad())

    # --- live ------------------------------------------------------------------------------
    cfg = monitor_config(kafka_bootstrap, t, batch_size=BATCH, batch_max_records=BATCH)
    with running_app(cfg) as app:
        assert app.server is not None
        port = app.server.port

        def consumed() -> float:
            return sum(
                v
                for (name, _), v in scrape(port).items()
                if name == "stream_monitor_events_consumed_total"
            )

        wait_until(lambda: consumed() == produced, 180, f"{produced} records consumed")
    live = [
        AlertEvent.model_validate(orjson.loads(m.value()))
        for m in read_all(kafka_bootstrap, t["alerts"])
    ]
    assert any(a.kind == "data_drift" and a.status == "firing" for a in live), live

    # --- (a) the topic range ----------------------------------------------------------------
    started = time.monotonic()
    topic_result = run_replay(cfg, tmp_path / "from-kafka", from_kafka=True)
    topic_seconds = time.monotonic() - started
    assert topic_result.events == produced
    from_topic = _read_jsonl(tmp_path / "from-kafka" / "alerts.jsonl")
    assert from_topic == topic_result.alerts

    # --- (b) the same record values from JSON Lines files ----------------------------------
    preds_file, labels_file = _write_files(tmp_path, t, records)
    out_files = tmp_path / "from-files"
    result = run_replay(
        cfg, out_files, predictions=preds_file, labels=labels_file, batch_size=BATCH
    )
    from_files = result.alerts
    assert _read_jsonl(out_files / "alerts.jsonl") == from_files
    expected_invalid = Counter((kind, reason) for kind, _k, _v, reason in _bad())
    assert result.replay.invalid == expected_invalid
    assert result.events == produced

    # --- equal prediction-driven timelines -------------------------------------------------
    live_p = _by_key(live, PREDICTION_KINDS)
    assert live_p, "no prediction-driven alert live"
    assert _by_key(from_topic, PREDICTION_KINDS) == live_p
    assert _by_key(from_files, PREDICTION_KINDS) == live_p
    assert all(a.observed_at >= T_CHANGE for a in live if a.status == "firing")

    # --- label-driven: the same incidents, at about the same time --------------------------
    live_l = _firsts(live)
    assert live_l, "no label-driven alert live"
    for name, other in (("topic", from_topic), ("files", from_files)):
        mine = _firsts(other)
        assert set(mine) == set(live_l), (name, sorted(mine), sorted(live_l))
        assert all(at >= T_CHANGE for at in mine.values()), (name, mine)
        for key, at in live_l.items():
            assert abs(mine[key] - at) <= LABEL_TOLERANCE_SECONDS, (name, key, mine[key] - at)
    with capsys.disabled():
        print(
            f"\nlive alerts={len(live)}, topic replay {topic_seconds:.1f} s; label-driven first "
            f"firings, replay - live (tolerance {LABEL_TOLERANCE_SECONDS:.0f} s):\n"
            + "\n".join(
                f"  {k}: topic {_firsts(from_topic)[k] - v:+.2f} s, files "
                f"{_firsts(from_files)[k] - v:+.2f} s"
                for k, v in sorted(live_l.items())
            )
        )

    # --- file partitions as the producer placed them ---------------------------------------
    r = Replay(cfg)
    replay_files(
        r,
        preds_file,
        labels_file,
        batch_size=BATCH,
        partitions=PARTITIONS,
        partitioner="consistent",
    )
    placed = {m: p for p, st in r.states.items() for m in st.models}
    on_topic = {m: p for p, st in topic_result.replay.states.items() for m in st.models}
    assert placed == on_topic and len(on_topic) == len(gen.models)
    # librdkafka's default partitioner is CRC-32 of the key ("consistent").
    assert all(p == partition_for(m.encode(), PARTITIONS, "consistent") for m, p in placed.items())
    assert _by_key(r.alerts, PREDICTION_KINDS) == live_p

    # --- a time range, through the command line: exactly the records stamped inside it ------
    toml = tmp_path / "monitor.toml"
    toml.write_text(
        f'bootstrap_servers = "{kafka_bootstrap}"\n'
        f'group_id = "{t["group"]}"\n'
        f"batch_size = {BATCH}\n"
        "[topics]\n"
        + "".join(f'{k} = "{t[k]}"\n' for k in ("predictions", "labels", "alerts", "dead_letter"))
    )
    lo, hi = START + 60.0, START + 150.0
    stamps = [round(rec.timestamp * 1000) for rec in records]
    inside = sum(1 for s in stamps if round(lo * 1000) <= s < round(hi * 1000))
    out_range = tmp_path / "range"
    rc = main(
        [
            "replay", "--config", str(toml), "--from-kafka", "--start", _rfc3339(lo),
            "--end", _rfc3339(hi), "--out", str(out_range), "--progress",
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert f"events read    {inside:,} " in printed.out, (inside, printed.out)
    assert "replay: " in printed.err


def test_replay_from_kafka_errors_are_one_line(
    kafka_bootstrap: str, topic_names: dict[str, str], tmp_path: Path, capsys: Any
) -> None:
    toml = tmp_path / "monitor.toml"
    toml.write_text(
        f'bootstrap_servers = "{kafka_bootstrap}"\n[topics]\n'
        f'predictions = "{topic_names["predictions"]}"\nlabels = "{topic_names["labels"]}"\n'
    )
    rc = main(["replay", "--config", str(toml), "--from-kafka", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "does not exist" in err[0], err
