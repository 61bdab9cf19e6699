#!/usr/bin/env bash
# Copies the files the chart renders from (a chart can read only files inside itself) from
# their sources of truth into deploy/helm/stream-monitor/files/:
#   deploy/prometheus/stream-monitor.rules.yml -> files/stream-monitor.rules.yml (PrometheusRule)
#   deploy/grafana/stream-monitor.json         -> files/stream-monitor.json (dashboard ConfigMap)
# Run it after changing either source; tests/unit/test_deploy_helm.py fails while a copy differs.
#   deploy/helm/sync.sh          copy
#   deploy/helm/sync.sh --check  only report differences (exit 1 if any)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
files="$root/deploy/helm/stream-monitor/files"
check=0
[[ "${1:-}" == "--check" ]] && check=1
status=0
for src in deploy/prometheus/stream-monitor.rules.yml deploy/grafana/stream-monitor.json; do
    dst="$files/$(basename "$src")"
    if [[ ! -f "$root/$src" ]]; then
        echo "sync.sh: $src does not exist (yet): skipped" >&2
        continue
    fi
    if cmp -s "$root/$src" "$dst"; then continue; fi
    if ((check)); then
        echo "sync.sh: ${dst#"$root"/} differs from $src" >&2
        status=1
    else
        mkdir -p "$files"
        cp "$root/$src" "$dst"
        echo "sync.sh: copied $src" >&2
    fi
done
exit "$status"
