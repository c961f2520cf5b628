"""Tokens for a small team without an identity provider: ``--conf auth_tokens FILE``.

The file holds one line per person, ``<user name> <role> <sha256 of the token>`` (``#`` starts a comment), so
the file itself gives nobody access. Make a token with::

    .venv/bin/python -m lib.server.token_file add FILE NAME ROLE     # prints the new token once

Roles: user, annotator, reviewer, admin. The file is read again when it changes: adding or removing a person
needs no restart. In the stock 3D Slicer module, log in with your user name and the token as the password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
import threading

from lib.server.access import AuthError
from lib.server.roles import Identity, role_name


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse(text: str, source: str = "token file") -> dict[str, Identity]:
    """digest -> identity; ValueError naming the line for anything malformed."""
    entries: dict[str, Identity] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or len(parts[2]) != 64 or any(c not in "0123456789abcdef" for c in parts[2].lower()):
            raise ValueError(f"{source} line {number}: expected '<name> <role> <sha256 hex of the token>'")
        entries[parts[2].lower()] = Identity(username=parts[0], roles=(role_name(parts[1]),))
    return entries


class TokenFile:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._stamp = None
        self._entries: dict[str, Identity] = {}
        self._lock = threading.Lock()
        self._load()  # a missing or malformed file stops the server at start-up

    def _load(self) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8") as f:
                self._entries = parse(f.read(), self.path)
            self._stamp = stamp

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, token: str) -> Identity:
        with self._lock:
            try:
                self._load()
            except (OSError, ValueError) as exc:  # keep the last good entries; the operator sees the log
                import logging

                logging.getLogger(__name__).error(f"token file not reloaded: {exc}")
        wanted = digest(token)
        for known, identity in self._entries.items():
            if hmac.compare_digest(known, wanted):
                return identity
        raise AuthError("unknown token")


def add(path: str, name: str, role: str) -> str:
    """Append a new person to the file (created with owner-only permissions); returns the token."""
    if not name or any(c.isspace() for c in name):
        raise ValueError("a user name is one word")
    role = role_name(role)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f"{name} {role} {digest(token)}\n")
    return token


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "add":
        print("usage: python -m lib.server.token_file add FILE NAME ROLE   (ROLE: user, annotator, reviewer, admin)",
              file=sys.stderr)
        return 2
    try:
        token = add(argv[1], argv[2], argv[3])
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
