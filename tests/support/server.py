"""Start the real ``monailabel start_server`` process for the app on a free loopback port.

Pytest tests get it from the ``start_server`` fixture factory (tests/server/conftest.py), which stops it at
teardown; the browser end-to-end scripts (tests/e2e/*_e2e.py) run outside pytest and use the class directly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from lib.wait import free_port, wait_until_serving

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "apps" / "dints_pancreas"


class Server:
    def __init__(self, studies: Path | str, conf: dict[str, str] | None = None, log_path: Path | None = None, env=None,
                 workdir: Path | None = None):
        """``studies``: a folder, or a DICOMweb URL (then ``workdir`` says where the server runs)."""
        remote = str(studies).startswith(("http://", "https://"))
        self.studies = str(studies) if remote else Path(studies)
        self.workdir = Path(workdir) if workdir else Path(studies).parent
        # background scoring and the background build of the faster CPU network (both on by default in the app)
        # would compete for the CPU with what a test measures; the active-learning tests switch scoring on
        # themselves, the build is tested in tests/unit/test_backends.py; bf16 (cpu_precision auto, its gate at start-up)
        # in tests/unit/test_reduced_precision.py and tests/server/test_bundle_server.py
        self.conf = {"auto_scoring": "false", "background_compile": "false", "cpu_precision": "fp32", **(conf or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or (self.workdir / f"server_{self.port}.log")
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "Server":
        monailabel = shutil.which("monailabel", path=os.path.dirname(sys.executable)) or "monailabel"
        cmd = [monailabel, "start_server", "--app", str(APP_DIR), "--studies", str(self.studies),
               "--host", "127.0.0.1", "--port", str(self.port)]
        for k, v in self.conf.items():
            cmd += ["--conf", k, str(v)]
        env = dict(os.environ)
        # monailabel's launcher is a shell script that runs `python -m monailabel.main` from PATH:
        # make that the interpreter running the tests, whether or not the venv is activated
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update(self.env or {})
        self._log = open(self.log_path, "wb")
        # run from an unrelated working directory: the app must not depend on it
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(self.workdir),
                                     env=env, start_new_session=True)
        wait_until_serving(self.proc, f"{self.url}/auth/", timeout, "server", details=lambda: "\n" + self.log()[-4000:],
                           stop=self.stop)
        return self

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def wait_train(server: Server, task_id: str | None = None, timeout: float = 240.0) -> dict:
    """Wait for the latest (or the given) train task to end; returns it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        tasks = requests.get(f"{server.url}/train/", params={"all": True}, timeout=30).json()
        tasks = tasks if isinstance(tasks, list) else [tasks]
        task = next((t for t in tasks if t["id"] == task_id), None) if task_id else tasks[-1]
        if task and task["status"] in ("DONE", "ERROR", "STOPPED"):
            return task
        time.sleep(1.0)
    raise AssertionError(f"train task did not end within {timeout}s:\n{server.log()[-4000:]}")
