"""MONAI Label's four roles (names from its ``MONAI_LABEL_AUTH_ROLE_*`` settings), ordered, and who a request is.

The roles are ordered user < annotator < reviewer < admin: a higher role includes the lower ones, as in
MONAI Label's Keycloak realm where an admin also holds the other three.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monailabel.config import settings

USER = settings.MONAI_LABEL_AUTH_ROLE_USER
ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
REVIEWER = settings.MONAI_LABEL_AUTH_ROLE_REVIEWER
ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN
ORDER = (USER, ANNOTATOR, REVIEWER, ADMIN)
SHORT_NAMES = {"user": USER, "annotator": ANNOTATOR, "reviewer": REVIEWER, "admin": ADMIN}


def role_name(name: str) -> str:
    """``annotator`` or ``monailabel-annotator`` -> the configured role name; ValueError for anything else."""
    key = name.strip().lower()
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]
    if name.strip() in ORDER:
        return name.strip()
    raise ValueError(f"unknown role {name!r}: use one of {', '.join(SHORT_NAMES)}")


def rank(role: str) -> int:
    return ORDER.index(role) if role in ORDER else -1


@dataclass(frozen=True)
class Identity:
    username: str
    roles: tuple[str, ...] = field(default_factory=tuple)
    email: str | None = None
    name: str | None = None

    @property
    def highest(self) -> int:
        return max((rank(r) for r in self.roles), default=-1)

    def has(self, role: str) -> bool:
        return self.highest >= rank(role) >= 0

    def implied_roles(self) -> list[str]:
        """Every role this identity holds, the lower ones included (what MONAI Label's RBAC looks for)."""
        return [r for r in ORDER if self.has(r)] + [r for r in self.roles if r not in ORDER]
