"""The prediction/label join: a bounded, TTL-evicted buffer of predictions awaiting labels.

Examples
--------
>>> j = LabelJoin(capacity=2, ttl_seconds=60.0)
>>> j.add_prediction("m", "a", 0.0, label="1", score=0.9)
>>> j.add_prediction("m", "b", 1.0, label="0", score=0.2)
>>> j.add_prediction("m", "c", 2.0, label="1", score=0.7)   # evicts "a": capacity is 2
>>> j.evicted, len(j)
(1, 2)
>>> j.match("m", "b")
PendingPrediction(timestamp=1.0, label='0', score=0.2)
>>> j.match("m", "a") is None, j.unmatched_labels
(True, 1)
>>> j.add_prediction("m", "d", 100.0, label=None, score=1.0)  # "c" is older than 60 s: expires
>>> j.expired, len(j)
(1, 1)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

__all__ = ["EarlyLabels", "LabelJoin", "PendingPrediction"]

SNAPSHOT_VERSION = 1


class PendingPrediction(NamedTuple):
    timestamp: float
    label: str | None
    score: float | None


class LabelJoin:
    """Predictions wait here, keyed by (model_id, event_id), until their label arrives.

    Memory is bounded by ``capacity`` entries: the oldest entry is evicted first and counted in
    ``evicted``. Entries older than ``ttl_seconds`` behind the newest prediction's event time are
    dropped and counted in ``expired`` (a prediction whose label never came). Entries are kept
    in arrival order and expiry looks only at the oldest ones, so each call costs O(1) amortised.
    """

    def __init__(self, capacity: int, ttl_seconds: float) -> None:
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self._pending: OrderedDict[tuple[str, str], PendingPrediction] = OrderedDict()
        self.watermark = float("-inf")
        self.evicted = 0
        self.expired = 0
        self.matched = 0
        self.unmatched_labels = 0
        self.duplicate_predictions = 0

    def __len__(self) -> int:
        return len(self._pending)

    def shed(self, n: int) -> int:
        """Evict the ``n`` oldest waiting predictions (counted in ``evicted``); return how many.

        Used when a snapshot would not fit in one changelog record.
        """
        n = min(n, len(self._pending))
        for _ in range(n):
            self._pending.popitem(last=False)
        self.evicted += n
        return n

    def add_prediction(
        self,
        model_id: str,
        event_id: str,
        timestamp: float,
        *,
        label: str | None,
        score: float | None,
    ) -> None:
        key = (model_id, event_id)
        if key in self._pending:
            self.duplicate_predictions += 1
            del self._pending[key]
        self._pending[key] = PendingPrediction(timestamp, label, score)
        self.watermark = max(self.watermark, timestamp)
        while len(self._pending) > self.capacity:
            self._pending.popitem(last=False)
            self.evicted += 1
        self._expire()

    def _expire(self) -> None:
        horizon = self.watermark - self.ttl_seconds
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.timestamp >= horizon:
                break
            self._pending.popitem(last=False)
            self.expired += 1

    def match(
        self, model_id: str, event_id: str, *, count_unmatched: bool = True
    ) -> PendingPrediction | None:
        """Remove and return the prediction a label refers to, or None (counted unless
        ``count_unmatched`` is false: the caller then parks the label in ``EarlyLabels``)."""
        found = self._pending.pop((model_id, event_id), None)
        if found is None:
            if count_unmatched:
                self.unmatched_labels += 1
        else:
            self.matched += 1
        return found

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "capacity": self.capacity,
            "ttl_seconds": self.ttl_seconds,
            "pending": [
                [m, e, p.timestamp, p.label, p.score] for (m, e), p in self._pending.items()
            ],
            "watermark": self.watermark if self.watermark != float("-inf") else None,
            "counters": [
                self.evicted,
                self.expired,
                self.matched,
                self.unmatched_labels,
                self.duplicate_predictions,
            ],
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any]) -> LabelJoin:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported label-join snapshot version {d.get('v')!r}")
        j = cls(d["capacity"], d["ttl_seconds"])
        for m, e, ts, label, score in d["pending"]:
            j._pending[(m, e)] = PendingPrediction(ts, label, score)
        j.watermark = float("-inf") if d["watermark"] is None else d["watermark"]
        (j.evicted, j.expired, j.matched, j.unmatched_labels, j.duplicate_predictions) = d[
            "counters"
        ]
        return j


class EarlyLabels:
    """Labels that arrived before their prediction wait here, briefly and boundedly.

    Predictions and labels come from two topics read side by side, so a label can be read
    before its prediction even when it was produced after it. Such a label waits up to
    ``grace_seconds`` of label event time (behind the newest label seen) and at most
    ``capacity`` of them wait per partition; the ones that expire or are evicted are counted,
    never silently dropped.

    Examples
    --------
    >>> early = EarlyLabels(capacity=2, grace_seconds=30.0)
    >>> early.add("m", "a", 10.0, 1)
    >>> early.take("m", "a"), early.take("m", "a")
    (1, None)
    >>> early.add("m", "b", 10.0, 0)
    >>> early.add("m", "c", 50.0, 0)   # "b" is 40 s behind the newest label: expires
    >>> early.expired, len(early)
    (1, 1)
    """

    def __init__(self, capacity: int, grace_seconds: float) -> None:
        self.capacity = capacity
        self.grace_seconds = grace_seconds
        self._waiting: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self.watermark = float("-inf")
        self.parked = 0
        self.matched = 0
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, model_id: str, event_id: str, timestamp: float, label: Any) -> None:
        self._waiting[(model_id, event_id)] = (timestamp, label)
        self.parked += 1
        self.watermark = max(self.watermark, timestamp)
        while len(self._waiting) > self.capacity:
            self._waiting.popitem(last=False)
            self.evicted += 1
        horizon = self.watermark - self.grace_seconds
        while self._waiting:
            oldest_ts = next(iter(self._waiting.values()))[0]
            if oldest_ts >= horizon:
                break
            self._waiting.popitem(last=False)
            self.expired += 1

    def take(self, model_id: str, event_id: str) -> Any | None:
        """The waiting label of this prediction (removed), or None."""
        found = self._waiting.pop((model_id, event_id), None)
        if found is None:
            return None
        self.matched += 1
        return found[1]

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "capacity": self.capacity,
            "grace_seconds": self.grace_seconds,
            "waiting": [[m, e, ts, lab] for (m, e), (ts, lab) in self._waiting.items()],
            "watermark": self.watermark if self.watermark != float("-inf") else None,
            "counters": [self.parked, self.matched, self.expired, self.evicted],
        }

    @classmethod
    def from_snapshot(cls, d: dict[str, Any]) -> EarlyLabels:
        if d.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported early-labels snapshot version {d.get('v')!r}")
        e = cls(d["capacity"], d["grace_seconds"])
        for m, ev, ts, lab in d["waiting"]:
            e._waiting[(m, ev)] = (ts, lab)
        e.watermark = float("-inf") if d["watermark"] is None else d["watermark"]
        e.parked, e.matched, e.expired, e.evicted = d["counters"]
        return e
