"""Segments of a model: routing events to per-segment monitors, and fairness between them.

With ``segments.keys`` (and ``by_version``), every event also feeds one monitor per
``key=value`` it carries (``model_version=...`` for versions): a full model monitor of its own
with the model's reference, created when the value is first seen. At most
``segments.max_values`` values per key get a monitor; later values share ``key=(other)``, and
the events sent there are counted (``refused``). When a segment's performance window closes its
fairness ratios (positive-prediction, true-positive and false-positive rates against the whole
model, or against the key's ``fairness_reference`` segment) are judged against
``segments.min_ratio``.

The segment monitors are made by the owning model monitor (``new_monitor``), so this module
does not import the model monitor that imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, Protocol, TypeVar

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import SegmentsConfig
from stream_monitor.events.schema import PredictionEvent
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.monitor.performance import PerformanceMonitor

__all__ = ["OTHER_SEGMENT", "SegmentMonitor", "Segments"]

#: The value shared by a segment key's values beyond ``segments.max_values``.
OTHER_SEGMENT = "(other)"


class SegmentMonitor(Protocol):
    """What the segments need of a (segment's) model monitor."""

    @property
    def performance(self) -> PerformanceMonitor | None: ...

    def update(self, events: Sequence[PredictionEvent]) -> list[Observation]: ...

    def update_errors(
        self, pairs: Sequence[tuple[PendingPrediction, Any]], observed_at: float
    ) -> list[Observation]: ...

    def snapshot(self) -> dict[str, Any]: ...


M = TypeVar("M", bound=SegmentMonitor)


class Segments(Mapping[str, M], Generic[M]):
    """The segment monitors of one model, by ``key=value`` (a read-only mapping)."""

    def __init__(
        self,
        cfg: SegmentsConfig,
        new_monitor: Callable[[str], M],
        monitors: dict[str, M] | None = None,
    ) -> None:
        self.cfg = cfg
        self._new = new_monitor
        self._monitors: dict[str, M] = monitors if monitors is not None else {}
        #: Per key: distinct values given a monitor, and events sent to ``key=(other)``.
        self.values_per_key: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        #: Per segment: fairness ratios of its last performance window (see SegmentsConfig).
        self.fairness: dict[str, dict[str, float]] = {}

    def __getitem__(self, sid: str) -> M:
        return self._monitors[sid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._monitors)

    def __len__(self) -> int:
        return len(self._monitors)

    def route(self, events: Sequence[PredictionEvent]) -> list[tuple[str, ...]]:
        """The ``key=value`` segments of each event, creating segment monitors as needed (at
        most ``max_values`` per key; later values share ``key=(other)``, counted)."""
        seg = self.cfg
        keys = seg.all_keys
        monitors = self._monitors
        out: list[tuple[str, ...]] = []
        for e in events:
            ids: list[str] = []
            for k in keys:
                v = e.model_version if k == "model_version" else (e.segments or {}).get(k)
                if v is None:
                    continue
                sid = f"{k}={v}"
                if sid not in monitors:
                    if self.values_per_key.get(k, 0) >= seg.max_values:
                        self.refused[k] = self.refused.get(k, 0) + 1
                        sid = f"{k}={OTHER_SEGMENT}"
                    else:
                        self.values_per_key[k] = self.values_per_key.get(k, 0) + 1
                    if sid not in monitors:
                        monitors[sid] = self._new(sid)
                ids.append(sid)
            out.append(tuple(ids))
        return out

    def update(
        self, events: Sequence[PredictionEvent], routes: Sequence[tuple[str, ...]]
    ) -> list[Observation]:
        """Feed each segment monitor its events (``routes``: :meth:`route` of ``events``)."""
        groups: dict[str, list[PredictionEvent]] = {}
        for e, sids in zip(events, routes, strict=True):
            for sid in sids:
                groups.setdefault(sid, []).append(e)
        out: list[Observation] = []
        for sid, sub in groups.items():
            out.extend(replace(o, segment=sid) for o in self._monitors[sid].update(sub))
        return out

    def update_errors(
        self,
        pairs: Sequence[tuple[PendingPrediction, Any]],
        observed_at: float,
        whole: PerformanceMonitor | None,
        *,
        model_id: str,
        version: str | None,
    ) -> list[Observation]:
        """Feed joined pairs to the segments their predictions were routed to, and judge the
        fairness of each segment whose performance window closed (``whole``: the whole
        model's performance, the default reference)."""
        groups: dict[str, list[tuple[PendingPrediction, Any]]] = {}
        for pair in pairs:
            for sid in pair[0].segments or ():
                if sid in self._monitors:
                    groups.setdefault(sid, []).append(pair)
        out: list[Observation] = []
        for sid, sub in groups.items():
            child = self._monitors[sid]
            before = child.performance.windows if child.performance is not None else 0
            out.extend(replace(o, segment=sid) for o in child.update_errors(sub, observed_at))
            after = child.performance.windows if child.performance is not None else 0
            if after > before:
                out.extend(self._judge_fairness(sid, observed_at, whole, model_id, version))
        return out

    def _judge_fairness(
        self,
        sid: str,
        observed_at: float,
        whole: PerformanceMonitor | None,
        model_id: str,
        version: str | None,
    ) -> list[Observation]:
        """Ratios of a segment's positive-prediction and true-positive rates to the reference
        (the whole model, or the configured reference segment of the same key)."""
        seg = self.cfg
        child = self._monitors[sid].performance
        key = sid.split("=", 1)[0]
        ref_value = seg.fairness_reference.get(key)
        if ref_value:
            ref_monitor = self._monitors.get(f"{key}={ref_value}")
            reference = None if ref_monitor is None else ref_monitor.performance
        else:
            reference = whole
        if child is None or reference is None:
            return []
        mine, ref = child.last_fairness, reference.last_fairness
        ratios = {
            name: mine[rate] / ref[rate]
            for name, rate in (("disparate_impact", "positive_rate"), ("tpr_ratio", "tpr"))
            if rate in mine and ref.get(rate)
        }
        fpr_ref = ref.get("fpr")
        if "fpr" in mine and fpr_ref:
            ratios["fpr_ratio"] = mine["fpr"] / fpr_ref
        self.fairness[sid] = {**{f"segment_{k}": v for k, v in mine.items()}, **ratios}
        lo = seg.min_ratio
        return [
            Observation(
                model_id=model_id,
                kind="performance",
                feature=None,
                signal=name,
                value=ratios[name],
                threshold=lo,
                breached=ratios[name] < lo,
                cleared=ratios[name] >= (1 + lo) / 2,
                observed_at=observed_at,
                model_version=version,
                segment=sid,
            )
            for name in ("disparate_impact", "tpr_ratio")
            if name in ratios
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
            "monitors": {sid: m.snapshot() for sid, m in self._monitors.items()},
            "counts": [self.values_per_key, self.refused],
            "fairness": self.fairness,
        }

    @classmethod
    def from_snapshot(
        cls,
        d: Mapping[str, Any],
        cfg: SegmentsConfig,
        new_monitor: Callable[[str], M],
        monitor_from_snapshot: Callable[[dict[str, Any]], M],
    ) -> Segments[M]:
        s = cls(
            cfg,
            new_monitor,
            {sid: monitor_from_snapshot(m) for sid, m in d["monitors"].items()},
        )
        s.values_per_key, s.refused = (dict(x) for x in d["counts"])
        s.fairness = {sid: dict(v) for sid, v in d["fairness"].items()}
        return s
