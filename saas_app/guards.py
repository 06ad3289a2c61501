"""Where authentication, tenant match and permissions meet: the dependencies routes use.

`CurrentPrincipal` answers "who is calling?" (401 otherwise); `require(...)` answers "may
they?" (403 otherwise). Permissions are read from the user's *current* roles on every
request and intersected with the token's `scope`, so a demotion applies at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from sqlalchemy import select
from starlette.requests import Request

from saas_app.audit.service import Origin, Ref
from saas_app.auth.models import Session
from saas_app.auth.sessions import is_live
from saas_app.core.errors import Forbidden, PermissionDenied, Unauthorized
from saas_app.mfa import service as mfa
from saas_app.rbac.models import Role, UserRole
from saas_app.rbac.permissions import CATALOGUE
from saas_app.runtime import ClientIPDep, NowDep, RuntimeDep, SessionDep
from saas_app.security.tokens import InvalidToken
from saas_app.tenancy.deps import TenantDep
from saas_app.users.models import User


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling (a user, later an API key) and what they may do in this tenant."""

    tenant_id: uuid.UUID
    tenant_slug: str
    user_id: uuid.UUID | None
    permissions: frozenset[str]
    amr: tuple[str, ...]
    session_id: uuid.UUID | None = None
    auth_time: int | None = None  # when the user last proved who they are (epoch seconds)
    enrolment_token: str | None = None  # set only for the enrol-only `mfa_token`

    @property
    def ref(self) -> Ref:
        return Ref("user", self.user_id)


def bearer_token(request: Request) -> str | None:
    """Returns the RFC 6750 §2.1 bearer token, "" for a malformed header, None if absent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def current_principal(
    request: Request, tenant: TenantDep, session: SessionDep, runtime: RuntimeDep, now: NowDep
) -> Principal:
    """Authenticates the bearer token against this tenant and its live session."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("Authentication required.", presented=False)
    try:
        claims = runtime.access_tokens.verify(token, tenant_slug=tenant.slug, now=now)
    except InvalidToken:
        raise Unauthorized() from None
    if claims.tid != tenant.id:
        raise Unauthorized()
    # One query: the session is live, the user active, and their current roles.
    stmt = (
        select(Role.permissions)
        .select_from(Session)
        .join(User, User.id == Session.user_id)
        .outerjoin(UserRole, UserRole.user_id == User.id)
        .outerjoin(Role, Role.id == UserRole.role_id)
        .where(
            Session.id == claims.sid,
            Session.tenant_id == tenant.id,
            Session.user_id == claims.sub,
            is_live(runtime.lifetimes, now),
            User.is_active.is_(True),
        )
    )
    rows = (await session.execute(stmt)).scalars().all()
    if not rows:
        raise Unauthorized()
    held = frozenset(p for perms in rows if perms for p in perms)
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        user_id=claims.sub,
        permissions=held & claims.scope,
        amr=claims.amr,
        session_id=claims.sid,
        auth_time=claims.auth_time,
    )


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(*permissions: str) -> Callable[..., Awaitable[Principal]]:
    """A guard: the caller must hold every one of `permissions` (403 otherwise)."""
    unknown = set(permissions) - CATALOGUE
    if unknown:
        raise ValueError(f"unknown permissions: {sorted(unknown)}")

    async def guard(principal: CurrentPrincipal) -> Principal:
        missing = [p for p in permissions if p not in principal.permissions]
        if missing:
            raise PermissionDenied(missing)
        return principal

    return guard


SECOND_FACTORS = frozenset({"otp", "recovery"})


class SecondFactorRequired(Forbidden):
    code = "second_factor_required"
    title = "Sign in with a second factor to do this"


def ensure_second_factor(principal: Principal) -> None:
    """Raises 403 unless the caller's session was authenticated with a second factor."""
    if not SECOND_FACTORS & set(principal.amr):
        raise SecondFactorRequired()


def require_mfa() -> Callable[..., Awaitable[Principal]]:
    """A guard: the caller's session must have passed a second factor (`amr` otp/recovery)."""

    async def guard(principal: CurrentPrincipal) -> Principal:
        ensure_second_factor(principal)
        return principal

    return guard


async def enrolling_principal(
    request: Request, tenant: TenantDep, session: SessionDep, runtime: RuntimeDep, now: NowDep
) -> Principal:
    """A signed-in user, or one holding the enrolment-only `mfa_token` of a tenant that
    requires MFA (accepted here and nowhere else)."""
    token = bearer_token(request)
    if not token or not token.startswith("mfa_"):
        return await current_principal(request, tenant, session, runtime, now)
    challenge = await mfa.find_challenge(
        session=session, tenant_id=tenant.id, token=token, purpose="enroll", now=now
    )
    if challenge is None:
        raise Unauthorized()
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        user_id=challenge.user_id,
        permissions=frozenset(),
        amr=tuple(challenge.amr.split()),
        auth_time=int(challenge.created_at.timestamp()),
        enrolment_token=token,
    )


EnrollingPrincipal = Annotated[Principal, Depends(enrolling_principal)]


def origin(principal: CurrentPrincipal, ip: ClientIPDep, now: NowDep) -> Origin:
    """The audit origin of an authenticated request."""
    return Origin(actor=principal.ref, ip=ip, now=now)


def anonymous_origin(ip: ClientIPDep, now: NowDep) -> Origin:
    """The audit origin of an unauthenticated request (sign-up, login)."""
    return Origin(actor=None, ip=ip, now=now)


def enrolling_origin(principal: EnrollingPrincipal, ip: ClientIPDep, now: NowDep) -> Origin:
    """The audit origin of an enrolment request (access token or enrol-only token)."""
    return Origin(actor=principal.ref, ip=ip, now=now)


OriginDep = Annotated[Origin, Depends(origin)]
EnrollingOriginDep = Annotated[Origin, Depends(enrolling_origin)]
AnonymousOriginDep = Annotated[Origin, Depends(anonymous_origin)]
