"""``stream-monitor run --processes N``: N members of one consumer group on one host.

The parent process runs no monitor of its own: it starts the members, forwards SIGTERM and
waits. Each member has its own instance id (so its own transactional id under exactly-once: two
members sharing one would fence each other) and its own metrics port, base + i.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream_monitor.kafka.clients import ensure_input_topics
from stream_monitor.simulate import TrafficGenerator

from .kafka_utils import produce_all, scrape, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-test-secret-0123456789"
PARTITIONS = 4
MEMBERS = 2


def _free_ports(n: int) -> int:
    """A base port such that base .. base + n - 1 are free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n - 1 > 65535:
            continue
        socks = []
        try:
            for p in range(base + 1, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def _sample(port: int, name: str) -> float:
    """Sum of a metric's samples on one member's /metrics (-1 while it does not answer)."""
    try:
        m = scrape(port)
    except OSError:
        return -1.0
    return sum(v for (n, _), v in m.items() if n == name)


def test_two_processes_share_the_partitions_and_consume_everything(
    kafka_bootstrap, topic_names, tmp_path
):
    t = topic_names
    ensure_input_topics(
        kafka_bootstrap, partitions=PARTITIONS, predictions=t["predictions"], labels=t["labels"]
    )
    base = _free_ports(MEMBERS)
    config = tmp_path / "monitor.toml"
    config.write_text(
        "\n".join(
            [
                f'bootstrap_servers = "{kafka_bootstrap}"',
                f'group_id = "{t["group"]}"',
                'metrics_host = "127.0.0.1"',
                f"metrics_port = {base}",
                'instance_id = "host"',
                'processing_guarantee = "exactly_once"',
                "[topics]",
                *(f'{k} = "{t[k]}"' for k in ("predictions", "labels", "alerts", "dead_letter")),
                "[checkpoint]",
                "interval_seconds = 1.0",
                f'hmac_key = "{SECRET}"',
            ]
        )
        + "\n"
    )
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "stream_monitor", "run", "--config", str(config)]
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*cmd, "--processes", str(MEMBERS)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    ports = [base + i for i in range(MEMBERS)]
    assigned = "stream_monitor_assigned_partitions"
    consumed = "stream_monitor_events_consumed_total"
    try:
        # Both members joined and split the partitions of both topics between them.
        wait_until(
            lambda: [_sample(p, assigned) for p in ports] == [PARTITIONS] * MEMBERS,
            120,
            "each member to hold half of the 2 x 4 input partitions",
        )
        # Eight models keyed by model_id, so every partition gets events.
        gen = TrafficGenerator(
            seed=5,
            models=tuple(f"model-{i}" for i in range(8)),
            prediction_topic=t["predictions"],
            label_topic=t["labels"],
        )
        total = produce_all(kafka_bootstrap, ((r.topic, r.key, r.value) for r in gen.events(4000)))
        wait_until(
            lambda: sum(_sample(p, consumed) for p in ports) == total,
            120,
            f"the members to consume all {total} events",
        )
        per_member = [_sample(p, consumed) for p in ports]
        assert all(n > 0 for n in per_member), per_member
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(90)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    for i in range(MEMBERS):
        assert f"instance=host-{i}" in text
        assert f"member {i} exited with 0" in text
    # The parent waited for its members: nothing answers on their ports any more.
    assert [_sample(p, consumed) for p in ports] == [-1.0] * MEMBERS
