#!/usr/bin/env bash
# Produce the speech fixtures pbx's tests use, into ${OUT:-<repo>/target/test-audio}:
#   allison-busy.{wav,ulaw}      Asterisk's "All circuits are busy now..." prompt (Allison)
#   allison-busy-gap.{wav,ulaw}  the same with 20 ms of silence inserted at 1.0 s
#   angry.{wav,ulaw}             espeak-ng: an angry caller
#   happy.{wav,ulaw}             espeak-ng: a pleased caller
# .wav = PCM16 8 kHz mono; .ulaw = raw 8 kHz mono G.711 mu-law (no header).
# Idempotent: installs the Debian packages only if missing; outputs are rebuilt
# deterministically (written to a temp file, then renamed). Prints the output dir.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${OUT:-$REPO/target/test-audio}"

PKGS=(asterisk-core-sounds-en-wav espeak-ng sox)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-audio: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    $SUDO apt-get update -q >&2
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
fi

BUSY=""
for f in /usr/share/asterisk/sounds/en_US_f_Allison/all-circuits-busy-now.wav \
         /usr/share/asterisk/sounds/en/all-circuits-busy-now.wav \
         /usr/share/asterisk/sounds/en_US/all-circuits-busy-now.wav; do
  if [ -f "$f" ]; then BUSY="$f"; break; fi
done
[ -n "$BUSY" ] || { echo "test-audio: all-circuits-busy-now.wav not found" >&2; exit 1; }

mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# emit NAME SRC [sox effects...]: NAME.wav (PCM16) and NAME.ulaw (raw mu-law), 8 kHz mono.
emit() {
  local name="$1" src="$2"; shift 2
  sox -D "$src" -r 8000 -c 1 -e signed-integer -b 16 "$TMP/$name.wav" "$@"
  sox -D "$TMP/$name.wav" -t raw -r 8000 -c 1 -e mu-law -b 8 "$TMP/$name.ulaw"
  mv -f "$TMP/$name.wav" "$OUT/$name.wav"
  mv -f "$TMP/$name.ulaw" "$OUT/$name.ulaw"
}

emit allison-busy "$BUSY"
emit allison-busy-gap "$BUSY" pad 0.02@1.0

espeak-ng -v en-us -s 165 -p 35 -a 180 -w "$TMP/angry-src.wav" \
  "This is terrible. I am furious, your service is awful and I hate waiting."
emit angry "$TMP/angry-src.wav" gain -n -3

espeak-ng -v en-us -s 150 -p 65 -a 140 -w "$TMP/happy-src.wav" \
  "Thank you so much, that was wonderful, I really appreciate your great help."
emit happy "$TMP/happy-src.wav" gain -n -3

echo "$OUT"
