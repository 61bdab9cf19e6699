"""Configuration from the environment, ``[kafka]`` for every client, secrets that never print,
and librdkafka's log lines through Python logging (stream_monitor/config.py,
stream_monitor/kafka/clients.py)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from stream_monitor import cli
from stream_monitor.config import (
    MonitorConfig,
    config_from_environment,
    load_config,
)
from stream_monitor.errors import ConfigError
from stream_monitor.kafka import clients

SECRET = "s3cr3t-Pa55word-do-not-print"
HMAC = "k" * 40


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- precedence: defaults < file < environment < flags ----------------------------------------
def test_each_source_overrides_the_one_before(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "m.toml",
        'bootstrap_servers = "file:9092"\ngroup_id = "from-file"\n'
        '[topics]\nalerts = "file-alerts"\ndead_letter = "file-dlq"\n'
        "[checkpoint]\ninterval_seconds = 7.0\n",
    )
    defaults = {"bootstrap_servers": "default:9092"}
    assert load_config(None, defaults=defaults).bootstrap_servers == "default:9092"
    cfg = load_config(toml, defaults=defaults)
    assert (cfg.bootstrap_servers, cfg.group_id, cfg.topics.alerts) == (
        "file:9092",
        "from-file",
        "file-alerts",
    )
    env = {
        "STREAM_MONITOR_BOOTSTRAP_SERVERS": "env:9092",
        "STREAM_MONITOR_TOPICS__ALERTS": "env-alerts",
        # any case; a nested table merges key by key with the file's
        "stream_monitor_checkpoint__interval_events": "123",
    }
    cfg = load_config(toml, defaults=defaults, environ=env)
    assert cfg.bootstrap_servers == "env:9092"
    assert cfg.topics.alerts == "env-alerts"
    assert cfg.topics.dead_letter == "file-dlq"  # the file's, untouched by the environment
    assert cfg.checkpoint.interval_events == 123
    assert cfg.checkpoint.interval_seconds == 7.0
    assert cfg.group_id == "from-file"
    cfg = load_config(toml, defaults=defaults, environ=env, bootstrap_servers="flag:9092")
    assert cfg.bootstrap_servers == "flag:9092"
    # A flag left unset (None) does not hide the environment.
    assert load_config(toml, environ=env, group_id=None).group_id == "from-file"


def test_environment_without_prefix_or_unknown_is_ignored() -> None:
    env = {
        "HOME": "/root",
        "KAFKA_BOOTSTRAP_SERVERS": "x:1",
        "STREAM_MONITOR_LOG_LEVEL": "DEBUG",  # a CLI option, not a configuration field
        "STREAM_MONITOR_CHECKPOINT_KEY": "legacy",  # read by `run` itself
        # Kubernetes' service links for a Service named stream-monitor name no field either
        "STREAM_MONITOR_PORT": "tcp://10.0.0.7:9108",
        "STREAM_MONITOR_SERVICE_HOST": "10.0.0.7",
        "STREAM_MONITOR_PORT_9108_TCP_ADDR": "10.0.0.7",
        "STREAM_MONITOR_DRIFT__WINDOW__SIZE": "500",
    }
    assert config_from_environment(env) == {"drift": {"window": {"size": "500"}}}
    assert (
        load_config(None, defaults={"bootstrap_servers": "b:1"}, environ=env).drift.window.size
        == 500
    )


def test_environment_lists_are_json_and_bad_values_are_clear_errors() -> None:
    base = {"bootstrap_servers": "b:1"}
    env = {"STREAM_MONITOR_DRIFT__ALERT_STATISTICS": '["psi", "hellinger"]'}
    assert load_config(None, defaults=base, environ=env).drift.alert_statistics == (
        "psi",
        "hellinger",
    )
    with pytest.raises(ConfigError, match="environment"):
        load_config(None, defaults=base, environ={"STREAM_MONITOR_DRIFT__STATISTICS": "[psi"})
    with pytest.raises(ValidationError):
        load_config(None, defaults=base, environ={"STREAM_MONITOR_METRICS_PORT": "ninety"})


# --- [kafka] ----------------------------------------------------------------------------------
def test_kafka_section_dotted_quoted_and_environment_keys_name_the_same_properties(
    tmp_path: Path,
) -> None:
    toml = write(
        tmp_path / "m.toml",
        'bootstrap_servers = "k:9093"\n[kafka]\nsecurity.protocol = "SASL_SSL"\n'
        '"ssl.ca.location" = "/etc/ca.pem"\nsasl.mechanism = "SCRAM-SHA-512"\n'
        "socket.timeout.ms = 5000\n",
    )
    env = {
        "STREAM_MONITOR_KAFKA__SASL_USERNAME": "monitor",
        "STREAM_MONITOR_KAFKA__SASL_PASSWORD": SECRET,
        "STREAM_MONITOR_KAFKA__SASL__OAUTHBEARER__CLIENT__ID": "cid",
        "STREAM_MONITOR_KAFKA__LOG_LEVEL": "6",
    }
    cfg = load_config(toml, environ=env)
    conf = clients.client_config(cfg)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "monitor"
    assert conf["sasl.password"] == SECRET
    assert conf["sasl.oauthbearer.client.id"] == "cid"
    assert conf["log_level"] == "6"  # librdkafka's one property with an underscore
    assert conf["socket.timeout.ms"] == 5000
    assert "sasl.password" in cfg.kafka.secrets and "sasl.password" not in cfg.kafka.properties


def test_kafka_bootstrap_servers_is_the_top_level_field(tmp_path: Path) -> None:
    env = {"STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS": "env:9093"}
    cfg = load_config(None, defaults={"bootstrap_servers": "default:1"}, environ=env)
    assert cfg.bootstrap_servers == "env:9093"
    assert clients.client_config(cfg)["bootstrap.servers"] == "env:9093"
    flag = load_config(None, environ=env, bootstrap_servers="flag:1")
    assert flag.bootstrap_servers == "flag:1"
    toml = write(tmp_path / "m.toml", '[kafka]\nbootstrap.servers = "file:9093"\n')
    assert load_config(toml).bootstrap_servers == "file:9093"
    both = write(
        tmp_path / "b.toml", 'bootstrap_servers = "a:1"\n[kafka]\n"bootstrap.servers" = "b:1"\n'
    )
    with pytest.raises(ConfigError, match="differ"):
        load_config(both)
    with pytest.raises(ValidationError, match="differ"):
        MonitorConfig.model_validate(
            {"bootstrap_servers": "a:1", "kafka": {"bootstrap.servers": "b:1"}}
        )


@pytest.mark.parametrize(
    "name", ["group.id", "transactional.id", "enable.auto.commit", "isolation.level"]
)
def test_kafka_section_may_not_set_what_the_guarantee_owns(name: str) -> None:
    with pytest.raises(ValidationError, match="set by the monitor"):
        MonitorConfig.model_validate({"bootstrap_servers": "b:1", "kafka": {name: "x"}})


def test_kafka_section_reaches_every_client_and_overrides_apply_on_top() -> None:
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "b:1",
            "kafka": {"security.protocol": "SSL", "fetch.max.bytes": 1234, "linger.ms": 50},
            "consumer_overrides": {"fetch.max.bytes": 999},
            "producer_overrides": {"compression.type": "zstd"},
        }
    )
    consumer, producer = clients.consumer_config(cfg), clients.producer_config(cfg)
    for conf in (consumer, producer, clients.client_config(cfg)):
        assert conf["security.protocol"] == "SSL"
        assert conf["logger"] is clients.LIBRDKAFKA_LOGGER
    assert consumer["fetch.max.bytes"] == 999  # consumer_overrides over [kafka]
    assert producer["linger.ms"] == 50  # [kafka] over the producer's own default (5)
    assert producer["compression.type"] == "zstd"
    assert consumer["isolation.level"] == "read_committed"
    # The command-line tools build theirs the same way.
    assert clients.with_defaults(cfg, {"linger.ms": 20})["linger.ms"] == 50


def test_legacy_security_table_still_applies_and_kafka_wins() -> None:
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "b:1",
            "security": {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "old",
                "sasl_password": SECRET,
            },
            "kafka": {"sasl.mechanism": "SCRAM-SHA-256"},
        }
    )
    conf = clients.consumer_config(cfg)
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert conf["sasl.username"] == "old"
    assert conf["sasl.password"] == SECRET
    assert conf["sasl.mechanism"] == "SCRAM-SHA-256"
    env = {"STREAM_MONITOR_SECURITY__SASL_PASSWORD": "from-env"}
    legacy = load_config(None, defaults={"bootstrap_servers": "b:1"}, environ=env)
    assert legacy.security.sasl_password is not None
    assert legacy.security.sasl_password.get_secret_value() == "from-env"


# --- secrets ----------------------------------------------------------------------------------
def secret_config(tmp_path: Path) -> MonitorConfig:
    toml = write(
        tmp_path / "m.toml",
        'bootstrap_servers = "b:1"\n[kafka]\nsecurity.protocol = "SASL_SSL"\n'
        'sasl.username = "monitor"\n',
    )
    env = {
        "STREAM_MONITOR_KAFKA__SASL_PASSWORD": SECRET,
        "STREAM_MONITOR_KAFKA__SSL_KEY_PASSWORD": SECRET + "-key",
        "STREAM_MONITOR_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET": SECRET + "-oauth",
        "STREAM_MONITOR_CHECKPOINT__HMAC_KEY": HMAC,
    }
    return load_config(toml, environ=env)


def test_secrets_never_print(tmp_path: Path) -> None:
    cfg = secret_config(tmp_path)
    assert set(cfg.kafka.secrets) == {
        "sasl.password",
        "ssl.key.password",
        "sasl.oauthbearer.client.secret",
    }
    for text in (
        repr(cfg),
        str(cfg),
        cfg.model_dump_json(),
        repr(cfg.model_dump()),
        repr(cfg.kafka),
    ):
        assert SECRET not in text
        assert HMAC not in text
    assert "**********" in cfg.model_dump_json()
    # ... yet the clients get them, and a round trip through model_dump keeps them.
    again = MonitorConfig.model_validate(cfg.model_dump())
    assert clients.client_config(again)["sasl.password"] == SECRET
    assert again.checkpoint.hmac_key is not None
    assert again.checkpoint.hmac_key.get_secret_value() == HMAC


def test_validation_errors_do_not_echo_secrets() -> None:
    number = 918273645546372819
    bad = [
        {"security": {"sasl_password": number}},  # a password that is not a string
        {"checkpoint": {"hmac_key": number}},
        {"kafka": {"sasl.password": str(number), "socket.timeout.ms": [1]}},  # another key bad
    ]
    for extra in bad:
        with pytest.raises(ValidationError) as info:
            MonitorConfig.model_validate({"bootstrap_servers": "b:1", **extra})
        assert str(number) not in str(info.value)


def test_config_command_prints_the_merged_configuration_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = write(
        tmp_path / "m.toml",
        'bootstrap_servers = "file:9092"\n[kafka]\nsecurity.protocol = "SASL_SSL"\n',
    )
    monkeypatch.setenv("STREAM_MONITOR_KAFKA__SASL_PASSWORD", SECRET)
    monkeypatch.setenv("STREAM_MONITOR_CHECKPOINT__HMAC_KEY", HMAC)
    monkeypatch.setenv("STREAM_MONITOR_TOPICS__ALERTS", "env-alerts")
    assert cli.main(["config", "--config", str(toml), "--bootstrap-servers", "flag:1"]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err and HMAC not in out + err
    shown = orjson.loads(out)
    assert shown["bootstrap_servers"] == "flag:1"
    assert shown["topics"]["alerts"] == "env-alerts"
    assert shown["kafka"]["properties"] == {"security.protocol": "SASL_SSL"}
    assert shown["kafka"]["secrets"] == {"sasl.password": "**********"}
    assert shown["checkpoint"]["hmac_key"] == "**********"


def test_secrets_from_files_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    write(tmp_path / "secrets" / "kafka", SECRET + "\n")  # a mounted secret ends in a newline
    write(tmp_path / "secrets" / "legacy", "legacy-pw\r\n")
    write(tmp_path / "secrets" / "hmac", HMAC)
    toml = write(
        tmp_path / "m.toml",
        'bootstrap_servers = "b:1"\n[kafka]\nsasl.password.file = "secrets/kafka"\n'
        '[security]\nsasl_password_file = "secrets/legacy"\n'
        '[checkpoint]\nhmac_key_file = "secrets/hmac"\n',
    )
    cfg = load_config(toml)
    assert cfg.kafka.secrets["sasl.password"].get_secret_value() == SECRET
    assert cfg.security.sasl_password is not None
    assert cfg.security.sasl_password.get_secret_value() == "legacy-pw"
    assert cfg.checkpoint.hmac_key is not None
    assert cfg.checkpoint.hmac_key.get_secret_value() == HMAC
    # The environment may name a file too (relative to the working directory) ...
    env = {"STREAM_MONITOR_KAFKA__SSL_KEY_PASSWORD_FILE": str(tmp_path / "secrets" / "legacy")}
    cfg = load_config(toml, environ=env)
    assert cfg.kafka.secrets["ssl.key.password"].get_secret_value() == "legacy-pw"
    # ... and a value from the environment beats the file's file.
    env = {"STREAM_MONITOR_KAFKA__SASL_PASSWORD": "env-pw"}
    assert load_config(toml, environ=env).kafka.secrets["sasl.password"].get_secret_value() == (
        "env-pw"
    )


def test_bad_secret_files_are_clear_errors_without_contents(tmp_path: Path) -> None:
    write(tmp_path / "pw", SECRET)
    cases = {
        'sasl.password.file = "missing"\n': "cannot read",
        f'sasl.password.file = "pw"\n"sasl.password" = "{SECRET}"\n': "not both",
        "sasl.password.file = 3\n": "must be a path",
    }
    for body, why in cases.items():
        toml = write(tmp_path / "m.toml", 'bootstrap_servers = "b:1"\n[kafka]\n' + body)
        with pytest.raises(ConfigError, match=why) as info:
            load_config(toml)
        assert SECRET not in str(info.value)
    (tmp_path / "big").write_bytes(b"x" * (1024 * 1024 + 1))
    toml = write(
        tmp_path / "m.toml", 'bootstrap_servers = "b:1"\n[kafka]\nssl.key.pem.file = "big"\n'
    )
    with pytest.raises(ConfigError, match="larger than"):
        load_config(toml)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    toml = write(
        tmp_path / "m.toml", 'bootstrap_servers = "b:1"\n[kafka]\nssl.key.pem.file = "bin"\n'
    )
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(toml)


def test_kafka_section_is_bounded() -> None:
    many = {f"p{i}.x": "v" for i in range(600)}
    with pytest.raises(ValidationError, match="more than 500"):
        MonitorConfig.model_validate({"bootstrap_servers": "b:1", "kafka": many})
    with pytest.raises(ValidationError):
        MonitorConfig.model_validate({"bootstrap_servers": "b:1", "kafka": {"a.b": [1, 2]}})


# --- topics' replication ----------------------------------------------------------------------
def test_replication_factor_defaults_to_the_brokers() -> None:
    cfg = MonitorConfig(bootstrap_servers="b:1")
    assert cfg.topics.output_replication_factor == -1
    assert cfg.checkpoint.replication_factor == -1
    ok = MonitorConfig.model_validate(
        {"bootstrap_servers": "b:1", "topics": {"output_replication_factor": 3}}
    )
    assert ok.topics.output_replication_factor == 3
    for bad in (0, -2):
        with pytest.raises(ValidationError, match="replication factor"):
            MonitorConfig.model_validate(
                {"bootstrap_servers": "b:1", "checkpoint": {"replication_factor": bad}}
            )


# --- librdkafka's logs ------------------------------------------------------------------------
def test_rate_limit_filter_bounds_the_kinds_it_remembers() -> None:
    now = [0.0]
    f = clients.RateLimitFilter(10.0, clock=lambda: now[0], max_kinds=2)

    def rec(fac: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.WARNING, "", 0, "%s [%s] %s", (fac, "c", "m"), None)

    assert [f.filter(rec(k)) for k in ("A", "B", "C", "A")] == [True, True, False, False]
    assert f.dropped == 2
    now[0] = 11.0
    r = rec("A")
    assert f.filter(r) and r.getMessage().endswith("(and 1 more since the last report)")


def test_client_logs_reach_python_logging_with_secrets_hidden(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer and an admin with an unreachable bootstrap: their librdkafka lines arrive as
    records of ``stream_monitor.kafka.librdkafka``, and no record carries the password."""
    cfg = MonitorConfig.model_validate(
        {
            "bootstrap_servers": "127.0.0.1:1",
            "kafka": {
                "sasl.username": "u",
                "sasl.password": SECRET,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
            },
        }
    )
    caplog.set_level(logging.DEBUG)
    # Not rate-limited here (the process-wide filter may have seen these kinds already).
    monkeypatch.setattr(clients.LIBRDKAFKA_LOGGER, "filters", [])
    admin = clients.make_admin(cfg)
    with pytest.raises(Exception, match=r"127\.0\.0\.1:1"):
        clients.check_input_topics(admin, cfg, timeout=2.5)
    consumer = clients.make_consumer(cfg)
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            r.name == "stream_monitor.kafka.librdkafka" and "rdkafka#consumer" in r.getMessage()
            for r in caplog.records
        ):
            consumer.consume(10, 0.2)
    finally:
        consumer.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "stream_monitor.kafka.librdkafka"]
    assert any("rdkafka#consumer" in m for m in lines)
    assert any("rdkafka#producer" in m for m in lines)  # the admin client's handle
    assert not any(SECRET in r.getMessage() for r in caplog.records)


