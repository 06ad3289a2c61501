"""Proving an address (API-v2 §1): a verification link by mail at registration and on
request, and address changes, which apply only once the new address opens its link.

A verification token carries the address it proves. Opening it when that is still the
account's address marks the address verified; when it is another one (a change asked
for), the account moves to it, verified, and the links mailed to the old address stop
working. Only the newest link of an account works: asking again, or asking for another
address, retires the one before (account_tokens.issue).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.auth import account_tokens
from saas_app.auth.account_tokens import EMAIL_VERIFICATION, PASSWORD_RESET, InvalidAccountToken
from saas_app.core.errors import Conflict
from saas_app.mail import templates
from saas_app.mail.outbox import enqueue_template
from saas_app.runtime import Runtime
from saas_app.security.emails import normalize_email
from saas_app.tenancy.cache import TenantInfo
from saas_app.users import service as users
from saas_app.users.models import User
from saas_app.users.service import UserExists

# Verification and invitation mails per address, across tenants, at the rate of reset mails
# (FORGOT_PASSWORD_RATE_LIMIT): whoever can cause them (sign up, open a tenant, invite)
# must not be able to flood a mailbox with them.
MAIL_BUCKET = "mail_per_address"
NOTICE = "email_change_notice"


class AlreadyVerified(Conflict):
    code = "already_verified"
    title = "This address is verified already"


async def mail_link(
    session: AsyncSession, runtime: Runtime, tenant: TenantInfo, user: User, *, email: str, origin: Origin
) -> None:
    """Writes a verification mail for `email` (the user's address, or the one they want),
    in the caller's transaction."""
    hours = runtime.settings.EMAIL_VERIFICATION_TTL_HOURS
    token = await account_tokens.issue(
        session,
        tenant_id=tenant.id,
        user_id=user.id,
        purpose=EMAIL_VERIFICATION,
        ttl=timedelta(hours=hours),
        now=origin.now,
        email=email,
    )
    enqueue_template(
        session,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        template="verify_email",
        purpose=EMAIL_VERIFICATION,
        recipient=email,
        subject=f"Confirm your e-mail address for {tenant.name}",
        now=origin.now,
        email=email,
        hours=f"{hours:g}",
        link=templates.page_link(runtime.settings.PUBLIC_URL, tenant.slug, "verify-email", token),
        changing=email != user.email,
    )


async def request_verification(
    *, session: AsyncSession, runtime: Runtime, tenant: TenantInfo, user: User, origin: Origin
) -> None:
    """Mails a new verification link to the user's own address (409 when it is verified)."""
    if user.email_verified:
        raise AlreadyVerified()
    await runtime.limiter.enforce(MAIL_BUCKET, runtime.settings.FORGOT_PASSWORD_RATE_LIMIT, user.email)
    await mail_link(session, runtime, tenant, user, email=user.email, origin=origin)


async def mail_link_if_allowed(
    session: AsyncSession, runtime: Runtime, tenant: TenantInfo, user: User, *, origin: Origin
) -> bool:
    """Mails a verification link to the user's address unless its budget is spent."""
    verdict = await runtime.limiter.hit(MAIL_BUCKET, runtime.settings.FORGOT_PASSWORD_RATE_LIMIT, user.email)
    if verdict.allowed:
        await mail_link(session, runtime, tenant, user, email=user.email, origin=origin)
    return verdict.allowed


async def request_change(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    user: User,
    new_email: str,
    origin: Origin,
) -> None:
    """Asks for the account to move to `new_email`: a verification link goes there, and
    the current address is told (whoever holds it can cancel by changing the password,
    which retires every mailed link). Nothing changes until the link is opened."""
    new_email = normalize_email(new_email)
    if new_email == user.email:
        await request_verification(session=session, runtime=runtime, tenant=tenant, user=user, origin=origin)
        return
    if await users.find_by_email(session=session, tenant_id=tenant.id, email=new_email) is not None:
        raise UserExists()
    await runtime.limiter.enforce(MAIL_BUCKET, runtime.settings.FORGOT_PASSWORD_RATE_LIMIT, new_email)
    await mail_link(session, runtime, tenant, user, email=new_email, origin=origin)
    enqueue_template(
        session,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        template=NOTICE,
        purpose=NOTICE,
        recipient=user.email,
        subject=f"A change of your {tenant.name} e-mail address",
        now=origin.now,
        email=user.email,
        new_email=new_email,
    )


async def verify(*, session: AsyncSession, tenant: TenantInfo, token: str, origin: Origin) -> None:
    """Opens a verification link: the address it proves becomes the account's, verified."""
    spent = await account_tokens.spend(
        session, tenant_id=tenant.id, purpose=EMAIL_VERIFICATION, token=token, now=origin.now
    )
    user = await session.get(User, spent.user_id)
    if user is None or user.tenant_id != tenant.id or not user.is_active or spent.email is None:
        raise InvalidAccountToken()
    if spent.email == user.email:
        if not user.email_verified:
            user.email_verified_at = origin.now
            await _record(session, tenant, user, "email.verified", origin)
        return
    await _change_address(session, tenant, user, spent.email, origin)


async def _change_address(
    session: AsyncSession, tenant: TenantInfo, user: User, email: str, origin: Origin
) -> None:
    # Taken since the link was sent (another sign-up, another change): refused, and the
    # link stays unspent (the unit of work rolls back), so it works once the address is free.
    if await users.find_by_email(session=session, tenant_id=tenant.id, email=email) is not None:
        raise UserExists()
    user.email, user.email_verified_at = email, origin.now
    try:
        await session.flush()
    except IntegrityError as exc:  # taken by a transaction that committed in between
        raise UserExists() from exc
    # A reset link went to the old address: it must not reach the account any more.
    await account_tokens.retire(
        session, tenant_id=tenant.id, user_id=user.id, purpose=PASSWORD_RESET, now=origin.now
    )
    await _record(session, tenant, user, "email.changed", origin)


async def _record(session: AsyncSession, tenant: TenantInfo, user: User, action: str, origin: Origin) -> None:
    await audit.record(
        session=session, tenant_id=tenant.id, action=action, origin=origin, target=Ref("user", user.id)
    )
