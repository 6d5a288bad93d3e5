#!/usr/bin/env bash
# What retention's sweeper costs ingest, as a ratio measured in one run (PostgreSQL).
#
# Each pair: fill a fresh backlog of ARCHIVED calls (FILL, hung up, the simulated AI
# without latency or failures), then run the same ingest work (LOAD) twice on a
# restarted release server: once without retention, once with --retain-packets 1s,
# whose sweeper deletes the whole backlog's packets while the ingest runs. The order
# alternates between pairs. Prints both rates, their ratio, and how many packets the
# sweeper deleted during the run (it must be busy throughout for the ratio to mean
# anything: the script says when the backlog ran out first).
#
#   bench/retention.sh
#   PAIRS=3 FILL="--calls 1000 --packets 2000 --batch 100" bench/retention.sh
#   DATABASE_URL=postgres://user@host/db bench/retention.sh   # a database to create one in
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BASE=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PAIRS=${PAIRS:-2}
PORT=${PORT:-8100}
FILL=${FILL:---calls 500 --packets 2000 --batch 100}
LOAD=${LOAD:---calls 64 --packets 2000}
URL="http://127.0.0.1:$PORT"

bench_build

bench_database "$BASE"
server=
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    bench_drop_database
}
trap cleanup EXIT

start() {
    "$bin/pbx-server" --database-url "$DB_URL" --bind "127.0.0.1:$PORT" --ai-latency-min 0s --ai-latency-max 0s \
        --ai-failure-rate 0 --concurrency 256 "$@" >/tmp/pbx-bench-server.log 2>&1 &
    server=$!
    wait_healthy "$URL" /tmp/pbx-bench-server.log
}
stop() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
}

# One ingest run; prints its packets/s.
ingest() {
    # shellcheck disable=SC2086
    "$bin/examples/loadgen" --url "$URL" --baseline-secs 0 $LOAD >/tmp/pbx-bench-loadgen.log 2>&1
    packets_per_s /tmp/pbx-bench-loadgen.log
}

fill() {
    start
    # shellcheck disable=SC2086
    "$bin/examples/loadgen" --url "$URL" --baseline-secs 0 --hangup $FILL >/tmp/pbx-bench-fill.log 2>&1 \
        || { cat /tmp/pbx-bench-fill.log; exit 1; }
    stop
}

without() {
    start
    ingest
    stop
}

with() {
    swept() { psql -qtA "$DB_URL" -c "SELECT COALESCE(sum(swept_packets), 0) FROM calls"; }
    before=$(swept)
    start --retain-packets 1s --sweep-interval 1s
    rate=$(ingest)
    deleted=$(( $(swept) - before ))
    backlog=$(psql -qtA "$DB_URL" -c "SELECT count(*) FROM calls WHERE state = 'ARCHIVED' AND packets_swept_at IS NULL")
    # Let the sweep finish before the next run.
    until [[ "$(psql -qtA "$DB_URL" -c "SELECT count(*) FROM calls WHERE state = 'ARCHIVED' AND packets_swept_at IS NULL")" == 0 ]]; do
        sleep 0.5
    done
    stop
    echo "$rate ${deleted:-0} $backlog"
}

echo "fill: $FILL (ARCHIVED); load: $LOAD"
for i in $(seq "$PAIRS"); do
    fill
    if (( i % 2 )); then
        a=$(without)
        read -r b deleted left <<<"$(with)"
    else
        read -r b deleted left <<<"$(with)"
        a=$(without)
    fi
    note="the backlog lasted the whole run ($left calls still unswept at its end)"
    [[ "$left" == 0 ]] && note="the backlog ran out during the run: the ratio understates the cost"
    echo "pair $i: without $a packets/s, with the sweeper $b packets/s, ratio $(awk -v a="$b" -v b="$a" 'BEGIN {printf "%.3f", a / b}');" \
        "the sweeper deleted $deleted packets during the run; $note"
done
