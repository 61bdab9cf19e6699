"""Bad input on the real broker: every malformed record reaches the dead-letter topic with its
reason and original bytes, every valid record is still processed, the consumer keeps going."""

from __future__ import annotations

import orjson
import pytest

from stream_monitor.kafka.clients import ensure_input_topics
from stream_monitor.simulate import TrafficGenerator, bad_records

from .kafka_utils import monitor_config, produce_all, read_all, running_app, scrape, wait_until

pytestmark = pytest.mark.integration


def test_bad_records_go_to_the_dead_letter_topic(kafka_bootstrap, topic_names):
    t = topic_names
    ensure_input_topics(
        kafka_bootstrap, partitions=2, predictions=t["predictions"], labels=t["labels"]
    )
    gen = TrafficGenerator(
        seed=3,
        models=("fraud-detector",),
        prediction_topic=t["predictions"],
        label_topic=t["labels"],
    )
    valid = [(r.topic, r.key, r.value) for r in gen.events(3000)]
    bad_p = [(t["predictions"], k, v, reason) for k, v, reason in bad_records(t["predictions"])]
    bad_l = [(t["labels"], k, v, reason) for k, v, reason in bad_records(t["labels"], kind="label")]
    # A record keyed by another model than its model_id would break co-partitioning.
    wrong_key = orjson.loads(valid[0][2])
    wrong_key["event_id"] = "wrong-key-1"
    bad_p.append((t["predictions"], b"another-model", orjson.dumps(wrong_key), "key_mismatch"))
    bad = bad_p + bad_l
    # Interleave: bad records spread among the valid ones.
    mixed: list[tuple[str, bytes | None, bytes]] = []
    step = len(valid) // (len(bad) + 1)
    for i, rec in enumerate(valid):
        mixed.append(rec)
        if i % step == step - 1 and (i // step) < len(bad):
            topic, key, value, _ = bad[i // step]
            mixed.append((topic, key, value))
    assert len(mixed) == len(valid) + len(bad)
    produce_all(kafka_bootstrap, mixed)
    n_valid_predictions = sum(1 for r in valid if r[0] == t["predictions"])
    n_valid_labels = len(valid) - n_valid_predictions

    cfg = monitor_config(kafka_bootstrap, t)
    with running_app(cfg) as app:
        assert app.server is not None
        port = app.server.port

        def published() -> float:
            return scrape(port).get(("stream_monitor_dead_letters_published_total", ()), 0.0)

        wait_until(lambda: published() == len(bad), 120, f"{len(bad)} dead letters")
        metrics = scrape(port)
        with app.lock:
            model = app.states and next(
                m
                for st in app.states.values()
                for mid, m in st.models.items()
                if mid == "fraud-detector"
            )
            # join.matched counts labels read before their prediction too (early.matched)
            joined = sum(st.join.matched for st in app.states.values())
            unmatched = sum(st.unmatched_labels + len(st.early) for st in app.states.values())

    # Every valid prediction was monitored, every valid label joined.
    assert model.n_events == n_valid_predictions
    assert joined == n_valid_labels and unmatched == 0

    # Every bad record is on the dead-letter topic, byte for byte, with its reason.
    dead = read_all(kafka_bootstrap, t["dead_letter"])
    assert len(dead) == len(bad)
    got = sorted(
        (
            m.value(),
            dict(m.headers())["x-dead-letter-reason"].decode(),
            dict(m.headers())["x-source-topic"].decode(),
        )
        for m in dead
    )
    want = sorted((v, reason, topic) for topic, _k, v, reason in bad)
    assert got == want
    for m in dead:
        h = dict(m.headers())
        assert h["x-dead-letter-detail"], "a human-readable detail is attached"
        assert int(h["x-source-offset"]) >= 0 and int(h["x-source-partition"]) in (0, 1)

    # Counted per reason on /metrics.
    for reason in {r for *_, r in bad}:
        expected = sum(1 for *_, r in bad_p if r == reason)
        key = (("reason", reason), ("topic", t["predictions"]))
        assert metrics.get(("stream_monitor_events_invalid_total", key), 0.0) == expected, reason
