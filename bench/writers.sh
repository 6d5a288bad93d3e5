#!/usr/bin/env bash
# Fixed group-commit writer counts side by side on PostgreSQL, alternated so that a
# noisy machine's drift falls on all of them: the data an adaptive default has to
# match (issue 16 item 2), and the adaptive default (`auto`) beside them. Single
# packets in order, then 5 % late and 1 % resent.
#
#   bench/writers.sh
#   WRITERS="1 2 4" PAIRS=2 CALLS=1000 PACKETS=200 bench/writers.sh
#   DATABASE_URL=postgres://user@host/db bench/writers.sh   # a database to create one in
#   WRITERS="base 1 auto" BASELINE_BIN=/tmp/pbx-server-old bench/writers.sh
#       # "base": another pbx-server binary at its default (say, an earlier commit's)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

BASE=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
WRITERS=${WRITERS:-1 2 4 auto}
BASELINE_BIN=${BASELINE_BIN:-}
PAIRS=${PAIRS:-2}
CALLS=${CALLS:-1000}
PACKETS=${PACKETS:-200}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-8120}
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

# packets/s and p99 ms of one loadgen run (fails unless every ack is stored).
load() {
    "$bin/examples/loadgen" --url "$URL" --connections "$CONNECTIONS" --calls "$CALLS" --packets "$PACKETS" \
        --baseline-secs 0 "$@" >"$work/load.log" 2>&1 || { cat "$work/load.log"; exit 1; }
    echo "$(packets_per_s "$work/load.log") $(sed -n '/^ingest:/{n;s/.*p99 \([0-9.]*\) .*/\1/p}' "$work/load.log")"
}
declare -A in_order mixed
for pair in $(seq "$PAIRS"); do
    for w in $WRITERS; do
        if [[ "$w" == base ]]; then
            [[ -x "$BASELINE_BIN" ]] || { echo "writers \"base\" needs BASELINE_BIN, a pbx-server binary" >&2; exit 1; }
            args=("$BASELINE_BIN")
        else
            args=("$bin/pbx-server" --writers "$w")
        fi
        "${args[@]}" --no-processor --bind "127.0.0.1:$PORT" --database-url "$DB_URL" >"$work/server.log" 2>&1 &
        server=$!
        wait_healthy "$URL" "$work/server.log"
        in_order[$w]+="$(load) | "
        mixed[$w]+="$(load --shuffle 0.05 --duplicates 0.01) | "
        # What the adaptive controller settled on, for the record.
        grep 'retuned' "$work/server.log" | sed 's/^/  '"$w"': /' >&2 || true
        kill "$server"; wait "$server" 2>/dev/null || true; server=
    done
done
printf '%-8s %-44s %s\n' writers "in order: packets/s p99 ms, per pair" "5 % late, 1 % resent"
line="writers: cores=$(nproc)"
for w in $WRITERS; do
    printf '%-8s %-44s %s\n' "$w" "${in_order[$w]% | }" "${mixed[$w]% | }"
    line+=" w${w}_in_order=\"${in_order[$w]% | }\" w${w}_mixed=\"${mixed[$w]% | }\""
done
echo "$line"
