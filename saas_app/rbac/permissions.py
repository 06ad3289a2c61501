"""The fixed permission catalogue and the built-in roles every tenant starts with."""

from __future__ import annotations

from typing import Final

PERMISSIONS: Final = (
    "projects:read",
    "projects:write",
    "users:read",
    "users:manage",
    "roles:manage",
    "api_keys:manage",
    "audit:read",
    "tokens:introspect",  # RFC 7662 introspection, for resource servers (API-v2 §2)
    "tenant:manage",
)
CATALOGUE: Final = frozenset(PERMISSIONS)
ROLE_NAME_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,63}$"

OWNER: Final = "owner"
MEMBER: Final = "member"
BUILTIN_ROLES: Final[dict[str, tuple[str, ...]]] = {
    OWNER: PERMISSIONS,
    "admin": tuple(p for p in PERMISSIONS if p != "tenant:manage"),
    MEMBER: ("projects:read", "projects:write"),
    "viewer": ("projects:read",),
}


def ordered(permissions: frozenset[str] | set[str]) -> list[str]:
    """Returns permissions in catalogue order (stable output for clients and tests)."""
    return [p for p in PERMISSIONS if p in permissions]
