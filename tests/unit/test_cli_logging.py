"""``--log-format json``: one JSON object per line with the record's fields and exceptions."""

from __future__ import annotations

import io
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from stream_monitor import cli
from stream_monitor.app import _BurstLog
from stream_monitor.logs import MAX_FIELD_CHARS, configure_logging


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_extra_fields_and_exceptions(root_handlers: None) -> None:
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    log = logging.getLogger("stream_monitor.test")
    log.debug("not at INFO")
    log.info(
        "lag of %s",
        "fraud",
        extra={"topic": "predictions", "partition": 3, "model": "fraud", "obj": object()},
    )
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("processing failed", extra={"partition": 1})
    log.warning("x" * (MAX_FIELD_CHARS + 10))
    first, second, third = _lines(buf)
    assert first["level"] == "INFO" and first["logger"] == "stream_monitor.test"
    assert first["message"] == "lag of fraud"
    assert (first["topic"], first["partition"], first["model"]) == ("predictions", 3, "fraud")
    assert str(first["obj"]).startswith("<object object")  # not JSON: its repr
    assert str(first["timestamp"]).endswith("Z") and "T" in str(first["timestamp"])
    exc = second["exception"]
    assert isinstance(exc, dict)
    assert exc["type"] == "ValueError" and exc["message"] == "bad\nvalue"
    assert "Traceback" in exc["traceback"] and "raise ValueError" in exc["traceback"]
    assert second["partition"] == 1 and second["level"] == "ERROR"
    assert len(str(third["message"])) < MAX_FIELD_CHARS + 100  # bounded


def test_text_stays_the_default(root_handlers: None) -> None:
    args = cli.parse_args(["run"])
    assert args.log_format == "text"
    buf = io.StringIO()
    configure_logging(args.log_level, args.log_format, stream=buf)
    logging.getLogger("stream_monitor.test").warning("plain %d", 1, extra={"topic": "t"})
    line = buf.getvalue().strip()
    assert line.endswith("WARNING stream_monitor.test plain 1")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)


def test_the_rate_limited_log_passes_its_fields(root_handlers: None) -> None:
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    now = [0.0]
    burst = _BurstLog(10.0, lambda: now[0])
    for _ in range(3):
        burst("dead letter reason=%s", "empty", extra={"reason": "empty", "partition": 2})
    now[0] = 11.0
    burst("dead letter reason=%s", "empty", extra={"reason": "empty", "partition": 2})
    first, second = _lines(buf)  # two of the three were suppressed
    assert first["reason"] == "empty" and first["partition"] == 2 and first["suppressed"] == 0
    assert second["suppressed"] == 2
    assert second["message"] == "dead letter reason=empty (and 2 more since the last report)"


def test_run_logs_json_lines_with_the_option_after_the_command() -> None:
    """The whole program, no broker (a closed port): every line our loggers write is JSON.
    (librdkafka's own lines, starting with ``%``, bypass Python logging.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_monitor", "run", "--bootstrap-servers",
         f"127.0.0.1:{closed}", "--metrics-port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen: list[dict[str, object]] = []
        for line in proc.stderr:
            if line.startswith("%"):
                continue
            seen.append(orjson.loads(line))
            if "waiting for the broker" in str(seen[-1]["message"]):
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen += [orjson.loads(x) for x in rest.splitlines() if x and not x.startswith("%")]
    assert proc.returncode == 0
    assert {"timestamp", "level", "logger", "message"} <= set(seen[0])
    messages = [(r["logger"], r["message"]) for r in seen]
    assert any(
        m.startswith("metrics on http://") for lg, m in messages if lg == "stream_monitor.app"
    )
    assert ("stream_monitor.cli", "signal SIGTERM received, stopping") in messages
    assert messages[-1] == ("stream_monitor.app", "stopped")
