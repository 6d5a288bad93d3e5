#!/usr/bin/env bash
# Two pbx-server instances on one PostgreSQL against one, with the same total number of
# connections, in one run; then both instances taking the very same packets of the very
# same calls at once (every packet sent twice, once through each), to show that nothing
# is lost or counted twice when two processes append to one call.
#
#   bench/two_instances.sh
#   SECS=... CALLS=1000 PACKETS=200 CONNECTIONS=64 bench/two_instances.sh
#   DATABASE_URL=postgres://user@host/db bench/two_instances.sh   # a database to create one in
#
# Prints a table and one line of key=value. Each loadgen run checks that every packet it
# saw acknowledged is stored; the shared-calls run also checks the calls' counters in
# the database: every packet received once and seen once more as a duplicate.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BASE=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
CALLS=${CALLS:-1000}
PACKETS=${PACKETS:-200}
CONNECTIONS=${CONNECTIONS:-64}
PAIRS=${PAIRS:-2}
PORT_A=${PORT_A:-8110}
PORT_B=${PORT_B:-8111}

bench_build

bench_database "$BASE"
work=$(mktemp -d)
servers=()
cleanup() {
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bench_drop_database
    rm -rf "$work"
}
trap cleanup EXIT

start() {
    "$bin/pbx-server" --no-processor --bind "127.0.0.1:$1" --database-url "$DB_URL" >"$work/server-$1.log" 2>&1 &
    servers+=($!)
    wait_healthy "http://127.0.0.1:$1" "$work/server-$1.log"
}
# loadgen against port $1 writing log $2; the rest are loadgen arguments.
load() {
    local port=$1 log=$2
    shift 2
    "$bin/examples/loadgen" --url "http://127.0.0.1:$port" --baseline-secs 0 --packets "$PACKETS" "$@" >"$log" 2>&1 \
        || { cat "$log" >&2; exit 1; }
}
# Packets per second of several loadgen logs that ran at once: all their packets over
# the longest of their ingest times.
combined_rate() {
    awk '/^ingest:/ { p += $4; t = ($7 > t ? $7 : t) } END { printf "%d", p / t }' "$@"
}

start "$PORT_A"
start "$PORT_B"
one=() two=()
# Alternate the two set-ups so that drift on a shared machine falls on both.
for pair in $(seq "$PAIRS"); do
    load "$PORT_A" "$work/one.log" --calls "$CALLS" --connections "$CONNECTIONS"
    one+=("$(packets_per_s "$work/one.log")")
    load "$PORT_A" "$work/a.log" --calls $((CALLS / 2)) --connections $((CONNECTIONS / 2)) &
    a=$!
    load "$PORT_B" "$work/b.log" --calls $((CALLS / 2)) --connections $((CONNECTIONS / 2)) &
    b=$!
    wait "$a" && wait "$b"
    packets_per_s "$work/a.log" >/dev/null && packets_per_s "$work/b.log" >/dev/null
    two+=("$(combined_rate "$work/a.log" "$work/b.log")")
done

# The same calls and packets through both instances at once.
prefix="shared$$-"
load "$PORT_A" "$work/sa.log" --calls "$CALLS" --connections $((CONNECTIONS / 2)) --prefix "$prefix" &
a=$!
load "$PORT_B" "$work/sb.log" --calls "$CALLS" --connections $((CONNECTIONS / 2)) --prefix "$prefix" &
b=$!
wait "$a" && wait "$b"
packets_per_s "$work/sa.log" >/dev/null && packets_per_s "$work/sb.log" >/dev/null
read -r calls received duplicates stored < <(psql -qAt -F ' ' "$DB_URL" -c "
    SELECT count(*), sum(received), sum(duplicates),
           (SELECT count(*) FROM packets WHERE call_id LIKE '$prefix%')
    FROM calls WHERE call_id LIKE '$prefix%'")
expected=$((CALLS * PACKETS))
shared_ok=yes
if [[ "$calls" != "$CALLS" || "$received" != "$expected" || "$duplicates" != "$expected" || "$stored" != "$expected" ]]; then
    shared_ok=no
fi

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)) }'; }
one_m=$(median "${one[@]}")
two_m=$(median "${two[@]}")
ratio=$(awk -v a="$two_m" -v b="$one_m" 'BEGIN {printf "%.3f", a / b}')
printf '%-58s %s\n' "one instance, $CONNECTIONS connections (packets/s)" "${one[*]}"
printf '%-58s %s\n' "two instances, $((CONNECTIONS / 2)) connections each (packets/s)" "${two[*]}"
printf '%-58s %s\n' "two / one (medians)" "$ratio"
printf '%-58s %s\n' "same calls through both: calls, received, duplicates, rows" "$calls $received $duplicates $stored (expected $CALLS $expected $expected $expected)"
echo "two_instances: cores=$(nproc) one=$one_m two=$two_m two_over_one=$ratio shared_calls=$calls" \
    "shared_received=$received shared_duplicates=$duplicates shared_rows=$stored shared_expected=$expected shared_ok=$shared_ok"
[[ "$shared_ok" == yes ]] || { echo "the shared calls' counters are wrong" >&2; exit 1; }
