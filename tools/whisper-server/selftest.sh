#!/usr/bin/env bash
# End-to-end check of the whisper server: prepares the test audio, sets up the
# venv, starts server.py on a free port (with an API key), waits for its ready
# line, POSTs each fixture and greps the transcript for the spoken words, checks
# the error paths, then stops the server. Exits non-zero on any failure.
# The last line is "selftest: N passed, N failed".
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${OUT:-$REPO/target/test-audio}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
KEY="selftest-key-$$"

OUT="$OUT" "$REPO/tools/test-audio/prepare.sh" >/dev/null || { echo "selftest: prepare.sh failed" >&2; exit 1; }
PY="$("$HERE/setup.sh" | tail -n 1)" || { echo "selftest: setup.sh failed" >&2; exit 1; }

LOG="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$LOG"
}
trap cleanup EXIT

HF_HUB_OFFLINE=1 "$PY" -u "$HERE/server.py" --host 127.0.0.1 --port 0 --api-key "$KEY" \
  >"$LOG/stdout" 2>"$LOG/stderr" &
SERVER_PID=$!

URL=""
deadline=$((SECONDS + READY_TIMEOUT))
while [ $SECONDS -lt $deadline ]; do
  line="$(grep -m1 '^whisper-server listening on ' "$LOG/stdout" 2>/dev/null || true)"
  if [ -n "$line" ]; then URL="${line#whisper-server listening on }"; break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$URL" ]; then
  echo "selftest: server did not become ready; its stderr:" >&2
  cat "$LOG/stderr" >&2
  echo "selftest: 0 passed, 1 failed"
  exit 1
fi
echo "selftest: server ready at $URL"

pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# expect_status NAME CODE curl-args...
expect_status() {
  local name="$1" want="$2"; shift 2
  local got
  got="$(curl -s -o "$LOG/body" -w '%{http_code}' "$@")"
  if [ "$got" = "$want" ]; then ok "$name -> $got"; else bad "$name -> $got (want $want): $(head -c 300 "$LOG/body")"; fi
}

AUTH=(-H "Authorization: Bearer $KEY")
EP="$URL/v1/audio/transcriptions"

expect_status "GET /health" 200 "$URL/health"
expect_status "GET /v1/models" 200 "${AUTH[@]}" "$URL/v1/models"
expect_status "GET /v1/models without key" 401 "$URL/v1/models"
expect_status "POST with wrong key" 401 -H "Authorization: Bearer nope" "$EP" -F model=whisper-1 -F "file=@$OUT/happy.wav"
expect_status "POST without file" 400 "${AUTH[@]}" "$EP" -F model=whisper-1
expect_status "POST raw mu-law (not WAV)" 400 "${AUTH[@]}" "$EP" -F model=whisper-1 -F "file=@$OUT/angry.ulaw"
expect_status "POST JSON body" 415 "${AUTH[@]}" "$EP" -H 'Content-Type: application/json' -d '{}'
if grep -q '"type": "invalid_request_error"' "$LOG/body"; then ok "error body in OpenAI shape"; else bad "error body: $(cat "$LOG/body")"; fi

# transcribe NAME FILE WORD... : verbose_json, every WORD must appear (case-insensitive)
transcribe() {
  local name="$1" file="$2"; shift 2
  local code t text
  read -r code t < <(curl -s -o "$LOG/body" -w '%{http_code} %{time_total}\n' "${AUTH[@]}" "$EP" \
    -F model=whisper-1 -F response_format=verbose_json -F "file=@$file")
  if [ "$code" != 200 ]; then bad "$name: HTTP $code: $(head -c 300 "$LOG/body")"; return; fi
  if ! text="$("$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["task"] == "transcribe" and d["duration"] > 0 and d["segments"], d
assert all({"id", "start", "end", "text"} <= set(s) for s in d["segments"]), d
print(d["text"])' "$LOG/body")"; then
    bad "$name: malformed verbose_json: $(head -c 300 "$LOG/body")"; return
  fi
  local missing=()
  for w in "$@"; do grep -qi -- "$w" <<<"$text" || missing+=("$w"); done
  if [ ${#missing[@]} -eq 0 ]; then ok "$name (${t}s): $text"; else bad "$name: missing ${missing[*]} in: $text"; fi
}

transcribe allison-busy     "$OUT/allison-busy.wav"     circuits busy
transcribe allison-busy-gap "$OUT/allison-busy-gap.wav" circuits busy
transcribe angry            "$OUT/angry.wav"            terrible furious awful
transcribe happy            "$OUT/happy.wav"            thank wonderful appreciate

got="$(curl -s "${AUTH[@]}" "$EP" -F model=whisper-1 -F response_format=text -F "file=@$OUT/allison-busy.wav")"
if grep -qi circuits <<<"$got" && [ "${got:0:1}" != "{" ]; then ok "response_format=text: $got"; else bad "response_format=text: $got"; fi
got="$(curl -s "${AUTH[@]}" "$EP" -F model=whisper-1 -F "file=@$OUT/allison-busy.wav")"
if "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); assert list(d)==["text"] and "busy" in d["text"].lower()' "$got" 2>/dev/null
then ok "response_format=json (default): $got"; else bad "response_format=json: $got"; fi

echo "selftest: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
