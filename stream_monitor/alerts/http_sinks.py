"""HTTP alert sinks: Alertmanager and PagerDuty, posting each alert as routing.py maps it.

An :class:`HttpAlertSink` is an :class:`~stream_monitor.alerts.sinks.AlertSink` (``write`` a
batch, ``close``) that POSTs one JSON body per alert with a :class:`Delivery` policy: a timeout
per request; 429, 5xx and connection errors retried with exponential backoff, then the alert is
given up (logged, counted); other 4xx given up at once. :meth:`HttpAlertSink.deliver` posts one
alert and tells how it ended (an :data:`Outcome`: ``ok``, ``failed`` once given up, ``stopped``
when :meth:`HttpAlertSink.stop` was called while it waited to retry), so a caller can commit what
was settled and nothing else; ``write`` raises :class:`DeliveryStopped` instead of returning
when it is stopped half-way.

A subclass says what is posted where (``endpoint``, :meth:`HttpAlertSink.body`):

- :class:`AlertmanagerSink` (``POST /api/v2/alerts``). Alertmanager resolves an alert posted
  without ``endsAt`` after its ``resolve_timeout`` unless it is posted again, so this sink
  remembers the alerts still firing and :meth:`~AlertmanagerSink.tick` re-posts them every
  ``resend_seconds``; :meth:`~AlertmanagerSink.restore` relearns them after a restart and
  :meth:`~AlertmanagerSink.forget` drops those another process now owns.
- :class:`PagerDutySink` (Events API v2): PagerDuty keeps an incident open until it is resolved;
  those three are no-ops. An ``updated`` alert is a ``trigger`` with the incident's dedup key.

:func:`sinks_from_args` builds them from the command line's ``--to``, ``--url``,
``--routing-key``, ... (``stream-monitor forward``), for any command that has those flags.
``stream-monitor run`` does not post over HTTP: its alerts go to the topic inside the
checkpoint's transaction, and ``forward`` reads them ``read_committed``, so that a transaction
that aborts never pages anybody.

Examples
--------
>>> from stream_monitor.events.schema import AlertEvent
>>> a = AlertEvent.model_validate({
...     "alert_id": "a1", "dedup_key": "m/data_drift/x", "status": "firing",
...     "severity": "warning", "priority": "P1", "kind": "data_drift", "model_id": "m",
...     "feature": "x", "signal": "psi", "value": 0.4, "threshold": 0.2,
...     "summary": "x drifted", "started_at": 1.0, "observed_at": 1.0})
>>> am = AlertmanagerSink("http://am:9093/")
>>> am.endpoint, am.body(a) == [to_alertmanager(a)]
('http://am:9093/api/v2/alerts', True)
>>> pd = PagerDutySink("R0UTINGKEY", source="monitor-eu")
>>> pd, pd.body(a) == to_pagerduty(a, "R0UTINGKEY", source="monitor-eu")
(PagerDutySink('https://events.pagerduty.com/v2/enqueue'), True)
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import logging
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import orjson

from stream_monitor.alerts.routing import iso8601, to_alertmanager, to_pagerduty
from stream_monitor.errors import ConfigError, StreamMonitorError
from stream_monitor.events.schema import AlertEvent

__all__ = [
    "PAGERDUTY_URL",
    "SINKS",
    "AlertmanagerSink",
    "Delivery",
    "DeliveryCounts",
    "DeliveryStopped",
    "HttpAlertSink",
    "Outcome",
    "PagerDutySink",
    "alertmanager_endpoint",
    "delivery_from_args",
    "post_json",
    "sinks_from_args",
]

log = logging.getLogger(__name__)

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"

#: How one POST ended: accepted (2xx), given up, or stopped while waiting to retry.
Outcome = Literal["ok", "failed", "stopped"]


@dataclass(frozen=True)
class Delivery:
    """How hard one POST is tried: ``retries`` more attempts after the first, waiting
    ``backoff`` seconds, doubled each time up to ``max_backoff`` (about 90 s in all by default).

    >>> Delivery(retries=2).retries, Delivery().timeout
    (2, 10.0)
    """

    timeout: float = 10.0
    retries: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0


class DeliveryStopped(StreamMonitorError):
    """:meth:`HttpAlertSink.write` was stopped before every alert of the batch was settled."""


@dataclass
class DeliveryCounts:
    """What one sink did: alerts ``posted`` (accepted) and ``failed`` (given up), alerts
    ``resent`` while still firing, and HTTP requests made (``attempts``, retries included)."""

    posted: int = 0
    failed: int = 0
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
    """POST ``body`` as JSON with the ``delivery`` policy.

    Parameters
    ----------
    url
        Where to POST.
    body
        Anything :mod:`orjson` serialises.
    delivery
        Timeout per request, retries and backoff.
    stop
        When set while waiting to retry, the POST is abandoned (``stopped``) at once.
    on_attempt
        Called before each request (to count them).

    Returns
    -------
    Outcome
        ``ok`` on a 2xx, ``failed`` once given up (another 4xx at once; 429, 5xx and
        connection errors after the last retry), ``stopped`` when ``stop`` was set.
    """
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


class HttpAlertSink(ABC):
    """An alert sink that POSTs one JSON body per alert to ``endpoint`` (see the module doc).

    Parameters
    ----------
    endpoint
        The URL every body is posted to.
    delivery
        Timeout, retries and backoff of each POST.

    Attributes
    ----------
    counts : DeliveryCounts
        Alerts posted, given up and re-sent, and requests made, since the sink was built.
    remembers_firing : bool
        True when the destination forgets a firing alert that is not posted again: the sink then
        keeps the alerts still firing, and whoever feeds it calls :meth:`tick` regularly and
        :meth:`restore` with the alerts delivered before it started.
    """

    #: The ``--to`` value that builds this sink (and the name in logs).
    name: ClassVar[str]
    remembers_firing: ClassVar[bool] = False

    def __init__(self, endpoint: str, delivery: Delivery = Delivery()) -> None:
        self.endpoint = endpoint
        self.delivery = delivery
        self.counts = DeliveryCounts()
        self._stop = threading.Event()

    def __repr__(self) -> str:  # no credentials: the PagerDuty routing key is in the body
        return f"{type(self).__name__}({self.endpoint!r})"

    @classmethod
    @abstractmethod
    def from_args(cls, args: argparse.Namespace, delivery: Delivery) -> HttpAlertSink:
        """The sink the command line's flags describe; :class:`ConfigError` naming the flag
        that is missing."""

    @abstractmethod
    def body(self, alert: AlertEvent) -> Any:
        """The JSON body posted for ``alert``."""

    # --- AlertSink ----------------------------------------------------------------------------
    def write(self, alerts: Sequence[AlertEvent]) -> None:
        """Deliver the alerts in order; an alert given up is logged and counted, not raised.

        Raises
        ------
        DeliveryStopped
            :meth:`stop` was called while an alert waited to be retried: it and the alerts after
            it were not settled (a caller must not record them as written).
        """
        for a in alerts:
            if self.deliver(a) == "stopped":
                raise DeliveryStopped(f"{self!r} stopped before alert {a.alert_id} was settled")

    def close(self) -> None:  # noqa: B027 - deliberately empty, not abstract
        """Nothing to release: every POST opens and closes its own connection."""

    # --- one alert ----------------------------------------------------------------------------
    def deliver(self, alert: AlertEvent) -> Outcome:
        """POST ``alert``'s body; log and count how it ended, and return that."""
        return self._deliver(alert, self.body(alert))

    def stop(self) -> None:
        """Stop waiting: a POST waiting to retry ends ``stopped`` now, and so will any later one
        that fails (for good: a stopped sink is not restarted)."""
        self._stop.set()

    # --- keeping firing alerts alive (no-ops unless ``remembers_firing``) ---------------------
    def tick(self, now: float | None = None) -> int:
        """Re-post the alerts still firing if they are due (``now`` on the monotonic clock);
        return how many were re-posted."""
        return 0

    def restore(self, alerts: Iterable[AlertEvent]) -> int:
        """Learn, without posting them, which of ``alerts`` (delivered earlier, oldest first) are
        still firing, and re-post those at the next :meth:`tick`; return how many are."""
        return 0

    def forget(self, dedup_keys: Iterable[str]) -> None:  # noqa: B027 - nothing remembered
        """Stop re-posting these incidents (another process delivers them now)."""

    # --- posting ------------------------------------------------------------------------------
    def _attempted(self) -> None:
        self.counts.attempts += 1

    def _post(self, body: Any) -> Outcome:
        return post_json(
            self.endpoint, body, self.delivery, stop=self._stop, on_attempt=self._attempted
        )

    def _deliver(self, alert: AlertEvent, body: Any) -> Outcome:
        outcome = self._post(body)
        if outcome == "ok":
            self.counts.posted += 1
            log.info(
                "posted alert to=%s status=%s dedup_key=%s alert_id=%s",
                self.name,
                alert.status,
                alert.dedup_key,
                alert.alert_id,
            )
        elif outcome == "failed":
            self.counts.failed += 1
            log.error(
                "gave up on alert to=%s status=%s dedup_key=%s alert_id=%s",
                self.name,
                alert.status,
                alert.dedup_key,
                alert.alert_id,
            )
        return outcome


