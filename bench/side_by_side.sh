#!/usr/bin/env bash
# Side by side, in one run, on this machine: the references (pgbench's own
# transactions on the same PostgreSQL, GET /healthz) and pbx on the same work, printed
# as a table and one machine-readable line of key=value, so that figures from
# different machines compare as ratios.
#
#   bench/side_by_side.sh
#   SECS=20 CALLS=1000 PACKETS=200 bench/side_by_side.sh
#   DATABASE_URL=postgres://user@host/db bench/side_by_side.sh   # a database to create one in
#
# References: pgbench inserting one packet-sized row per transaction; pgbench running
# the seed's transaction (lock the call, insert the packet, update its counters);
# pgbench inserting 100 rows per transaction from unnest; GET /healthz on pbx (the
# HTTP floor). pbx: PostgreSQL single packets in order; the same with 5 % late and 1 %
# resent; batches of 100; the memory store's single packets; p50/p99 of each; and after
# each run the load generator's check that every acknowledged packet is stored.
# ceiling = 1 / (1 / memory rate + 1 / batch rate): the HTTP work plus storing in
# batches, both unavoidable.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BASE=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SECS=${SECS:-10}
CALLS=${CALLS:-1000}
PACKETS=${PACKETS:-200}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-8100}
URL="http://127.0.0.1:$PORT"

bench_build

bench_database "$BASE"
work=$(mktemp -d)
server=
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    bench_drop_database
    rm -rf "$work"
}
trap cleanup EXIT

# --- references: pgbench ---------------------------------------------------------
psql -q "$DB_URL" <<'SQL'
CREATE TABLE sbs_calls (call_id text PRIMARY KEY, received bigint NOT NULL, highest bigint NOT NULL);
CREATE TABLE sbs_packets (call_id text NOT NULL, sequence bigint NOT NULL, data bytea NOT NULL,
                          sender_timestamp float8 NOT NULL, received_at timestamptz NOT NULL,
                          PRIMARY KEY (call_id, sequence));
INSERT INTO sbs_calls SELECT 'c' || g, 0, 0 FROM generate_series(1, 1000) AS g;
SQL
# A packet is 160 bytes of audio (20 ms of G.711), as pbx stores it.
cat >"$work/insert.sql" <<'SQL'
\set c random(1, 1000)
\set s random(1, 1000000000000)
INSERT INTO sbs_packets VALUES ('c' || :c, :s, decode(repeat('ff', 160), 'hex'), 1.0, now()) ON CONFLICT DO NOTHING;
SQL
cat >"$work/seed.sql" <<'SQL'
\set c random(1, 1000)
\set s random(1, 1000000000000)
BEGIN;
SELECT received FROM sbs_calls WHERE call_id = 'c' || :c FOR UPDATE;
INSERT INTO sbs_packets VALUES ('c' || :c, :s, decode(repeat('ff', 160), 'hex'), 1.0, now()) ON CONFLICT DO NOTHING;
UPDATE sbs_calls SET received = received + 1, highest = greatest(highest, :s) WHERE call_id = 'c' || :c;
COMMIT;
SQL
cat >"$work/batch.sql" <<'SQL'
\set c random(1, 1000)
\set s random(1, 10000000000)
INSERT INTO sbs_packets
SELECT 'c' || :c, :s::bigint * 100 + g, decode(repeat('ff', 160), 'hex'), 1.0, now()
FROM unnest(ARRAY(SELECT generate_series(1, 100))) AS g
ON CONFLICT DO NOTHING;
SQL
# Transactions/s of one pgbench script; any client error fails the run.
tps() {
    pgbench -n -c "$CONNECTIONS" -j 2 -T "$SECS" -f "$work/$1.sql" "$DB_URL" >"$work/pgbench.log" 2>&1 \
        || { cat "$work/pgbench.log"; exit 1; }
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/pgbench.log" | cut -d. -f1
}
pg_insert=$(tps insert)
pg_seed=$(tps seed)
pg_batch=$(( $(tps batch) * 100 ))

