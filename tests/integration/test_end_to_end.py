"""End to end on the real broker: a stream with a known sudden shift in one feature per model.

The monitor must publish a firing alert for the shifted feature of every model, none for any
stable feature, none before the change point, expose the drift gauge on /metrics, and commit
its input offsets when it stops.
"""

from __future__ import annotations

import gc

import orjson
import pytest

from stream_monitor.events.schema import AlertEvent
from stream_monitor.kafka.clients import ensure_input_topics
from stream_monitor.simulate import TrafficGenerator

from .kafka_utils import (
    committed_offsets,
    end_offsets,
    monitor_config,
    produce_all,
    read_all,
    running_app,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
PREDICTIONS = 30_000
DRIFT_AT = 15_000
RATE = 100.0
START = 1_790_000_000.0


def test_sudden_shift_alerts_on_the_shifted_feature_only(kafka_bootstrap, topic_names):
    t = topic_names
    ensure_input_topics(
        kafka_bootstrap, partitions=PARTITIONS, predictions=t["predictions"], labels=t["labels"]
    )
    gen = TrafficGenerator(
        seed=11,
        drift_at=DRIFT_AT,
        rate=RATE,
        start_time=START,
        prediction_topic=t["predictions"],
        label_topic=t["labels"],
    )
    produced = produce_all(
        kafka_bootstrap, ((r.topic, r.key, r.value) for r in gen.events(PREDICTIONS))
    )

    cfg = monitor_config(kafka_bootstrap, t)
    with running_app(cfg) as app:
        assert app.server is not None
        port = app.server.port

        def consumed() -> float:
            m = scrape(port)
            return sum(
                v for (name, _), v in m.items() if name == "stream_monitor_events_consumed_total"
            )

        wait_until(lambda: consumed() == produced, 120, f"{produced} records consumed")
        # A full collection while the monitor runs (the collector's pauses are timed process-
        # wide; young ones need 100,000 net allocations, which a short run may not reach).
        gc.collect()
        metrics = scrape(port)
        # the scrapes read the state on the loop's thread, between batches
        assert app.reads.served > 0
        ready = (
            __import__("urllib.request")
            .request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
            .status
        )
    assert ready == 200
    # the garbage collector's pauses while the monitor ran, timed per generation
    full = (("generation", "2"),)
    assert metrics[("stream_monitor_gc_pause_seconds_count", full)] >= 1
    assert metrics[("stream_monitor_gc_pause_seconds_sum", full)] > 0

    alerts = [
        AlertEvent.model_validate(orjson.loads(m.value()))
        for m in read_all(kafka_bootstrap, t["alerts"])
    ]
    firing = [a for a in alerts if a.status == "firing"]
    drift_time = START + DRIFT_AT / RATE

    for model in gen.models:
        shifted = gen.drifted_feature(model)
        stable = set(gen.stable_features(model))
        mine = [a for a in alerts if a.model_id == model]
        assert any(a.kind == "data_drift" and a.feature == shifted for a in firing), (
            f"no data_drift alert for {model}/{shifted}: {[a.dedup_key for a in mine]}"
        )
        # a model's drifting features share one incident: no stable one may be listed in it
        on_stable = [a for a in mine if a.feature in stable or stable & set(a.top_features)]
        assert not on_stable, (
            f"alerts on stable features of {model}: "
            f"{[(a.dedup_key, a.signal, a.value, a.top_features) for a in on_stable]}"
        )
        # concept drift is part of the model's performance incident (one page per root cause)
        assert any(
            s.kind == "concept_drift" and s.breached
            for a in alerts
            if a.model_id == model and a.status != "resolved"
            for s in a.signals
        )
        key = (("feature", shifted), ("model_id", model), ("statistic", "psi"))
        assert metrics[("stream_monitor_feature_drift_score", key)] > 0.25
        for f in stable:
            k = (("feature", f), ("model_id", model), ("statistic", "psi"))
            assert metrics[("stream_monitor_feature_drift_score", k)] < 0.25, f

    # Once per incident: one firing event per dedup key, and nothing before the change point.
    keys = [a.dedup_key for a in firing]
    assert len(keys) == len(set(keys)), keys
    assert all(a.observed_at >= drift_time for a in firing), [
        (a.dedup_key, a.observed_at - drift_time) for a in firing if a.observed_at < drift_time
    ]
    assert all(a.published_at is not None and a.summary for a in alerts)

    # Offsets were committed on shutdown, up to the end of both input topics.
    for topic in (t["predictions"], t["labels"]):
        assert committed_offsets(kafka_bootstrap, t["group"], topic, PARTITIONS) == end_offsets(
            kafka_bootstrap, topic, PARTITIONS
        )
