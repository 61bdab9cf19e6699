"""deploy/compose/compose.yaml, checked structurally (no container engine runs here).

Every bind-mounted file exists; the files mounted into Prometheus and Alertmanager pass
``promtool check config`` and ``amtool check-config`` laid out as the containers see them; the
monitor's mounted configuration is one the monitor accepts; the ports agree (the monitor's
metrics port == Prometheus' scrape target port == the Dockerfile's EXPOSE); services start in
the right order; the Kafka image is the broker version the local tests use; Grafana gets the
dashboard and a Prometheus datasource. ``docker-compose config`` (Docker Compose, built from
the Go module proxy by deploy/local/tools.sh; it needs no engine for that) validates the file
against the Compose Specification.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
POM = ROOT / "deploy" / "local" / "pom.xml"
RULES = ROOT / "deploy" / "prometheus" / "stream-monitor.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "stream-monitor.json"
#: The services of the image built from deploy/docker/Dockerfile.
MONITOR = "stream-monitor"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _binds(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of every bind mount (short syntax; named volumes left out)."""
    out = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), "short syntax only"
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            out.append(((COMPOSE_DIR / source).resolve(), PurePosixPath(target)))
    return out


def _flag(argv: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in ``argv``."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def _lay_out(service: dict[str, Any], root: Path) -> None:
    """Copy the service's bind mounts under ``root`` at their container paths."""
    for source, target in _binds(service):
        dest = root / target.relative_to("/")
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)


def _expose() -> int:
    (port,) = re.findall(r"^EXPOSE (\d+)$", DOCKERFILE.read_text(), re.M)
    return int(port)


