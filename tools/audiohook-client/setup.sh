#!/usr/bin/env bash
# Prepare Genesys's AudioHook reference client (purecloudlabs/audiohook-reference-implementation)
# in ${AUDIOHOOK_REF:-<repo>/target/audiohook-ref}. Nothing of it is committed to pbx: this
# script clones it from the local mirror and installs its npm dependencies.
#
#   tools/audiohook-client/setup.sh     # idempotent; prints the checkout directory
#
# Source: AUDIOHOOK_MIRROR (default /work/.mirror/purecloudlabs+audiohook-reference-implementation/repo,
# a bare git repository), or AUDIOHOOK_REPO_URL to clone over the network instead.
# The repository's package-lock.json files point at a private registry, so they are removed
# and `npm install` resolves from the public registry. Its `app/audiohook` library is
# compiled by ts-node from `client/` and needs `uuid` (and its types) resolvable there:
# a `node_modules` link in `app/` pointing at `client/node_modules` gives it that.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DEST="${AUDIOHOOK_REF:-$REPO/target/audiohook-ref}"
MIRROR="${AUDIOHOOK_MIRROR:-/work/.mirror/purecloudlabs+audiohook-reference-implementation/repo}"
# The commit the tests were written against (2871b01 "update license"); override to try another.
REV="${AUDIOHOOK_REV:-2871b01}"

for tool in git node npm; do
  command -v "$tool" >/dev/null || { echo "audiohook-client: $tool is required" >&2; exit 1; }
done

if [ ! -d "$DEST/.git" ]; then
  if [ -n "${AUDIOHOOK_REPO_URL:-}" ]; then
    SRC="$AUDIOHOOK_REPO_URL"
  elif [ -d "$MIRROR" ]; then
    SRC="$MIRROR"
  else
    echo "audiohook-client: the reference implementation's mirror $MIRROR is missing." >&2
    echo "  Bring it with the fetch tool (github:purecloudlabs/audiohook-reference-implementation)," >&2
    echo "  set AUDIOHOOK_MIRROR to a clone, or AUDIOHOOK_REPO_URL=https://github.com/purecloudlabs/audiohook-reference-implementation" >&2
    exit 1
  fi
  echo "audiohook-client: cloning $SRC into $DEST" >&2
  mkdir -p "$(dirname "$DEST")"
  rm -rf "$DEST.tmp"
  git clone -q --no-checkout "$SRC" "$DEST.tmp"
  git -C "$DEST.tmp" checkout -q "$REV"
  mv "$DEST.tmp" "$DEST"
fi

CLIENT="$DEST/client"
STAMP="$CLIENT/node_modules/.pbx-setup-done"
if [ ! -f "$STAMP" ]; then
  # Private-registry lock files: drop them (they are not ours and not committed anywhere).
  rm -f "$DEST/package-lock.json" "$DEST/app/package-lock.json" "$CLIENT/package-lock.json"
  echo "audiohook-client: npm install in $CLIENT" >&2
  (cd "$CLIENT" && npm install --no-audit --no-fund --loglevel=error --registry=https://registry.npmjs.org/ >&2)
  touch "$STAMP"
fi
# app/audiohook imports 'uuid' (and @types/uuid): let it resolve from client/node_modules.
if [ ! -e "$DEST/app/node_modules" ]; then
  ln -s ../client/node_modules "$DEST/app/node_modules"
fi
[ -x "$CLIENT/node_modules/.bin/ts-node" ] || { echo "audiohook-client: ts-node missing after npm install" >&2; exit 1; }
echo "$DEST"
