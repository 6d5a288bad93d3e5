# Helpers shared by the bench scripts; `source bench/lib.sh` from the repository root.

# Creates a fresh database beside the one `$1` names and sets BENCH_BASE, BENCH_DB and
# DB_URL; bench_drop_database drops it (call it from the script's EXIT trap).
BENCH_BASE=
BENCH_DB=
bench_database() {
    BENCH_BASE=$1
    BENCH_DB="pbx_bench_$(basename "$0" .sh)_$$"
    psql -q "$BENCH_BASE" -c "CREATE DATABASE $BENCH_DB" >/dev/null
    DB_URL="${BENCH_BASE%/*}/$BENCH_DB"
}
bench_drop_database() {
    [[ -n "$BENCH_DB" ]] && psql -q "$BENCH_BASE" -c "DROP DATABASE IF EXISTS $BENCH_DB" >/dev/null 2>&1 || true
}

# Waits (20 s at most) for `$1/healthz`; otherwise prints the server log `$2` and fails.
wait_healthy() {
    for _ in $(seq 200); do curl -fs "$1/healthz" >/dev/null && return; sleep 0.1; done
    cat "$2" >&2
    exit 1
}

# The ingest packets/s of a loadgen log `$1`; fails (printing it) unless every
# acknowledged packet was found stored.
packets_per_s() {
    grep -q ' 0 of them missing' "$1" || { cat "$1" >&2; exit 1; }
    sed -n 's/^ingest: .* = [0-9]* requests\/s, \([0-9]*\) packets\/s$/\1/p' "$1"
}

# Builds the release server and the load generator plus the examples named in "$@";
# sets `bin` to where they are.
bench_build() {
    local examples=(--example loadgen)
    for e in "$@"; do examples+=(--example "$e"); done
    cargo build --release -q -p pbx-server --bin pbx-server
    cargo build --release -q -p pbx-examples "${examples[@]}"
    bin=target/release
}
