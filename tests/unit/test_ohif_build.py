"""Our OHIF viewer (plugins/ohif): the panel's pure logic (node's own test runner on ``plugins/ohif/test``), and which
build ``/ohif/`` serves (``--conf ohif``). The viewer in a browser: tests/e2e/test_ohif_panel.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN = REPO_ROOT / "plugins" / "ohif"


def test_the_panels_label_geometry_and_nrrd_logic():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt install nodejs): the panel's JavaScript tests need it")
    proc = subprocess.run([node, "--test", "test/"], cwd=PLUGIN, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout


def test_the_served_build_is_ours_when_built_else_the_stock_one_with_a_reason(tmp_path, caplog):
    from lib.server.ohif import choose_build, ohif_folder, stock_folder

    built = tmp_path / "build"
    built.mkdir()
    (built / "index.html").write_text("<html></html>")
    try:
        assert choose_build("ours", built) == str(built) and ohif_folder() == str(built)
        assert choose_build("stock", built) == stock_folder()
        with caplog.at_level("WARNING"):
            assert choose_build("ours", tmp_path / "none") == stock_folder()
        assert "plugins/ohif/build.sh" in caplog.text  # says how to get ours
        with pytest.raises(ValueError, match="--conf ohif must be one of ours, stock"):
            choose_build("newest", built)
    finally:
        choose_build("ours")  # back to what this checkout serves


def test_a_tampered_ohif_tarball_is_refused_and_deleted(tmp_path):
    """The build takes OHIF from the npm registry once and keeps it in .cache/: a tarball that is not the pinned
    release (sha512 of package.json) stops the build, is deleted, and the served build is left as it was."""
    import json

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt install nodejs)")
    plugin = tmp_path / "ohif"
    shutil.copytree(PLUGIN, plugin, ignore=shutil.ignore_patterns("node_modules", "build", "build.tmp", ".cache"))
    version = json.loads((plugin / "package.json").read_text())["ohif"]["version"]
    (plugin / ".cache").mkdir()
    fake = plugin / ".cache" / f"ohif-app-{version}.tgz"
    fake.write_bytes(b"not the release")
    (plugin / "build").mkdir()
    (plugin / "build" / "index.html").write_text("the build being served")
    proc = subprocess.run([node, "build.mjs", "--force"], cwd=plugin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "does not match the integrity pinned in package.json" in proc.stderr
    assert not fake.exists()
    assert (plugin / "build" / "index.html").read_text() == "the build being served"
