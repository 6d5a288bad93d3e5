#!/usr/bin/env bash
# Create/refresh the venv of tools/webhook-receiver (the PyPI `standardwebhooks`
# package: the independent implementation the webhook tests verify signatures with).
# Idempotent and safe to run concurrently. The last line on stdout is the venv's python.
#   env: WEBHOOK_VENV (default <repo>/target/webhook-venv), WEBHOOK_PYTHON (default python3)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${WEBHOOK_VENV:-$REPO/target/webhook-venv}"
BASE_PY="${WEBHOOK_PYTHON:-python3}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.requirements.sha256"

mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  flock 9
fi
want="$( { sha256sum "$REQ" | cut -d' ' -f1; "$BASE_PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$VENV/bin/python" -c 'import standardwebhooks' >/dev/null 2>&1; then
  echo "webhook-receiver setup: $VENV is up to date" >&2
else
  echo "webhook-receiver setup: installing requirements into $VENV" >&2
  [ -x "$VENV/bin/python" ] || "$BASE_PY" -m venv "$VENV" >&2
  rm -f "$STAMP"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -r "$REQ" >&2
  "$VENV/bin/python" -c 'import standardwebhooks' >&2
  echo "$want" > "$STAMP"
fi
echo "$VENV/bin/python"
