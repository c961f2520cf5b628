#!/usr/bin/env bash
# Create .venv/ in the repository root and install everything the app, tests and benchmarks need.
# Idempotent: a second run with unchanged requirements only checks the stamp and exits.
#   PYTHON=python3.11      interpreter for the venv (3.10-3.12; 3.11 is what CI uses)
#   TORCH_INDEX_URL=URL     where to take torch 2.13.0 from, e.g. https://download.pytorch.org/whl/cpu
#                           for a CPU-only build on a machine whose default index serves CUDA builds
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

# the app's OHIF viewer (plugins/ohif/build.mjs says what it is): built where node and npm are installed, checked
# against its inputs on every run (seconds when up to date); without them /ohif/ serves the stock monailabel build
if command -v node >/dev/null && command -v npm >/dev/null; then
  "$ROOT/plugins/ohif/build.sh" || { echo "[setup] the OHIF build failed (above); /ohif/ will serve the stock build" >&2; }
else
  echo "[setup] node/npm not found: /ohif/ will serve the stock monailabel build (apt install nodejs npm, then rerun)"
fi

stamp="$VENV/.dints-label-installed"
want="$(cat requirements.txt requirements-monailabel.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "[setup] environment up to date ($VENV)"
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "[setup] installing torch 2.13.0"
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
  python -m pip install -q "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
else
  python -m pip install -q "torch==2.13.0"
fi
echo "[setup] installing requirements.txt"
python -m pip install -q -r requirements.txt
echo "[setup] installing monailabel without its declared dependencies (see requirements-monailabel.txt)"
python -m pip install -q --no-deps -r requirements-monailabel.txt
python - <<'PY'
import importlib, sys
import torch, monai, monailabel
missing = [m for m in ("nibabel", "nrrd", "itk", "pydicom_seg", "fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
import os, shutil
if not shutil.which("itkimage2segimage", path=os.path.dirname(sys.executable)):
    missing.append("itkimage2segimage (dcmqi)")
if missing:
    sys.exit(f"[setup] missing after install: {missing}")
print(f"[setup] torch {torch.__version__} (CUDA {torch.version.cuda}), monai {monai.__version__}, monailabel {monailabel.__version__}")
PY
echo "$want" > "$stamp"
echo "[setup] done"
