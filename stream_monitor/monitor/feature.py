"""Per-feature monitors: the reference, the current window and the change detectors.

A feature monitor goes through two phases. While its model's reference is being collected it
buffers values (at most ``reference_size``). Then the reference is frozen into fixed bins
(quantile edges for numbers, top-K categories plus "other" for strings) and every later window
is binned the same way, so a window costs one ``searchsorted`` and one ``bincount``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import DriftConfig
from stream_monitor.events.schema import AlertKind
from stream_monitor.stats import (
    BoundedCounter,
    CategoricalHistogram,
    Debouncer,
    NumericHistogram,
    StreamDetector,
    bin_counts,
    hellinger,
    jensen_shannon,
    ks_binned,
    psi,
    quantile_edges,
    top_categories,
    wasserstein_scaled,
)

__all__ = ["CategoricalFeature", "FeatureMonitor", "NumericFeature", "feature_from_snapshot"]

SNAPSHOT_VERSION = 1


class FeatureMonitor:
    """Shared behaviour of numeric and categorical feature monitors."""

    type_name = ""

    def __init__(self, name: str, kind: AlertKind, cfg: DriftConfig) -> None:
        self.name = name
        self.kind = kind
        self.cfg = cfg
        self.frozen = False
        self.ref_missing = 0
        self.ref_n = 0  # events seen during the reference, missing included
        self.win_missing = 0
        self.win_n = 0
        self.type_errors = 0
        self.psi: float | None = None
        #: Every statistic of the last closed window against the reference, by name.
        self.scores: dict[str, float] = {}
        self.missing_ratio: float | None = None
        self.windows_closed = 0
        #: Row of the last fed column at which change detectors agreed (numeric only).
        self.agreement_row: int | None = None

    # --- phases -------------------------------------------------------------------------------
    def observe_reference(self, column: list[Any]) -> None:
        raise NotImplementedError

    def observe_window(self, column: list[Any]) -> None:
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def close_window(
        self, model_id: str, observed_at: float, model_version: str | None
    ) -> list[Observation]:
        """Compare the window with the reference and start a new window."""
        hist = self._window_hist()
        ref_counts = self._ref_counts()
        obs: list[Observation] = []
        n_win = self.win_n
        if hist is not None and ref_counts is not None and hist.total > 0 and ref_counts.sum():
            self.psi = psi(ref_counts, hist.counts)
            self.scores = {"psi": self.psi, **self._extra_scores(ref_counts, hist.counts)}
            obs.append(
                Observation(
                    model_id=model_id,
                    kind=self.kind,
                    feature=self.name,
                    signal="psi",
                    value=self.psi,
                    threshold=self.cfg.psi_threshold,
                    breached=self.psi > self.cfg.psi_threshold,
                    cleared=self.psi < self.cfg.psi_resolve_threshold,
                    observed_at=observed_at,
                    window_events=n_win,
                    model_version=model_version,
                )
            )
        if n_win:
            ref_ratio = self.ref_missing / self.ref_n if self.ref_n else 0.0
            self.missing_ratio = self.win_missing / n_win
            limit = ref_ratio + self.cfg.missing_increase_threshold
            obs.append(
                Observation(
                    model_id=model_id,
                    kind="data_quality",
                    feature=self.name,
                    signal="missing_ratio",
                    value=self.missing_ratio,
                    threshold=limit,
                    breached=self.missing_ratio > limit,
                    cleared=self.missing_ratio
                    <= ref_ratio + self.cfg.missing_increase_threshold / 2,
                    observed_at=observed_at,
                    window_events=n_win,
                    model_version=model_version,
                )
            )
        if hist is not None:
            hist.reset()
        self.win_missing = 0
        self.win_n = 0
        self.windows_closed += 1
        return obs

    def detector_observation(
        self, model_id: str, observed_at: float, model_version: str | None
    ) -> Observation | None:
        return None

    def _extra_scores(self, ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
        """Statistics exported beside PSI (alerts still follow PSI; see the config)."""
        return {"jensen_shannon": jensen_shannon(ref, cur), "hellinger": hellinger(ref, cur)}

    def _window_hist(self) -> NumericHistogram | CategoricalHistogram | None:
        raise NotImplementedError

    def _ref_counts(self) -> np.ndarray | None:
        raise NotImplementedError

    # --- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "type": self.type_name,
            "name": self.name,
            "kind": self.kind,
            "frozen": self.frozen,
            "ref_missing": self.ref_missing,
            "ref_n": self.ref_n,
            "win_missing": self.win_missing,
            "win_n": self.win_n,
            "type_errors": self.type_errors,
            "psi": self.psi,
            "scores": dict(self.scores),
            "missing_ratio": self.missing_ratio,
            "windows_closed": self.windows_closed,
        }

    def _restore_common(self, d: dict[str, Any]) -> None:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported feature snapshot version {d.get('v')!r}")
        self.scores = dict(d.get("scores", {}))
        for k in (
            "frozen",
            "ref_missing",
            "ref_n",
            "win_missing",
            "win_n",
            "type_errors",
            "psi",
            "missing_ratio",
            "windows_closed",
        ):
            setattr(self, k, d[k])


def _numeric_column(column: list[Any]) -> tuple[np.ndarray, int, int]:
    """Floats with NaN for missing; also the count of missing and of wrongly typed values."""
    out = np.full(len(column), np.nan)
    missing = 0
    bad = 0
    for i, v in enumerate(column):
        t = type(v)
        if t is float or t is int:
            out[i] = v
        elif v is None:
            missing += 1
        else:
            bad += 1
    # NaN or inf sent as numbers count as missing too.
    nonfinite = int(np.count_nonzero(~np.isfinite(out))) - missing - bad
    if nonfinite:
        out[~np.isfinite(out)] = np.nan
        missing += nonfinite
    return out, missing, bad


PIT_POINTS = 101
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
    lo = np.searchsorted(grid, values, side="left")
    hi = np.searchsorted(grid, values, side="right")
    u = (lo + hi) / (2.0 * n)
    return (u - 0.5) / _UNIFORM_STD


class NumericFeature(FeatureMonitor):
    """A numeric feature: quantile bins from the reference, and ADWIN and Page-Hinkley on its
    values after the probability integral transform against the reference (see
    :func:`pit_standardise`), from the moment the reference is frozen."""

    type_name = "numeric"

    def __init__(self, name: str, kind: AlertKind, cfg: DriftConfig) -> None:
        super().__init__(name, kind, cfg)
        self._ref_values = np.empty(cfg.reference_size)
        self._ref_len = 0
        self.edges: np.ndarray | None = None
        self.ref_counts: np.ndarray | None = None
        #: Reference quantiles for the probability integral transform fed to the detectors.
        self.pit_grid: np.ndarray | None = None
        self.win_hist: NumericHistogram | None = None
        det = cfg.detectors
        self.detectors: dict[str, StreamDetector] = {}
        self.debouncers: dict[str, Debouncer] = {}
        if det.enabled:
            self.detectors = {
                "adwin": StreamDetector("adwin", delta=det.adwin_delta),
                "page_hinkley": StreamDetector(
                    "page_hinkley",
                    threshold=det.page_hinkley_threshold,
                    delta=det.page_hinkley_delta,
                ),
            }
            self.debouncers = {k: Debouncer(det.cooldown_events) for k in self.detectors}
        #: Position (values seen) of each detector's last accepted firing.
        self.last_firing: dict[str, int] = {}
        self.detections: dict[str, int] = {k: 0 for k in self.detectors}
        self.raw_firings: dict[str, int] = {k: 0 for k in self.detectors}
        self.n_values = 0

    def _feed(self, column: list[Any]) -> tuple[np.ndarray, int]:
        values, missing, bad = _numeric_column(column)
        self.type_errors += bad
        mask = ~np.isnan(values)
        present = values[mask]
        self.agreement_row = None
        if self.pit_grid is not None and self.detectors:
            at = self._detect(pit_standardise(present, self.pit_grid))
            if at is not None:
                self.agreement_row = int(np.flatnonzero(mask)[at])
        return present, missing + bad

    def _detect(self, z: np.ndarray) -> int | None:
        """Feed the detectors; return the index into ``z`` of the value at which
        ``min_agreeing`` detectors first agreed (fired within ``agreement_events`` values of
        each other), if that happened in this chunk. Judged per value, so the answer does not
        depend on how the stream was cut into batches."""
        start = self.n_values
        accepted: dict[str, list[int]] = {}
        for name, det in self.detectors.items():
            for pos in det.update_many(z):
                self.raw_firings[name] += 1
                if self.debouncers[name].offer(start + pos):
                    self.detections[name] += 1
                    accepted.setdefault(name, []).append(start + pos)
        self.n_values += len(z)
        agreed_at: int | None = None
        if accepted:
            horizon = self.cfg.detectors.agreement_events
            need = self.cfg.detectors.min_agreeing
            for p in sorted(at for ats in accepted.values() for at in ats):
                agreeing = 0
                for name in self.detectors:
                    recent = [a for a in accepted.get(name, []) if p - horizon <= a <= p]
                    before = self.last_firing.get(name)
                    if recent or (before is not None and p - horizon <= before):
                        agreeing += 1
                if agreeing >= need:
                    agreed_at = p - start
                    break
            for name, ats in accepted.items():
                self.last_firing[name] = ats[-1]
        return agreed_at

    def observe_reference(self, column: list[Any]) -> None:
        present, missing = self._feed(column)
        self.ref_n += len(column)
        self.ref_missing += missing
        room = len(self._ref_values) - self._ref_len
        take = present[:room]
        self._ref_values[self._ref_len : self._ref_len + len(take)] = take
        self._ref_len += len(take)

    def freeze(self) -> None:
        ref = self._ref_values[: self._ref_len]
        self.edges = quantile_edges(ref, self.cfg.n_bins)
        self.ref_counts = bin_counts(ref, self.edges)
        if len(ref):
            self.pit_grid = np.quantile(ref, np.linspace(0.0, 1.0, PIT_POINTS))
        self.win_hist = NumericHistogram(self.edges)
        self._ref_values = np.empty(0)  # the histogram is the reference from now on
        self._ref_len = 0
        self.frozen = True

    def observe_window(self, column: list[Any]) -> None:
        present, missing = self._feed(column)
        self.win_n += len(column)
        self.win_missing += missing
        assert self.win_hist is not None
        self.win_hist.update(present)

    def _window_hist(self) -> NumericHistogram | None:
        return self.win_hist

    def _ref_counts(self) -> np.ndarray | None:
        return self.ref_counts

    def _extra_scores(self, ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
        out = super()._extra_scores(ref, cur)
        out["ks"] = ks_binned(ref, cur)
        grid = self.pit_grid
        edges = self.edges
        if grid is not None and edges is not None and len(edges):
            # One point per bin: interior midpoints, the reference min and max for the open ends.
            inner = (edges[:-1] + edges[1:]) / 2 if len(edges) > 1 else np.empty(0)
            points = np.concatenate([[grid[0]], inner, [grid[-1]]])
            iqr = float(grid[75] - grid[25])
            spread = iqr if iqr > 0 else float(grid[-1] - grid[0])
            if spread > 0 and np.all(np.diff(points) >= 0):
                out["wasserstein"] = wasserstein_scaled(ref, cur, points, spread)
        return out

    def agreeing_detectors(self) -> int:
        """How many detectors fired within ``agreement_events`` values of the latest value."""
        horizon = self.cfg.detectors.agreement_events
        return sum(1 for at in self.last_firing.values() if self.n_values - at <= horizon)

    def detector_observation(
        self, model_id: str, observed_at: float, model_version: str | None
    ) -> Observation | None:
        """The detectors' verdict after the last chunk: breached at the row where they came to
        agree (the caller stamps it with that row's event time), else cleared once none of them
        has fired within ``agreement_events`` values."""
        if not self.detectors:
            return None
        need = self.cfg.detectors.min_agreeing
        agreed = self.agreement_row is not None
        level = need if agreed else self.agreeing_detectors()
        return Observation(
            model_id=model_id,
            kind=self.kind,
            feature=self.name,
            signal="change_detectors",
            value=float(level),
            threshold=float(need),
            breached=agreed,
            cleared=not agreed and level == 0,
            observed_at=observed_at,
            model_version=model_version,
        )

    def snapshot(self) -> dict[str, Any]:
        d = super().snapshot()
        d.update(
            ref_values=self._ref_values[: self._ref_len].tolist(),
            edges=None if self.edges is None else self.edges.tolist(),
            pit_grid=None if self.pit_grid is None else self.pit_grid.tolist(),
            ref_counts=None if self.ref_counts is None else self.ref_counts.tolist(),
            win_hist=None if self.win_hist is None else self.win_hist.snapshot(),
            detectors={k: v.snapshot() for k, v in self.detectors.items()},
            debouncers={k: v.snapshot() for k, v in self.debouncers.items()},
            last_firing=dict(self.last_firing),
            detections=dict(self.detections),
            raw_firings=dict(self.raw_firings),
            n_values=self.n_values,
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
        f.ref_counts = _counts(d["ref_counts"])
        f.win_hist = (
            None if d["win_hist"] is None else NumericHistogram.from_snapshot(d["win_hist"])
        )
        f.detectors = {k: StreamDetector.from_snapshot(v) for k, v in d["detectors"].items()}
        f.debouncers = {k: Debouncer.from_snapshot(v) for k, v in d["debouncers"].items()}
        f.last_firing = {k: int(v) for k, v in d["last_firing"].items()}
        f.detections = {k: int(v) for k, v in d["detections"].items()}
        f.raw_firings = {k: int(v) for k, v in d["raw_firings"].items()}
        f.n_values = int(d["n_values"])
        return f


def _categorical_column(column: list[Any]) -> tuple[list[str], int, int]:
    out: list[str] = []
    missing = 0
    bad = 0
    for v in column:
        t = type(v)
        if t is str:
            out.append(v)
        elif t is bool:
            out.append("true" if v else "false")
        elif v is None:
            missing += 1
        else:
            bad += 1
    return out, missing, bad


class CategoricalFeature(FeatureMonitor):
    """A categorical feature: top-K reference categories plus an "other" bucket."""

    type_name = "categorical"

    def __init__(self, name: str, kind: AlertKind, cfg: DriftConfig) -> None:
        super().__init__(name, kind, cfg)
        self._ref_counter = BoundedCounter(capacity=max(4 * cfg.top_k_categories, 64))
        self.categories: list[str] | None = None
        self.ref_counts: np.ndarray | None = None
        self.win_hist: CategoricalHistogram | None = None
        #: Values outside the reference categories, over all windows.
        self.unseen_total = 0

    def _split(self, column: list[Any]) -> tuple[list[str], int]:
        values, missing, bad = _categorical_column(column)
        self.type_errors += bad
        return values, missing + bad

    def observe_reference(self, column: list[Any]) -> None:
        values, missing = self._split(column)
        self.ref_n += len(column)
        self.ref_missing += missing
        self._ref_counter.update(values)

    def freeze(self) -> None:
        counts = self._ref_counter.counts
        self.categories = top_categories(counts, self.cfg.top_k_categories)
        kept = set(self.categories)
        ref_counts = np.zeros(len(self.categories) + 1, dtype=np.int64)
        for i, c in enumerate(self.categories):
            ref_counts[i] = counts[c]
        ref_counts[-1] = sum(n for c, n in counts.items() if c not in kept)
        ref_counts[-1] += self._ref_counter.overflow
        self.ref_counts = ref_counts
        self.win_hist = CategoricalHistogram(self.categories)
        self._ref_counter = BoundedCounter(capacity=1)
        self.frozen = True

    def observe_window(self, column: list[Any]) -> None:
        values, missing = self._split(column)
        self.win_n += len(column)
        self.win_missing += missing
        assert self.win_hist is not None
        before = int(self.win_hist.counts[-1])
        self.win_hist.update(values)
        self.unseen_total += int(self.win_hist.counts[-1]) - before

    def _window_hist(self) -> CategoricalHistogram | None:
        return self.win_hist

    def _ref_counts(self) -> np.ndarray | None:
        return self.ref_counts

    def snapshot(self) -> dict[str, Any]:
        d = super().snapshot()
        d.update(
            ref_counter=self._ref_counter.snapshot(),
            categories=self.categories,
            ref_counts=None if self.ref_counts is None else self.ref_counts.tolist(),
            win_hist=None if self.win_hist is None else self.win_hist.snapshot(),
            unseen_total=self.unseen_total,
        )
        return d

    @classmethod
    def from_snapshot(cls, d: dict[str, Any], cfg: DriftConfig) -> CategoricalFeature:
        f = cls(d["name"], d["kind"], cfg)
        f._restore_common(d)
        f._ref_counter = BoundedCounter.from_snapshot(d["ref_counter"])
        f.categories = d["categories"]
        f.ref_counts = _counts(d["ref_counts"])
        f.win_hist = (
            None if d["win_hist"] is None else CategoricalHistogram.from_snapshot(d["win_hist"])
        )
        f.unseen_total = int(d["unseen_total"])
        return f


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
