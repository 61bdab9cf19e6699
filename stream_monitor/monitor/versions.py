"""Prediction drift between model versions on the same window (``segments.by_version``).

The whole-model :class:`~stream_monitor.monitor.model.ModelMonitor` keeps, per model version, a
ring of pane histograms of its outputs (``prediction.score``, ``prediction.label``): the same
ring slots as its own panes (the model's :class:`~stream_monitor.stats.windows.PaneClock`) and
the same bins as its output feature monitors. When a window closes, every version's window is
compared with the baseline version's window of the *same* period: with time windows both cover
exactly the same event-time window; with count windows a window is the model's ``size``
predictions, all versions together.

The statistic is the PSI of the candidate's window against the baseline's. Its threshold is
calibrated under the null "both versions' outputs come from one distribution": a two-sample
parametric bootstrap (:func:`~stream_monitor.stats.calibrate.calibrate`) from the two windows'
pooled counts, at the baseline's and the candidate's sizes, at ``drift.thresholds``'s
false-alarm rate, and floored by ``min_effect["psi"]`` (``fixed["psi"]`` in fixed mode). The
pooled counts change every window, so the null is taken on a grid (:func:`null_shape`: pooled
proportions to the nearest 1/200, sizes rounded down by
:func:`~stream_monitor.stats.calibrate.calibration_size`) and shared through
:func:`~stream_monitor.stats.calibrate.cached_calibrate`: stable traffic keeps hitting the same
few calibrations instead of simulating one per output, candidate and window (70 ms each for a
10-bin score at the default 20,000 draws).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import DriftConfig, SegmentsConfig
from stream_monitor.stats.calibrate import batch_statistics, cached_calibrate, calibration_size
from stream_monitor.stats.windows import Closure

__all__ = ["VersionComparison", "VersionResult"]

SNAPSHOT_VERSION = 1
#: The fixed PSI threshold when ``thresholds.fixed`` has none (the ThresholdConfig default).
_FIXED_PSI = 0.25


@dataclass(frozen=True)
class VersionResult:
    """One version's comparison with the baseline in the last closed window, for one output."""

    psi: float
    threshold: float
    baseline: str
    #: The candidate's values of this output in the window.
    events: int


