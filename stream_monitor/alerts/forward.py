"""Forward alert events from Kafka to Alertmanager or PagerDuty (``stream-monitor forward``).

A consumer group of its own (``stream-monitor-forward`` by default) reads the alerts topic
(``read_committed``) and POSTs each alert as :mod:`stream_monitor.alerts.routing` maps it.
Delivery: a timeout per request; 429, 5xx and connection errors are retried with exponential
backoff, then the alert is given up (logged, counted); other 4xx are given up at once. A
record's offset is committed only after its POST succeeded or was given up, so a crash re-posts
(both APIs are idempotent for a repeated alert). A record that is not an alert event is logged
and skipped.

Alertmanager resolves an alert posted without ``endsAt`` after its ``resolve_timeout`` (5 min by
default) unless it is posted again, as Prometheus does. The forwarder therefore re-posts the
alerts still firing every ``resend_seconds``, and learns which they are when it is assigned a
partition by reading that partition up to the group's committed offset (alerts are few), so a
restart or a rebalance does not let Alertmanager resolve them on its own.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pydantic import ValidationError

from stream_monitor.alerts.routing import to_alertmanager, to_pagerduty
from stream_monitor.config import MonitorConfig
from stream_monitor.events.schema import AlertEvent
from stream_monitor.kafka.clients import client_config

__all__ = [
    "PAGERDUTY_URL",
    "Delivery",
    "Destination",
    "ForwardStats",
    "Forwarder",
    "post_json",
]

log = logging.getLogger(__name__)

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_GROUP_ID = "stream-monitor-forward"

Outcome = Literal["ok", "failed", "stopped"]


@dataclass(frozen=True)
class Delivery:
    """How hard one POST is tried: ``retries`` more attempts after the first, waiting
    ``backoff`` seconds, doubled each time up to ``max_backoff`` (about 90 s in all by default)."""

    timeout: float = 10.0
    retries: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0


@dataclass(frozen=True)
class Destination:
    """Where alerts go: ``alertmanager`` (``url`` is its base, e.g. http://am:9093, or the full
    ``/api/v2/alerts`` URL) or ``pagerduty`` (``url`` defaults to the Events API v2)."""

    kind: Literal["alertmanager", "pagerduty"]
    url: str | None = None
    routing_key: str | None = None
    source: str = "stream-monitor"
    client_url: str | None = None
    generator_url: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "pagerduty" and not self.routing_key:
            raise ValueError("pagerduty needs a routing key")
        if self.kind == "alertmanager" and not self.url:
            raise ValueError("alertmanager needs its URL")

    @property
    def endpoint(self) -> str:
        if self.kind == "pagerduty":
            return self.url or PAGERDUTY_URL
        base = (self.url or "").rstrip("/")
        return base if base.endswith("/api/v2/alerts") else f"{base}/api/v2/alerts"

    def body(self, alert: AlertEvent) -> Any:
        if self.kind == "pagerduty":
            assert self.routing_key is not None
            return to_pagerduty(
                alert, self.routing_key, source=self.source, client_url=self.client_url
            )
        return [to_alertmanager(alert, generator_url=self.generator_url)]


@dataclass
class ForwardStats:
    """Counters of one forwarder (also logged when it stops)."""

    posted: int = 0
    failed: int = 0
    skipped: int = 0
    resent: int = 0
    attempts: int = 0


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def post_json(
    url: str,
    body: Any,
    delivery: Delivery = Delivery(),
    *,
    stop: threading.Event | None = None,
    on_attempt: Callable[[], None] | None = None,
) -> Outcome:
    """POST ``body`` as JSON; ``ok`` on a 2xx, ``failed`` once given up, ``stopped`` when
    ``stop`` was set while waiting to retry."""
    data = orjson.dumps(body)
    headers = {"Content-Type": "application/json", "User-Agent": "stream-monitor"}
    delay = delivery.backoff
    for attempt in range(delivery.retries + 1):
        if on_attempt is not None:
            on_attempt()
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=delivery.timeout) as resp:
                resp.read()
            return "ok"
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            if not _retryable(exc.code):
                log.error("POST %s refused status=%d body=%s (not retried)", url, exc.code, detail)
                return "failed"
            why = f"status={exc.code} body={detail}"
        except (OSError, http.client.HTTPException) as exc:  # URLError, refused, timeouts
            why = f"error={exc}"
        if attempt == delivery.retries:
            log.error("POST %s failed after %d attempts: %s", url, attempt + 1, why)
            return "failed"
        log.warning(
            "POST %s attempt %d failed (%s); retrying in %.1f s", url, attempt + 1, why, delay
        )
        if stop is not None:
            if stop.wait(delay):
                return "stopped"
        else:
            time.sleep(delay)
        delay = min(delay * 2, delivery.max_backoff)
    return "failed"  # pragma: no cover - the loop returns


@dataclass
class _Firing:
    partition: int
    body: dict[str, Any]


@dataclass
class Forwarder:
    """Consume the alerts topic and post every alert to ``destination``; see the module doc."""

    cfg: MonitorConfig
    destination: Destination
    topic: str | None = None
    group_id: str = DEFAULT_GROUP_ID
    #: Where a new group starts: the oldest retained alert, or only new ones (the default).
    from_beginning: bool = False
    #: Alertmanager only: re-post firing alerts this often (below its ``resolve_timeout``).
    resend_seconds: float = 60.0
    delivery: Delivery = Delivery()
    stats: ForwardStats = field(default_factory=ForwardStats)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._firing: dict[str, _Firing] = {}
        #: When firing alerts are next re-posted (monotonic clock).
        self._next_resend = time.monotonic() + self.resend_seconds
        if self.topic is None:
            self.topic = self.cfg.topics.alerts

    # --- lifecycle ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _consumer_config(self, group_id: str, reset: str) -> dict[str, Any]:
        return {
            **client_config(self.cfg),
            **self.cfg.consumer_overrides,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": reset,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }

    def run(self) -> ForwardStats:
        assert self.topic is not None
        reset = "earliest" if self.from_beginning else "latest"
        consumer = Consumer(self._consumer_config(self.group_id, reset))
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "forwarding topic=%s group=%s to=%s url=%s",
            self.topic,
            self.group_id,
            self.destination.kind,
            self.destination.endpoint,
        )
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is not None and not self._handle(consumer, msg):
                    break
                self._resend()
        finally:
            consumer.close()
            log.info("forwarder stopped %s", self.stats)
        return self.stats

    # --- one record ---------------------------------------------------------------------------
    def _handle(self, consumer: Consumer, msg: Any) -> bool:
        """Post one record; False when stopped before it was settled (nothing committed)."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error=%s", err)
            return True
        alert = _parse(msg.value())
        if alert is None:
            self.stats.skipped += 1
            log.warning(
                "skipping a record that is not an alert event partition=%d offset=%d",
                msg.partition(),
                msg.offset(),
            )
        else:
            outcome = self._deliver(alert, msg.partition())
            if outcome == "stopped":
                return False
        try:
            consumer.commit(message=msg, asynchronous=False)
        except Exception as exc:  # a rebalance in progress: the record may be posted again
            log.warning("offset commit failed partition=%d: %s", msg.partition(), exc)
        return True

    def _post(self, body: Any) -> Outcome:
        def attempt() -> None:
            self.stats.attempts += 1

        return post_json(
            self.destination.endpoint,
            body,
            self.delivery,
            stop=self._stop,
            on_attempt=attempt,
        )

    def _deliver(self, alert: AlertEvent, partition: int) -> Outcome:
        body = self.destination.body(alert)
        outcome = self._post(body)
        if outcome == "ok":
            self.stats.posted += 1
            log.info(
                "posted alert status=%s dedup_key=%s alert_id=%s",
                alert.status,
                alert.dedup_key,
                alert.alert_id,
            )
        elif outcome == "failed":
            self.stats.failed += 1
            log.error(
                "gave up on alert status=%s dedup_key=%s alert_id=%s",
                alert.status,
                alert.dedup_key,
                alert.alert_id,
            )
        if outcome != "stopped" and self.destination.kind == "alertmanager":
            self._track(alert, partition, body[0])
        return outcome

    def _track(self, alert: AlertEvent, partition: int, item: dict[str, Any]) -> None:
        """Remember firing alerts for re-posting; a resolve ends one (and, should its labels
        differ from the firing alert's, that alert too, so nothing is left open)."""
        if alert.status == "firing":
            self._firing[alert.dedup_key] = _Firing(partition, item)
            return
        prev = self._firing.pop(alert.dedup_key, None)
        if prev is not None and prev.body["labels"] != item["labels"]:
            self._post([{**prev.body, "endsAt": item["endsAt"]}])

    def _resend(self) -> None:
        if self.destination.kind != "alertmanager" or not self._firing:
            return
        now = time.monotonic()
        if now < self._next_resend:
            return
        self._next_resend = now + self.resend_seconds
        bodies = [f.body for f in self._firing.values()]
        if self._post(bodies) == "ok":
            self.stats.resent += len(bodies)
            log.debug("re-posted firing alerts n=%d", len(bodies))

    # --- rebalances ---------------------------------------------------------------------------
    def _on_revoke(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in parts}
        self._firing = {k: f for k, f in self._firing.items() if f.partition not in gone}

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        if self.destination.kind != "alertmanager" or not parts:
            return
        ends: dict[int, int] = {}
        try:
            for tp in consumer.committed(parts, timeout=10):
                if tp.offset >= 0:
                    ends[tp.partition] = tp.offset
                elif not self.from_beginning:  # a new group starts at the end: learn it all
                    ends[tp.partition] = consumer.get_watermark_offsets(tp, timeout=10)[1]
        except Exception as exc:
            log.warning("could not read committed offsets to find firing alerts: %s", exc)
            return
        if self._rebuild({p: e for p, e in ends.items() if e > 0}):
            self._next_resend = 0.0  # re-post what is firing at once

    def _rebuild(self, ends: dict[int, int], timeout: float = 30.0) -> int:
        """Read partitions up to ``ends`` (exclusive) to learn which alerts are firing; return
        how many of theirs are."""
        if not ends:
            return 0
        assert self.topic is not None
        conf = self._consumer_config(f"{self.group_id}-rebuild", "earliest")
        conf["enable.partition.eof"] = True
        reader = Consumer(conf)
        pending = dict(ends)
        reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline:
                for m in reader.consume(500, 0.5):
                    p, offset, err = m.partition(), m.offset(), m.error()
                    if p is None or p not in pending:
                        continue
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.pop(p, None)
                        continue
                    if offset is None or offset >= pending[p]:
                        pending.pop(p, None)
                        continue
                    alert = _parse(m.value())
                    if alert is not None and alert.status == "firing":
                        self._firing[alert.dedup_key] = _Firing(p, self.destination.body(alert)[0])
                    elif alert is not None:
                        self._firing.pop(alert.dedup_key, None)
                    if offset + 1 >= pending[p]:
                        pending.pop(p, None)
        finally:
            reader.close()
        if pending:
            log.warning("gave up reading firing alerts of partitions=%s", sorted(pending))
        found = sum(1 for f in self._firing.values() if f.partition in ends)
        log.info("firing alerts found on assignment n=%d", found)
        return found


def _parse(value: bytes | None) -> AlertEvent | None:
    if not value:
        return None
    try:
        return AlertEvent.model_validate(orjson.loads(value))
    except (orjson.JSONDecodeError, ValidationError, TypeError):
        return None
