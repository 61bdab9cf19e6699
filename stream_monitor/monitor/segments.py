"""Segments of a model: routing events to per-segment monitors, and fairness between them.

With ``segments.keys`` (and ``by_version``), every event also feeds one monitor per
``key=value`` it carries (``model_version=...`` for versions): a full model monitor of its own
with the model's reference, created when the value is first seen. At most
``segments.max_values`` values per key get a monitor; later values share ``key=(other)``, and
the events sent there are counted (``refused``). When a segment's performance window closes its
fairness ratios (positive-prediction, true-positive and false-positive rates against the whole
model, or against the key's ``fairness_reference`` segment, each as it was when the pair that
closed the window was added) are judged against ``segments.min_ratio``, stamped with that pair's
event time: the same pairs give the same observations however they are cut into batches.

The segment monitors are made by the owning model monitor (``new_monitor``), so this module
does not import the model monitor that imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.config import SegmentsConfig
from stream_monitor.events.live import AnyPrediction
from stream_monitor.monitor.join import PendingPrediction
from stream_monitor.monitor.performance import PerformanceMonitor, Times

__all__ = ["OTHER_SEGMENT", "SegmentMonitor", "Segments"]

#: The value shared by a segment key's values beyond ``segments.max_values``.
OTHER_SEGMENT = "(other)"


class SegmentMonitor(Protocol):
    """What the segments need of a (segment's) model monitor."""

    @property
    def performance(self) -> PerformanceMonitor | None: ...

    def update(self, events: Sequence[AnyPrediction]) -> list[Observation]: ...

    def update_errors_indexed(
        self, pairs: Sequence[tuple[PendingPrediction, Any]], observed_at: Times
    ) -> list[tuple[int, Observation]]: ...

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

    def route(self, events: Sequence[AnyPrediction]) -> list[tuple[str, ...]]:
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
        self, events: Sequence[AnyPrediction], routes: Sequence[tuple[str, ...]]
    ) -> list[Observation]:
        """Feed each segment monitor its events (``routes``: :meth:`route` of ``events``)."""
        groups: dict[str, list[AnyPrediction]] = {}
        for e, sids in zip(events, routes, strict=True):
            for sid in sids:
                groups.setdefault(sid, []).append(e)
        out: list[Observation] = []
        for sid, sub in groups.items():
            out.extend(replace(o, segment=sid) for o in self._monitors[sid].update(sub))
        return out

    def update_errors_indexed(
        self,
        pairs: Sequence[tuple[PendingPrediction, Any]],
        observed_at: Times,
        whole: PerformanceMonitor | None,
        *,
        model_id: str,
    ) -> list[tuple[int, Observation]]:
        """Feed joined pairs to the segments their predictions were routed to, and judge the
        fairness of each segment at each performance window it closed (``whole``: the whole
        model's performance, already fed these pairs, the default reference).

        Returns each observation with the index (into ``pairs``) of the pair that completed
        its evidence, in the order the pairs fed one at a time would give them: by pair, then
        by segment key, a segment's own observations before its fairness."""
        at = np.broadcast_to(np.asarray(observed_at, dtype=float), (len(pairs),))
        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            for sid in pair[0].segments or ():
                if sid in self._monitors:
                    groups.setdefault(sid, []).append(i)
        rank = {k: r for r, k in enumerate(self.cfg.all_keys)}
        out: list[tuple[int, int, int, Observation]] = []  # (pair, key rank, 0/1, observation)
        # Each segment's fairness log, in the indices of ``pairs``.
        logs: dict[str, tuple[dict[str, float], list[tuple[int, dict[str, float]]]]] = {}
        for sid, idx in groups.items():
            child = self._monitors[sid]
            r = rank.get(sid.split("=", 1)[0], len(rank))
            found = child.update_errors_indexed([pairs[i] for i in idx], at[idx])
            out.extend((idx[j], r, 0, replace(o, segment=sid)) for j, o in found)
            perf = child.performance
            if perf is not None:
                logs[sid] = (perf.fairness_before, [(idx[j], f) for j, f in perf.fairness_log])
        if whole is not None:
            logs[""] = (whole.fairness_before, whole.fairness_log)
        for sid, (_, log) in logs.items():
            if not sid:
                continue
            r = rank.get(sid.split("=", 1)[0], len(rank))
            for i, mine in log:
                version = getattr(pairs[i][0], "model_version", None)
                for o in self._judge_fairness(sid, mine, i, float(at[i]), logs, model_id, version):
                    out.append((i, r, 1, o))
        out.sort(key=lambda t: t[:3])
        return [(i, o) for i, _, _, o in out]

    def _judge_fairness(
        self,
        sid: str,
        mine: dict[str, float],
        index: int,
        observed_at: float,
        logs: Mapping[str, tuple[dict[str, float], list[tuple[int, dict[str, float]]]]],
        model_id: str,
        version: str | None,
    ) -> list[Observation]:
        """Ratios of a segment's positive-prediction and true-positive rates (``mine``: of the
        window the pair ``index`` closed) to the reference's as of that pair (the whole model,
        ``logs[""]``, or the configured reference segment of the same key)."""
        seg = self.cfg
        key = sid.split("=", 1)[0]
        ref_value = seg.fairness_reference.get(key)
        if ref_value:
            ref_sid = f"{key}={ref_value}"
            ref_monitor = self._monitors.get(ref_sid)
            if ref_monitor is None or ref_monitor.performance is None:
                return []
            ref_log = logs.get(ref_sid, (ref_monitor.performance.last_fairness, []))
        elif "" in logs:
            ref_log = logs[""]
        else:
            return []
        ref = _as_of(ref_log, index)
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


def _as_of(
    log: tuple[dict[str, float], list[tuple[int, dict[str, float]]]], index: int
) -> dict[str, float]:
    """The fairness rates of a performance monitor once the pair ``index`` was added: those
    of the last window closed by a pair up to it, else those it had before the batch."""
    out = log[0]
    for i, rates in log[1]:
        if i > index:
            break
        out = rates
    return out
