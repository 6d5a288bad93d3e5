#!/usr/bin/env bash
# Does the OpenAPI document tell the truth? Runs, against the real pbx-server binary:
#
#   1. schemathesis (--checks all; phases examples, coverage, fuzzing and stateful) on
#      the memory store, API open;
#   2. the same on a fresh PostgreSQL database, with API keys (as the admin);
#   3. a client generated from /openapi.json by openapi-python-client (no hand edits)
#      completing the seed's flow (tools/api-check/client_flow.py) on that server.
#
# Idempotent: the venv (target/api-check-venv, from requirements.txt) is made or
# updated as needed, servers listen on free ports, the database is dropped at the end.
# Exits non-zero on any failure. Needs python3 with venv and, for step 2, PostgreSQL
# at $DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres; tools/test.sh
# starts it). Settings: PBX_API_CHECK_EXAMPLES (schemathesis examples per operation,
# default 50), PBX_API_CHECK_SEED (a fixed seed; default random, printed),
# PBX_API_CHECK_STORES (default "memory postgres"), PBX_SERVER_BIN (a current
# pbx-server binary with the postgres feature; default: `cargo build -p pbx-server`).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/tools/api-check
work=$root/target/api-check
venv=$root/target/api-check-venv
examples=${PBX_API_CHECK_EXAMPLES:-50}
stores=${PBX_API_CHECK_STORES:-memory postgres}
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export NO_COLOR=1

log() { printf '\n=== api-check: %s\n' "$*" >&2; }
started=$SECONDS
mkdir -p "$work"

# --- The venv: schemathesis, openapi-python-client (pinned) ------------------------
stamp=$venv/.requirements
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    log "venv $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

# --- The server binary (default features: memory and PostgreSQL) -------------------
if [ -n "${PBX_SERVER_BIN:-}" ]; then
    bin=$PBX_SERVER_BIN
else
    log "cargo build -p pbx-server"
    cargo build -q -p pbx-server
    target_dir=$(cargo metadata -q --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    bin=$target_dir/debug/pbx-server
fi
[ -x "$bin" ] || { echo "api-check: no pbx-server binary at $bin" >&2; exit 1; }

# --- Servers and cleanup -----------------------------------------------------------
pids=()
database=""
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$database" ]; then
        psql "$DATABASE_URL" -qAt -c "drop database if exists $database with (force)" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# start_server NAME ARGS...: starts pbx-server on a free port, logging to
# $work/NAME.log, and sets $addr once its "listening on" line is out (or fails).
start_server() {
    local name=$1 line fifo fd
    shift
    fifo=$work/$name.fifo
    rm -f "$fifo" && mkfifo "$fifo"
    : >"$work/$name.log"
    "$bin" --bind 127.0.0.1:0 --ai-latency-min 0s --ai-latency-max 0s --ai-failure-rate 0 "$@" >"$fifo" 2>&1 &
    pids+=($!)
    exec {fd}<"$fifo"
    addr=""
    # A bound, not a pause: the server prints the line as soon as it listens.
    while IFS= read -r -t 120 -u "$fd" line; do
        printf '%s\n' "$line" >>"$work/$name.log"
        if [[ $line =~ listening\ on\ http://([0-9.]+:[0-9]+) ]]; then
            addr=${BASH_REMATCH[1]}
            break
        fi
    done
    # Keep draining its output so that it never blocks on a full pipe.
    cat <&"$fd" >>"$work/$name.log" &
    pids+=($!)
    exec {fd}<&-
    rm -f "$fifo"
    if [ -z "$addr" ]; then
        cat "$work/$name.log" >&2
        echo "api-check: pbx-server ($name) did not start" >&2
        exit 1
    fi
    log "$name: pbx-server on http://$addr"
}

seed_args=()
[ -n "${PBX_API_CHECK_SEED:-}" ] && seed_args=(--seed "$PBX_API_CHECK_SEED")

# run_schemathesis NAME URL ARGS...
run_schemathesis() {
    local name=$1 url=$2
    shift 2
    log "$name: schemathesis --checks all, $examples examples per operation"
    (
        cd "$work"
        "$venv/bin/schemathesis" --no-color --config-file "$here/schemathesis.toml" run "$url/openapi.json" \
            --checks all --phases examples,coverage,fuzzing,stateful --max-examples "$examples" \
            --report junit --report-junit-path "$work/schemathesis-$name.xml" \
            "${seed_args[@]}" "$@"
    ) | tee "$work/schemathesis-$name.txt"
}

passed=0 failed=0
# outcome WHAT STATUS: counts a check.
outcome() {
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "api-check: FAILED: $1" >&2; fi
}
for store in $stores; do
    case $store in
        memory)
            start_server memory --store memory
            status=0 && run_schemathesis memory "http://$addr" || status=$?
            outcome "schemathesis on the memory store" "$status"
            ;;
        postgres)
            if ! psql "$DATABASE_URL" -qAt -c 'select 1' >/dev/null; then
                echo "api-check: PostgreSQL is not reachable at $DATABASE_URL (tools/test.sh starts it)" >&2
                exit 1
            fi
            database="pbx_api_check_$$_$RANDOM"
            psql "$DATABASE_URL" -qAt -c "create database $database" >/dev/null
            db_url=$("$venv/bin/python" -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$database")
            start_server postgres --store postgres --database-url "$db_url" \
                --api-key admin:api-check-admin --api-key ingest:api-check-ingest --api-key supervisor:api-check-supervisor
            status=0 && run_schemathesis postgres "http://$addr" -H "Authorization: Bearer api-check-admin" || status=$?
            outcome "schemathesis on PostgreSQL" "$status"

            # --- The generated client ---------------------------------------------
            log "openapi-python-client: a client from http://$addr/openapi.json"
            rm -rf "$work/generated"
            mkdir -p "$work/generated"
            status=0 && "$venv/bin/openapi-python-client" generate --url "http://$addr/openapi.json" \
                --config "$here/openapi-python-client.yaml" --meta none --fail-on-warning \
                --output-path "$work/generated/pbx_client" || status=$?
            if [ "$status" -eq 0 ]; then
                log "the seed's flow through the generated client"
                PYTHONPATH="$work/generated" "$venv/bin/python" "$here/client_flow.py" "http://$addr" \
                    api-check-ingest api-check-supervisor || status=$?
            fi
            outcome "the generated client" "$status"
            ;;
        *)
            echo "api-check: unknown store $store" >&2
            exit 2
            ;;
    esac
done

log "done in $((SECONDS - started)) s (logs and reports in $work)"
echo "api-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
