"""The project-provisioned broker is a real Kafka that supports what later releases rely on:
transactions (exactly-once output) and compacted topics (state changelogs)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from .kafka_utils import read_all

pytestmark = pytest.mark.integration


def test_transactions_commit_and_abort(kafka_bootstrap):
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"t-{topic}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"committed")
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"aborted")
    p.abort_transaction(30)
    values = [m.value() for m in read_all(kafka_bootstrap, topic, idle=2.0)]
    assert values == [b"committed"]


def test_compacted_topic_can_be_created(kafka_bootstrap):
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1, config={"cleanup.policy": "compact"})])[
        topic
    ].result(30)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(30)
    assert configs["cleanup.policy"].value == "compact"
