"""Login sessions and their rotating refresh tokens (RFC 6749 §10.4, RFC 9700 §4.14).

Each refresh returns a new token and retires the old one with a single conditional
UPDATE, so of N parallel uses exactly one wins. A retired token presented again means
it leaked: the whole session (every token of that `sid`) is revoked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.auth.models import RefreshToken, Session
from saas_app.core.changes import tag, tags
from saas_app.core.pagination import PageParams, keyset_page, split_page
from saas_app.core.readers import Fetch, Query
from saas_app.rbac.models import Role, UserRole
from saas_app.security.crypto import SecretBox
from saas_app.security.opaque import digest, new_refresh_token
from saas_app.users.models import User


@dataclass(frozen=True, slots=True)
class Lifetimes:
    absolute: timedelta
    idle: timedelta


# Built once: constructing a statement costs more than running it on a warm cache.
GRANT_QUERY = Query(
    select(
        Session.user_id, Session.expires_at, Session.last_used_at, Role.id.label("role_id"), Role.permissions
    )
    .join(User, User.id == Session.user_id)
    .outerjoin(UserRole, UserRole.user_id == User.id)
    .outerjoin(Role, Role.id == UserRole.role_id)
    .where(
        Session.id == bindparam("sid"),
        Session.tenant_id == bindparam("tid"),
        Session.revoked_at.is_(None),
        User.is_active.is_(True),
    )
)


@dataclass(frozen=True, slots=True)
class Rotation:
    """The outcome of presenting a refresh token.

    `new_token` is set on success. Otherwise `failure` says why: "unknown" (never issued
    here), "reused" (retired before: `login` is the session to revoke) or "dead" (the
    session was revoked or timed out).
    """

    login: Session | None
    new_token: str | None = None
    failure: str | None = None
    replayed: bool = False  # the token was retired within the grace: its successor again


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """What a session's access tokens may rely on: an unrevoked session of an active user
    and that user's current permissions. The time checks are left to `is_live`, so a
    cached grant still expires on time."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    last_used_at: datetime
    held: frozenset[str]
    roles: frozenset[uuid.UUID]

    def depends_on(self) -> tuple[str, ...]:
        """The rows it was read from, as change-feed tags (saas_app/core/changes.py)."""
        return (tag("session", self.session_id), tag("user", self.user_id), *tags("role", self.roles))

    def is_live(self, lifetimes: Lifetimes, now: datetime) -> bool:
        return self.expires_at > now and self.last_used_at > now - lifetimes.idle


async def load_grant(fetch: Fetch, tenant_id: uuid.UUID, session_id: uuid.UUID) -> SessionGrant | None:
    """One statement: the session unrevoked, its user active, and the user's current roles."""
    rows = await fetch.all(GRANT_QUERY, {"sid": session_id, "tid": tenant_id})
    if not rows:
        return None
    return SessionGrant(
        session_id=session_id,
        user_id=rows[0].user_id,
        expires_at=rows[0].expires_at,
        last_used_at=rows[0].last_used_at,
        held=frozenset(p for row in rows if row.permissions for p in row.permissions),
        roles=frozenset(row.role_id for row in rows if row.role_id is not None),
    )


def is_live(lifetimes: Lifetimes, now: datetime) -> ColumnElement[bool]:
    """SQL condition: not revoked, within the absolute lifetime, used recently enough."""
    return and_(
        Session.revoked_at.is_(None),
        Session.expires_at > now,
        Session.last_used_at > now - lifetimes.idle,
    )


async def start(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    scope: str | None,
    amr: tuple[str, ...],
    user_agent: str | None,
    lifetimes: Lifetimes,
    now: datetime,
) -> tuple[Session, str]:
    """Opens a session and returns it with its first refresh token."""
    login = Session(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        user_id=user_id,
        scope=scope,
        amr=" ".join(amr),
        user_agent=(user_agent or "")[:300] or None,
        created_at=now,
        last_used_at=now,
        expires_at=now + lifetimes.absolute,
    )
    session.add(login)
    await session.flush()  # no relationship() orders the inserts: the session row goes first
    token = _add_refresh_token(session, login, now)
    await session.flush()
    return login, token


def _add_refresh_token(session: AsyncSession, login: Session, now: datetime, token: str | None = None) -> str:
    token = token or new_refresh_token()
    session.add(
        RefreshToken(token_hash=digest(token), tenant_id=login.tenant_id, session_id=login.id, created_at=now)
    )
    return token


@dataclass(frozen=True, slots=True)
class Grace:
    """REFRESH_REUSE_GRACE_SECONDS and the box that seals a successor while it applies."""

    seconds: int
    box: SecretBox


