"""The plain-text summary that ``stream-monitor replay`` prints after a replay."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Mapping

from stream_monitor.backtest.dead_letters import FILE_NAME as DEAD_LETTERS_FILE
from stream_monitor.backtest.dead_letters import hint
from stream_monitor.backtest.result import ReplayResult

__all__ = ["format_summary", "format_time"]


def format_time(t: float) -> str:
    """Unix seconds as an RFC 3339 UTC time (to the second), or "-"."""
    if not math.isfinite(t):
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in c.items()) or "-"


def format_summary(result: ReplayResult) -> str:
    """The summary printed after a replay."""
    r = result.replay
    alerts = result.alerts
    lines = [
        f"replay of {result.input}" + (f" with {result.config_path}" if result.config_path else "")
    ]
    span = ""
    if math.isfinite(r.first_event_at):
        hours = (r.last_event_at - r.first_event_at) / 3600
        span = (
            f"; event time {format_time(r.first_event_at)} .. {format_time(r.last_event_at)}"
            f" ({hours:,.1f} h)"
        )
    lines.append(
        f"events read    {r.events:,} (predictions {r.predictions:,}, labels {r.labels:,}, "
        f"invalid {sum(r.invalid.values()):,}){span}"
    )
    if r.invalid:
        by_kind = "; ".join(
            f"{kind}s: "
            + _counts({reason: k for (kd, reason), k in sorted(r.invalid.items()) if kd == kind})
            for kind in ("prediction", "label")
            if any(kd == kind for kd, _ in r.invalid)
        )
        lines.append(f"invalid        {_counts(result.invalid_by_reason())} ({by_kind})")
        log = r.dead_letters
        for (kind, reason), k in r.invalid.most_common():
            common = log.common(kind, reason)
            detail = f": {common[0][:300]}" if common else ""
            lines.append(f"  {kind}s {reason} {k:,}{detail}")
            why = hint(reason, common[0] if common else "")
            if why:
                lines.append(f"    hint: {why}")
    if r.events_refused:
        lines.append(
            f"refused        {r.events_refused:,} predictions of models over "
            "limits.max_models_per_partition"
        )
    lines.append(
        f"alerts         {len(alerts):,} ("
        + _counts(Counter(a.status for a in alerts))
        + f"); partitions {len(r.states)}"
    )
    if alerts:
        lines.append(
            f"  by kind      {_counts(dict(Counter(a.kind for a in alerts).most_common()))}"
        )
        lines.append(
            f"  by severity  {_counts(dict(Counter(a.severity for a in alerts).most_common()))}"
        )
    incidents = result.incidents
    still = sum(1 for i in incidents if i.resolved_at is None)
    lines.append(
        f"incidents      {len(incidents):,} ({len(incidents) - still:,} resolved, "
        f"{still:,} still firing at the end)"
    )
    pages = result.pages()
    lines.append(f"pages          {len(pages):,} (firing alerts of severity critical)")
    for day, k in result.pages_per_day().items():
        lines.append(f"  {day}   {k:,}")
    lines.append(
        f"wall time      {result.wall_seconds:,.1f} s, {result.events_per_second:,.0f} events/s"
    )
    if result.out_dir is not None:
        lines.append(
            f"outputs        {result.out_dir / 'alerts.jsonl'}, {result.out_dir / 'report.html'}"
        )
        if r.dead_letters.written:
            lines.append(
                f"dead letters   {result.out_dir / DEAD_LETTERS_FILE} "
                f"({r.dead_letters.written:,} invalid records, reason and original value)"
            )
    return "\n".join(lines)
