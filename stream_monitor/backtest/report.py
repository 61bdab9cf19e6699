"""The backtest report: one self-contained HTML file, plots drawn as inline SVG by hand.

No JavaScript, no external CSS, fonts or images: the file opens offline and can be attached to
a ticket. It holds the replay's figures (input, time span, counts, invalid records, alerts,
pages per day), the incidents, and for every signal series that took part in an incident (and
at most ``max_other_series`` others: first those that breached without an incident of theirs,
most breaches first, then those that came closest to their threshold) a plot of its values
over event time, with its threshold as a dashed line and the alert spans (firing -> resolved)
as shaded bands.

Elements carry classes a test (or a style sheet) can find: ``svg.series`` per plot,
``polyline.values``, ``polyline.threshold``, ``rect.alert-band``, ``path.breaches``.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence

from stream_monitor.backtest.result import ReplayResult
from stream_monitor.backtest.series import Incident, Scope, Series

__all__ = ["MAX_INCIDENT_ROWS", "MAX_INCIDENT_SERIES", "MAX_OTHER_SERIES", "render_report"]

#: Series plotted besides those of incidents: those that breached, then the closest to their
#: thresholds.
MAX_OTHER_SERIES = 20
#: At most this many incident series are plotted (the worst first), to bound the file size.
MAX_INCIDENT_SERIES = 300
#: At most this many incidents are listed in the table (the earliest).
MAX_INCIDENT_ROWS = 2000

WIDTH, HEIGHT = 880, 210
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 10, 30

_CSS = "".join(
    (
        'body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;',
        "margin:24px;color:#1d2127}",
        "h1{font-size:22px;margin:0 0 4px}",
        "h2{font-size:18px;margin:28px 0 8px}",
        "h3{font-size:14px;margin:18px 0 2px}",
        "table{border-collapse:collapse;margin:4px 0 8px}",
        "td,th{border:1px solid #d5d9de;padding:3px 8px;text-align:left}",
        "th{background:#f2f4f6}",
        "td.n{text-align:right;font-variant-numeric:tabular-nums}",
        ".muted{color:#68717b}",
        ".firing{color:#b3261e;font-weight:600}",
        "dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}",
        "dt{color:#68717b}",
        "dd{margin:0}",
        "svg.series{display:block;background:#fff;border:1px solid #e3e6ea;margin:2px 0 4px}",
        "svg text{font:11px system-ui,sans-serif;fill:#4a525b}",
        ".values{fill:none;stroke:#1f5fbf;stroke-width:1.3}",
        ".threshold{fill:none;stroke:#b3261e;stroke-width:1.2;stroke-dasharray:6 4}",
        ".alert-band{fill:#e8453c;fill-opacity:.16}",
        ".breaches{stroke:#b3261e;stroke-width:4;stroke-linecap:round;fill:none}",
        ".axis{stroke:#9aa2ab;stroke-width:1;fill:none}",
        ".grid{stroke:#eceef1;stroke-width:1}",
        ".legend span{margin-right:14px}",
        ".sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}",
    )
)


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _num(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}"


def _time(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _series_title(key: tuple[str, str, str | None, str | None, str]) -> str:
    model, kind, feature, segment, signal = key
    name = f"{model} / {kind} / {feature or '-'}"
    if segment is not None:
        name += f" @{segment}"
    return f"{name}: {signal}"


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round tick values covering [lo, hi]."""
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return out


def _time_ticks(t0: float, t1: float, n: int = 6) -> list[tuple[float, str]]:
    span = t1 - t0
    if span <= 0:
        return [(t0, _time(t0))]
    fmt = "%m-%d" if span > 4 * 86400 else "%m-%d %H:%M" if span > 3600 else "%H:%M:%S"
    return [
        (t, dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt))
        for t in (t0 + span * i / (n - 1) for i in range(n))
    ]


