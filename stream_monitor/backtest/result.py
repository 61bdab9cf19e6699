"""What a replay read and produced (:class:`ReplayResult`), for the summary and the report."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stream_monitor.backtest.series import Incident
from stream_monitor.backtest.state import Replay
from stream_monitor.events.schema import AlertEvent

__all__ = ["ReplayResult"]


@dataclass
class ReplayResult:
    """What a replay read and produced, for the summary and the report."""

    config_path: str | None
    input: str
    replay: Replay
    wall_seconds: float
    out_dir: Path | None = None
    #: Per topic and partition, the (start, end) offsets of a topic replay.
    offsets: dict[str, dict[int, tuple[int, int]]] | None = None

    @property
    def alerts(self) -> list[AlertEvent]:
        return self.replay.alerts

    @property
    def incidents(self) -> list[Incident]:
        return self.replay.incidents.incidents

    @property
    def events(self) -> int:
        return self.replay.events

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def pages(self) -> list[AlertEvent]:
        """The alert events that would have paged: firing, severity critical."""
        return [a for a in self.alerts if a.status == "firing" and a.severity == "critical"]

    def pages_per_day(self) -> dict[str, int]:
        """Pages per UTC day of their event time."""
        days: Counter[str] = Counter(_day(a.observed_at) for a in self.pages())
        return dict(sorted(days.items()))

    @property
    def invalid_share(self) -> float:
        """The share of the records read that were invalid (0 when none were read)."""
        bad = sum(self.replay.invalid.values())
        return bad / self.events if self.events else 0.0

    def invalid_by_reason(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for (_kind, reason), k in self.replay.invalid.items():
            c[reason] += k
        return dict(c.most_common())


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")
