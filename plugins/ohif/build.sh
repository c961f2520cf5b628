#!/usr/bin/env bash
# Build the app's OHIF viewer (build.mjs says what it is); scripts/setup.sh runs this when node and npm are there.
# Arguments go to build.mjs (--force: rebuild even when the inputs are unchanged).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
want="$(sha256sum package-lock.json | cut -c1-16)"
if [[ "$(cat node_modules/.installed-lock 2>/dev/null)" != "$want" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.installed-lock
fi
exec node build.mjs "$@"
