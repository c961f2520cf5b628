#!/usr/bin/env bash
# Set up (first time only) and start the MONAI Label server on the sample datastore.
#   ./run.sh                         http://127.0.0.1:8000, studies from sample-datastore/
#   PORT=8001 STUDIES=/data/ct ./run.sh --conf profile gpu
# Extra arguments go to `monailabel start_server` (e.g. --conf KEY VALUE, see README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$ROOT/scripts/setup.sh"
# monailabel's launcher script runs `python -m monailabel.main` from PATH: put the venv first
export PATH="$ROOT/.venv/bin:$PATH" VIRTUAL_ENV="$ROOT/.venv"
# fewer glibc malloc arenas: request threads otherwise each keep their own freed memory (README, "Server")
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec "$ROOT/.venv/bin/monailabel" start_server \
  --app "$ROOT/apps/dints_pancreas" \
  --studies "${STUDIES:-$ROOT/sample-datastore}" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
