#!/usr/bin/env bash
# Webhook delivery throughput: how fast pbx drains a backlog of signed deliveries.
#
# Starts a release pbx-server (memory store by default; DATABASE_URL=... for
# PostgreSQL) with a webhook URL nobody listens on, archives N calls (the simulated AI
# without latency or failures), so N deliveries wait in the outbox retrying; then
# starts examples/webhook_sink on that URL and prints how fast they arrive (first to
# last request), per --webhook-concurrency setting.
#
#   bench/webhooks.sh                          # 5,000 calls, concurrency 16 and 64
#   CALLS=20000 CONCURRENCY="16 64 128" bench/webhooks.sh
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres bench/webhooks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

CALLS=${CALLS:-5000}
CONCURRENCY=${CONCURRENCY:-16 64}
PORT=${PORT:-8100}
URL="http://127.0.0.1:$PORT"
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

bench_build webhook_sink

store=(--store memory)
if [[ -n "${DATABASE_URL:-}" ]]; then
    # A fresh database per run, dropped at the end.
    bench_database "$DATABASE_URL"
    store=(--database-url "$DB_URL")
fi
server=
sink=
cleanup() {
    [[ -n "$sink" ]] && kill "$sink" 2>/dev/null || true
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    bench_drop_database
}
trap cleanup EXIT

for concurrency in $CONCURRENCY; do
    hook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$bin/pbx-server" "${store[@]}" --bind "127.0.0.1:$PORT" \
        --ai-latency-min 0s --ai-latency-max 0s --ai-failure-rate 0 --concurrency 256 \
        --webhook-url "http://127.0.0.1:$hook_port/hook" --webhook-secret "$SECRET" \
        --webhook-max-interval 1s --webhook-max-attempts 100000 --webhook-concurrency "$concurrency" >/tmp/pbx-bench-server.log 2>&1 &
    server=$!
    wait_healthy "$URL" /tmp/pbx-bench-server.log
    "$bin/examples/loadgen" --url "$URL" --baseline-secs 0 --calls "$CALLS" --packets 5 --hangup \
        >/tmp/pbx-bench-loadgen.log 2>&1 || { cat /tmp/pbx-bench-loadgen.log; exit 1; }
    grep -q "($CALLS ARCHIVED" /tmp/pbx-bench-loadgen.log || { cat /tmp/pbx-bench-loadgen.log; exit 1; }
    # Every delivery enqueued (the enqueuer follows the log) before the sink starts.
    for _ in $(seq 600); do
        pending=$(curl -fs "$URL/metrics" | awk '/^pbx_webhook_outbox_pending / {print $2}')
        [[ "${pending:-0}" -ge "$CALLS" ]] && break
        sleep 0.1
    done
    "$bin/examples/webhook_sink" --bind "127.0.0.1:$hook_port" --expect "$CALLS" >/tmp/pbx-bench-sink.log 2>&1 &
    sink=$!
    wait "$sink"
    sink=
    echo "concurrency $concurrency (${BENCH_DB:-memory}): $(grep '^received' /tmp/pbx-bench-sink.log)"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
done
