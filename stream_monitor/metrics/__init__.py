"""Prometheus exposition: the monitor's own counters, a scrape-time collector over the
monitoring state, and the HTTP server for /metrics, /healthz and /readyz."""

from __future__ import annotations

from stream_monitor.metrics.collector import StateCollector
from stream_monitor.metrics.instruments import Instruments
from stream_monitor.metrics.server import HealthState, MetricsServer

__all__ = ["HealthState", "Instruments", "MetricsServer", "StateCollector"]