# --- pbx ---------------------------------------------------------------------------
start() {
    "$bin/pbx-server" --no-processor --bind "127.0.0.1:$PORT" "$@" >"$work/server.log" 2>&1 &
    server=$!
    wait_healthy "$URL" "$work/server.log"
}
stop() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
}
# One loadgen run: prints "packets/s p50 p99" of the ingest (and, with a baseline,
# the mean GET /healthz requests/s as a fourth field); fails unless every acknowledged
# packet is stored.
load() {
    "$bin/examples/loadgen" --url "$URL" --connections "$CONNECTIONS" "$@" >"$work/load.log" 2>&1 \
        || { cat "$work/load.log"; exit 1; }
    local rate p50 p99 healthz
    rate=$(packets_per_s "$work/load.log")
    read -r p50 p99 < <(sed -n '/^ingest:/{n;s/.*p50 \([0-9.]*\) .*p99 \([0-9.]*\) .*/\1 \2/p}' "$work/load.log")
    healthz=$(sed -n 's/.*(mean of before and after, \([0-9]*\)\/s).*/\1/p' "$work/load.log")
    echo "$rate $p50 $p99 ${healthz:-}"
}
work_args=(--calls "$CALLS" --packets "$PACKETS")
start --database-url "$DB_URL"
read -r pbx_pg pbx_pg_p50 pbx_pg_p99 healthz <<<"$(load "${work_args[@]}" --baseline-secs 5)"
read -r pbx_pg_mixed pbx_pg_mixed_p50 pbx_pg_mixed_p99 _ <<<"$(load "${work_args[@]}" --shuffle 0.05 --duplicates 0.01 --baseline-secs 0)"
read -r pbx_batch pbx_batch_p50 pbx_batch_p99 _ <<<"$(load --calls 64 --packets 5000 --batch 100 --baseline-secs 0)"
stop
start --store memory
read -r pbx_mem pbx_mem_p50 pbx_mem_p99 _ <<<"$(load "${work_args[@]}" --baseline-secs 0)"
stop

ceiling=$(awk -v m="$pbx_mem" -v b="$pbx_batch" 'BEGIN {printf "%d", 1 / (1 / m + 1 / b)}')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
printf '%-48s %12s %9s %9s\n' "what" "per second" "p50 ms" "p99 ms"
printf '%-48s %12s\n' "pgbench: one packet row per transaction" "$pg_insert"
printf '%-48s %12s\n' "pgbench: the seed's transaction" "$pg_seed"
printf '%-48s %12s\n' "pgbench: 100 rows per transaction (unnest)" "$pg_batch"
printf '%-48s %12s\n' "GET /healthz (pbx, HTTP floor)" "$healthz"
printf '%-48s %12s %9s %9s\n' "pbx PostgreSQL, single packets in order" "$pbx_pg" "$pbx_pg_p50" "$pbx_pg_p99"
printf '%-48s %12s %9s %9s\n' "pbx PostgreSQL, 5 % late, 1 % resent" "$pbx_pg_mixed" "$pbx_pg_mixed_p50" "$pbx_pg_mixed_p99"
printf '%-48s %12s %9s %9s\n' "pbx PostgreSQL, batches of 100 (packets)" "$pbx_batch" "$pbx_batch_p50" "$pbx_batch_p99"
printf '%-48s %12s %9s %9s\n' "pbx memory, single packets" "$pbx_mem" "$pbx_mem_p50" "$pbx_mem_p99"
printf '%-48s %12s\n' "ceiling 1/(1/memory + 1/batch)" "$ceiling"
echo "ratios: PostgreSQL single / ceiling $(ratio "$pbx_pg" "$ceiling"); mixed / in order $(ratio "$pbx_pg_mixed" "$pbx_pg");" \
    "memory / healthz $(ratio "$pbx_mem" "$healthz"); pbx single / pgbench seed $(ratio "$pbx_pg" "$pg_seed");" \
    "pbx batch / pgbench batch $(ratio "$pbx_batch" "$pg_batch")"
echo "side_by_side: cores=$(nproc) pgbench_insert=$pg_insert pgbench_seed=$pg_seed pgbench_batch=$pg_batch healthz=$healthz" \
    "pg_single=$pbx_pg pg_single_p50_ms=$pbx_pg_p50 pg_single_p99_ms=$pbx_pg_p99 pg_mixed=$pbx_pg_mixed" \
    "pg_mixed_p99_ms=$pbx_pg_mixed_p99 pg_batch=$pbx_batch memory_single=$pbx_mem memory_p99_ms=$pbx_mem_p99" \
    "ceiling=$ceiling single_over_ceiling=$(ratio "$pbx_pg" "$ceiling") mixed_over_single=$(ratio "$pbx_pg_mixed" "$pbx_pg")" \
    "memory_over_healthz=$(ratio "$pbx_mem" "$healthz")"
