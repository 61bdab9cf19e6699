"""Log output: plain text lines or one JSON object per line (``--log-format``).

``cli.py`` configures the handlers through :func:`configure_logging`; library code only calls
``logging.getLogger(__name__)`` and passes structured fields with ``extra=``::

    log.warning("dead letter", extra={"topic": "predictions", "partition": 3})

In JSON every field of ``extra`` becomes a key of the object beside ``timestamp``, ``level``,
``logger`` and ``message``; an exception becomes ``exception`` (its type, message and
traceback). Sizes are bounded: the message and the traceback are cut at
:data:`MAX_FIELD_CHARS` characters, a value that is not JSON becomes its ``repr`` (cut too).

Examples
--------
>>> import logging
>>> rec = logging.LogRecord("stream_monitor.app", logging.WARNING, "app.py", 1,
...                         "lag %d", (5,), None)
>>> rec.topic = "predictions"
>>> out = orjson.loads(JsonFormatter().format(rec))
>>> out["level"], out["logger"], out["message"], out["topic"]
('WARNING', 'stream_monitor.app', 'lag 5', 'predictions')
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import traceback
from typing import IO, Any, Literal

import orjson

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_FIELD_CHARS",
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
#: The longest message, traceback or field value written (characters).
MAX_FIELD_CHARS = 16_384
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

#: The attributes every LogRecord has: anything else on a record came from ``extra=``.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def _cut(text: str) -> str:
    if len(text) <= MAX_FIELD_CHARS:
        return text
    return text[:MAX_FIELD_CHARS] + f"... ({len(text) - MAX_FIELD_CHARS} more characters)"


def _jsonable(value: Any) -> Any:
    """``value`` when orjson writes it as is, else its (bounded) ``repr``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _cut(value)
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _cut(repr(value))
    return value if len(text) <= MAX_FIELD_CHARS else _cut(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``timestamp`` (RFC 3339 UTC, milliseconds), ``level``,
    ``logger``, ``message``, the record's ``extra`` fields and, for an exception,
    ``exception`` = ``{"type", "message", "traceback"}``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _cut(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in out:
                out[key] = _jsonable(value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["exception"] = {
                "type": type(exc).__name__,
                "message": _cut(str(exc)),
                "traceback": _cut("".join(traceback.format_exception(*record.exc_info))),
            }
        elif record.exc_text:
            out["exception"] = {"traceback": _cut(record.exc_text)}
        if record.stack_info:
            out["stack"] = _cut(record.stack_info)
        try:
            return orjson.dumps(out).decode()
        except (TypeError, orjson.JSONEncodeError):  # a str key-less oddity: never drop a line
            return orjson.dumps({k: _jsonable(v) for k, v in out.items()}, default=repr).decode()


def configure_logging(level: str, fmt: LogFormat = "text", stream: IO[str] | None = None) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) as text or JSON lines,
    replacing handlers configured before."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
