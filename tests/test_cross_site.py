"""No web site can use the server from a visitor's browser: real headless Chromium, a hostile page of another
origin and a DNS-rebinding-style visit, all inside a private network namespace (``unshare -n``, loopback only).
The run itself is ``tests/cross_site_e2e.py``; its result and the server log stay in
``test-artifacts/cross_site/``. Needs Chromium (``./scripts/setup_pacs.sh``) and root for the namespace;
skips with the reason otherwise, unless ``DINTS_REQUIRE_PACS=1`` (CI) makes that a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "cross_site"

pytestmark = pytest.mark.server


def missing() -> str | None:
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
        return "Chromium is not installed: run ./scripts/setup_pacs.sh"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare / ip (util-linux, iproute2) are needed for the private network namespace"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace (unshare -n needs root): {probe.stderr.decode().strip()}"
    return None


@pytest.fixture(scope="module")
def result():
    reason = missing()
    if reason:
        if os.environ.get("DINTS_REQUIRE_PACS") == "1":
            pytest.fail(f"the cross-site browser test cannot run: {reason}")
        pytest.skip(reason)
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    script = f"ip link set lo up && exec {sys.executable} {REPO_ROOT / 'tests' / 'cross_site_e2e.py'} --out {ARTIFACTS}"
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=600,
                          env=env, cwd=str(REPO_ROOT))
    (ARTIFACTS / "run.log").write_text(proc.stdout + proc.stderr)
    path = ARTIFACTS / "result.json"
    assert proc.returncode == 0 and path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(path.read_text())


def test_a_page_of_another_origin_reads_nothing(result):
    attempts = result["attempts"]
    for name in ("read_datastore", "download_image", "read_info_with_credentials", "delete_label"):
        assert str(attempts[name]).startswith("blocked"), (name, attempts[name])


def test_a_page_of_another_origin_changes_nothing(result):
    assert result["unchanged"], "the datastore changed under a cross-site page"
    assert result["refused_in_log"] >= 4, "the server did not refuse the page's requests itself"


def test_a_rebound_host_name_is_refused(result):
    assert result["rebind_status"] == 400, result
    assert "pancreas" not in result["rebind_body"] and "objects" not in result["rebind_body"]
