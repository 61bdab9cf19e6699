"""The replay's invalid records: ``dead_letters.jsonl`` and what to do about each reason.

The live monitor sends a record that it cannot use to the dead-letter topic with its reason
and original bytes; a replay writes the same to ``<out>/dead_letters.jsonl``, one JSON object
per line: ``kind`` (prediction or label), ``reason``, ``detail``, ``topic``, ``partition``,
``offset`` (a file replay's offset is the line's index in its file), and the original value as
``value`` (UTF-8 text) or ``value_base64`` (bytes that are not UTF-8). A record whose
processing raised (``processing_error``) was decoded first: its line holds the ``event`` as
decoded instead of the original bytes.

:func:`hint` says in one line what usually causes a reason (milliseconds for seconds, the
labels file given as predictions, ...); the summary prints it beside the reason's most common
detail.

Examples
--------
>>> hint("validation_error", "timestamp: Value error, timestamp must be Unix seconds "
...      "(did you send milliseconds?)")
'timestamps look like milliseconds: send Unix seconds (or an RFC 3339 string)'
>>> hint("key_mismatch", "record key b'a' differs from model_id 'b'")
'the record key must be the model_id (docs/wire-contract.md)'
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import IO, Any

import msgspec
import orjson

from stream_monitor.events.decode import DeadLetter

__all__ = ["FILE_NAME", "MAX_DETAILS", "DeadLetterLog", "hint"]

#: The dead letters' file in the output folder.
FILE_NAME = "dead_letters.jsonl"
#: Distinct details remembered per kind and reason (the rest are counted as other details).
MAX_DETAILS = 20

#: (reason, pieces the detail must contain, pieces it must not, the hint): the first match wins.
_HINTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        "validation_error",
        ("milliseconds",),
        (),
        "timestamps look like milliseconds: send Unix seconds (or an RFC 3339 string)",
    ),
    (
        "validation_error",
        ("features: Field required", "prediction: Field required"),
        ("event_id: Field required", "timestamp: Field required"),
        "no 'features' nor 'prediction': is this a labels file given as --predictions? "
        "(docs/wire-contract.md)",
    ),
    (
        "validation_error",
        ("label: Field required",),
        ("event_id: Field required", "timestamp: Field required"),
        "no 'label': is this a predictions file given as --labels? (docs/wire-contract.md)",
    ),
    (
        "validation_error",
        (),
        (),
        "the record does not follow the wire contract: see its detail and docs/wire-contract.md",
    ),
    (
        "decode_error",
        (),
        (),
        "not one JSON object per line: check the input_format, the file's encoding (UTF-8) and "
        "that each line is one whole record value",
    ),
    ("empty", (), (), "empty lines or tombstones: nothing to monitor in them"),
    (
        "oversized",
        (),
        (),
        "larger than limits.max_event_bytes: raise the limit if such records are expected",
    ),
    ("key_mismatch", (), (), "the record key must be the model_id (docs/wire-contract.md)"),
    (
        "processing_error",
        (),
        (),
        "the monitor failed on a valid record: a bug, please report it with the detail",
    ),
)


def hint(reason: str, detail: str) -> str | None:
    """What usually causes ``reason`` with this ``detail``, in one line (None: no idea)."""
    for r, must, must_not, text in _HINTS:
        if (
            r == reason
            and all(p in detail for p in must)
            and not any(p in detail for p in must_not)
        ):
            return text
    return None


class DeadLetterLog:
    """Writes the replay's invalid records to ``sink`` (JSON Lines; None: counts only) and
    keeps, per (kind, reason), the most common details (at most :data:`MAX_DETAILS` distinct
    ones each)."""

    def __init__(self, sink: IO[bytes] | None = None) -> None:
        self.sink = sink
        self.written = 0
        self.details: dict[tuple[str, str], Counter[str]] = {}

    def _count(self, kind: str, reason: str, detail: str) -> None:
        c = self.details.setdefault((kind, reason), Counter())
        if detail in c or len(c) < MAX_DETAILS:
            c[detail] += 1
        else:
            c["(other details)"] += 1

    def _write(self, line: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink.write(orjson.dumps(line) + b"\n")
            self.written += 1

    def add(self, kind: str, dl: DeadLetter) -> None:
        """A record that did not decode."""
        self._count(kind, dl.reason, dl.detail)
        if self.sink is None:
            return
        line: dict[str, Any] = {
            "kind": kind,
            "reason": dl.reason,
            "detail": dl.detail,
            "topic": dl.topic,
            "partition": dl.partition,
            "offset": dl.offset,
        }
        if dl.key is not None:
            line.update(_bytes_field("key", dl.key))
        line.update(_bytes_field("value", dl.value or b""))
        self._write(line)

    def add_processing_error(self, kind: str, event: Any, error: BaseException) -> None:
        """A decoded record whose processing raised ``error``."""
        detail = f"{type(error).__name__}: {error}"[:1000]
        self._count(kind, "processing_error", detail)
        dump = getattr(event, "model_dump", None)
        if callable(dump):  # a pydantic event
            fields = dump(mode="json")
        elif isinstance(event, msgspec.Struct):  # the live decoder's Prediction or Label
            fields = msgspec.to_builtins(event)
        else:
            fields = repr(event)[:1000]
        self._write({"kind": kind, "reason": "processing_error", "detail": detail, "event": fields})

    def common(self, kind: str, reason: str) -> tuple[str, int] | None:
        """The most common detail of (kind, reason) and its count."""
        c = self.details.get((kind, reason))
        return c.most_common(1)[0] if c else None


def _bytes_field(name: str, data: bytes) -> dict[str, str]:
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}
