#!/usr/bin/env bash
# Real-time media streams on PostgreSQL: the most concurrent Twilio (or AudioHook) streams that keep
# frame-to-durable p99 within 100 ms with no frame lost, as a ratio of the
# batch-of-100 ingest rate measured in the same run, and memory per stream.
#
# Streams start spread over 2 s (the generator's --ramp-ms) and each sends 50 frames/s,
# so N streams sustain N x 50 frames/s once all are up.
#
#   bench/streams.sh                          # 100 250 500 1000 streams, 10 s each
#   STREAMS="500 1000" SECS=20 bench/streams.sh
#   SERVER_ARGS="--writers 2" bench/streams.sh          # any pbx-server flags
#   PROTOCOL=audiohook bench/streams.sh                 # Genesys AudioHook binary frames
#   DATABASE_URL=postgres://user@host/db bench/streams.sh   # a database to create one in
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ulimit -n "$(ulimit -Hn)"

BASE=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
STREAMS=${STREAMS:-100 250 500 1000}
SECS=${SECS:-10}
PROTOCOL=${PROTOCOL:-twilio}
PORT=${PORT:-8100}
URL="http://127.0.0.1:$PORT"

bench_build streams

bench_database "$BASE"
server=
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    bench_drop_database
}
trap cleanup EXIT
# shellcheck disable=SC2086
"$bin/pbx-server" --database-url "$DB_URL" --no-processor --bind "127.0.0.1:$PORT" ${SERVER_ARGS:-} >/tmp/pbx-bench-server.log 2>&1 &
server=$!
wait_healthy "$URL" /tmp/pbx-bench-server.log
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }

"$bin/examples/loadgen" --url "$URL" --baseline-secs 0 --calls 64 --packets 5000 --batch 100 >/tmp/pbx-bench-loadgen.log 2>&1
batch=$(packets_per_s /tmp/pbx-bench-loadgen.log)
echo "reference: batch of 100 on this PostgreSQL: $batch packets/s"
echo "$PROTOCOL streams | frames/s (N x 50) | ratio to batch | lost | within 100 ms | p99 | generator late frames | RSS per stream"
for n in $STREAMS; do
    before=$(rss_kb)
    peak=$before
    "$bin/examples/streams" --url "$URL" --protocol "$PROTOCOL" --streams "$n" --secs "$SECS" >/tmp/pbx-bench-streams.log 2>&1 &
    gen=$!
    while kill -0 "$gen" 2>/dev/null; do
        now=$(rss_kb)
        (( now > peak )) && peak=$now
        sleep 0.5
    done
    wait "$gen" || { cat /tmp/pbx-bench-streams.log; exit 1; }
    log=/tmp/pbx-bench-streams.log
    rate=$(( n * 50 ))
    lost=$(sed -n 's/.*(\([0-9]*\) lost).*/\1/p' "$log")
    within=$(sed -n 's/.*; \([0-9.]*\) % within 100 ms.*/\1/p' "$log")
    p99=$(sed -n 's/.*p99 <= \([0-9.NaN]*\) ms.*/\1/p' "$log")
    late=$(sed -n 's/.*; \([0-9]*\) frames more than 20 ms late/\1/p' "$log")
    echo "$n | $rate | $(awk -v a="$rate" -v b="$batch" 'BEGIN {printf "%.3f", a / b}') | $lost | $within % | <= $p99 ms | $late | $(( (peak - before) / n )) kB"
done
