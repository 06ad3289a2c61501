from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from saas_app.runtime import Runtime, runtime_of
from saas_app.tenancy import service
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.schemas import SLUG_PATTERN

SLUG = re.compile(SLUG_PATTERN)


async def tenant_info(runtime: Runtime, slug: str) -> TenantInfo:
    """Resolves a path's slug (404 when unknown or malformed), outside the request's
    transaction so that no lock is taken before the route needs one."""
    if not SLUG.fullmatch(slug):
        raise service.TenantNotFound()
    cached = runtime.tenants.get(slug)
    if cached is not None:
        return cached
    async with runtime.session_factory() as session:
        info = TenantInfo.of(await service.get_by_slug(session=session, slug=slug))
    runtime.tenants.put(info)
    return info


async def resolve_tenant(request: Request, tenant: str) -> TenantInfo:
    return await tenant_info(runtime_of(request), tenant)


TenantDep = Annotated[TenantInfo, Depends(resolve_tenant)]
