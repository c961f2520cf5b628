"""No web site can use the server from a visitor's browser: real headless Chromium, a hostile page of another
origin and a DNS-rebinding-style visit, all inside a private network namespace (``unshare -n``, loopback only).
The run itself is ``tests/e2e/cross_site_e2e.py``; its result and the server log stay in
``test-artifacts/cross_site/``. Needs Chromium (``./scripts/setup_pacs.sh``) and root for the namespace;
skips with the reason otherwise, unless ``DINTS_REQUIRE_PACS=1`` (CI) makes that a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .netns import namespace_problem, run_in_namespace, skip_or_fail

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "cross_site"

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def result():
    skip_or_fail(namespace_problem(), "cross-site browser test")
    proc = run_in_namespace("cross_site_e2e.py", ARTIFACTS, timeout=600)
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
