"""The Helm chart deploy/helm/stream-monitor, checked with the real tools.

``helm lint --strict`` and ``helm template`` (helm built from the Go module proxy at a pinned
version by deploy/local/tools.sh into .tools/bin), then ``kubeconform -strict`` over the output
against Kubernetes' JSON schemas. kubeconform normally downloads its schemas at run time; this
machine reaches no such host, so the schemas come from the ``kubernetes-validate`` package
(a dev dependency), turned here into the standalone form kubeconform reads. The Prometheus
Operator's kinds (ServiceMonitor, PrometheusRule) have no schema there: kubeconform skips
exactly those two kinds by name, and the tests check them instead (the rule groups equal the
rules file, which promtool tests; the ServiceMonitor selects the metrics Service).

The rendered manifests are then read as data: distinct instance ids per pod, parsed by the
CLI's own parser and resolved by the configuration loader; probes on /healthz of the metrics
port; the Secret references; the chart's copies of the rules and the dashboard.

The tools are missing only when setup.sh has not run (a failure) or when this machine has no
Go toolchain to build them (a skip, with that reason).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "stream-monitor"
TOOLS = ROOT / ".tools" / "bin"
RULES = ROOT / "deploy" / "prometheus" / "stream-monitor.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "stream-monitor.json"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
#: Kinds of the Prometheus Operator, whose CRD schemas are not available offline here.
OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")
RELEASE = "drift"

#: A production-like values file: SASL over TLS with existing Secrets, signed checkpoints,
#: three members, every optional object on.
FULL_VALUES: dict[str, Any] = {
    "replicaCount": 3,
    "image": {"repository": "registry.example.com/ml/stream-monitor", "tag": "0.1.0"},
    "kafka": {
        "bootstrapServers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "groupId": "drift",
        "securityProtocol": "SASL_SSL",
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "username": "stream-monitor",
            "existingSecret": "kafka-sasl",
            "passwordKey": "sasl-password",
        },
        "tls": {"existingSecret": "kafka-ca", "caKey": "ca.pem"},
        "properties": {"client.id": "drift-monitor", "socket.keepalive.enable": True},
    },
    "checkpoint": {"hmacKey": {"existingSecret": "monitor-checkpoint", "key": "hmac"}},
    "config": '[topics]\npredictions = "preds"\nlabels = "labs"\n',
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}


# ----------------------------------------------------------------------------------- tools


def _tool(name: str) -> Path:
    exe = TOOLS / name
    if exe.is_file():
        return exe
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        pytest.skip(f"{name} cannot be installed here: no Go toolchain to build it with")
    pytest.fail(f"{exe} is missing: run deploy/local/setup.sh (deploy/local/tools.sh)", False)


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}", False)
    return proc


@pytest.fixture(scope="module")
def helm() -> Path:
    return _tool("helm")


@pytest.fixture(scope="module")
def full_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "values-full.yaml"
    path.write_text(yaml.safe_dump(FULL_VALUES))
    return path


def _template(
    helm: Path, *extra: str | Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return _run(helm, "template", RELEASE, CHART, "--namespace", "ml", *extra, check=check)


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def default_text(helm: Path) -> str:
    return _template(helm).stdout


@pytest.fixture(scope="module")
def full_text(helm: Path, full_values: Path) -> str:
    return _template(helm, "-f", full_values).stdout


@pytest.fixture(scope="module")
def default_docs(default_text: str) -> list[dict[str, Any]]:
    return _docs(default_text)


@pytest.fixture(scope="module")
def full_docs(full_text: str) -> list[dict[str, Any]]:
    return _docs(full_text)


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sts = _one(docs, "StatefulSet")
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# ------------------------------------------------------------------------- schemas offline


def _schema_source() -> Path:
    return Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"


def _versions(source: Path) -> list[str]:
    """The Kubernetes versions whose strict schemas the package ships, oldest first."""
    found = [
        m.group(1)
        for p in source.iterdir()
        if (m := re.fullmatch(r"v(\d+\.\d+\.\d+)-local-strict", p.name))
    ]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def _kind_file(doc: dict[str, Any]) -> str:
    """kubeconform's file name for a kind: ``{{ .ResourceKind }}{{ .KindSuffix }}.json``."""
    group, _, version = doc["apiVersion"].rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{doc['kind'].lower()}{suffix}.json"


_REF = "/api/_definitions.json#"


