#!/usr/bin/env bash
# The demo: a local Kafka broker, the monitor, synthetic traffic for three models with a drift
# injected half-way, alert events printed as they arrive, /metrics live.
#
#   bash deploy/local/demo.sh
#
# Environment: KAFKA_PORT (9092), METRICS_PORT (9108), DEMO_RATE predictions/s (1000),
# DEMO_EVENTS predictions (60000), DEMO_DRIFT_AT (30000), DEMO_KEEP=1 to keep running until Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
bash deploy/local/setup.sh

port="${KAFKA_PORT:-9092}"
mport="${METRICS_PORT:-9108}"
rate="${DEMO_RATE:-1000}"
events="${DEMO_EVENTS:-60000}"
drift_at="${DEMO_DRIFT_AT:-30000}"
bootstrap="$(bash deploy/local/kafka.sh start)"
run_id="$(date +%s)"
logdir="$root/deploy/local/.kafka/demo-$run_id"
mkdir -p "$logdir"
sm=".venv/bin/stream-monitor"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo: stopped (the broker keeps running: bash deploy/local/kafka.sh stop)"
}
trap cleanup EXIT INT TERM

.venv/bin/python -c "
from stream_monitor.kafka.clients import ensure_input_topics
ensure_input_topics('$bootstrap', partitions=3)"

# A fresh consumer group that starts at the end of the topics: the demo sees only its own traffic.
cat > "$logdir/monitor.toml" <<TOML
bootstrap_servers = "$bootstrap"
group_id = "stream-monitor-demo-$run_id"
metrics_host = "127.0.0.1"
metrics_port = $mport
processing_guarantee = "exactly_once"
instance_id = "demo"
[checkpoint]
interval_seconds = 1.0
hmac_key = "demo-only-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[consumer_overrides]
"auto.offset.reset" = "latest"
[drift.reference]
size = 2000
[drift.window]
size = 1000
TOML

"$sm" alerts --bootstrap-servers "$bootstrap" &
pids+=($!)
"$sm" run --config "$logdir/monitor.toml" 2> "$logdir/monitor.log" &
pids+=($!)
for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null && break
    sleep 0.5
done
curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null \
    || { tail -20 "$logdir/monitor.log"; echo "demo: the monitor did not become ready" >&2; exit 1; }
cat <<MSG
demo: broker         $bootstrap
demo: metrics        http://127.0.0.1:$mport/metrics   (also /healthz, /readyz)
demo: monitor log    $logdir/monitor.log
demo: producing $events predictions at $rate/s for 3 models; drift injected at prediction $drift_at
      (~$((drift_at / ${rate%.*})) s from now). Alerts appear below as they arrive.
MSG
"$sm" --log-level WARNING simulate --bootstrap-servers "$bootstrap" --rate "$rate" \
    --events "$events" --drift-at "$drift_at"
sleep 12  # the last labels arrive up to 10 s (event time) after their prediction
echo
echo "demo: PSI and its calibrated threshold per feature, model drift scores, firing incidents (/metrics):"
curl -s "http://127.0.0.1:$mport/metrics" \
    | grep -E '^stream_monitor_(feature_drift_score\{[^}]*statistic="psi"|feature_drift_threshold|model_drift_score|alert_firing|model_error)' \
    | sort
if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
    echo "demo: still running, press Ctrl-C to stop"
    wait
fi
