"""Concept drift from the error stream: a choice of river detectors, their firings merged.

Once labels arrive, each prediction has an error: 0/1 for classifiers (``"error_rate"``), the
absolute error for regressors (``"absolute_error"``). :class:`ConceptDriftMonitor` feeds that
stream to one or more drift detectors, merges their firings into detections of *one* upward
change each, and judges the current error level against a baseline.

What each detector gets:

============  ======================  ==========================================================
kind          ``"error_rate"``        ``"absolute_error"``
============  ======================  ==========================================================
adwin         the 0/1 errors          the losses as they are (ADWIN's bound adapts to the scale)
page_hinkley  the 0/1 errors          ``min(loss / loss_scale, 1)``, once ``loss_scale`` is known
ddm, eddm     the 0/1 errors          nothing: they model 0/1 errors only, so they are skipped
hddm_a/_w     the 0/1 errors          ``min(loss / loss_scale, 1)``, once ``loss_scale`` is known
============  ======================  ==========================================================

HDDM_A and HDDM_W need values in [0, 1] (their Hoeffding / McDiarmid bounds assume that range)
and Page-Hinkley's ``delta`` and ``threshold`` are in the units of its input, so losses are
divided by ``loss_scale`` and clipped at 1. ``loss_scale`` defaults to the 99th percentile of
the baseline errors, computed when the baseline completes; until then those detectors are not
fed. Page-Hinkley watches increases only (``mode="up"``); ADWIN is two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.stats.detectors import BINARY_KINDS, UNIT_INTERVAL_KINDS, StreamDetector

__all__ = ["CONCEPT_KINDS", "JUDGE_EVERY", "ConceptDriftMonitor", "Judgement", "Metric"]

SNAPSHOT_VERSION = 1
#: Errors needed after a firing before its direction is judged and the new level trusted.
MIN_SEGMENT = 30
#: Size of the ring of recent errors whose mean is the level before any change.
RECENT_WINDOW = 500
#: A firing becomes a change as soon as the mean of the errors since it differs from the mean of
#: the segment before it by this many standard errors (up: a detection; down: a level reset).
CONFIRM_Z = 4.0
#: Errors after a firing at which it is judged for the last time, with :data:`FINAL_Z`, and
#: dismissed as noise if still unclear.
CONFIRM_WINDOW = 1000
#: The (lower) bar at the last look, so that small changes the detectors see are not lost.
FINAL_Z = 3.0
#: The level is judged after every error whose global index ``g`` has ``(g + 1) % JUDGE_EVERY
#: == 0``, and at every error that confirms a change (up or down): points that depend on the
#: error stream only, never on how it was cut into batches.
JUDGE_EVERY = 100
#: Detector kinds the monitor accepts. KSWIN is left out: it is randomised and tests the whole
#: distribution, which for 0/1 errors is the level anyway.
CONCEPT_KINDS: tuple[str, ...] = ("adwin", "page_hinkley", "ddm", "eddm", "hddm_a", "hddm_w")
#: Kinds that get ``min(loss / loss_scale, 1)`` rather than raw absolute errors.
_SCALED_KINDS = UNIT_INTERVAL_KINDS | {"page_hinkley"}

Metric = Literal["error_rate", "absolute_error"]


class Judgement(NamedTuple):
    """The verdict on the error level after one error (see :meth:`ConceptDriftMonitor.judge`)."""

    #: Index of the error (into the batch given to :meth:`ConceptDriftMonitor.judge`).
    position: int
    value: float
    threshold: float
    breached: bool
    cleared: bool


@dataclass(slots=True)
class _Moments:
    """Running count, mean and sum of squared deviations (Welford), one value at a time."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.add_many((x,))

    def add_many(self, xs: Iterable[float]) -> None:
        """Add each value in turn (one Welford step each, without a call per value)."""
        n, mean, m2 = self.n, self.mean, self.m2
        for x in xs:
            n += 1
            d = x - mean
            mean += d / n
            m2 += d * (x - mean)
        self.n, self.mean, self.m2 = n, mean, m2

    @property
    def var(self) -> float:
        return self.m2 / self.n if self.n else 0.0

    def copy(self) -> _Moments:
        return _Moments(self.n, self.mean, self.m2)

    def to_list(self) -> list[float]:
        return [self.n, self.mean, self.m2]

    @classmethod
    def from_list(cls, v: Sequence[float]) -> _Moments:
        return cls(int(v[0]), float(v[1]), float(v[2]))


