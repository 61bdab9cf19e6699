"""The one root exception and the typed errors that travel as data."""

from __future__ import annotations

__all__ = ["ConfigError", "StreamMonitorError", "TopicsNotReady"]


class StreamMonitorError(Exception):
    """Root of every exception raised by stream-monitor."""


class ConfigError(StreamMonitorError):
    """The configuration is invalid or inconsistent with the cluster."""


class TopicsNotReady(StreamMonitorError):
    """An input topic does not exist (yet) on the cluster."""
