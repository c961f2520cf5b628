"""Who may call what: authentication, roles, and the checks that keep other web sites out.

One ASGI layer in front of every route (ours and MONAI Label's) decides, before a route runs:

* **Host**: the ``Host`` header must name this server (``--conf allowed_hosts``; by default the loopback names,
  the machine's own names and the ``--host`` it listens on). A page on another site whose DNS name was made to
  point at 127.0.0.1 (DNS rebinding) sends its own name and is refused (400).
* **Origin**: a request a browser sends on behalf of another site's page carries that page's ``Origin``; unless it
  is this server's own origin or one of ``--conf cors_origins`` it is refused (403) whatever its method, so a
  "simple" cross-site POST cannot change anything either. CORS headers are sent only for the listed origins
  (MONAI Label's own layer, which answered every origin with credentials allowed, is removed).
* **Who**: with authentication on, every route but the public ones (the viewer's static files, the API page,
  ``/auth/``) needs a bearer token, and the route's role (:data:`ROUTE_ROLES`; roles are ordered user <
  annotator < reviewer < admin, a higher one includes the lower ones). Two ways to turn it on:

  - an OpenID Connect provider (Keycloak, as MONAI Label documents it: ``MONAI_LABEL_AUTH_ENABLE=true``,
    ``MONAI_LABEL_AUTH_REALM_URI``): RS256 tokens checked against the realm's published keys
    (:class:`lib.server.oidc.RealmKeys`: fetched off the event loop with a timeout, cached, a failure remembered
    for a while so an unreachable provider never holds up the requests that do not need it);
  - a token file for a small team without a provider (``--conf auth_tokens FILE``, :mod:`lib.server.token_file`).

  The verified user is what MONAI Label's own ``RBAC`` dependency then sees (its ``from_token`` is replaced), so
  labels and logs record who did it.

Problems are answered as JSON ``{"detail": ...}`` without internals.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from lib.server.roles import ADMIN, ANNOTATOR, REVIEWER, USER, Identity

logger = logging.getLogger(__name__)

PUBLIC = "public"

# (methods, path pattern, role): the first match decides; a route that matches none needs the admin role.
ROUTE_ROLES: list[tuple[frozenset[str], str, str]] = [
    (frozenset({"GET"}), r"/(favicon\.ico)?", PUBLIC),
    (frozenset({"GET"}), r"/(docs|openapi\.json)", PUBLIC),
    (frozenset({"GET"}), r"/static/.*", PUBLIC),
    (frozenset({"GET"}), r"/ohif(/.*)?", PUBLIC),
    (frozenset({"GET"}), r"/auth/?", PUBLIC),
    (frozenset({"POST"}), r"/auth/token/?", PUBLIC),
    (frozenset({"GET"}), r"/auth/token/valid/?", USER),
    (frozenset({"GET"}), r"/info/?", USER),
    (frozenset({"GET"}), r"/datastore/(image|label|label/versions|label/version)/?", USER),
    (frozenset({"GET"}), r"/datastore/?", USER),
    (frozenset({"GET"}), r"/datastore/dataset/?", ANNOTATOR),
    (frozenset({"PUT"}), r"/datastore/(label|image)?/?", ANNOTATOR),
    (frozenset({"POST"}), r"/datastore/label/restore/?", REVIEWER),
    (frozenset({"DELETE"}), r"/datastore/.*", ADMIN),
    (frozenset({"POST"}), r"/infer/[^/]+/?", USER),  # saving its answer as a label needs annotator (the route)
    (frozenset({"PUT", "GET", "DELETE"}), r"/session/.*", USER),
    (frozenset({"POST"}), r"/activelearning/[^/]+/?", USER),
    (frozenset({"GET"}), r"/train/?", USER),
    (frozenset({"GET"}), r"/model/.*", USER),
    (frozenset({"GET", "POST"}), r"/proxy/dicom/.*", USER),
    (frozenset({"POST"}), r"/scoring/[^/]+/?", ANNOTATOR),
    (frozenset({"POST", "DELETE"}), r"/train/.*", ADMIN),
    (frozenset({"PUT"}), r"/model/.*", ADMIN),
]
_COMPILED = [(methods, re.compile(pattern + r"\Z"), role) for methods, pattern, role in ROUTE_ROLES]


def required_role(method: str, path: str) -> str:
    """The role a request needs (:data:`PUBLIC` for none). Unlisted routes need the admin role; a HEAD request
    needs what the GET of its path needs."""
    method = "GET" if method == "HEAD" else method
    for methods, pattern, role in _COMPILED:
        if method in methods and pattern.match(path):
            return role
    return ADMIN


_current: contextvars.ContextVar[Optional[Identity]] = contextvars.ContextVar("dints_label_user", default=None)


def current_identity() -> Optional[Identity]:
    """The user the request being served was verified as (None with authentication off)."""
    return _current.get()


def require_role(role: str, what: str) -> None:
    """For what a route decides from the request's content (e.g. ``/infer`` with ``save_label``): InputError 403
    unless the verified user holds ``role`` (nothing to check with authentication off)."""
    from lib.errors import InputError

    identity = _current.get()
    if identity is not None and not identity.has(role):
        raise InputError(f"{what} needs the '{role}' role; {identity.username} has "
                         f"{', '.join(identity.roles) or 'none'}", 403)


def host_name(host_header: str) -> str:
    """``Host`` header -> lower-case name without the port (``[::1]:8000`` -> ``::1``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def default_allowed_hosts(listen_host: str | None) -> set[str]:
    names = {"localhost", "127.0.0.1", "::1"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    if listen_host and listen_host not in ("0.0.0.0", "::"):
        names.add(listen_host.lower())
    return names


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@dataclass
class AccessPolicy:
    """What the guard enforces; built once from the server's settings and ``--conf``."""

    verify: Optional[Callable[[str], Identity]]  # token -> identity (raises AuthError); None: authentication off
    allowed_hosts: set[str]
    cors_origins: Sequence[str] = field(default_factory=tuple)
    any_host: bool = False  # allowed_hosts '*': the operator checks Host in front (reverse proxy)

    @property
    def enabled(self) -> bool:
        return self.verify is not None

    def host_ok(self, host_header: str | None) -> bool:
        if self.any_host:
            return True
        return bool(host_header) and host_name(host_header) in self.allowed_hosts

    def origin_ok(self, origin: str, host_header: str | None, scheme: str) -> bool:
        """The page's origin is this server itself (``scheme://Host``) or a listed one."""
        origin = origin.strip().lower().rstrip("/")
        if origin in (o.lower().rstrip("/") for o in self.cors_origins):
            return True
        if not host_header:
            return False
        own = {f"{s}://{host_header.strip().lower()}" for s in (scheme, "http", "https")}
        return origin in own


class AuthError(Exception):
    """A token that does not identify anybody (401)."""


class ProviderUnavailable(AuthError):
    """The identity provider cannot be asked right now (503: the token may well be good)."""


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _deny(send, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


class AccessGuard:
    """The ASGI layer (see the module docstring). ``policy`` is read per request, so tests may swap it."""

    def __init__(self, app, policy: AccessPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        policy = self.policy
        method, path = scope.get("method", "GET"), scope.get("path", "/")
        host = _header(scope, b"host")
        if not policy.host_ok(host):
            logger.warning(f"Refused {method} {path}: Host {host!r} is not one of this server's names")
            return await _deny(send, 400, "this server is not reached by that name (Host header): "
                                          "add it to --conf allowed_hosts if it is yours")
        origin = _header(scope, b"origin")
        if origin and origin != "null" and not policy.origin_ok(origin, host, scope.get("scheme", "http")):
            logger.warning(f"Refused {method} {path} from the page of another site ({origin})")
            return await _deny(send, 403, "requests from other web sites are not allowed (Origin); "
                                          "list trusted origins with --conf cors_origins")
        if origin == "null":
            return await _deny(send, 403, "requests from opaque origins are not allowed")
        if method == "OPTIONS":  # a CORS preflight of a listed origin: answered by the CORS layer inside
            return await self.app(scope, receive, send)
        role = required_role(method, path)
        identity = None
        if policy.enabled and role != PUBLIC:
            token = bearer_token(_header(scope, b"authorization"))
            challenge = [(b"www-authenticate", b"Bearer")]
            if not token:
                return await _deny(send, 401, "authentication required: send 'Authorization: Bearer <token>'",
                                   challenge)
            try:
                identity = await _verify_off_loop(policy.verify, token)
            except ProviderUnavailable as exc:
                return await _deny(send, 503, f"cannot check the token now: {exc}")
            except AuthError as exc:
                logger.info(f"Refused {method} {path}: {exc}")
                return await _deny(send, 401, f"invalid token: {exc}", challenge)
            if not identity.has(role):
                logger.info(f"Refused {method} {path} to {identity.username}: needs role {role}")
                return await _deny(send, 403, f"this needs the '{role}' role; {identity.username} has "
                                              f"{', '.join(identity.roles) or 'none'}")
        reset = _current.set(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(reset)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


async def _verify_off_loop(verify: Callable[[str], Identity], token: str) -> Identity:
    """Run the verifier in a worker thread: fetching a provider's keys must never stall the event loop."""
    import anyio

    return await anyio.to_thread.run_sync(verify, token)