def test_run_with_unreachable_bootstrap_logs_librdkafka_through_python(tmp_path: Path) -> None:
    """``stream-monitor run`` against a closed port: stderr has no raw librdkafka line
    (``%3|1700000000.123|FAIL|...``), only Python log records, a bounded number of them."""
    env = {
        **os.environ,
        "STREAM_MONITOR_KAFKA__SASL_PASSWORD": SECRET,
        "STREAM_MONITOR_KAFKA__SASL_USERNAME": "u",
        "STREAM_MONITOR_KAFKA__SASL_MECHANISM": "PLAIN",
        "STREAM_MONITOR_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_monitor",
            "run",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Several rounds of the start-up wait (one every 2 s, each a metadata request that fails).
        time.sleep(7)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    raw = [ln for ln in err.splitlines() if re.match(r"^%\d+\|", ln)]
    assert raw == []
    ours = [ln for ln in err.splitlines() if "stream_monitor.kafka.librdkafka" in ln]
    assert ours, err[-3000:]
    assert any("Connect to ipv4#127.0.0.1:1 failed" in ln for ln in ours)
    # Rate-limited: one line per kind of message per 10 s, not one per connection attempt.
    assert len(ours) <= 10, "\n".join(ours)
    assert SECRET not in out + err


def test_rate_limit_filter_passes_debug_records() -> None:
    f = clients.RateLimitFilter(10.0, clock=lambda: 0.0)
    recs = [
        logging.LogRecord("x", logging.DEBUG, "", 0, "%s [%s] %s", ("BROKER", "c", str(i)), None)
        for i in range(5)
    ]
    assert all(f.filter(r) for r in recs)