def _standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """One schema with the definitions it reaches inlined under ``$defs`` (kubernetes-validate
    keeps them in a shared file that kubeconform cannot resolve)."""
    needed: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            # "/api/_definitions.json#/$defs/X" from a kind, "#/$defs/X" within the definitions
            name = ref.partition("#/$defs/")[2] if isinstance(ref, str) else ""
            if name and name not in needed:
                needed.add(name)
                walk(definitions[name])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    text = json.dumps({**schema, "$defs": {n: definitions[n] for n in sorted(needed)}})
    return dict(json.loads(text.replace(f'"{_REF}', '"#')))


def _schemas(docs: list[dict[str, Any]], root: Path) -> tuple[Path, list[str]]:
    """Standalone strict schemas of the kinds in ``docs`` for the oldest and the newest
    Kubernetes version the package ships, in kubeconform's layout under ``root``."""
    source = _schema_source()
    versions = _versions(source)
    assert versions, f"no strict schemas in {source}"
    chosen = sorted({versions[0], versions[-1]})
    for version in chosen:
        src = source / f"v{version}-local-strict"
        definitions = json.loads((src / "_definitions.json").read_text())["$defs"]
        out = root / f"v{version}-standalone-strict"
        out.mkdir(parents=True, exist_ok=True)
        for doc in docs:
            if doc["kind"] in OPERATOR_KINDS:
                continue
            name = _kind_file(doc)
            if (src / name).is_file() and not (out / name).exists():
                schema = json.loads((src / name).read_text())
                (out / name).write_text(json.dumps(_standalone(schema, definitions)))
    return root, chosen


