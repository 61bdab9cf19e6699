"""What monitors return: an observation of one signal, judged against its thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream_monitor.events.schema import AlertKind

__all__ = ["Direction", "Observation"]

#: Which way a signal moves relative to its reference: ``"away"`` from it (drift growing) or
#: ``"back"`` to it (a return, which reads as cleared).
Direction = Literal["away", "back"]


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of one signal for one model (and feature), with the verdict of its rule.

    ``breached`` opens an incident; ``cleared`` (a stricter, separate condition: hysteresis)
    lets it resolve. A value between the two keeps the current state. ``direction`` says,
    where the monitor judged it, whether the signal moves away from its reference or back to
    it (None: not judged); alert summaries say so.
    """

    model_id: str
    kind: AlertKind
    feature: str | None
    signal: str
    value: float
    threshold: float
    breached: bool
    cleared: bool
    observed_at: float
    window_events: int | None = None
    model_version: str | None = None
    #: ``key=value`` of the segment judged (see ``SegmentsConfig``), None for the whole model.
    segment: str | None = None
    #: What the value is compared with when it has a natural baseline (the reference mean of a
    #: feature's ``mean``, a performance metric's baseline): ``relative`` rules need it.
    baseline: float | None = None
    #: Away from the reference or back to it, where the monitor judged it (see above).
    direction: Direction | None = None
