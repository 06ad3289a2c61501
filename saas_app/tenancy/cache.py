"""The tenant as every tenant route sees it, cached in the exact read cache.

Cached kind: `TenantInfo`, key `("tenant", slug)`, in `Runtime.cache` (saas_app/core/
readcache.py). It depends on the tenant's row only (tag `tenant:<id>`) and is evicted when
that row changes, on every node through the change feed, so a policy such as
`mfa_required` applies on the writer's next request and on every other node within the
feed's delay (milliseconds), as a revocation does. No fixed time-to-live: a cache deciding
who may do what must never be stale (issue 13 item 4; ASVS 5.0 V8.3.1, authorisation rules
enforced at a trusted layer on current data).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from saas_app.core.changes import tag
from saas_app.core.readers import Query
from saas_app.tenancy.models import Tenant

# Built once: constructing a statement costs more than running it on a warm cache.
TENANT_QUERY = Query(
    select(
        Tenant.id,
        Tenant.slug,
        Tenant.name,
        Tenant.allow_signup,
        Tenant.mfa_required,
        Tenant.require_verified_email,
        Tenant.created_at,
    ).where(Tenant.slug == bindparam("slug"))
)


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A read-only snapshot of a tenant row, safe to share between requests."""

    id: uuid.UUID
    slug: str
    name: str
    allow_signup: bool
    mfa_required: bool
    require_verified_email: bool
    created_at: datetime

    @classmethod
    def of(cls, tenant: Any) -> TenantInfo:  # a Tenant, or a TENANT_QUERY row
        return cls(
            tenant.id,
            tenant.slug,
            tenant.name,
            tenant.allow_signup,
            tenant.mfa_required,
            tenant.require_verified_email,
            tenant.created_at,
        )

    def depends_on(self) -> tuple[str]:
        return (tag("tenant", self.id),)


def cache_key(slug: str) -> tuple[str, str]:
    """The read-cache key of a tenant (see the module docstring for what evicts it)."""
    return ("tenant", slug)
