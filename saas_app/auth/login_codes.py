"""One-time login codes: how a browser sign-in hands its result to the client (60 s, once)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import update
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
