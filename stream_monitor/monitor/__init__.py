"""Per-partition monitoring state: models, features, the label join, the error stream.

Everything here is pure: decoded events in, observations and alert events out, no I/O, no
clock. Every class has ``snapshot()``/``from_snapshot()`` with a version, as plain data.
"""

from __future__ import annotations

from stream_monitor.monitor.join import LabelJoin
from stream_monitor.monitor.model import ModelMonitor
from stream_monitor.monitor.partition import PartitionState

__all__ = ["LabelJoin", "ModelMonitor", "PartitionState"]
