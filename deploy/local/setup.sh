#!/usr/bin/env bash
# Everything stream-monitor needs on a fresh Debian machine: Java and Maven (for the local
# Kafka broker), a Python >= 3.11 virtualenv in .venv with the package and its dev tools, and
# the Kafka broker jars from Maven Central. Idempotent: a second run only checks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v curl >/dev/null || need_apt+=(curl)
# A real Alertmanager for tests/integration/test_forward.py (the test starts its own on a free
# port; on a systemd host the package also enables its service on :9093).
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v promtool >/dev/null || need_apt+=(prometheus)  # promtool: tests of deploy/prometheus
if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "setup: Python >= 3.11 is required (set PYTHON=...)" >&2; exit 1; }
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv" >&2
    "$py" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # The distribution was called stream-monitor before it became stream-drift-monitor (the
    # name on PyPI is another project's): a venv from before holds both otherwise.
    .venv/bin/python -m pip uninstall -q -y stream-monitor 2>/dev/null || true
    .venv/bin/python -m pip install -q -e ".[dev]"
    touch "$stamp"
fi
# numba compiles the detectors' loops once per checkout into stream_monitor's __pycache__
# (seconds): here, rather than in the demo's first batch or inside a test's time limit.
.venv/bin/python -c "from stream_monitor.stats.drift import warm_up; warm_up()"
bash deploy/local/kafka.sh fetch
bash deploy/local/tools.sh  # helm, kubeconform, docker-compose for tests/unit/test_deploy_*.py
echo "setup: ready" >&2