class VersionComparison:
    """Per-version histograms of a model's outputs, compared version against baseline per window.

    ``outputs`` maps each output name to its number of bins (those of the whole model's output
    monitor, whose :attr:`~stream_monitor.monitor.feature.FeatureMonitor.last_bins` feed
    :meth:`ingest`). At most ``segments.max_values`` versions are kept, in order of first
    appearance; events of later versions are counted in :attr:`refused`. Events without a
    version are not compared.

    The baseline is ``segments.baseline_version`` if set. Otherwise it is chosen in the first
    window where a version has ``version_min_events`` events (the one with the most; a tie goes
    to the smaller name) and kept (:attr:`baseline`) while it has that many in each window;
    only then does the version with the most events take over. Picking the majority afresh
    in every window would swap the roles of two versions splitting traffic evenly from one
    window to the next, and blame the unchanged version in every other window.

    Examples
    --------
    >>> from stream_monitor.config import DriftConfig, SegmentsConfig
    >>> vc = VersionComparison(
    ...     {"prediction.label": 3}, 1, DriftConfig(thresholds={"mode": "fixed"}),
    ...     SegmentsConfig(by_version=True, version_min_events=2))
    >>> slots = np.zeros(8, dtype=np.int64)
    >>> bins = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    >>> vc.ingest(["v1"] * 4 + ["v2"] * 4, slots, {"prediction.label": bins})
    >>> [o] = vc.close(Closure(0, (0,), None, (0,), 0, 8, 8), "m", 8.0)
    >>> o.signal, o.model_version, o.segment, round(o.value, 4), o.threshold, o.breached
    ('version_psi', 'v2', 'model_version=v2', 0.2747, 0.25, True)
    >>> vc.last[("prediction.label", "v2")].baseline  # a tie goes to the smaller name
    'v1'
    """

    def __init__(
        self,
        outputs: Mapping[str, int],
        ring_size: int,
        drift: DriftConfig,
        segments: SegmentsConfig,
    ) -> None:
        self.outputs = dict(outputs)
        self.ring_size = ring_size
        self.drift = drift
        self.cfg = segments
        #: Compared versions, in order of first appearance (row ``i`` of every array).
        self.versions: list[str] = []
        self._index: dict[str, int] = {}
        #: Per version and ring slot: events placed (late ones excluded).
        self.events = np.zeros((0, ring_size), dtype=np.int64)
        #: Per output: bin counts per version, ring slot and bin.
        self.counts = {
            name: np.zeros((0, ring_size, nb), dtype=np.int64) for name, nb in outputs.items()
        }
        #: Events of versions beyond ``max_values`` (not compared).
        self.refused = 0
        #: The last closed window's comparisons, by (output, version).
        self.last: dict[tuple[str, str], VersionResult] = {}
        #: The current baseline when none is configured (see above).
        self.baseline: str | None = None

    # --- events -------------------------------------------------------------------------------
    def _register(self, versions: Sequence[str | None]) -> np.ndarray:
        """Row of each event's version (-1: no version, or refused), adding new versions while
        there is room."""
        new, rows, refused = assign_rows(versions, self.versions, self.cfg.max_values)
        r = self.ring_size
        for v in new:
            self._index[v] = len(self.versions)
            self.versions.append(v)
            self.events = np.concatenate([self.events, np.zeros((1, r), dtype=np.int64)])
            for name, nb in self.outputs.items():
                zero = np.zeros((1, r, nb), dtype=np.int64)
                self.counts[name] = np.concatenate([self.counts[name], zero])
        self.refused += refused
        return rows

    def ingest(
        self,
        versions: Sequence[str | None],
        slots: np.ndarray,
        bins: Mapping[str, np.ndarray | None],
    ) -> None:
        """Count one segment of events: their versions, the ring slots the model's clock gave
        them (-1: late) and, per output, their bin (-1: no usable value)."""
        rows = self._register(versions)
        ok = (rows >= 0) & (slots >= 0)
        if not ok.any():
            return
        v, s = rows[ok], slots[ok]
        n_v, r = len(self.versions), self.ring_size
        self.events += np.bincount(v * r + s, minlength=n_v * r).reshape(n_v, r)
        for name, nb in self.outputs.items():
            b = bins.get(name)
            if b is None:
                continue
            b = b[ok]
            use = b >= 0
            flat = (v[use] * r + s[use]) * nb + b[use]
            self.counts[name] += np.bincount(flat, minlength=n_v * r * nb).reshape(n_v, r, nb)

    # --- windows ------------------------------------------------------------------------------
    def _baseline(self, events: np.ndarray) -> int | None:
        """Row of the baseline version in a window with ``events`` per version, if it has
        enough events: the configured one, else the current one, else the one with the most
        (ties: smaller name), which becomes the current one."""
        need = self.cfg.version_min_events
        fixed = self.cfg.baseline_version
        current = fixed if fixed is not None else self.baseline
        j = None if current is None else self._index.get(current)
        if j is not None and events[j] >= need:
            return j
        if fixed is not None or events.max(initial=0) < need:
            return None
        j = min(range(len(events)), key=lambda i: (-int(events[i]), self.versions[i]))
        self.baseline = self.versions[j]
        return j

    def close(self, closure: Closure, model_id: str, observed_at: float) -> list[Observation]:
        """Compare every version with the baseline in the window ``closure`` describes, then
        release the panes it frees."""
        out: list[Observation] = []
        if closure.window_slots and self.versions:
            slots = list(closure.window_slots)
            base = self._baseline(self.events[:, slots].sum(axis=1))
            self.last = {}
            if base is not None:
                for name in self.outputs:
                    win = self.counts[name][:, slots, :].sum(axis=1)
                    out.extend(self._compare(name, win, base, model_id, observed_at))
        for s in closure.release_slots:
            self.events[:, s] = 0
            for c in self.counts.values():
                c[:, s] = 0
        return out

    def _compare(
        self, name: str, win: np.ndarray, base: int, model_id: str, observed_at: float
    ) -> list[Observation]:
        need = self.cfg.version_min_events
        n = win.sum(axis=1)
        if n[base] < need:
            return []
        cands = [j for j in range(len(win)) if j != base and n[j] >= need]
        if not cands:
            return []
        th = self.drift.thresholds
        ref = win[base]
        values = batch_statistics(ref, win[cands], ("psi",))["psi"]
        baseline = self.versions[base]
        out: list[Observation] = []
        for j, value in zip(cands, values.tolist(), strict=True):
            if th.mode == "fixed":
                thr = th.fixed.get("psi", _FIXED_PSI)
            else:
                # Null: both versions' outputs come from one distribution, estimated pooled.
                shape, n_ref, n_win = null_shape(ref + win[j], int(n[base]), int(n[j]))
                cal = cached_calibrate(
                    shape, n_ref, n_win, th.false_alarm_rate, ("psi",), draws=th.draws()
                )
                thr = max(cal["psi"].threshold, th.min_effect.get("psi", 0.0))
            version = self.versions[j]
            self.last[(name, version)] = VersionResult(value, thr, baseline, int(n[j]))
            out.append(
                Observation(
                    model_id=model_id,
                    kind="prediction_drift",
                    feature=name,
                    signal="version_psi",
                    value=value,
                    threshold=thr,
                    breached=value > thr,
                    cleared=value <= thr * th.resolve_ratio,
                    observed_at=observed_at,
                    window_events=int(n[j]),
                    model_version=version,
                    segment=f"model_version={version}",
                )
            )
        return out

    # --- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "outputs": dict(self.outputs),
            "ring_size": self.ring_size,
            "versions": list(self.versions),
            "events": self.events.tolist(),
            "counts": {name: c.tolist() for name, c in self.counts.items()},
            "refused": self.refused,
            "baseline": self.baseline,
            "last": [
                [name, v, r.psi, r.threshold, r.baseline, r.events]
                for (name, v), r in self.last.items()
            ],
        }

    @classmethod
    def from_snapshot(
        cls, d: dict[str, Any], drift: DriftConfig, segments: SegmentsConfig
    ) -> VersionComparison:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported version-comparison snapshot version {d.get('v')!r}")
        outputs = {str(k): int(nb) for k, nb in d["outputs"].items()}
        r = int(d["ring_size"])
        vc = cls(outputs, r, drift, segments)
        vc.versions = [str(v) for v in d["versions"]]
        vc._index = {v: i for i, v in enumerate(vc.versions)}
        vc.events = np.asarray(d["events"], dtype=np.int64).reshape(-1, r)
        vc.counts = {
            name: np.asarray(d["counts"][name], dtype=np.int64).reshape(-1, r, nb)
            for name, nb in outputs.items()
        }
        vc.refused = int(d["refused"])
        vc.baseline = d["baseline"]
        vc.last = {
            (name, v): VersionResult(float(psi), float(thr), str(base), int(n))
            for name, v, psi, thr, base, n in d["last"]
        }
        return vc