def _published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, for ports bound to the loopback address."""
    out = {}
    for spec in service.get("ports", []):
        host_ip, host, container = str(spec).split(":")
        assert host_ip == "127.0.0.1", f"{spec}: publish on the loopback address only"
        out[int(container)] = int(host)
    return out


# ------------------------------------------------------------------------------- the files


def test_every_bind_mounted_file_exists(compose: dict[str, Any]) -> None:
    binds = [b for s in _services(compose).values() for b in _binds(s)]
    assert len(binds) >= 6
    for source, target in binds:
        assert source.exists(), f"{source} (mounted at {target}) does not exist"
        assert ROOT in source.parents, f"{source} is outside the repository"


def test_the_image_is_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    services = _services(compose)
    build = services[MONITOR]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    image = services[MONITOR]["image"]
    users = [n for n, s in services.items() if s.get("image") == image]
    # The other services of that image reuse the one build.
    assert set(users) == {MONITOR, "forward", "simulate"}
    assert all("build" not in services[n] for n in users if n != MONITOR)


def test_kafka_is_the_broker_version_of_the_local_tests(compose: dict[str, Any]) -> None:
    version = re.search(r"<kafka.version>([\d.]+)</kafka.version>", POM.read_text())
    assert version is not None
    for name in ("kafka", "kafka-init"):
        assert _services(compose)[name]["image"] == f"apache/kafka:{version.group(1)}"
    env = _services(compose)["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1  # exactly-once on 1 broker
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_the_monitor_configuration_is_valid_and_agrees(compose: dict[str, Any]) -> None:
    from stream_monitor.cli import build_parser
    from stream_monitor.config import load_config

    service = _services(compose)[MONITOR]
    args = build_parser().parse_args(service["command"])
    assert args.command == "run"
    mounts = {str(t): s for s, t in _binds(service)}
    cfg = load_config(mounts[args.config], instance_id=args.instance_id)
    assert cfg.bootstrap_servers == "kafka:9092"
    assert cfg.instance_id == "compose-0"
    # The topics kafka-init creates are the monitor's input topics.
    init = " ".join(_services(compose)["kafka-init"]["command"])
    assert f"for topic in {cfg.topics.predictions} {cfg.topics.labels};" in init
    for name in ("forward", "simulate"):
        sub = build_parser().parse_args(_services(compose)[name]["command"])
        assert sub.command == name
    fw = build_parser().parse_args(_services(compose)["forward"]["command"])
    assert fw.config == args.config and fw.to == "alertmanager"
    assert fw.url == f"http://alertmanager:{_published_port(compose, 'alertmanager', 9093)}"
    sim = build_parser().parse_args(_services(compose)["simulate"]["command"])
    assert sim.bootstrap_servers == cfg.bootstrap_servers


def _published_port(compose: dict[str, Any], service: str, port: int) -> int:
    """``port``, after checking that ``service`` publishes it."""
    assert port in _published(_services(compose)[service]), f"{service} does not publish {port}"
    return port


def test_ports_agree(compose: dict[str, Any]) -> None:
    from stream_monitor.config import load_config

    services = _services(compose)
    monitor = services[MONITOR]
    mounts = {str(t): s for s, t in _binds(monitor)}
    config = _flag(monitor["command"], "--config")
    metrics_port = load_config(mounts[config]).metrics_port
    assert metrics_port == _expose() == 9108
    assert _published(monitor) == {metrics_port: metrics_port}
    prom = services["prometheus"]
    prom_config = yaml.safe_load(
        Path(
            dict((str(t), s) for s, t in _binds(prom))["/etc/prometheus/prometheus.yml"]
        ).read_text()
    )
    (job,) = prom_config["scrape_configs"]
    assert job["job_name"] == "stream-monitor"  # the job the rules select
    assert 'up{job="stream-monitor"}' in RULES.read_text()
    (static,) = job["static_configs"]
    assert static["targets"] == [f"{MONITOR}:{metrics_port}"]
    (am,) = prom_config["alerting"]["alertmanagers"][0]["static_configs"]
    assert am["targets"] == [f"alertmanager:{_published_port(compose, 'alertmanager', 9093)}"]
    datasource = yaml.safe_load(
        (COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"][0]
    assert datasource["url"] == f"http://prometheus:{_published_port(compose, 'prometheus', 9090)}"


def test_services_start_in_order(compose: dict[str, Any]) -> None:
    services = _services(compose)

    def needs(name: str) -> dict[str, str]:
        deps = services[name].get("depends_on", {})
        assert isinstance(deps, dict), "long syntax, with conditions"
        return {k: v["condition"] for k, v in deps.items()}

    assert "healthcheck" in services["kafka"]
    assert needs("kafka-init") == {"kafka": "service_healthy"}
    assert needs(MONITOR) == {"kafka-init": "service_completed_successfully"}
    assert needs("simulate")["kafka-init"] == "service_completed_successfully"
    assert needs("forward").keys() == {MONITOR, "alertmanager"}
    assert needs("prometheus").keys() == {MONITOR, "alertmanager"}
    assert needs("grafana").keys() == {"prometheus"}
    # Every dependency is a service, and nothing depends on the optional demo traffic.
    for name in services:
        assert set(needs(name)) <= set(services), name
        assert "simulate" not in needs(name)
    assert services["simulate"]["profiles"] == ["demo"]
    assert [n for n, s in services.items() if "profiles" in s] == ["simulate"]
    # Named volumes used are declared.
    declared = set(compose.get("volumes", {}))
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, source


# ------------------------------------------------------------------ Prometheus and Grafana


def test_prometheus_config_and_rules_as_mounted_pass_promtool(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run deploy/local/setup.sh", False)
    prom = _services(compose)["prometheus"]
    _lay_out(prom, tmp_path)
    config = tmp_path / _flag(prom["command"], "--config.file").lstrip("/")
    mounted_rules = [s for s, _t in _binds(prom) if s == RULES]
    assert mounted_rules, "the rules of deploy/prometheus are mounted"
    proc = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The rule file was found through the mount and checked with the config.
    assert "stream-monitor.rules.yml" in proc.stdout and "SUCCESS" in proc.stdout


def test_alertmanager_config_passes_amtool(compose: dict[str, Any], tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed: run deploy/local/setup.sh", False)
    am = _services(compose)["alertmanager"]
    _lay_out(am, tmp_path)
    config = tmp_path / _flag(am["command"], "--config.file").lstrip("/")
    proc = subprocess.run(
        [amtool, "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_grafana_provisions_the_dashboard_and_the_datasource(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    grafana = _services(compose)["grafana"]
    _lay_out(grafana, tmp_path)
    provisioning = tmp_path / "etc/grafana/provisioning"
    (providers,) = [
        yaml.safe_load(p.read_text())["providers"]
        for p in (provisioning / "dashboards").glob("*.yaml")
    ]
    (provider,) = providers
    folder = tmp_path / provider["options"]["path"].lstrip("/")
    dashboards = sorted(folder.glob("*.json"))
    assert [d.read_bytes() for d in dashboards] == [DASHBOARD.read_bytes()]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (tmp_path / home.lstrip("/")).read_bytes() == DASHBOARD.read_bytes()
    (sources,) = [
        yaml.safe_load(p.read_text())["datasources"]
        for p in (provisioning / "datasources").glob("*.yaml")
    ]
    defaults = [s for s in sources if s.get("isDefault")]
    # The dashboard's ${datasource} variable (type prometheus) picks the default datasource.
    assert [s["type"] for s in defaults] == ["prometheus"]
    assert '"query": "prometheus"' in DASHBOARD.read_text()


def test_monitor_toml_is_plain_toml_without_secrets() -> None:
    data = tomllib.loads((COMPOSE_DIR / "monitor.toml").read_text())
    text = str(data).lower()
    assert "password" not in text and "hmac" not in text


# ------------------------------------------------------------------- docker compose config


def _compose_command() -> list[str]:
    """Docker Compose v2+: deploy/local/tools.sh builds it into .tools/bin (a docker CLI
    plugin would do too)."""
    for candidate in (
        [str(ROOT / ".tools" / "bin" / "docker-compose")],
        ["docker", "compose"],
        ["docker-compose"],
    ):
        exe = shutil.which(candidate[0])
        if exe is None:
            continue
        probe = subprocess.run(
            [exe, *candidate[1:], "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0 and re.search(r"version v?[2-9]\.\d+", probe.stdout):
            return [exe, *candidate[1:]]
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        pytest.skip("docker compose cannot be installed here: no Go toolchain to build it with")
    pytest.fail(
        "docker-compose is missing: run deploy/local/setup.sh (deploy/local/tools.sh)", False
    )


def test_docker_compose_config_validates_the_file() -> None:
    """The Compose Specification's own validation (no engine needed for `config`)."""
    command = _compose_command()
    proc = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "demo", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    services = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "demo", "config", "--services"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    assert set(services) == set(yaml.safe_load(COMPOSE.read_text())["services"])


def test_docker_compose_config_rejects_a_misspelt_key(tmp_path: Path) -> None:
    command = _compose_command()
    text = COMPOSE.read_text()
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace("stop_grace_period:", "stop_grace_periode:", 1))
    assert broken.read_text() != text
    proc = subprocess.run(
        [*command, "-f", str(broken), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "stop_grace_periode" in proc.stderr
