"""Change detectors behind one batch interface, plus a debouncer for their raw firings.

Raw detector firings are not alerts: Page-Hinkley fires now and then on stationary data, EDDM
often does, and ADWIN may fire more than once for one change (river issue #574), so callers
should merge firings with :class:`Debouncer` and judge them with other evidence.

What each kind accepts:

============  =========================================  ========================================
kind          implementation                             input
============  =========================================  ========================================
adwin         :class:`~stream_monitor.stats.drift.ADWIN`  any real values (two-sided)
page_hinkley  :class:`~stream_monitor.stats.drift.        any real values; ``delta`` and
              PageHinkley`                               ``threshold`` are in the units of the
                                                         input (``mode`` picks the side)
kswin         :class:`~stream_monitor.stats.drift.KSWIN`  any real values (two-sample KS test)
ddm           :class:`~stream_monitor.stats.drift.DDM`    0/1 only (1 = error); fires on increases
eddm          :class:`~stream_monitor.stats.drift.EDDM`   0/1 only (1 = error); fires on increases
hddm_a        :class:`~stream_monitor.stats.drift.HDDMA`  real values in [0, 1]; increases
hddm_w        :class:`~stream_monitor.stats.drift.HDDMW`  real values in [0, 1]; increases
============  =========================================  ========================================

Every kind is this package's own implementation (:mod:`stream_monitor.stats.drift`), with plain
data as state (JSON, validated when read back: nothing is ever unpickled), firing where river's
detector of the same name fires on the same values (river is the reference the tests compare
against, seeded stream by seeded stream). ADWIN and Page-Hinkley, which run on every value of
every numeric feature, work on a batch with a few array operations; the others run on error
streams (one value per joined label) value by value.

DDM models the error rate as a Bernoulli proportion and EDDM the distance between values equal
to 1, so both need 0/1 input (:data:`BINARY_KINDS`). HDDM_A and HDDM_W (Frías-Blanco et al.,
IEEE TKDE 27(3), 2014) rest on Hoeffding's and McDiarmid's bounds for variables bounded in
[0, 1]: river documents them for bits, but the bounds (and MOA's and scikit-multiflow's
implementations) hold for any real values in [0, 1], e.g. a loss divided by a cap and clipped
(:data:`UNIT_INTERVAL_KINDS`). :meth:`StreamDetector.update_many` rejects values outside what
the kind accepts; so does :meth:`StreamDetector.update_one`, the same for a single value
without the batch set-up (the per-window detectors see one value per window).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from stream_monitor.stats.drift import ADWIN, DDM, EDDM, HDDMA, HDDMW, KSWIN, PageHinkley
from stream_monitor.stats.drift.base import SHORT, feed_by_value

SNAPSHOT_VERSION = 3
EWMA_ALPHA = 0.1
"""Smoothing of the recent-level estimate reported at a firing (about 10 values)."""
#: Values older than this weigh less than 1e-18 in the EWMA (0.9 ** 400): the EWMA at a position
#: is computed from this many values before it.
_EWMA_SPAN = 400

Detector = ADWIN | PageHinkley | KSWIN | DDM | EDDM | HDDMA | HDDMW
_KINDS: dict[str, type[Detector]] = {
    "adwin": ADWIN,
    "page_hinkley": PageHinkley,
    "kswin": KSWIN,
    "ddm": DDM,
    "eddm": EDDM,
    "hddm_a": HDDMA,
    "hddm_w": HDDMW,
}

KINDS: frozenset[str] = frozenset(_KINDS)
"""Every detector kind :class:`StreamDetector` accepts."""

BINARY_KINDS: frozenset[str] = frozenset({"ddm", "eddm"})
"""Kinds that need 0/1 input (1 = error)."""

UNIT_INTERVAL_KINDS: frozenset[str] = frozenset({"hddm_a", "hddm_w"})
"""Kinds that need real values in [0, 1] (Hoeffding / McDiarmid bounds for that range)."""


class BatchDetector(Protocol):
    """What :class:`StreamDetector` needs of a detector: feed an array of values (no NaNs),
    get back the indices at which it fired."""

    def update_many(self, values: np.ndarray) -> list[int]: ...


class StreamDetector:
    """A drift detector fed in batches, reporting where it fired.

    Parameters
    ----------
    kind
        ``"adwin"``, ``"page_hinkley"``, ``"kswin"``, ``"ddm"``, ``"eddm"``, ``"hddm_a"`` or
        ``"hddm_w"`` (see the module docstring for what each accepts).
    **params
        Passed unchanged to the detector's constructor (same names and defaults as river's);
        keep them JSON-serialisable so :meth:`snapshot` is.

    Attributes
    ----------
    n_seen : int
        Non-NaN values fed so far, across calls.
    n_detections : int
        Firings so far.
    mean_before_last_detection, mean_after_last_detection : float or None
        Level of the stream before / after the last firing, for telling the direction of a
        change: the mean of the values between the previous firing (or the start) and the
        detecting value, and an exponentially weighted mean (alpha ``EWMA_ALPHA``) of the
        values up to and including the detecting one. The latter lags a change that is only a
        few values old at the firing and is noisy on 0/1 values, so it can even put a step up
        below the level before it; where the direction matters, compare the values that follow
        the firing instead (as ``ConceptDriftMonitor`` does).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> det = StreamDetector("adwin", delta=0.002)
    >>> x = np.concatenate([rng.normal(0, 1, 1000), rng.normal(3, 1, 1000)])
    >>> positions = det.update_many(x)
    >>> len(positions) > 0 and positions[0] >= 1000
    True
    >>> det.mean_after_last_detection > det.mean_before_last_detection
    True

    Binary kinds take 0/1 values (1 = error):

    >>> errors = np.concatenate([rng.random(3000) < 0.1, rng.random(3000) < 0.4])
    >>> ddm = StreamDetector("ddm")
    >>> any(p >= 3000 for p in ddm.update_many(errors))
    True
    >>> ddm.update_many(np.array([0.5]))
    Traceback (most recent call last):
    ...
    ValueError: ddm detectors take 0/1 values only
    """

    def __init__(self, kind: str, **params: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown detector kind {kind!r}; expected one of {sorted(KINDS)}")
        self.kind: str = kind
        self.params: dict[str, Any] = dict(params)
        self._detector: Detector = _KINDS[kind](**params)
        self.n_seen: int = 0
        self.n_detections: int = 0
        self.mean_before_last_detection: float | None = None
        self.mean_after_last_detection: float | None = None
        # Sum and count of the values since the previous firing, and an EWMA of recent values.
        self._seg_sum: float = 0.0
        self._seg_n: int = 0
        self._ewma: float | None = None

    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed ``values`` in order (NaNs skipped).

        Returns
        -------
        list[int]
            Indices into ``values`` of every value after which the detector had fired (each
            is a separate firing: the detector starts afresh after one).

        Raises
        ------
        ValueError
            If a non-NaN value is outside what the kind accepts: 0/1 for :data:`BINARY_KINDS`,
            [0, 1] for :data:`UNIT_INTERVAL_KINDS`. Checked before anything is fed, so the
            detector is unchanged.
        """
        if len(values) <= SHORT:
            return self._update_few(values)
        v = np.asarray(values, dtype=np.float64).ravel()
        self._check_domain(v)
        present = ~np.isnan(v)
        x = v if present.all() else v[present]
        if not len(x):
            return []
        fired = self._detector.update_many(x)
        self._levels(x, fired)
        self.n_seen += len(x)
        self.n_detections += len(fired)
        if len(x) == len(v):
            return fired
        return np.flatnonzero(present)[fired].tolist()

    def update_one(self, x: float) -> bool:
        """Feed one value: what ``update_many((x,))`` does, without its generality (the
        per-window detectors see one value per window of every feature).

        Returns
        -------
        bool
            Whether the detector fired on ``x`` (False for NaN, which is skipped).

        Raises
        ------
        ValueError
            If ``x`` is outside what the kind accepts (see :meth:`update_many`); the detector
            is unchanged then.

        Examples
        --------
        >>> det = StreamDetector("page_hinkley", min_instances=5, threshold=3.0, mode="up")
        >>> [i for i, x in enumerate([0.0] * 10 + [4.0] * 5) if det.update_one(x)]
        [10]
        >>> det.update_one(float("nan")), det.n_seen, det.mean_before_last_detection
        (False, 15, 0.0)
        """
        if x != x:  # NaN is not equal to itself
            return False
        x = float(x)
        kind = self.kind
        if kind in BINARY_KINDS:
            if x != 0.0 and x != 1.0:
                raise ValueError(f"{kind} detectors take 0/1 values only")
        elif kind in UNIT_INTERVAL_KINDS and not 0.0 <= x <= 1.0:
            raise ValueError(f"{kind} detectors take values in [0, 1] only")
        det = self._detector
        # As feed_by_value: a detector that fired on the previous value starts afresh.
        if det.drift_detected:
            det._reset()
            det.drift_detected = False
        fired = det._first_firing_by_value((x,)) >= 0
        ewma = self._ewma
        self._ewma = ewma = x if ewma is None else ewma + EWMA_ALPHA * (x - ewma)
        self.n_seen += 1
        if fired:
            det.drift_detected = True
            self.mean_before_last_detection = self._seg_sum / self._seg_n if self._seg_n else None
            self.mean_after_last_detection = ewma
            self._seg_sum, self._seg_n = 0.0, 0
            self.n_detections += 1
        else:
            self._seg_sum += x
            self._seg_n += 1
        return fired

    def _update_few(self, values: Any) -> list[int]:
        """:meth:`update_many` for a few values, in plain Python (one value per window)."""
        rows = [i for i, x in enumerate(values) if x == x]  # NaN is not equal to itself
        xs = [float(values[i]) for i in rows]
        if not xs:
            return []
        self._check_domain(np.asarray(xs))
        fired = feed_by_value(self._detector, xs)
        hit = set(fired)
        for i, x in enumerate(xs):
            self._ewma = x if self._ewma is None else self._ewma + EWMA_ALPHA * (x - self._ewma)
            if i in hit:
                seg = self._seg_sum / self._seg_n if self._seg_n else None
                self.mean_before_last_detection = seg
                self.mean_after_last_detection = self._ewma
                self._seg_sum, self._seg_n = 0.0, 0
            else:
                self._seg_sum += x
                self._seg_n += 1
        self.n_seen += len(xs)
        self.n_detections += len(fired)
        return [rows[i] for i in fired]

    def _levels(self, x: np.ndarray, fired: list[int]) -> None:
        """Track the level before and after each firing, and carry both to the next batch."""
        csum = np.concatenate([[0.0], np.cumsum(x)])  # csum[i] = sum of x[:i]
        prev = -1
        for at in fired:
            # The segment before a firing: the values since the previous one, without either.
            seg_n = self._seg_n + at - prev - 1
            seg_sum = self._seg_sum + float(csum[at] - csum[prev + 1])
            self.mean_before_last_detection = seg_sum / seg_n if seg_n else None
            self.mean_after_last_detection = self._ewma_at(x, at)
            self._seg_sum, self._seg_n, prev = 0.0, 0, at
        self._seg_sum += float(csum[-1] - csum[prev + 1])
        self._seg_n += len(x) - prev - 1
        self._ewma = self._ewma_at(x, len(x) - 1)

    def _ewma_at(self, x: np.ndarray, at: int) -> float:
        """The EWMA of the values up to and including ``x[at]``, continuing from the previous
        batch's (the first value ever starts it)."""
        lo = max(0, at + 1 - _EWMA_SPAN)
        tail = x[lo : at + 1]
        keep = 1.0 - EWMA_ALPHA
        level = float(EWMA_ALPHA * (keep ** np.arange(len(tail) - 1, -1, -1)) @ tail)
        if lo == 0:
            prior = float(x[0]) if self._ewma is None else self._ewma
            level += keep ** len(tail) * prior
        return level

    def _check_domain(self, v: np.ndarray) -> None:
        if self.kind in BINARY_KINDS:
            bad = ~((v == 0.0) | (v == 1.0) | np.isnan(v))
            if bad.any():
                raise ValueError(f"{self.kind} detectors take 0/1 values only")
        elif self.kind in UNIT_INTERVAL_KINDS:
            bad = ~(((v >= 0.0) & (v <= 1.0)) | np.isnan(v))
            if bad.any():
                raise ValueError(f"{self.kind} detectors take values in [0, 1] only")

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-compatible state (the detector's own ``snapshot()`` in ``"state"``)."""
        state = self._detector.snapshot()
        return {
            "v": SNAPSHOT_VERSION,
            "kind": self.kind,
            "params": dict(self.params),
            "n_seen": self.n_seen,
            "n_detections": self.n_detections,
            "mean_before_last_detection": self.mean_before_last_detection,
            "mean_after_last_detection": self.mean_after_last_detection,
            "seg_sum": self._seg_sum,
            "seg_n": self._seg_n,
            "ewma": self._ewma,
            "state": state,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> StreamDetector:
        """Rebuild from :meth:`snapshot` (plain data: nothing is unpickled or executed).

        Raises
        ------
        ValueError
            On an unknown snapshot version or kind, or a state that is not the kind's.
        """
        if not isinstance(d, Mapping) or d.get("v") != SNAPSHOT_VERSION:
            got = d.get("v") if isinstance(d, Mapping) else d
            raise ValueError(f"unsupported StreamDetector snapshot version {got!r}")
        kind, params, state = d.get("kind"), d.get("params"), d.get("state")
        if kind not in _KINDS or not isinstance(params, Mapping):
            raise ValueError(f"unknown detector kind {kind!r} or parameters {params!r}")
        det = cls(kind, **params)
        if not isinstance(state, Mapping):
            raise ValueError(f"state of a {det.kind} detector must be a mapping")
        try:
            det._detector = _KINDS[det.kind].from_snapshot(state)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"state is not a {det.kind} detector's: {exc}") from exc
        det.n_seen = int(d["n_seen"])
        det.n_detections = int(d["n_detections"])
        det.mean_before_last_detection = d["mean_before_last_detection"]
        det.mean_after_last_detection = d["mean_after_last_detection"]
        det._seg_sum = float(d["seg_sum"])
        det._seg_n = int(d["seg_n"])
        det._ewma = d["ewma"]
        return det


class Debouncer:
    """Merges raw firings closer together than ``cooldown`` positions into one.

    Positions must come from one monotone counter (e.g. a running count of values seen).

    Examples
    --------
    >>> d = Debouncer(cooldown=100)
    >>> [d.offer(p) for p in (10, 50, 109, 110, 250)]
    [True, False, False, True, True]
    """

    def __init__(self, cooldown: int) -> None:
        if cooldown < 0:
            raise ValueError("cooldown must be >= 0")
        self.cooldown: int = int(cooldown)
        self.last_accepted: int | None = None

    def offer(self, position: int) -> bool:
        """True if ``position`` starts a new event (and remember it), False if it is a repeat."""
        if self.last_accepted is not None and position - self.last_accepted < self.cooldown:
            return False
        self.last_accepted = int(position)
        return True

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "v": SNAPSHOT_VERSION,
            "cooldown": self.cooldown,
            "last_accepted": self.last_accepted,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> Debouncer:
        """Rebuild from :meth:`snapshot`; raises ``ValueError`` on an unknown version."""
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported Debouncer snapshot version {d.get('v')!r}")
        deb = cls(int(d["cooldown"]))
        last = d["last_accepted"]
        deb.last_accepted = None if last is None else int(last)
        return deb
