"""``run --processes N`` supervision, with stand-in members instead of monitors (no broker)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_monitor import cli

#: A member that says "ready" once its handler is in place, runs until SIGTERM, then records
#: it and exits 0.
UNTIL_SIGTERM = (
    "import signal, sys, time\n"
    "def stop(*_):\n"
    "    open(sys.argv[1], 'w').write('stopped')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "open(sys.argv[1], 'w').write('ready')\n"
    "time.sleep(60)\n"
    "sys.exit(5)\n"
)

#: A member that fails (exit 3) once the member writing the file sys.argv[1] is ready.
FAIL_WHEN_READY = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.05)\n"
    "sys.exit(3)\n"
)


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _members(monkeypatch: pytest.MonkeyPatch, scripts: dict[str, list[str]]) -> list[int]:
    """Replace each member's command line by ``python -c <script> <args>``; record ports."""
    ports: list[int] = []

    def argv(_args: argparse.Namespace, instance_id: str, port: int) -> list[str]:
        ports.append(port)
        script, *rest = scripts[instance_id]
        return [sys.executable, "-c", script, *rest]

    monkeypatch.setattr(cli, "_member_argv", argv)
    return ports


def test_a_failed_member_stops_the_others_and_the_exit_status_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped"
    ports = _members(
        monkeypatch,
        {"h-0": [UNTIL_SIGTERM, str(marker)], "h-1": [FAIL_WHEN_READY, str(marker)]},
    )
    assert cli._run_members(argparse.Namespace(processes=2), "h", 9200) == 1
    assert marker.read_text() == "stopped"
    assert ports == [9200, 9201]


def test_sigterm_is_forwarded_and_a_clean_stop_exits_0(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    markers = [tmp_path / "0", tmp_path / "1"]
    ports = _members(
        monkeypatch, {f"h-{i}": [UNTIL_SIGTERM, str(m)] for i, m in enumerate(markers)}
    )

    def sigterm_when_ready() -> None:
        deadline = time.monotonic() + 30
        while not all(m.exists() for m in markers) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # to the parent only

    threading.Thread(target=sigterm_when_ready, daemon=True).start()
    assert cli._run_members(argparse.Namespace(processes=2), "h", 0) == 0
    assert [m.read_text() for m in markers] == ["stopped", "stopped"]
    assert ports == [0, 0]  # base port 0: each member on an ephemeral port


def test_processes_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--processes", "0"])
