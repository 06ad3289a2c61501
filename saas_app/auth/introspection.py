"""POST /t/{tenant}/auth/introspect (RFC 7662): is this token live here, and whose is it?

For resource servers that would rather ask than verify (or must know about revocation at
once): an access token, a refresh token or an API key of this tenant that is live now is
`active: true` with what it carries; anything else (revoked, expired, its session ended,
its user deactivated, another tenant's, garbage) is `{"active": false}`, one answer for
all (RFC 7662 §2.2). The caller authenticates with a bearer token or an API key holding
`tokens:introspect` (RFC 7662 §2.1 leaves the means to the server).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.api_keys import service as api_keys
from saas_app.auth import sessions
from saas_app.auth.errors import NO_STORE, InvalidRequest
from saas_app.auth.models import RefreshToken, Session
from saas_app.auth.router import field, form_body, read_form
from saas_app.core.errors import DomainError, Unauthorized
from saas_app.core.openapi import AUTHENTICATED
from saas_app.guards import claims_principal, require
from saas_app.rbac.permissions import ordered
from saas_app.runtime import NowDep, Runtime, RuntimeDep, SessionDep
from saas_app.security import api_keys as key_format
from saas_app.security.opaque import digest
from saas_app.security.tokens import FIRST_PARTY_CLIENT, InvalidToken
from saas_app.tenancy.cache import TenantInfo
from saas_app.tenancy.deps import TenantDep
from saas_app.users.models import User

router = APIRouter(prefix="/t/{tenant}/auth", tags=["auth"], responses=AUTHENTICATED)
INACTIVE = {"active": False}
INTROSPECT_FORM = form_body({"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"])


class MalformedIntrospection(DomainError):
    """A form that is not one (RFC 7662 §2.1). Problem+json like the guard's own refusals
    (401, 403, 400 `ambiguous_credentials`): this is a protected API route, not the token
    endpoint, so one error form on every answer."""

    status = 400
    code = "invalid_request"
    title = "Send the token form-encoded, once, as `token`"


@router.post(
    "/introspect",
    dependencies=[Depends(require("tokens:introspect"))],
    openapi_extra=INTROSPECT_FORM,
)
async def introspect(
    request: Request, tenant: TenantDep, session: SessionDep, runtime: RuntimeDep, now: NowDep
) -> JSONResponse:
    """RFC 7662 token introspection: access tokens, refresh tokens and API keys."""
    try:
        form = await read_form(request)
        token = field(form, "token")
    except InvalidRequest as exc:
        raise MalformedIntrospection(exc.description) from None
    # The hint only orders the search (RFC 7662 §2.1); every kind is tried.
    kinds = [_access_token, _refresh_token, _api_key]
    if form.get("token_type_hint") == "refresh_token":
        kinds = [_refresh_token, _access_token, _api_key]
    for kind in kinds:
        answer = await kind(session, runtime, tenant, token, now)
        if answer is not None:
            return JSONResponse({"active": True, **answer}, headers=NO_STORE)
    return JSONResponse(INACTIVE, headers=NO_STORE)


async def _email(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    return await session.scalar(select(User.email).where(User.id == user_id))


async def _access_token(
    session: AsyncSession, runtime: Runtime, tenant: TenantInfo, token: str, now: datetime
) -> dict[str, Any] | None:
    if token.count(".") != 2:
        return None
    try:
        # The same checks as any request with it: signature, issuer, expiry, a live session
        # of an active user; `scope` is what it may do now.
        claims = runtime.access_tokens.verify(token, tenant_slug=tenant.slug, now=now)
        principal = await claims_principal(runtime, tenant, claims, now)
    except (InvalidToken, Unauthorized):
        return None
    assert principal.user_id is not None
    return {
        "token_type": "access_token",
        "scope": " ".join(ordered(principal.permissions)),
        "client_id": FIRST_PARTY_CLIENT,
        "username": await _email(session, principal.user_id),
        "sub": str(claims.sub),
        "tid": str(claims.tid),
        "sid": str(claims.sid),
        "exp": claims.exp,
        "iat": claims.iat,
        "iss": runtime.access_tokens.issuer(tenant.slug),
        "aud": runtime.settings.JWT_AUDIENCE,
        "jti": claims.jti,
    }


async def _refresh_token(
    session: AsyncSession, runtime: Runtime, tenant: TenantInfo, token: str, now: datetime
) -> dict[str, Any] | None:
    row = (
        await session.execute(
            select(Session, RefreshToken.created_at)
            .join(RefreshToken, RefreshToken.session_id == Session.id)
            .where(
                RefreshToken.token_hash == digest(token),
                RefreshToken.tenant_id == tenant.id,
                RefreshToken.used_at.is_(None),  # a retired token refreshes nothing
                sessions.is_live(runtime.lifetimes, now),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    login, issued_at = row
    grant = await runtime.reader.run(lambda fetch: sessions.load_grant(fetch, tenant.id, login.id))
    if grant is None:  # the user was deactivated
        return None
    granted = frozenset(login.scope.split()) & grant.held if login.scope is not None else grant.held
    return {
        "token_type": "refresh_token",
        "scope": " ".join(ordered(granted)),
        "client_id": FIRST_PARTY_CLIENT,
        "username": await _email(session, login.user_id),
        "sub": str(login.user_id),
        "tid": str(tenant.id),
        "sid": str(login.id),
        # The sooner of the session's absolute end and its idle one (unused for that long).
        "exp": int(min(login.expires_at, login.last_used_at + runtime.lifetimes.idle).timestamp()),
        "iat": int(issued_at.timestamp()),
        "iss": runtime.access_tokens.issuer(tenant.slug),
    }


async def _api_key(
    session: AsyncSession, runtime: Runtime, tenant: TenantInfo, token: str, now: datetime
) -> dict[str, Any] | None:
    if key_format.parse(token) is None:
        return None
    key, _ = await api_keys.authenticate(
        reader=runtime.reader,
        box=runtime.box,
        cache=runtime.cache,
        tenant_id=tenant.id,
        presented=token,
        now=now,
    )
    if key is None or key.permissions is None:
        return None
    answer: dict[str, Any] = {
        "token_type": "api_key",
        "scope": " ".join(ordered(key.permissions)),
        "client_id": str(key.id),
        "sub": str(key.id),
        "tid": str(tenant.id),
        "iss": runtime.access_tokens.issuer(tenant.slug),
    }
    if key.expires_at is not None:
        answer["exp"] = int(key.expires_at.timestamp())
    return answer
