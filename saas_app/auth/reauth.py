"""A fresh proof of identity for changes to how an account is reached (its second factor,
its address): the password, or a login of the last 10 minutes (ASVS 5.0 V7.5.1)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.auth.service import InvalidPassword, check_password
from saas_app.guards import Principal, ensure_recent_login
from saas_app.runtime import Runtime
from saas_app.users.models import User


async def confirm_identity(
    *,
    session: AsyncSession,
    runtime: Runtime,
    principal: Principal,
    user: User,
    password: str | None,
    now: datetime,
) -> None:
    """Raises 400 `invalid_password` for a wrong password, 403 `reauthentication_required`
    without a password and a recent login. The password goes through the account's failure
    limit, like a login."""
    if password is None:
        ensure_recent_login(principal, now)
        return
    await session.commit()  # nothing written yet; hold no lock while hashing
    ok, _ = await check_password(
        runtime=runtime, tenant_id=user.tenant_id, email=user.email, password=password, user=user
    )
    if not ok:
        raise InvalidPassword()
