"""Tokens of an OpenID Connect provider (Keycloak, as MONAI Label documents it), checked without trusting it blindly.

* Only RS256 is accepted: an ``alg: none`` token, or one signed with HS256 using the public key as the secret,
  is refused before any key is looked at.
* The realm's public keys (its JWKS, found through ``/.well-known/openid-configuration`` or Keycloak's
  ``/protocol/openid-connect/certs``) are fetched with a timeout and cached; a token naming a key not in the
  cache triggers at most one fetch per ``refetch_seconds``. A fetch that failed is remembered for as long, so an
  unreachable provider costs one timeout, not one per request; a request without a token never waits for it.
* ``exp`` is required, and ``iss`` must be the realm when the token carries it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict

import jwt
import requests

from lib.server.access import AuthError, ProviderUnavailable
from lib.server.roles import Identity

logger = logging.getLogger(__name__)


def claim(payload: dict, path: str):
    """``realm_access#roles`` -> payload["realm_access"]["roles"] (MONAI Label's ``#`` path syntax)."""
    value = payload
    for part in path.split("#"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class RealmKeys:
    def __init__(self, realm_uri: str, timeout: float = 3.0, refetch_seconds: float = 30.0,
                 username_claim: str = "preferred_username", roles_claim: str = "realm_access#roles",
                 email_claim: str = "email", name_claim: str = "name"):
        self.realm_uri = realm_uri.rstrip("/")
        self.timeout = float(timeout)
        self.refetch_seconds = float(refetch_seconds)
        self.claims = (username_claim, roles_claim, email_claim, name_claim)
        self._keys: dict[str, object] = {}
        self._fetched_at = -1e18
        self._failed: str | None = None
        self._lock = threading.Lock()
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    # ---- the provider's endpoints ------------------------------------------------------------------
    def _discovery(self) -> dict:
        try:
            r = requests.get(f"{self.realm_uri}/.well-known/openid-configuration", timeout=self.timeout)
            r.raise_for_status()
            return r.json()
        except (requests.RequestException, ValueError):
            return {}

    def token_endpoint(self) -> str:
        return self._discovery().get("token_endpoint") or f"{self.realm_uri}/protocol/openid-connect/token"

    def _fetch(self) -> None:
        jwks_uri = self._discovery().get("jwks_uri") or f"{self.realm_uri}/protocol/openid-connect/certs"
        r = requests.get(jwks_uri, timeout=self.timeout)
        r.raise_for_status()
        keys = {}
        for jwk in r.json().get("keys", []):
            if jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
                continue
            keys[jwk.get("kid", "")] = jwt.PyJWK(jwk, algorithm="RS256").key
        if not keys:
            raise ValueError("the provider publishes no RSA signing key")
        self._keys = keys

    def key(self, kid: str):
        cached = self._keys  # replaced whole by a fetch: a request whose key is cached never waits for one
        if kid in cached:
            return cached[kid]
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            if time.monotonic() - self._fetched_at < self.refetch_seconds:
                if self._failed:
                    raise ProviderUnavailable(f"the identity provider's keys cannot be fetched ({self._failed})")
                raise AuthError("signed with a key the identity provider does not publish")
            self._fetched_at = time.monotonic()
            try:
                self._fetch()
                self._failed = None
            except (requests.RequestException, ValueError, jwt.PyJWTError) as exc:
                self._failed = type(exc).__name__
                logger.error(f"Cannot fetch the signing keys of {self.realm_uri}: {exc}")
                raise ProviderUnavailable(f"the identity provider's keys cannot be fetched ({self._failed})") from None
            if kid not in self._keys:
                raise AuthError("signed with a key the identity provider does not publish")
            return self._keys[kid]

    # ---- one token ---------------------------------------------------------------------------------
    def __call__(self, token: str) -> Identity:
        hit = self._verified.get(token)
        if hit and hit[1] > time.time():
            return hit[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("not a JSON web token") from None
        if header.get("alg") != "RS256":
            raise AuthError(f"algorithm {header.get('alg')!r} is not accepted (RS256 only)")
        key = self.key(str(header.get("kid", "")))
        try:
            payload = jwt.decode(token, key, algorithms=["RS256"],
                                 options={"require": ["exp"], "verify_aud": False, "verify_iss": False})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(type(exc).__name__) from None
        if "iss" in payload and str(payload["iss"]).rstrip("/") != self.realm_uri:
            raise AuthError("issued by another provider")
        username_claim, roles_claim, email_claim, name_claim = self.claims
        roles = claim(payload, roles_claim) or []
        identity = Identity(username=str(payload.get(username_claim) or payload.get("sub") or "unknown"),
                            roles=tuple(str(r) for r in roles if isinstance(r, str)),
                            email=payload.get(email_claim), name=payload.get(name_claim))
        self._verified[token] = (identity, float(payload["exp"]))
        while len(self._verified) > 1024:
            self._verified.popitem(last=False)
        return identity


def fetch_token(realm: RealmKeys, client_id: str, username: str, password: str) -> dict:
    """The password grant the stock Slicer login dialog relies on (``POST /auth/token``)."""
    try:
        r = requests.post(realm.token_endpoint(), data={"client_id": client_id, "username": username,
                                                         "password": password, "grant_type": "password"},
                          timeout=realm.timeout)
    except requests.RequestException:
        raise ProviderUnavailable("the identity provider cannot be reached") from None
    if r.status_code in (400, 401, 403):
        raise AuthError("wrong user name or password")
    if r.status_code != 200:
        raise ProviderUnavailable(f"the identity provider answered {r.status_code}")
    try:
        return json.loads(r.text)
    except ValueError:
        raise ProviderUnavailable("the identity provider's answer is not JSON") from None
