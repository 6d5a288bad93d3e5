#!/usr/bin/env bash
# The live board in a real browser. Installs what it needs (Debian's chromium,
# playwright-core from npm into tools/dashboard-test/node_modules), makes a fresh
# PostgreSQL database for the keyed test, runs test.mjs against PBX_SERVER_BIN
# (default: target/debug/pbx-server, built with the postgres feature), drops the
# database. Idempotent; called by tools/test.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if [ ! -x "${PBX_CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "dashboard-test: installing chromium (Debian)" >&2
    $sudo_cmd apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium >&2
fi
for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "dashboard-test: $tool is required" >&2; exit 1; }
done
if [ ! -d "$here/node_modules/playwright-core" ] || ! cmp -s "$here/package-lock.json" "$here/node_modules/.package-lock.json.copy"; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
    cp "$here/package-lock.json" "$here/node_modules/.package-lock.json.copy"
fi

bin="${PBX_SERVER_BIN:-$root/target/debug/pbx-server}"
[ -x "$bin" ] || { echo "dashboard-test: no pbx-server binary at $bin (set PBX_SERVER_BIN)" >&2; exit 1; }

database="pbx_dashboard_$$_$RANDOM"
cleanup() { psql "$DATABASE_URL" -qAt -c "drop database if exists $database with (force)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$DATABASE_URL" -qAt -c "create database $database" >/dev/null
db_url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$database")

cd "$here"
PBX_SERVER_BIN="$bin" PBX_DASHBOARD_DATABASE_URL="$db_url" node --test --test-reporter=spec test.mjs
