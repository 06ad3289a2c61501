"""The tenant as every tenant route sees it, cached in the exact read cache.

Cached kind: `TenantInfo`, key `("tenant", slug)`, in `Runtime.cache` (saas_app/core/
readcache.py). It depends on the tenant's row only, and is evicted by any committed change
to the database (SQLite `data_version`, PostgreSQL `cache_epoch`), so a policy such as
`mfa_required` reaches every worker on its very next request, as a revocation does. No
fixed time-to-live: a cache deciding who may do what must never be stale (issue 13 item 4;
ASVS 5.0 V8.3.1, authorisation rules enforced at a trusted layer on current data).
"""

from __future__ import annotations

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


def cache_key(slug: str) -> tuple[str, str]:
    """The read-cache key of a tenant (see the module docstring for what evicts it)."""
    return ("tenant", slug)
