"""An ASGI layer in front of every route, the stock ones included.

* Every id-like query parameter (``image``, ``id``, ``label``, ``tag``, ``session_id``) and the name in
  ``/infer/{model}``, ``/train/{model}``, ``/scoring/{method}``, ``/activelearning/{strategy}``,
  ``/session/{id}``, ``/model/{model}`` and ``/batch/infer/{model}`` must be a valid name
  (:mod:`lib.datastore.names`); otherwise a 400 with the reason, before any route runs.
* A request body may not exceed its route's cap (:func:`body_cap`: ``--conf max_upload_mb`` for volumes and
  weights, ``max_label_upload_mb`` for labels, 16 MB for everything else): a ``Content-Length`` over it is
  answered 413 before a byte is read, a body that grows past it is cut off with 413 as it arrives (uploads go
  to disk as they stream, never whole into memory). A body that stops arriving for ``upload_idle_seconds``
  (default 60), or that arrives slower than ``upload_min_kbps`` (default 10 KB/s, averaged, after the first
  ``upload_idle_seconds``), is answered 408, so a client trickling bytes cannot hold a worker for ever.
* An exception no route turned into an answer becomes a JSON 500 with an error id (the log holds the details
  under that id), never a bare "Internal Server Error" and never a path or a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from urllib.parse import parse_qsl

from lib.datastore.names import name_problem

logger = logging.getLogger(__name__)

ID_QUERY_KEYS = {"image": "image id", "id": "image id", "label": "label id", "tag": "label tag",
                 "session_id": "session id"}
_NAMED_PATH = re.compile(r"^/(infer/wsi|infer|train|scoring|activelearning|session|model/info|model|batch/infer)/(?P<name>.+?)/?$")


def _problem(scope) -> str | None:
    path = scope.get("path", "")
    m = _NAMED_PATH.match(path)
    if m:
        what = "session id" if m.group(1) == "session" else "name"
        problem = name_problem(m.group("name"))
        if problem:
            return f"{what} in the path {problem}"
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ID_QUERY_KEYS and value != "":
            problem = name_problem(value)
            if problem:
                shown = value if len(value) <= 60 else value[:60] + "..."
                return f"{ID_QUERY_KEYS[key]} {shown!r} {problem}: ids and tags are names, not paths"
    return None


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


MB = 1 << 20
_VOLUME_UPLOADS = re.compile(r"^/(infer/[^/]+|datastore/image|session/?.*|model/[^/]+|proxy/dicom/stow/.*)/?$")
_LABEL_UPLOADS = re.compile(r"^/datastore/(label)?/?$")


def body_cap(method: str, path: str, volume_mb: float, label_mb: float) -> int:
    """The most bytes a request body may hold on this route."""
    if method in ("PUT", "POST") and _VOLUME_UPLOADS.match(path):
        return int(volume_mb * MB)
    if method == "PUT" and _LABEL_UPLOADS.match(path):
        return int(label_mb * MB)
    return 16 * MB


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _Refused(Exception):
    """The guard has answered the request itself while the route was reading its body."""


class RequestGuard:
    def __init__(self, app, volume_mb: float = 4096, label_mb: float = 1024, idle_seconds: float = 60,
                 min_kbps: float = 10):
        self.app = app
        self.volume_mb, self.label_mb, self.idle_seconds = float(volume_mb), float(label_mb), float(idle_seconds)
        self.min_bytes_per_second = float(min_kbps) * 1024

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope.get("method"), scope.get("path", "")
        problem = _problem(scope)
        if problem:
            logger.warning(f"Refused {method} {path}: {problem}")
            return await _send_json(send, 400, {"detail": problem})
        cap = body_cap(method, path, self.volume_mb, self.label_mb)
        length = _content_length(scope)
        if length is not None and length > cap:
            logger.warning(f"Refused {method} {path}: a body of {length} bytes (cap {cap})")
            return await _send_json(send, 413, {"detail": f"the request body ({length / MB:.1f} MB) is over this "
                                                          f"route's limit of {cap / MB:.0f} MB"})
        started = False
        answered = False
        received = 0
        began = time.monotonic()

        async def tracking_send(message):
            nonlocal started
            if answered:
                return  # the guard has answered already (413/408): whatever the route says goes nowhere
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def answer(status: int, detail: str):
            nonlocal answered
            if not started and not answered:
                answered = True
                await _send_json(send, status, {"detail": detail})
            raise _Refused(detail)

        async def counting_receive():
            nonlocal received
            import anyio

            try:
                with anyio.fail_after(self.idle_seconds):
                    message = await receive()
            except TimeoutError:
                logger.warning(f"Cut off {method} {path}: no body data for {self.idle_seconds:g} s")
                await answer(408, f"the request body stopped arriving (nothing for {self.idle_seconds:g} s)")
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                elapsed = time.monotonic() - began
                if message.get("more_body") and elapsed > self.idle_seconds and \
                        received < self.min_bytes_per_second * elapsed:
                    logger.warning(f"Cut off {method} {path}: {received} bytes in {elapsed:.0f} s")
                    await answer(408, f"the request body arrives too slowly ({received / max(elapsed, 1e-9) / 1024:.2f} "
                                      f"KB/s; at least {self.min_bytes_per_second / 1024:g} KB/s)")
                if received > cap:
                    logger.warning(f"Cut off {method} {path}: body over {cap} bytes")
                    await answer(413, f"the request body is over this route's limit of {cap / MB:.0f} MB")
            return message

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _Refused:
            return
        except Exception as exc:
            if answered:
                return
            error_id = uuid.uuid4().hex[:12]
            logger.error(f"{method} {path} failed (error {error_id}):\n{traceback.format_exc()}")
            if not started:
                await _send_json(send, 500, {"detail": f"internal error ({type(exc).__name__}); the server log has "
                                                       f"the details under error id {error_id}",
                                             "error_id": error_id})
