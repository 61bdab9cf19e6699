"""Every command over a secured Kafka: a broker of this module's own with a real SSL listener
(client certificates required) and a SASL_SSL listener with SCRAM-SHA-512, its CA and
certificates generated here.

``run``, ``simulate``, ``alerts``, ``forward`` (to a local HTTP server) and ``replay`` each get
``--config`` with a ``[kafka]`` table (``security.protocol``, ``ssl.ca.location``,
``sasl.mechanism``, ``sasl.username``) and the password from the environment
(``STREAM_MONITOR_KAFKA__SASL_PASSWORD``); the password must never show in their output.
Without the CA, or with a wrong password, ``run`` does not become ready and says why on
/readyz.

The broker runs from the jars ``deploy/local/kafka.sh`` fetches, as ``kafka.sh`` runs it, with a
PLAINTEXT listener too, through which the test itself checks what the commands wrote.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_monitor.events.schema import AlertEvent

from .kafka_utils import end_offsets, read_all, scrape, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
JARS = ROOT / "deploy" / "local" / ".kafka" / "lib"
USER = "stream-monitor"
PARTITIONS = 2
PREDICTIONS = 6000
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class SecureBroker:
    plaintext: str  # for the test's own checks
    ssl: str  # SSL, client certificate required
    sasl_ssl: str  # SASL_SSL, SCRAM-SHA-512
    ca: Path
    client_cert: Path
    client_key: Path  # encrypted with the password in client_key_password
    client_key_password: Path
    password: str  # the SCRAM user's


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _certificates(folder: Path, key_password: bytes) -> dict[str, Path]:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=not ca,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("stream-monitor test CA"))
        .issuer_name(name("stream-monitor test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str) -> tuple[Any, x509.Certificate]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return key, cert

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    broker_key, broker_cert = leaf("127.0.0.1")
    client_key, client_cert = leaf(USER)
    out = {
        "ca": folder / "ca.pem",
        "keystore": folder / "broker-keystore.pem",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    out["ca"].write_bytes(ca.public_bytes(pem))
    out["keystore"].write_bytes(
        broker_key.private_bytes(pem, pkcs8, serialization.NoEncryption())
        + broker_cert.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    out["client_cert"].write_bytes(client_cert.public_bytes(pem))
    out["client_key"].write_bytes(
        client_key.private_bytes(pem, pkcs8, serialization.BestAvailableEncryption(key_password))
    )
    return out


def _cluster_id() -> str:
    while True:  # Kafka's Uuid text form; StorageTool reads one starting with '-' as an option
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    home = tmp_path_factory.mktemp("secure-kafka")
    fetch = subprocess.run(
        ["bash", str(KAFKA_SH), "fetch"],
        env={**os.environ, "KAFKA_JARS_DIR": str(JARS), "KAFKA_HOME_DIR": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if fetch.returncode != 0:
        pytest.fail(f"could not fetch the Kafka jars:\n{fetch.stderr}", pytrace=False)
    key_password = secrets.token_hex(12)
    certs = _certificates(home, key_password.encode())
    (home / "client-key-password").write_text(key_password + "\n")
    password = secrets.token_urlsafe(18)
    plain, ssl, sasl, controller = _free_ports(4)
    props = home / "server.properties"
    props.write_text(
        f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={SCRAM_JAAS}
ssl.keystore.type=PEM
ssl.keystore.location={certs["keystore"]}
ssl.truststore.type=PEM
ssl.truststore.location={certs["ca"]}
listener.name.ssl.ssl.client.auth=required
log.dirs={home}/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.dedupe.buffer.size=33554432
log.segment.bytes=67108864
message.max.bytes=4194304
"""
    )
    log4j = home / "log4j2.properties"
    log4j.write_text(
        "status = warn\nappender.file.type = File\nappender.file.name = FILE\n"
        "appender.file.fileName = ${sys:kafka.logs.dir}/server.log\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = FILE\n"
        "logger.kafka.name = kafka\nlogger.kafka.level = INFO\n"
        "logger.ak.name = org.apache.kafka\nlogger.ak.level = WARN\n"
    )
    cp = f"{JARS}/*"
    fmt = subprocess.run(
        [
            "java",
            "-cp",
            cp,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={_cluster_id()}",
            "-c",
            str(props),
            "--add-scram",
            f"SCRAM-SHA-512=[name={USER},password={password}]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if fmt.returncode != 0:
        pytest.fail(f"kafka-storage format failed:\n{fmt.stdout}\n{fmt.stderr}", pytrace=False)
    out = open(home / "server.out", "wb")  # noqa: SIM115 (closed below)
    broker = subprocess.Popen(
        [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={home}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(props),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        server_log = home / "server.log"
        while "Kafka Server started" not in (
            server_log.read_text(errors="replace") if server_log.exists() else ""
        ):
            if broker.poll() is not None or time.monotonic() > deadline:
                tail = (home / "server.out").read_text(errors="replace")[-3000:]
                pytest.fail(f"the secured broker did not start:\n{tail}", pytrace=False)
            time.sleep(0.5)
        yield SecureBroker(
            plaintext=f"127.0.0.1:{plain}",
            ssl=f"127.0.0.1:{ssl}",
            sasl_ssl=f"127.0.0.1:{sasl}",
            ca=certs["ca"],
            client_cert=certs["client_cert"],
            client_key=certs["client_key"],
            client_key_password=home / "client-key-password",
            password=password,
        )
    finally:
        broker.terminate()
        try:
            broker.wait(60)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(30)
        out.close()


# --- helpers ----------------------------------------------------------------------------------
def _names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "predictions": f"sec-predictions-{tag}",
        "labels": f"sec-labels-{tag}",
        "alerts": f"sec-alerts-{tag}",
        "dead_letter": f"sec-dlq-{tag}",
        "group": f"sec-monitor-{tag}",
    }


def _toml(
    path: Path,
    b: SecureBroker,
    t: dict[str, str],
    metrics_port: int = 0,
    *,
    ca: bool = True,
) -> Path:
    path.write_text(
        f'bootstrap_servers = "{b.sasl_ssl}"\n'
        f'group_id = "{t["group"]}"\n'
        'metrics_host = "127.0.0.1"\n'
        f"metrics_port = {metrics_port}\n"
        "[topics]\n"
        + "".join(f'{k} = "{t[k]}"\n' for k in ("predictions", "labels", "alerts", "dead_letter"))
        + "[checkpoint]\ninterval_seconds = 1.0\n"
        "[drift.reference]\nsize = 300\n[drift.window]\nsize = 300\n"
        "[kafka]\n"
        'security.protocol = "SASL_SSL"\n'
        + (f'ssl.ca.location = "{b.ca}"\n' if ca else "")
        + 'sasl.mechanism = "SCRAM-SHA-512"\n'
        f'sasl.username = "{USER}"\n'
        # bounded waits in the negative controls
        "socket.connection.setup.timeout.ms = 5000\n"
    )
    return path


def _env(password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return {**env, "STREAM_MONITOR_KAFKA__SASL_PASSWORD": password}


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "stream_monitor", *argv]


def _port() -> int:
    return _free_ports(1)[0]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return -1, ""


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"did not stop on SIGTERM within 60 s:\n{out[-3000:]}") from None
    return out


class _Sink(http.server.ThreadingHTTPServer):
    """A local HTTP server standing in for Alertmanager: records each POSTed body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.bodies: list[Any] = []


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    server: _Sink

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.server.bodies.append(orjson.loads(self.rfile.read(n)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


# --- the commands -----------------------------------------------------------------------------
def test_every_command_over_sasl_ssl(secure_broker: SecureBroker, tmp_path: Path) -> None:
    b, t = secure_broker, _names()
    env = _env(b.password)
    metrics_port = _port()
    cfg = _toml(tmp_path / "monitor.toml", b, t, metrics_port)
    outputs: dict[str, str] = {}

    # simulate: creates the input topics and produces, over SASL_SSL
    sim = subprocess.run(
        _cli(
            *("simulate", "--config", str(cfg), "--events", str(PREDICTIONS), "--rate", "0"),
            *("--drift-at", str(PREDICTIONS // 2), "--partitions", str(PARTITIONS)),
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outputs["simulate"] = sim.stdout + sim.stderr
    assert sim.returncode == 0, outputs["simulate"][-3000:]
    produced = sum(end_offsets(b.plaintext, t["predictions"], PARTITIONS))
    produced += sum(end_offsets(b.plaintext, t["labels"], PARTITIONS))
    assert sum(end_offsets(b.plaintext, t["predictions"], PARTITIONS)) == PREDICTIONS

    # run: ready, consumes everything, publishes alerts and its changelog (exactly-once)
    run = subprocess.Popen(
        _cli("run", "--config", str(cfg)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        try:
            wait_until(lambda: _get(metrics_port, "/readyz")[0] == 200, 120, "/readyz")

            def consumed() -> float:
                return sum(
                    v
                    for (name, _), v in scrape(metrics_port).items()
                    if name == "stream_monitor_events_consumed_total"
                )

            wait_until(lambda: consumed() == produced, 180, f"{produced} records consumed")
            changelog = f"{t['group']}-changelog"
            wait_until(lambda: len(read_all(b.plaintext, changelog, idle=1.0)) > 0, 60, "changelog")
            wait_until(
                lambda: any(
                    orjson.loads(m.value())["status"] == "firing"
                    for m in read_all(b.plaintext, t["alerts"], idle=1.0)
                ),
                120,
                "a firing alert",
            )
        finally:
            outputs["run"] = _stop(run)
    except AssertionError:
        print(outputs.get("run", "")[-5000:])
        raise
    assert run.returncode == 0, outputs["run"][-3000:]
    published = [
        AlertEvent.model_validate(orjson.loads(m.value()))
        for m in read_all(b.plaintext, t["alerts"])
    ]
    firing = {a.alert_id for a in published if a.status == "firing"}
    assert firing

    # alerts: the published events, read back over SASL_SSL
    tail = subprocess.Popen(
        _cli("alerts", "--config", str(cfg), "--from-beginning", "--format", "json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(tail.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: len(lines) >= len(published), 90, f"{len(published)} alert lines")
    finally:
        tail.send_signal(signal.SIGTERM)
        _, err = tail.communicate(timeout=60)
        reader.join(10)
        outputs["alerts"] = "".join(lines) + err
    assert {AlertEvent.model_validate(orjson.loads(ln)).alert_id for ln in lines} == {
        a.alert_id for a in published
    }

    # forward: to a local HTTP server standing in for Alertmanager
    sink = _Sink()
    server = threading.Thread(target=sink.serve_forever, daemon=True)
    server.start()
    fwd = subprocess.Popen(
        _cli(
            *("forward", "--config", str(cfg), "--to", "alertmanager", "--from-beginning"),
            *("--url", f"http://127.0.0.1:{sink.server_address[1]}"),
            *("--group-id", t["group"] + "-fw"),
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: len(sink.bodies) > 0, 90, "a POST to the HTTP sink")
    finally:
        outputs["forward"] = _stop(fwd)
        sink.shutdown()
        sink.server_close()
    posted = [alert for body in sink.bodies for alert in body]
    assert any(a["labels"]["model"] in {p.model_id for p in published} for a in posted), posted

    # replay: the same topics, from Kafka, over SASL_SSL
    rep = subprocess.run(
        _cli("replay", "--config", str(cfg), "--from-kafka", "--out", str(tmp_path / "bt")),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outputs["replay"] = rep.stdout + rep.stderr
    assert rep.returncode == 0, outputs["replay"][-3000:]
    replayed = [
        orjson.loads(ln) for ln in (tmp_path / "bt" / "alerts.jsonl").read_text().splitlines()
    ]
    assert any(a["status"] == "firing" for a in replayed)

    for command, text in outputs.items():
        assert b.password not in text, f"{command} printed the SASL password"
        # librdkafka's lines come through Python logging, never raw ("%3|1700000000.1|FAIL|")
        raw = [ln for ln in text.splitlines() if re.match(r"%\d+\|", ln)]
        assert not raw, f"{command}: {raw[:3]}"


def test_ssl_listener_with_client_certificate_and_key_password_file(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """mTLS: the client key is encrypted; its password comes from ``ssl.key.password.file``."""
    b, t = secure_broker, _names()
    cfg = tmp_path / "ssl.toml"
    cfg.write_text(
        f'bootstrap_servers = "{b.ssl}"\n[topics]\n'
        f'predictions = "{t["predictions"]}"\nlabels = "{t["labels"]}"\n'
        "[kafka]\n"
        'security.protocol = "SSL"\n'
        f'ssl.ca.location = "{b.ca}"\n'
        f'ssl.certificate.location = "{b.client_cert}"\n'
        f'ssl.key.location = "{b.client_key}"\n'
        f'ssl.key.password.file = "{b.client_key_password}"\n'
    )
    sim = subprocess.run(
        _cli(
            "simulate", "--config", str(cfg), "--events", "300", "--rate", "0", "--partitions", "1"
        ),
        env=_env("unused"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sim.returncode == 0, (sim.stdout + sim.stderr)[-3000:]
    assert end_offsets(b.plaintext, t["predictions"], 1) == [300]
    key_password = b.client_key_password.read_text().strip()
    assert key_password not in sim.stdout + sim.stderr


@pytest.mark.parametrize(
    ("case", "why"),
    [("no_ca", "certificate verify failed"), ("wrong_password", "Authentication failed")],
)
def test_run_is_not_ready_and_says_why(
    secure_broker: SecureBroker, tmp_path: Path, case: str, why: str
) -> None:
    b, t = secure_broker, _names()
    port = _port()
    cfg = _toml(tmp_path / "monitor.toml", b, t, port, ca=case != "no_ca")
    password = b.password if case == "no_ca" else "not-" + b.password
    proc = subprocess.Popen(
        _cli("run", "--config", str(cfg)),
        env=_env(password),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: why in _get(port, "/readyz")[1], 90, f"/readyz saying {why!r}")
        status, body = _get(port, "/readyz")
        print(f"/readyz {status}: {body}")
        assert status == 503, body
        assert "broker unreachable" in body
    finally:
        out = _stop(proc)  # bounded: stops on SIGTERM while it waits for the broker
    assert proc.returncode == 0, out[-3000:]
    assert why in out  # the log says it too (librdkafka's lines through Python logging)
    assert password not in out
