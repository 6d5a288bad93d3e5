#!/usr/bin/env bash
# What event-feed subscribers cost ingest, as a ratio measured in one run.
#
# Starts a release pbx-server (memory store by default; DATABASE_URL=... for
# PostgreSQL), then alternates ingest runs of the same work without and with N
# WebSocket subscribers of every event, and prints each pair's throughput ratio.
# Last, it holds --many subscribers open through one more run and prints the
# server's peak RSS beside the RSS of a run without them.
#
#   bench/subscribers.sh                      # 100 subscribers, 1,000 for memory, 3 pairs
#   SUBSCRIBERS=100 MANY=1000 PAIRS=5 bench/subscribers.sh
#   LOAD="--calls 64 --packets 2000" bench/subscribers.sh
#
# The default work, 10,000 new calls of 20 packets with 5 % late and 2 % resent, is
# the feed's worst case for ingest: every call makes a call_created event and most
# make an ordering_anomaly, so subscribers get about one message per 12 packets.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
ulimit -n "$(ulimit -Hn)" # the server holds every subscriber's socket

SUBSCRIBERS=${SUBSCRIBERS:-100}
MANY=${MANY:-1000}
PAIRS=${PAIRS:-3}
PORT=${PORT:-8100}
LOAD=${LOAD:---calls 10000 --packets 20 --shuffle 0.05 --duplicates 0.02}
URL="http://127.0.0.1:$PORT"

bench_build subscribers

store=(--store memory)
[[ -n "${DATABASE_URL:-}" ]] && store=(--store postgres)
"$bin/pbx-server" "${store[@]}" --no-processor --bind "127.0.0.1:$PORT" >/tmp/pbx-bench-server.log 2>&1 &
server=$!
subs=
cleanup() {
    [[ -n "$subs" ]] && kill "$subs" 2>/dev/null || true
    kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
wait_healthy "$URL" /tmp/pbx-bench-server.log

# One ingest run; prints its packets/s.
ingest() {
    # shellcheck disable=SC2086
    "$bin/examples/loadgen" --url "$URL" --baseline-secs 0 $LOAD >/tmp/pbx-bench-loadgen.log 2>&1
    packets_per_s /tmp/pbx-bench-loadgen.log
}

# Starts N subscribers in the background and waits until all are connected.
subscribe() {
    "$bin/examples/subscribers" --url "$URL" --subscribers "$1" >/tmp/pbx-bench-subscribers.log 2>&1 &
    subs=$!
    until grep -q '^[0-9]* subscribers on' /tmp/pbx-bench-subscribers.log; do
        kill -0 "$subs" || { cat /tmp/pbx-bench-subscribers.log; exit 1; }
        sleep 0.1
    done
}
unsubscribe() {
    echo "    the subscribers' process used $(awk '{printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"'}' "/proc/$subs/stat") s of CPU"
    kill -INT "$subs"
    wait "$subs" || true
    subs=
    grep -A20 '^total' /tmp/pbx-bench-subscribers.log | sed 's/^/    /'
}
# CPU seconds (user + system) the server has used so far.
cpu_s() { awk '{printf "%.2f", ($14 + $15) / '"$(getconf CLK_TCK)"'}' "/proc/$server/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$server/status"; }

ingest >/dev/null # warm-up: allocator, connection pools, the store's first pages
echo "work: $LOAD; $SUBSCRIBERS subscribers"
for i in $(seq "$PAIRS"); do
    c0=$(cpu_s)
    without=$(ingest)
    c1=$(cpu_s)
    subscribe "$SUBSCRIBERS"
    c2=$(cpu_s)
    with=$(ingest)
    c3=$(cpu_s)
    echo "pair $i: without $without packets/s, with $with packets/s, ratio $(awk -v a="$with" -v b="$without" 'BEGIN {printf "%.3f", a / b}');" \
        "server CPU per run $(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}') s without, $(awk -v a="$c2" -v b="$c3" 'BEGIN {printf "%.2f", b - a}') s with"
    unsubscribe
done

# Memory: the store grows with every run (it keeps every packet), so compare what one
# run adds to RSS with and without the subscribers connected.
before=$(rss_kb)
ingest >/dev/null
echo "memory: a run without subscribers adds $(( $(rss_kb) - before )) kB (RSS $(rss_kb) kB)"
before=$(rss_kb)
subscribe "$MANY"
connected=$(rss_kb)
with=$(ingest)
echo "memory: $MANY subscribers connected add $(( connected - before )) kB; a run with them ($with packets/s) adds $(( $(rss_kb) - connected )) kB more (RSS $(rss_kb) kB, peak $(hwm_kb) kB)"
unsubscribe
echo "memory: RSS $(rss_kb) kB after they left"
