"""An ASGI layer in front of every route, the stock ones included.

* Every id-like query parameter (``image``, ``id``, ``label``, ``tag``, ``session_id``) and the name in
  ``/infer/{model}``, ``/train/{model}``, ``/scoring/{method}``, ``/activelearning/{strategy}``,
  ``/session/{id}``, ``/model/{model}`` and ``/batch/infer/{model}`` must be a valid name
  (:mod:`lib.datastore.names`); otherwise a 400 with the reason, before any route runs.
* An exception no route turned into an answer becomes a JSON 500 with its message, never a bare
  "Internal Server Error".
"""

from __future__ import annotations

import json
import logging
import re
import traceback
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


class RequestGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = _problem(scope)
        if problem:
            logger.warning(f"Refused {scope.get('method')} {scope.get('path')}: {problem}")
            return await _send_json(send, 400, {"detail": problem})
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            logger.error(f"{scope.get('method')} {scope.get('path')} failed:\n{traceback.format_exc()}")
            if not started:
                await _send_json(send, 500, {"detail": f"internal error: {type(exc).__name__}: {exc}"})
