"""The replay's pipeline state: partition states, counters and outputs (no I/O of its own).

:class:`Replay` decodes records as the Application does, feeds batches through
``PartitionState.process`` and collects the alert events; its observations go to a
:class:`~stream_monitor.backtest.series.SeriesRecorder` and its incidents to an
:class:`~stream_monitor.backtest.series.IncidentLog`. :mod:`stream_monitor.backtest.sources`
decodes records through it and :mod:`stream_monitor.backtest.pipeline` drives it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from stream_monitor.backtest.dead_letters import DeadLetterLog
from stream_monitor.backtest.series import DEFAULT_SERIES_CAP, IncidentLog, SeriesRecorder
from stream_monitor.config import MonitorConfig
from stream_monitor.events.decode import (
    DeadLetter,
    decode_labels,
    decode_predictions,
    decode_record,
    deserializer_for,
)
from stream_monitor.events.live import AnyLabel, AnyPrediction, Label
from stream_monitor.events.schema import AlertEvent, LabelEvent, PredictionEvent
from stream_monitor.kafka.records import RawRecord
from stream_monitor.monitor.partition import PartitionState
from stream_monitor.reference import load_profiles

__all__ = ["Kind", "Replay"]

log = logging.getLogger(__name__)

Kind = Literal["prediction", "label"]


class Replay:
    """Partition states, counters and outputs of one replay (no I/O of its own).

    ``process`` is ``Application.process_batch`` without Kafka: per partition number, the
    batch's predictions then its labels go through ``PartitionState.process``.
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        *,
        profiles: Mapping[Any, Any] | None = None,
        series_cap: int = DEFAULT_SERIES_CAP,
        on_alert: Callable[[AlertEvent], None] | None = None,
        dead_letters: DeadLetterLog | None = None,
    ) -> None:
        self.cfg = cfg
        #: The invalid records: their details (and, given a sink, the records themselves).
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterLog()
        #: Reference profiles, read as ``Application`` reads them (ConfigError).
        self.profiles = load_profiles(cfg.references) if profiles is None else profiles
        #: The input format, as ``Application`` chooses it (ConfigError).
        self.deserializer = deserializer_for(cfg.input_format)
        self.states: dict[int, PartitionState] = {}
        self.recorder = SeriesRecorder(series_cap)
        self.incidents = IncidentLog()
        self.alerts: list[AlertEvent] = []
        self.on_alert = on_alert
        self.predictions = 0
        self.labels = 0
        #: Records that did not decode, by (kind, reason).
        self.invalid: Counter[tuple[str, str]] = Counter()
        self.first_event_at = math.inf
        self.last_event_at = -math.inf

    @property
    def events(self) -> int:
        return self.predictions + self.labels + sum(self.invalid.values())

    def state(self, partition: int) -> PartitionState:
        st = self.states.get(partition)
        if st is None:
            st = self.states[partition] = PartitionState(partition, self.cfg, self.profiles)
            st.observer = self.recorder
        return st

    def decode(self, rec: RawRecord | Any, kind: Kind) -> PredictionEvent | LabelEvent | None:
        """Decode one record like the Application; count it; None when invalid."""
        max_bytes = self.cfg.limits.max_event_bytes
        ev = decode_record(rec, kind=kind, max_bytes=max_bytes, deserializer=self.deserializer)
        if isinstance(ev, DeadLetter):
            self.invalid[(kind, ev.reason)] += 1
            self.dead_letters.add(kind, ev)
            return None
        if kind == "prediction":
            self.predictions += 1
        else:
            self.labels += 1
        t = ev.timestamp
        if t < self.first_event_at:
            self.first_event_at = t
        if t > self.last_event_at:
            self.last_event_at = t
        return ev

    def decode_many(
        self, records: Sequence[RawRecord | Any], kind: Kind
    ) -> list[AnyPrediction | AnyLabel | None]:
        """:meth:`decode` for several records of one kind, counted once for all of them."""
        max_bytes = self.cfg.limits.max_event_bytes
        fmt = self.deserializer
        # As the Application decodes them: msgspec's Predictions and Labels, not pydantic
        # objects, the predictions' features as FeatureRows where they have the usual names.
        out: list[Any] = (
            decode_predictions(records, max_bytes=max_bytes, deserializer=fmt)
            if kind == "prediction"
            else decode_labels(records, max_bytes=max_bytes, deserializer=fmt)
        )
        invalid = self.invalid
        times: list[float] = []
        for i, ev in enumerate(out):
            if isinstance(ev, DeadLetter):
                invalid[(kind, ev.reason)] += 1
                self.dead_letters.add(kind, ev)
                out[i] = None
            else:
                times.append(ev.timestamp)
        if kind == "prediction":
            self.predictions += len(times)
        else:
            self.labels += len(times)
        if times:
            self.first_event_at = min(self.first_event_at, min(times))
            self.last_event_at = max(self.last_event_at, max(times))
        return out

    def process(
        self,
        predictions: Mapping[int, Sequence[AnyPrediction]],
        labels: Mapping[int, Sequence[AnyLabel]],
    ) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        for part in sorted(predictions.keys() | labels.keys()):
            state = self.state(part)
            alerts = state.process(predictions.get(part, ()), labels.get(part, ()))
            for failure in state.take_failures():
                log.warning(
                    "processing failed partition=%d records=%d error=%s: counted as invalid",
                    part,
                    len(failure.events),
                    f"{type(failure.error).__name__}: {failure.error}",
                )
                for e in failure.events:
                    kind = "label" if isinstance(e, LabelEvent | Label) else "prediction"
                    self.invalid[(kind, "processing_error")] += 1
                    self.dead_letters.add_processing_error(kind, e, failure.error)
                    # counted once as invalid, no longer as a monitored event
                    if kind == "prediction":
                        self.predictions -= 1
                    else:
                        self.labels -= 1
            self.incidents.feed(self.recorder.take_batch(), alerts)
            out.extend(alerts)
        self.alerts.extend(out)
        if self.on_alert is not None:
            for a in out:
                self.on_alert(a)
        return out

    @property
    def events_refused(self) -> int:
        """Predictions of models over ``limits.max_models_per_partition``, not monitored."""
        return sum(st.events_refused for st in self.states.values())
