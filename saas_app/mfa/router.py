"""/t/{tenant}/users/me/mfa: TOTP enrolment and recovery codes; the admin reset."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit.service import Origin
from saas_app.auth.reauth import confirm_identity
from saas_app.core.errors import Conflict, Forbidden
from saas_app.core.openapi import AUTHENTICATED, RECENT_LOGIN, problems
from saas_app.guards import (
    EnrollingOriginDep,
    EnrollingPrincipal,
    HumanPrincipal,
    OriginDep,
    Principal,
    ensure_recent_login,
    require,
)
from saas_app.mfa import service
from saas_app.mfa.schemas import CodeProof, DisableProof, EnrolmentRead, EnrolmentStart, RecoveryCodes
from saas_app.rbac import service as rbac
from saas_app.runtime import Runtime, RuntimeDep, SessionDep
from saas_app.tenancy.deps import TenantDep
from saas_app.users import service as users
from saas_app.users.models import User

# 400 `invalid_code` / `invalid_password`; 409 when MFA is (not) on or (not) pending.
me_router = APIRouter(
    prefix="/t/{tenant}/users/me/mfa", tags=["mfa"], responses={**AUTHENTICATED, **problems(400, 409)}
)
admin_router = APIRouter(prefix="/t/{tenant}/users", tags=["users"], responses=AUTHENTICATED)


class MfaRequiredByTenant(Conflict):
    code = "mfa_required_by_tenant"
    title = "This tenant requires MFA; it cannot be turned off (an admin can reset a lost device)"


async def _user(session: AsyncSession, principal: Principal) -> User:
    assert principal.user_id is not None
    return await users.get_user(session=session, tenant_id=principal.tenant_id, user_id=principal.user_id)


async def _reauthenticate(
    password: str | None,
    principal: Principal,
    user: User,
    session: AsyncSession,
    runtime: Runtime,
    origin: Origin,
) -> None:
    """Enrolment needs a fresh proof: the password, or a login of the last 10 minutes."""
    if principal.enrolment_token is not None:
        return  # issued moments ago by a correct password step
    await confirm_identity(
        session=session, runtime=runtime, principal=principal, user=user, password=password, now=origin.now
    )


@me_router.post("/totp", responses=RECENT_LOGIN)
async def start_totp(
    body: EnrolmentStart,
    principal: EnrollingPrincipal,
    tenant: TenantDep,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: EnrollingOriginDep,
) -> EnrolmentRead:
    """Starts TOTP enrolment: a new secret, pending until confirmed with a code."""
    user = await _user(session, principal)
    await _reauthenticate(body.password, principal, user, session, runtime, origin)
    enrolment = await service.start_enrolment(runtime=runtime, user=user, issuer=tenant.name)
    return EnrolmentRead(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri, qr_svg=enrolment.qr_svg)


@me_router.post("/totp/confirm")
async def confirm_totp(
    body: CodeProof,
    principal: EnrollingPrincipal,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: EnrollingOriginDep,
) -> RecoveryCodes:
    """Confirms enrolment with a current code; MFA is on and 10 recovery codes are shown once."""
    user = await _user(session, principal)
    codes = await service.confirm_enrolment(
        session=session, runtime=runtime, user=user, code=body.code, origin=origin
    )
    if principal.enrolment_token is not None:
        await service.close_challenge(session=session, token=principal.enrolment_token, now=origin.now)
    return RecoveryCodes(recovery_codes=codes)


@me_router.delete("/totp", status_code=204)
async def disable_totp(
    body: DisableProof,
    principal: HumanPrincipal,
    tenant: TenantDep,
    session: SessionDep,
    runtime: RuntimeDep,
    origin: OriginDep,
) -> Response:
    """Turns MFA off, proven by a current code or a recovery code."""
    if tenant.mfa_required:
        raise MfaRequiredByTenant()
    user = await _user(session, principal)
    await service.disable(
        session=session,
        runtime=runtime,
        user=user,
        otp=body.code,
        recovery_code=body.recovery_code,
        origin=origin,
    )
    return Response(status_code=204)


@me_router.post("/recovery-codes")
async def regenerate_recovery_codes(
    body: CodeProof, principal: HumanPrincipal, session: SessionDep, runtime: RuntimeDep, origin: OriginDep
) -> RecoveryCodes:
    """Issues 10 new recovery codes; the old ones stop working."""
    user = await _user(session, principal)
    codes = await service.regenerate_recovery_codes(
        session=session, runtime=runtime, user=user, otp=body.code, origin=origin
    )
    return RecoveryCodes(recovery_codes=codes)


class OwnMfaReset(Forbidden):
    code = "own_mfa_reset"
    title = "Turn your own MFA off with DELETE /t/{tenant}/users/me/mfa/totp and a code"


@admin_router.delete(
    "/{user_id}/mfa",
    status_code=204,
    dependencies=[Depends(require("users:manage"))],
    responses=RECENT_LOGIN,
)
async def reset_mfa(
    user_id: uuid.UUID, principal: HumanPrincipal, session: SessionDep, origin: OriginDep
) -> Response:
    """Removes another user's second factor (a lost device); needs a login of the last 10 minutes."""
    # Weakening a login changes how someone signs in: a bearer token alone must not do it
    # (ASVS 5.0 V7.5.1, V6.6). An API key has no login, so it is refused outright (the
    # HumanPrincipal guard: 403 human_only, and the OpenAPI document offers no key); one's own
    # factor goes only through the route that asks for a code, whatever the tenant's policy.
    if user_id == principal.user_id:
        raise OwnMfaReset(
            f"Turn your own MFA off with DELETE /t/{principal.tenant_slug}/users/me/mfa/totp"
            " and a current or recovery code."
        )
    ensure_recent_login(principal, origin.now, "Log in again: this needs a login of the last 10 minutes.")
    user = await users.get_user(session=session, tenant_id=principal.tenant_id, user_id=user_id)
    # No escalation: only someone holding all of the user's permissions may weaken their login.
    await rbac.ensure_may_act_on(
        session=session, tenant_id=principal.tenant_id, user_id=user.id, actor=principal.permissions
    )
    await service.reset_by_admin(session=session, user=user, origin=origin)
    return Response(status_code=204)
