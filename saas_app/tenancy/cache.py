"""A brief in-process cache of tenants by slug: every tenant route resolves its slug."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from saas_app.tenancy.models import Tenant


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A read-only snapshot of a tenant row, safe to share between requests."""

    id: uuid.UUID
    slug: str
    name: str
    allow_signup: bool
    mfa_required: bool
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantInfo:
        return cls(
            tenant.id, tenant.slug, tenant.name, tenant.allow_signup, tenant.mfa_required, tenant.created_at
        )


class TenantCache:
    """Positive entries only (a new tenant resolves at once); changes made through this
    process invalidate at once, other processes see them within `ttl_seconds`."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, TenantInfo]] = {}

    def get(self, slug: str) -> TenantInfo | None:
        entry = self._entries.get(slug)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, tenant: TenantInfo) -> None:
        if self._ttl > 0:
            self._entries[tenant.slug] = (time.monotonic() + self._ttl, tenant)

    def invalidate(self, slug: str) -> None:
        self._entries.pop(slug, None)
