"""Thin wrappers around river's univariate drift detectors, plus a debouncer.

Raw detector firings are not alerts: Page-Hinkley fires now and then on stationary data, EDDM
often does, and ADWIN may fire more than once for one change (river issue #574), so callers
should merge firings with :class:`Debouncer` and judge them with other evidence.

What each kind accepts:

============  =======================  ==================================================
kind          river class              input
============  =======================  ==================================================
adwin         ``drift.ADWIN``          any real values (two-sided)
page_hinkley  ``drift.PageHinkley``    any real values; ``delta`` and ``threshold`` are in
                                       the units of the input (``mode`` picks the side)
kswin         ``drift.KSWIN``          any real values (two-sample KS test, two-sided)
ddm           ``drift.binary.DDM``     0/1 only (1 = error); fires on increases
eddm          ``drift.binary.EDDM``    0/1 only (1 = error); fires on increases
hddm_a        ``drift.binary.HDDMA``   real values in [0, 1]; increases (one-sided default)
hddm_w        ``drift.binary.HDDMW``   real values in [0, 1]; increases (one-sided default)
============  =======================  ==================================================

DDM models the error rate as a Bernoulli proportion and EDDM the distance between values equal
to 1, so both need 0/1 input (:data:`BINARY_KINDS`). HDDM_A and HDDM_W (Frías-Blanco et al.,
IEEE TKDE 27(3), 2014) rest on Hoeffding's and McDiarmid's bounds for variables bounded in
[0, 1]: river documents them for bits, but the bounds (and MOA's and scikit-multiflow's
implementations) hold for any real values in [0, 1], e.g. a loss divided by a cap and clipped
(:data:`UNIT_INTERVAL_KINDS`). :meth:`StreamDetector.update_many` rejects values outside what
the kind accepts.
"""

from __future__ import annotations

import base64
import math
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import drift

SNAPSHOT_VERSION = 1
EWMA_ALPHA = 0.1
"""Smoothing of the recent-level estimate used by non-ADWIN detectors (about 10 values)."""

_KINDS: dict[str, type] = {
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
    "ddm": drift.binary.DDM,
    "eddm": drift.binary.EDDM,
    "hddm_a": drift.binary.HDDMA,
    "hddm_w": drift.binary.HDDMW,
}

KINDS: frozenset[str] = frozenset(_KINDS)
"""Every detector kind :class:`StreamDetector` accepts."""

BINARY_KINDS: frozenset[str] = frozenset({"ddm", "eddm"})
"""Kinds that need 0/1 input (1 = error)."""

UNIT_INTERVAL_KINDS: frozenset[str] = frozenset({"hddm_a", "hddm_w"})
"""Kinds that need real values in [0, 1] (Hoeffding / McDiarmid bounds for that range)."""


