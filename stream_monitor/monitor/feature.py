"""Per-feature monitors: the reference, a ring of window panes, the statistics and the detectors.

A feature monitor has a reference and a ring of panes. The reference is either learnt from the
model's first events (zero configuration: values are buffered, then frozen into fixed bins,
quantile edges for numbers, top-K categories plus "other" for strings) or read from a profile
built from training data (``stream-monitor profile``). After that every event is binned into the
pane its model's :class:`~stream_monitor.stats.windows.PaneClock` assigns, with one
``searchsorted`` and one ``bincount`` per batch; a window is the sum of its panes, so tumbling and
sliding windows, by count or event time, cost the same.

When a window closes the monitor computes every configured statistic against the reference
(or, with a rolling reference, against an earlier window held in the same ring), judges the
alerting ones against fixed or calibrated thresholds, feeds the per-window change detectors and
judges each data-quality signal. Each feature also keeps per-value change detectors (ADWIN and
Page-Hinkley on PIT-standardised values) that see every value in arrival order.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple, Protocol

import numpy as np

from stream_monitor.alerts.observation import Direction, Observation
from stream_monitor.config import DriftConfig
from stream_monitor.events.schema import MAX_NAME_LENGTH, AlertKind
from stream_monitor.monitor.window_detectors import WindowDetectors
from stream_monitor.reference.profile import CategoricalProfile, NumericProfile
from stream_monitor.stats import (
    BoundedCounter,
    Debouncer,
    bin_counts,
    quantile_edges,
    top_categories,
)
from stream_monitor.stats.bounds import clip_magnitude
from stream_monitor.stats.calibrate import (
    Calibration,
    batch_statistics,
    cached_calibrate,
    cached_calibrate_rolling,
    calibration_size,
)
from stream_monitor.stats.drift import ADWIN, PageHinkley, update_all
from stream_monitor.stats.levels import ewma_paths
from stream_monitor.stats.pit import PIT_POINTS
from stream_monitor.stats.statistics import REGISTRY as STATISTIC_REGISTRY
from stream_monitor.stats.windows import Closure

__all__ = [
    "ABSENT",
    "NUMBER_TYPES",
    "CategoricalFeature",
    "FeatureMonitor",
    "NumericFeature",
    "Staged",
    "feature_from_snapshot",
    "ingest_numeric",
    "pit_standardise",
    "run_detectors",
    "stage_numeric",
    "window_statistics",
]

#: 3: which way the last detected changes went (see :func:`towards_reference`). 4: values
#: scored against a rolling reference (``rolling_values``); a version-3 snapshot reads with 0.
#: 5: the calibrations the feature judges its windows with (``calibrations``); older ones read
#: with none (simulated again at the next window).
SNAPSHOT_VERSION = 5
#: Feature snapshot versions :meth:`FeatureMonitor._restore_common` reads.
READABLE_VERSIONS = frozenset({3, 4, SNAPSHOT_VERSION})
#: Calibrations a feature keeps (see :meth:`FeatureMonitor._calibrate`): one per window size
#: it was judged at recently; a count window has one size.
KEPT_CALIBRATIONS = 4
#: Bumped when :func:`~stream_monitor.stats.calibrate.calibrate` simulates differently:
#: calibrations kept in a snapshot under another are simulated again.
CALIBRATION_METHOD = 1
#: Smoothing of the fast and the slow level of a numeric feature's PIT scores (exponentially
#: weighted means, spans of about 200 and 2,000 values): a change the detectors agree on is a
#: return when the fast level is back nearer the reference (0) than the slow one.
LEVEL_ALPHAS = (0.01, 0.001)
#: A fast level within this many reference standard deviations of the reference is back.
LEVEL_NEAR = 0.2
#: Rolling reference: per-value PIT scores against the lagged window are divided by this
#: (the reference is a sample about as large as the window, see ``_score_rolling``).
ROLLING_SCALE = math.sqrt(2.0)
#: A window whose alerting statistic is within this many standard deviations of its no-drift
#: centre (its calibrated z-score) looks like the reference: a change the window detectors
#: find there is not drift.
WINDOW_NEAR = 0.5


def towards_reference(fast: float, slow: float) -> bool:
    """Whether a change ends nearer the reference than it started: the recent (``fast``) level
    of standardised values is closer to the reference's 0 than the longer-run (``slow``) one on
    the same side, or within :data:`LEVEL_NEAR` of it. A change across the reference (from
    +1 to -1) is not a return.

    >>> towards_reference(0.63, 0.1), towards_reference(0.37, 0.9), towards_reference(-0.3, 0.8)
    (False, True, False)
    >>> towards_reference(-0.05, 0.9)   # back, with noise on the other side
    True
    """
    return abs(fast) < LEVEL_NEAR or (fast * slow > 0 and abs(fast) < abs(slow))


def _moving(before: float | None, now: float) -> Direction | None:
    """Which way a window statistic moved, from its previous value to this one (each divided
    by its threshold, so windows of different sizes compare): away from the reference when it
    grew, back when it fell, None without a previous value or a change.

    >>> _moving(0.8, 1.3), _moving(2.0, 1.3), _moving(None, 1.3), _moving(1.3, 1.3)
    ('away', 'back', None, None)
    """
    if before is None or now == before:
        return None
    return "away" if now > before else "back"


def rolling_lag_panes(cfg: DriftConfig) -> int:
    """Panes between a pane and the last pane of its rolling reference: ``lag_windows`` times
    the panes per window (as :class:`~stream_monitor.stats.windows.PaneClock` counts them),
    or 0 without a rolling reference.

    >>> rolling_lag_panes(DriftConfig(reference={"mode": "rolling", "lag_windows": 24}))
    24
    >>> rolling_lag_panes(DriftConfig(
    ...     reference={"mode": "rolling", "lag_windows": 2}, window={"size": 600, "slide": 200}))
    6
    >>> rolling_lag_panes(DriftConfig())
    0
    """
    ref, w = cfg.reference, cfg.window
    if ref.mode != "rolling":
        return 0
    k = 1 if w.slide is None else max(1, round(w.size / w.slide))
    return ref.lag_windows * k


class _Absent:
    """Marks a field missing from the payload (as opposed to present with a null value)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

# Columns of the per-pane data-quality counters shared by every feature.
EVENTS, MISSING, ABSENT_COL, TYPE_ERRORS = 0, 1, 2, 3
#: Numeric: values outside the reference's [min, max]. Categorical: values never seen in it.
OUT_OF_RANGE = NEW_CATEGORY = 4
SENTINEL0 = 5  # numeric: one column per configured sentinel value from here
#: Quality signals about the reference's support, judged in the feature's drift incident.
SUPPORT_SIGNALS = frozenset({"out_of_range_ratio", "new_category_ratio"})


