"""Schema drift: events carrying fields that the model's reference does not know.

Per ring slot of the model's :class:`~stream_monitor.stats.windows.PaneClock`: events, and
events with at least one field unknown to the reference (neither monitored nor refused by the
feature cap). A closed window's ``unexpected_field_ratio`` is judged against
``drift.quality.unexpected_field_ratio``; the unknown fields are counted, not monitored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.alerts.observation import Observation
from stream_monitor.events.feature_rows import FeatureRow

__all__ = ["SchemaDrift"]


class SchemaDrift:
    """Unknown fields per pane, and their count.

    >>> s = SchemaDrift(ring=1)
    >>> s.count([{"a": 1}, {"a": 2, "new": 3}], {"a"}, np.array([0, 0]))
    >>> s.unexpected_fields, s.window([0])
    (1, (2, 1))
    """

    def __init__(self, ring: int = 0) -> None:
        #: Per ring slot: events, and events carrying fields unknown to the reference.
        self.panes = np.zeros((ring, 2), dtype=np.int64)
        #: Unknown fields seen, one per field per event.
        self.unexpected_fields = 0

    def count(
        self, features: Iterable[Mapping[str, Any]], known: set[str], slots: np.ndarray
    ) -> None:
        """Count a chunk's events (their ``features``, in order) into the panes of ``slots``."""
        self.add(self.unknown(features, known), slots)

    def unknown(
        self,
        features: Iterable[Mapping[str, Any]],
        known: set[str],
        carried: int | None = None,
    ) -> np.ndarray:
        """Which events (their ``features``, in order) carry fields unknown to the reference;
        counts those fields. :meth:`add` then counts the events into panes. ``carried``, if
        given: every event is known to carry that many distinct fields of ``known``, so only
        the events with more fields than that can carry unknown ones.

        >>> s = SchemaDrift()
        >>> rows = [{"a": 1}, {"a": 2, "b": 3}, {"a": 4, "new": 5}]
        >>> s.unknown(rows, {"a", "b"}), s.unknown(rows, {"a", "b"}, carried=1)
        (array([False, False,  True]), array([False, False,  True]))
        >>> s.unexpected_fields
        2
        """
        features = features if isinstance(features, list | tuple) else list(features)
        n = len(features)
        kinds = set(map(type, features))
        # FeatureRows (events/feature_rows.py): whether a layout has unknown names, once
        rows = {k: bool(k.FIELDS.keys() - known) for k in kinds if issubclass(k, FeatureRow)}
        if rows and len(kinds) == 1:  # every event of one layout
            flags = np.full(n, rows.popitem()[1])
        elif rows:
            flags = np.fromiter(
                (rows[t] if (t := type(f)) in rows else not known.issuperset(f) for f in features),
                dtype=bool,
                count=n,
            )
        elif carried is None:  # one C call per event
            flags = ~np.fromiter(map(known.issuperset, features), dtype=bool, count=n)
        else:  # the size of each event's fields, then a look at those with more
            flags = np.fromiter(map(len, features), dtype=np.intp, count=n) > carried
            more = np.flatnonzero(flags).tolist()
            flags[more] = [not known.issuperset(features[i]) for i in more]
        # the rare events with unknown fields are looked at again
        for i in np.flatnonzero(flags).tolist():
            self.unexpected_fields += len(features[i].keys() - known)
        return flags

    def add(self, unknown: np.ndarray, slots: np.ndarray) -> None:
        """Count events into the panes of ``slots``, and those flagged ``unknown``."""
        ok = slots >= 0
        r = len(self.panes)
        self.panes[:, 0] += np.bincount(slots[ok], minlength=r)
        self.panes[:, 1] += np.bincount(slots[ok & unknown], minlength=r)

    def window(self, window_slots: Sequence[int]) -> tuple[int, int]:
        """Events and events with unknown fields over a window's slots."""
        events, unexpected = self.panes[list(window_slots)].sum(axis=0)
        return int(events), int(unexpected)

    def judge(
        self,
        window_slots: Sequence[int],
        limit: float,
        *,
        model_id: str,
        observed_at: float,
        window_events: int,
        version: str | None,
    ) -> Observation | None:
        """The ``unexpected_field_ratio`` observation of a closed window (None: no events)."""
        events, unexpected = self.window(window_slots)
        if not events:
            return None
        ratio = unexpected / events
        return Observation(
            model_id=model_id,
            kind="data_quality",
            feature=None,
            signal="unexpected_field_ratio",
            value=ratio,
            threshold=limit,
            breached=ratio > limit,
            cleared=ratio <= limit / 2,
            observed_at=observed_at,
            window_events=window_events,
            model_version=version,
        )

    def release(self, slots: Sequence[int]) -> None:
        for s in slots:
            self.panes[s] = 0

    def snapshot(self) -> dict[str, Any]:
        return {"panes": self.panes.tolist(), "unexpected_fields": self.unexpected_fields}

    @classmethod
    def from_snapshot(cls, d: Mapping[str, Any]) -> SchemaDrift:
        s = cls()
        s.panes = np.asarray(d["panes"], dtype=np.int64).reshape(-1, 2)
        s.unexpected_fields = int(d["unexpected_fields"])
        return s
