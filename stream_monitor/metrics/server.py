"""HTTP endpoints beside the monitor: /metrics, /healthz (liveness) and /readyz (readiness).

``/healthz`` answers 503 with the reason when the monitor is stopping or when its processing
loop has not completed a cycle (a ``consume`` call and what follows it) for longer than
``health.max_loop_stall_seconds``, plus the time the step under way may legitimately take
(a checkpoint, a restore on assignment: :meth:`HealthState.allow`): a monitor stuck there is
restarted by its liveness probe, a slow one is not.

Examples
--------
>>> now = [100.0]
>>> h = HealthState(max_loop_stall_seconds=60, clock=lambda: now[0])
>>> h.liveness()
(True, 'starting')
>>> h.cycle(); now[0] += 61
>>> h.liveness()
(False, 'the processing loop has not completed a cycle for 61 s (limit 60 s)')
>>> h.allow(30); h.liveness()[0]
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["HealthState", "MetricsServer"]


class HealthState:
    """What /healthz and /readyz report. Written by the application loop.

    ``clock`` is monotonic seconds; the loop calls :meth:`cycle` once per cycle.
    """

    def __init__(
        self,
        max_loop_stall_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alive = True
        self.broker_reachable = False
        self.partitions_assigned = False
        self.reason = "starting"
        self.max_loop_stall_seconds = max_loop_stall_seconds
        self.clock = clock
        #: When the loop last completed a cycle; None before the first one.
        self.last_cycle: float | None = None
        #: Extra seconds the cycle under way may take (see :meth:`allow`).
        self.allowance = 0.0

    def cycle(self) -> None:
        """The loop completed a cycle (the allowance of the last one ends)."""
        self.last_cycle = self.clock()
        self.allowance = 0.0

    def allow(self, seconds: float) -> None:
        """The step starting now (a checkpoint, a restore) may take up to ``seconds`` more
        before the loop counts as stuck; added up until the next :meth:`cycle`."""
        self.allowance += max(0.0, seconds)

    def liveness(self) -> tuple[bool, str]:
        """(alive, why): /healthz's answer."""
        if not self.alive:
            return False, "stopping"
        last = self.last_cycle
        if last is None:
            return True, "starting"
        stalled = self.clock() - last
        limit = self.max_loop_stall_seconds + self.allowance
        if stalled > limit:
            return False, (
                f"the processing loop has not completed a cycle for {stalled:.0f} s "
                f"(limit {limit:.0f} s)"
            )
        return True, "ok"

    @property
    def ready(self) -> bool:
        return self.alive and self.broker_reachable and self.partitions_assigned


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """Serves the registry and the health endpoints on a background thread."""

    def __init__(
        self, registry: CollectorRegistry, health: HealthState, host: str, port: int
    ) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path == "/healthz":
                return _text(start_response, *health.liveness())
            if path == "/readyz":
                return _text(
                    start_response, health.ready, "ready" if health.ready else health.reason
                )
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics, /healthz or /readyz\n"]

        self._server = make_server(
            host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        # Checks for shutdown() every 0.1 s: stopping the monitor waits for it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="metrics-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _text(start_response: Callable[..., Any], ok: bool, body: str) -> list[bytes]:
    start_response(
        "200 OK" if ok else "503 Service Unavailable",
        [("Content-Type", "text/plain; charset=utf-8")],
    )
    return [body.encode() + b"\n"]
