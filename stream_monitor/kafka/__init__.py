"""Thin wrappers over confluent-kafka: client construction, topic set-up and Protocols."""

from __future__ import annotations

from stream_monitor.kafka.protocols import ConsumerLike, MessageLike, ProducerLike
from stream_monitor.kafka.records import RawRecord

__all__ = ["ConsumerLike", "MessageLike", "ProducerLike", "RawRecord"]
