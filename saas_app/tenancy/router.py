"""POST /tenants (tenant sign-up) and /t/{tenant} itself."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from saas_app.abuse import per_ip_limit
from saas_app.auth import verification
from saas_app.core.errors import Forbidden
from saas_app.core.openapi import AUTHENTICATED, problems
from saas_app.guards import AnonymousOriginDep, CurrentPrincipal, OriginDep, ensure_second_factor, require
from saas_app.runtime import RuntimeDep, SessionDep
from saas_app.tenancy import service
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.deps import TenantDep
from saas_app.tenancy.schemas import TenantBrief, TenantCreate, TenantCreated, TenantRead, TenantUpdate
from saas_app.users import service as users
from saas_app.users.schemas import UserRead

router = APIRouter(tags=["tenants"])


class OwnAddressUnverified(Forbidden):
    code = "email_not_verified"
    title = "Verify your own address before requiring verified addresses of everyone"


@router.post(
    "/tenants",
    status_code=201,
    dependencies=[Depends(per_ip_limit("tenants", "REGISTER_RATE_LIMIT"))],
    responses=problems(403, 409, 429),
)
async def create_tenant(
    body: TenantCreate, session: SessionDep, runtime: RuntimeDep, origin: AnonymousOriginDep
) -> TenantCreated:
    """Creates a tenant and its owner (a verification link is mailed to the owner)."""
    if runtime.settings.TENANT_SIGNUP == "closed":
        raise service.SignupClosed("Tenant sign-up is closed on this server.")
    password_hash = await runtime.hasher.hash(body.owner.password)  # before any lock is taken
    tenant, owner, roles = await service.create_tenant(
        session=session,
        slug=body.slug,
        name=body.name,
        owner_email=body.owner.email,
        owner_password_hash=password_hash,
        owner_full_name=body.owner.full_name,
        origin=origin,
    )
    await verification.mail_link_if_allowed(session, runtime, TenantInfo.of(tenant), owner, origin=origin)
    return TenantCreated(
        tenant=TenantBrief.model_validate(tenant, from_attributes=True), owner=UserRead.of(owner, roles)
    )


@router.get("/t/{tenant}", responses=AUTHENTICATED)
async def read_tenant(tenant: TenantDep, principal: CurrentPrincipal) -> TenantRead:
    """Returns the tenant (any member)."""
    return TenantRead.model_validate(tenant, from_attributes=True)


@router.patch("/t/{tenant}", dependencies=[Depends(require("tenant:manage"))], responses=AUTHENTICATED)
async def update_tenant(
    body: TenantUpdate,
    tenant: TenantDep,
    principal: CurrentPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: OriginDep,
) -> TenantRead:
    """Renames the tenant, opens/closes self sign-up, requires MFA of every login or a
    verified address of every password login."""
    if body.mfa_required is not None and body.mfa_required != tenant.mfa_required:
        # The MFA policy changes only from a session that passed a second factor: nobody
        # demands a factor they do not use, and a stolen password cannot lift the policy.
        ensure_second_factor(principal)
    if body.require_verified_email and not tenant.require_verified_email and principal.user_id is not None:
        # Nobody demands a verified address they have not verified: they would lock
        # themselves out at their next login.
        me = await users.get_user(session=session, tenant_id=tenant.id, user_id=principal.user_id)
        if not me.email_verified:
            raise OwnAddressUnverified()
    updated = await service.update_tenant(
        session=session,
        tenant_id=tenant.id,
        name=body.name,
        allow_signup=body.allow_signup,
        mfa_required=body.mfa_required,
        require_verified_email=body.require_verified_email,
        origin=origin,
    )
    return TenantRead.model_validate(updated, from_attributes=True)
