"""Browser end-to-end runs inside a private network namespace (``unshare -n``, loopback only): what they need,
and running one of their scripts there. Without what they need they skip with the reason, unless
``DINTS_REQUIRE_PACS=1`` (CI) makes that a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def namespace_problem() -> str | None:
    """Why a browser run in a private network namespace cannot happen here (None: it can)."""
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
        return "Chromium is not installed: run ./scripts/setup_pacs.sh"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare / ip (util-linux, iproute2) are needed for the private network namespace"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace (unshare -n needs root): {probe.stderr.decode().strip()}"
    return None


def pacs_problem() -> str | None:
    """Why Orthanc + Chromium in a private namespace cannot run here (None: they can)."""
    from lib.pacs.orthanc import find_binary, find_dicomweb_plugin

    try:
        find_binary()
        find_dicomweb_plugin()
    except FileNotFoundError as exc:
        return str(exc)
    return namespace_problem()


def run_e2e(script: str, artifacts: Path, what: str, problem: str | None, args: str = "") -> dict:
    """Run an end-to-end script in its namespace (skip or fail on ``problem`` first) and return its
    ``result.json``; a failed run fails with its failed step's error and trace."""
    import json

    skip_or_fail(problem, what)
    proc = run_in_namespace(script, artifacts, timeout=1500, args=args)
    result = json.loads((artifacts / "result.json").read_text()) if (artifacts / "result.json").exists() else {}
    failed = [s for s in result.get("steps", []) if not s["ok"]]
    assert proc.returncode == 0 and result.get("ok"), (
        f"end-to-end run failed at {failed[0]['name'] if failed else '?'}: "
        f"{failed[0]['error'] if failed else proc.stdout[-3000:] + proc.stderr[-3000:]}\n"
        f"{failed[0].get('trace', '') if failed else ''}")
    return result


def skip_or_fail(reason: str | None, what: str) -> None:
    if reason:
        if os.environ.get("DINTS_REQUIRE_PACS") == "1":
            pytest.fail(f"the {what} cannot run: {reason}")
        pytest.skip(reason)


def run_in_namespace(script: str, artifacts: Path, timeout: float, args: str = "") -> subprocess.CompletedProcess:
    """Run ``tests/e2e/<script> --out <artifacts> [args]`` in a fresh network namespace with only loopback up; its
    output is kept in ``artifacts/run.log`` (the folder is emptied first)."""
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)
    command = f"ip link set lo up && exec {sys.executable} {HERE / script} --out {artifacts} {args}"
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["unshare", "-n", "bash", "-c", command], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(REPO_ROOT))
    (artifacts / "run.log").write_text(proc.stdout + proc.stderr)
    return proc
