"""The wire contract: prediction, label and alert events, and the decoder that turns raw Kafka
records into validated events or dead letters (errors travel as data, never as crashes)."""

from __future__ import annotations

from stream_monitor.events.decode import (
    DeadLetter,
    Decoded,
    DecodeReason,
    decode_record,
    decode_records,
)
from stream_monitor.events.schema import AlertEvent, LabelEvent, PredictionEvent

__all__ = [
    "AlertEvent",
    "DeadLetter",
    "DecodeReason",
    "Decoded",
    "LabelEvent",
    "PredictionEvent",
    "decode_record",
    "decode_records",
]
