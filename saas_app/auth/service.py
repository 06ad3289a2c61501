"""Sign-up and the OAuth 2.0 grants (RFC 6749 §4.3 password, §6 refresh), revocation."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.auth import sessions, verification
from saas_app.auth.errors import (
    BAD_CREDENTIALS,
    EmailNotVerified,
    InvalidGrant,
    InvalidScope,
    RefreshSlowDown,
    SlowDown,
)
from saas_app.auth.issuance import (
    TokenGrant,
    check_scope,
    held_permissions,
    open_session,
    parse_scope,
    revoke_for_reuse,
    token_pair,
)
from saas_app.auth.pending import end_every_way_in
from saas_app.auth.second_step import second_step
from saas_app.core.errors import DomainError, RateLimited
from saas_app.rbac.models import Role
from saas_app.rbac.permissions import MEMBER
from saas_app.runtime import Runtime
from saas_app.security.emails import normalize_email
from saas_app.security.tokens import InvalidToken
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.service import SignupClosed
from saas_app.users import service as users
from saas_app.users.models import User

FAILURE_BUCKET = "login_failures"
REFRESH_BUCKET = "refresh"  # per session
REFRESH_FAILURE_BUCKET = "refresh_failures"  # per client IP


class InvalidPassword(DomainError):
    status = 400
    code = "invalid_password"
    title = "The current password is wrong"


async def register(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    email: str,
    password: str,
    full_name: str | None,
    origin: Origin,
) -> tuple[User, list[Role]]:
    """Self sign-up as a `member`, when the tenant allows it; a verification link is mailed
    to the address."""
    if not tenant.allow_signup:
        raise SignupClosed("This tenant does not allow self sign-up.")
    # Hash before the first query: on SQLite the write lock is held from then to commit.
    password_hash = await runtime.hasher.hash(password)
    user, roles = await users.create_user(
        session=session,
        tenant_id=tenant.id,
        email=email,
        password_hash=password_hash,
        full_name=full_name,
        role_names=[MEMBER],
        origin=origin,
    )
    await verification.mail_link_if_allowed(session, runtime, tenant, user, origin=origin)
    return user, roles


async def check_password(
    *, runtime: Runtime, tenant_id: uuid.UUID, email: str, password: str, user: User | None
) -> tuple[bool, str | None]:
    """Verifies a password under the per-account failure limit.

    The attempt takes its slot *before* the (slow) hash check, so parallel guesses cannot
    all pass a "not yet throttled" check; a success clears the account's bucket.
    """
    limit = runtime.settings.LOGIN_FAILURE_LIMIT
    # Folded, so look-alike spellings of one address share its failure budget.
    key = normalize_email(email)
    await runtime.limiter.enforce(FAILURE_BUCKET, limit, str(tenant_id), key)
    ok, new_hash = await runtime.hasher.verify(password, user.password_hash if user else None)
    if ok:
        await runtime.limiter.clear(FAILURE_BUCKET, limit, str(tenant_id), key)
    return ok, new_hash


async def password_grant(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    username: str,
    password: str,
    scope: str | None,
    user_agent: str | None,
    origin: Origin,
) -> TokenGrant:
    """RFC 6749 §4.3: exchanges e-mail and password for tokens."""
    requested = parse_scope(scope)
    user = await users.find_by_email(session=session, tenant_id=tenant.id, email=username)
    # End the read before the slow hash check: nothing is written yet, and on SQLite this
    # releases the write lock so logins hash in parallel.
    await session.commit()
    try:
        ok, new_hash = await check_password(
            runtime=runtime, tenant_id=tenant.id, email=username, password=password, user=user
        )
    except RateLimited as exc:
        raise SlowDown(exc.retry_after) from exc
    if user is None or not ok or not user.is_active:
        reason = "unknown_user" if user is None else ("bad_password" if not ok else "inactive")
        await audit.record(
            session=session,
            tenant_id=tenant.id,
            action="login.failed",
            origin=origin,
            target=Ref("user", user.id) if user else None,
            details={"reason": reason},
        )
        # Same answer whether the e-mail is unknown, the password wrong or the user disabled.
        raise InvalidGrant(BAD_CREDENTIALS)
    if new_hash:
        user.password_hash = new_hash
    if tenant.require_verified_email and not user.email_verified:
        # The registration's link may be lost or expired, and there is no other way in for
        # this user to ask for one: a new link goes out (within the per-address budget).
        await verification.mail_link_if_allowed(session, runtime, tenant, user, origin=origin)
        await audit.record(
            session=session,
            tenant_id=tenant.id,
            action="login.failed",
            origin=origin,
            target=Ref("user", user.id),
            details={"reason": "email_not_verified"},
        )
        raise EmailNotVerified()
    await check_scope(session=session, tenant_id=tenant.id, user_id=user.id, requested=requested)
    pending = await second_step(
        session=session,
        tenant=tenant,
        user=user,
        requested=requested,
        amr=("pwd",),
        user_agent=user_agent,
        now=origin.now,
    )
    if pending is not None:
        raise pending
    return await open_session(
        session=session,
        runtime=runtime,
        tenant=tenant,
        user=user,
        requested=requested,
        amr=("pwd",),
        user_agent=user_agent,
        origin=origin,
    )


async def refresh_grant(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    refresh_token: str,
    scope: str | None,
    origin: Origin,
) -> TokenGrant:
    """RFC 6749 §6 with rotation; reuse of a retired token revokes the session (RFC 9700 §4.14.2).

    Throttled per session (REFRESH_RATE_LIMIT), not per IP like password guessing: one
    proxy may refresh for many users. Tokens that match no live session are counted per
    IP in a bucket of their own (they are guesses or replays)."""
    requested = parse_scope(scope)
    limiter, limits = runtime.limiter, runtime.settings
    ip = origin.ip or "unknown"
    if not await limiter.allows(REFRESH_FAILURE_BUCKET, limits.LOGIN_RATE_LIMIT, ip):
        # A full bucket refuses the hit without counting it; the hit tells how long to wait.
        refused = await limiter.hit(REFRESH_FAILURE_BUCKET, limits.LOGIN_RATE_LIMIT, ip)
        raise SlowDown(refused.retry_after)
    rotation = await sessions.rotate(
        session=session,
        tenant_id=tenant.id,
        refresh_token=refresh_token,
        lifetimes=runtime.lifetimes,
        now=origin.now,
        grace=sessions.Grace(limits.REFRESH_REUSE_GRACE_SECONDS, runtime.box),
    )
    if rotation.failure == "reused" and rotation.login is not None:
        await revoke_for_reuse(
            session=session,
            tenant_id=tenant.id,
            login_id=rotation.login.id,
            user_id=rotation.login.user_id,
            presented="refresh_token",
            origin=origin,
        )
    if rotation.new_token is None or rotation.login is None:
        await limiter.hit(REFRESH_FAILURE_BUCKET, limits.LOGIN_RATE_LIMIT, ip)
        raise InvalidGrant(BAD_CREDENTIALS)
    login = rotation.login
    verdict = await limiter.hit(REFRESH_BUCKET, limits.REFRESH_RATE_LIMIT, str(login.id))
    if not verdict.allowed:
        raise RefreshSlowDown(verdict.retry_after)
    user = await users.get_user(session=session, tenant_id=tenant.id, user_id=login.user_id)
    if not user.is_active:
        raise InvalidGrant(BAD_CREDENTIALS)
    held = await held_permissions(session=session, tenant_id=tenant.id, user_id=user.id)
    ceiling = frozenset(login.scope.split()) if login.scope is not None else held
    if requested is not None and not requested <= ceiling:
        # Nothing is committed: the presented token stays valid (InvalidScope rolls back).
        raise InvalidScope("A refresh may narrow the granted scope, never widen it.")
    granted = (requested if requested is not None else ceiling) & held
    await audit.record(
        session=session,
        tenant_id=tenant.id,
        action="token.refreshed",
        origin=Origin(actor=Ref("user", user.id), ip=origin.ip, now=origin.now),
        target=Ref("session", login.id),
        # A retry within REFRESH_REUSE_GRACE_SECONDS: the same next token, said so.
        details={"replayed": "1"} if rotation.replayed else None,
    )
    return token_pair(runtime, tenant, login, rotation.new_token, granted, origin)


async def revoke_token(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    token: str,
    token_type_hint: str | None,
    origin: Origin,
) -> None:
    """RFC 7009: ends the session of a refresh or access token; unknown tokens are ignored."""
    # RFC 7009 §2.1: the hint only says where to look first; a token not found there is
    # searched for among every other supported type.
    access_first = token_type_hint == "access_token"  # noqa: S105 (a hint name, not a secret)
    login_id = _session_of_access_token(runtime, tenant, token, origin) if access_first else None
    if login_id is None:
        found = await sessions.session_of_refresh_token(
            session=session, tenant_id=tenant.id, refresh_token=token
        )
        login_id = found.id if found else None
    if login_id is None and not access_first:
        login_id = _session_of_access_token(runtime, tenant, token, origin)
    if login_id is not None:
        await end_session(
            session=session, tenant_id=tenant.id, session_id=login_id, origin=origin, reason="revoked"
        )


def _session_of_access_token(
    runtime: Runtime, tenant: TenantInfo, token: str, origin: Origin
) -> uuid.UUID | None:
    """Returns the `sid` of a valid access token of this tenant, else None."""
    try:
        claims = runtime.access_tokens.verify(token, tenant_slug=tenant.slug, now=origin.now)
    except InvalidToken:
        return None
    return claims.sid if claims.tid == tenant.id else None


async def end_session(
    *, session: AsyncSession, tenant_id: uuid.UUID, session_id: uuid.UUID, origin: Origin, reason: str
) -> bool:
    """Revokes one session and audits it; returns whether it was live."""
    ended = await sessions.revoke(session=session, tenant_id=tenant_id, session_id=session_id, now=origin.now)
    if ended:
        await audit.record(
            session=session,
            tenant_id=tenant_id,
            action="session.revoked",
            origin=origin,
            target=Ref("session", session_id),
            details={"reason": reason},
        )
    return ended


async def change_password(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    current_session_id: uuid.UUID | None,
    current_password: str,
    new_password: str,
    origin: Origin,
) -> None:
    """Replaces the password after checking the current one; every other session ends."""
    user = await users.get_user(session=session, tenant_id=tenant_id, user_id=user_id)
    await session.commit()  # nothing written yet; do not hold a lock while hashing
    ok, _ = await check_password(
        runtime=runtime, tenant_id=tenant_id, email=user.email, password=current_password, user=user
    )
    if not ok:
        raise InvalidPassword()
    user.password_hash = await runtime.hasher.hash(new_password)
    ended = await end_every_way_in(
        session=session, tenant_id=tenant_id, user_id=user_id, now=origin.now, keep=current_session_id
    )
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="password.changed",
        origin=origin,
        target=Ref("user", user_id),
        details=ended,
    )
