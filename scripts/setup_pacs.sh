#!/usr/bin/env bash
# Install what a local PACS and the OHIF browser test need, from Debian's packages (once; idempotent):
#   orthanc, orthanc-dicomweb   the PACS and its DICOMweb plugin (./run_pacs.sh)
#   chromium                    headless browser for the OHIF end-to-end tests (tests/e2e/test_pacs_ohif.py)
#   nodejs, npm                 to build the app's OHIF viewer (plugins/ohif/build.sh; ./test.sh builds it after this)
# Needs root (or sudo) and apt. Python packages (dcmqi, playwright) come with ./scripts/setup.sh.
set -euo pipefail
want=()
command -v Orthanc >/dev/null 2>&1 || [[ -x /usr/sbin/Orthanc ]] || want+=(orthanc)
[[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] || want+=(orthanc-dicomweb)
if [[ "${1:-}" != "--no-browser" ]]; then
  command -v chromium >/dev/null 2>&1 || want+=(chromium)
  command -v node >/dev/null 2>&1 || want+=(nodejs)
  command -v npm >/dev/null 2>&1 || want+=(npm)
fi
if [[ ${#want[@]} -eq 0 ]]; then
  echo "[setup_pacs] Orthanc, its DICOMweb plugin, Chromium and node are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[setup_pacs] apt-get not found: install ${want[*]} with your system's package manager" >&2
  exit 2
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "[setup_pacs] installing ${want[*]} needs root" >&2; exit 2; }
  SUDO="sudo"
fi
echo "[setup_pacs] installing ${want[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
# Debian's package starts a system Orthanc on 8042/4242 with its own configuration: ours runs in a folder of its own
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
  $SUDO systemctl stop orthanc || true
  $SUDO systemctl disable orthanc >/dev/null 2>&1 || true
fi
echo "[setup_pacs] done"
