"""A tiny OpenID Connect provider on loopback for the authentication tests: keys made here, a realm shaped as
Keycloak's (discovery document, JWKS, password grant), and helpers to forge the tokens an attacker would try."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Issuer:
    def __init__(self, users: dict[str, tuple[str, list[str]]]):
        """``users``: name -> (password, roles)."""
        self.users = users
        self.key = new_key()
        self.kid = "test-key-1"
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/realms/test"

    def token(self, username: str, roles: list[str], expires_in: float = 300, key=None, kid=None,
              algorithm: str = "RS256", issuer: str | None = None) -> str:
        now = int(time.time())
        payload = {"preferred_username": username, "realm_access": {"roles": roles}, "iat": now,
                   "exp": now + int(expires_in), "iss": issuer or self.realm, "email": f"{username}@example.org"}
        return jwt.encode(payload, key or self.key, algorithm=algorithm, headers={"kid": kid or self.kid})

    def unsigned_token(self, username: str, roles: list[str]) -> str:
        """``alg: none``: what a forger sends."""
        def b64(obj):
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        now = int(time.time())
        return f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': self.kid})}." \
               f"{b64({'preferred_username': username, 'realm_access': {'roles': roles}, 'exp': now + 300})}."

    def hs256_with_public_key(self, username: str, roles: list[str]) -> str:
        """Algorithm confusion: HS256 keyed with the (public) RSA key's PEM."""
        import hashlib
        import hmac

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        now = int(time.time())
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.kid}).encode())
        body = b64(json.dumps({"preferred_username": username, "realm_access": {"roles": roles},
                               "exp": now + 300}).encode())
        sig = hmac.new(public_pem(self.key), f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"

    def _handler(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                issuer.requests += 1
                if self.path.endswith("/.well-known/openid-configuration"):
                    return self._json(200, {"issuer": issuer.realm,
                                            "jwks_uri": f"{issuer.realm}/protocol/openid-connect/certs",
                                            "token_endpoint": f"{issuer.realm}/protocol/openid-connect/token"})
                if self.path.endswith("/protocol/openid-connect/certs"):
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer.key.public_key()))
                    jwk.update({"kid": issuer.kid, "use": "sig", "alg": "RS256"})
                    return self._json(200, {"keys": [jwk]})
                self._json(404, {})

            def do_POST(self):
                issuer.requests += 1
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if not self.path.endswith("/protocol/openid-connect/token") or form.get("grant_type") != "password":
                    return self._json(400, {"error": "unsupported"})
                user = issuer.users.get(form.get("username", ""))
                if not user or user[0] != form.get("password"):
                    return self._json(401, {"error": "invalid_grant"})
                token = issuer.token(form["username"], user[1])
                self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})

        return Handler

    def start(self) -> "Issuer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class BlackHole:
    """A port that accepts connections and never answers: an identity provider that hangs."""

    def __init__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/realms/test"

    def close(self):
        self.sock.close()
