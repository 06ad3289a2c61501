from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends

from saas_app.runtime import RuntimeDep
from saas_app.tenancy import service
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.schemas import SLUG_PATTERN

SLUG = re.compile(SLUG_PATTERN)


async def resolve_tenant(runtime: RuntimeDep, tenant: str) -> TenantInfo:
    """Resolves the path's slug (404 when unknown or malformed), outside the request's
    transaction so that no lock is taken before the route needs one."""
    if not SLUG.fullmatch(tenant):
        raise service.TenantNotFound()
    cached = runtime.tenants.get(tenant)
    if cached is not None:
        return cached
    async with runtime.session_factory() as session:
        info = TenantInfo.of(await service.get_by_slug(session=session, slug=tenant))
    runtime.tenants.put(info)
    return info


TenantDep = Annotated[TenantInfo, Depends(resolve_tenant)]
