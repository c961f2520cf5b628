"""Turning authentication on, and the ``/auth`` routes the stock clients log in with.

``build_policy`` reads MONAI Label's own settings (``MONAI_LABEL_AUTH_ENABLE``, ``MONAI_LABEL_AUTH_REALM_URI``,
``MONAI_LABEL_AUTH_TOKEN_*``, ``MONAI_LABEL_AUTH_CLIENT_ID``) and the app's ``--conf auth_tokens``,
``allowed_hosts``, ``cors_origins``; ``install`` puts :class:`lib.server.access.AccessGuard` in front of every
route, removes MONAI Label's allow-every-origin CORS layer and its ``POST /reload`` (it rebuilt the app in the
running process and left it broken), and makes MONAI Label's ``RBAC`` see the verified user.

The ``/auth`` routes answer what the stock 3D Slicer module asks (MONAI Label 0.8.5 ``MONAILabelClient``:
``GET /auth/`` whether to show its login dialog, ``POST /auth/token`` with user name and password, then every
request with ``Authorization: Bearer``): with a provider the password grant is passed on to it, with a token
file the password is the person's token.
"""

from __future__ import annotations

import logging
import sys

from fastapi import APIRouter, Form, HTTPException
from monailabel.config import settings

from lib.server.access import AccessGuard, AccessPolicy, AuthError, ProviderUnavailable, current_identity
from lib.server.access import default_allowed_hosts, split_list

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/auth", tags=["Auth"])
_state: dict = {"policy": None, "realm": None}


def listen_host(argv: list[str] | None = None) -> str | None:
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    return None


def build_policy(conf: dict) -> AccessPolicy:
    """The policy for these settings; ValueError for a contradiction (both modes) or a bad token file."""
    token_path = (conf.get("auth_tokens") or "").strip()
    verify = None
    if settings.MONAI_LABEL_AUTH_ENABLE and token_path:
        raise ValueError("use either an identity provider (MONAI_LABEL_AUTH_ENABLE) or --conf auth_tokens, not both")
    if settings.MONAI_LABEL_AUTH_ENABLE:
        from lib.server.oidc import RealmKeys

        verify = RealmKeys(settings.MONAI_LABEL_AUTH_REALM_URI, timeout=float(conf.get("auth_timeout_seconds", 3)),
                           username_claim=settings.MONAI_LABEL_AUTH_TOKEN_USERNAME,
                           roles_claim=settings.MONAI_LABEL_AUTH_TOKEN_ROLES,
                           email_claim=settings.MONAI_LABEL_AUTH_TOKEN_EMAIL,
                           name_claim=settings.MONAI_LABEL_AUTH_TOKEN_NAME)
        _state["realm"] = verify
    elif token_path:
        from lib.server.token_file import TokenFile

        try:
            verify = TokenFile(token_path)
        except OSError as exc:
            raise ValueError(f"--conf auth_tokens: cannot read {token_path}: {exc.strerror}") from None
    hosts = split_list(conf.get("allowed_hosts"))
    return AccessPolicy(verify=verify, allowed_hosts={h.lower() for h in hosts if h != "*"} or
                        default_allowed_hosts(listen_host()), cors_origins=tuple(split_list(conf.get("cors_origins"))),
                        any_host="*" in hosts)


def install(app, conf: dict) -> AccessPolicy:
    from fastapi.middleware.cors import CORSMiddleware
    from monailabel.endpoints.user import auth as ml_auth
    from starlette.middleware import Middleware

    policy = build_policy(conf)
    _state["policy"] = policy
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/reload"]
    middleware = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    if policy.cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(policy.cors_origins), allow_credentials=True,
                                        allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
                                        allow_headers=["Authorization", "Content-Type"]))
    middleware.insert(0, Middleware(AccessGuard, policy=policy))
    app.user_middleware[:] = middleware
    ml_auth.from_token = _verified_user  # MONAI Label's RBAC dependency calls it by name
    host = listen_host()
    mode = "identity provider" if settings.MONAI_LABEL_AUTH_ENABLE else "token file" if policy.enabled else "off"
    logger.info(f"Authentication: {mode}; allowed hosts: {'any' if policy.any_host else sorted(policy.allowed_hosts)}; "
                f"CORS origins: {list(policy.cors_origins) or 'none'}")
    if not policy.enabled and host not in (None, "127.0.0.1", "localhost", "::1"):
        logger.warning(f"The server listens on {host} with authentication OFF: anybody who can reach it can read and "
                       f"change every image and label. Turn on --conf auth_tokens or an identity provider (README).")
    return policy


def _verified_user(token: str = ""):
    from monailabel.endpoints.user.auth import DEFAULT_USER, User

    identity = current_identity()
    if identity is None:
        return DEFAULT_USER
    return User(username=identity.username, email=identity.email, name=identity.name,
                roles=identity.implied_roles())


@router.get("/", summary="Whether the server asks for a token")
def auth_enabled():
    policy = _state["policy"]
    return {"enabled": bool(policy and policy.enabled), "client_id": settings.MONAI_LABEL_AUTH_CLIENT_ID,
            "realm": settings.MONAI_LABEL_AUTH_REALM_URI if settings.MONAI_LABEL_AUTH_ENABLE else None}


@router.post("/token", summary="Log in: a token for a user name and password (token file: the token itself)")
def access_token(username: str = Form(""), password: str = Form("")):
    from lib.server.oidc import fetch_token

    policy = _state["policy"]
    if policy is None or not policy.enabled:
        return {"access_token": None, "token_type": None}
    try:
        if _state["realm"] is not None:
            return fetch_token(_state["realm"], settings.MONAI_LABEL_AUTH_CLIENT_ID, username, password)
        identity = policy.verify(password)
        if username and username != identity.username:
            raise AuthError("wrong user name or token")
        return {"access_token": password, "token_type": "Bearer"}
    except ProviderUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None
    except AuthError as exc:
        raise HTTPException(status_code=401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


@router.get("/token/valid", summary="Who the token identifies")
def token_valid():
    identity = current_identity()
    if identity is None:
        return _verified_user().model_dump()
    return {"username": identity.username, "email": identity.email, "name": identity.name,
            "roles": identity.implied_roles()}
