"""The window clock: which ring slot ("pane") each event goes to, and when windows close.

A model keeps, per feature, a ring of pane histograms ``counts[ring_size, n_bins]``; a window
is the sum of the rows of its panes. :class:`PaneClock` knows nothing of features: for a batch
of events (in arrival order) it returns a plan -- a list of :class:`Segment` -- that the caller
applies in order::

    for seg in clock.plan(timestamps):
        ok = seg.slots >= 0                       # -1 marks a late event: count it, do not bin
        np.add.at(counts, (seg.slots[ok], bins[seg.start:seg.stop][ok]), 1)
        for c in seg.closures:
            if c.window_slots:                    # () is a release-only closure
                window = counts[list(c.window_slots)].sum(axis=0)
                reference = (
                    None if c.reference_slots is None
                    else counts[list(c.reference_slots)].sum(axis=0)
                )
                ...                               # compare, score, alert
            counts[list(c.release_slots)] = 0     # AFTER using the closure

Windows are made of ``k = size / slide`` consecutive panes of width ``slide``; the window
"closing at pane p" is panes ``p-k+1 .. p``. Pane ``q`` always lives in ring slot
``q % ring_size`` (Python modulo, so negative panes map into ``[0, ring_size)`` too).

``kind="count"``: the event with global sequence number ``n`` (0-based, over all batches) is in
pane ``n // slide``; the window closing at ``p`` closes right after the event that completes
pane ``p`` (once a full window exists, ``p >= k-1``). No event is ever late.

``kind="time"``: an event at ``ts`` seconds is in pane ``floor(ts / slide)`` (aligned to the
epoch, like Kafka Streams windows; computed so that ``q*slide <= ts < (q+1)*slide`` holds in
float64 arithmetic, i.e. consistently with the reported window bounds). The watermark is the
largest timestamp seen minus ``allowed_lateness`` and never goes back; pane ``p`` is complete
once ``watermark >= (p+1)*slide``. An event whose pane is already complete is late. Closures
triggered by an event that moves the watermark are applied *before* that event is added (the
event itself always lies in a pane after the completed ones), so a segment can be empty when
the first event of a batch moves the watermark. A completed window is reported only if it holds
at least one event; a jump of the watermark over a long gap costs ``O(ring_size)``, not
``O(gap)``.

A rolling reference (``reference_lag = L > 0``) is the window that closed ``L`` windows
earlier, i.e. panes ``p-L*k-k+1 .. p-L*k``. It is reported once that window lies entirely in
the clock's history: sequence numbers ``>= 0`` for count windows; for time windows, panes from
the first pane that was still open when the first event arrived.

Timestamps are validated only as far as the clock needs: NaN or infinite timestamps (and ones
too large to index a pane) raise ``ValueError``; the caller is expected to have rejected such
events before. They are ignored (and may be anything) for count windows.

Snapshots are plain JSON-serialisable dicts carrying a ``"v"`` version key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

SNAPSHOT_VERSION = 1

# |timestamp / slide| must stay below this so panes are exact integers in float64 and int64.
_MAX_PANE = float(2**52)


@dataclass(frozen=True)
class Closure:
    """A window that closes (or, with ``window_slots == ()``, only slots to release).

    Attributes
    ----------
    pane
        Index of the pane whose completion closes this window.
    window_slots
        Ring slots of the window's panes, oldest first; empty for a release-only closure.
    reference_slots
        Rolling reference: slots of the window ``reference_lag`` windows earlier; ``None``
        without a lag, before that history exists, and for release-only closures.
    release_slots
        Slots the caller must zero *after* using this closure: panes that no later window or
        reference uses.
    start, end
        Window bounds ``[start, end)``: event sequence numbers (count) or seconds (time).
    events
        Events in the window's panes (late events excluded).
    """

    pane: int
    window_slots: tuple[int, ...]
    reference_slots: tuple[int, ...] | None
    release_slots: tuple[int, ...]
    start: float
    end: float
    events: int


@dataclass(frozen=True, eq=False)
class Segment:
    """A slice of a batch plus the closures to apply after adding its events.

    Attributes
    ----------
    start, stop
        The slice ``[start, stop)`` of the batch (``start == stop`` is possible for time windows
        when the first event of a batch moves the watermark: its closures come first).
    slots
        int64 array of length ``stop - start``: ring slot of each event, ``-1`` for a late event
        (count it, do not bin it).
    late
        Number of ``-1`` entries in :attr:`slots`.
    closures
        To apply, in order, after adding this segment's events.
    """

    start: int
    stop: int
    slots: np.ndarray
    late: int
    closures: tuple[Closure, ...]


def _positive_finite(x: float, name: str) -> float:
    v = float(x)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    return v


class PaneClock:
    """Assigns events to ring slots of panes and decides when windows close.

    Parameters
    ----------
    kind
        ``"count"``: ``size``/``slide`` are numbers of events. ``"time"``: seconds of event time.
    size
        Window length; a positive integer multiple of ``slide``.
    slide
        Pane width and hop between windows; ``None`` means tumbling (``slide = size``).
    allowed_lateness
        Seconds the watermark trails the largest timestamp seen (time windows only).
    reference_lag
        ``L >= 0``: with ``L > 0`` every closure also names the slots of the window that closed
        ``L`` windows earlier (a rolling reference); ``0`` means no rolling reference.
    max_panes
        Upper bound on :attr:`ring_size`; ``ValueError`` if the configuration needs more.

    Notes
    -----
    Ring size: count windows need ``(L+1)*k`` slots; time windows
    ``(L+1)*k + ceil(allowed_lateness/slide) + 1``. Pane ``q`` is in slot ``q % ring_size``.

    Examples
    --------
    Count windows of 4 events sliding by 2 (panes of 2 events, 2 panes per window):

    >>> clock = PaneClock("count", size=4, slide=2)
    >>> clock.ring_size
    2
    >>> segs = clock.plan(np.zeros(7))
    >>> [(s.start, s.stop, s.slots.tolist()) for s in segs]
    [(0, 4, [0, 0, 1, 1]), (4, 6, [0, 0]), (6, 7, [1])]
    >>> [(c.pane, c.window_slots, c.release_slots, c.start, c.end) for c in segs[0].closures]
    [(1, (0, 1), (0,), 0.0, 4.0)]
    >>> [(c.pane, c.window_slots, c.start, c.end) for c in segs[1].closures]
    [(2, (1, 0), 2.0, 6.0)]

    Tumbling 60 s windows, events up to 30 s late are still binned:

    >>> clock = PaneClock("time", size=60.0, allowed_lateness=30.0)
    >>> segs = clock.plan(np.array([10.0, 70.0, 50.0, 95.0, 20.0]))
    >>> [(s.start, s.stop, s.slots.tolist(), s.late) for s in segs]
    [(0, 3, [0, 1, 0], 0), (3, 5, [1, -1], 1)]
    >>> c = segs[0].closures[0]
    >>> c.window_slots, c.release_slots, c.start, c.end, c.events
    ((0,), (0,), 0.0, 60.0, 2)
    >>> clock.watermark, clock.events, clock.late_events, clock.windows_closed
    (65.0, 4, 1, 1)
    >>> PaneClock.from_snapshot(clock.snapshot()).snapshot() == clock.snapshot()
    True
    """

    def __init__(
        self,
        kind: Literal["count", "time"],
        size: float,
        slide: float | None = None,
        allowed_lateness: float = 0.0,
        reference_lag: int = 0,
        max_panes: int = 10_000,
    ) -> None:
        if kind not in ("count", "time"):
            raise ValueError(f"kind must be 'count' or 'time', got {kind!r}")
        size_f = _positive_finite(size, "window size")
        slide_f = size_f if slide is None else _positive_finite(slide, "window slide")
        ratio = size_f / slide_f
        k = round(ratio)
        if k < 1 or abs(ratio - k) > 1e-9:
            raise ValueError(
                f"window size {size_f:g} must be a positive integer multiple of slide {slide_f:g}"
            )
        lateness = float(allowed_lateness)
        if not math.isfinite(lateness) or lateness < 0:
            raise ValueError(f"allowed_lateness must be finite and >= 0, got {allowed_lateness!r}")
        if int(reference_lag) != reference_lag or reference_lag < 0:
            raise ValueError(f"reference_lag must be an integer >= 0, got {reference_lag!r}")
        if int(max_panes) != max_panes or max_panes < 1:
            raise ValueError(f"max_panes must be an integer >= 1, got {max_panes!r}")
        lag = int(reference_lag)
        if kind == "count":
            if not size_f.is_integer() or not slide_f.is_integer():
                raise ValueError(
                    f"count windows need whole numbers of events (size {size_f:g}, "
                    f"slide {slide_f:g})"
                )
            if lateness != 0:
                raise ValueError("allowed_lateness applies to time windows only")
            ring = (lag + 1) * k
        else:
            ring = (lag + 1) * k + math.ceil(lateness / slide_f) + 1
        if ring > max_panes:
            raise ValueError(
                f"window configuration needs {ring} panes (size/slide = {k}, reference_lag = "
                f"{lag}, allowed_lateness = {lateness:g}) but max_panes is {int(max_panes)}"
            )
        self.kind: Literal["count", "time"] = kind
        self.size: float = size_f
        self.slide: float = slide_f
        self.allowed_lateness: float = lateness
        self.reference_lag: int = lag
        self.max_panes: int = int(max_panes)
        #: Panes per window (``size / slide``).
        self.panes_per_window: int = k
        self._ring: int = ring
        self._span: int = (lag + 1) * k  # pane q is released by the closure of q + span - 1
        self._islide: int = int(slide_f)  # count windows only
        self._events: int = 0
        self._late: int = 0
        self._closed: int = 0
        self._max_ts: float | None = None
        self._lc: int | None = None  # last completed pane
        self._origin: int = 0  # first pane of the clock's history
        # pane -> number of events, for the panes currently held by a slot (events > 0 only).
        # Invariant (see _time_plan): at most one held pane per slot, so len <= ring_size.
        self._held: dict[int, int] = {}
        self._slot_pane: list[int | None] = [None] * ring  # pane held by each slot

    # ------------------------------------------------------------------ read-only state

    @property
    def ring_size(self) -> int:
        """Number of ring slots (rows of the caller's per-feature ``counts`` array)."""
        return self._ring

    @property
    def events(self) -> int:
        """Events assigned to a slot so far (late events excluded)."""
        return self._events

    @property
    def late_events(self) -> int:
        """Late events so far (time windows)."""
        return self._late

    @property
    def windows_closed(self) -> int:
        """Windows reported so far (release-only closures excluded)."""
        return self._closed

    @property
    def watermark(self) -> float | None:
        """Largest timestamp seen minus ``allowed_lateness``; ``None`` before any (or count)."""
        if self._max_ts is None:
            return None
        return self._max_ts - self.allowed_lateness

    # ------------------------------------------------------------------ planning

    def plan(self, timestamps: np.ndarray) -> list[Segment]:
        """Plan one batch of events, given in arrival order.

        Parameters
        ----------
        timestamps
            1-D float64 event times in seconds; only the length matters for count windows.

        Returns
        -------
        list[Segment]
            Consecutive slices covering the batch (empty for an empty batch). Apply them in
            order: add each segment's events, then its closures.

        Raises
        ------
        ValueError
            Not 1-D, or (time windows) a NaN, infinite or out-of-range timestamp. The clock's
            state is unchanged then.
        """
        ts = np.asarray(timestamps)
        if ts.ndim != 1:
            raise ValueError("timestamps must be a 1-D array")
        if ts.size == 0:
            return []
        if self.kind == "count":
            return self._count_plan(ts.size)
        ts = ts.astype(np.float64, copy=False)
        if not np.all(np.isfinite(ts)):
            raise ValueError("timestamps must be finite (NaN/inf events must be rejected first)")
        if float(np.max(np.abs(ts))) / self.slide >= _MAX_PANE:
            raise ValueError("timestamps too large for the window slide")
        return self._time_plan(ts)

    def _pane_of(self, x: np.ndarray) -> np.ndarray:
        """Pane ``q`` with ``q*slide <= x < (q+1)*slide`` in float64 (int64 array)."""
        s = self.slide
        q = np.floor(x / s).astype(np.int64)
        # x / s is rounded, so floor can be off by one near a pane edge: fix it against the
        # products used for the reported bounds.
        q -= (q.astype(np.float64) * s > x).astype(np.int64)
        q += ((q + 1).astype(np.float64) * s <= x).astype(np.int64)
        return q

    def _add(self, panes: np.ndarray) -> None:
        """Count events (non-late panes) into their slots, checking slot ownership."""
        if panes.size == 0:
            return
        uniq, counts = np.unique(panes, return_counts=True)
        held, owner, ring = self._held, self._slot_pane, self._ring
        for q, n in zip(uniq.tolist(), counts.tolist(), strict=True):
            if q in held:
                held[q] += n
                continue
            s = q % ring
            if owner[s] is not None:  # pragma: no cover - excluded by the ring sizing
                raise RuntimeError(f"ring slot {s} still holds pane {owner[s]}, not {q}")
            owner[s] = q
            held[q] = n
        self._events += int(panes.size)

    def _slots(self, first: int, last: int) -> tuple[int, ...]:
        ring = self._ring
        return tuple(q % ring for q in range(first, last + 1))

    def _window_events(self, first: int, last: int) -> int:
        held = self._held
        return sum(held.get(q, 0) for q in range(first, last + 1))

    def _closure(self, p: int, releases: list[int]) -> Closure:
        """The (non-empty) window closing at pane ``p``; ``releases`` are panes to free."""
        k, lag = self.panes_per_window, self.reference_lag
        first = p - k + 1
        ref: tuple[int, ...] | None = None
        if lag > 0 and first - lag * k >= self._origin:
            ref = self._slots(first - lag * k, p - lag * k)
        self._closed += 1
        return Closure(
            pane=p,
            window_slots=self._slots(first, p),
            reference_slots=ref,
            release_slots=tuple(q % self._ring for q in releases),
            start=float(first) * self.slide,
            end=float(p + 1) * self.slide,
            events=self._window_events(first, p),
        )

    def _release(self, panes: list[int]) -> None:
        for q in panes:
            if self._held.pop(q, None) is not None:
                self._slot_pane[q % self._ring] = None

    def _count_plan(self, n: int) -> list[Segment]:
        slide, k, span, ring = self._islide, self.panes_per_window, self._span, self._ring
        seq0 = self._events
        seqs = np.arange(seq0, seq0 + n, dtype=np.int64)
        panes = seqs // slide
        slots = panes % ring
        # Closures fire after the last event of pane p, for p >= k-1 (a full window).
        first_end = max(seq0, (k * slide) - 1)
        first_end += (-(first_end + 1)) % slide  # next seq >= first_end that ends a pane
        ends = range(first_end, seq0 + n, slide)
        segments: list[Segment] = []
        a = 0
        for e in ends:
            b = e - seq0 + 1
            self._add(panes[a:b])
            p = e // slide
            rel = [p - span + 1] if p - span + 1 >= 0 else []
            closure = self._closure(p, rel)
            self._release(rel)
            segments.append(Segment(a, b, slots[a:b], 0, (closure,)))
            a = b
        if a < n:
            self._add(panes[a:n])
            segments.append(Segment(a, n, slots[a:n], 0, ()))
        self._lc = self._events // slide - 1
        return segments

    def _advance(self, lc_old: int, lc_new: int) -> list[Closure]:
        """Complete panes ``lc_old+1 .. lc_new``: report non-empty windows, release panes.

        Only held panes (those with events) matter: a window closing at ``p`` can have events
        only if ``p <= max(held) + k - 1``, and releases happen at ``q + span - 1`` for held
        ``q``. Since ``max(held) <= lc_old + 1 + ceil(lateness/slide)`` (see ``_time_plan``),
        the loop is ``O(ring_size)`` whatever the gap.
        """
        held = self._held
        if not held:
            return []
        k, span = self.panes_per_window, self._span
        release_at: dict[int, list[int]] = {}
        for q in sorted(held):
            p = q + span - 1
            if lc_old < p <= lc_new:
                release_at.setdefault(p, []).append(q)
        hi = min(lc_new, max(held) + k - 1)
        candidates = sorted(set(range(lc_old + 1, hi + 1)).union(release_at))
        out: list[Closure] = []
        for p in candidates:
            rel = release_at.get(p, [])
            if self._window_events(p - k + 1, p) > 0:
                out.append(self._closure(p, rel))
            elif rel:
                out.append(
                    Closure(
                        pane=p,
                        window_slots=(),
                        reference_slots=None,
                        release_slots=tuple(q % self._ring for q in rel),
                        start=float(p - k + 1) * self.slide,
                        end=float(p + 1) * self.slide,
                        events=0,
                    )
                )
            self._release(rel)
        return out

    def _time_plan(self, ts: np.ndarray) -> list[Segment]:
        # Ring sizing, proof. Let span = (L+1)*k, c = ceil(lateness/slide), M the largest
        # timestamp seen and lc = pane(M - lateness) - 1 the last completed pane. Pane q is
        # released by the closure of q + span - 1, so every pane still held (unreleased, with
        # events) satisfies q >= lc - span + 2. Events are only added to panes > lc (others
        # are late) and <= pane(M). For any x, pane(x) - pane(x - a) <= ceil(a/slide): with
        # x in [P*s, (P+1)*s), x - a >= P*s - a, so pane(x - a) >= P - ceil(a/s). Hence every
        # held pane lies in [lc - span + 2, lc + 1 + c], a run of span + c consecutive panes,
        # which map to distinct slots of a ring of span + c + 1 >= span + c slots (the spare
        # slot absorbs float rounding at pane edges). Closures triggered by an event are
        # applied before that event is added, so the bound holds with lc already advanced
        # when the event is binned. _add() re-checks ownership at run time regardless.
        panes = self._pane_of(ts)
        run_max = np.maximum.accumulate(ts)
        if self._max_ts is not None:
            run_max = np.maximum(run_max, self._max_ts)
        lc = self._pane_of(run_max - self.allowed_lateness) - 1  # last completed, after event i
        if self._lc is None:  # first event ever: nothing before it is late or open
            self._lc = int(lc[0])
            self._origin = self._lc + 1
        prev = np.empty_like(lc)
        prev[0] = self._lc
        prev[1:] = lc[:-1]
        late = panes <= lc  # the event's own max never completes its own pane
        slots = np.where(late, -1, panes % self._ring)
        segments: list[Segment] = []
        a = added = 0  # start of the open segment; events before `added` are counted
        n = ts.size
        for i in [*np.flatnonzero(lc > prev).tolist(), n]:
            self._add(panes[added:i][~late[added:i]])
            added = i
            closures = self._advance(int(prev[i]), int(lc[i])) if i < n else []
            if i < n:
                self._lc = int(lc[i])
            if closures or i == n:  # cut only where there is something to apply
                n_late = int(np.count_nonzero(late[a:i]))
                self._late += n_late
                segments.append(Segment(a, i, slots[a:i], n_late, tuple(closures)))
                a = i
        self._max_ts = float(run_max[-1])
        self._lc = int(lc[-1])
        return segments

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; a restored clock continues exactly."""
        slot_events = [0] * self._ring
        slot_panes: list[int | None] = [None] * self._ring
        for q, n in self._held.items():
            slot_events[q % self._ring] = int(n)
            slot_panes[q % self._ring] = int(q)
        return {
            "v": SNAPSHOT_VERSION,
            "kind": self.kind,
            "size": self.size,
            "slide": self.slide,
            "allowed_lateness": self.allowed_lateness,
            "reference_lag": self.reference_lag,
            "max_panes": self.max_panes,
            "events": int(self._events),
            "late_events": int(self._late),
            "windows_closed": int(self._closed),
            "max_timestamp": self._max_ts,
            "last_completed_pane": self._lc,
            "origin_pane": int(self._origin),
            "slot_events": slot_events,
            "slot_panes": slot_panes,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> PaneClock:
        """Rebuild from :meth:`snapshot`; ``ValueError`` on an unknown version or bad state."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported PaneClock snapshot version {d.get('v')!r}")
        c = cls(
            d["kind"],
            float(d["size"]),
            float(d["slide"]),
            allowed_lateness=float(d["allowed_lateness"]),
            reference_lag=int(d["reference_lag"]),
            max_panes=int(d["max_panes"]),
        )
        c._events = int(d["events"])
        c._late = int(d["late_events"])
        c._closed = int(d["windows_closed"])
        c._max_ts = None if d["max_timestamp"] is None else float(d["max_timestamp"])
        c._lc = None if d["last_completed_pane"] is None else int(d["last_completed_pane"])
        c._origin = int(d["origin_pane"])
        events, panes = list(d["slot_events"]), list(d["slot_panes"])
        if len(events) != c._ring or len(panes) != c._ring:
            raise ValueError("slot_events/slot_panes length does not match the ring size")
        for s, (n, q) in enumerate(zip(events, panes, strict=True)):
            if q is None:
                if int(n) != 0:
                    raise ValueError(f"slot {s} has events but no pane")
                continue
            if int(q) % c._ring != s or int(n) <= 0:
                raise ValueError(f"slot {s} holds pane {q} with {n} events: inconsistent")
            c._held[int(q)] = int(n)
            c._slot_pane[s] = int(q)
        return c
