"""The CLI as a deployment runs it: a subprocess that becomes ready, processes, and stops
cleanly on SIGTERM with its offsets committed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from stream_monitor.kafka.clients import ensure_input_topics
from stream_monitor.simulate import TrafficGenerator

from .kafka_utils import committed_offsets, end_offsets, produce_all, scrape, wait_until

pytestmark = pytest.mark.integration


def _status(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1


def test_run_is_ready_processes_and_stops_on_sigterm(kafka_bootstrap, topic_names, tmp_path):
    t = topic_names
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'bootstrap_servers = "{kafka_bootstrap}"\n'
        f'group_id = "{t["group"]}"\n'
        'metrics_host = "127.0.0.1"\n'
        f"metrics_port = {port}\n"
        "[topics]\n"
        + "".join(f'{k} = "{t[k]}"\n' for k in ("predictions", "labels", "alerts", "dead_letter"))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_monitor", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _status(port, "/healthz") == 200, 30, "/healthz")
        # Not ready while the input topics do not exist.
        assert _status(port, "/readyz") == 503
        ensure_input_topics(
            kafka_bootstrap, partitions=2, predictions=t["predictions"], labels=t["labels"]
        )
        try:
            wait_until(lambda: _status(port, "/readyz") == 200, 60, "/readyz")
        except AssertionError:
            proc.kill()
            print(proc.communicate()[0])
            raise
        gen = TrafficGenerator(seed=5, prediction_topic=t["predictions"], label_topic=t["labels"])
        n = produce_all(kafka_bootstrap, ((r.topic, r.key, r.value) for r in gen.events(2000)))

        def consumed() -> float:
            return sum(
                v
                for (name, _), v in scrape(port).items()
                if name == "stream_monitor_events_consumed_total"
            )

        wait_until(lambda: consumed() == n, 60, f"{n} records consumed")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "SIGTERM received" in out and "stopped" in out
    for topic in (t["predictions"], t["labels"]):
        assert committed_offsets(kafka_bootstrap, t["group"], topic, 2) == end_offsets(
            kafka_bootstrap, topic, 2
        )


def test_refuses_topics_that_are_not_co_partitioned(kafka_bootstrap, topic_names):
    from confluent_kafka.admin import AdminClient, NewTopic

    from stream_monitor.app import Application
    from stream_monitor.errors import ConfigError

    from .kafka_utils import monitor_config

    t = topic_names
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    futures = admin.create_topics([NewTopic(t["predictions"], 3, 1), NewTopic(t["labels"], 2, 1)])
    for f in futures.values():
        f.result(30)
    app = Application(monitor_config(kafka_bootstrap, t), serve_metrics=False)
    with pytest.raises(ConfigError, match="not co-partitioned"):
        app.run()
