#!/usr/bin/env bash
# Set up (first time only) and run the test suite. Extra arguments go to pytest,
# e.g. ./test.sh -m slow (heavier checks), ./test.sh tests/unit (one kind: unit, server, e2e),
# ./test.sh tests/server/test_server.py -x; docs/how-to/tests.md describes the layout
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$ROOT/scripts/setup.sh"
# Orthanc + DICOMweb + Chromium for the OHIF/PACS end-to-end test (Debian packages; needs root or sudo).
# Without them that test skips with the reason (DINTS_REQUIRE_PACS=1, as in CI, makes it a failure).
"$ROOT/scripts/setup_pacs.sh" || echo "[test] PACS/browser packages not installed: tests/e2e/test_pacs_ohif.py will skip"
# the app's OHIF viewer, in case node came with the line above (seconds when it is up to date)
if command -v npm >/dev/null; then "$ROOT/plugins/ohif/build.sh"; fi
cd "$ROOT"
# the server tests start `monailabel`, whose launcher runs `python` from PATH: put the venv first
export PATH="$ROOT/.venv/bin:$PATH" VIRTUAL_ENV="$ROOT/.venv"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