@dataclass(slots=True)
class _Candidate:
    """A firing waiting for enough errors after it to tell which way the level moved."""

    position: int  # global index of the firing error
    before: _Moments  # the segment up to and including the firing error
    after: _Moments  # the errors since


class ConceptDriftMonitor:
    """Detects upward changes of a model's error stream and judges the new error level.

    The first ``baseline_size`` errors form the baseline mean. The selected detectors watch the
    stream (see the module docstring for what each one is fed); their firings after the baseline
    are merged into *changes*:

    * a firing less than ``cooldown`` errors after the previous change's first firing, from any
      of the selected detectors, is that same change (this also absorbs ADWIN firing twice for
      one change, river issue #574); so is one while an earlier firing is still being judged,
      unless it comes at least :data:`MIN_SEGMENT` errors later, when it is judged too;
    * a firing is judged on the errors that follow it, never on a smoothed level at the firing
      (which lags behind a change, e.g. one during a detector's warm-up, and can make a step up
      look like a step down): once :data:`MIN_SEGMENT` errors follow it, it is a change up as
      soon as their mean exceeds the mean of the segment before the firing by :data:`CONFIRM_Z`
      standard errors, a change down as soon as it is as far below; at :data:`CONFIRM_WINDOW`
      errors it is judged a last time against :data:`FINAL_Z` and otherwise dismissed as noise
      (raw firings on stationary errors, frequent with EDDM, rarely pass). The first judged
      firing settles every firing then pending;
    * only changes up are *merged detections* (concept drift). A change down resets the level
      segment (so an incident can clear quickly) but is not reported.

    A merged detection is reported at the error that confirms it, at least :data:`MIN_SEGMENT`
    errors after its first firing. The current level is the mean of the errors since the first
    firing of the last change, or before any change the mean of the last :data:`RECENT_WINDOW`
    errors (a ring). An observation is breached when a merged detection happened since the last
    clear and the level exceeds ``baseline * (1 + min_relative_increase)``; it clears when the
    level is back within half that margin. :meth:`judge` takes that verdict at fixed points of
    the error stream (every :data:`JUDGE_EVERY` errors and at every confirmed change), so the
    same errors give the same verdicts however they are cut into batches.

    Parameters
    ----------
    detectors
        Kinds from :data:`CONCEPT_KINDS`, each at most once. ``"ddm"`` and ``"eddm"`` are
        skipped for ``"absolute_error"`` (they need 0/1 errors); at least one selected detector
        must suit the metric.
    baseline_size
        Errors in the baseline; firings before it completes are ignored (a change inside the
        baseline raises the baseline instead).
    min_relative_increase
        Relative rise of the error level over the baseline that breaches.
    cooldown
        Firings this close (in errors) to the previous change are the same change.
    adwin_delta
        ADWIN's confidence parameter.
    loss_scale
        Cap for absolute errors fed to Page-Hinkley, HDDM_A and HDDM_W; None means the 99th
        percentile of the baseline errors (the largest baseline error if that is 0, or 1 if all
        are 0).

    Attributes
    ----------
    n : int
        Errors seen (NaNs are skipped and not counted).
    merged_detections : int
        Changes up so far.
    metric : str or None
        Fixed by the first :meth:`update`.
    loss_scale : float or None
        The scale in use (None until known, and always for ``"error_rate"`` unless given).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> errors = np.concatenate([rng.random(5000) < 0.1, rng.random(5000) < 0.3])
    >>> mon = ConceptDriftMonitor(("adwin", "ddm"))
    >>> positions = mon.update(errors, "error_rate")
    >>> len(positions), mon.merged_detections, 5000 < positions[0] < 5500
    (1, 1, True)
    >>> obs = mon.observation("m1", observed_at=0.0, model_version=None)
    >>> obs.signal, obs.breached, round(obs.value, 1)
    ('error_rate', True, 0.3)
    >>> restored = ConceptDriftMonitor.from_snapshot(mon.snapshot())
    >>> restored.merged_detections, restored.n
    (1, 10000)
    """

    def __init__(
        self,
        detectors: Sequence[str] = ("adwin",),
        *,
        baseline_size: int = 500,
        min_relative_increase: float = 0.25,
        cooldown: int = 500,
        adwin_delta: float = 0.002,
        loss_scale: float | None = None,
    ) -> None:
        kinds = tuple(detectors)
        if not kinds:
            raise ValueError("select at least one detector")
        unknown = [k for k in kinds if k not in CONCEPT_KINDS]
        if unknown:
            raise ValueError(f"unknown detector kinds {unknown}; expected some of {CONCEPT_KINDS}")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"detector kinds repeated in {kinds}")
        if baseline_size < 1:
            raise ValueError("baseline_size must be >= 1")
        if not min_relative_increase > 0:
            raise ValueError("min_relative_increase must be > 0")
        if cooldown < 0:
            raise ValueError("cooldown must be >= 0")
        if loss_scale is not None and not (math.isfinite(loss_scale) and loss_scale > 0):
            raise ValueError("loss_scale must be a positive finite number")
        self.kinds: tuple[str, ...] = kinds
        self.baseline_size = int(baseline_size)
        self.min_relative_increase = float(min_relative_increase)
        self.cooldown = int(cooldown)
        self.adwin_delta = float(adwin_delta)
        self.configured_loss_scale = loss_scale
        self.loss_scale: float | None = loss_scale
        self._detectors: dict[str, StreamDetector] = {
            k: _make_detector(k, adwin_delta) for k in kinds
        }
        self.metric: Metric | None = None
        self.n = 0
        self.merged_detections = 0
        self.detected_since_clear = False
        self._baseline_sum = 0.0
        self._baseline_n = 0
        self._baseline_buf: list[float] = []  # only while a loss scale is still to be computed
        self._segment = _Moments()  # since the first firing of the last change (or the start)
        self._changed = False  # whether any change (up or down) was confirmed
        self._last_change: int | None = None  # global index of that first firing
        self._pending: list[_Candidate] = []
        self._ring = np.zeros(RECENT_WINDOW)
        self._ring_count = 0

    # -- properties ---------------------------------------------------------------------------

    @property
    def detections(self) -> dict[str, int]:
        """Raw firings per selected detector, before merging (including ignored ones)."""
        return {k: d.n_detections for k, d in self._detectors.items()}

    @property
    def baseline(self) -> float | None:
        """Mean of the first ``baseline_size`` errors, None until they have all arrived."""
        if self._baseline_n < self.baseline_size:
            return None
        return self._baseline_sum / self._baseline_n

    @property
    def mean(self) -> float | None:
        """The current error level (see the class docstring), None while not yet trusted."""
        if self._changed:
            return self._segment.mean if self._segment.n >= MIN_SEGMENT else None
        if self._ring_count < MIN_SEGMENT:
            return None
        return float(self._ring[: self._ring_count].mean())

    # -- updates ------------------------------------------------------------------------------

    def update(self, errors: np.ndarray, metric: Metric) -> list[int]:
        """Feed a batch of errors in arrival order.

        Parameters
        ----------
        errors
            0/1 values for ``"error_rate"``, non-negative finite values for
            ``"absolute_error"``; NaNs are skipped.
        metric
            Must be the same on every call.

        Returns
        -------
        list[int]
            Indices into ``errors`` of the errors that confirmed a merged detection.

        Raises
        ------
        ValueError
            On an unknown or changed metric or values outside its domain; the monitor is then
            unchanged.
        """
        return self._feed(errors, metric, judge=False)[0]

    def judge(self, errors: np.ndarray, metric: Metric) -> list[Judgement]:
        """Feed a batch of errors (as :meth:`update`) and judge the level at the fixed points
        of the error stream the batch contains: after every error whose global index ``g`` has
        ``(g + 1) % JUDGE_EVERY == 0`` and after every error that confirms a change (up or
        down), once the baseline and a trusted level exist.

        Each verdict is the one :meth:`observation` would give right after that error (and
        clears :attr:`detected_since_clear` the same way), so the verdicts do not depend on how
        the stream is cut into batches.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> errors = np.concatenate([rng.random(5000) < 0.1, rng.random(5000) < 0.3])
        >>> whole = ConceptDriftMonitor().judge(errors, "error_rate")
        >>> cut, starts = ConceptDriftMonitor(), range(0, 10_000, 777)
        >>> parts = [cut.judge(errors[a : a + 777], "error_rate") for a in starts]
        >>> pieces = [j._replace(position=j.position + a) for a, p in zip(starts, parts) for j in p]
        >>> pieces == whole, len(whole) > 95
        (True, True)

        The first breached verdict is at the error that confirms the change:

        >>> first = [j.position for j in whole if j.breached][:1]
        >>> first, ConceptDriftMonitor().update(errors, "error_rate")
        ([5303], [5303])
        """
        return self._feed(errors, metric, judge=True)[1]

    def _feed(
        self, errors: np.ndarray, metric: Metric, *, judge: bool
    ) -> tuple[list[int], list[Judgement]]:
        if metric not in ("error_rate", "absolute_error"):
            raise ValueError(f"unknown error metric {metric!r}")
        if self.metric is not None and metric != self.metric:
            raise ValueError(f"metric changed from {self.metric!r} to {metric!r}")
        v = np.asarray(errors, dtype=np.float64).ravel()
        keep = np.flatnonzero(~np.isnan(v))
        x = v[keep]
        if metric == "error_rate":
            if not np.all((x == 0.0) | (x == 1.0)):
                raise ValueError("error_rate errors must be 0 or 1")
        elif not np.all(np.isfinite(x) & (x >= 0.0)):
            raise ValueError("absolute_error errors must be finite and >= 0")
        if self.metric is None:
            if metric == "absolute_error" and not any(k not in BINARY_KINDS for k in self.kinds):
                raise ValueError(f"none of {self.kinds} can watch absolute errors")
            self.metric = metric
        if x.size == 0:
            return [], []

        start_global = self.n
        scaled_from = self._take_baseline(x)
        firings: set[int] = set()
        for kind, det in self._detectors.items():
            if metric == "error_rate":
                fired = det.update_many(x)
            elif kind in BINARY_KINDS:
                continue
            elif kind in _SCALED_KINDS:
                if self.loss_scale is None:
                    continue
                fired = [
                    scaled_from + p
                    for p in det.update_many(np.minimum(x[scaled_from:] / self.loss_scale, 1.0))
                ]
            else:
                fired = det.update_many(x)
            firings.update(fired)

        confirmed: list[int] = []
        judged: list[Judgement] = []
        pushed = 0  # errors of x already in the ring
        first_judged = self.baseline_size - 1  # the baseline is complete from this error on
        xs = x.tolist()
        stops = self._stops(start_global, len(xs), firings, judge)
        i = 0
        while i < len(xs):
            if not self._pending:
                # Up to the next firing or judge point, each error only joins the segment.
                stop = next(stops)
                while stop < i:
                    stop = next(stops)
                self._segment.add_many(xs[i:stop])
                i = stop
                if i == len(xs):
                    break
            e, g = xs[i], start_global + i
            change = self._step(e, g, fire=i in firings)
            if change > 0:
                confirmed.append(int(keep[i]))
            if judge and (change or (g + 1) % JUDGE_EVERY == 0) and g >= first_judged:
                self._push_ring(x[pushed : i + 1], start_global + pushed)
                pushed = i + 1
                verdict = self._verdict()
                if verdict is not None:
                    judged.append(Judgement(int(keep[i]), *verdict))
            i += 1
        self._push_ring(x[pushed:], start_global + pushed)
        self.n += x.size
        return confirmed, judged

    def _stops(self, start: int, n: int, firings: Collection[int], judge: bool) -> Iterator[int]:
        """The positions among ``n`` errors (global indices from ``start``) where :meth:`_feed`
        must take a full step even without pending firings, ascending, then ``n`` forever:
        the firings, and with ``judge`` the judge points from the baseline's last error on."""
        points = {i for i in firings if 0 <= i < n}
        if judge:
            first = max(start, self.baseline_size - 1)
            first += -(first + 1) % JUDGE_EVERY  # up to the next g with (g + 1) % JUDGE_EVERY == 0
            points.update(range(first - start, n, JUDGE_EVERY))
        yield from sorted(points)
        while True:
            yield n

    def _take_baseline(self, x: np.ndarray) -> int:
        """Add the head of ``x`` to the baseline; return where scaled detectors start in ``x``."""
        room = self.baseline_size - self._baseline_n
        if room <= 0:
            return 0
        head = x[:room].tolist()
        for e in head:  # one at a time, so the sum does not depend on the batch sizes
            self._baseline_sum += e
        self._baseline_n += len(head)
        needs_scale = (
            self.metric == "absolute_error"
            and self.configured_loss_scale is None
            and any(k in _SCALED_KINDS for k in self.kinds)
        )
        if not needs_scale:
            return 0
        self._baseline_buf.extend(head)
        if self._baseline_n < self.baseline_size:
            return x.size
        self.loss_scale = _default_loss_scale(np.asarray(self._baseline_buf))
        self._baseline_buf = []
        return len(head)

    def _step(self, e: float, g: int, *, fire: bool) -> int:
        """Account for error ``e`` at global index ``g``: 1 if it confirms a change up, -1 a
        change down, else 0."""
        self._segment.add(e)
        change = 0
        if self._pending:
            for c in self._pending:
                c.after.add(e)
            verdict = 0
            for c in self._pending:
                verdict = _judge(c)
                if verdict:
                    self._segment = c.after.copy()
                    self._changed = True
                    self._last_change = c.position
                    self._pending = []
                    change = verdict
                    if verdict > 0:
                        self.merged_detections += 1
                        self.detected_since_clear = True
                    break
            if not verdict:
                self._pending = [c for c in self._pending if c.after.n < CONFIRM_WINDOW]
        if fire and self._accepts_firing(g):
            self._pending.append(_Candidate(g, self._segment.copy(), _Moments()))
        return change

    def _accepts_firing(self, g: int) -> bool:
        if g < self.baseline_size:
            return False
        if self._last_change is not None and g - self._last_change < self.cooldown:
            return False
        return not self._pending or g - self._pending[-1].position >= MIN_SEGMENT

    def _push_ring(self, x: np.ndarray, first: int) -> None:
        """Put errors ``x`` (global indices from ``first``) in the ring."""
        # Slot of the error with global index g is g % RECENT_WINDOW, whatever the batching.
        tail = x[-RECENT_WINDOW:]
        start = first + x.size - tail.size
        self._ring[(start + np.arange(tail.size)) % RECENT_WINDOW] = tail
        self._ring_count = min(self._ring_count + x.size, RECENT_WINDOW)

    # -- verdict ------------------------------------------------------------------------------

    def observation(
        self, model_id: str, observed_at: float, model_version: str | None
    ) -> Observation | None:
        """Judge the current level; None until the baseline and a trusted level exist.

        Clears :attr:`detected_since_clear` when the level is back within half the margin.
        """
        verdict = self._verdict()
        if verdict is None:
            return None
        return self.to_observation(Judgement(-1, *verdict), model_id, observed_at, model_version)

    def to_observation(
        self, j: Judgement, model_id: str, observed_at: float, model_version: str | None
    ) -> Observation:
        """The observation of a verdict of :meth:`judge`, at event time ``observed_at``."""
        return Observation(
            model_id=model_id,
            kind="concept_drift",
            feature=None,
            signal=self.metric or "error_rate",
            value=j.value,
            threshold=j.threshold,
            breached=j.breached,
            cleared=j.cleared,
            observed_at=observed_at,
            model_version=model_version,
        )

    def _verdict(self) -> tuple[float, float, bool, bool] | None:
        """``(level, threshold, breached, cleared)`` now (see the class docstring); None until
        the baseline and a trusted level exist. Clears :attr:`detected_since_clear`."""
        base = self.baseline
        level = self.mean
        if base is None or level is None or self.metric is None:
            return None
        margin = max(base, 1e-9) * self.min_relative_increase
        threshold = base + margin
        breached = self.detected_since_clear and level > threshold
        cleared = level <= base + margin / 2
        if cleared:
            self.detected_since_clear = False
        return level, threshold, breached, cleared

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable plain data, settings included (detectors too: nothing is
        pickled)."""
        return {
            "v": SNAPSHOT_VERSION,
            "config": {
                "detectors": list(self.kinds),
                "baseline_size": self.baseline_size,
                "min_relative_increase": self.min_relative_increase,
                "cooldown": self.cooldown,
                "adwin_delta": self.adwin_delta,
                "loss_scale": self.configured_loss_scale,
            },
            "detectors": {k: d.snapshot() for k, d in self._detectors.items()},
            "metric": self.metric,
            "loss_scale": self.loss_scale,
            "n": self.n,
            "merged_detections": self.merged_detections,
            "detected_since_clear": self.detected_since_clear,
            "baseline": [self._baseline_sum, self._baseline_n],
            "baseline_buf": list(self._baseline_buf),
            "segment": self._segment.to_list(),
            "changed": self._changed,
            "last_change": self._last_change,
            "pending": [[c.position, c.before.to_list(), c.after.to_list()] for c in self._pending],
            "ring": self._ring[: self._ring_count].tolist(),
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> ConceptDriftMonitor:
        """Rebuild from :meth:`snapshot` (settings come from the snapshot).

        Raises
        ------
        ValueError
            On an unknown snapshot version or inconsistent detector states.
        """
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported concept-drift snapshot version {d.get('v')!r}")
        cfg = d["config"]
        m = cls(
            tuple(cfg["detectors"]),
            baseline_size=cfg["baseline_size"],
            min_relative_increase=cfg["min_relative_increase"],
            cooldown=cfg["cooldown"],
            adwin_delta=cfg["adwin_delta"],
            loss_scale=cfg["loss_scale"],
        )
        if set(d["detectors"]) != set(m.kinds):
            raise ValueError("snapshot detector states do not match its detector kinds")
        for k in m.kinds:
            det = StreamDetector.from_snapshot(d["detectors"][k])
            if det.kind != k:
                raise ValueError(f"snapshot state for {k!r} is a {det.kind!r} detector")
            m._detectors[k] = det
        m.metric = d["metric"]
        m.loss_scale = None if d["loss_scale"] is None else float(d["loss_scale"])
        m.n = int(d["n"])
        m.merged_detections = int(d["merged_detections"])
        m.detected_since_clear = bool(d["detected_since_clear"])
        m._baseline_sum = float(d["baseline"][0])
        m._baseline_n = int(d["baseline"][1])
        m._baseline_buf = [float(e) for e in d["baseline_buf"]]
        m._segment = _Moments.from_list(d["segment"])
        m._changed = bool(d["changed"])
        m._last_change = None if d["last_change"] is None else int(d["last_change"])
        m._pending = [
            _Candidate(int(p), _Moments.from_list(b), _Moments.from_list(a))
            for p, b, a in d["pending"]
        ]
        ring = np.asarray(d["ring"], dtype=np.float64)
        m._ring_count = ring.size
        m._ring[: ring.size] = ring
        return m


def _make_detector(kind: str, adwin_delta: float) -> StreamDetector:
    if kind == "adwin":
        return StreamDetector("adwin", delta=adwin_delta)
    if kind == "page_hinkley":
        return StreamDetector("page_hinkley", mode="up")
    return StreamDetector(kind)


def _judge(c: _Candidate) -> int:
    """+1 if the errors after the firing are clearly higher than before it, -1 if clearly
    lower, 0 if it is too early or unclear."""
    a, b = c.after, c.before
    if a.n < MIN_SEGMENT or b.n == 0:
        return 0
    diff = a.mean - b.mean
    se = math.sqrt(max(a.var, b.var) * (1.0 / a.n + 1.0 / b.n))
    if se == 0.0:
        return (diff > 0) - (diff < 0)
    z = diff / se
    bar = FINAL_Z if a.n >= CONFIRM_WINDOW else CONFIRM_Z
    return 1 if z >= bar else -1 if z <= -bar else 0


def _default_loss_scale(baseline: np.ndarray) -> float:
    for s in (float(np.percentile(baseline, 99)), float(baseline.max())):
        if s > 0:
            return s
    return 1.0
