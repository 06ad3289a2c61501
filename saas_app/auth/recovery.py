"""Forgotten passwords (API-v2 §1): a reset link by mail, and the reset it allows.

`request_reset` runs after the answer has been sent (the route schedules it), so the
answer is the same, and takes the same time, whether or not the address has an account:
what an attacker times is the rate limit and the JSON, never the lookup or the writes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.auth import account_tokens
from saas_app.auth.account_tokens import PASSWORD_RESET, InvalidAccountToken
from saas_app.auth.pending import end_every_way_in
from saas_app.auth.service import FAILURE_BUCKET
from saas_app.mail import templates
from saas_app.mail.outbox import enqueue_template
from saas_app.runtime import Runtime
from saas_app.security.emails import normalize_email
from saas_app.tenancy.cache import TenantInfo
from saas_app.users import service as users
from saas_app.users.models import User

logger = logging.getLogger("saas_app.auth")
FORGOT_BUCKET = "forgot_password"
WRITE_ATTEMPTS = 4  # over about 3.5 s


async def request_reset(*, runtime: Runtime, tenant: TenantInfo, email: str, origin: Origin) -> None:
    """Mails a reset link to the account with this address, if there is an active one.
    A database that is briefly busy or away (a locked SQLite file, a failover) is tried
    again: after the answer there is nobody else to do it."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            async with runtime.session_factory() as session:
                user = await users.find_by_email(session=session, tenant_id=tenant.id, email=email)
            if user is None or not user.is_active:
                return
            async with runtime.write_session_factory() as session, session.begin():
                await _mail_reset_link(session, runtime, tenant, user, origin)
            return
        except (DBAPIError, PoolTimeout, OSError) as exc:
            if attempt + 1 == WRITE_ATTEMPTS:
                logger.error("a password reset mail could not be written (%s)", type(exc).__name__)
                return
            await asyncio.sleep(0.5 * 2**attempt)
        except Exception:  # after the answer: nobody to tell but the log (never the address)
            logger.exception("a password reset mail could not be written")
            return


async def _mail_reset_link(
    session: AsyncSession, runtime: Runtime, tenant: TenantInfo, user: User, origin: Origin
) -> None:
    minutes = runtime.settings.PASSWORD_RESET_TTL_MINUTES
    token = await account_tokens.issue(
        session,
        tenant_id=tenant.id,
        user_id=user.id,
        purpose=PASSWORD_RESET,
        ttl=timedelta(minutes=minutes),
        now=origin.now,
    )
    link = templates.page_link(runtime.settings.PUBLIC_URL, tenant.slug, "reset-password", token)
    enqueue_template(
        session,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        template="password_reset",
        purpose=PASSWORD_RESET,
        recipient=user.email,
        subject=f"Reset your {tenant.name} password",
        now=origin.now,
        email=user.email,
        minutes=f"{minutes:g}",
        link=link,
    )
    await audit.record(
        session=session,
        tenant_id=tenant.id,
        action="password.reset_requested",
        origin=origin,
        target=Ref("user", user.id),
    )


async def reset_password(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    token: str,
    new_password: str,
    origin: Origin,
) -> None:
    """Sets a new password with a reset token: the token is spent, the user's other reset
    links stop working, every session of the user ends (and every login waiting for its
    second step), the account's login throttle is lifted. A deactivated user's token is
    as invalid as any other."""
    # Spent first, and committed before the (slow) hash: of parallel uses one wins the
    # UPDATE and the others are refused at once, without a hash each and without waiting
    # on SQLite's write lock. Should anything fail after this, the link is gone and the
    # user asks for another: a spent link never works twice.
    spent = await account_tokens.spend(
        session, tenant_id=tenant.id, purpose=PASSWORD_RESET, token=token, now=origin.now
    )
    user = await session.get(User, spent.user_id)
    if user is None or user.tenant_id != tenant.id or not user.is_active:
        raise InvalidAccountToken()
    await session.commit()
    new_hash = await runtime.hasher.hash(new_password)
    user.password_hash = new_hash
    if not user.email_verified:  # the link came to this address: it is the user's
        user.email_verified_at = origin.now
        await audit.record(
            session=session,
            tenant_id=tenant.id,
            action="email.verified",
            origin=origin,
            target=Ref("user", user.id),
        )
    ended = await end_every_way_in(session=session, tenant_id=tenant.id, user_id=user.id, now=origin.now)
    await audit.record(
        session=session,
        tenant_id=tenant.id,
        action="password.reset",
        origin=origin,
        target=Ref("user", user.id),
        details=ended,
    )
    # Whoever was locked out by failed logins (perhaps the attacker's) may sign in again.
    # (Before the request's unit of work commits: should that fail, a cleared throttle
    # costs nothing.)
    limit = runtime.settings.LOGIN_FAILURE_LIMIT
    await runtime.limiter.clear(FAILURE_BUCKET, limit, str(tenant.id), normalize_email(user.email))
