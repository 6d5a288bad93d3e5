#!/usr/bin/env bash
# Run Genesys's AudioHook reference client (prepared by setup.sh) with the given arguments:
#
#   tools/audiohook-client/run.sh --uri ws://127.0.0.1:8080/v1/media/audiohook \
#       --api-key KEY --client-secret BASE64 --wavfile target/test-audio/allison-busy.wav [--session-count N]
#
# The client calls process.stdin.setRawMode, which needs a terminal, so it runs under a
# pseudo-terminal (`script`), with stdin closed. It exits 0 once every session has
# disconnected, whether or not the sessions worked: judge a run by its log lines
# ("onOpenedMessage - Session open!", "onClosedMessage - Session closed"; failures:
# "Websocket error", "closed unexpectedly", "Unexpected server response: 401").
# Relative --wavfile paths are taken from the current directory. Colours are off.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DEST="${AUDIOHOOK_REF:-$REPO/target/audiohook-ref}"
CLIENT="$DEST/client"
[ -x "$CLIENT/node_modules/.bin/ts-node" ] || { echo "audiohook-client: not set up; run tools/audiohook-client/setup.sh" >&2; exit 1; }
command -v script >/dev/null || { echo "audiohook-client: 'script' (util-linux) is required" >&2; exit 1; }

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wavfile) args+=("$1" "$(realpath "$2")"); shift 2 ;;
    --wavfile=*) args+=("--wavfile=$(realpath "${1#--wavfile=}")"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
cmd="$(printf '%q ' node_modules/.bin/ts-node --transpile-only src/index.ts "${args[@]}")"
cd "$CLIENT"
# FORCE_COLOR=0 / NO_COLOR keep pino-pretty's output plain (the test greps it).
export NO_COLOR=1 FORCE_COLOR=0 TS_NODE_TRANSPILE_ONLY=1
exec script -qec "$cmd" /dev/null </dev/null
