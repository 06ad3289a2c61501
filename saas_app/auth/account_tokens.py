"""Single-use tokens carried by mail (API-v2 §1): issued for one purpose, tenant and user,
stored as a hash, expiring, spent at most once. Every way a token can be wrong (unknown,
spent, expired, another tenant's or purpose's) is one answer: 400 `invalid_token`."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.auth.models import AccountToken
from saas_app.core.errors import DomainError
from saas_app.security.opaque import digest
from saas_app.users.models import User

PASSWORD_RESET = "password_reset"  # noqa: S105 (a purpose, not a password)
EMAIL_VERIFICATION = "email_verification"
TOKEN_BYTES = 32  # 256 bits (API-v2 asks for at least 128)
MAX_TOKEN_LENGTH = 200  # longer input is no token of ours: refused before any lookup


class InvalidAccountToken(DomainError):
    status = 400
    code = "invalid_token"
    title = "The link is invalid or has expired"


@dataclass(frozen=True, slots=True)
class Spent:
    user_id: uuid.UUID
    email: str | None  # the address a verification link proves


def new_token() -> tuple[str, str]:
    """A fresh token and the hash it is stored as."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, digest(token)


async def issue(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    purpose: str,
    ttl: timedelta,
    now: datetime,
    email: str | None = None,
) -> str:
    """A new token; the user's earlier unspent tokens of this purpose stop working (only the
    newest link in a mailbox does anything)."""
    # The user's row locked first (PostgreSQL; SQLite's writers are serialised already):
    # two requests at once would otherwise each retire what the other has not committed,
    # and both links would live.
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    await retire(session, tenant_id=tenant_id, user_id=user_id, purpose=purpose, now=now)
    token, token_hash = new_token()
    session.add(
        AccountToken(
            tenant_id=tenant_id,
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + ttl,
            email=email,
        )
    )
    return token


async def retire(
    session: AsyncSession, *, tenant_id: uuid.UUID, user_id: uuid.UUID, purpose: str, now: datetime
) -> None:
    """Spends every live token of the user for `purpose` (a new one, an address change:
    the links already mailed must stop working)."""
    await session.execute(
        update(AccountToken)
        .where(
            AccountToken.tenant_id == tenant_id,
            AccountToken.user_id == user_id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )


async def spend(
    session: AsyncSession, *, tenant_id: uuid.UUID, purpose: str, token: str, now: datetime
) -> Spent:
    """Marks a live token used, in the caller's transaction, and returns its user (and the
    address it proves). One conditional UPDATE: of any number of parallel uses exactly one
    gets a row back."""
    if not token or len(token) > MAX_TOKEN_LENGTH:  # no token of ours: not even looked up
        raise InvalidAccountToken()
    row = (
        await session.execute(
            update(AccountToken)
            .where(_live(tenant_id, purpose, token, now))
            .values(used_at=now)
            .returning(AccountToken.user_id, AccountToken.email)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if row is None:
        raise InvalidAccountToken()
    return Spent(row.user_id, row.email)


def _live(tenant_id: uuid.UUID, purpose: str, token: str, now: datetime) -> ColumnElement[bool]:
    return and_(
        AccountToken.token_hash == digest(token),
        AccountToken.tenant_id == tenant_id,
        AccountToken.purpose == purpose,
        AccountToken.used_at.is_(None),
        AccountToken.expires_at > now,
    )