#: Resolution of the pooled proportions a version comparison's null is calibrated on.
NULL_GRID = 200


def null_shape(pooled: np.ndarray, n_base: int, n_cand: int) -> tuple[np.ndarray, int, int]:
    """The calibration inputs of a comparison: pooled proportions on a grid of ``1 / 200`` (a
    bin with any count keeps at least one step, so it can still be simulated), and both sizes
    rounded down (:func:`~stream_monitor.stats.calibrate.calibration_size`).

    >>> shape, nb, nc = null_shape(np.array([333, 333, 334, 0]), 1000, 1030)
    >>> shape.tolist(), nb, nc
    ([67.0, 67.0, 67.0, 0.0], 939, 1024)
    """
    p = pooled / pooled.sum()
    shape = np.rint(p * NULL_GRID)
    shape[(pooled > 0) & (shape == 0)] = 1.0
    return shape, calibration_size(n_base), calibration_size(n_cand)


def assign_rows(
    versions: Sequence[str | None], known: Sequence[str], cap: int
) -> tuple[list[str], np.ndarray, int]:
    """Versions to add to ``known`` (in order of first appearance, while there are fewer than
    ``cap``), the row of each event's version (-1: none, or refused), and the events refused.

    >>> new, rows, refused = assign_rows(["a", None, "b", "c", "a"], ["a"], cap=2)
    >>> new, rows.tolist(), refused
    (['b'], [0, -1, 1, -1, 0], 1)
    """
    index = {v: j for j, v in enumerate(known)}
    new: list[str] = []
    for v in dict.fromkeys(versions):
        if v is None or v in index or len(index) >= cap:
            continue
        index[v] = len(index)
        new.append(v)
    rows = np.fromiter(
        (-1 if v is None else index.get(v, -1) for v in versions),
        dtype=np.int64,
        count=len(versions),
    )
    refused = int(np.count_nonzero(rows < 0)) - sum(v is None for v in versions)
    return new, rows, refused
