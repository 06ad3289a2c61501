"""/t/{tenant}/invitations (`users:manage`) and accepting one (anyone with its link)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from saas_app.abuse import per_ip_limit
from saas_app.core.openapi import AUTHENTICATED, TENANT, problems
from saas_app.core.pagination import Page, PageDep
from saas_app.guards import AnonymousOriginDep, CurrentPrincipal, OriginDep, require
from saas_app.invitations import service
from saas_app.invitations.schemas import InvitationAccept, InvitationCreate, InvitationRead, Status
from saas_app.runtime import NowDep, RuntimeDep, SessionDep
from saas_app.tenancy.deps import TenantDep
from saas_app.users.schemas import UserRead

router = APIRouter(
    prefix="/t/{tenant}/invitations",
    tags=["invitations"],
    dependencies=[Depends(require(service.INVITE))],
    responses=AUTHENTICATED,
)
accept_router = APIRouter(prefix="/t/{tenant}/auth/invitations", tags=["auth"], responses=TENANT)


@router.post("", status_code=201, responses=problems(409, 422, 429))
async def create_invitation(
    body: InvitationCreate,
    principal: CurrentPrincipal,
    tenant: TenantDep,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: OriginDep,
) -> InvitationRead:
    """Invites an address with roles (at most the caller's own permissions); the link is mailed."""
    invitation = await service.invite(
        session=session,
        runtime=runtime,
        tenant=tenant,
        email=body.email,
        role_names=body.roles,
        inviter=principal,
        origin=origin,
    )
    return InvitationRead.of(invitation, origin.now)


@router.get("")
async def list_invitations(
    principal: CurrentPrincipal,
    session: SessionDep,
    page: PageDep,
    now: NowDep,
    status: Annotated[Status | None, Query()] = None,
) -> Page[InvitationRead]:
    """Lists the tenant's invitations, newest first, optionally of one status."""
    rows, next_cursor = await service.list_invitations(
        session=session, tenant_id=principal.tenant_id, status=status, page=page, now=now
    )
    return Page(items=[InvitationRead.of(i, now) for i in rows], next_cursor=next_cursor)


@router.delete("/{invitation_id}", status_code=204, responses=problems(404))
async def revoke_invitation(
    invitation_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, origin: OriginDep
) -> Response:
    """Revokes a pending invitation: its link stops working."""
    await service.revoke(
        session=session,
        tenant_id=principal.tenant_id,
        invitation_id=invitation_id,
        actor=principal.permissions,
        origin=origin,
    )
    return Response(status_code=204)


@accept_router.post(
    "/accept",
    status_code=201,
    dependencies=[Depends(per_ip_limit("invitation_accept_ip", "REGISTER_RATE_LIMIT"))],
    responses=problems(400, 409, 422, 429),
)
async def accept_invitation(
    body: InvitationAccept,
    tenant: TenantDep,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: AnonymousOriginDep,
) -> UserRead:
    """Joins the tenant with an invitation's link, even while self sign-up is closed."""
    user, roles = await service.accept(
        session=session,
        runtime=runtime,
        tenant=tenant,
        token=body.token,
        password=body.password,
        full_name=body.full_name,
        origin=origin,
    )
    return UserRead.of(user, roles)
