"""Small Protocols standing in for confluent-kafka objects, so the pipeline is testable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from confluent_kafka import TopicPartition

__all__ = ["ConsumerLike", "MessageLike", "ProducerLike"]

Headers = Sequence[tuple[str, bytes | None]] | None


class MessageLike(Protocol):
    """What the decoder reads of a ``confluent_kafka.Message``."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Headers: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


class ProducerLike(Protocol):
    def produce(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        *,
        headers: Any = ...,
        on_delivery: Callable[[Any, Any], None] | None = ...,
        timestamp: int = ...,
    ) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


class ConsumerLike(Protocol):
    """What the delivery checkpoint needs of a consumer: committing offsets (at-least-once)
    and the group metadata that fences a transaction (exactly-once)."""

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> Any: ...
    def consumer_group_metadata(self) -> Any: ...
