"""The second step of a login: a second factor, or a one-time code from a browser sign-in.

A first factor (password, GitHub) that needs more ends in `second_step`'s challenge; the
token endpoint's `mfa_otp` / `mfa_recovery_code` grants finish it, and the
`authorization_code` grant redeems the code a browser sign-in handed to the client.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.auth import login_codes
from saas_app.auth.errors import BAD_CREDENTIALS, InvalidGrant, MfaEnrollmentRequired, MfaRequired, SlowDown
from saas_app.auth.issuance import TokenGrant, open_session, revoke_for_reuse
from saas_app.core.errors import RateLimited
from saas_app.mfa import service as mfa
from saas_app.runtime import Runtime
from saas_app.tenancy.cache import TenantInfo
from saas_app.users import service as users
from saas_app.users.models import User


async def second_step(
    *,
    session: AsyncSession,
    tenant: TenantInfo,
    user: User,
    requested: frozenset[str] | None,
    amr: tuple[str, ...],
    user_agent: str | None,
    now: datetime,
) -> MfaRequired | None:
    """The step a first factor still needs: a second factor, or enrolment when the tenant
    requires MFA of a user without it. Returns the error that carries its `mfa_token`."""
    if not (user.mfa_enabled or tenant.mfa_required):
        return None
    purpose = "login" if user.mfa_enabled else "enroll"
    mfa_token = await mfa.open_challenge(
        session=session, user=user, purpose=purpose, amr=amr, scope=requested, user_agent=user_agent, now=now
    )
    return MfaRequired(mfa_token) if purpose == "login" else MfaEnrollmentRequired(mfa_token)


async def login_code_grant(
    *, session: AsyncSession, runtime: Runtime, tenant: TenantInfo, code: str, origin: Origin
) -> TokenGrant:
    """`grant_type=authorization_code`: a one-time code from a browser sign-in.

    RFC 6749 §4.1.2: a code used twice is refused, and the session its first use opened is
    revoked: the code leaked, and whoever spent it first may not be the user. A code is
    issued only when no second factor is due, so that session is all it ever bought.
    """
    redeemed = await login_codes.redeem(session=session, tenant=tenant, code=code, now=origin.now)
    if redeemed is None:
        replayed = await login_codes.spent(session=session, tenant=tenant, code=code)
        if replayed is not None and replayed.session_id is not None:
            # InvalidGrant keeps its changes: the revocation commits with the refusal.
            await revoke_for_reuse(
                session=session,
                tenant_id=tenant.id,
                login_id=replayed.session_id,
                user_id=replayed.user_id,
                presented="login_code",
                origin=origin,
            )
        raise InvalidGrant(BAD_CREDENTIALS)
    user = await users.get_user(session=session, tenant_id=tenant.id, user_id=redeemed.user_id)
    if not user.is_active:
        raise InvalidGrant(BAD_CREDENTIALS)
    grant = await open_session(
        session=session,
        runtime=runtime,
        tenant=tenant,
        user=user,
        requested=None,
        amr=tuple(redeemed.amr.split()),
        user_agent=redeemed.user_agent,
        origin=origin,
    )
    await login_codes.remember_session(session=session, redeemed=redeemed, session_id=grant.session_id)
    return grant


async def second_factor_grant(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    mfa_token: str,
    otp: str | None = None,
    recovery_code: str | None = None,
    origin: Origin,
) -> TokenGrant:
    """The `mfa_otp` / `mfa_recovery_code` grants: finish a login that passed its password.

    Each try spends one of the challenge's five attempts before the code is checked.
    """
    challenge = await mfa.spend_attempt(session=session, tenant_id=tenant.id, token=mfa_token, now=origin.now)
    if challenge is None:
        raise InvalidGrant(BAD_CREDENTIALS)
    user = await users.get_user(session=session, tenant_id=tenant.id, user_id=challenge.user_id)
    if not user.is_active:
        raise InvalidGrant(BAD_CREDENTIALS)
    try:
        factor = await mfa.check_factor(
            session=session, runtime=runtime, user=user, otp=otp, recovery_code=recovery_code, now=origin.now
        )
    except RateLimited as exc:
        raise SlowDown(exc.retry_after) from exc
    if factor is None or not await mfa.close_challenge(session=session, token=mfa_token, now=origin.now):
        await audit.record(
            session=session,
            tenant_id=tenant.id,
            action="login.failed",
            origin=origin,
            target=Ref("user", user.id),
            details={"reason": "bad_second_factor"},
        )
        raise InvalidGrant(BAD_CREDENTIALS)
    if factor == "recovery":
        await audit.record(
            session=session,
            tenant_id=tenant.id,
            action="mfa.recovery_used",
            origin=Origin(actor=Ref("user", user.id), ip=origin.ip, now=origin.now),
            target=Ref("user", user.id),
        )
    return await open_session(
        session=session,
        runtime=runtime,
        tenant=tenant,
        user=user,
        requested=frozenset(challenge.scope.split()) if challenge.scope is not None else None,
        amr=(*challenge.amr.split(), factor),
        user_agent=challenge.user_agent,
        origin=origin,
    )
