from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import Request

from saas_app.core.readcache import read_through
from saas_app.core.readers import Fetch, first
from saas_app.runtime import Runtime, auth_memo, runtime_of
from saas_app.tenancy import service
from saas_app.tenancy.cache import TENANT_QUERY, TenantInfo, cache_key
from saas_app.tenancy.schemas import SLUG_PATTERN

SLUG = re.compile(SLUG_PATTERN)


async def tenant_info(
    runtime: Runtime, slug: str, memo: MutableMapping[str, Any] | None = None
) -> TenantInfo:
    """Resolves a path's slug (404 when unknown or malformed), outside the request's
    transaction so that no lock is taken before the route needs one.

    Read through the exact read cache: the snapshot `memo` already holds is reused, so a
    request that also authenticates syncs with the change feed once, not twice."""
    if not SLUG.fullmatch(slug):
        raise service.TenantNotFound()

    async def load(fetch: Fetch) -> TenantInfo | None:
        row = await first(fetch, TENANT_QUERY, {"slug": slug})
        return None if row is None else TenantInfo.of(row)

    info = await read_through(
        runtime.cache, runtime.reader, cache_key(slug), TenantInfo, load, TenantInfo.depends_on, memo
    )
    if info is None:
        raise service.TenantNotFound()
    return info


async def resolve_tenant(request: Request, tenant: str) -> TenantInfo:
    return await tenant_info(runtime_of(request), tenant, auth_memo(request))


TenantDep = Annotated[TenantInfo, Depends(resolve_tenant)]