def alertmanager_endpoint(url: str) -> str:
    """Alertmanager's alerts API from its base URL (or the API's URL itself).

    >>> alertmanager_endpoint("http://am:9093/"), alertmanager_endpoint("http://am/api/v2/alerts")
    ('http://am:9093/api/v2/alerts', 'http://am/api/v2/alerts')
    """
    base = url.rstrip("/")
    return base if base.endswith("/api/v2/alerts") else f"{base}/api/v2/alerts"


class AlertmanagerSink(HttpAlertSink):
    """Alerts to Alertmanager's ``POST /api/v2/alerts``, one list of one alert per POST, kept
    alive while firing.

    Parameters
    ----------
    url
        Alertmanager's base URL (``http://am:9093``) or its ``/api/v2/alerts`` URL.
    generator_url
        The ``generatorURL`` of every alert (e.g. the monitor's metrics page).
    resend_seconds
        How often :meth:`tick` re-posts the alerts still firing; keep it well below
        Alertmanager's ``resolve_timeout`` (5 min by default).
    delivery
        Timeout, retries and backoff of each POST.

    Notes
    -----
    An alert is remembered as firing once its POST is settled (accepted or given up: a given-up
    firing alert gets another chance at the next re-post) and forgotten when its resolve is. An
    ``updated`` alert is posted as firing with its new annotations and replaces the one
    re-posted. A resolve (or an update) whose labels differ from the firing alert's (the rule's
    labels changed in between) also ends the firing alert, so that nothing is left open.
    """

    name: ClassVar[str] = "alertmanager"
    remembers_firing: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        generator_url: str | None = None,
        resend_seconds: float = 60.0,
        delivery: Delivery = Delivery(),
    ) -> None:
        if not url:
            raise ValueError("alertmanager needs its URL")
        super().__init__(alertmanager_endpoint(url), delivery)
        self.generator_url = generator_url
        self.resend_seconds = resend_seconds
        self._firing: dict[str, dict[str, Any]] = {}
        #: When firing alerts are next re-posted (monotonic clock).
        self._next_resend = time.monotonic() + resend_seconds

    @classmethod
    def from_args(cls, args: argparse.Namespace, delivery: Delivery) -> AlertmanagerSink:
        if not getattr(args, "url", None):
            raise ConfigError("--to alertmanager needs --url")
        resend = getattr(args, "resend_seconds", None)
        return cls(
            args.url,
            generator_url=getattr(args, "generator_url", None),
            resend_seconds=60.0 if resend is None else resend,
            delivery=delivery,
        )

    def item(self, alert: AlertEvent) -> dict[str, Any]:
        """``alert`` as one element of the posted list."""
        return to_alertmanager(alert, generator_url=self.generator_url)

    def body(self, alert: AlertEvent) -> list[dict[str, Any]]:
        return [self.item(alert)]

    @property
    def firing(self) -> list[str]:
        """The dedup keys of the alerts re-posted by :meth:`tick`."""
        return list(self._firing)

    def deliver(self, alert: AlertEvent) -> Outcome:
        item = self.item(alert)
        outcome = self._deliver(alert, [item])
        if outcome != "stopped":
            self._track(alert, item)
        return outcome

    def _track(self, alert: AlertEvent, item: dict[str, Any]) -> None:
        if alert.status != "resolved":  # firing, or updated: the alert to keep re-posting
            prev = self._firing.get(alert.dedup_key)
            self._firing[alert.dedup_key] = item
            if alert.status == "updated" and prev is not None and prev["labels"] != item["labels"]:
                # Its labels changed (a rule's labels, a higher severity): the new label set
                # is another Alertmanager alert, so end the old one now.
                end = alert.observed_at
                if alert.published_at is not None:
                    end = min(end, alert.published_at)
                self._post([{**prev, "endsAt": iso8601(max(end, alert.started_at))}])
            return
        prev = self._firing.pop(alert.dedup_key, None)
        if prev is not None and prev["labels"] != item["labels"]:
            self._post([{**prev, "endsAt": item["endsAt"]}])

    def tick(self, now: float | None = None) -> int:
        if not self._firing:
            return 0
        now = time.monotonic() if now is None else now
        if now < self._next_resend:
            return 0
        self._next_resend = now + self.resend_seconds
        items = list(self._firing.values())
        if self._post(items) != "ok":
            return 0
        self.counts.resent += len(items)
        log.debug("re-posted firing alerts to=%s n=%d", self.name, len(items))
        return len(items)

    def restore(self, alerts: Iterable[AlertEvent]) -> int:
        learnt: set[str] = set()
        for a in alerts:
            if a.status != "resolved":  # firing or updated: the latest is what is re-posted
                self._firing[a.dedup_key] = self.item(a)
                learnt.add(a.dedup_key)
            else:
                self._firing.pop(a.dedup_key, None)
                learnt.discard(a.dedup_key)
        if learnt:
            self._next_resend = float("-inf")  # re-post them at once
        return len(learnt)

    def forget(self, dedup_keys: Iterable[str]) -> None:
        for key in dedup_keys:
            self._firing.pop(key, None)

    def close(self) -> None:
        """Forget the firing alerts (not resolved: another process re-posts them, or
        Alertmanager resolves them after its ``resolve_timeout``)."""
        self._firing.clear()


