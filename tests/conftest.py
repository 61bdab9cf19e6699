"""Test fixtures. Integration tests run against a real Apache Kafka broker.

The broker is the one named by ``KAFKA_BOOTSTRAP_SERVERS`` when set; otherwise this session
starts a single-node KRaft broker with ``deploy/local/kafka.sh`` on a free port and stops it at
the end. A broker that cannot be started is a test failure, never a skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    port = _free_port_pair()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_HOME_DIR": str(tmp_path_factory.mktemp("kafka")),
        "KAFKA_JARS_DIR": str(ROOT / "deploy" / "local" / ".kafka" / "lib"),
    }
    proc = subprocess.run(
        ["bash", str(KAFKA_SH), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(
            f"could not start the Kafka broker (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    bootstrap = proc.stdout.strip().splitlines()[-1]
    try:
        yield bootstrap
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "stop"], env=env, timeout=120)


@pytest.fixture
def topic_names() -> dict[str, str]:
    """Unique topic names, so tests sharing the broker never see each other's records."""
    tag = uuid.uuid4().hex[:10]
    return {
        "predictions": f"predictions-{tag}",
        "labels": f"labels-{tag}",
        "alerts": f"alerts-{tag}",
        "dead_letter": f"dead-letter-{tag}",
        "group": f"stream-monitor-{tag}",
    }