class FeatureMonitor:
    """Shared behaviour of numeric and categorical feature monitors."""

    type_name = ""

    def __init__(self, name: str, kind: AlertKind, cfg: DriftConfig) -> None:
        self.name = name
        self.kind = kind
        self.cfg = cfg
        self.frozen = False
        self.profiled = False
        # Reference-period counters (zero-config) or the profile's.
        self.ref_n = 0
        self.ref_missing = 0
        self.ref_absent = 0
        self.ref_type_errors = 0
        #: Reference rate of each quality column (set at freeze), aligned with the pane columns.
        self.ref_rates: np.ndarray = np.zeros(0)
        #: Reference bin counts and their sample size (what calibration simulates from).
        self.ref_counts: np.ndarray | None = None
        self.ring_size = 0
        self.counts: np.ndarray = np.zeros((0, 0), dtype=np.int64)
        self.quality: np.ndarray = np.zeros((0, 0), dtype=np.int64)
        self.type_errors = 0  # over the whole stream, for /metrics
        #: Every statistic of the last closed window against its reference, by name.
        self.scores: dict[str, float] = {}
        #: The threshold each alerting statistic was judged against in the last window.
        self.thresholds: dict[str, float] = {}
        #: Data-quality rates of the last closed window, by signal.
        self.quality_ratios: dict[str, float] = {}
        self.window_events = 0
        self.windows_closed = 0
        self.rolling_windows = 0  # windows judged against a rolling reference
        #: With a rolling reference: how many panes back the reference of a pane's values ends
        #: (``lag_windows`` windows of ``size / slide`` panes); 0 without one.
        self.lag_panes = rolling_lag_panes(cfg)
        #: True while the last closed window breached an alerting statistic or window detector.
        self.drifting = False
        self.window_detectors: WindowDetectors | None = None
        #: The window detectors were just restarted for a rolling reference: the window being
        #: judged reports their signal (cleared) even during their warm-up.
        self._rebased = False
        #: The detectors' verdicts in the last fed column, at each row where it may change:
        #: ``(row, value, breached, cleared, direction)`` (numeric only; see
        #: :meth:`take_firings`; direction: which way the recent firings went, or None).
        self.detector_points: list[tuple[int, float, bool, bool, Direction | None]] = []
        #: Whether the changes last detected went back towards the reference: by the
        #: per-value detectors (numeric features) and by the window detectors. Such a change
        #: is not drift: its signal reads as cleared until a change away from it.
        self.detectors_returned = False
        self.windows_returned = False
        #: The z-score of the alerting statistic in the previous window (None: none yet).
        self.last_z: float | None = None
        #: The closure window_inputs last summed, with its window counts, their total and the
        #: reference (what close() of the same closure would compute again).
        self._window_seen: _WindowSeen | None = None
        #: What every window close reads of the configuration and the reference (see
        #: :meth:`_close_plan`).
        self._plan: _ClosePlan | None = None
        #: The calibrations of the fixed reference the last windows were judged with, by what
        #: determines them (see :meth:`_calibrate`). In the snapshot: a restarted or
        #: reassigned partition judges its next windows without simulating them again (a
        #: fresh process's memo is empty, and a few dozen cost a second or more).
        self.calibrations: dict[tuple[Any, ...], dict[str, Calibration]] = {}
        #: Bin of each row of the last ingested segment: -1 where the row has no usable value
        #: or is late (slot -1), for per-version histograms of the model's outputs.
        self.last_bins: np.ndarray | None = None

    @property
    def psi(self) -> float | None:
        """PSI of the last closed window, if one was judged."""
        return self.scores.get("psi")

    @property
    def missing_ratio(self) -> float | None:
        """Missing-value share of the last closed window, if one was judged."""
        return self.quality_ratios.get("missing_ratio")

    # --- phases -------------------------------------------------------------------------------
    def observe_reference(self, column: Sequence[Any]) -> None:
        raise NotImplementedError

    def freeze(self, ring_size: int) -> None:
        raise NotImplementedError

    def ingest(self, column: Sequence[Any], slots: np.ndarray) -> None:
        """Bin one segment of values into the ring slots the clock assigned (-1: late), and
        leave each row's bin in :attr:`last_bins`."""
        self.stage(column, slots).add(0)

    def stage(
        self, column: Sequence[Any], slots: np.ndarray, cuts: Sequence[int] | None = None
    ) -> Staged:
        """Work out what a batch's values give without the ring (parsed values, bins, quality
        flags, PIT scores waiting for the detectors) once; the returned object's ``add(i)``
        then adds segment ``i``, rows ``cuts[i]:cuts[i + 1]`` (default: one segment of all
        rows), to the ring slots ``slots`` assigns. Add the segments in order, each after the
        closures of the one before (they release slots a later segment may take)."""
        raise NotImplementedError

    def _alloc(self, ring_size: int, n_bins: int, n_quality: int) -> None:
        self.ring_size = ring_size
        self.counts = np.zeros((ring_size, n_bins), dtype=np.int64)
        self.quality = np.zeros((ring_size, n_quality), dtype=np.int64)
        wd = self.cfg.window_detectors
        if wd.enabled and self.window_detectors is None:
            self.window_detectors = WindowDetectors(wd, self._window_streams())
        self.frozen = True

    def _window_streams(self) -> list[str]:
        return ["statistic"]

    def _add_quality(self, slots: np.ndarray, flags: Sequence[np.ndarray]) -> None:
        """Count each boolean flag column per slot (late events, slot -1, excluded)."""
        ok = slots >= 0
        r = self.ring_size
        if ok.all() and len(slots) and (slots == slots[0]).all():
            self.quality[slots[0]] += np.array([int(np.count_nonzero(f)) for f in flags])
            return
        s = slots[ok]
        for j, f in enumerate(flags):
            self.quality[:, j] += np.bincount(s[f[ok]], minlength=r)

    def _add_bins(self, slots: np.ndarray, bins: np.ndarray) -> None:
        """``bins`` and ``slots`` aligned, late values already removed."""
        if not len(bins):
            return
        nb = self.counts.shape[1]
        if (slots == slots[0]).all():
            self.counts[slots[0]] += np.bincount(bins, minlength=nb)
            return
        flat = np.bincount(slots * nb + bins, minlength=self.ring_size * nb)
        self.counts += flat.reshape(self.ring_size, nb)

    # --- windows ------------------------------------------------------------------------------
    def close(
        self,
        closure: Closure,
        model_id: str,
        observed_at: float,
        model_version: str | None,
        statistics: Mapping[str, float] | None = None,
    ) -> list[Observation]:
        """Judge the window ``closure`` describes, then release the panes it frees.

        ``statistics``: the window's statistics when the caller computed them already for
        many features at once (see :func:`window_statistics`)."""
        obs: list[Observation] = []
        self.drifting = False
        slots = closure.window_slots
        if slots:
            seen, self._window_seen = self._window_seen, None
            if seen is not None and seen[0] is closure:  # window_inputs summed it already
                _, win, n_win, reference = seen
            else:
                win, reference = _window_sum(self.counts, slots), None
                n_win = sum(win.tolist())
            q = _window_list(self.quality, slots)
            events = self.window_events = q[EVENTS]
            name = self.name
            plan = self._close_plan()

            def o(
                kind: AlertKind,
                signal: str,
                value: float,
                thr: float,
                clear: float,
                direction: Direction | None = None,
            ) -> None:
                # Every field by position (keywords cost a third more, some 200 times a close):
                # model_id, kind, feature, signal, value, threshold, breached, cleared,
                # observed_at, window_events, model_version, segment, baseline, direction.
                obs.append(
                    Observation(
                        model_id,
                        kind,
                        name,
                        signal,
                        value,
                        thr,
                        value > thr,
                        value <= clear,
                        observed_at,
                        events,
                        model_version,
                        None,
                        None,
                        direction,
                    )
                )

            if n_win > 0 and self.ref_counts is not None:
                ref, n_ref, rolling = reference or self._reference_for(closure, plan)
                if rolling and not self.rolling_windows:
                    self._rebase_window_detectors()
                self.rolling_windows += rolling
                self._judge_statistics(ref, n_ref, win, n_win, o, slots, plan, statistics)
            if events > 0:
                self._judge_quality(q, o, plan)
            self.windows_closed += 1
        for s in closure.release_slots:
            self.counts[s] = 0
            self.quality[s] = 0
            self._release(s)
        return obs

    def _rebase_window_detectors(self) -> None:
        """The first window judged against a rolling reference: the window detectors start
        afresh (with their warm-up), since the streams they saw so far (the statistic and the
        window mean against the fixed reference) measured against another reference. The
        firings they made stay counted; their incident clears."""
        if self.window_detectors is None:
            return
        detections = self.window_detectors.detections
        self.window_detectors = WindowDetectors(self.cfg.window_detectors, self._window_streams())
        self.window_detectors.detections = dict(detections)
        self.windows_returned = False
        self.last_z = None
        self._rebased = True  # this window reports the signal cleared (see _judge_statistics)

    def _release(self, slot: int) -> None:
        """Zero a subclass's own per-slot state."""

    def _reference_for(self, closure: Closure, plan: _ClosePlan) -> tuple[np.ndarray, int, bool]:
        """The counts a window is compared with, their total, and whether they are the
        rolling reference (an earlier window) rather than the fixed one."""
        assert self.ref_counts is not None
        if closure.reference_slots:
            rc = _window_sum(self.counts, closure.reference_slots)
            n = sum(rc.tolist())
            if n >= self.cfg.reference.min_events:
                return rc, n, True
        return self.ref_counts, plan.ref_total, False

    def window_inputs(self, closure: Closure) -> WindowInputs | None:
        """What the window's statistics are computed from, or None when there are none."""
        slots = closure.window_slots
        if not slots or self.ref_counts is None:
            return None
        win = _window_sum(self.counts, slots)
        n_win: int = sum(win.tolist())  # a few Python ints add up faster than an array sums
        if n_win <= 0:
            return None
        plan = self._close_plan()
        reference = self._reference_for(closure, plan)
        self._window_seen = (closure, win, n_win, reference)  # for close() of the same closure
        return WindowInputs(reference[0], win, plan.statistics, plan.points, plan.scale)

    def _judge_statistics(
        self,
        ref: np.ndarray,
        n_ref: int,
        win: np.ndarray,
        n_win: int,
        o: Any,
        slots: Sequence[int],
        plan: _ClosePlan,
        statistics: Mapping[str, float] | None = None,
    ) -> None:
        """Judge the window's statistics (``n_win``: its events, ``win.sum()``) and feed the
        window detectors."""
        cfg = self.cfg
        if statistics is None:
            values = batch_statistics(
                ref, win[None, :], plan.statistics, points=plan.points, scale=plan.scale
            )
            statistics = {k: float(v[0]) for k, v in values.items()}
        # The previous window's alerting statistics, each divided by its threshold then.
        old, old_thr = self.scores, self.thresholds
        before = {k: old[k] / t for k in cfg.alert_statistics if k in old and (t := old_thr.get(k))}
        self.scores = {k: v for k, v in statistics.items() if math.isfinite(v)}
        # _reference_for hands back the fixed reference itself, or a lagged window's counts.
        lagged = None if ref is self.ref_counts else (ref, win)
        calib = self._calibrate(n_ref, n_win, plan, lagged)
        th = cfg.thresholds
        breached = False
        z: float | None = None
        for s in cfg.alert_statistics:
            value = self.scores.get(s)
            if value is None:
                continue
            if th.mode == "fixed":
                thr = th.fixed[s]
            else:
                assert calib is not None
                thr = max(calib[s].threshold, th.min_effect.get(s, 0.0))
            self.thresholds[s] = thr
            breached |= value > thr
            o(self.kind, s, value, thr, thr * th.resolve_ratio, _moving(before.get(s), value / thr))
            if z is None and calib is not None:
                z = calib[s].zscore(value)
        wd = self.window_detectors
        if wd is not None:
            streams = self._window_values(slots)
            if z is not None:
                streams["statistic"] = z
            fired = wd.feed(streams)
            if fired and z is not None:
                # The statistic measures the distance from the reference: a change that
                # lowered it went back towards the reference, and one that leaves it where it
                # is without drift (within WINDOW_NEAR of the calibrated null's centre) is there.
                self.windows_returned = z <= WINDOW_NEAR or (
                    self.last_z is not None and z < self.last_z
                )
            elif fired:
                self.windows_returned = False
            if wd.windows > cfg.window_detectors.min_windows or fired or self._rebased:
                self._rebased = False
                active = wd.active
                level = 1.0 if active and not self.windows_returned else 0.0
                direction: Direction | None = None
                if active:
                    direction = "back" if self.windows_returned else "away"
                o(self.kind, "window_detectors", level, 0.5, 0.0, direction)
                breached |= fired and not self.windows_returned
        self.last_z = z
        self.drifting = breached

    def _window_values(self, slots: Sequence[int]) -> dict[str, float]:
        return {}

    #: Bins have an order (numeric): statistics that need one apply (stats/statistics.py).
    ordered = True

    def _applies(self, statistic: str, points: np.ndarray | None) -> bool:
        s = STATISTIC_REGISTRY[statistic]
        if s.ordered and not self.ordered:
            return False
        return not s.needs_points or points is not None

    def _calibrate(
        self,
        n_ref: int,
        n_win: int,
        plan: _ClosePlan,
        lagged: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, Calibration] | None:
        """The alerting statistics' calibrations for a window of ``n_win`` events against a
        reference of ``n_ref``; ``lagged``: the (reference, window) counts when the reference
        is rolling (an earlier window), whose null shape is the pair's, not the fixed
        reference's (see :func:`~stream_monitor.stats.calibrate.rolling_shape`)."""
        cfg = self.cfg
        if cfg.thresholds.mode == "fixed" and self.window_detectors is None:
            return None
        assert self.ref_counts is not None
        names = plan.alerting
        if not names:
            return None
        # Sizes that vary from window to window share calibrations on a grid: time windows, and
        # count windows short of their size because some values were missing (else a feature
        # with 1 % missing values needs a dozen calibrations, and a few hundred such features
        # overflow the memo). Fixed sizes (a full count window, the fixed reference) are
        # simulated exactly.
        if cfg.window.kind == "time" or n_win != int(cfg.window.size):
            n_win = calibration_size(n_win)
        th = cfg.thresholds
        rest = (th.false_alarm_rate, names, plan.points, plan.scale, plan.draws)
        if lagged is not None:
            # The reference is an earlier window: its size on the grid as the window's.
            if cfg.window.kind == "time" or n_ref != int(cfg.window.size):
                n_ref = calibration_size(n_ref)
            return cached_calibrate_rolling(lagged[0], lagged[1], n_ref, n_win, *rest)
        if n_ref != plan.ref_total:
            n_ref = calibration_size(n_ref)
        # The process-wide memo shares calibrations between features; the feature keeps its
        # own for its snapshot. The plan's digest stands for the reference, points and scale.
        key = (plan.digest, n_ref, n_win, th.false_alarm_rate, names, plan.draws)
        kept = self.calibrations.get(key)
        if kept is None:
            kept = cached_calibrate(self.ref_counts, n_ref, n_win, *rest)
            if len(self.calibrations) >= KEPT_CALIBRATIONS:
                del self.calibrations[next(iter(self.calibrations))]  # the oldest
            self.calibrations[key] = kept
        return kept

    def _close_plan(self) -> _ClosePlan:
        """What a window close reads of the configuration and the reference, worked out once
        rather than at every window of every feature: again only when the reference arrays
        (``ref_counts``, ``ref_rates``) or the Wasserstein points are replaced (at a freeze,
        a profile, a restore; none is changed in place)."""
        points, scale = self._wasserstein_points()
        plan = self._plan
        if (
            plan is not None
            and plan.ref_counts is self.ref_counts
            and plan.ref_rates is self.ref_rates
            and plan.points is points
        ):
            return plan
        cfg = self.cfg
        qc = cfg.quality
        kind = self.kind
        plan = self._plan = _ClosePlan(
            ref_counts=self.ref_counts,
            ref_rates=self.ref_rates,
            points=points,
            scale=scale,
            statistics=tuple(s for s in cfg.statistics if self._applies(s, points)),
            alerting=tuple(s for s in cfg.alert_statistics if self._applies(s, points)),
            ref_total=0 if self.ref_counts is None else int(self.ref_counts.sum()),
            draws=cfg.thresholds.draws(),
            digest=_reference_digest(self.ref_counts, points, scale),
            rates=self.ref_rates.tolist(),
            quality=tuple(
                (signal, j, increase, kind if signal in SUPPORT_SIGNALS else "data_quality")
                for signal, j, increase in (  # as _judge_quality judges the extra ones
                    ("missing_ratio", MISSING, qc.missing_increase),
                    ("absent_ratio", ABSENT_COL, qc.absent_increase),
                    ("type_error_ratio", TYPE_ERRORS, qc.type_error_increase),
                )
            ),
        )
        return plan

    def _wasserstein_points(self) -> tuple[np.ndarray | None, float | None]:
        return None, None

    def _judge_quality(self, q: list[int], o: Any, plan: _ClosePlan) -> None:
        """Judge each data-quality signal of a window (``q``: its quality counts by column,
        ``q[EVENTS] > 0``): the signal's share of the window's events against the reference
        rate plus the signal's margin, resolving halfway back to the reference rate."""
        r = plan.rates
        n = float(q[EVENTS])
        ratios: dict[str, float] = {}
        kind = self.kind
        # Values outside the reference's support are part of the feature's drift incident: a
        # large shift moves values out of range, and that is one problem, not two.
        extra = [
            (signal, j, increase, kind if signal in SUPPORT_SIGNALS else "data_quality")
            for signal, j, increase in self._extra_quality(q, r, n)
        ]
        for signal, j, increase, judged in (*plan.quality, *extra):
            value = q[j] / n
            base = r[j]
            limit = base + increase
            ratios[signal] = value
            o(judged, signal, value, limit, limit - (limit - base) / 2)
        self.quality_ratios = ratios

    def _extra_quality(
        self, q: list[int], r: list[float], n: float
    ) -> list[tuple[str, int, float]]:
        """A subclass's own quality signals of a window as ``(signal, column, margin)``
        (``q``: the window's quality counts, ``r``: the reference rates, ``n``: the events)."""
        return []

    def detector_observations(
        self, model_id: str, events: Sequence[Any]
    ) -> list[tuple[int, Observation]]:
        """The per-value detectors' verdicts in the last fed column (``events``: its rows,
        with ``timestamp`` and ``model_version``), each with its row and stamped with that
        row's event time: at every row where the verdict may change (a firing, the value
        after it, the value at which it leaves ``agreement_events``), so the same values give
        the same observations however they are cut into batches."""
        need = float(self.cfg.detectors.min_agreeing)
        out = []
        for row, value, breached, cleared, direction in self.detector_points:
            e = events[row]
            o = Observation(
                model_id=model_id,
                kind=self.kind,
                feature=self.name,
                signal="change_detectors",
                value=value,
                threshold=need,
                breached=breached,
                cleared=cleared,
                observed_at=e.timestamp,
                model_version=e.model_version,
                direction=direction,
            )
            out.append((row, o))
        return out

    def _base_ref_rates(self, n: int) -> list[float]:
        n = max(n, 1)
        return [1.0, self.ref_missing / n, self.ref_absent / n, self.ref_type_errors / n]

    # --- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "type": self.type_name,
            "name": self.name,
            "kind": self.kind,
            "frozen": self.frozen,
            "profiled": self.profiled,
            "ref": [self.ref_n, self.ref_missing, self.ref_absent, self.ref_type_errors],
            "ref_rates": self.ref_rates.tolist(),
            "ref_counts": None if self.ref_counts is None else self.ref_counts.tolist(),
            "ring_size": self.ring_size,
            "counts": self.counts.tolist(),
            "quality": self.quality.tolist(),
            "type_errors": self.type_errors,
            "scores": dict(self.scores),
            "thresholds": dict(self.thresholds),
            "quality_ratios": dict(self.quality_ratios),
            "windows": [self.window_events, self.windows_closed, self.rolling_windows],
            "drifting": self.drifting,
            "window_detectors": None
            if self.window_detectors is None
            else self.window_detectors.snapshot(),
            "returned": [self.detectors_returned, self.windows_returned],
            "last_z": self.last_z,
            "calibrations": [
                [*key[:4], list(key[4]), key[5], {k: c.snapshot() for k, c in cal.items()}]
                for key, cal in self.calibrations.items()
            ],
        }

    def _restore_common(self, d: dict[str, Any]) -> None:
        if d.get("v") not in READABLE_VERSIONS:
            raise ValueError(f"unsupported feature snapshot version {d.get('v')!r}")
        self.frozen = bool(d["frozen"])
        self.profiled = bool(d["profiled"])
        self.ref_n, self.ref_missing, self.ref_absent, self.ref_type_errors = d["ref"]
        self.ref_rates = np.asarray(d["ref_rates"], dtype=float)
        self.ref_counts = _counts(d["ref_counts"])
        self.ring_size = int(d["ring_size"])
        self.counts = _matrix(d["counts"], np.int64)
        self.quality = _matrix(d["quality"], np.int64)
        self.type_errors = int(d["type_errors"])
        self.scores = dict(d["scores"])
        self.thresholds = dict(d["thresholds"])
        self.quality_ratios = dict(d["quality_ratios"])
        self.window_events, self.windows_closed, self.rolling_windows = d["windows"]
        self.drifting = bool(d["drifting"])
        wd = d["window_detectors"]
        self.window_detectors = (
            None if wd is None else WindowDetectors.from_snapshot(wd, self.cfg.window_detectors)
        )
        self.detectors_returned, self.windows_returned = (bool(x) for x in d["returned"])
        self.last_z = None if d["last_z"] is None else float(d["last_z"])
        self.calibrations = {
            (str(digest), int(n_ref), int(n_win), float(far), tuple(names), int(draws)): {
                k: Calibration.from_snapshot(c) for k, c in cal.items()
            }
            for digest, n_ref, n_win, far, names, draws, cal in d.get("calibrations", [])
        }


