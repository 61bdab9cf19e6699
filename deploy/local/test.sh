#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite. The integration tests start their own
# Kafka broker on a free port (or use KAFKA_BOOTSTRAP_SERVERS when it is set).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
bash deploy/local/setup.sh
.venv/bin/ruff check stream_monitor tests load_tests
.venv/bin/mypy stream_monitor
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