class StreamDetector:
    """A river drift detector fed in batches, reporting where it fired.

    Parameters
    ----------
    kind
        ``"adwin"``, ``"page_hinkley"``, ``"kswin"``, ``"ddm"``, ``"eddm"``, ``"hddm_a"`` or
        ``"hddm_w"`` (see the module docstring for what each accepts).
    **params
        Passed unchanged to the river constructor (``drift.ADWIN``, ``drift.PageHinkley``,
        ``drift.KSWIN``, ``drift.binary.DDM``, ...); keep them JSON-serialisable so
        :meth:`snapshot` is.

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
        the firing instead (as ``ConceptDriftMonitor`` does). ADWIN's own ``estimation`` is not
        used: at a firing river drops only the oldest bucket(s), so the window mean just after the
        detecting update is still dominated by pre-change data (and river clears the whole
        window on the next update).

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
        if kind not in _KINDS:
            raise ValueError(f"unknown detector kind {kind!r}; expected one of {sorted(_KINDS)}")
        self.kind: str = kind
        self.params: dict[str, Any] = dict(params)
        self._detector: Any = _KINDS[kind](**params)
        self.n_seen: int = 0
        self.n_detections: int = 0
        self.mean_before_last_detection: float | None = None
        self.mean_after_last_detection: float | None = None
        # Mean of the values since the previous firing, and a fast EWMA of recent values.
        self._seg_mean: float = 0.0
        self._seg_n: int = 0
        self._ewma: float | None = None

    def update_many(self, values: np.ndarray) -> list[int]:
        """Feed ``values`` in order (NaNs skipped).

        Returns
        -------
        list[int]
            Indices into ``values`` of every update after which ``drift_detected`` was true
            (river clears the flag on the next update, so each is a separate firing).

        Raises
        ------
        ValueError
            If a non-NaN value is outside what the kind accepts: 0/1 for :data:`BINARY_KINDS`,
            [0, 1] for :data:`UNIT_INTERVAL_KINDS`. Checked before anything is fed, so the
            detector is unchanged.
        """
        v = np.asarray(values, dtype=np.float64).ravel()
        self._check_domain(v)
        det = self._detector
        fired: list[int] = []
        for i, x in enumerate(v.tolist()):
            if math.isnan(x):
                continue
            det.update(x)
            self.n_seen += 1
            self._ewma = x if self._ewma is None else self._ewma + EWMA_ALPHA * (x - self._ewma)
            if det.drift_detected:
                fired.append(i)
                self.n_detections += 1
                self.mean_before_last_detection = self._seg_mean if self._seg_n else None
                self.mean_after_last_detection = self._ewma
                self._seg_mean, self._seg_n = 0.0, 0
            else:
                self._seg_n += 1
                self._seg_mean += (x - self._seg_mean) / self._seg_n
        return fired

    def _check_domain(self, v: np.ndarray) -> None:
        if self.kind in BINARY_KINDS:
            bad = ~((v == 0.0) | (v == 1.0) | np.isnan(v))
            if bad.any():
                raise ValueError(f"{self.kind} detectors take 0/1 values only")
        elif self.kind in UNIT_INTERVAL_KINDS:
            bad = ~(((v >= 0.0) & (v <= 1.0)) | np.isnan(v))
            if bad.any():
                raise ValueError(f"{self.kind} detectors take values in [0, 1] only")

    @property
    def segment_mean(self) -> float | None:
        """Mean of the values fed since the last firing (or since the start), None if none."""
        return self._seg_mean if self._seg_n else None

    @property
    def segment_length(self) -> int:
        """How many values :attr:`segment_mean` covers."""
        return self._seg_n

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; the river object is pickled and base64-encoded in ``"state"``.

        Because :meth:`from_snapshot` unpickles ``"state"``, snapshots must be stored and
        transported so that only trusted, authenticated data reaches it.
        """
        return {
            "v": SNAPSHOT_VERSION,
            "kind": self.kind,
            "params": dict(self.params),
            "n_seen": self.n_seen,
            "n_detections": self.n_detections,
            "mean_before_last_detection": self.mean_before_last_detection,
            "mean_after_last_detection": self.mean_after_last_detection,
            "seg_mean": self._seg_mean,
            "seg_n": self._seg_n,
            "ewma": self._ewma,
            "state": base64.b64encode(pickle.dumps(self._detector)).decode("ascii"),
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> StreamDetector:
        """Rebuild from :meth:`snapshot`.

        .. warning::
           This calls :func:`pickle.loads` on ``d["state"]``, which can execute arbitrary code.
           Only pass snapshots from a trusted, authenticated source (e.g. verified by HMAC).

        Raises
        ------
        ValueError
            On an unknown snapshot version or kind, or a state of the wrong type.
        """
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported StreamDetector snapshot version {d.get('v')!r}")
        det = cls(d["kind"], **d["params"])
        detector = pickle.loads(base64.b64decode(d["state"]))  # trusted input only, see above
        if not isinstance(detector, _KINDS[det.kind]):
            raise ValueError(f"state is a {type(detector).__name__}, not a {det.kind} detector")
        det._detector = detector
        det.n_seen = int(d["n_seen"])
        det.n_detections = int(d["n_detections"])
        det.mean_before_last_detection = d["mean_before_last_detection"]
        det.mean_after_last_detection = d["mean_after_last_detection"]
        det._seg_mean = float(d["seg_mean"])
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
