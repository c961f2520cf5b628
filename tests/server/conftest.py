"""Fixtures of the server tests: ``start_server``, the one factory every module uses for the real
``monailabel start_server`` process (tests/support/server.py), and the 3D Slicer plugin's client for a module's
``server`` fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.server import Server


@pytest.fixture(scope="module")
def start_server():
    """``start_server(studies, conf=None, *, env=None, log_path=None, workdir=None, timeout=120.0)``: start the
    app on ``studies`` with ``--conf`` ``conf`` (on top of the defaults in :class:`Server`: no background scoring,
    no background build) and return it once it serves. Every server it started and that is still running is stopped
    when the module ends; a fixture or a test that needs its server gone earlier (a parametrised fixture, a test's
    own server) still calls ``stop()`` itself (stopping twice is harmless)."""
    started: list[Server] = []

    def start(studies: Path | str, conf: dict[str, str] | None = None, *, env: dict[str, str] | None = None,
              log_path: Path | None = None, workdir: Path | None = None, timeout: float = 120.0) -> Server:
        srv = Server(studies, conf=conf, log_path=log_path, env=env, workdir=workdir)
        started.append(srv)
        return srv.start(timeout=timeout)

    yield start
    for srv in reversed(started):
        srv.stop()


@pytest.fixture(scope="module")
def client(server, module_tmp):
    """The 3D Slicer plugin's client for the module's ``server`` fixture, with its own download folder
    (with the default /tmp the server's clean-up of its result file can delete the client's copy)."""
    from monailabel.client.client import MONAILabelClient

    tmp = module_tmp / "client"
    tmp.mkdir()
    return MONAILabelClient(server.url, tmpdir=str(tmp))
