"""The DICOMweb proxy OHIF talks to (``/proxy/dicom/{qido,wado,stow}/...``), registered in front of MONAI Label's.

MONAI Label 0.8.5's proxy (``monailabel/endpoints/proxy.py``) sends the PACS the path without its query string,
so every QIDO search (``studies?PatientName=...``, ``limit``, ``includefield``) answers every study; it also reads
the whole answer into memory, passes the PACS's hop-by-hop headers back, forwards every header of a POST
(the browser's ``Authorization`` and cookies for this server included) and has no timeout. Here:

* the query string goes to the PACS exactly as the client sent it (byte for byte), and so does its ``Accept``
  (and ``Content-Type``/``Content-Length`` of a STOW body, ``Range`` and the cache validators); nothing else of
  the client's request - the PACS is reached with the server's own DICOMweb credentials, as the datastore is;
* the answer is streamed back as it arrives, with its status and its headers except the hop-by-hop ones (and
  the few that belong to the PACS's own connection: ``Server``, ``Date``, ``Set-Cookie``, ``WWW-Authenticate``);
* a PACS that cannot be reached or does not answer within ``MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT`` seconds
  (MONAI Label's setting, default 30) is a 502 whose message names nothing internal (no address, no error text).

Paths and prefixes are MONAI Label's: ``MONAI_LABEL_STUDIES`` is the PACS, ``MONAI_LABEL_{QIDO,WADO,STOW}_PREFIX``
are put in front of the path (a ``.../metadata`` asked through ``qido`` goes to the WADO prefix, as there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Optional

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from starlette.concurrency import run_in_threadpool

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/proxy", include_in_schema=False)

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded by a proxy
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade"})
# the PACS's own: this server answers with its Date/Server; its cookies and login prompt are not the browser's business
NOT_PASSED_BACK = frozenset({"server", "date", "set-cookie", "www-authenticate"})
# what of the client's request the PACS gets
FORWARDED_REQUEST_HEADERS = ("accept", "accept-encoding", "content-type", "content-length", "range",
                             "if-none-match", "if-modified-since")

_client: Optional[httpx.AsyncClient] = None
_client_loop = None
transport: Optional[httpx.AsyncBaseTransport] = None  # tests put an httpx.MockTransport here


def timeout_seconds() -> float:
    return float(getattr(settings, "MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT", 30.0) or 30.0)


def http_client() -> httpx.AsyncClient:
    """One pooled client per event loop (the server has one)."""
    global _client, _client_loop
    loop = asyncio.get_running_loop()
    if _client is None or _client_loop is not loop:
        _client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout_seconds()),
                                    follow_redirects=False)
        _client_loop = loop
    return _client


def upstream_path(op: str, path: str) -> str:
    """The PACS path of ``/proxy/dicom/<op>/<path>`` (MONAI Label's prefixes)."""
    prefix = {"wado": settings.MONAI_LABEL_WADO_PREFIX, "qido": settings.MONAI_LABEL_QIDO_PREFIX,
              "stow": settings.MONAI_LABEL_STOW_PREFIX}.get(op) or ""
    if op == "qido" and path.endswith("metadata"):  # some OHIF versions ask for metadata through qido
        prefix = settings.MONAI_LABEL_WADO_PREFIX or ""
    prefix = prefix.strip("/")
    return f"{prefix}/{path}" if prefix else path


def _raw_path(request: Request, op: str, path: str) -> str:
    """The path below ``/proxy/dicom/<op>/`` as the client encoded it (the decoded one when that is not at hand)."""
    raw = request.scope.get("raw_path")
    marker = f"/proxy/dicom/{op}/" if op else "/proxy/dicom/"
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw).decode("latin-1")
        at = text.find(marker)
        if at >= 0:
            return text[at + len(marker):]
    from urllib.parse import quote

    return quote(path, safe="/:@!$&'()*+,;=-._~")


async def _auth_headers() -> tuple[dict, Optional[tuple[str, str]]]:
    """The PACS's credentials, as MONAI Label's datastore and proxy use them (never the browser's)."""
    studies = settings.MONAI_LABEL_STUDIES or ""
    if "googleapis.com" in studies:
        def token() -> str:
            import google.auth
            import google.auth.transport.requests

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            credentials.refresh(google.auth.transport.requests.Request())
            return credentials.token

        return {"Authorization": f"Bearer {await run_in_threadpool(token)}"}, None
    user, password = settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
    return {}, ((user, password) if user and password else None)


def _answer_headers(response: httpx.Response) -> dict[str, str]:
    named_by_connection = {h.strip().lower() for h in response.headers.get("connection", "").split(",") if h.strip()}
    drop = HOP_BY_HOP | NOT_PASSED_BACK | named_by_connection
    out: dict[str, str] = {}
    for key, value in response.headers.multi_items():
        k = key.lower()
        if k in drop:
            continue
        out[k] = f"{out[k]}, {value}" if k in out else value
    return out


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"detail": f"the PACS (DICOMweb) {reason}; try again, or ask the administrator to check it"},
                        status_code=502)


async def proxy_dicom(request: Request, op: str, path: str):
    server = (settings.MONAI_LABEL_STUDIES or "").rstrip("/")
    if not server.startswith(("http://", "https://")):
        return JSONResponse({"detail": "this server's studies are not a DICOMweb PACS: there is nothing to proxy"},
                            status_code=404)
    url = f"{server}/{upstream_path(op, _raw_path(request, op, path))}"
    query = request.scope.get("query_string", b"")
    if query:
        url += "?" + bytes(query).decode("latin-1")
    headers = {k: request.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in request.headers}
    if "accept-encoding" not in headers:
        headers["accept-encoding"] = "identity"  # the client gets the bytes as the PACS sends them
    auth_headers, auth = await _auth_headers()
    headers.update(auth_headers)
    body = request.stream() if request.method == "POST" else None
    if request.method == "POST" and "content-length" not in headers:
        body = await request.body()  # a length the PACS can rely on (no chunked upload)
    client = http_client()
    started = time.time()
    try:
        upstream = client.build_request(request.method, url, headers=headers, content=body)
        response = await client.send(upstream, stream=True, auth=auth if auth else httpx.USE_CLIENT_DEFAULT)
    except httpx.TimeoutException:
        logger.warning(f"DICOMweb proxy: no answer from the PACS within {timeout_seconds():g} s ({op}/{path})")
        return _unavailable(f"did not answer within {timeout_seconds():g} s")
    except httpx.HTTPError as exc:
        logger.warning(f"DICOMweb proxy: the PACS cannot be reached ({op}/{path}): {type(exc).__name__}: {exc}")
        return _unavailable("cannot be reached")
    logger.debug(f"DICOMweb proxy {request.method} {op}/{path} -> {response.status_code} in {time.time() - started:.3f} s")

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:  # the status is sent already: the client sees a cut-off body
            logger.warning(f"DICOMweb proxy: the PACS's answer broke off ({op}/{path}): {type(exc).__name__}: {exc}")
        finally:
            await response.aclose()

    return StreamingResponse(stream(), status_code=response.status_code, headers=_answer_headers(response))


USER = settings.MONAI_LABEL_AUTH_ROLE_USER


@router.api_route("/dicom/{path:path}", methods=["GET", "POST"])
async def proxy(request: Request, path: str, user: User = Depends(RBAC(USER))):
    """``/proxy/dicom/{wado,qido,stow}/...`` with the server's prefix for that service, anything else as it is."""
    op, _, rest = path.partition("/")
    if op in ("wado", "qido", "stow"):
        return await proxy_dicom(request, op, rest)
    return await proxy_dicom(request, "", path)