def _kubeconform(text: str, docs: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """kubeconform -strict over ``text`` for each chosen Kubernetes version; its JSON results."""
    exe = _tool("kubeconform")
    schemas, versions = _schemas(docs, root)
    manifests = root / "manifests.yaml"
    manifests.write_text(text)
    location = str(schemas) + (
        "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
        "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    results = []
    for version in versions:
        proc = _run(
            exe, "-strict", "-summary", "-output", "json", "-kubernetes-version", version,
            "-schema-location", location, "-skip", ",".join(OPERATOR_KINDS), manifests,
            check=False,
        )  # fmt: skip
        out = json.loads(proc.stdout)
        results.append({"version": version, "rc": proc.returncode, **out})
    return results


# ------------------------------------------------------------------------------- the tools


def test_helm_is_the_pinned_version(helm: Path) -> None:
    pinned = re.search(r'HELM_VERSION="(v[\d.]+)"', (ROOT / "deploy/local/tools.sh").read_text())
    assert pinned is not None
    assert _run(helm, "version", "--short").stdout.strip().startswith(pinned.group(1))


def test_lint_strict_default_values(helm: Path) -> None:
    proc = _run(helm, "lint", "--strict", CHART)
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_lint_strict_full_values(helm: Path, full_values: Path) -> None:
    proc = _run(helm, "lint", "--strict", CHART, "-f", full_values)
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("which", ["default", "full"])
def test_rendered_manifests_are_valid_kubernetes(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    text: str = request.getfixturevalue(f"{which}_text")
    docs: list[dict[str, Any]] = request.getfixturevalue(f"{which}_docs")
    for result in _kubeconform(text, docs, tmp_path):
        summary = result["summary"]
        assert result["rc"] == 0, result
        assert summary["invalid"] == 0 and summary["errors"] == 0, result
        core = [d for d in docs if d["kind"] not in OPERATOR_KINDS]
        # Every core object was validated against a schema (none skipped for lack of one).
        assert summary["valid"] == len(core), result
        assert summary["skipped"] == len(docs) - len(core), result


def test_kubeconform_rejects_what_kubernetes_would(
    default_text: str, default_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The offline schemas have teeth: a misspelt field and a wrong type are both refused."""
    broken = default_text.replace("serviceName:", "servicename:", 1).replace(
        "containerPort: 9108", "containerPort: metrics", 1
    )
    assert broken != default_text
    for result in _kubeconform(broken, default_docs, tmp_path):
        assert result["rc"] != 0
        assert result["summary"]["invalid"] == 1, result
        messages = " ".join(r.get("msg", "") for r in result["resources"])
        assert "servicename" in messages and "containerPort" in messages, messages


# -------------------------------------------------------------------- what the pods receive


def _pod_args(container: dict[str, Any], pod_name: str) -> list[str]:
    """The container's arguments as the kubelet expands them: $(VAR) from the env list."""
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    return [str(a).replace("$(POD_NAME)", pod_name) for a in container["args"]]


def _pod_environ(
    container: dict[str, Any], pod_name: str, secrets: dict[str, str]
) -> dict[str, str]:
    """The container's environment with each secretKeyRef filled from ``secrets``."""
    out = {}
    for e in container["env"]:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        elif "fieldRef" in e["valueFrom"]:
            out[e["name"]] = pod_name
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
    return out


def _resolved_configs(
    docs: list[dict[str, Any]], tmp_path: Path, secrets: dict[str, str]
) -> list[Any]:
    """Each pod's MonitorConfig, resolved the way `stream-monitor run` does: the container's
    arguments through the CLI's parser, the ConfigMap's monitor.toml at the mounted path, the
    container's environment and the flags over both."""
    from stream_monitor.cli import build_parser
    from stream_monitor.config import load_config

    sts = _one(docs, "StatefulSet")
    container = _container(docs)
    cm = _one(docs, "ConfigMap", sts["metadata"]["name"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    config_volume = next(n for n, v in volumes.items() if "configMap" in v)
    assert volumes[config_volume]["configMap"]["name"] == cm["metadata"]["name"]
    local = tmp_path / "config"
    local.mkdir(exist_ok=True)
    (local / "monitor.toml").write_text(cm["data"]["monitor.toml"])
    configs = []
    for ordinal in range(sts["spec"]["replicas"]):
        pod = f"{sts['metadata']['name']}-{ordinal}"
        args = build_parser().parse_args(_pod_args(container, pod))
        assert args.command == "run" and args.func.__name__ == "cmd_run"
        assert args.config == f"{mounts[config_volume]}/monitor.toml"
        configs.append(
            load_config(
                local / "monitor.toml",
                defaults={"bootstrap_servers": "unused:9092"},
                environ=_pod_environ(container, pod, secrets),
                bootstrap_servers=args.bootstrap_servers,
                metrics_port=args.metrics_port,
                group_id=args.group_id,
                instance_id=args.instance_id,
                processing_guarantee=args.processing_guarantee,
            )
        )
    return configs


def test_each_pod_has_its_own_instance_and_transactional_id(
    full_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    secrets = {"kafka-sasl/sasl-password": "p" * 12, "monitor-checkpoint/hmac": "k" * 40}
    configs = _resolved_configs(full_docs, tmp_path, secrets)
    assert len(configs) == FULL_VALUES["replicaCount"] == 3
    ids = [c.instance_id for c in configs]
    assert ids == [f"{RELEASE}-stream-monitor-{i}" for i in range(3)]
    # app.py names the transactional producer "<group_id>-<instance_id>".
    txn = {f"{c.group_id}-{c.instance_id}" for c in configs}
    assert len(txn) == 3
    assert all(c.group_id == "drift" for c in configs)
    assert all(c.processing_guarantee == "exactly_once" for c in configs)
    assert all(c.bootstrap_servers == FULL_VALUES["kafka"]["bootstrapServers"] for c in configs)


def test_secrets_reach_the_configuration_and_nothing_else(
    full_docs: list[dict[str, Any]], full_text: str, tmp_path: Path
) -> None:
    password, key = "s3cret-sasl-password", "h" * 48
    secrets = {"kafka-sasl/sasl-password": password, "monitor-checkpoint/hmac": key}
    cfg = _resolved_configs(full_docs, tmp_path, secrets)[0]
    kafka = cfg.kafka.client_config()
    assert kafka["sasl.password"] == password
    assert kafka["sasl.mechanism"] == "SCRAM-SHA-512"
    assert kafka["sasl.username"] == "stream-monitor"
    assert kafka["security.protocol"] == "SASL_SSL"
    assert kafka["ssl.ca.location"] == "/etc/stream-monitor/tls/ca.pem"
    assert kafka["client.id"] == "drift-monitor"
    assert cfg.checkpoint.hmac_key is not None
    assert cfg.checkpoint.hmac_key.get_secret_value() == key
    assert cfg.topics.predictions == "preds"
    # The chart only names the Secrets; it creates none and embeds no secret value.
    assert not [d for d in full_docs if d["kind"] == "Secret"]
    refs = {
        (e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in _container(full_docs)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {
        ("STREAM_MONITOR_KAFKA__SASL_PASSWORD", "kafka-sasl", "sasl-password"),
        ("STREAM_MONITOR_CHECKPOINT__HMAC_KEY", "monitor-checkpoint", "hmac"),
    }
    sts = _one(full_docs, "StatefulSet")
    tls = [v for v in sts["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in tls] == ["kafka-ca"]
    mount = next(m for m in _container(full_docs)["volumeMounts"] if m["name"] == tls[0]["name"])
    assert kafka["ssl.ca.location"].startswith(mount["mountPath"] + "/")


def test_default_values_resolve_to_a_plaintext_monitor(
    default_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    (cfg,) = _resolved_configs(default_docs, tmp_path, {})
    assert cfg.instance_id == f"{RELEASE}-stream-monitor-0"
    assert cfg.kafka.client_config() == {"security.protocol": "PLAINTEXT"}
    assert cfg.checkpoint.hmac_key is None
    env = {e["name"] for e in _container(default_docs)["env"]}
    assert not {n for n in env if "PASSWORD" in n or "HMAC" in n}
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == [
        "ConfigMap", "PodDisruptionBudget", "Service", "Service", "ServiceAccount", "StatefulSet",
    ]  # fmt: skip


def test_sasl_without_a_secret_and_a_config_that_sets_kafka_are_refused(
    helm: Path,
) -> None:
    proc = _template(helm, "--set", "kafka.sasl.mechanism=PLAIN", check=False)
    assert proc.returncode != 0 and "kafka.sasl.existingSecret" in proc.stderr
    proc = _template(helm, "--set", "config=[kafka]\nx = 1", check=False)
    assert proc.returncode != 0 and "must not set [kafka]" in proc.stderr
    proc = _template(helm, "--set", "kafka.processingGuarantee=maybe", check=False)
    assert proc.returncode != 0 and "processingGuarantee" in proc.stderr


# --------------------------------------------------------------------- probes and services


def test_probes_hit_healthz_on_the_metrics_port(full_docs: list[dict[str, Any]]) -> None:
    from stream_monitor.config import MonitorConfig

    container = _container(full_docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    default_port = MonitorConfig.model_fields["metrics_port"].default
    assert ports == {"metrics": default_port}
    assert f"--metrics-port={default_port}" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports.get(get["port"], get["port"]) == default_port


def test_the_metrics_server_answers_the_probe_path() -> None:
    """The path the probes and the image's HEALTHCHECK use is one the server serves."""
    from prometheus_client import CollectorRegistry

    from stream_monitor.metrics.server import HealthState, MetricsServer

    server = MetricsServer(CollectorRegistry(), HealthState(), "127.0.0.1", 0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()


_WARM_UP = "from stream_monitor.stats.drift import warm_up; warm_up()"


def test_the_init_container_hands_the_images_numba_cache_to_the_monitor(
    default_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The image compiles the detectors' loops into its NUMBA_CACHE_DIR when it is built.
    numba caches only where it can write, so under the pods' read-only root file system each
    pod would compile them again (5-10 s of CPU); the init container copies them into the
    /tmp volume instead. Its command runs here with the image's and the volume's paths moved
    under ``tmp_path``, on a cache that warm_up filled as the image build does; the monitor's
    environment then loads every kernel from the copy and compiles none."""
    found = re.search(r"\bNUMBA_CACHE_DIR=(\S+)", DOCKERFILE.read_text())
    assert found, "the Dockerfile sets no NUMBA_CACHE_DIR"
    image_cache = found.group(1)
    (init,) = _one(default_docs, "StatefulSet")["spec"]["template"]["spec"]["initContainers"]
    main = _container(default_docs)
    assert init["image"] == main["image"]
    assert init["securityContext"] == main["securityContext"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    monitor_cache = {e["name"]: e.get("value") for e in main["env"]}["NUMBA_CACHE_DIR"]

    places = {image_cache: tmp_path / "image", "/tmp": tmp_path / "volume"}

    def here(path: str) -> str:
        for prefix, local in places.items():
            if path == prefix or path.startswith(prefix + "/"):
                return str(local) + path[len(prefix) :]
        return path

    (tmp_path / "volume").mkdir()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 300}
    subprocess.run(  # the image build (deploy/docker/Dockerfile)
        [sys.executable, "-c", _WARM_UP],
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "image")},
        **run,
    )
    built = {p.name.split("-")[0] for p in (tmp_path / "image").rglob("*.nbi")}
    assert built, "warm_up cached no kernel"
    subprocess.run([here(a) for a in init["command"]], **run)
    monitor = subprocess.run(
        [sys.executable, "-c", _WARM_UP],
        env={**os.environ, "NUMBA_CACHE_DIR": here(monitor_cache), "NUMBA_DEBUG_CACHE": "1"},
        **run,
    )
    log = monitor.stdout + monitor.stderr
    loaded = re.findall(r"data loaded from '([^']+)'", log)
    assert all(p.startswith(here(monitor_cache) + "/") for p in loaded), loaded
    # (the kernels that others call are cached too, but load within their callers)
    assert loaded and {Path(p).name.split("-")[0] for p in loaded} <= built
    assert "saved" not in log, log  # a kernel compiled would be saved to the writable copy


def test_services_and_the_statefulset_fit_together(full_docs: list[dict[str, Any]]) -> None:
    sts = _one(full_docs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    headless = _one(full_docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    metrics = _one(full_docs, "Service", sts["metadata"]["name"])
    for svc in (headless, metrics):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["metrics"]
    pdb = _one(full_docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == _one(full_docs, "ServiceAccount")["metadata"]["name"]


def test_servicemonitor_scrapes_the_metrics_service_as_the_rules_job(
    full_docs: list[dict[str, Any]],
) -> None:
    sm = _one(full_docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    wanted = sm["spec"]["selector"]["matchLabels"]
    selected = [
        s
        for s in full_docs
        if s["kind"] == "Service" and wanted.items() <= s["metadata"]["labels"].items()
    ]
    assert len(selected) == 1 and selected[0]["spec"].get("clusterIP") != "None"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["ml"]
    # The job label comes from the Service's label named by jobLabel; the rules select it.
    job = selected[0]["metadata"]["labels"][sm["spec"]["jobLabel"]]
    assert f'up{{job="{job}"}}' in RULES.read_text()


# ------------------------------------------------------------- rules and dashboard copies


def test_the_charts_rules_copy_is_the_rules_file() -> None:
    copy = CHART / "files" / RULES.name
    assert copy.read_bytes() == RULES.read_bytes(), "run deploy/helm/sync.sh"


def test_the_charts_dashboard_copy_is_the_dashboard() -> None:
    copy = CHART / "files" / DASHBOARD.name
    if not DASHBOARD.exists():
        assert not copy.exists(), f"{copy} has no source {DASHBOARD}"
        return
    assert copy.exists() and copy.read_bytes() == DASHBOARD.read_bytes(), "run deploy/helm/sync.sh"


def test_prometheusrule_groups_are_the_rules_files_groups(full_docs: list[dict[str, Any]]) -> None:
    rule = _one(full_docs, "PrometheusRule")
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert rule["spec"]["groups"] == groups
    # Prometheus' own templates pass through Helm untouched.
    assert "{{ $labels.model_id }}" in json.dumps(rule["spec"]["groups"])


def test_prometheusrule_passes_promtool(full_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run deploy/local/setup.sh", False)
    rules = tmp_path / "rendered.rules.yml"
    rules.write_text(yaml.safe_dump(_one(full_docs, "PrometheusRule")["spec"]))
    proc = _run(promtool, "check", "rules", rules)
    assert "SUCCESS" in proc.stdout


def test_dashboard_configmap_for_the_grafana_sidecar(
    full_docs: list[dict[str, Any]], default_docs: list[dict[str, Any]]
) -> None:
    dashboards = [d for d in full_docs if d["metadata"]["labels"].get("grafana_dashboard")]
    if not (CHART / "files" / DASHBOARD.name).exists():
        assert dashboards == []
        return
    (cm,) = dashboards
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    assert json.loads(text) == json.loads(DASHBOARD.read_text())
    assert not [d for d in default_docs if "grafana_dashboard" in d["metadata"]["labels"]]


def test_notes_render_for_both_value_sets(helm: Path, full_values: Path) -> None:
    for extra in ((), ("-f", full_values)):
        proc = _run(helm, "install", RELEASE, CHART, "--dry-run=client", *extra)
        assert "NOTES:" in proc.stdout
        assert "partition count" in proc.stdout


def test_chart_readme_ties_replicas_to_partitions() -> None:
    text = " ".join((CHART / "README.md").read_text().split())
    assert "not set `replicaCount` above the partition count of the predictions topic" in text
    values = (CHART / "values.yaml").read_text()
    assert "Do not exceed the partition count" in values


def _iter_values_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{prefix}{k}"
            yield from _iter_values_keys(v, f"{prefix}{k}.")


def test_every_value_the_templates_use_is_in_values_yaml() -> None:
    keys = set(_iter_values_keys(yaml.safe_load((CHART / "values.yaml").read_text())))
    used: set[str] = set()
    for tpl in (CHART / "templates").iterdir():
        used |= set(re.findall(r"\.Values\.([A-Za-z][\w.]*[A-Za-z0-9])", tpl.read_text()))
    aliases = {"$k.": "kafka."}
    for tpl in (CHART / "templates").iterdir():
        for alias, full in aliases.items():
            pattern = re.escape(alias) + r"([A-Za-z][\w.]*[A-Za-z0-9])"
            used |= {full + m for m in re.findall(pattern, tpl.read_text())}
    assert used, "no .Values references found"
    assert sorted(used - keys) == []