#: The Python types a numeric column holds when nothing is missing or mistyped (bool is not
#: among them: ``True`` sent for a number is a type error).
NUMBER_TYPES = frozenset({float, int})


def _numeric_column(
    column: Sequence[Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Floats with NaN where no usable number is; and boolean masks of the missing values
    (null, absent, NaN, inf), of the absent fields, and of wrongly typed values."""
    n = len(column)
    if isinstance(column, np.ndarray) or NUMBER_TYPES.issuperset(map(type, column)):
        # Only ints and floats (the usual case; the model converts such columns in one call):
        # no loop in Python.
        out = np.array(column, dtype=np.float64)
        missing = np.zeros(n, dtype=bool)
        absent = np.zeros(n, dtype=bool)
        bad = np.zeros(n, dtype=bool)
    else:
        out = np.full(n, np.nan)
        missing = np.zeros(n, dtype=bool)
        absent = np.zeros(n, dtype=bool)
        bad = np.zeros(n, dtype=bool)
        for i, v in enumerate(column):
            t = type(v)
            if t is float or t is int:
                out[i] = v
            elif v is None:
                missing[i] = True
            elif v is ABSENT:
                missing[i] = True
                absent[i] = True
            else:
                bad[i] = True
    # NaN or inf sent as numbers count as missing too.
    nonfinite = ~np.isfinite(out) & ~missing & ~bad
    if nonfinite.any():
        out[nonfinite] = np.nan
        missing |= nonfinite
    clip_magnitude(out)  # 1e308 is finite, its square is not (stats/bounds.py)
    return out, missing, absent, bad


_UNIFORM_STD = math.sqrt(1.0 / 12.0)


def pit_standardise(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Map values through the reference's empirical CDF (mid-rank, so ties are fair) and
    standardise: under no drift the result has mean ~0 and standard deviation ~1, whatever the
    feature's scale or tails, and it is bounded by about +/-1.73.

    This is what makes one detector configuration fit every feature: Page-Hinkley's threshold
    and ADWIN's bound are then in units of the reference's spread, and a heavy-tailed feature
    (a lognormal amount) cannot trip them with one outlier.

    Examples
    --------
    >>> import numpy as np
    >>> grid = np.quantile(np.arange(1000.0), np.linspace(0, 1, 101))
    >>> np.round(pit_standardise(np.array([-5.0, 499.5, 2000.0]), grid), 2)
    array([-1.73,  0.  ,  1.73])
    """
    n = len(grid)
    hi = np.searchsorted(grid, values, side="right")
    # The left rank differs only for a value equal to a grid point: search again just those.
    tied = (hi > 0) & (grid[np.maximum(hi - 1, 0)] == values)
    lo = hi.copy()
    if tied.any():
        lo[tied] = np.searchsorted(grid, values[tied], side="left")
    u = (lo + hi) / (2.0 * n)
    return (u - 0.5) / _UNIFORM_STD


class NumericFeature(FeatureMonitor):
    """A numeric feature: quantile bins from the reference, and ADWIN and Page-Hinkley on its
    values after the probability integral transform against the reference (see
    :func:`pit_standardise`), from the moment the reference is frozen.

    Examples
    --------
    >>> import numpy as np
    >>> from stream_monitor.config import DriftConfig
    >>> from stream_monitor.stats.windows import Closure
    >>> cfg = DriftConfig(thresholds={"mode": "fixed"}, window_detectors={"enabled": False})
    >>> f = NumericFeature("age", "data_drift", cfg)
    >>> rng = np.random.default_rng(0)
    >>> f.observe_reference(rng.normal(40, 10, 1000).tolist())
    >>> f.freeze(ring_size=1)
    >>> f.ingest(rng.normal(60, 10, 1000).tolist(), np.zeros(1000, dtype=np.int64))
    >>> obs = f.close(Closure(0, (0,), None, (0,), 0, 1000, 1000), "m", 1.0, None)
    >>> [(x.signal, x.breached) for x in obs][:1], round(f.scores["psi"], 1)
    ([('psi', True)], 3.5)
    """

    type_name = "numeric"

    def __init__(self, name: str, kind: AlertKind, cfg: DriftConfig) -> None:
        super().__init__(name, kind, cfg)
        self._ref_values = np.empty(cfg.reference.size)
        self._ref_len = 0
        self.edges: np.ndarray | None = None
        #: Reference quantiles for the probability integral transform fed to the detectors.
        self.pit_grid: np.ndarray | None = None
        self.ref_min: float | None = None
        self.ref_max: float | None = None
        self.sentinels = np.asarray(cfg.quality.sentinels, dtype=float)
        #: Per slot: sum of PIT mid-ranks and number of present values (window means).
        self.pit_sums: np.ndarray = np.zeros((0, 2), dtype=np.int64)
        #: Per slot: sum and number of the raw values (the ``mean`` signal, for rules on it).
        self.value_sums: np.ndarray = np.zeros((0, 2), dtype=float)
        #: Mean of the reference values: the baseline of the ``mean`` signal.
        self.ref_mean: float | None = None
        #: PIT values (in [0, 1], NaN when missing) of the last ingested segment, for
        #: multivariate checks.
        self.last_u: np.ndarray | None = None
        self.detectors: dict[str, ADWIN | PageHinkley] = {}
        self.debouncers: dict[str, Debouncer] = {}
        if cfg.detectors.enabled:
            self._new_detectors()
        #: Position (values seen) of each detector's last accepted firing.
        self.last_firing: dict[str, int] = {}
        self.detections: dict[str, int] = {k: 0 for k in self.detectors}
        self.raw_firings: dict[str, int] = {k: 0 for k in self.detectors}
        self.n_values = 0
        #: PIT scores of the last ingested chunk's present values, and their rows, waiting for
        #: :func:`run_detectors` (which feeds every feature of a model in one pass).
        self.pending_z: np.ndarray | None = None
        self._pending_rows: np.ndarray | None = None
        #: The fast and slow levels of the PIT scores (:data:`LEVEL_ALPHAS`), after the last
        #: value fed to the detectors; 0 is the reference's.
        self.levels = [0.0, 0.0]
        #: Values scored against a rolling reference (see :meth:`_score_rolling`).
        self.rolling_values = 0
        #: The Wasserstein points and scale of the current grid and edges (computed once).
        self._points_memo: (
            tuple[np.ndarray | None, np.ndarray | None, tuple[np.ndarray | None, float | None]]
            | None
        ) = None
        #: The search tables of the current grid and edges (computed once, see
        #: :meth:`search_tables`).
        self._search_memo: (
            tuple[np.ndarray | None, np.ndarray | None, _SearchTables | None] | None
        ) = None

    def _window_streams(self) -> list[str]:
        return ["statistic", "mean"]

    def _score_rolling(
        self, slots: np.ndarray, use: np.ndarray, bins: np.ndarray, z: np.ndarray
    ) -> None:
        """With a rolling reference, score each in-window value against the reference PSI
        uses for its pane: the window that ended :attr:`lag_panes` panes earlier, still held
        in the ring. ``z`` (the fixed reference's PIT scores) is overwritten in place where
        that window exists (none of its panes empty) and holds at least
        ``reference.min_events`` values, so the window ``mean`` stream follows it too; the
        per-value detectors then see only values with a pane (late values have no reference
        window).

        The score is the mid-distribution transform over the lagged window's bin counts,
        ``(below + own / 2) / n``, standardised like :func:`pit_standardise`: a value drawn
        from the lagged window's distribution scores 0 on average exactly, however few bins
        the window occupies. The lagged window is itself a sample: the mean score of ``m``
        values against ``n`` reference values varies as ``1/m + 1/n``, not ``1/m``, and
        every value of a window shares the reference's error. The scores are divided by
        :data:`ROLLING_SCALE` (``sqrt(2)``, for ``m`` about ``n``) so the detectors' bounds
        keep their false-alarm rate. A score depends only on the value's bin and on the
        counts of panes complete before the value's pane starts, so not on how the stream is
        cut into batches (for time windows: when the lag spans more than the allowed
        lateness).

        The per-value detectors and their levels restart at the first value scored so:
        what they saw before was measured against another reference.
        """
        if self.pit_grid is None:
            return
        pending = bool(self.detectors) and self.pending_z is not None
        rows = np.flatnonzero(use)
        fed = 0
        if len(rows):
            s_use = slots[rows]
            uniq = np.unique(s_use)  # usually one pane per chunk
            k = max(1, self.lag_panes // self.cfg.reference.lag_windows)
            lagged = (uniq[:, None] - self.lag_panes - np.arange(k)[None, :]) % self.ring_size
            ref = self.counts[lagged].sum(axis=1)  # (panes, bins)
            n = ref.sum(axis=1)
            twice_below = 2 * np.cumsum(ref, axis=1) - ref  # 2 * below + own
            at = np.searchsorted(uniq, s_use)
            # The lagged window exists (none of its panes is empty: a pane before the stream's
            # start is) and holds enough values, as for the window statistics.
            exists = (self.quality[lagged, EVENTS] > 0).all(axis=1)
            rolled = (exists & (n >= self.cfg.reference.min_events))[at]
            if rolled.any():
                u = twice_below[at[rolled], bins[rows[rolled]]] / (2.0 * n[at[rolled]])
                if self.rolling_values == 0 and pending:
                    # Feed the values before the first rolled one as they were, then restart.
                    fed = int(np.argmax(rolled))
                    self.pending_z, self._pending_rows = z[rows[:fed]], rows[:fed]
                    run_detectors([self])
                    self._restart_detectors()
                    # their verdict from here: nothing detected
                    self.detector_points.append((int(rows[fed]), 0.0, False, True, None))
                z[rows[rolled]] = (u - 0.5) / (_UNIFORM_STD * ROLLING_SCALE)
                self.rolling_values += len(u)
        if pending:
            self.pending_z, self._pending_rows = z[rows[fed:]], rows[fed:]

    def _new_detectors(self) -> None:
        """Fresh per-value detectors and their debouncers, as configured."""
        det = self.cfg.detectors
        self.detectors = {
            "adwin": ADWIN(delta=det.adwin_delta),
            "page_hinkley": PageHinkley(
                threshold=det.page_hinkley_threshold, delta=det.page_hinkley_delta
            ),
        }
        self.debouncers = {k: Debouncer(det.cooldown_events) for k in self.detectors}

    def _restart_detectors(self) -> None:
        """Fresh per-value detectors, debouncers and levels (their reference changed)."""
        self._new_detectors()
        self.last_firing = {}
        self.levels = [0.0, 0.0]
        self.detectors_returned = False

    def _feed(
        self, column: Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Parse a column; return the values, the missing, absent and wrongly-typed masks, and
        the PIT scores (NaN where no value). The present scores wait in :attr:`pending_z` for
        the per-value detectors (see :func:`run_detectors`)."""
        if self.pending_z is not None:  # the previous chunk's scores were not fed yet
            run_detectors([self])
        values, missing, absent, bad = _numeric_column(column)
        self.type_errors += int(np.count_nonzero(bad))
        present = ~(missing | bad)
        self.detector_points = []
        z = np.full(len(values), np.nan)
        if self.pit_grid is not None:
            z[present] = pit_standardise(values[present], self.pit_grid)
            if self.detectors:
                self.pending_z = z[present]
                self._pending_rows = np.flatnonzero(present)
        return values, missing, absent, bad, z

    def take_firings(self, fired: dict[str, list[int]], levels: list[np.ndarray]) -> None:
        """Judge where the detectors fired on :attr:`pending_z` (indices into it, per
        detector): add to :attr:`detector_points` the verdict at every value where it may
        change (see :meth:`detector_observations`). Judged per value, so the answer does not
        depend on how the stream was cut into batches. ``levels``: the fast and slow levels
        after each pending score (:func:`run_detectors` computes every feature's in one
        call)."""
        assert self.pending_z is not None and self._pending_rows is not None
        start = self.n_values
        if len(self.pending_z):
            self.levels = [float(y[-1]) for y in levels]
        horizon = self.cfg.detectors.agreement_events
        end = start + len(self.pending_z)
        if not any(fired.values()) and all(
            a + 1 < start and not start <= a + horizon < end for a in self.last_firing.values()
        ):
            # The usual chunk: nothing fired, and no earlier firing is where the verdict may
            # change (the value after it, or where it leaves the horizon), so no point.
            self.n_values = end
            self.pending_z = self._pending_rows = None
            return
        accepted: dict[str, list[int]] = {}
        for name in self.detectors:
            for pos in fired.get(name, ()):
                self.raw_firings[name] += 1
                if self.debouncers[name].offer(start + pos):
                    self.detections[name] += 1
                    accepted.setdefault(name, []).append(start + pos)
        self.n_values = end
        rows = self._pending_rows
        self.pending_z = self._pending_rows = None
        need = self.cfg.detectors.min_agreeing
        # Each detector's firings that matter here: its last one before, and this chunk's.
        firings = {
            name: [*([self.last_firing[name]] if name in self.last_firing else []), *ats]
            for name, ats in ((n, accepted.get(n, [])) for n in self.detectors)
        }

        def agreeing(g: int, after: int) -> int:
            """Detectors whose latest firing up to value ``g`` is at most ``horizon`` values
            before value ``g + after``."""
            n = 0
            for ats in firings.values():
                k = bisect.bisect_right(ats, g)
                n += bool(k) and g + after - ats[k - 1] <= horizon
            return n

        # Agreements: an accepted firing with ``need`` detectors having fired within the
        # horizon up to it; each judged for direction (a return to the reference is not drift).
        agreements: dict[int, bool] = {}
        for p in sorted({a for ats in accepted.values() for a in ats}):
            if agreeing(p, 0) >= need:
                fast, slow = levels[0][p - start], levels[1][p - start]
                agreements[p] = towards_reference(float(fast), float(slow))
        # The value before the chunk was an agreement if a detector's last firing is that
        # value and it had the others' agreement then (the direction it took is the state's).
        if start - 1 in self.last_firing.values() and agreeing(start - 1, 0) >= need:
            agreements[start - 1] = self.detectors_returned

        def verdict(g: int, returned: bool) -> tuple[float, bool, bool, Direction | None]:
            """The verdict after value ``g`` (as a chunk ending there would give it)."""
            agreed = g in agreements
            # after g, as agreeing_detectors() counts at the end of a chunk
            level = need if agreed else agreeing(g, 1)
            # while recent firings count, they say which way the change went
            direction: Direction | None = None
            if level:
                direction = "back" if returned else "away"
            if returned:  # the detectors agreed on a change back towards the reference
                agreed, level = False, 0
            return float(level), agreed, not agreed and level == 0, direction

        # The verdict changes only at a firing, the value after it and the value at which it
        # leaves the horizon: a point is each of those where it differs from the value
        # before's, so the points do not depend on where the chunks end.
        candidates = {a + d for ats in firings.values() for a in ats for d in (0, 1, horizon)}
        returned = self.detectors_returned  # as of the value before the next candidate
        for g in sorted(c for c in candidates if start <= c < end):
            before = verdict(g - 1, returned)
            returned = agreements.get(g, returned)
            now = verdict(g, returned)
            if now != before:
                self.detector_points.append((int(rows[g - start]), *now))
        self.detectors_returned = returned
        for name, ats in accepted.items():
            self.last_firing[name] = ats[-1]

    def observe_reference(self, column: Sequence[Any]) -> None:
        values, missing, absent, bad, _ = self._feed(column)
        self.ref_n += len(column)
        self.ref_missing += int(np.count_nonzero(missing))
        self.ref_absent += int(np.count_nonzero(absent))
        self.ref_type_errors += int(np.count_nonzero(bad))
        present = values[~(missing | bad)]
        room = len(self._ref_values) - self._ref_len
        take = present[:room]
        self._ref_values[self._ref_len : self._ref_len + len(take)] = take
        self._ref_len += len(take)

    def freeze(self, ring_size: int) -> None:
        ref = self._ref_values[: self._ref_len]
        self.edges = quantile_edges(ref, self.cfg.n_bins)
        self.ref_counts = bin_counts(ref, self.edges)
        if len(ref):
            self.pit_grid = np.quantile(ref, np.linspace(0.0, 1.0, PIT_POINTS))
            self.ref_min, self.ref_max = float(ref.min()), float(ref.max())
            self.ref_mean = float(ref.mean())
        sentinel_rates = [
            float(np.count_nonzero(ref == s)) / max(self.ref_n, 1) for s in self.sentinels
        ]
        self._set_rates(len(ref), sentinel_rates)
        self._ref_values = np.empty(0)  # the histogram is the reference from now on
        self._ref_len = 0
        self._alloc_numeric(ring_size)

    def _set_rates(self, n_present: int, sentinel_rates: list[float]) -> None:
        # A window value falls outside a sample's [min, max] with probability ~2/(n+1).
        oor = 2.0 / (n_present + 1) if n_present else 0.0
        self.ref_rates = np.array([*self._base_ref_rates(self.ref_n), oor, *sentinel_rates])

    def _alloc_numeric(self, ring_size: int) -> None:
        assert self.edges is not None
        self._alloc(ring_size, len(self.edges) + 1, SENTINEL0 + len(self.sentinels))
        self.pit_sums = np.zeros((ring_size, 2), dtype=np.int64)
        self.value_sums = np.zeros((ring_size, 2), dtype=float)

    @classmethod
    def from_profile(
        cls, name: str, kind: AlertKind, cfg: DriftConfig, prof: NumericProfile, ring_size: int
    ) -> NumericFeature:
        """A frozen monitor whose reference is a training-data profile."""
        f = cls(name, kind, cfg)
        f.profiled = True
        f.ref_n, f.ref_missing, f.ref_absent, f.ref_type_errors = (
            prof.n,
            prof.missing,
            0,
            (prof.type_errors),
        )
        f.edges = np.asarray(prof.edges, dtype=float)
        f.ref_counts = np.asarray(prof.counts, dtype=np.int64)
        f.pit_grid = np.asarray(prof.quantiles, dtype=float) if prof.quantiles else None
        f.ref_min, f.ref_max = prof.min, prof.max
        f.ref_mean = prof.mean
        frequent = {float(v): c for v, c in prof.frequent_values}
        n_present = max(prof.sample_size, 1)
        rates = [frequent.get(float(s), 0) / n_present for s in f.sentinels]
        f._ref_values = np.empty(0)
        f._set_rates(prof.sample_size, rates)
        f._alloc_numeric(ring_size)
        return f

    def stage(
        self, column: Sequence[Any], slots: np.ndarray, cuts: Sequence[int] | None = None
    ) -> Staged:
        """As :meth:`FeatureMonitor.stage`. With a rolling reference a value's score reads
        the ring as its segment finds it (see :meth:`_score_rolling`): stage one segment."""
        values, missing, absent, bad, z = self._feed(column)
        u = z * _UNIFORM_STD + 0.5
        ok = slots >= 0
        present = ~(missing | bad)
        use = present & ok
        assert self.edges is not None
        bins = np.full(len(values), -1, dtype=np.int64)
        bins[use] = np.searchsorted(self.edges, values[use], side="left")
        if self.lag_panes:
            assert cuts is None or len(cuts) <= 2, "a rolling reference stages one segment"
            self._score_rolling(slots, use, bins, z)
        oor = np.zeros(len(values), dtype=bool)
        if self.ref_min is not None and self.ref_max is not None:
            oor[present] = (values[present] < self.ref_min) | (values[present] > self.ref_max)
        flags = [ok, missing, absent, bad, oor]
        flags.extend(values == s for s in self.sentinels)
        # Mid-ranks are integers: (lo + hi) = 2 * len(grid) * u. Summing them keeps window
        # means exact, so they do not depend on how the stream was cut into batches.
        ranks = None
        if self.pit_grid is not None:
            ranks = np.zeros(len(values), dtype=np.int64)
            g2 = 2 * len(self.pit_grid)
            ranks[use] = np.rint((z[use] * _UNIFORM_STD + 0.5) * g2).astype(np.int64)
        return _NumericRows(
            self, _cuts(cuts, len(values)), slots, values, use, bins, u, ranks, flags
        )

    def _release(self, slot: int) -> None:
        self.pit_sums[slot] = 0
        self.value_sums[slot] = 0.0

    def close(
        self,
        closure: Closure,
        model_id: str,
        observed_at: float,
        model_version: str | None,
        statistics: Mapping[str, float] | None = None,
    ) -> list[Observation]:
        """As :meth:`FeatureMonitor.close`, plus the window's ``mean`` against the reference
        mean: judged by no monitor threshold, only by the rules that name it."""
        mean: float | None = None
        if closure.window_slots and self.ref_mean is not None:
            total, n = _window_sum(self.value_sums, closure.window_slots).tolist()
            if n > 0:
                # 12 significant digits: the sum's last bits depend on how batches were cut.
                mean = float(f"{total / n:.12g}")
        obs = super().close(closure, model_id, observed_at, model_version, statistics)
        if mean is not None:
            obs.append(
                Observation(
                    model_id=model_id,
                    kind=self.kind,
                    feature=self.name,
                    signal="mean",
                    value=mean,
                    threshold=math.nan,
                    breached=False,
                    cleared=True,
                    observed_at=observed_at,
                    window_events=self.window_events,
                    model_version=model_version,
                    baseline=self.ref_mean,
                )
            )
        return obs

    def _window_values(self, slots: Sequence[int]) -> dict[str, float]:
        total, n = _window_list(self.pit_sums, slots)  # int64: Python ints
        if n <= 0 or self.pit_grid is None:
            return {}
        mean_u = total / (2 * len(self.pit_grid) * n)
        # PIT scores have sd 1 under no drift, so sqrt(n) * mean is ~N(0, 1) when stable.
        return {"mean": (mean_u - 0.5) / _UNIFORM_STD * math.sqrt(n)}

    def _wasserstein_points(self) -> tuple[np.ndarray | None, float | None]:
        grid = self.pit_grid
        edges = self.edges
        # They depend only on the reference's grid and edges, fixed once frozen: computed
        # again only when those arrays are replaced (freeze, a profile, a restore).
        memo = self._points_memo
        if memo is not None and memo[0] is grid and memo[1] is edges:
            return memo[2]
        found = self._points_for(grid, edges)
        if found[0] is not None:
            found[0].setflags(write=False)  # shared by every window from now on
        self._points_memo = (grid, edges, found)
        return found

    def search_tables(self) -> _SearchTables | None:
        """The grid and the bin edges as :func:`stage_numeric` searches them (see
        :func:`_search_tables`), or None where they do not allow it. They depend only on the
        grid and edges, fixed once frozen: worked out again only when those arrays are
        replaced (freeze, a profile, a restore)."""
        grid, edges = self.pit_grid, self.edges
        memo = self._search_memo
        if memo is not None and memo[0] is grid and memo[1] is edges:
            return memo[2]
        found = _search_tables(grid, edges)
        self._search_memo = (grid, edges, found)
        return found

    @staticmethod
    def _points_for(
        grid: np.ndarray | None, edges: np.ndarray | None
    ) -> tuple[np.ndarray | None, float | None]:
        if grid is None or edges is None or not len(edges):
            return None, None
        # One point per bin: interior midpoints, the reference min and max for the open ends.
        inner = (edges[:-1] + edges[1:]) / 2 if len(edges) > 1 else np.empty(0)
        points = np.concatenate([[grid[0]], inner, [grid[-1]]])
        iqr = float(grid[75] - grid[25])
        spread = iqr if iqr > 0 else float(grid[-1] - grid[0])
        if spread > 0 and np.all(np.diff(points) >= 0):
            return points, spread
        return None, None

    def _extra_quality(
        self, q: list[int], r: list[float], n: float
    ) -> list[tuple[str, int, float]]:
        qc = self.cfg.quality
        out = [("out_of_range_ratio", OUT_OF_RANGE, qc.out_of_range_increase)]
        if len(self.sentinels):
            # The sentinel whose share rose most speaks for all of them.
            rise = [q[k] / n - r[k] for k in range(SENTINEL0, len(q))]
            j = SENTINEL0 + _argmax(rise)
            out.append(("sentinel_ratio", j, qc.sentinel_increase))
        return out

    def agreeing_detectors(self) -> int:
        """How many detectors fired within ``agreement_events`` values of the latest value."""
        horizon = self.cfg.detectors.agreement_events
        return sum(1 for at in self.last_firing.values() if self.n_values - at <= horizon)

    def snapshot(self) -> dict[str, Any]:
        d = super().snapshot()
        d.update(
            ref_values=self._ref_values[: self._ref_len].tolist(),
            edges=None if self.edges is None else self.edges.tolist(),
            pit_grid=None if self.pit_grid is None else self.pit_grid.tolist(),
            ref_range=[self.ref_min, self.ref_max],
            sentinels=self.sentinels.tolist(),
            pit_sums=self.pit_sums.tolist(),
            value_sums=self.value_sums.tolist(),
            ref_mean=self.ref_mean,
            detectors={k: v.snapshot() for k, v in self.detectors.items()},  # plain data
            debouncers={k: v.snapshot() for k, v in self.debouncers.items()},
            last_firing=dict(self.last_firing),
            detections=dict(self.detections),
            raw_firings=dict(self.raw_firings),
            n_values=self.n_values,
            levels=list(self.levels),
            rolling_values=self.rolling_values,
        )
        return d

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], cfg: DriftConfig) -> NumericFeature:
        f = cls(d["name"], d["kind"], cfg)
        f._restore_common(d)
        ref = np.asarray(d["ref_values"], dtype=float)
        if not f.frozen:
            f._ref_values[: len(ref)] = ref
            f._ref_len = len(ref)
        else:
            f._ref_values = np.empty(0)
        f.edges = None if d["edges"] is None else np.asarray(d["edges"], dtype=float)
        f.pit_grid = None if d["pit_grid"] is None else np.asarray(d["pit_grid"], dtype=float)
        f.ref_min, f.ref_max = d["ref_range"]
        f.sentinels = np.asarray(d["sentinels"], dtype=float)
        f.pit_sums = _matrix(d["pit_sums"], np.int64)
        f.value_sums = _matrix(d["value_sums"], float)
        f.ref_mean = d["ref_mean"]
        kinds: dict[str, type[ADWIN] | type[PageHinkley]] = {
            "adwin": ADWIN,
            "page_hinkley": PageHinkley,
        }
        f.detectors = {k: kinds[k].from_snapshot(v) for k, v in d["detectors"].items()}
        f.debouncers = {k: Debouncer.from_snapshot(v) for k, v in d["debouncers"].items()}
        f.last_firing = {k: int(v) for k, v in d["last_firing"].items()}
        f.detections = {k: int(v) for k, v in d["detections"].items()}
        f.raw_firings = {k: int(v) for k, v in d["raw_firings"].items()}
        f.n_values = int(d["n_values"])
        f.levels = [float(x) for x in d["levels"]]
        f.rolling_values = int(d.get("rolling_values", 0))  # version 3 had none
        return f


class Staged(Protocol):
    """A batch's values worked out once, added to the ring segment by segment (see
    :meth:`FeatureMonitor.stage`)."""

    def add(self, segment: int) -> None:
        """Add segment ``segment``'s rows to the ring slots they were given."""


def _cuts(cuts: Sequence[int] | None, n: int) -> Sequence[int]:
    """Segment bounds as row offsets, ``(0, n)`` (one segment) when None."""
    return (0, n) if cuts is None else cuts


class _NumericRows(NamedTuple):
    """A numeric feature's staged batch (see :meth:`NumericFeature.stage`): per row its
    value, whether it is counted (``use``), bin, PIT value, mid-rank and quality flags."""

    feature: NumericFeature
    cuts: Sequence[int]
    slots: np.ndarray
    values: np.ndarray
    use: np.ndarray
    bins: np.ndarray
    u: np.ndarray
    ranks: np.ndarray | None
    flags: list[np.ndarray]

    def add(self, segment: int) -> None:
        f = self.feature
        lo, hi = self.cuts[segment], self.cuts[segment + 1]
        slots, use, bins = self.slots[lo:hi], self.use[lo:hi], self.bins[lo:hi]
        f.last_u, f.last_bins = self.u[lo:hi], bins
        f._add_bins(slots[use], bins[use])
        f._add_quality(slots, [flag[lo:hi] for flag in self.flags])
        if not use.any():
            return
        r = f.ring_size
        s = slots[use]
        n_use = np.bincount(s, minlength=r)
        f.value_sums[:, 0] += np.bincount(s, weights=self.values[lo:hi][use], minlength=r)
        f.value_sums[:, 1] += n_use
        if self.ranks is not None:
            ranks = self.ranks[lo:hi][use]
            f.pit_sums[:, 0] += np.bincount(s, weights=ranks, minlength=r).astype(np.int64)
            f.pit_sums[:, 1] += n_use


class _CategoricalRows(NamedTuple):
    """A categorical feature's staged batch (see :meth:`CategoricalFeature.stage`): per row
    its bin (-1: not counted) and quality flags."""

    feature: CategoricalFeature
    cuts: Sequence[int]
    slots: np.ndarray
    bins: np.ndarray
    flags: list[np.ndarray]

    def add(self, segment: int) -> None:
        f = self.feature
        lo, hi = self.cuts[segment], self.cuts[segment + 1]
        slots, bins = self.slots[lo:hi], self.bins[lo:hi]
        f.last_bins = bins
        counted = bins >= 0
        f._add_bins(slots[counted], bins[counted])
        f._add_quality(slots, [flag[lo:hi] for flag in self.flags])


class WindowInputs(NamedTuple):
    """A window's counts and what its statistics need besides them."""

    reference: np.ndarray
    window: np.ndarray
    names: tuple[str, ...]
    points: np.ndarray | None
    scale: float | None


#: What :meth:`FeatureMonitor.window_inputs` leaves for ``close()``: the closure, the window
#: counts, their total and the reference (:meth:`FeatureMonitor._reference_for`).
_WindowSeen = tuple[Closure, np.ndarray, int, tuple[np.ndarray, int, bool]]


class _ClosePlan(NamedTuple):
    """What every window close of a feature reads of its configuration and reference (see
    :meth:`FeatureMonitor._close_plan`)."""

    #: The arrays it was worked out from: a plan holds while they are the feature's.
    ref_counts: np.ndarray | None
    ref_rates: np.ndarray
    #: The Wasserstein points and scale (see ``NumericFeature._wasserstein_points``).
    points: np.ndarray | None
    scale: float | None
    #: The configured statistics that apply to the feature, and the alerting ones.
    statistics: tuple[str, ...]
    alerting: tuple[str, ...]
    #: ``ref_counts.sum()`` (0 without a reference).
    ref_total: int
    #: Simulations per calibration (``thresholds.draws()``).
    draws: int
    #: What else a calibration of the fixed reference depends on (see
    #: :func:`_reference_digest`): part of the key of the feature's kept calibrations.
    digest: str
    #: ``ref_rates`` as Python floats.
    rates: list[float]
    #: The quality signals every feature judges: ``(signal, column, margin, alert kind)``.
    quality: tuple[tuple[str, int, float, AlertKind], ...]


def _reference_digest(
    ref_counts: np.ndarray | None, points: np.ndarray | None, scale: float | None
) -> str:
    """A short digest of what a calibration of the fixed reference depends on besides its
    sizes, rate, statistics and draws: the reference counts, the Wasserstein points and
    scale, and :data:`CALIBRATION_METHOD`. Plain data, so kept calibrations can be keyed by
    it in a snapshot and found again after a restore (the same arrays give the same digest).
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{CALIBRATION_METHOD}:{scale!r}:".encode())
    for a, dtype in ((ref_counts, np.int64), (points, np.float64)):
        h.update(b"-" if a is None else np.ascontiguousarray(a, dtype=dtype).tobytes())
    return h.hexdigest()


def _argmax(values: Sequence[float]) -> int:
    """``np.argmax`` of a few Python floats without making them an array: the first largest,
    or the first NaN.

    >>> _argmax([0.5, 2.0, 2.0, -1.0]), _argmax([0.1, float("nan"), 3.0])
    (1, 1)
    """
    best = 0
    for i, v in enumerate(values):
        if v != v:  # NaN is not equal to itself
            return i
        if v > values[best]:
            best = i
    return best


def _window_list(a: np.ndarray, slots: Sequence[int]) -> list[Any]:
    """The window's total of a per-slot *integer* array as Python ints, as
    ``_window_sum(a, slots).tolist()`` gives it; a tumbling window's row as it is."""
    row = a[slots[0]] if len(slots) == 1 else a[list(slots)].sum(axis=0)
    out: list[Any] = row.tolist()
    return out


def _window_sum(a: np.ndarray, slots: Sequence[int]) -> np.ndarray:
    """``a[slots].sum(axis=0)``, the window's total of a per-slot array. A tumbling window
    has one slot: its row plus 0, as the sum gives it (a float row's -0.0 sums to 0.0),
    without the fancy indexing."""
    if len(slots) == 1:
        return a[slots[0]] + 0
    return a[list(slots)].sum(axis=0)


def window_statistics(
    features: Sequence[FeatureMonitor], closure: Closure
) -> list[dict[str, float] | None]:
    """The statistics of the window ``closure`` describes for every feature (None where it
    has none), computed with one :func:`batch_statistics` call per group of features with the
    same number of bins and statistics, instead of one per feature."""
    inputs = [f.window_inputs(closure) for f in features]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, w in enumerate(inputs):
        if w is not None:
            groups.setdefault((len(w.window), w.names, w.points is None), []).append(i)
    out: list[dict[str, float] | None] = [None] * len(features)
    for (_, names, no_points), members in groups.items():
        rows = [w for w in (inputs[i] for i in members) if w is not None]
        values = batch_statistics(
            np.stack([w.reference for w in rows]),
            np.stack([w.window for w in rows]),
            names,
            points=None if no_points else np.stack([w.points for w in rows]),  # type: ignore[misc]
            scale=None if no_points else np.array([w.scale for w in rows]),
        )
        table = {k: v.tolist() for k, v in values.items()}
        for r, i in enumerate(members):
            out[i] = {k: v[r] for k, v in table.items()}
    return out


def run_detectors(features: Sequence[FeatureMonitor], cuts: Sequence[int] | None = None) -> None:
    """Feed the pending PIT scores of every numeric feature to its per-value detectors, one
    array pass per detector kind for all of them, and let each judge its firings.

    ``cuts``: when the pending scores are a batch staged in segments (row offsets, see
    :meth:`FeatureMonitor.stage`), the detectors see them segment by segment, as they would
    were the segments staged one at a time: their array passes add values up in an order
    that depends on where a batch ends (their state would differ in the last bits), and
    which detector fired first in a segment orders ``last_firing`` (and the snapshot). The
    levels are filtered once for the batch: exact recurrences, carried across segments."""
    waiting = [f for f in features if isinstance(f, NumericFeature) and f.pending_z is not None]
    if not waiting:
        return
    batches = [f.pending_z for f in waiting if f.pending_z is not None]
    rows = [f._pending_rows for f in waiting if f._pending_rows is not None]
    # The fast and slow levels after each pending score: one compiled call for all features.
    levels = ewma_paths(batches, LEVEL_ALPHAS, [f.levels for f in waiting])
    # Each feature's scores of each segment: its pending rows between the cuts.
    ends = [[0, len(b)] for b in batches]
    if cuts is not None:
        ends = [np.searchsorted(r, cuts).tolist() for r in rows]
    for i in range(len(ends[0]) - 1):
        parts = [b[e[i] : e[i + 1]] for b, e in zip(batches, ends, strict=True)]
        fired: list[dict[str, list[int]]] = [{} for _ in waiting]
        for kind in waiting[0].detectors:
            dets = [f.detectors[kind] for f in waiting]
            for out, at in zip(fired, update_all(dets, parts), strict=True):
                out[kind] = at
        for f, part, r, e, firings, lv in zip(
            waiting, parts, rows, ends, fired, levels, strict=True
        ):
            f.pending_z, f._pending_rows = part, r[e[i] : e[i + 1]]
            f.take_firings(firings, [y[e[i] : e[i + 1]] for y in lv])


def ingest_numeric(
    features: Sequence[NumericFeature], matrix: np.ndarray, slots: np.ndarray
) -> list[int]:
    """Ingest one chunk's numeric columns for many features at once, leaving each feature as
    :meth:`NumericFeature.ingest` of its column would (see :func:`stage_numeric`); return the
    indices of the features taken."""
    taken, staged = stage_numeric(features, matrix, slots)
    staged.add(0)
    return taken


def stage_numeric(
    features: Sequence[NumericFeature],
    matrix: np.ndarray,
    slots: np.ndarray,
    cuts: Sequence[int] | None = None,
) -> tuple[list[int], Staged]:
    """Stage a batch's numeric columns for many features at once (as each feature's
    :meth:`NumericFeature.stage` of its column would), with a few array operations over the
    whole matrix instead of some thirty per feature. ``matrix[j]`` is ``features[j]``'s
    column: finite floats, NaN or inf (a batch whose numeric fields are all numbers, as
    :meth:`~stream_monitor.monitor.model.ModelMonitor._columns` converts it in one call).

    Takes the features that fit (frozen on a reference with values, a PIT grid and bin edges
    with search tables (see :meth:`NumericFeature.search_tables`), no rolling reference, the
    sentinels of the first) and returns their indices (the caller stages the others one by
    one), and what adds each segment to their rings. The batch's sums are taken per cell, a
    segment's ring slot: float sums per cell come from one ``bincount`` over the matrix in
    row-major order, which adds each feature's values in row order as the per-feature
    ``bincount`` of the segment does, so the sums are equal to the last bit
    (tests/unit/test_numeric_block.py).
    """
    taken = [
        j
        for j, f in enumerate(features)
        if f.frozen
        and not f.lag_panes
        and f.search_tables() is not None
        and f.ref_min is not None
        and f.ref_max is not None
        and f.cfg.quality.sentinels == features[0].cfg.quality.sentinels
    ]
    if not taken:
        return taken, _NothingStaged()
    feats = [features[j] for j in taken]
    waiting = [f for f in feats if f.pending_z is not None]
    if waiting:  # the previous chunk's scores were not fed yet
        run_detectors(waiting)
    k, n = len(feats), matrix.shape[1]
    cuts = _cuts(cuts, n)
    x = matrix[taken]  # a copy: NaN and clipping below stay here
    # A float column's only missing values are NaN and inf sent as numbers.
    missing = ~np.isfinite(x)
    if missing.any():
        x[missing] = np.nan
    clip_magnitude(x)
    present = ~missing
    ok = slots >= 0
    use = present & ok
    # PIT ranks and bins of every feature's values in one pass (NaN's are masked after).
    tables = [t for f in feats if (t := f.search_tables()) is not None]
    lo, hi, bins = _ranks_and_bins(tables, x)
    ranks = lo + hi  # mid-ranks times two: 2 * len(grid) * u, an integer
    z = (ranks / (2.0 * PIT_POINTS) - 0.5) / _UNIFORM_STD
    z[missing] = np.nan
    u = z * _UNIFORM_STD + 0.5
    bins[~use] = -1
    # Comparisons with NaN are false: a missing value is neither out of range nor a sentinel.
    lows = np.array([f.ref_min for f in feats], dtype=float)[:, None]
    highs = np.array([f.ref_max for f in feats], dtype=float)[:, None]
    oor = (x < lows) | (x > highs)
    sentinels = feats[0].sentinels
    # The cells of the batch, (segment, ring slot) pairs as segment * ring + slot (usually
    # one per segment), sorted, so each segment's are a run; and each value's
    # (feature, cell). Late rows (slot -1) are masked out below.
    ring = feats[0].ring_size
    key = np.repeat(np.arange(len(cuts) - 1) * ring, np.diff(cuts)) + slots
    one = ok.all() and (key == key[0]).all()
    cells = key[:1] if one else np.unique(key[ok])
    m = len(cells)
    at = np.searchsorted(cells, key)
    cell = (np.arange(k)[:, None] * m + at[None, :])[use]
    value_sum = np.bincount(cell, weights=x[use], minlength=k * m).reshape(k, m)
    n_use = np.bincount(cell, minlength=k * m).reshape(k, m)
    nb = max(f.counts.shape[1] for f in feats)
    counts = np.bincount(cell * nb + bins[use], minlength=k * m * nb).reshape(k, m, nb)
    # Integer sums per (feature, cell) as products with each row's cell (late rows: none):
    # exact in floats, whatever the order of the additions (integers far below 2**53).
    rows = np.flatnonzero(ok)
    onehot = np.zeros((n, m))
    onehot[rows, at[rows]] = 1.0
    rank_sum = (np.where(present, ranks, 0).astype(float) @ onehot).astype(np.int64)
    # Quality columns per (feature, cell) as _add_quality counts them (late rows excluded):
    # events, missing, absent (none), type errors (none), out of range, each sentinel.
    n_flags = 2 + len(sentinels)
    flags = np.stack([missing, oor, *(x == s for s in sentinels)], axis=1)
    flags = flags.reshape(k * n_flags, n)
    # Most (feature, flag) rows have no True (missing, out-of-range and sentinel values are
    # rare): those count 0 without a product.
    some = np.flatnonzero(flags.any(axis=1))
    flat = np.zeros((k * n_flags, m), dtype=np.int64)
    flat[some] = (flags[some].astype(float) @ onehot).round().astype(np.int64)
    tallies = flat.reshape(k, n_flags, m)
    quality = np.zeros((k, m, SENTINEL0 + len(sentinels)), dtype=np.int64)
    quality[:, :, EVENTS] = onehot.sum(axis=0).astype(np.int64)
    quality[:, :, MISSING] = tallies[:, 0]
    quality[:, :, OUT_OF_RANGE] = tallies[:, 1]
    quality[:, :, SENTINEL0:] = tallies[:, 2:].transpose(0, 2, 1)
    sums = np.stack([value_sum, n_use], axis=2)  # (feature, cell, 2), as value_sums
    rank_sums = np.stack([rank_sum, n_use], axis=2)  # as pit_sums
    every_row = np.arange(n)
    complete = present.all(axis=1)
    for j, f in enumerate(feats):
        f.detector_points = []
        if f.detectors:
            if complete[j]:
                f.pending_z, f._pending_rows = z[j], every_row
            else:
                p = present[j]
                f.pending_z, f._pending_rows = z[j, p], np.flatnonzero(p)
    bounds = np.searchsorted(cells, np.arange(len(cuts)) * ring).tolist()
    cell_slots = (cells % ring).tolist()
    return taken, _NumericBlock(
        feats, cuts, bounds, cell_slots, u, bins, counts, quality, sums, rank_sums
    )


#: Length of a feature's rows in its search tables: the first power of two above the PIT
#: grid's cells (one more than its points), the widest a search in halving steps spans.
_SEARCH_ROW = 1 << PIT_POINTS.bit_length()


class _SearchTables(NamedTuple):
    """A feature's PIT grid and bin edges as :func:`_ranks_and_bins` reads them, each a row of
    :data:`_SEARCH_ROW`. Cell ``c`` of the grid holds the values with ``c`` grid points below
    them: ``grid[c - 1] < x <= grid[c]`` (no bound past either end)."""

    #: The grid, padded with +inf.
    grid: np.ndarray
    #: Per grid point, how many points are below it: the left rank of a value equal to it.
    first: np.ndarray
    #: Per cell, how many edges are below every value of the cell (at most ``grid[c - 1]``).
    below: np.ndarray
    #: Per cell, the edge strictly inside it, +inf when none (a value's bin is ``below``
    #: plus whether the value is above it).
    inside: np.ndarray


def _search_tables(grid: np.ndarray | None, edges: np.ndarray | None) -> _SearchTables | None:
    """The search tables of a PIT grid of :data:`~stream_monitor.stats.pit.PIT_POINTS` points
    and bin edges, or None when they do not describe every search: either is not finite or
    not sorted, or a cell of the grid has more than one edge inside it. Quantile edges are
    usually grid points or a rounding away from one (``quantile_edges``' probabilities are
    the grid's, some a last bit apart)."""
    if grid is None or edges is None or len(grid) != PIT_POINTS:
        return None
    if not (np.isfinite(grid).all() and np.isfinite(edges).all()):
        return None
    if (np.diff(grid) < 0).any() or (np.diff(edges) < 0).any():
        return None
    # Cell c: bounds[c] < x <= bounds[c + 1].
    bounds = np.concatenate([[-np.inf], grid, [np.inf]])
    below = np.searchsorted(edges, bounds[:-1], side="right")
    within = np.searchsorted(edges, bounds[1:], side="left") - below
    if (within > 1).any():
        return None
    one = within == 1
    inside = np.full(_SEARCH_ROW, np.inf)
    inside[: len(one)][one] = edges[below[one]]
    padded = np.full(_SEARCH_ROW, np.inf)
    padded[:PIT_POINTS] = grid
    first = np.zeros(_SEARCH_ROW, dtype=np.int64)
    first[:PIT_POINTS] = np.searchsorted(grid, grid, side="left")
    counted = np.zeros(_SEARCH_ROW, dtype=np.int64)
    counted[: len(below)] = below
    return _SearchTables(padded, first, counted, inside)


def _ranks_and_bins(
    tables: Sequence[_SearchTables], x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each feature's row of ``x`` (finite values or NaN), as its grid and edges give
    them: the left and right ranks ``searchsorted(grid, x, side="left")`` and ``"right"``,
    and the bins ``searchsorted(edges, x, side="left")``. Not the same at NaN (0 each): the
    caller masks those. A binary search in halving steps, all features in step, costs a
    third of one ``searchsorted`` per feature (the searches of values in no order spend
    their time on mispredicted branches); a value's bin then follows from its cell."""
    k, n = x.shape
    grid = np.concatenate([t.grid for t in tables])
    start = (np.arange(k) * _SEARCH_ROW)[:, None]
    at = np.repeat(start, n, axis=1)  # after the search: start + grid points <= x
    step = _SEARCH_ROW // 2
    while step:
        at += (grid.take(at + (step - 1)) <= x) * step
        step //= 2
    hi = at - start
    # The left rank differs only for a value equal to a grid point (see pit_standardise).
    # Where hi is 0, at - 1 is the row before's padding (or the last): masked.
    tied = (grid.take(at - 1) == x) & (hi > 0)
    lo = hi.copy()
    lo[tied] = np.concatenate([t.first for t in tables]).take(at[tied] - 1)
    cell = start + lo
    below = np.concatenate([t.below for t in tables]).take(cell)
    bins = below + (np.concatenate([t.inside for t in tables]).take(cell) < x)
    return lo, hi, bins


class _NothingStaged:
    """What :func:`stage_numeric` stages when it takes no feature."""

    def add(self, segment: int) -> None:
        pass


class _NumericBlock(NamedTuple):
    """Numeric features staged together (see :func:`stage_numeric`): per feature and row its
    PIT value and bin; per feature and cell its counts, quality counts, value sums and
    mid-rank sums; segment ``i``'s cells are ``bounds[i]:bounds[i + 1]``, whose ring slots
    are ``slots``."""

    features: list[NumericFeature]
    cuts: Sequence[int]
    bounds: list[int]
    slots: list[int]
    u: np.ndarray
    bins: np.ndarray
    counts: np.ndarray
    quality: np.ndarray
    sums: np.ndarray
    rank_sums: np.ndarray

    def add(self, segment: int) -> None:
        counts, quality, sums, rank_sums = self.counts, self.quality, self.sums, self.rank_sums
        lo, hi = self.cuts[segment], self.cuts[segment + 1]
        a, b = self.bounds[segment], self.bounds[segment + 1]
        # One cell (the usual case): plain indexing, a view per feature, is cheaper than fancy.
        slots: Any = self.slots[a] if b - a == 1 else self.slots[a:b]
        cell: Any = a if b - a == 1 else slice(a, b)
        for j, f in enumerate(self.features):
            f.last_u = self.u[j, lo:hi]
            f.last_bins = self.bins[j, lo:hi]
            f.counts[slots] += counts[j, cell, : f.counts.shape[1]]
            f.quality[slots] += quality[j, cell]
            f.value_sums[slots] += sums[j, cell]
            f.pit_sums[slots] += rank_sums[j, cell]


def bounded_category(value: str) -> str:
    """A category as counted and reported: itself when at most ``MAX_NAME_LENGTH`` characters,
    else its start and a hash of all of it (distinct values stay distinct; the state, the
    snapshot and /metrics stay bounded whatever the input).

    >>> bounded_category("fr")
    'fr'
    >>> long = bounded_category("x" * 10_000)
    >>> len(long), long[:4], long == bounded_category("x" * 9_999)
    (128, 'xxxx', False)
    """
    if len(value) <= MAX_NAME_LENGTH:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{value[: MAX_NAME_LENGTH - len(digest) - 2]}…#{digest}"


def _bounded(values: list[str]) -> list[str]:
    if values and max(map(len, values)) > MAX_NAME_LENGTH:  # rare: one C loop to find out
        return [bounded_category(v) for v in values]
    return values


_STR = frozenset({str})


def _categorical_column(
    column: Sequence[Any],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The string values (long ones bounded by :func:`bounded_category`); their row positions;
    and boolean masks (over all rows) of missing, absent and wrongly typed values."""
    n = len(column)
    missing = np.zeros(n, dtype=bool)
    absent = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    if _STR.issuperset(map(type, column)):  # the usual case: no loop over flags
        return _bounded(list(column)), np.arange(n, dtype=np.int64), missing, absent, bad
    out: list[str] = []
    rows: list[int] = []
    for i, v in enumerate(column):
        t = type(v)
        if t is str:
            out.append(v)
            rows.append(i)
        elif t is bool:
            out.append("true" if v else "false")
            rows.append(i)
        elif v is None:
            missing[i] = True
        elif v is ABSENT:
            missing[i] = True
            absent[i] = True
        else:
            bad[i] = True
    return _bounded(out), np.asarray(rows, dtype=np.int64), missing, absent, bad


class CategoricalFeature(FeatureMonitor):
    """A categorical feature: top-K reference categories plus an "other" bucket, and the set of
    every category the reference saw (bounded) for new-category checks."""

    type_name = "categorical"
    ordered = False

    def __init__(self, name: str, kind: AlertKind, cfg: DriftConfig) -> None:
        super().__init__(name, kind, cfg)
        self._ref_counter = BoundedCounter(capacity=max(4 * cfg.top_k_categories, 64))
        self.categories: list[str] | None = None
        self._index: dict[str, int] = {}
        #: Every category the reference saw, if it saw few enough to remember them all.
        self.known: frozenset[str] | None = None
        #: Values outside the reference categories, over all windows.
        self.unseen_total = 0

    def observe_reference(self, column: Sequence[Any]) -> None:
        values, _, missing, absent, bad = _categorical_column(column)
        self.type_errors += int(np.count_nonzero(bad))
        self.ref_n += len(column)
        self.ref_missing += int(np.count_nonzero(missing))
        self.ref_absent += int(np.count_nonzero(absent))
        self.ref_type_errors += int(np.count_nonzero(bad))
        self._ref_counter.update(values)

    def freeze(self, ring_size: int) -> None:
        counts = self._ref_counter.counts
        categories = top_categories(counts, self.cfg.top_k_categories)
        kept = set(categories)
        ref_counts = [counts[c] for c in categories]
        other = sum(n for c, n in counts.items() if c not in kept) + self._ref_counter.overflow
        complete = self._ref_counter.overflow == 0
        singletons = sum(1 for n in counts.values() if n == 1)
        self._set_reference(
            categories, [*ref_counts, other], set(counts) if complete else None, singletons
        )
        self._ref_counter = BoundedCounter(capacity=1)
        self._alloc(ring_size, len(categories) + 1, NEW_CATEGORY + 1)

    def _set_reference(
        self,
        categories: list[str],
        counts: list[int],
        known: set[str] | None,
        singletons: int,
    ) -> None:
        self.categories = list(categories)
        self._index = {c: i for i, c in enumerate(self.categories)}
        self.ref_counts = np.asarray(counts, dtype=np.int64)
        self.known = None if known is None else frozenset(known)
        n_present = int(self.ref_counts.sum())
        # Good-Turing: the share of a stable stream made of values the sample never saw is
        # about (values seen once) / (sample size).
        unseen = singletons / n_present if n_present else 0.0
        self.ref_rates = np.array([*self._base_ref_rates(self.ref_n), unseen])

    @classmethod
    def from_profile(
        cls,
        name: str,
        kind: AlertKind,
        cfg: DriftConfig,
        prof: CategoricalProfile,
        ring_size: int,
    ) -> CategoricalFeature:
        """A frozen monitor whose reference is a training-data profile."""
        f = cls(name, kind, cfg)
        f.profiled = True
        f.ref_n, f.ref_missing, f.ref_type_errors = prof.n, prof.missing, prof.type_errors
        f._set_reference(
            [bounded_category(c) for c in prof.categories],  # as live values are counted
            prof.counts,
            {bounded_category(c) for c in prof.known} if prof.known_complete else None,
            prof.singletons,
        )
        f._ref_counter = BoundedCounter(capacity=1)
        f._alloc(ring_size, len(prof.categories) + 1, NEW_CATEGORY + 1)
        return f

    def stage(
        self, column: Sequence[Any], slots: np.ndarray, cuts: Sequence[int] | None = None
    ) -> Staged:
        values, rows, missing, absent, bad = _categorical_column(column)
        self.type_errors += int(np.count_nonzero(bad))
        other = len(self._index)
        # each value's bin, ``other`` for one not in the index, looked up in C
        n = len(values)
        idx = np.fromiter(map(self._index.get, values, repeat(other, n)), np.int64, count=n)
        ok = slots >= 0
        ok_rows = ok[rows] if len(rows) else np.zeros(0, dtype=bool)
        bins = np.full(len(column), -1, dtype=np.int64)
        bins[rows[ok_rows]] = idx[ok_rows]
        self.unseen_total += int(np.count_nonzero(idx[ok_rows] == other))
        new = np.zeros(len(column), dtype=bool)
        if self.known is not None and len(values):
            # A reference category is known: only the values counted as "other" are looked up.
            others = np.flatnonzero(idx == other)
            if len(others):
                known = self.known
                new[rows[others]] = [values[i] not in known for i in others.tolist()]
        flags = [ok, missing, absent, bad, new]
        return _CategoricalRows(self, _cuts(cuts, len(column)), slots, bins, flags)

    def _extra_quality(
        self, q: list[int], r: list[float], n: float
    ) -> list[tuple[str, int, float]]:
        if self.known is None:
            return []  # the reference saw too many categories to tell a new one
        return [("new_category_ratio", NEW_CATEGORY, self.cfg.quality.new_category_increase)]

    def snapshot(self) -> dict[str, Any]:
        d = super().snapshot()
        d.update(
            ref_counter=self._ref_counter.snapshot(),
            categories=self.categories,
            known=None if self.known is None else sorted(self.known),
            unseen_total=self.unseen_total,
        )
        return d

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], cfg: DriftConfig) -> CategoricalFeature:
        f = cls(d["name"], d["kind"], cfg)
        f._restore_common(d)
        f._ref_counter = BoundedCounter.from_snapshot(d["ref_counter"])
        f.categories = d["categories"]
        f._index = {c: i for i, c in enumerate(f.categories or [])}
        f.known = None if d["known"] is None else frozenset(d["known"])
        f.unseen_total = int(d["unseen_total"])
        return f


def _matrix(rows: list[list[Any]], dtype: type) -> np.ndarray:
    return np.asarray(rows, dtype=dtype) if rows else np.zeros((0, 0), dtype=dtype)


def _counts(v: list[int] | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=np.int64)


def feature_from_snapshot(d: dict[str, Any], cfg: DriftConfig) -> FeatureMonitor:
    if d.get("type") == "numeric":
        return NumericFeature.from_snapshot(d, cfg)
    if d.get("type") == "categorical":
        return CategoricalFeature.from_snapshot(d, cfg)
    raise ValueError(f"unknown feature type in snapshot: {d.get('type')!r}")


def is_numeric_value(v: Any) -> bool | None:
    """True for a number, False for a string or bool, None for missing (type unknown yet)."""
    t = type(v)
    if t is float:
        return not math.isnan(v) or None
    if t is int:
        return True
    if t is str or t is bool:
        return False
    return None