class PagerDutySink(HttpAlertSink):
    """Alerts to PagerDuty's Events API v2: ``trigger`` while firing (and for an ``updated``
    alert, with the same dedup key: it updates the open incident), ``resolve`` when resolved.

    Parameters
    ----------
    routing_key
        The integration key (prefer the environment to the command line for it).
    url
        The Events API's URL (default :data:`PAGERDUTY_URL`).
    source, client_url
        The events' ``payload.source`` and ``client_url``.
    delivery
        Timeout, retries and backoff of each POST.
    """

    name: ClassVar[str] = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        *,
        url: str | None = None,
        source: str = "stream-monitor",
        client_url: str | None = None,
        delivery: Delivery = Delivery(),
    ) -> None:
        if not routing_key:
            raise ValueError("pagerduty needs a routing key")
        super().__init__(url or PAGERDUTY_URL, delivery)
        self._routing_key = routing_key
        self.source = source
        self.client_url = client_url

    @classmethod
    def from_args(cls, args: argparse.Namespace, delivery: Delivery) -> PagerDutySink:
        if not getattr(args, "routing_key", None):
            raise ConfigError(
                "--to pagerduty needs --routing-key (or $STREAM_MONITOR_PAGERDUTY_ROUTING_KEY)"
            )
        return cls(
            args.routing_key,
            url=getattr(args, "url", None),
            source=getattr(args, "source", None) or "stream-monitor",
            client_url=getattr(args, "client_url", None),
            delivery=delivery,
        )

    def body(self, alert: AlertEvent) -> dict[str, Any]:
        return to_pagerduty(
            alert, self._routing_key, source=self.source, client_url=self.client_url
        )


