"""Services we start on this machine (the app's server, Orthanc, a training rendezvous): a free loopback port for
one, and waiting for it to answer over HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Callable

import requests


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it); the caller binds it soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, timeout: float, name: str,
                       details: Callable[[], str] = lambda: "", stop: Callable[[], None] | None = None,
                       interval: float = 0.5, request_timeout: float = 5.0) -> None:
    """Poll ``url`` until it answers 200. :class:`RuntimeError` naming the service (and ``details()``, e.g. its
    log) when the process exits first or ``timeout`` passes (then ``stop()`` is called first)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start-up (code {proc.returncode}): {details()}")
        try:
            if requests.get(url, timeout=request_timeout).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(interval)
    if stop is not None:
        stop()
    raise RuntimeError(f"{name} did not answer on {url} within {timeout:g} s: {details()}")
