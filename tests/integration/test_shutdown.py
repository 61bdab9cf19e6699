"""SIGTERM stops ``stream-monitor run`` promptly in every state: while the broker is
unreachable (every Kafka call then blocks for its whole timeout) and while it runs against the
real broker (the final checkpoint still commits the offsets).

No duration is asserted (timings belong in load_tests): the tests check that the process
exits cleanly, with its shutdown logged, before a hang guard of 60 s, and that the final
checkpoint committed; the measured time is printed (``pytest -s``). Measured on this project's
machine: 0.09-0.35 s with the broker unreachable (27.6 s before the admin calls moved off the
main thread), 0.86-1.40 s against the real broker."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.simulate import TrafficGenerator

from .kafka_utils import committed_offsets, end_offsets, produce_all, scrape, wait_until

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int, path: str) -> int:
    try:
        return int(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return -1


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_monitor", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[float, str]:
    """SIGTERM, then the seconds until the process exited and its output."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return time.monotonic() - started, out


def test_sigterm_while_the_broker_is_unreachable(tmp_path: Path) -> None:
    closed, port = _free_port(), _free_port()  # nothing listens on `closed`
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'bootstrap_servers = "127.0.0.1:{closed}"\n'
        'metrics_host = "127.0.0.1"\n'
        f"metrics_port = {port}\n"
    )
    proc = _start(cfg)
    try:
        wait_until(lambda: _status(port, "/healthz") == 200, 30, "/healthz")
        # Inside the wait for the broker: its first attempt failed, the next ones are running.
        assert proc.stdout is not None
        for line in proc.stdout:
            if "waiting for the broker" in line:
                break
        assert _status(port, "/readyz") == 503
        time.sleep(1.0)  # well into the next attempt's Kafka calls
    except BaseException:
        proc.kill()
        raise
    took, out = _stop(proc)
    print(f"\nSIGTERM -> exit with the broker unreachable: {took:.2f} s")
    assert proc.returncode == 0, out
    assert "SIGTERM received" in out and "stopped" in out
    assert "did not finish within" not in out, out[-3000:]  # the shutdown's own budget


def test_sigterm_against_the_real_broker_commits_and_exits(
    kafka_bootstrap: str, topic_names: dict[str, str], tmp_path: Path
) -> None:
    t = topic_names
    port = _free_port()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics([NewTopic(t[k], 2, 1) for k in ("predictions", "labels")])
    for f in futures.values():
        f.result(30)
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'bootstrap_servers = "{kafka_bootstrap}"\n'
        f'group_id = "{t["group"]}"\n'
        'metrics_host = "127.0.0.1"\n'
        f"metrics_port = {port}\n"
        "[topics]\n"
        + "".join(f'{k} = "{t[k]}"\n' for k in ("predictions", "labels", "alerts", "dead_letter"))
    )
    proc = _start(cfg)
    try:
        wait_until(lambda: _status(port, "/readyz") == 200, 60, "/readyz")
        gen = TrafficGenerator(seed=3, prediction_topic=t["predictions"], label_topic=t["labels"])
        n = produce_all(kafka_bootstrap, ((r.topic, r.key, r.value) for r in gen.events(1000)))

        def consumed() -> float:
            return sum(
                v
                for (name, _), v in scrape(port).items()
                if name == "stream_monitor_events_consumed_total"
            )

        wait_until(lambda: consumed() == n, 60, f"{n} records consumed")
        assert _status(port, "/healthz") == 200  # the loop is cycling
    except BaseException:
        proc.kill()
        raise
    took, out = _stop(proc)
    print(f"\nSIGTERM -> exit against the real broker: {took:.2f} s")
    assert proc.returncode == 0, out
    assert "did not finish within" not in out, out[-3000:]  # the shutdown's own budget
    # the final checkpoint ran within the shutdown: every record's offset is committed
    for topic in (t["predictions"], t["labels"]):
        assert committed_offsets(kafka_bootstrap, t["group"], topic, 2) == end_offsets(
            kafka_bootstrap, topic, 2
        )