def plot_series(s: Series, bands: Sequence[tuple[float, float]], t0: float, t1: float) -> str:
    """One series as an inline SVG line plot: values, dashed threshold, alert bands."""
    pts = [(t, v, thr, b >= 0) for _i, b, t, v, thr in s.points]
    finite = [p for p in pts if math.isfinite(p[1])]
    t0 = min([t0, *(p[0] for p in pts)]) if pts else t0
    t1 = max([t1, *(p[0] for p in pts)]) if pts else t1
    if t1 <= t0:
        t1 = t0 + 1.0
    ys = [p[1] for p in finite] + [p[2] for p in pts if math.isfinite(p[2])]
    lo = min([0.0, *ys])
    hi = max([*ys, lo + 1e-12])
    # a constant series gets a band around it (lo + 1.0 == lo for magnitudes beyond 2**53)
    hi = hi + (hi - lo) * 0.08 if hi > lo else lo + max(1.0, abs(lo) * 0.08)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * pw

    def y(v: float) -> float:
        return TOP + (hi - min(max(v, lo), hi)) / (hi - lo) * ph

    title = _series_title(s.key)
    out = [
        f'<svg class="series" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'data-series="{_e(title)}"><title>{_e(title)}</title>'
    ]
    for a, b in bands:
        xa, xb = x(max(a, t0)), x(min(b, t1))
        out.append(
            f'<rect class="alert-band" x="{xa:.1f}" y="{TOP}" width="{max(xb - xa, 1.5):.1f}" '
            f'height="{ph}"><title>alert {_e(_time(a))} .. {_e(_time(b))}</title></rect>'
        )
    for v in _ticks(lo, hi):
        yy = y(v)
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{_e(_num(v))}</text>')
    for t, label in _time_ticks(t0, t1):
        xx = x(t)
        anchor = "start" if xx <= LEFT + 1 else "end" if xx >= WIDTH - RIGHT - 1 else "middle"
        out.append(
            f'<text x="{xx:.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}">{_e(label)}</text>'
        )
    out.append(f'<rect class="axis" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>')
    # The threshold as a step line: it changes only with the window size or baseline.
    steps: list[str] = []
    prev: float | None = None
    for t, _v, thr, _b in pts:
        if not math.isfinite(thr):
            continue
        if prev is not None and thr != prev:
            steps.append(f"{x(t):.1f},{y(prev):.1f}")
        if prev is None or thr != prev:
            steps.append(f"{x(t):.1f},{y(thr):.1f}")
        prev = thr
    if prev is not None:
        steps.append(f"{x(max(p[0] for p in pts)):.1f},{y(prev):.1f}")
        if len({p.split(",")[0] for p in steps}) == 1:  # one instant: a short tick
            x0, y0 = (float(c) for c in steps[0].split(","))
            steps = [f"{x0 - 6:.1f},{y0:.1f}", f"{x0 + 6:.1f},{y0:.1f}"]
        out.append(f'<polyline class="threshold" points="{" ".join(steps)}"/>')
    if finite:
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _thr, _b in finite)
        out.append(f'<polyline class="values" points="{line}"/>')
    marks = "".join(f"M{x(t):.1f} {y(v):.1f}h0" for t, v, _thr, b in finite if b)
    if marks:
        out.append(f'<path class="breaches" d="{marks}"/>')
    out.append("</svg>")
    return "".join(out)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], numeric: set[int]) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = ' class="n"' if i in numeric else ""
            out.append(f"<td{cls}>{cell}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _sort_key(s: Series) -> tuple[str, str, str, str, str]:
    model, kind, feature, segment, signal = s.key
    return model, kind, feature or "", segment or "", signal


def _bands(incidents: Sequence[Incident], end: float) -> dict[Scope, list[tuple[float, float]]]:
    """Alert spans (firing -> resolved, or to the end) by the scopes of each incident."""
    out: dict[Scope, list[tuple[float, float]]] = {}
    for inc in incidents:
        stop = inc.resolved_at if inc.resolved_at is not None else end
        for scope in inc.scopes:
            out.setdefault(scope, []).append((inc.started_at, max(stop, inc.started_at)))
    for spans in out.values():
        spans.sort()
    return out


def render_report(
    result: ReplayResult,
    *,
    max_other_series: int = MAX_OTHER_SERIES,
    max_incident_series: int = MAX_INCIDENT_SERIES,
) -> str:
    """The whole report as one HTML document."""
    r = result.replay
    alerts = result.alerts
    incidents = result.incidents
    t0, t1 = r.first_event_at, r.last_event_at
    if not math.isfinite(t0):
        t0 = t1 = 0.0
    series = list(r.recorder.series.values())
    bands = _bands(incidents, t1)
    with_incident = [s for s in series if s.key[:4] in bands]
    with_incident.sort(key=lambda s: (-s.ratio, s.key[0], s.key[1], str(s.key[2]), s.key[4]))
    dropped_incident = max(0, len(with_incident) - max_incident_series)
    with_incident = sorted(
        with_incident[:max_incident_series],
        key=lambda s: (s.key[0], s.key[1], str(s.key[2]), str(s.key[3]), s.key[4]),
    )
    others = [s for s in series if s.key[:4] not in bands and s.n]
    # A series that breached (held pending, in a cooldown, silenced by a rule) says more than
    # one that only came close: breached ones first, by breaches, then by how close.
    others.sort(key=lambda s: (s.n_breached == 0, -s.n_breached, -s.ratio, _sort_key(s)))
    others = others[:max_other_series]
    breached = [s for s in others if s.n_breached]
    closest = [s for s in others if not s.n_breached]
    pages = result.pages()
    still = sum(1 for i in incidents if i.resolved_at is None)

    h: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>stream-monitor backtest</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>stream-monitor backtest</h1>",
        '<p class="muted">What this configuration would have done on these events: '
        "alert events are those the live monitor would have published.</p>",
        "<dl>",
        f"<dt>configuration</dt><dd>{_e(result.config_path or '(defaults)')}</dd>",
        f"<dt>input</dt><dd>{_e(result.input)}</dd>",
        f"<dt>event time</dt><dd>{_e(_time(t0))} .. {_e(_time(t1))} UTC "
        f"({_e(_duration(t1 - t0))})</dd>",
        f"<dt>events read</dt><dd>{r.events:,} (predictions {r.predictions:,}, labels "
        f"{r.labels:,}, invalid {sum(r.invalid.values()):,})</dd>",
        f"<dt>partition states</dt><dd>{len(r.states)}</dd>",
        f"<dt>alert events</dt><dd>{len(alerts):,} ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(Counter(a.status for a in alerts).items()))
        + ")</dd>",
        f"<dt>incidents</dt><dd>{len(incidents):,} ({still:,} still firing at the end)</dd>",
        f"<dt>pages</dt><dd><b>{len(pages):,}</b> (firing alerts of severity critical)</dd>",
        f"<dt>replay</dt><dd>{result.wall_seconds:,.1f} s wall time, "
        f"{result.events_per_second:,.0f} events/s</dd>",
        "</dl>",
    ]
    if r.events_refused:
        h.append(
            f"<p>{r.events_refused:,} predictions belonged to models over "
            "<code>limits.max_models_per_partition</code> and were not monitored.</p>"
        )

    h.append("<h2>Pages per day (UTC)</h2>")
    per_day = result.pages_per_day()
    if per_day:
        h.append(_table(["day", "pages"], ((_e(d), f"{k:,}") for d, k in per_day.items()), {1}))
    else:
        h.append("<p>None.</p>")

    h.append("<h2>Alert events</h2>")
    if alerts:
        kinds = Counter((a.kind, a.severity, a.status) for a in alerts)
        rows = sorted({(k, sev) for k, sev, _ in kinds})
        h.append(
            _table(
                ["kind", "severity", "firing", "updated", "resolved"],
                (
                    (
                        _e(k),
                        _e(sev),
                        f"{kinds[(k, sev, 'firing')]:,}",
                        f"{kinds[(k, sev, 'updated')]:,}",
                        f"{kinds[(k, sev, 'resolved')]:,}",
                    )
                    for k, sev in rows
                ),
                {2, 3, 4},
            )
        )
    else:
        h.append("<p>None.</p>")

    if r.invalid:
        h.append("<h2>Invalid records</h2>")
        h.append(
            '<p class="muted">Counted by the reason the live monitor would give them on the '
            "dead-letter topic.</p>"
        )
        h.append(
            _table(
                ["input", "reason", "records"],
                (
                    (_e(kind + "s"), _e(reason), f"{k:,}")
                    for (kind, reason), k in sorted(r.invalid.items())
                ),
                {2},
            )
        )

    h.append("<h2>Incidents</h2>")
    if incidents:
        rows_i = []
        for inc in incidents[:MAX_INCIDENT_ROWS]:
            end = inc.resolved_at if inc.resolved_at is not None else t1
            resolved = (
                _e(_time(inc.resolved_at))
                if inc.resolved_at is not None
                else '<span class="firing">still firing</span>'
            )
            rows_i.append(
                (
                    _e(inc.dedup_key),
                    _e(inc.severity),
                    _e(_time(inc.started_at)),
                    resolved,
                    _e(_duration(end - inc.started_at)),
                    _e(inc.signal),
                    _e(_num(inc.peak)),
                    _e(_num(inc.threshold)),
                )
            )
        h.append(
            _table(
                [
                    "dedup_key",
                    "severity",
                    "started (UTC)",
                    "resolved",
                    "duration",
                    "signal",
                    "peak value",
                    "threshold at firing",
                ],
                rows_i,
                {4, 6, 7},
            )
        )
        if len(incidents) > MAX_INCIDENT_ROWS:
            h.append(f"<p>... and {len(incidents) - MAX_INCIDENT_ROWS:,} more.</p>")
    else:
        h.append("<p>None.</p>")

    h.append("<h2>Signals</h2>")
    h.append(
        '<p class="legend"><span><i class="sw" style="background:#1f5fbf"></i>value</span>'
        '<span><i class="sw" style="background:#b3261e"></i>threshold (dashed)</span>'
        '<span><i class="sw" style="background:#e8453c;opacity:.35;height:10px"></i>'
        "alert firing</span><span>dots: breached observations</span></p>"
        '<p class="muted">Event time on the x axis (UTC). Each series keeps at most '
        f"{r.recorder.cap:,} points (evenly decimated, breached points kept first); counts "
        "and maxima are exact.</p>"
    )
    groups: list[tuple[str, list[Series]]] = [
        ("Series that took part in an incident", with_incident)
    ]
    if breached:
        groups.append(
            (
                f"Other series: {len(breached)} that breached without an incident "
                "(pending, in a cooldown, or silenced by a rule)",
                breached,
            )
        )
    if closest or not breached:
        groups.append((f"Other series: the {len(closest)} closest to their thresholds", closest))
    for title, group in groups:
        h.append(f"<h2>{_e(title)}</h2>")
        if not group:
            h.append("<p>None.</p>")
        for s in group:
            h.append(f"<h3>{_e(_series_title(s.key))}</h3>")
            worst = f", worst value/threshold {s.ratio:.3g}" if s.ratio else ""
            h.append(
                f'<p class="muted">{s.n:,} observations ({len(s.points):,} plotted), '
                f"{s.n_breached:,} breached, max {_e(_num(s.max_value))}{_e(worst)}</p>"
            )
            h.append(plot_series(s, bands.get(s.key[:4], []), t0, t1))
        if group is with_incident and dropped_incident:
            h.append(f"<p>{dropped_incident:,} more incident series not plotted.</p>")
    h.append("</body></html>")
    return "\n".join(h)
