"""From observations to alert events: one incident per dedup key, firing then resolved."""

from __future__ import annotations

from stream_monitor.alerts.observation import Observation
from stream_monitor.alerts.tracker import AlertTracker, dedup_key

__all__ = ["AlertTracker", "Observation", "dedup_key"]
