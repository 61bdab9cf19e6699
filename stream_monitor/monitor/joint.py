"""Joint (multivariate) drift of a model's numeric features: the MMD test in PIT space.

Each numeric feature with a PIT grid is mapped through its reference CDF (the feature monitor
keeps its chunk's PIT values in ``last_u``), so the test compares the dependence between the
features as well as their marginals (:class:`~stream_monitor.stats.multivariate.MMDDrift`).
Without a profile, the reference sample is the raw rows of the model's reference period,
collected here (bounded by ``drift.multivariate.reference_sample``) until the reference freezes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import MultivariateConfig
from stream_monitor.monitor.feature import FeatureMonitor, NumericFeature, pit_standardise
from stream_monitor.stats.multivariate import MIN_ROWS, MMDDrift, MMDResult

__all__ = ["JOINT", "JointDrift"]

#: The ``feature`` of multivariate (joint) drift signals.
JOINT = "(joint)"
_UNIFORM_STD = math.sqrt(1.0 / 12.0)


class JointDrift:
    """The MMD test over a model's numeric features, from the reference rows to each window."""

    def __init__(self, cfg: MultivariateConfig) -> None:
        self.cfg = cfg
        self.mmd: MMDDrift | None = None
        #: The features tested, in column order.
        self.features: list[str] = []
        self.last: MMDResult | None = None
        #: Raw numeric rows of the reference period, for the reference sample (until frozen).
        self.reference_rows: list[dict[str, Any]] = []

    def collect(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Keep reference-period rows (their features), up to ``reference_sample``."""
        room = self.cfg.reference_sample - len(self.reference_rows)
        self.reference_rows.extend(dict(r) for r in rows[: max(room, 0)])

    def start(
        self,
        monitors: Mapping[str, FeatureMonitor],
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Start the test on the numeric features with a PIT grid, from ``rows`` (the
        collected reference rows by default); needs 2 features and ``MIN_ROWS`` rows."""
        rows = self.reference_rows if rows is None else rows
        self.reference_rows = []
        names = [
            n
            for n, f in monitors.items()
            if isinstance(f, NumericFeature) and f.pit_grid is not None
        ][: self.cfg.max_features]
        if len(names) < 2 or len(rows) < MIN_ROWS:
            return
        u = np.column_stack([_pit_u(monitors[n], [r.get(n) for r in rows]) for n in names])
        self.features = names
        self.mmd = MMDDrift(
            u,
            window_sample=self.cfg.window_sample,
            permutations=self.cfg.permutations,
            max_reference=self.cfg.reference_sample,
            seed=0,
        )

    def feed(self, monitors: Mapping[str, FeatureMonitor], slots: np.ndarray) -> None:
        """Add the chunk the feature monitors just ingested (their ``last_u``) to the window."""
        if self.mmd is None:
            return
        cols = []
        for n in self.features:
            f = monitors[n]
            assert isinstance(f, NumericFeature)
            if f.last_u is None:
                return
            cols.append(f.last_u)
        rows = np.column_stack(cols)[slots >= 0]
        if len(rows):
            self.mmd.update(rows)

    def judge(
        self, *, model_id: str, observed_at: float, window_events: int, version: str | None
    ) -> Observation | None:
        """Test the window that just closed (None: not started, or too few rows). Judged as
        ``1 - p`` so that a larger value is worse, like every other signal."""
        if self.mmd is None:
            return None
        res = self.mmd.close_window()
        if res is None:
            return None
        self.last = res
        alpha = self.cfg.p_value
        value = 1.0 - res.p_value
        return Observation(
            model_id=model_id,
            kind="data_drift",
            feature=JOINT,
            signal="mmd",
            value=value,
            threshold=1.0 - alpha,
            breached=value > 1.0 - alpha,
            cleared=value <= 0.9,
            observed_at=observed_at,
            window_events=window_events,
            model_version=version,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "mmd": None if self.mmd is None else self.mmd.snapshot(),
            "features": self.features,
            "reference_rows": self.reference_rows,
        }

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any], cfg: MultivariateConfig) -> JointDrift:
        j = cls(cfg)
        j.mmd = None if d["mmd"] is None else MMDDrift.from_snapshot(d["mmd"])
        j.features = list(d["features"])
        j.reference_rows = list(d["reference_rows"])
        return j


def _pit_u(f: FeatureMonitor, raw: list[Any]) -> np.ndarray:
    """A numeric feature's raw values in PIT space (NaN where missing or not a number)."""
    assert isinstance(f, NumericFeature) and f.pit_grid is not None
    v = np.array([x if type(x) in (int, float) else np.nan for x in raw], dtype=float)
    out = np.full(len(v), np.nan)
    ok = np.isfinite(v)
    out[ok] = pit_standardise(v[ok], f.pit_grid) * _UNIFORM_STD + 0.5
    return out
