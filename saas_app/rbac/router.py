"""/t/{tenant}/roles: the tenant's roles and their permissions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from saas_app.core.openapi import AUTHENTICATED, problems
from saas_app.core.pagination import Page, PageDep
from saas_app.guards import CurrentPrincipal, OriginDep, require
from saas_app.idempotency.service import OnceDep
from saas_app.rbac import service
from saas_app.rbac.schemas import RoleCreate, RoleName, RoleRead, RoleUpdate
from saas_app.runtime import SessionDep

router = APIRouter(prefix="/t/{tenant}/roles", tags=["roles"], responses=AUTHENTICATED)
manage = [Depends(require("roles:manage"))]


@router.get("", dependencies=[Depends(require("users:read"))])
async def list_roles(principal: CurrentPrincipal, session: SessionDep, page: PageDep) -> Page[RoleRead]:
    """Lists the tenant's roles, built-ins first."""
    rows, next_cursor = await service.list_roles(session=session, tenant_id=principal.tenant_id, page=page)
    return Page(items=[RoleRead.of(r) for r in rows], next_cursor=next_cursor)


@router.post("", status_code=201, dependencies=manage, response_model=RoleRead, responses=problems(409, 422))
async def create_role(
    body: RoleCreate, principal: CurrentPrincipal, session: SessionDep, origin: OriginDep, once: OnceDep
) -> Response:
    """Creates a custom role (only with permissions the caller holds). With an
    `Idempotency-Key`, a retry creates nothing twice."""
    if (stored := await once.replay(session, principal)) is not None:
        return stored
    role = await service.create_role(
        session=session,
        tenant_id=principal.tenant_id,
        name=body.name,
        permissions=list(body.permissions),
        grantor=principal.permissions,
        origin=origin,
    )
    return await once.answer(session, 201, RoleRead.of(role))


@router.patch("/{name}", dependencies=manage, responses=problems(409))
async def update_role(
    name: RoleName, body: RoleUpdate, principal: CurrentPrincipal, session: SessionDep, origin: OriginDep
) -> RoleRead:
    """Replaces a custom role's permissions; holders see the change on their next request."""
    role = await service.update_role(
        session=session,
        tenant_id=principal.tenant_id,
        name=name,
        permissions=list(body.permissions),
        grantor=principal.permissions,
        origin=origin,
    )
    return RoleRead.of(role)


@router.delete("/{name}", status_code=204, dependencies=manage, responses=problems(409))
async def delete_role(
    name: RoleName, principal: CurrentPrincipal, session: SessionDep, origin: OriginDep
) -> Response:
    """Deletes a custom role nobody holds."""
    await service.delete_role(
        session=session,
        tenant_id=principal.tenant_id,
        name=name,
        grantor=principal.permissions,
        origin=origin,
    )
    return Response(status_code=204)
