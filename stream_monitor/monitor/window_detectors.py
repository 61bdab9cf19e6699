"""Change detectors on per-window streams: the slow drifts no single window shows.

A gradual drift moves a feature a little every window; each window's statistic stays under its
threshold, yet the statistic (or the feature's mean) creeps up window after window. Fed one
value per closed window, Page-Hinkley and ADWIN accumulate that evidence.

Every stream is scale-free before it reaches a detector: the window statistic is a z-score
against its simulated no-drift distribution (:meth:`Calibration.zscore`), the window mean is
``sqrt(n)`` times the mean PIT score (see :func:`~stream_monitor.monitor.feature.pit_standardise`),
so one configuration fits every feature and window size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from stream_monitor.config import WindowDetectorConfig
from stream_monitor.stats.detectors import StreamDetector

__all__ = ["WindowDetectors"]

SNAPSHOT_VERSION = 1

#: Streams whose *rise* is drift (a statistic falling back is a drift ending, not a new one).
UPWARD_STREAMS = frozenset({"statistic"})


def _make(kind: str, stream: str, cfg: WindowDetectorConfig) -> StreamDetector:
    if kind == "page_hinkley":
        return StreamDetector(
            "page_hinkley",
            min_instances=cfg.min_windows,
            threshold=cfg.page_hinkley_threshold,
            delta=cfg.page_hinkley_delta,
            mode="up" if stream in UPWARD_STREAMS else "both",
        )
    if kind == "adwin":
        # One value per window: check at every value, not every 32 (river's default clock).
        return StreamDetector("adwin", delta=cfg.adwin_delta, clock=1, grace_period=cfg.min_windows)
    return StreamDetector("kswin", alpha=0.0001, window_size=100, stat_size=30, seed=1)


class _Route(NamedTuple):
    """One detector as :meth:`WindowDetectors.feed` feeds it."""

    key: str
    stream: str
    detector: StreamDetector
    #: Only a rise counts (an upward stream, see :data:`UPWARD_STREAMS`) and the detector may
    #: fire on a fall too (not Page-Hinkley, which watches rises only there): a firing's
    #: direction is read from the detector's levels.
    rises: bool


class WindowDetectors:
    """Detectors per (stream, kind) for one feature, fed once per closed window.

    Examples
    --------
    >>> import numpy as np
    >>> wd = WindowDetectors(WindowDetectorConfig(kinds=("page_hinkley",)), ["statistic"])
    >>> rng = np.random.default_rng(0)
    >>> stable = [wd.feed({"statistic": float(z)}) for z in rng.normal(0, 1, 200)]
    >>> any(stable)
    False
    >>> ramp = [wd.feed({"statistic": 0.1 * i}) for i in range(60)]
    >>> any(ramp), wd.detections["statistic/page_hinkley"]
    (True, 1)
    """

    def __init__(self, cfg: WindowDetectorConfig, streams: list[str]) -> None:
        self.cfg = cfg
        self.detectors: dict[str, StreamDetector] = {
            f"{s}/{k}": _make(k, s, cfg) for s in streams for k in cfg.kinds
        }
        self.detections: dict[str, int] = {k: 0 for k in self.detectors}
        self.windows = 0
        #: Window index of the last firing of any detector.
        self.last_firing: int | None = None
        #: :attr:`detectors` as :meth:`feed` walks them (see :meth:`_routes`).
        self._routed: tuple[dict[str, StreamDetector], list[_Route]] | None = None

    def _routes(self) -> list[_Route]:
        """Each detector with its key, its stream and whether only its rises count (an
        upward stream's detector other than Page-Hinkley), worked out again only when
        :attr:`detectors` is replaced (a restore), not at every window."""
        routed = self._routed
        if routed is not None and routed[0] is self.detectors:
            return routed[1]
        routes = []
        for key, det in self.detectors.items():
            stream = key.partition("/")[0]
            rises = stream in UPWARD_STREAMS and det.kind != "page_hinkley"
            routes.append(_Route(key, stream, det, rises))
        self._routed = (self.detectors, routes)
        return routes

    def feed(self, values: dict[str, float]) -> bool:
        """Feed one window's value of each stream; True if a detector fired on a rise (or, for
        two-sided streams, on any change)."""
        fired = False
        get = values.get
        for key, stream, det, rises in self._routes():
            v = get(stream)
            if v is None or not det.update_one(v):
                continue
            if rises:
                # Page-Hinkley on an upward stream only detects rises. For ADWIN, compare the
                # detecting value with the stream before it: a change detected during the
                # warm-up has post-change values on both sides, so a smoothed "after" level
                # would lag below the "before" mean and read a jump as a fall.
                before = det.mean_before_last_detection
                if not (before is None or v > before):
                    continue  # an upward stream fell: no drift
            self.detections[key] += 1
            fired = True
        self.windows += 1
        if fired:
            self.last_firing = self.windows
        return fired

    @property
    def active(self) -> bool:
        """A firing happened within ``clear_after_windows`` windows."""
        return (
            self.last_firing is not None
            and self.windows - self.last_firing < self.cfg.clear_after_windows
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "detectors": {k: d.snapshot() for k, d in self.detectors.items()},
            "detections": dict(self.detections),
            "windows": self.windows,
            "last_firing": self.last_firing,
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], cfg: WindowDetectorConfig) -> WindowDetectors:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported window-detector snapshot version {d.get('v')!r}")
        wd = cls(cfg, [])
        wd.detectors = {k: StreamDetector.from_snapshot(v) for k, v in d["detectors"].items()}
        wd.detections = {k: int(v) for k, v in d["detections"].items()}
        wd.windows = int(d["windows"])
        wd.last_firing = d["last_firing"]
        return wd
