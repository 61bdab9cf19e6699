"""HTTP endpoints beside the monitor: /metrics, /healthz (liveness) and /readyz (readiness)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

__all__ = ["HealthState", "MetricsServer"]


class HealthState:
    """What /healthz and /readyz report. Written by the application loop."""

    def __init__(self) -> None:
        self.alive = True
        self.broker_reachable = False
        self.partitions_assigned = False
        self.reason = "starting"

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
                ok = health.alive
                return _text(start_response, ok, "ok" if ok else "stopping")
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
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
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
