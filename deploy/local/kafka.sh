#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft) on 127.0.0.1, provisioned from Maven Central jars.
#
#   deploy/local/kafka.sh start|stop|status|fetch
#
# Environment:
#   KAFKA_PORT      client (PLAINTEXT) port, default 9092; the controller uses KAFKA_PORT+1
#   KAFKA_HOME_DIR  folder this script owns (jars, config, data, logs),
#                   default deploy/local/.kafka next to this script
#   KAFKA_JARS_DIR  where the resolved jars are cached, default $KAFKA_HOME_DIR/lib
#   KAFKA_HEAP      heap size, default 1g
# `start` returns only once the broker accepts requests, and prints the bootstrap address.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${KAFKA_PORT:-9092}"
cport="$((port + 1))"
home="${KAFKA_HOME_DIR:-$here/.kafka}"
jars="${KAFKA_JARS_DIR:-$home/lib}"
heap="${KAFKA_HEAP:-1g}"
inst="$home/broker-$port"
pidfile="$inst/kafka.pid"
log="$inst/server.out"

die() { echo "kafka.sh: $*" >&2; exit 1; }

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

resolve_jars() {
    if [[ -f "$jars/.complete" ]]; then return; fi
    command -v mvn >/dev/null || die "maven (mvn) is needed to fetch the Kafka jars"
    echo "kafka.sh: resolving Kafka jars from Maven Central into $jars" >&2
    mkdir -p "$jars"
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$jars" >&2
    touch "$jars/.complete"
}

write_config() {
    mkdir -p "$inst/data"
    cat > "$inst/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$inst/data
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
auto.create.topics.enable=true
log.cleaner.dedupe.buffer.size=33554432
log.segment.bytes=67108864
log.retention.hours=24
message.max.bytes=4194304
PROPS
    cat > "$inst/log4j2.properties" <<'LOG'
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.controller.name = org.apache.kafka
logger.controller.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
LOG
}

start() {
    if running; then echo "127.0.0.1:$port"; return; fi
    resolve_jars
    write_config
    if [[ ! -f "$inst/data/meta.properties" ]]; then
        # Kafka's own random cluster id: a hand-made base64 one starts with '-' one time in
        # 64, and StorageTool then reads it as an option. --cluster-id=... for the same reason.
        cid="$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid)" \
            || die "StorageTool random-uuid failed"
        java -cp "$jars/*" kafka.tools.StorageTool format "--cluster-id=$cid" \
            -c "$inst/server.properties" > "$inst/format.out" 2>&1 \
            || { cat "$inst/format.out" >&2; die "storage format failed"; }
    fi
    : > "$inst/server.log"
    nohup java "-Xms512m" "-Xmx$heap" -XX:+UseG1GC \
        "-Dlog4j2.configurationFile=$inst/log4j2.properties" "-Dkafka.logs.dir=$inst" \
        -cp "$jars/*" kafka.Kafka "$inst/server.properties" > "$log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 1 240); do
        if grep -q "Kafka Server started" "$inst/server.log" 2>/dev/null \
           && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "127.0.0.1:$port"
            return
        fi
        running || { tail -50 "$log" "$inst/server.log" >&2; die "broker exited during start-up"; }
        sleep 0.5
    done
    tail -50 "$inst/server.log" >&2
    die "broker did not start within 120 s"
}

stop() {
    if ! running; then echo "kafka.sh: not running" >&2; rm -f "$pidfile"; return; fi
    pid="$(cat "$pidfile")"
    kill "$pid"
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "kafka.sh: stopped" >&2; return; }
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "kafka.sh: killed after 30 s" >&2
}

status() {
    if running; then echo "running 127.0.0.1:$port pid $(cat "$pidfile")"; else echo "stopped"; exit 3; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    fetch) resolve_jars ;;
    *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
