#!/usr/bin/env bash
# Set up (first time only) and run the test suite. Extra arguments go to pytest,
# e.g. ./test.sh -m slow (heavier checks), ./test.sh tests/test_server.py -x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
# the server tests start `monailabel`, whose launcher runs `python` from PATH: put the venv first
export PATH="$ROOT/.venv/bin:$PATH" VIRTUAL_ENV="$ROOT/.venv"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
