"""One-time login codes: how a browser sign-in hands its result to the client (60 s, once).

A code is the authorization code of RFC 6749 §4.1: used twice, it is refused and the
session its first use opened is revoked (§4.1.2), so each code remembers that session.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.auth.models import LoginCode
from saas_app.security.opaque import digest
from saas_app.tenancy.cache import TenantInfo
from saas_app.users.models import User

LOGIN_CODE_TTL = timedelta(seconds=60)


async def issue(
    *, session: AsyncSession, user: User, amr: tuple[str, ...], user_agent: str | None, now: datetime
) -> str:
    """Stores (the hash of) a new code for the user and returns the code."""
    code = "lc_" + secrets.token_urlsafe(32)
    session.add(
        LoginCode(
            code_hash=digest(code),
            tenant_id=user.tenant_id,
            user_id=user.id,
            amr=" ".join(amr),
            user_agent=(user_agent or "")[:300] or None,
            created_at=now,
            expires_at=now + LOGIN_CODE_TTL,
        )
    )
    await session.flush()
    return code


async def redeem(*, session: AsyncSession, tenant: TenantInfo, code: str, now: datetime) -> LoginCode | None:
    """Spends a live code (one conditional UPDATE: of parallel redemptions one wins)."""
    stmt = (
        update(LoginCode)
        .where(
            LoginCode.code_hash == digest(code),
            LoginCode.tenant_id == tenant.id,
            LoginCode.used_at.is_(None),
            LoginCode.expires_at > now,
        )
        .values(used_at=now)
        .returning(LoginCode)
        .execution_options(synchronize_session=False)
    )
    redeemed: LoginCode | None = (await session.execute(stmt)).scalar_one_or_none()
    return redeemed


async def remember_session(*, session: AsyncSession, redeemed: LoginCode, session_id: uuid.UUID) -> None:
    """Records the session a redeemed code opened, in the transaction that redeemed it, so
    whoever finds the code spent also finds the session (see `spent`)."""
    stmt = (
        update(LoginCode)
        .where(LoginCode.code_hash == redeemed.code_hash)
        .values(session_id=session_id)
        .execution_options(synchronize_session=False)
    )
    await session.execute(stmt)


async def spent(*, session: AsyncSession, tenant: TenantInfo, code: str) -> LoginCode | None:
    """The code if it was redeemed before (expired or not), else None.

    Called after `redeem` found nothing to spend. A parallel redemption that won holds the
    row until it commits (PostgreSQL's row lock, SQLite's write lock), and `redeem` gives
    up only once it sees `used_at` committed, so this read sees the winner's session too.
    """
    stmt = select(LoginCode).where(
        LoginCode.code_hash == digest(code),
        LoginCode.tenant_id == tenant.id,
        LoginCode.used_at.is_not(None),
    )
    found: LoginCode | None = await session.scalar(stmt)
    return found