async def rotate(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    refresh_token: str,
    lifetimes: Lifetimes,
    now: datetime,
    grace: Grace | None = None,
) -> Rotation:
    """Retires the presented token and, if its session is live, issues the next one.

    With a grace, the retired row keeps the next token (sealed), and the same token
    presented again within the grace gets that next token again (see `_replay`)."""
    token_hash = digest(refresh_token)
    successor = new_refresh_token()
    sealed = grace.box.encrypt(successor) if grace and grace.seconds else None
    retire = (
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.tenant_id == tenant_id,
            RefreshToken.used_at.is_(None),
        )
        .values(used_at=now, successor=sealed)
        .returning(RefreshToken.session_id)
    )
    session_id = (await session.execute(retire)).scalar_one_or_none()
    if session_id is None:
        if grace and grace.seconds:
            replayed = await _replay(session, tenant_id, token_hash, lifetimes, now, grace)
            if replayed is not None:
                return replayed
        owner = await session_of_refresh_token(
            session=session, tenant_id=tenant_id, refresh_token=refresh_token
        )
        return Rotation(owner, failure="reused" if owner else "unknown")
    login = await session.scalar(select(Session).where(Session.id == session_id, is_live(lifetimes, now)))
    if login is None:
        return Rotation(None, failure="dead")
    if sealed is not None:
        # The token before this one can no longer be replayed (its successor, the token
        # presented now, is used): forget the live token it kept. One sealed successor per
        # session at most; purge-expired clears the rest once the grace is over.
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.session_id == session_id,
                RefreshToken.token_hash != token_hash,
                RefreshToken.successor.is_not(None),
            )
            .values(successor=None)
            .execution_options(synchronize_session=False)
        )
    login.last_used_at = now
    return Rotation(login, new_token=_add_refresh_token(session, login, now, successor))


async def _replay(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    token_hash: str,
    lifetimes: Lifetimes,
    now: datetime,
    grace: Grace,
) -> Rotation | None:
    """The retired token's successor again, if it was retired within the grace and its
    successor has never been presented: then the client cannot have received it, or has
    not used it, and asking again is a retry, not theft. None: treat it as reuse."""
    retired = (
        await session.execute(
            select(RefreshToken.used_at, RefreshToken.successor, RefreshToken.session_id).where(
                RefreshToken.token_hash == token_hash, RefreshToken.tenant_id == tenant_id
            )
        )
    ).first()
    if retired is None or retired.successor is None or retired.used_at is None:
        return None
    if retired.used_at <= now - timedelta(seconds=grace.seconds):
        return None
    try:
        successor = grace.box.decrypt(retired.successor)
    except ValueError:
        return None  # sealed under a key no longer configured: no grace
    # Lock the successor's row: a rotation of the successor racing this replay waits, and
    # then this replay sees it used (and the retry is reuse after all).
    successor_row = (
        await session.execute(
            select(RefreshToken.used_at)
            .where(RefreshToken.token_hash == digest(successor), RefreshToken.tenant_id == tenant_id)
            .with_for_update()
        )
    ).first()
    if successor_row is None or successor_row.used_at is not None:
        return None
    login = await session.scalar(
        select(Session).where(Session.id == retired.session_id, is_live(lifetimes, now))
    )
    if login is None:
        return Rotation(None, failure="dead")
    login.last_used_at = now
    return Rotation(login, new_token=successor, replayed=True)


async def session_of_refresh_token(
    *, session: AsyncSession, tenant_id: uuid.UUID, refresh_token: str
) -> Session | None:
    """Returns the session that issued a refresh token (used or not), if any."""
    stmt = (
        select(Session)
        .join(RefreshToken, RefreshToken.session_id == Session.id)
        .where(RefreshToken.token_hash == digest(refresh_token), RefreshToken.tenant_id == tenant_id)
    )
    return await session.scalar(stmt)


async def revoke(
    *, session: AsyncSession, tenant_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> bool:
    """Ends a session: its refresh tokens and access tokens stop working at once."""
    stmt = (
        update(Session)
        .where(Session.id == session_id, Session.tenant_id == tenant_id, Session.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    return bool(getattr(result, "rowcount", 0))


async def revoke_all(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
    keep: uuid.UUID | None = None,
) -> int:
    """Ends every session of a user (but `keep`); returns how many were live."""
    stmt = update(Session).where(
        Session.tenant_id == tenant_id, Session.user_id == user_id, Session.revoked_at.is_(None)
    )
    if keep is not None:
        stmt = stmt.where(Session.id != keep)
    stmt = stmt.values(revoked_at=now).execution_options(synchronize_session=False)
    result = await session.execute(stmt)
    return int(getattr(result, "rowcount", 0))


async def list_live(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    lifetimes: Lifetimes,
    now: datetime,
    page: PageParams,
) -> tuple[list[Session], str | None]:
    """Returns a page of the user's live sessions, oldest first."""
    stmt = select(Session).where(
        Session.tenant_id == tenant_id, Session.user_id == user_id, is_live(lifetimes, now)
    )
    stmt = keyset_page(stmt, page, Session.created_at, Session.id)
    return split_page(list((await session.scalars(stmt)).all()), page)


async def get_live(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    lifetimes: Lifetimes,
    now: datetime,
) -> Session | None:
    stmt = select(Session).where(
        Session.id == session_id,
        Session.tenant_id == tenant_id,
        Session.user_id == user_id,
        is_live(lifetimes, now),
    )
    return await session.scalar(stmt)
