"""Logins left half-way: an `mfa_token` (login or enrolment kind), an unused login code, or
a link mailed to the user (a password reset).

Each proves a first factor, or stands in for one. A password change, a reset or a
deactivation declares that proof void, so whoever holds one must not finish that login
afterwards (ASVS 5.0 V7.4.1, V7.4.3): a reset link mailed before a password change must
not work after it, nor one mailed before a deactivation after a reactivation.
A module of its own so that both auth/service.py and users/service.py can call it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.auth import sessions
from saas_app.auth.models import AccountToken, LoginCode
from saas_app.mfa.models import MfaChallenge

# Both are one-time rows of a user: spent when `used_at` is set, dead after `expires_at`.
HALF_WAY_LOGINS = (MfaChallenge, LoginCode, AccountToken)


async def end_pending_steps(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> int:
    """Spends every live `mfa_token`, login code and mailed link of the user, in the caller's transaction
    (so it commits with the change that caused it); returns how many.

    A login code ended this way is refused like any spent one, and its replay revokes
    nothing (it opened no session).
    """
    ended = 0
    for kind in HALF_WAY_LOGINS:
        stmt = (
            update(kind)
            .where(
                kind.tenant_id == tenant_id,
                kind.user_id == user_id,
                kind.used_at.is_(None),
                kind.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        ended += int(getattr(await session.execute(stmt), "rowcount", 0) or 0)
    return ended


async def end_every_way_in(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
    keep: uuid.UUID | None = None,
) -> dict[str, int]:
    """Ends the user's sessions (but `keep`) and every login left half-way, in the caller's
    transaction: what a password change, a reset or a deactivation owes (ASVS 5.0 V7.4.1).
    Returns the counts, as their audit events record them."""
    ended = await sessions.revoke_all(
        session=session, tenant_id=tenant_id, user_id=user_id, now=now, keep=keep
    )
    pending = await end_pending_steps(session=session, tenant_id=tenant_id, user_id=user_id, now=now)
    return {"sessions_ended": ended, "pending_logins_ended": pending}
