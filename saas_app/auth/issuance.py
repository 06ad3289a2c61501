"""Issuing tokens to an authenticated user: the scope they get, the session, the pair; and
taking a session back when the one-time token that bought it is presented again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.audit import service as audit
from saas_app.audit.service import Origin, Ref
from saas_app.auth import sessions
from saas_app.auth.errors import InvalidScope
from saas_app.auth.models import Session
from saas_app.rbac import service as rbac
from saas_app.rbac.permissions import CATALOGUE
from saas_app.runtime import Runtime
from saas_app.tenancy.cache import TenantInfo
from saas_app.users.models import User


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str
    session_id: uuid.UUID

    def body(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
        }


def parse_scope(scope: str | None) -> frozenset[str] | None:
    """RFC 6749 §3.3: space-delimited; unknown names are `invalid_scope`. None = default."""
    if scope is None or not scope.strip():
        return None
    requested = frozenset(scope.split())
    if requested - CATALOGUE:
        raise InvalidScope("Unknown scope requested.")
    return requested


async def held_permissions(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> frozenset[str]:
    """Returns what the user's current roles allow."""
    roles = await rbac.roles_by_user(session=session, tenant_id=tenant_id, user_ids=[user_id])
    return rbac.permissions_of(roles.get(user_id, []))


async def check_scope(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, requested: frozenset[str] | None
) -> frozenset[str]:
    """Returns the user's permissions; raises invalid_scope if `requested` exceeds them."""
    held = await held_permissions(session=session, tenant_id=tenant_id, user_id=user_id)
    if requested is not None and not requested <= held:
        raise InvalidScope("The requested scope exceeds the user's permissions.")
    return held


async def open_session(
    *,
    session: AsyncSession,
    runtime: Runtime,
    tenant: TenantInfo,
    user: User,
    requested: frozenset[str] | None,
    amr: tuple[str, ...],
    user_agent: str | None,
    origin: Origin,
) -> TokenGrant:
    """Starts a session for a user who proved `amr`, and returns its first tokens."""
    held = await check_scope(session=session, tenant_id=tenant.id, user_id=user.id, requested=requested)
    login, refresh_token = await sessions.start(
        session=session,
        tenant_id=tenant.id,
        user_id=user.id,
        scope=" ".join(sorted(requested)) if requested is not None else None,
        amr=amr,
        user_agent=user_agent,
        lifetimes=runtime.lifetimes,
        now=origin.now,
    )
    await audit.record(
        session=session,
        tenant_id=tenant.id,
        action="login.succeeded",
        origin=Origin(actor=Ref("user", user.id), ip=origin.ip, now=origin.now),
        target=Ref("session", login.id),
        details={"amr": list(amr)},
    )
    granted = requested if requested is not None else held
    return token_pair(runtime, tenant, login, refresh_token, granted, origin)


async def revoke_for_reuse(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    login_id: uuid.UUID,
    user_id: uuid.UUID,
    presented: str,
    origin: Origin,
) -> None:
    """A one-time token (`presented`: "refresh_token", "login_code") came back after its use:
    it leaked, so the session it led to is revoked, with its refresh tokens and access tokens
    (RFC 9700 §4.14.2, RFC 6749 §4.1.2). Audited each time, even if the session already ended."""
    revoked = await sessions.revoke(session=session, tenant_id=tenant_id, session_id=login_id, now=origin.now)
    await audit.record(
        session=session,
        tenant_id=tenant_id,
        action="token.reuse_detected",
        origin=origin,
        target=Ref("session", login_id),
        details={"user_id": str(user_id), "token": presented, "session_revoked": revoked},
    )


def token_pair(
    runtime: Runtime,
    tenant: TenantInfo,
    login: Session,
    refresh_token: str,
    granted: frozenset[str],
    origin: Origin,
) -> TokenGrant:
    """Signs an access token for the session and pairs it with `refresh_token`."""
    access_token = runtime.access_tokens.issue(
        tenant_slug=tenant.slug,
        tenant_id=tenant.id,
        user_id=login.user_id,
        session_id=login.id,
        scope=granted,
        amr=tuple(login.amr.split()),
        auth_time=login.created_at,
        now=origin.now,
    )
    return TokenGrant(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=runtime.access_tokens.ttl_seconds,
        scope=" ".join(sorted(granted)),
        session_id=login.id,
    )
