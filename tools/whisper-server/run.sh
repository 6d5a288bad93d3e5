#!/usr/bin/env bash
# Set up the venv if needed, then run the server: tools/whisper-server/run.sh [--port 9000] [...]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$("$HERE/setup.sh" | tail -n 1)"
export HF_HUB_OFFLINE=1
exec "$PY" -u "$HERE/server.py" "$@"
