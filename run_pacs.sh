#!/usr/bin/env bash
# Start a local PACS (Orthanc + DICOMweb, loopback clients only) with the sample studies as DICOM series, and the
# app against it; Ctrl-C stops both.
#   ./run_pacs.sh                          PACS in ~/dints-label-pacs, app on http://127.0.0.1:8000 (OHIF: /ohif/)
#   PACS_DIR=/data/pacs ORTHANC_PORT=8043 PORT=8001 ./run_pacs.sh --conf profile gpu
#   LOAD=none ./run_pacs.sh                start with what the PACS already holds
#   LABELS=1 ./run_pacs.sh                 also load the sample studies' final labels, as DICOM SEGs
# Extra arguments go to `monailabel start_server`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/setup_pacs.sh" --no-browser
export PATH="$ROOT/.venv/bin:$PATH" VIRTUAL_ENV="$ROOT/.venv"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
PACS_DIR="${PACS_DIR:-$HOME/dints-label-pacs}"
ORTHANC_PORT="${ORTHANC_PORT:-8042}"
LOAD="${LOAD:-$ROOT/sample-datastore}"
mkdir -p "$PACS_DIR"
args=(--folder "$PACS_DIR" --port "$ORTHANC_PORT" --pid-file "$PACS_DIR/orthanc.pid")
[[ "$LOAD" != "none" ]] && args+=(--load "$LOAD")
[[ -n "${LABELS:-}" ]] && args+=(--labels)
cd "$ROOT"
"$ROOT/.venv/bin/python" -m lib.pacs.orthanc "${args[@]}" &
keeper=$!
trap 'kill $keeper 2>/dev/null; wait $keeper 2>/dev/null' EXIT INT TERM
# wait until the series are loaded (the keeper prints this line), or the keeper died
for _ in $(seq 1 600); do
  kill -0 $keeper 2>/dev/null || { echo "Orthanc did not start: see $PACS_DIR/orthanc.log" >&2; exit 2; }
  curl -sf "http://127.0.0.1:$ORTHANC_PORT/dicom-web/studies" >/dev/null 2>&1 && [[ "$LOAD" == "none" || -f "$PACS_DIR/.loaded" ]] && break
  sleep 1
done
export MONAI_LABEL_DICOMWEB_CACHE_PATH="${MONAI_LABEL_DICOMWEB_CACHE_PATH:-$PACS_DIR/monailabel-cache}"
"$ROOT/.venv/bin/monailabel" start_server \
  --app "$ROOT/apps/dints_pancreas" \
  --studies "http://127.0.0.1:$ORTHANC_PORT/dicom-web" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