#: The HTTP sinks by their ``--to`` name.
SINKS: dict[str, type[HttpAlertSink]] = {c.name: c for c in (AlertmanagerSink, PagerDutySink)}


def delivery_from_args(args: argparse.Namespace) -> Delivery:
    """A :class:`Delivery` with the ``--timeout`` and ``--retries`` given (the defaults for those
    missing or ``None``).

    >>> delivery_from_args(argparse.Namespace(timeout=2.0))
    Delivery(timeout=2.0, retries=8, backoff=0.5, max_backoff=30.0)
    """
    given = {k: v for k in ("timeout", "retries") if (v := getattr(args, k, None)) is not None}
    return dataclasses.replace(Delivery(), **given)


def sinks_from_args(args: argparse.Namespace) -> list[HttpAlertSink]:
    """The HTTP sinks that a command's flags describe.

    ``args.to`` names one sink of :data:`SINKS` (or is a list of names); each reads the flags it
    needs (``--url``, ``--generator-url``, ``--resend-seconds``; ``--routing-key``, ``--url``,
    ``--source``, ``--client-url``) and all share ``--timeout`` and ``--retries``. A flag not
    defined by the command counts as not given.

    Raises
    ------
    ConfigError
        A name that is no sink, or a flag a sink needs is missing (the message names it).

    Examples
    --------
    >>> ns = argparse.Namespace(to="alertmanager", url="http://am:9093", retries=2)
    >>> [sink] = sinks_from_args(ns)
    >>> sink, sink.delivery.retries
    (AlertmanagerSink('http://am:9093/api/v2/alerts'), 2)
    >>> sinks_from_args(argparse.Namespace(to="pagerduty"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_monitor.errors.ConfigError: --to pagerduty needs --routing-key ...
    """
    names = [args.to] if isinstance(args.to, str) else list(args.to)
    delivery = delivery_from_args(args)
    sinks: list[HttpAlertSink] = []
    for name in names:
        cls = SINKS.get(name)
        if cls is None:
            raise ConfigError(f"--to {name}: not one of {', '.join(sorted(SINKS))}")
        sinks.append(cls.from_args(args, delivery))
    return sinks
